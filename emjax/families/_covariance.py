"""Covariance structures shared by Gaussian-like families: full, diag, spherical, tied.

A :class:`CovarianceStructure` holds everything about a family that depends on
how its covariances are parametrised: the shape of the ``covariances`` array,
Mahalanobis distances and log-determinants, the scatter statistic, the ML and
conjugate-prior MAP M-steps from a scatter, the log prior, the broad initial
value, the free-parameter count, unconstrained coordinates, component
replacement, the collapse test and validation. A family (:class:`emjax.Gaussian`,
and the Student-t and factor-analyser mixtures to come) keeps the parts that do
not depend on it (means, the density's form, the mean prior) and delegates the
rest, so it never branches on the covariance type.

Shapes: ``K`` components, ``D`` features, ``N`` points. ``covariances`` is
``(K, D, D)`` for :class:`Full`, ``(K, D)`` for :class:`Diag`, ``(K,)`` for
:class:`Spherical` and ``(D, D)`` for :class:`Tied` (scikit-learn's shapes). A
scatter is ``(K, D, D)`` for full, ``(1, D, D)`` (summed over the components) for
tied and its diagonal ``(K, D)`` for the variance structures (diag, spherical).

Numerics (see DESIGN.md): Cholesky factors and triangular solves, never an
explicit inverse of a covariance.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.linalg import solve_triangular

from .._checks import check_positive_definite, check_shape, concrete
from ._base import rows_times
from ._priors import (
    NormalInverseWishart,
    inverse_gamma_log_prob,
    inverse_wishart_log_prob,
    mean_log_prior_terms,
)

#: Exact float32 products (see :mod:`emjax.families._gaussian`).
_EXACT = jax.lax.Precision.HIGHEST


def cholesky(cov: Array) -> Array:
    """Lower Cholesky factors: ``(..., D, D)`` -> ``(..., D, D)``."""
    return jnp.linalg.cholesky(cov)


def tri_inverse(chol: Array) -> Array:
    """``L^{-1}`` of lower-triangular factors ``(..., D, D)`` by a triangular solve."""
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    return solve_triangular(chol, eye, lower=True)


def logdet_from_chol(chol: Array) -> Array:
    """``log |L L^T|`` from lower Cholesky factors: ``(..., D, D)`` -> ``(...)``."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


def cholesky_floor(n_features: int, dtype) -> float:
    """``2 D eps``: the smallest variance, relative to the matrix's own diagonal,
    that keeps a ``D x D`` covariance positive definite once rounded to ``dtype``.

    Rounding a product ``L L^T`` and factorising it again err by about ``D eps``
    relative to the diagonal, so a conditional variance below that is lost (float32
    ``D = 3``: 7.2e-7; float64: 1.3e-15)."""
    return 2 * n_features * float(jnp.finfo(dtype).eps)


def count_floor(dtype):
    """A few ulps of ``dtype``, added to counts to make them safe divisors for an empty component."""
    return 10 * jnp.finfo(dtype).eps


def _weighted_means(x: Array, resp: Array) -> Array:
    """``(K, D)`` each component's responsibility-weighted mean of ``x`` (0 for an empty one)."""
    counts = jnp.sum(resp, axis=0)
    safe = jnp.where(counts > 0, counts, 1.0)
    return jnp.matmul(resp.T, x, precision=_EXACT) / safe[:, None]


def _first_moments(x: Array, resp: Array, shift: Array) -> Array:
    """``(K, D)`` ``sum_n r_nk (x_n - shift_k)``, as ``r^T (x - c) - n_k (shift_k - c)``
    about the mean ``c`` of the shifts (one matmul; no offset of the data cancels)."""
    c = jnp.mean(shift, axis=0)
    counts = jnp.sum(resp, axis=0)
    return jnp.matmul(resp.T, x - c, precision=_EXACT) - counts[:, None] * (shift - c)


def recenter_scatter(s2: Array, s1: Array, counts: Array, delta: Array, *, new_minus_old: bool = False) -> Array:
    """A scatter about one point re-expressed about another, exactly.

    With ``s1 = sum r (x - a)`` and ``s2 = sum r (x - a)(x - a)^T`` (or its
    diagonal), returns ``sum r (x - b)(x - b)^T`` (or its diagonal):
    ``s2 + s1 delta^T + delta s1^T + n delta delta^T`` for ``delta = a - b``, or
    ``s2 - s1 delta^T - delta s1^T + n delta delta^T`` for ``delta = b - a``
    (``new_minus_old=True``; the M-step's form, kept so that its rounding is
    unchanged).

    Args:
        s2: ``(K, D, D)`` scatter, ``(K, D)`` its diagonal, or ``(1, D, D)`` its
            sum over the components (tied; the sum is moved).
        s1: ``(K, D)`` first moments about the old point ``a``.
        counts: ``(K,)`` total weights ``n``.
        delta: ``(K, D)`` the old point minus the new point ``b`` (or the reverse).
        new_minus_old: whether ``delta`` is ``b - a``.

    Returns:
        The scatter about ``b``, shaped like ``s2``.
    """
    step = jnp.subtract if new_minus_old else jnp.add
    if s2.ndim == 3:
        cross = s1[:, :, None] * delta[:, None, :]
        outer = counts[:, None, None] * delta[:, :, None] * delta[:, None, :]
        if s2.shape[0] != s1.shape[0]:  # one scatter summed over the components (tied)
            return s2 + jnp.sum(step(step(outer, cross), jnp.swapaxes(cross, 1, 2)), axis=0, keepdims=True)
        return step(step(s2, cross), jnp.swapaxes(cross, 1, 2)) + outer
    return step(s2, 2 * s1 * delta) + counts[:, None] * delta * delta


