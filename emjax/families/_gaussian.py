"""Gaussian components: full, diagonal, spherical and tied covariances.

Numerics (see DESIGN.md): log densities through Cholesky factors and triangular
solves, never an explicit inverse of a covariance; second moments accumulated
about the current component means (``shift``), never as raw ``E[xx^T]``, so a
float32 fit stays finite where ``E[xx^T] - mu mu^T`` cancels catastrophically.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.linalg import solve_triangular

from .._checks import check_positive_definite, check_shape, concrete
from ._priors import (
    NormalInverseWishart,
    inverse_gamma_log_prob,
    inverse_wishart_log_prob,
    mean_log_prior_terms,
)
from ._base import Family

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
#: Exact float32 products: TF32 or bf16 passes on GPU matrix units lose EM's
#: accuracy (DESIGN.md, measured on an H100), so the data-sized products ask for it.
_EXACT = jax.lax.Precision.HIGHEST
_LOG_2PI = float(np.log(2 * np.pi))


class GaussianParams(eqx.Module):
    """Parameters of K Gaussian components.

    Attributes:
        means: ``(K, D)``.
        covariances: ``(K, D, D)`` full, ``(K, D)`` diag, ``(K,)`` spherical,
            ``(D, D)`` tied (the same shapes as scikit-learn's).
    """

    means: Array
    covariances: Array


class GaussianStats(eqx.Module):
    """Responsibility-weighted statistics of K Gaussian components.

    Moments are stored about an expansion point ``shift`` (the component means
    when the statistics were computed), which keeps float32 accurate. Addition
    re-expresses the right operand about the left one's shift exactly, so the
    statistics are additive whatever shifts they were computed at.

    Attributes:
        counts: ``(K,)`` sum of responsibilities.
        s1: ``(K, D)`` sum of r (x - shift).
        s2: ``(K, D, D)`` sum of r (x - shift)(x - shift)^T (full, tied) or
            ``(K, D)`` its diagonal (diag, spherical).
        shift: ``(K, D)`` expansion point.
    """

    counts: Array
    s1: Array
    s2: Array
    shift: Array

    def __add__(self, other: "GaussianStats") -> "GaussianStats":
        d = other.shift - self.shift
        n = other.counts[:, None]
        s1 = other.s1 + n * d
        if self.s2.ndim == 3:
            cross = other.s1[:, :, None] * d[:, None, :]
            s2 = other.s2 + cross + jnp.swapaxes(cross, 1, 2) + n[:, :, None] * d[:, :, None] * d[:, None, :]
        else:
            s2 = other.s2 + 2 * other.s1 * d + n * d * d
        return GaussianStats(self.counts + other.counts, self.s1 + s1, self.s2 + s2, self.shift)

    def __mul__(self, c) -> "GaussianStats":
        return GaussianStats(self.counts * c, self.s1 * c, self.s2 * c, self.shift)


def _cholesky(cov: Array) -> Array:
    return jnp.linalg.cholesky(cov)


def _tri_inverse(chol: Array) -> Array:
    """``L^{-1}`` of lower-triangular factors ``(..., D, D)`` by a triangular solve."""
    eye = jnp.broadcast_to(jnp.eye(chol.shape[-1], dtype=chol.dtype), chol.shape)
    return solve_triangular(chol, eye, lower=True)


def _logdet_from_chol(chol: Array) -> Array:
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)


class Gaussian(Family):
    """Multivariate normal components.

    Args:
        covariance_type: ``"full"`` (one matrix per component), ``"diag"``
            (one variance per feature and component), ``"spherical"`` (one variance
            per component) or ``"tied"`` (one matrix shared by all components).
        reg_covar: added to the covariance diagonal after every M-step, as in
            scikit-learn (``1e-6``).
        prior: a :class:`NormalInverseWishart` for MAP-EM, or ``None`` for
            maximum likelihood. For diag the prior acts per feature
            (``sigma2_kd ~ InvGamma(nu0/2, S0_dd/2)``), for spherical on the one
            variance (``sigma2_k ~ InvGamma(nu0 D/2, tr(S0)/2)``), for tied once on
            the shared matrix; the mean prior is ``N(m0, Sigma/kappa0)`` in every case.
        collapse_tol: a component counts as collapsed (a likelihood singularity)
            when some conditional variance falls below ``collapse_tol`` times the
            data's variance of that feature.

    Example:
        >>> family = Gaussian("full", prior=NormalInverseWishart.fraley_raftery(x, 3))
    """

    covariance_type: str = eqx.field(static=True)
    reg_covar: float = eqx.field(static=True)
    prior: NormalInverseWishart | None
    collapse_tol: float = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("means", "covariances")

    def __init__(self, covariance_type: str = "full", *, reg_covar: float = 1e-6, prior=None, collapse_tol=1e-5):
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}; got {covariance_type!r}.")
        if not (np.isfinite(reg_covar) and reg_covar >= 0):
            raise ValueError(f"reg_covar must be a finite number >= 0; got {reg_covar}.")
        if prior is not None and not isinstance(prior, NormalInverseWishart):
            raise TypeError(f"prior must be a NormalInverseWishart or None; got {type(prior).__name__}.")
        self.covariance_type = covariance_type
        self.reg_covar = float(reg_covar)
        self.prior = prior
        self.collapse_tol = float(collapse_tol)

    # -- densities -----------------------------------------------------------------

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        mu, cov = params.means, params.covariances
        d = x.shape[-1]
        # Component-major layout (K, N, D): the products below are K batched
        # matmuls with a long row axis, which XLA runs faster than (N, K, D).
        diff = x[None, :, :] - mu[:, None, :]
        ct = self.covariance_type
        if ct in ("full", "tied"):
            chol = _cholesky(cov)
            y = jnp.matmul(diff, jnp.swapaxes(_tri_inverse(chol), -1, -2), precision=_EXACT)  # L_k^-1 (x - mu_k)
            maha, logdet = jnp.sum(y * y, axis=-1), _logdet_from_chol(chol)
            logdet = jnp.broadcast_to(logdet, (mu.shape[0],))
        elif ct == "diag":
            maha = jnp.sum(diff * diff / cov[:, None, :], axis=-1)
            logdet = jnp.sum(jnp.log(cov), axis=-1)
        else:
            maha = jnp.sum(diff * diff, axis=-1) / cov[:, None]
            logdet = d * jnp.log(cov)
        return (-0.5 * (d * _LOG_2PI + logdet[:, None] + maha)).T

    # -- statistics and M-step -----------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: GaussianParams | None = None) -> GaussianStats:
        counts = jnp.sum(resp, axis=0)
        if params is None:
            # Two passes: the responsibility-weighted means are the expansion point.
            safe = jnp.where(counts > 0, counts, 1.0)
            shift = jnp.matmul(resp.T, x, precision=_EXACT) / safe[:, None]
        else:
            shift = params.means
        diff = x[None, :, :] - shift[:, None, :]  # (K, N, D), as in log_prob
        rdiff = resp.T[:, :, None] * diff
        s1 = jnp.sum(rdiff, axis=1)
        if self.covariance_type in ("full", "tied"):
            s2 = jnp.matmul(jnp.swapaxes(rdiff, 1, 2), diff, precision=_EXACT)
        else:
            s2 = jnp.sum(rdiff * diff, axis=1)
        return GaussianStats(counts, s1, s2, shift)

    def expected_log_likelihood(self, stats: GaussianStats, params: GaussianParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        mu, cov, n = params.means, params.covariances, stats.counts
        d = stats.shift - mu  # moments about mu from moments about the shift
        dim = mu.shape[-1]
        ct = self.covariance_type
        if ct in ("full", "tied"):
            cross = stats.s1[:, :, None] * d[:, None, :]
            scatter = stats.s2 + cross + jnp.swapaxes(cross, 1, 2) + n[:, None, None] * d[:, :, None] * d[:, None, :]
            chol = jnp.broadcast_to(_cholesky(cov), scatter.shape)
            y = solve_triangular(chol, scatter, lower=True)  # L^-1 S
            z = solve_triangular(chol, jnp.swapaxes(y, 1, 2), lower=True)  # L^-1 S L^-T
            trace = jnp.trace(z, axis1=1, axis2=2)
            logdet = jnp.broadcast_to(_logdet_from_chol(chol), n.shape)
        else:
            sq = stats.s2 + 2 * stats.s1 * d + n[:, None] * d * d  # (K, D) diagonal scatter
            if ct == "diag":
                trace, logdet = jnp.sum(sq / cov, axis=1), jnp.sum(jnp.log(cov), axis=1)
            else:
                trace, logdet = jnp.sum(sq, axis=1) / cov, dim * jnp.log(cov)
        return -0.5 * jnp.sum(n * (dim * _LOG_2PI + logdet) + trace)

    def maximize(self, stats: GaussianStats, params=None, frozen: frozenset = frozenset()) -> GaussianParams:
        n = stats.counts
        k, d = stats.s1.shape
        dtype = stats.s1.dtype
        eps = 10 * jnp.finfo(dtype).eps
        nn = n + eps
        prior = None if self.prior is None else self.prior.cast(dtype)

        if "means" in frozen:
            mu = params.means
        elif prior is None:
            mu = stats.shift + stats.s1 / nn[:, None]
        else:
            xbar_minus_m0 = (stats.shift - prior.m0) + stats.s1 / nn[:, None]
            mu = prior.m0 + (n / (n + prior.kappa0 + eps))[:, None] * xbar_minus_m0
        # Scatter about mu, from the moments about the shift: e = mu - shift.
        e = mu - stats.shift
        ne = n[:, None] * e
        if self.covariance_type in ("full", "tied"):
            cross = stats.s1[:, :, None] * e[:, None, :]
            scatter = stats.s2 - cross - jnp.swapaxes(cross, 1, 2) + ne[:, :, None] * e[:, None, :]
        else:
            scatter = stats.s2 - 2 * stats.s1 * e + ne * e  # (K, D) diagonal of the scatter

        if "covariances" in frozen:
            cov = params.covariances
        else:
            cov = self._covariance_mode(scatter, mu, n, nn, prior)
        return GaussianParams(mu, cov)

    def _covariance_mode(self, scatter, mu, n, nn, prior):
        k, d = mu.shape
        ct = self.covariance_type
        reg = self.reg_covar
        eye = jnp.eye(d, dtype=mu.dtype)
        if prior is not None:
            dm = mu - prior.m0
            kap = prior.kappa0
        if ct == "full":
            if prior is None:
                cov = scatter / nn[:, None, None]
            else:
                num = prior.S0 + scatter + kap * dm[:, :, None] * dm[:, None, :]
                cov = num / (prior.nu0 + n + d + 2)[:, None, None]
            cov = 0.5 * (cov + jnp.swapaxes(cov, 1, 2))
            return cov + reg * eye
        if ct == "tied":
            total = jnp.sum(scatter, axis=0)
            if prior is None:
                cov = total / jnp.sum(nn)
            else:
                num = prior.S0 + total + kap * dm.T @ dm
                cov = num / (prior.nu0 + jnp.sum(n) + d + 1 + k)
            cov = 0.5 * (cov + cov.T)
            return cov + reg * eye
        if ct == "diag":
            if prior is None:
                var = scatter / nn[:, None]
            else:
                num = jnp.diagonal(prior.S0) + scatter + kap * dm * dm
                var = num / (prior.nu0 + n + 3)[:, None]
            return var + reg
        # spherical
        if prior is None:
            var = jnp.sum(scatter, axis=1) / (d * nn)
        else:
            num = jnp.trace(prior.S0) + jnp.sum(scatter, axis=1) + kap * jnp.sum(dm * dm, axis=1)
            var = num / (d * (prior.nu0 + n + 1) + 2)
        return var + reg

    # -- prior -----------------------------------------------------------------------

    def log_prior(self, params: GaussianParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.means.dtype)
        prior = self.prior.cast(params.means.dtype)
        mu, cov = params.means, params.covariances
        k, d = mu.shape
        dm = mu - prior.m0
        ct = self.covariance_type
        if ct in ("full", "tied"):
            chol = _cholesky(cov)
            s0_chol = _cholesky(prior.S0)
            s0_logdet = _logdet_from_chol(s0_chol)
            logdet = _logdet_from_chol(chol)
            linv = _tri_inverse(chol)
            trace_term = jnp.sum(jnp.square(linv @ s0_chol), axis=(-2, -1))
            if ct == "full":
                quad = jnp.sum(jnp.square(jnp.einsum("kde,ke->kd", linv, dm)), axis=-1)
                iw = inverse_wishart_log_prob(prior.nu0, s0_logdet, trace_term, logdet, d)
                return jnp.sum(mean_log_prior_terms(prior.kappa0, quad, logdet, d) + iw)
            quad = jnp.sum(jnp.square(dm @ linv.T), axis=-1)
            iw = inverse_wishart_log_prob(prior.nu0, s0_logdet, trace_term, logdet, d)
            return jnp.sum(mean_log_prior_terms(prior.kappa0, quad, logdet, d)) + iw
        if ct == "diag":
            quad_terms = dm * dm / cov
            normal = mean_log_prior_terms(prior.kappa0, quad_terms, jnp.log(cov), 1)
            ig = inverse_gamma_log_prob(0.5 * prior.nu0, 0.5 * jnp.diagonal(prior.S0), cov)
            return jnp.sum(normal + ig)
        quad = jnp.sum(dm * dm, axis=-1) / cov
        normal = mean_log_prior_terms(prior.kappa0, quad, d * jnp.log(cov), d)
        ig = inverse_gamma_log_prob(0.5 * prior.nu0 * d, 0.5 * jnp.trace(prior.S0), cov)
        return jnp.sum(normal + ig)

    # -- initialisation, sampling, moments -------------------------------------------

    def init_from_centers(self, x: Array, centers: Array) -> GaussianParams:
        k, d = centers.shape
        xc = x - jnp.mean(x, axis=0)
        cov = jnp.matmul(xc.T, xc, precision=_EXACT) / x.shape[0]
        ct = self.covariance_type
        if ct == "full":
            c = jnp.broadcast_to(cov + self.reg_covar * jnp.eye(d, dtype=x.dtype), (k, d, d))
        elif ct == "tied":
            c = cov + self.reg_covar * jnp.eye(d, dtype=x.dtype)
        elif ct == "diag":
            c = jnp.broadcast_to(jnp.diagonal(cov) + self.reg_covar, (k, d))
        else:
            c = jnp.full((k,), jnp.mean(jnp.diagonal(cov)) + self.reg_covar, dtype=x.dtype)
        return GaussianParams(centers.astype(x.dtype), c)

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        k, d = n_components, n_features
        per_matrix = d * (d + 1) // 2
        cov = {"full": k * per_matrix, "tied": per_matrix, "diag": k * d, "spherical": k}[self.covariance_type]
        return (0 if "means" in frozen else k * d) + (0 if "covariances" in frozen else cov)

    def full_covariances(self, params: GaussianParams) -> Array:
        """Covariances as ``(K, D, D)`` matrices whatever the covariance type."""
        k, d = params.means.shape
        cov = params.covariances
        ct = self.covariance_type
        if ct == "full":
            return cov
        if ct == "tied":
            return jnp.broadcast_to(cov, (k, d, d))
        if ct == "diag":
            return jax.vmap(jnp.diag)(cov)
        return cov[:, None, None] * jnp.eye(d, dtype=cov.dtype)

    def sample(self, key, params: GaussianParams, components: Array) -> Array:
        chol = _cholesky(self.full_covariances(params))
        eps = jax.random.normal(key, (components.shape[0], params.means.shape[1]), params.means.dtype)
        return params.means[components] + jnp.einsum("mde,me->md", chol[components], eps)

    def moments(self, params: GaussianParams):
        return params.means, self.full_covariances(params)

    # -- unconstrained coordinates (gradient ascent) -----------------------------------

    def unconstrain(self, params: GaussianParams) -> dict:
        """``{"means": (K, D), <covariance key>: ...}``, every entry a free real.

        The means are kept as they are. Full and tied covariances become
        ``"log_cholesky"``: the lower Cholesky factor ``L`` (``Sigma = L L^T``)
        with its diagonal replaced by ``log diag(L)``, stored as ``(K, D, D)``
        (tied: ``(D, D)``) lower-triangular matrices; the upper triangle is zero
        and :meth:`constrain` ignores it. Diagonal and spherical covariances
        become ``"log_variances"`` (``(K, D)`` and ``(K,)``).
        """
        cov = params.covariances
        if self.covariance_type in ("full", "tied"):
            chol = _cholesky(cov)
            eye = jnp.eye(cov.shape[-1], dtype=cov.dtype)
            log_diag = jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))
            return {"means": params.means, "log_cholesky": jnp.tril(chol, -1) + log_diag[..., None] * eye}
        return {"means": params.means, "log_variances": jnp.log(cov)}

    def constrain(self, u: dict) -> GaussianParams:
        """The inverse of :meth:`unconstrain`. A full or tied covariance is exactly
        ``L L^T`` with ``L = tril(u, -1) + diag(exp(diag(u)))``, positive definite
        for every real ``u``; ``reg_covar`` is an M-step device and is not added."""
        if self.covariance_type in ("full", "tied"):
            v = u["log_cholesky"]
            eye = jnp.eye(v.shape[-1], dtype=v.dtype)
            chol = jnp.tril(v, -1) + jnp.exp(jnp.diagonal(v, axis1=-2, axis2=-1))[..., None] * eye
            cov = jnp.einsum("...ik,...jk->...ij", chol, chol, precision=_EXACT)
            return GaussianParams(u["means"], cov)
        return GaussianParams(u["means"], jnp.exp(u["log_variances"]))

    # -- diagnostics and validation ----------------------------------------------------

    def replace_components(self, mask: Array, new: GaussianParams, old: GaussianParams) -> GaussianParams:
        means = jnp.where(mask[:, None], new.means, old.means)
        if self.covariance_type == "tied":  # one shared matrix: replaced when any component collapsed
            return GaussianParams(means, jnp.where(jnp.any(mask), new.covariances, old.covariances))
        return GaussianParams(means, super().replace_components(mask, new, old).covariances)

    def degenerate(self, params: GaussianParams, x: Array) -> Array:
        k = params.means.shape[0]
        data_scale = jnp.var(x, axis=0)
        ct = self.covariance_type
        if ct == "tied":
            cond_var = jnp.square(jnp.diagonal(_cholesky(params.covariances)))
            return jnp.broadcast_to(jnp.any(cond_var < self.collapse_tol * data_scale), (k,))
        if ct == "full":
            cond_var = jnp.square(jnp.diagonal(_cholesky(params.covariances), axis1=-2, axis2=-1))
        elif ct == "diag":
            cond_var = params.covariances
        else:
            cond_var = params.covariances[:, None]
        collapsed = jnp.any(cond_var < self.collapse_tol * data_scale[None, :], axis=-1)
        return collapsed | ~jnp.all(jnp.isfinite(cond_var), axis=-1)

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, GaussianParams):
            raise TypeError(f"Gaussian parameters must be a GaussianParams; got {type(params).__name__}.")
        k, d = n_components, n_features
        check_shape(params.means, (k, d), "means")
        m = concrete(params.means)
        if m is not None and not np.all(np.isfinite(m)):
            raise ValueError("means contain NaN or infinite values.")
        ct = self.covariance_type
        shape = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[ct]
        check_shape(params.covariances, shape, f"{ct} covariances")
        c = concrete(params.covariances)
        if c is None:
            return
        if ct in ("full", "tied"):
            check_positive_definite(c, "covariances")
        elif not (np.all(np.isfinite(c)) and np.all(c > 0)):
            raise ValueError(f"{ct} covariances must be finite and positive; the smallest is {np.min(c)}.")