def _kept_sum(terms: Array, kept: Array | None) -> Array:
    """The sum of per-component ``terms`` (leading axis ``K``), over the ``kept`` ``(K,)`` ones only."""
    if kept is None:
        return jnp.sum(terms)
    return jnp.sum(jnp.where(kept.reshape(kept.shape + (1,) * (terms.ndim - 1)), terms, 0.0))


class CovarianceStructure(eqx.Module):
    """Abstract base of covariance structures. Stateless: configuration lives in the family.

    Subclass it (or :class:`MatrixStructure` / :class:`VarianceStructure`) for a
    new structure, e.g. a parsimonious ``lambda D A D^T`` decomposition.
    """

    #: The ``covariance_type`` string that names the structure.
    name: ClassVar[str]
    #: The key of the covariances in :meth:`unconstrain`'s dictionary.
    unconstrained_key: ClassVar[str]
    #: Whether :meth:`unconstrain` / :meth:`constrain` exist (not for the parsimonious models).
    has_unconstrained_coordinates: ClassVar[bool] = True

    # -- shapes ----------------------------------------------------------------------

    @abc.abstractmethod
    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """The shape of the ``covariances`` array of ``K`` components in ``D`` dimensions."""

    @abc.abstractmethod
    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters in the covariances of ``K`` components in ``D`` dimensions."""

    @abc.abstractmethod
    def full_matrices(self, covariances: Array, n_components: int, n_features: int) -> Array:
        """The covariances as ``(K, D, D)`` matrices."""

    # -- densities -------------------------------------------------------------------

    def centre(self, x: Array, means: Array) -> tuple[Array, ...]:
        """What the distances and the moments at ``means`` share, computed once per chunk.

        Both expand about ``c``, the mean of the means: returns ``(c, x - c)``
        (``c`` ``(D,)``; axis-aligned structures add ``(x - c)^2``). Passing it to
        :meth:`mahalanobis_logdet` and :meth:`moments` lets the E-step's product and
        the statistics' read one materialised array (XLA does not merge the two
        copies it would otherwise hoist out of the chunk loop).
        """
        c = jnp.mean(means, axis=0)
        return c, x - c

    def row_width(self, n_components: int, n_features: int) -> int:
        """Elements per data row of the distances' intermediates: ``K x D``."""
        return n_components * n_features

    @abc.abstractmethod
    def mahalanobis_logdet(self, x: Array, means: Array, covariances: Array, centred=None) -> tuple[Array, Array]:
        """Squared Mahalanobis distances and log-determinants.

        Args:
            x: ``(N, D)`` points.
            means: ``(K, D)`` centres.
            covariances: this structure's covariances.
            centred: ``self.centre(x, means)`` if already computed.

        Returns:
            ``maha`` ``(N, K)``, ``(x_n - mu_k)^T Sigma_k^{-1} (x_n - mu_k)``, and
            ``logdet`` ``(K,)``, ``log |Sigma_k|``.
        """

    @abc.abstractmethod
    def moments(self, x: Array, resp: Array, shift: Array | None, centred=None) -> tuple[Array, Array, Array]:
        """Responsibility-weighted moments of ``x`` ``(N, D)`` about an expansion point.

        Args:
            x: ``(N, D)`` points.
            resp: ``(N, K)`` responsibilities (weights folded in).
            shift: ``(K, D)`` the suggested expansion point (the current means), or
                ``None`` (then each component's responsibility-weighted mean).
            centred: ``self.centre(x, shift)`` if already computed (with ``shift``).

        Returns:
            ``s1`` ``(K, D)`` = ``sum_n r_nk (x_n - c_k)``, ``s2`` (the structure's
            scatter shape) = ``sum_n r_nk (x_n - c_k)(x_n - c_k)^T`` or its diagonal
            (tied: its sum over ``k``, ``(1, D, D)``), and the expansion point ``c``
            ``(K, D)`` actually used.
        """

    @abc.abstractmethod
    def conditional(self, x0: Array, observed: Array, means: Array, covariances: Array):
        """Each point's observed-entry density terms and the conditional law of its
        missing entries, per component (missing data; static shapes, no loop over
        missingness patterns).

        Args:
            x0: ``(N, D)`` points, 0 at the missing entries.
            observed: ``(N, D)`` booleans, ``True`` where an entry is observed.
            means: ``(K, D)``; covariances: this structure's.

        Returns:
            ``maha`` ``(N, K)`` the squared Mahalanobis distance of the observed
            entries under their marginal, ``logdet`` ``(N, K)`` ``log |Sigma_oo|``,
            ``xhat`` ``(N, K, D)`` the observed entries and the conditional means
            ``E[x_m | x_o]`` of the missing ones, and ``cond`` the conditional
            covariances ``Cov[x_m | x_o]`` embedded with zeros in the observed rows
            and columns: ``(N, K, D, D)``, or ``(N, K, D)`` diagonals for
            axis-aligned structures.
        """

    @abc.abstractmethod
    def missing_scatter(self, resp_u: Array, resp: Array, xc: Array, cond: Array) -> Array:
        """The expected scatter ``sum_n r_nk u_nk xc xc^T + r_nk cond`` in this
        structure's scatter shape (``xc`` ``(N, K, D)`` about the expansion point;
        ``resp_u`` the responsibilities times the precision weights, ``resp`` for
        the conditional covariances, which ``u`` cancels in)."""

    @abc.abstractmethod
    def trace_logdet(self, scatter: Array, covariances: Array) -> tuple[Array, Array]:
        """``tr(Sigma_k^{-1} S_k)`` and ``log |Sigma_k|``, both ``(K,)``, for a scatter ``S`` about the means
        (tied: both ``(1,)``, the trace of the summed scatter and the one log-determinant)."""

    # -- M-step ----------------------------------------------------------------------

    @abc.abstractmethod
    def ml_covariances(self, scatter: Array, counts: Array) -> Array:
        """The maximum-likelihood covariances before regularisation.

        Args:
            scatter: ``(K, D, D)`` or ``(K, D)`` scatter about the new means.
            counts: ``(K,)`` total weights, already kept away from zero.
        """

    @abc.abstractmethod
    def map_covariances(self, scatter: Array, counts: Array, means: Array, prior: NormalInverseWishart) -> Array:
        """The conjugate-prior MAP covariances (the posterior mode) before regularisation.

        Args:
            scatter: ``(K, D, D)`` or ``(K, D)`` scatter about ``means``.
            counts: ``(K,)`` total weights.
            means: ``(K, D)`` the new (MAP) means.
            prior: the prior, cast to the statistics' dtype.
        """

    @abc.abstractmethod
    def symmetrize(self, covariances: Array) -> Array:
        """``covariances`` made exactly symmetric where they are matrices."""

    @abc.abstractmethod
    def penalty_scatter(self, counts: Array, reg: Array) -> Array:
        """``n_k R`` in the scatter layout: the scatter the regularisation adds.

        Args:
            counts: ``(K,)`` total weights ``n_k``.
            reg: ``(D,)`` the diagonal of ``R``.

        Returns:
            ``(K, D, D)`` or ``(K, D)``.
        """

    def penalty(self, covariances: Array, reg: Array, n_components: int) -> Array:
        """``tr(R Sigma_k^{-1})`` ``(K,)`` for ``R = diag(reg)``.

        Half of it is the amount each component's log density is lowered by
        while fitting (see :class:`emjax.Gaussian`'s ``reg_covar``).
        """
        ones = jnp.ones((n_components,), reg.dtype)
        trace, _ = self.trace_logdet(self.penalty_scatter(ones, reg), covariances)
        return trace

    def maximize(self, scatter: Array, counts: Array, reg: Array, prior=None, means=None) -> Array:
        """The M-step for the covariances from the scatter about the new means.

        The regularisation ``R = diag(reg)`` enters as the extra scatter
        ``n_k R`` (the M-step of the penalty ``-n_k tr(R Sigma_k^{-1}) / 2``):
        maximum likelihood gives scikit-learn's ``S_k / n_k + R``, MAP the
        posterior mode with ``S_k + n_k R`` in place of ``S_k``.

        Args:
            scatter: ``(K, D, D)`` or ``(K, D)`` scatter about ``means``.
            counts: ``(K,)`` total weights.
            reg: ``(D,)`` the diagonal of ``R``.
            prior: a :class:`NormalInverseWishart` cast to the statistics' dtype
                for the MAP step, or ``None`` for maximum likelihood.
            means: ``(K, D)`` the new means (used by the MAP step only).

        Returns:
            This structure's covariances.
        """
        if prior is None:
            # Counts kept off zero: an empty component gets exactly R.
            n = counts + count_floor(scatter.dtype)
            cov = self.ml_covariances(scatter + self.penalty_scatter(n, reg), n)
        else:
            cov = self.map_covariances(scatter + self.penalty_scatter(counts, reg), counts, means, prior)
        return self.symmetrize(cov)

    # -- prior, initialisation -------------------------------------------------------

    @abc.abstractmethod
    def log_prior(self, means: Array, covariances: Array, prior: NormalInverseWishart, kept=None) -> Array:
        """``log p(means, covariances)`` under the prior's matching conjugate form: a scalar.

        The mean prior is ``N(m0, Sigma / kappa0)`` in every structure; see
        :class:`emjax.Gaussian` for the covariance priors. With ``kept`` ``(K,)``, of
        those components only (a shared matrix's prior counted once).
        """

    @abc.abstractmethod
    def from_data_covariance(self, cov: Array, n_components: int, reg: Array) -> Array:
        """Broad initial covariances from the data's ``(D, D)`` covariance ``cov`` plus ``diag(reg)`` ``(D,)``."""

    def initial(self, x: Array, n_components: int, reg: Array, floor: float = 0.0) -> Array:
        """Broad initial covariances of ``K`` components from data ``x`` ``(N, D)``:
        their covariance plus ``diag(reg)`` plus ``floor`` times its own diagonal
        (relative to the matrix actually factorised, so positive definite in its
        dtype whatever the data's scale, collinear features or outliers)."""
        xc = x - jnp.mean(x, axis=0)
        cov = jnp.matmul(xc.T, xc, precision=_EXACT) / x.shape[0]
        return self.from_data_covariance(cov, n_components, reg + floor * jnp.diagonal(cov))

    # -- unconstrained coordinates ---------------------------------------------------

    @abc.abstractmethod
    def rescale(self, covariances: Array, v: Array) -> Array:
        """The covariances of the data rescaled by ``sqrt(v)`` per feature ``(D,)``:
        ``Sigma * sqrt(v v^T)`` (diag: ``* v``; spherical, one variance: times the
        geometric mean of ``v``, so that rescaling by ``1 / v`` is the exact inverse)."""

    @abc.abstractmethod
    def unconstrain(self, covariances: Array) -> Array:
        """The covariances as free reals, stored under :attr:`unconstrained_key`."""

    @abc.abstractmethod
    def constrain(self, u: Array) -> Array:
        """The inverse of :meth:`unconstrain`; valid covariances for every real ``u``."""

    # -- diagnostics and validation --------------------------------------------------

    def permute(self, covariances: Array, perm: Array) -> Array:
        """The covariances of the components in the order ``perm`` ``(K,)``."""
        return covariances[perm]

    def replace_components(self, mask: Array, new: Array, old: Array) -> Array:
        """Covariances of the components in ``mask`` ``(K,)`` from ``new``, the others from ``old``."""
        return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)

    @abc.abstractmethod
    def conditional_variances(self, covariances: Array) -> Array:
        """Each feature's variance given the preceding ones: ``(K, D)`` (tied: ``(D,)``)."""

    def degenerate(self, covariances: Array, data_variance: Array, collapse_tol: float, n_components: int) -> Array:
        """``(K,)`` booleans: some conditional variance below ``collapse_tol`` times the
        data's variance ``data_variance`` ``(D,)`` of that feature, or not finite."""
        cond_var = self.conditional_variances(covariances)
        collapsed = jnp.any(cond_var < collapse_tol * data_variance[None, :], axis=-1)
        return collapsed | ~jnp.all(jnp.isfinite(cond_var), axis=-1)

    def validate(self, covariances, n_components: int, n_features: int) -> None:
        """Raise a clear error if ``covariances`` have the wrong shape or values."""
        check_shape(covariances, self.shape(n_components, n_features), f"{self.name} covariances")
        c = concrete(covariances)
        if c is not None:
            self.check_values(c)

    @abc.abstractmethod
    def check_values(self, covariances: np.ndarray) -> None:
        """Raise if the concrete ``covariances`` are not valid (positive definite, positive)."""


class MatrixStructure(CovarianceStructure):
    """Covariance matrices (full, tied): Cholesky factors, ``(K, D, D)`` scatters."""

    unconstrained_key: ClassVar[str] = "log_cholesky"

    def moments(self, x, resp, shift, centred=None):
        # Each component's scatter about its own expansion point s_k from one side of
        # exact differences: with b_nk = r_nk (x_n - s_k) and c the mean of the s_k,
        # sum_n b_nk (x_n - s_k)^T = sum_n b_nk (x_n - c)^T - s1_k (s_k - c)^T, where
        # s1_k = sum_n b_nk. The first term is one (D, N) x (N, K D) matmul (XLA:CPU
        # runs it 4x faster than the batched sum_n z_nk z_nk^T, whose output is the
        # small side); rounding grows as eps (1 + |s_k - c| / sigma_k), linearly in
        # how far a component lies from c, not quadratically as a scatter about c does.
        if shift is None:
            shift, centred = _weighted_means(x, resp), None
        n, d = x.shape
        k = shift.shape[0]
        c, xc = (self.centre(x, shift) if centred is None else centred)[:2]
        b = resp[:, :, None] * (x[:, None, :] - shift[None, :, :])  # (N, K, D)
        s1 = jnp.sum(b, axis=0)
        cross = jnp.matmul(xc.T, b.reshape(n, k * d), precision=_EXACT).reshape(d, k, d)
        scatter = jnp.transpose(cross, (1, 2, 0)) - s1[:, :, None] * (shift - c)[:, None, :]
        return s1, self.symmetrize(scatter), shift

    def conditional(self, x0, observed, means, covariances):
        # M_nk = Sigma_k on the observed block, I on the missing one (no coupling):
        # its Cholesky factor gives log |Sigma_oo| and Sigma_oo^-1 r_o with a zero
        # missing part, so E[x_m | x_o] = mu_m + (Sigma_k M^-1 r)_m and
        # Cov[x_m | x_o] = (Sigma - W^T W)_mm with W = L^-1 diag(m) Sigma.
        k, d = means.shape
        cov = self.full_matrices(covariances, k, d)[None]  # (1, K, D, D)
        m = observed.astype(means.dtype)[:, None, :]  # (N, 1, D)
        miss = 1.0 - m
        big = cov * m[..., :, None] * m[..., None, :] + jnp.eye(d, dtype=means.dtype) * miss[..., :, None]
        chol = cholesky(big)  # (N, K, D, D)
        r = m * (x0[:, None, :] - means[None])
        y = solve_triangular(chol, r[..., None], lower=True)[..., 0]
        z = solve_triangular(chol, y[..., None], lower=True, trans=1)[..., 0]
        maha = jnp.sum(y * y, axis=-1)
        logdet = logdet_from_chol(chol)
        xhat = jnp.where(m > 0, x0[:, None, :], means[None] + jnp.einsum("nkde,nke->nkd", cov, z, precision=_EXACT))
        w = solve_triangular(chol, m[..., :, None] * cov, lower=True)
        cond = cov - jnp.einsum("nkij,nkil->nkjl", w, w, precision=_EXACT)
        cond = 0.5 * (cond + jnp.swapaxes(cond, -1, -2)) * miss[..., :, None] * miss[..., None, :]
        return maha, logdet, xhat, cond

    def missing_scatter(self, resp_u, resp, xc, cond):
        return (jnp.einsum("nk,nkd,nke->kde", resp_u, xc, xc, precision=_EXACT)
                + jnp.einsum("nk,nkde->kde", resp, cond, precision=_EXACT))

    def trace_logdet(self, scatter, covariances):
        chol = jnp.broadcast_to(cholesky(covariances), scatter.shape)
        y = solve_triangular(chol, scatter, lower=True)  # L^-1 S
        z = solve_triangular(chol, jnp.swapaxes(y, 1, 2), lower=True)  # L^-1 S L^-T
        return jnp.trace(z, axis1=1, axis2=2), jnp.broadcast_to(logdet_from_chol(chol), scatter.shape[:1])

    def penalty_scatter(self, counts, reg):
        return counts[:, None, None] * jnp.diag(reg)

    def rescale(self, covariances, v):
        root = jnp.sqrt(v)
        return covariances * (root[:, None] * root[None, :])

    def symmetrize(self, covariances):
        return 0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))

    def maximize(self, scatter, counts, reg, prior=None, means=None):
        # Each variance gets at least f = 2 D eps of itself (cholesky_floor, as in
        # constrain) when R is on: R is relative to the data's spread, and a component
        # wider than the data (random responsibilities give every component a share of
        # an outlier at 1e5: a diagonal of 2e8 against a spread of 8e7) can hold a
        # conditional variance below float32's rounding of its scatter. The floor bites
        # only where f diag(Sigma_k) exceeds R: never for float64 (f = 1.3e-15) nor for
        # float32 components narrower than the data by reg_covar / f.
        cov = super().maximize(scatter, counts, reg, prior, means)
        d = cov.shape[-1]
        floor = cholesky_floor(d, cov.dtype) * jnp.diagonal(cov, axis1=-2, axis2=-1)
        extra = jnp.where(reg > 0, jnp.maximum(floor - reg, 0.0), 0.0)
        return cov + extra[..., None] * jnp.eye(d, dtype=cov.dtype)

    def _inverse_wishart(self, covariances, prior):
        """``L^{-1}``, ``log |Sigma|`` and the inverse-Wishart log density, per matrix."""
        chol = cholesky(covariances)
        s0_chol = cholesky(prior.S0)
        logdet = logdet_from_chol(chol)
        linv = tri_inverse(chol)
        trace_term = jnp.sum(jnp.square(linv @ s0_chol), axis=(-2, -1))
        iw = inverse_wishart_log_prob(prior.nu0, logdet_from_chol(s0_chol), trace_term, logdet, covariances.shape[-1])
        return linv, logdet, iw

    def unconstrain(self, covariances):
        """The lower Cholesky factor ``L`` (``Sigma = L L^T``) with its diagonal
        replaced by ``log diag(L)``; the upper triangle is zero."""
        chol = cholesky(covariances)
        eye = jnp.eye(covariances.shape[-1], dtype=covariances.dtype)
        log_diag = jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))
        return jnp.tril(chol, -1) + log_diag[..., None] * eye

    def constrain(self, u):
        """``L L^T + f diag(L L^T)`` with ``L = tril(u, -1) + diag(exp(diag(u)))`` and
        ``f = 2 D eps`` (:func:`cholesky_floor`); the upper triangle is ignored.

        ``L L^T`` alone is positive definite in exact arithmetic only: an optimiser
        that drives a conditional variance toward 0 (the likelihood's singularity)
        leaves a product that float32 rounds to an indefinite matrix. The floor keeps
        every conditional variance above rounding; it changes the covariance by
        ``f`` relative (1.3e-15 in float64), so :meth:`unconstrain` ignores it."""
        d = u.shape[-1]
        eye = jnp.eye(d, dtype=u.dtype)
        chol = jnp.tril(u, -1) + jnp.exp(jnp.diagonal(u, axis1=-2, axis2=-1))[..., None] * eye
        cov = jnp.einsum("...ik,...jk->...ij", chol, chol, precision=_EXACT)
        return cov + cholesky_floor(d, u.dtype) * jnp.diagonal(cov, axis1=-2, axis2=-1)[..., None] * eye

    def conditional_variances(self, covariances):
        return jnp.square(jnp.diagonal(cholesky(covariances), axis1=-2, axis2=-1))

    def check_values(self, covariances):
        check_positive_definite(covariances, "covariances")


class VarianceStructure(CovarianceStructure):
    """Axis-aligned covariances (diag, spherical): variances, ``(K, D)`` diagonal scatters."""

    unconstrained_key: ClassVar[str] = "log_variances"

    @abc.abstractmethod
    def log_determinants(self, covariances: Array, n_features: int) -> Array:
        """``log |Sigma_k|`` ``(K,)``."""

    @abc.abstractmethod
    def precisions(self, covariances: Array, n_features: int) -> Array:
        """``1 / sigma2_kd`` ``(K, D)``."""

    def centre(self, x, means):
        c, xc = super().centre(x, means)
        return c, xc, xc * xc

    def row_width(self, n_components, n_features):
        # The chunk's live arrays: x - c and (x - c)^2 (N, D), the distances, the
        # log joint and the responsibilities (N, K). 4x the rows of K x D at
        # K = D = 16, and 1.2-1.4x faster per diag iteration (the chunk loop's
        # fixed cost per chunk, at N=1e5).
        return 3 * n_components + 2 * n_features

    def mahalanobis_logdet(self, x, means, covariances, centred=None):
        # sum_d p_kd (x_nd - mu_kd)^2 expanded about one centre c, the mean of the means:
        # (x-c)^2 p^T - 2 (x-c) (p (mu-c))^T + sum_d p (mu-c)^2, two matmuls (not one
        # over the concatenated [(x-c)^2, x-c]: XLA:CPU runs that concatenate slower
        # than both products), in rows_times's orientation (3 ms of a 12 ms diag
        # iteration at N=1e5, D=K=16). No (K, N, D) intermediate; the
        # expansion loses eps (|mu_k - c|^2 + |x - c|^2) / sigma^2 (absolute), which
        # the centre keeps at rounding for data offset far from 0.
        c, xc, xc2 = self.centre(x, means) if centred is None else centred
        prec = self.precisions(covariances, x.shape[-1])
        mc = means - c
        maha = rows_times(xc2, prec) + rows_times(xc, -2.0 * prec * mc) + jnp.sum(prec * mc * mc, axis=1)
        return jnp.maximum(maha, 0.0), self.log_determinants(covariances, x.shape[-1])

    def maximize(self, scatter, counts, reg, prior=None, means=None):
        # The matmul moments (see moments) can round the scatter of a component that
        # lies very far from their centre in units of its spread (a lone outlier in
        # float32) below 0: a sum of squares is not, and R then floors the variance.
        return super().maximize(jnp.maximum(scatter, 0.0), counts, reg, prior, means)

    def moments(self, x, resp, shift, centred=None):
        # One common expansion point c for every component, so both moments are
        # matmuls r^T (x-c) and r^T (x-c)^2: c is the mean of the current means (the
        # E-step's centre), or without them the data's responsibility-weighted mean.
        # The M-step's recentring about each mean cancels as (|mu_k - c| / sigma_k)^2:
        # float32 scatters are off by 6e-5 relative at 10 spreads from c, 8e-3 at
        # 100 (tests/families/test_covariance.py); an exact per-component sum is an
        # (N, K, D) pass that XLA:CPU runs 2x slower than the whole iteration.
        if shift is None:
            total = jnp.sum(resp, axis=1)
            c = jnp.matmul(total, x, precision=_EXACT) / jnp.maximum(jnp.sum(total), jnp.finfo(x.dtype).tiny)
            xc = x - c
            xc2 = xc * xc
        else:
            c, xc, xc2 = self.centre(x, shift) if centred is None else centred
        s1 = jnp.matmul(resp.T, xc, precision=_EXACT)
        s2 = jnp.matmul(resp.T, xc2, precision=_EXACT)
        return s1, s2, jnp.broadcast_to(c, (resp.shape[1], x.shape[-1]))

    def conditional(self, x0, observed, means, covariances):
        # Independent features: the observed ones' terms, the missing ones at the mean
        # with their own variance.
        d = means.shape[1]
        prec = self.precisions(covariances, d)[None]  # (1, K, D)
        m = observed.astype(means.dtype)[:, None, :]
        diff = m * (x0[:, None, :] - means[None])
        maha = jnp.sum(diff * diff * prec, axis=-1)
        logdet = -jnp.sum(m * jnp.log(prec), axis=-1)
        xhat = jnp.where(m > 0, x0[:, None, :], means[None])
        return maha, logdet, xhat, (1.0 - m) / prec

    def missing_scatter(self, resp_u, resp, xc, cond):
        return (jnp.einsum("nk,nkd->kd", resp_u, xc * xc, precision=_EXACT)
                + jnp.einsum("nk,nkd->kd", resp, cond, precision=_EXACT))

    def trace_logdet(self, scatter, covariances):
        d = scatter.shape[-1]
        return jnp.sum(scatter * self.precisions(covariances, d), axis=-1), self.log_determinants(covariances, d)

    def penalty_scatter(self, counts, reg):
        return counts[:, None] * reg[None, :]

    def symmetrize(self, covariances):
        return covariances

    def unconstrain(self, covariances):
        """``log`` of the variances."""
        return jnp.log(covariances)

    def constrain(self, u):
        return jnp.exp(u)

    def check_values(self, covariances):
        if not (np.all(np.isfinite(covariances)) and np.all(covariances > 0)):
            raise ValueError(
                f"{self.name} covariances must be finite and positive; the smallest is {np.min(covariances)}."
            )


class Full(MatrixStructure):
    """One ``D x D`` matrix per component: ``covariances`` ``(K, D, D)``.

    MAP: ``Sigma_k ~ IW(S0, nu0)``, mode ``(S0 + S_k + kappa0 dm dm^T) / (nu0 + N_k + D + 2)``.
    """

    name: ClassVar[str] = "full"

    def shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * (n_features * (n_features + 1) // 2)

    def full_matrices(self, covariances, n_components, n_features):
        return covariances

    def mahalanobis_logdet(self, x, means, covariances, centred=None):
        # y_nk = L_k^-1 (x_n - c) - L_k^-1 (mu_k - c) for all k at once: one (N, D) x
        # (D, K D) matmul about the mean of the means c, then squares summed per
        # component. The subtraction loses eps |x - c| / sigma in y (not its square:
        # 1e-3 in a distance of 1 at 1e4 spreads from c), and no (K, N, D) difference
        # is built.
        k, d = means.shape
        chol = cholesky(covariances)
        linv = tri_inverse(chol)  # (K, D, D)
        c, xc = (self.centre(x, means) if centred is None else centred)[:2]
        w = jnp.transpose(linv, (2, 0, 1)).reshape(d, k * d)  # w[e, k D + i] = L_k^-1[i, e]
        b = jnp.einsum("kie,ke->ki", linv, means - c, precision=_EXACT).reshape(k * d)
        y = jnp.matmul(xc, w, precision=_EXACT) - b
        maha = jnp.sum(jnp.square(y).reshape(x.shape[0], k, d), axis=-1)
        return maha, logdet_from_chol(chol)

    def ml_covariances(self, scatter, counts):
        return scatter / counts[:, None, None]

    def map_covariances(self, scatter, counts, means, prior):
        dm = means - prior.m0
        num = prior.S0 + scatter + prior.kappa0 * dm[:, :, None] * dm[:, None, :]
        return num / (prior.nu0 + counts + means.shape[-1] + 2)[:, None, None]

    def log_prior(self, means, covariances, prior, kept=None):
        linv, logdet, iw = self._inverse_wishart(covariances, prior)
        quad = jnp.sum(jnp.square(jnp.einsum("kde,ke->kd", linv, means - prior.m0)), axis=-1)
        return _kept_sum(mean_log_prior_terms(prior.kappa0, quad, logdet, means.shape[-1]) + iw, kept)

    def from_data_covariance(self, cov, n_components, reg):
        d = cov.shape[-1]
        return jnp.broadcast_to(cov + jnp.diag(reg), (n_components, d, d))


class Tied(MatrixStructure):
    """One ``D x D`` matrix shared by all components: ``covariances`` ``(D, D)``.

    MAP: one ``Sigma ~ IW(S0, nu0)``, mode
    ``(S0 + sum_k S_k + kappa0 sum_k dm_k dm_k^T) / (nu0 + N + D + 1 + K)``.
    """

    name: ClassVar[str] = "tied"

    def shape(self, n_components, n_features):
        return (n_features, n_features)

    def n_parameters(self, n_components, n_features):
        return n_features * (n_features + 1) // 2

    def full_matrices(self, covariances, n_components, n_features):
        return jnp.broadcast_to(covariances, (n_components, n_features, n_features))

    def mahalanobis_logdet(self, x, means, covariances, centred=None):
        # Whitened once, y = L^-1 (x - c) and m_k = L^-1 (mu_k - c) about the mean of
        # the means c; the distances |y_n - m_k|^2 from the differences themselves.
        chol = cholesky(covariances)
        linv = tri_inverse(chol)
        c, xc = (self.centre(x, means) if centred is None else centred)[:2]
        y = jnp.matmul(xc, linv.T, precision=_EXACT)
        m = jnp.matmul(means - c, linv.T, precision=_EXACT)
        maha = jnp.sum(jnp.square(y[:, None, :] - m[None, :, :]), axis=-1)
        return maha, jnp.broadcast_to(logdet_from_chol(chol), (means.shape[0],))

    def missing_scatter(self, resp_u, resp, xc, cond):
        return jnp.sum(super().missing_scatter(resp_u, resp, xc, cond), axis=0, keepdims=True)

    def moments(self, x, resp, shift, centred=None):
        """The scatter summed over the components, ``(1, D, D)``, in O(N D^2 + N K^2).

        With ``w_n = sum_k r_nk``, ``p = r / w`` and ``m_n = sum_k p_nk c_k``,
        ``sum_k sum_n r_nk (x_n - c_k)(x_n - c_k)^T`` is
        ``sum_n w_n (x_n - m_n)(x_n - m_n)^T + 1/2 sum_jk C_jk (c_j - c_k)(c_j - c_k)^T``
        with ``C = p^T r``: two sums of positive semi-definite terms, built from
        differences, so nothing cancels however far apart the components are.
        """
        if shift is None:
            shift = _weighted_means(x, resp)
        w = jnp.sum(resp, axis=1)
        p = resp / jnp.where(w > 0, w, 1.0)[:, None]
        e = x - jnp.matmul(p, shift, precision=_EXACT)  # each point less its expected centre
        within = jnp.matmul((w[:, None] * e).T, e, precision=_EXACT)
        pairs = jnp.matmul(p.T, resp, precision=_EXACT)  # (K, K)
        delta = shift[:, None, :] - shift[None, :, :]
        between = 0.5 * jnp.einsum("jk,jkd,jke->de", pairs, delta, delta, precision=_EXACT)
        return _first_moments(x, resp, shift), (within + between)[None], shift

    def penalty_scatter(self, counts, reg):
        return jnp.sum(counts) * jnp.diag(reg)[None]

    def penalty(self, covariances, reg, n_components):
        trace, _ = self.trace_logdet(jnp.diag(reg)[None], covariances)
        return jnp.broadcast_to(trace, (n_components,))

    def ml_covariances(self, scatter, counts):
        return jnp.sum(scatter, axis=0) / jnp.sum(counts)

    def map_covariances(self, scatter, counts, means, prior):
        k, d = means.shape
        dm = means - prior.m0
        num = prior.S0 + jnp.sum(scatter, axis=0) + prior.kappa0 * dm.T @ dm
        return num / (prior.nu0 + jnp.sum(counts) + d + 1 + k)

    def log_prior(self, means, covariances, prior, kept=None):
        linv, logdet, iw = self._inverse_wishart(covariances, prior)
        quad = jnp.sum(jnp.square((means - prior.m0) @ linv.T), axis=-1)
        return _kept_sum(mean_log_prior_terms(prior.kappa0, quad, logdet, means.shape[-1]), kept) + iw

    def from_data_covariance(self, cov, n_components, reg):
        return cov + jnp.diag(reg)

    def permute(self, covariances, perm):
        """The one shared matrix, unchanged."""
        return covariances

    def replace_components(self, mask, new, old):
        """The one shared matrix, from ``new`` when any component is in ``mask``."""
        return jnp.where(jnp.any(mask), new, old)

    def degenerate(self, covariances, data_variance, collapse_tol, n_components):
        """All components at once when the shared matrix collapses."""
        cond_var = self.conditional_variances(covariances)
        return jnp.broadcast_to(jnp.any(cond_var < collapse_tol * data_variance), (n_components,))


class Diag(VarianceStructure):
    """One variance per feature and component: ``covariances`` ``(K, D)``.

    MAP: per feature ``sigma2_kd ~ InvGamma(nu0/2, S0_dd/2)``, mode
    ``(S0_dd + S_kdd + kappa0 dm_kd^2) / (nu0 + N_k + 3)``.
    """

    name: ClassVar[str] = "diag"

    def shape(self, n_components, n_features):
        return (n_components, n_features)

    def n_parameters(self, n_components, n_features):
        return n_components * n_features

    def full_matrices(self, covariances, n_components, n_features):
        return jax.vmap(jnp.diag)(covariances)

    def log_determinants(self, covariances, n_features):
        return jnp.sum(jnp.log(covariances), axis=-1)

    def precisions(self, covariances, n_features):
        return 1.0 / covariances

    def ml_covariances(self, scatter, counts):
        return scatter / counts[:, None]

    def map_covariances(self, scatter, counts, means, prior):
        dm = means - prior.m0
        num = jnp.diagonal(prior.S0) + scatter + prior.kappa0 * dm * dm
        return num / (prior.nu0 + counts + 3)[:, None]

    def log_prior(self, means, covariances, prior, kept=None):
        dm = means - prior.m0
        normal = mean_log_prior_terms(prior.kappa0, dm * dm / covariances, jnp.log(covariances), 1)
        ig = inverse_gamma_log_prob(0.5 * prior.nu0, 0.5 * jnp.diagonal(prior.S0), covariances)
        return _kept_sum(normal + ig, kept)

    def from_data_covariance(self, cov, n_components, reg):
        return jnp.broadcast_to(jnp.diagonal(cov) + reg, (n_components, cov.shape[-1]))

    def rescale(self, covariances, v):
        return covariances * v

    def conditional_variances(self, covariances):
        return covariances


class Spherical(VarianceStructure):
    """One variance per component: ``covariances`` ``(K,)``.

    MAP: ``sigma2_k ~ InvGamma(nu0 D/2, tr(S0)/2)``, mode
    ``(tr(S0) + tr(S_k) + kappa0 |dm_k|^2) / (D (nu0 + N_k + 1) + 2)``.
    """

    name: ClassVar[str] = "spherical"

    def shape(self, n_components, n_features):
        return (n_components,)

    def n_parameters(self, n_components, n_features):
        return n_components

    def full_matrices(self, covariances, n_components, n_features):
        return covariances[:, None, None] * jnp.eye(n_features, dtype=covariances.dtype)

    def log_determinants(self, covariances, n_features):
        return n_features * jnp.log(covariances)

    def precisions(self, covariances, n_features):
        return jnp.broadcast_to((1.0 / covariances)[:, None], (covariances.shape[0], n_features))

    def ml_covariances(self, scatter, counts):
        return jnp.sum(scatter, axis=1) / (scatter.shape[-1] * counts)

    def map_covariances(self, scatter, counts, means, prior):
        dm = means - prior.m0
        num = jnp.trace(prior.S0) + jnp.sum(scatter, axis=1) + prior.kappa0 * jnp.sum(dm * dm, axis=1)
        return num / (means.shape[-1] * (prior.nu0 + counts + 1) + 2)

    def log_prior(self, means, covariances, prior, kept=None):
        d = means.shape[-1]
        dm = means - prior.m0
        quad = jnp.sum(dm * dm, axis=-1) / covariances
        normal = mean_log_prior_terms(prior.kappa0, quad, self.log_determinants(covariances, d), d)
        ig = inverse_gamma_log_prob(0.5 * prior.nu0 * d, 0.5 * jnp.trace(prior.S0), covariances)
        return _kept_sum(normal + ig, kept)

    def from_data_covariance(self, cov, n_components, reg):
        return jnp.full((n_components,), jnp.mean(jnp.diagonal(cov) + reg), dtype=cov.dtype)

    def rescale(self, covariances, v):
        return covariances * jnp.exp(jnp.mean(jnp.log(v)))

    def conditional_variances(self, covariances):
        return covariances[:, None]


_STRUCTURES: dict[str, type[CovarianceStructure]] = {cls.name: cls for cls in (Full, Diag, Spherical, Tied)}
COVARIANCE_TYPES = tuple(_STRUCTURES)


def covariance_structure(name: str) -> CovarianceStructure:
    """The structure named by a ``covariance_type`` string.

    Args:
        name: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``, or one of
            mclust's 14 model codes (``MCLUST_MODELS``: ``"EII"``, ..., ``"VVV"``;
            :mod:`emjax.families._parsimonious`). ``VVV``, ``EEE``, ``VVI`` and
            ``VII`` are aliases: they give the full, tied, diag and spherical
            structures.

    Raises:
        ValueError: for any other name, naming the valid ones.

    Example:
        >>> covariance_structure("diag").shape(3, 2)
        (3, 2)
        >>> covariance_structure("EEE").name, covariance_structure("VEV").shape(3, 2)
        ('tied', (3, 2, 2))
    """
    from ._parsimonious import MCLUST_ALIASES, MCLUST_MODELS, PARSIMONIOUS  # it imports this module

    if isinstance(name, str):
        if name in _STRUCTURES:
            return _STRUCTURES[name]()
        if name in MCLUST_ALIASES:
            return _STRUCTURES[MCLUST_ALIASES[name]]()
        if name in PARSIMONIOUS:
            return PARSIMONIOUS[name]()
    raise ValueError(
        f"covariance_type must be one of {COVARIANCE_TYPES} or an mclust model {MCLUST_MODELS}; got {name!r}."
    )
