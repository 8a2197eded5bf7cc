"""Gaussian components: full, diagonal, spherical, tied and mclust's parsimonious covariances.

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

from .._checks import check_number, check_shape, concrete, float_dtype, real_array
from ._covariance import COVARIANCE_TYPES as COVARIANCE_TYPES  # re-exported
from ._covariance import (
    CovarianceStructure,
    cholesky,
    cholesky_floor,
    count_floor,
    covariance_structure,
    recenter_scatter,
)
from ._priors import NormalInverseWishart
from ._base import Family

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
        s2: ``(K, D, D)`` sum of r (x - shift)(x - shift)^T (full), ``(K, D)``
            its diagonal (diag, spherical), or ``(1, D, D)`` its sum over the
            components (tied: all the shared covariance needs).
        shift: ``(K, D)`` expansion point.
    """

    counts: Array
    s1: Array
    s2: Array
    shift: Array

    def __add__(self, other: "GaussianStats") -> "GaussianStats":
        d = other.shift - self.shift
        s1 = other.s1 + other.counts[:, None] * d
        s2 = recenter_scatter(other.s2, other.s1, other.counts, d)
        return GaussianStats(self.counts + other.counts, self.s1 + s1, self.s2 + s2, self.shift)

    def __mul__(self, c) -> "GaussianStats":
        return GaussianStats(self.counts * c, self.s1 * c, self.s2 * c, self.shift)


def _feature_variance(data) -> tuple[Array, Array]:
    """``(D,)`` the weighted variance of each column over all rows of ``data`` (a
    :class:`emjax.data.Data`), in one pass about the mean of its in-memory sample,
    0 where it is below the rounding of the column's values; and ``(D,)`` that
    rounding, the ulp ``eps |mean|`` of each column."""
    # Missing entries (NaN, under Mixture(missing=True)) are left out of each column's moments.
    # The shift only has to be central for the one-pass moments: the mean of every
    # (N // 1024)-th row of the sample, 1024 to 2047 rows (all of them, a whole (N, D)
    # pass, was materialised as two (N, D) temporaries by XLA:CPU).
    sample = data.sample
    sample = sample[:: max(1, sample.shape[0] // 1024)]
    seen = ~jnp.isnan(sample)
    shift = jnp.sum(jnp.where(seen, sample, 0.0), axis=0) / jnp.maximum(jnp.sum(seen, axis=0), 1)

    def moments(shift, x, w):
        seen = ~jnp.isnan(x)
        d = jnp.where(seen, x - shift, 0.0)
        n = seen.astype(x.dtype)
        if w is None:
            return (jnp.sum(n, axis=0), jnp.sum(d, axis=0), jnp.sum(d * d, axis=0)), jnp.zeros((), x.dtype)
        w = w.astype(x.dtype)
        return (w @ n, w @ d, w @ (d * d)), jnp.zeros((), x.dtype)

    (total, s1, s2), _ = data.map_sum(moments, shift)
    total = jnp.maximum(total, jnp.finfo(s1.dtype).tiny)  # a column with nothing observed
    mean = s1 / total
    var = jnp.maximum(s2 / total - mean * mean, 0.0)
    # A constant column's variance is a rounding residue of order eps ulp^2 (its
    # values minus the shift are a few ulps, squared and summed with relative error
    # eps; another summation order, as under vmap, gives 1e-30 instead of 0), while
    # values that differ by one ulp in one row of N give ulp^2 / N: the threshold
    # sqrt(eps) ulp^2 lies between them.
    eps = jnp.finfo(var.dtype).eps
    ulp = eps * jnp.abs(shift + mean)
    return jnp.where(var > jnp.sqrt(eps) * ulp * ulp, var, 0.0), ulp


class Gaussian(Family):
    """Multivariate normal components.

    Args:
        covariance_type: ``"full"`` (one matrix per component), ``"diag"``
            (one variance per feature and component), ``"spherical"`` (one variance
            per component) or ``"tied"`` (one matrix shared by all components);
            or one of mclust's 14 models (:data:`emjax.families.MCLUST_MODELS`,
            Celeux & Govaert 1995): ``Sigma_k = lambda_k D_k A_k D_k^T`` named by
            its volume, shape and orientation, each ``E`` (equal), ``V``
            (variable) or ``I`` (identity), e.g. ``"VEV"``. ``"VVV"``, ``"EEE"``,
            ``"VVI"`` and ``"VII"`` are aliases of full, tied, diag and spherical
            (their shapes and behaviour; ``covariance_type`` keeps the name
            given). The other ten store ``(K, D, D)`` matrices and fit by their
            constrained M-steps (closed forms, or fixed-point iterations to
            ``sqrt(eps)`` for VEI, VEE, VEV, EVE, VVE; see
            ``emjax.families._parsimonious``); a prior then acts on each
            component's matrix as for full, and gradient ascent is refused.
        reg_covar: the regularisation, relative to the data's scale: every
            M-step adds ``R = reg_covar * diag(v)`` to the covariances
            (scikit-learn's ``S_k / n_k + reg_covar I`` with ``I`` replaced by
            the per-feature scale ``v``), so rescaling the data rescales the
            fit exactly. ``R`` is the M-step of the penalty ``tr(R Sigma_k^{-1}) / 2``
            on each component's log density, which the E-step applies too: EM
            increases the penalised log-likelihood exactly, and that is the
            objective :func:`emjax.fit` reports (it differs from the
            log-likelihood by about ``reg_covar * D / 2`` per point; prediction
            methods use the unpenalised density). In float32 a positive
            ``reg_covar`` is at least ``2 D eps`` (``2.4e-6`` for ``D = 10``),
            below which a covariance's Cholesky factor is not reliable, and a
            full or tied covariance's variances each get at least ``2 D eps``
            of themselves (a component wider than the data, such as one
            holding a far outlier); ``0`` means none.
        reg_scale: the scale ``v``: ``None`` (the default) measures each
            feature's variance on the data :func:`emjax.fit` is given
            (:meth:`adapt`; a constant feature takes the largest variance, all
            constant features 1; never so small that ``R`` falls below ``D``
            squared ulps of the feature's values) and uses 1 until then; a number or a ``(D,)``
            array fixes it (``reg_scale=1.0`` is scikit-learn's absolute
            ``reg_covar``).
        prior: a :class:`NormalInverseWishart` for MAP-EM, or ``None`` for
            maximum likelihood. For diag the prior acts per feature
            (``sigma2_kd ~ InvGamma(nu0/2, S0_dd/2)``), for spherical on the one
            variance (``sigma2_k ~ InvGamma(nu0 D/2, tr(S0)/2)``), for tied once on
            the shared matrix; the mean prior is ``N(m0, Sigma/kappa0)`` in every case.
        collapse_tol: a component counts as collapsed (a likelihood singularity)
            when some conditional variance falls below ``collapse_tol`` times the
            data's variance of that feature.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> family = Gaussian("full", prior=NormalInverseWishart.fraley_raftery(x, 3))
        >>> families = [Gaussian(c) for c in emjax.families.MCLUST_MODELS]   # mclust's 14 models
    """

    covariance_type: str = eqx.field(static=True)
    reg_covar: float = eqx.field(static=True)
    prior: NormalInverseWishart | None
    collapse_tol: float = eqx.field(static=True)
    reg_scale: Array | None
    measure_scale: bool = eqx.field(static=True)
    #: ``(D,)`` the data's variance, measured by :meth:`adapt`: the collapse test's
    #: reference (``None`` before: the test then measures the data it is given).
    data_variance: Array | None = None

    param_groups: ClassVar[tuple[str, ...]] = ("means", "covariances")

    def __init__(
        self, covariance_type: str = "full", *, reg_covar: float = 1e-6, prior=None, collapse_tol=1e-5, reg_scale=None
    ):
        # Numbers checked first, by name (a string would meet np.isfinite's ufunc error;
        # a NaN or negative collapse_tol would silently turn the collapse test off).
        reg_covar = check_number("reg_covar", reg_covar, low=0.0)
        collapse_tol = check_number("collapse_tol", collapse_tol, low=0.0)
        covariance_structure(covariance_type)  # a ValueError naming COVARIANCE_TYPES for any other string
        if prior is not None and not isinstance(prior, NormalInverseWishart):
            raise TypeError(f"prior must be a NormalInverseWishart or None; got {type(prior).__name__}.")
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.prior = prior
        self.collapse_tol = collapse_tol
        self.measure_scale = reg_scale is None
        if reg_scale is not None:
            scale = real_array(reg_scale, "reg_scale")
            if scale.ndim > 1 or not np.all(scale > 0):
                raise ValueError(f"reg_scale must be None, a positive number or a (D,) array of them; got {reg_scale!r}.")
            reg_scale = jnp.asarray(scale, dtype=float)
        self.reg_scale = reg_scale
        self.data_variance = None

    def adapt(self, x, weights: Array | None = None) -> "Gaussian":
        """The family with ``reg_scale`` (unless it was given) and ``data_variance`` measured on the data.

        Each feature's variance over all rows, weighted by the sample weights
        (so that weights act as repetition counts); a constant feature takes the
        largest variance of the others, and all-constant data 1.

        Args:
            x: an :class:`emjax.data.Data` (:func:`emjax.fit` passes its data:
                one pass over a stream), or an ``(N, D)`` array.
            weights: optional ``(N,)`` weights of an array ``x``.

        Example:
            >>> print(Gaussian("diag").adapt(jnp.array([[0.0, 1.0], [2.0, 1.0]])).reg_scale)
            [1. 1.]
        """
        if not hasattr(x, "map_sum"):
            from ..data._memory import ArrayData

            x = ArrayData(jnp.asarray(x), None if weights is None else jnp.asarray(weights), None)
        var, ulp = _feature_variance(x)
        # Measured once here, not by the collapse test in every iteration (a pass over the data).
        family = eqx.tree_at(lambda f: f.data_variance, self, var, is_leaf=lambda a: a is None)
        if not self.measure_scale:
            return family
        top = jnp.max(var)
        scale = jnp.where(var > 0, var, jnp.where(top > 0, top, 1.0))
        if self.reg_covar > 0:
            # R at least D ulp^2 per feature: below the data's own rounding (float32
            # values near 1e8 are multiples of 8) a component mean one ulp off gives a
            # scatter of ulp^2 that a smaller R cannot keep positive definite.
            d = scale.shape[0]
            scale = jnp.maximum(scale, d * ulp * ulp / self._relative(d, scale.dtype))
        return eqx.tree_at(lambda f: f.reg_scale, family, scale, is_leaf=lambda a: a is None)

    def reg(self, n_features: int, dtype) -> Array:
        """``(D,)`` the diagonal of the regularisation ``R`` in ``dtype`` (see ``reg_covar``)."""
        return self._relative(n_features, dtype) * self._unit(n_features, dtype)

    def _relative(self, n_features: int, dtype) -> float:
        """``reg_covar``, at least ``2 D eps`` when positive: below about ``D eps`` a
        float32 Cholesky factorisation is not reliable."""
        return 0.0 if self.reg_covar == 0 else max(self.reg_covar, cholesky_floor(n_features, dtype))

    def fit_penalty(self, params: GaussianParams) -> Array:
        """``tr(R Sigma_k^{-1}) / 2`` ``(K,)``: what fitting subtracts from each
        component's log density (see ``reg_covar``)."""
        means = params.means
        if self.reg_covar == 0:
            return jnp.zeros(means.shape[:1], means.dtype)
        k, d = means.shape
        return 0.5 * self.structure.penalty(params.covariances, self.reg(d, means.dtype), k)

    @property
    def has_unconstrained_coordinates(self) -> bool:
        """False for the parsimonious structures (see :class:`emjax.families.Family`)."""
        return self.structure.has_unconstrained_coordinates

    @property
    def structure(self) -> CovarianceStructure:
        """The :class:`CovarianceStructure` (``emjax.families._covariance``) named by ``covariance_type``."""
        return covariance_structure(self.covariance_type)

    # -- densities -----------------------------------------------------------------

    def log_prob(self, params: GaussianParams, x: Array) -> Array:
        return self.log_prob_and_cache(params, x)[0]

    def row_width(self, n_components, n_features):
        return self.structure.row_width(n_components, n_features)

    def log_prob_and_cache(self, params: GaussianParams, x: Array):
        # The data centred once for the distances and the moments: (c, x - c[, (x - c)^2]).
        centred = self.structure.centre(x, params.means)
        maha, logdet = self.structure.mahalanobis_logdet(x, params.means, params.covariances, centred)
        return -0.5 * (x.shape[-1] * _LOG_2PI + logdet[None, :] + maha), centred

    # -- missing entries ---------------------------------------------------------------

    supports_missing: ClassVar[bool] = True

    def log_prob_observed(self, params: GaussianParams, x0: Array, observed: Array):
        maha, logdet, xhat, cond = self.structure.conditional(x0, observed, params.means, params.covariances)
        d_obs = jnp.sum(observed, axis=1).astype(maha.dtype)[:, None]
        return -0.5 * (d_obs * _LOG_2PI + logdet + maha), (xhat, cond)

    def statistics_observed(self, x0, observed, resp, params: GaussianParams, cache) -> GaussianStats:
        # E[x_m | x_o] and Cov[x_m | x_o] per component in the moments about the
        # current means (the lecture's missing-data EM: the conditional covariance
        # adds to the scatter of the conditional means).
        xhat, cond = cache
        xc = xhat - params.means[None]
        s1 = jnp.einsum("nk,nkd->kd", resp, xc, precision=_EXACT)
        s2 = self.structure.missing_scatter(resp, resp, xc, cond)
        return GaussianStats(jnp.sum(resp, axis=0), s1, s2, params.means)

    def impute(self, params: GaussianParams, x0, observed):
        return self.structure.conditional(x0, observed, params.means, params.covariances)[2]

    def sample_missing(self, key, params: GaussianParams, x0, observed, components):
        _, _, xhat, cond = self.structure.conditional(x0, observed, params.means, params.covariances)
        return _draw_conditional(key, xhat, cond, observed, components, None)

    def mahalanobis(self, params: GaussianParams, x: Array) -> Array:
        """``(N, K)`` squared Mahalanobis distances of every point to every component's mean."""
        maha, _ = self.structure.mahalanobis_logdet(x, params.means, params.covariances)
        return maha

    def distances(self, params: GaussianParams, x: Array, missing: bool):
        """``(maha (N, K), d)``: the squared Mahalanobis distances and the number of
        dimensions they are taken in, the int ``D``; with ``missing``, those of each
        point's observed (non-NaN) entries under their marginal, ``d`` ``(N, 1)``."""
        if not missing:
            return self.mahalanobis(params, x), x.shape[-1]
        observed = ~jnp.isnan(x)
        maha = self.structure.conditional(jnp.where(observed, x, 0.0), observed, params.means, params.covariances)[0]
        return maha, jnp.sum(observed, axis=1).astype(maha.dtype)[:, None]

    # -- statistics and M-step -----------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: GaussianParams | None = None) -> GaussianStats:
        s1, s2, shift = self.structure.moments(x, resp, None if params is None else params.means)
        return GaussianStats(jnp.sum(resp, axis=0), s1, s2, shift)

    def cached_statistics(self, x, resp, params, cache):
        s1, s2, shift = self.structure.moments(x, resp, params.means, cache)
        return GaussianStats(jnp.sum(resp, axis=0), s1, s2, shift)

    def expected_log_likelihood(self, stats: GaussianStats, params: GaussianParams) -> Array:
        """``sum_n sum_k r_nk log p(x_n | theta_k)`` from the statistics, up to terms free of ``params``."""
        return self._expected_location_scale(stats, stats.counts, params)

    def _expected_location_scale(self, stats: GaussianStats, counts: Array, params) -> Array:
        """The Gaussian log-likelihood terms of (possibly reweighted) statistics:
        ``-1/2 sum_k [n_k (D log 2 pi + log|Sigma_k|) + tr(Sigma_k^-1 (S_k + n_k R))]``
        with the scatter ``S_k`` of ``stats`` about ``params.means`` and ``n = counts``
        (the power of ``|Sigma_k|``, as in :meth:`_maximize_location_scale`)."""
        mu = params.means
        structure = self.structure
        scatter = recenter_scatter(stats.s2, stats.s1, stats.counts, stats.shift - mu)  # moments about mu
        # The regularisation's penalty -n_k tr(R Sigma_k^{-1}) / 2 is the scatter n_k R.
        scatter = scatter + structure.penalty_scatter(counts, self.reg(mu.shape[-1], mu.dtype))
        trace, logdet = structure.trace_logdet(scatter, params.covariances)
        return -0.5 * (jnp.sum(counts * (mu.shape[-1] * _LOG_2PI + logdet)) + jnp.sum(trace))

    def maximize(self, stats: GaussianStats, params=None, frozen: frozenset = frozenset()) -> GaussianParams:
        return GaussianParams(*self._maximize_location_scale(stats, stats.counts, params, frozen))

    def _maximize_location_scale(self, stats: GaussianStats, counts: Array, params, frozen: frozenset):
        """``(means, covariances)`` from (possibly reweighted) Gaussian statistics:
        the means from ``stats`` alone, the covariances with ``counts`` ``(K,)`` as the
        power of ``|Sigma_k|`` (``stats.counts`` for a Gaussian; a Student-t's
        statistics are weighted by ``u`` while its power is the unweighted count)."""
        m = stats.counts
        dtype = stats.s1.dtype
        eps = count_floor(dtype)
        prior = None if self.prior is None else self.prior.cast(dtype)

        if "means" in frozen:
            mu = params.means
        elif prior is None:
            mu = stats.shift + stats.s1 / (m + eps)[:, None]
        else:
            xbar_minus_m0 = (stats.shift - prior.m0) + stats.s1 / (m + eps)[:, None]
            mu = prior.m0 + (m / (m + prior.kappa0 + eps))[:, None] * xbar_minus_m0

        if "covariances" in frozen:
            cov = params.covariances
        else:
            scatter = recenter_scatter(stats.s2, stats.s1, m, mu - stats.shift, new_minus_old=True)  # about mu
            cov = self.structure.maximize(scatter, counts, self.reg(mu.shape[-1], dtype), prior, mu)
        return mu, cov

    # -- prior -----------------------------------------------------------------------

    def log_prior(self, params: GaussianParams) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.means.dtype)
        prior = self.prior.cast(params.means.dtype)
        return self.structure.log_prior(params.means, params.covariances, prior)

    def kept_log_prior(self, params: GaussianParams, kept: Array) -> Array:
        """:meth:`log_prior` of the ``kept`` ``(K,)`` components (a tied matrix's prior once)."""
        if self.prior is None:
            return jnp.zeros((), params.means.dtype)
        prior = self.prior.cast(params.means.dtype)
        return self.structure.log_prior(params.means, params.covariances, prior, kept)

    # -- initialisation, sampling, moments -------------------------------------------

    def init_from_centers(self, x: Array, centers: Array) -> GaussianParams:
        # A broad start; float32 needs more than reg_covar where the data's
        # covariance is singular (collinear or constant features).
        dtype = float_dtype(x.dtype)
        floor = float(np.sqrt(jnp.finfo(dtype).eps))
        cov = self.structure.initial(x, centers.shape[0], self.reg(x.shape[-1], dtype), floor)
        return GaussianParams(centers.astype(x.dtype), cov)

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        k, d = n_components, n_features
        cov = self.structure.n_parameters(k, d)
        return (0 if "means" in frozen else k * d) + (0 if "covariances" in frozen else cov)

    def full_covariances(self, params: GaussianParams) -> Array:
        """Covariances as ``(K, D, D)`` matrices whatever the covariance type."""
        k, d = params.means.shape
        return self.structure.full_matrices(params.covariances, k, d)

    def sample(self, key, params: GaussianParams, components: Array) -> Array:
        chol = cholesky(self.full_covariances(params))
        eps = jax.random.normal(key, (components.shape[0], params.means.shape[1]), params.means.dtype)
        return params.means[components] + jnp.einsum("mde,me->md", chol[components], eps)

    def moments(self, params: GaussianParams):
        return params.means, self.full_covariances(params)

    # -- unconstrained coordinates (gradient ascent) -----------------------------------

    def unconstrain(self, params: GaussianParams) -> dict:
        """``{"means": (K, D), <covariance key>: ...}``, every entry a free real.

        Coordinates are in units of the data's scale ``v`` (``reg_scale``,
        measured by :meth:`adapt`; 1 before that), so a step of an optimiser
        means the same on data in any units: the means become ``mu / sqrt(v)``,
        the covariances ``Sigma / sqrt(v v^T)`` (diag: ``/ v``, spherical: by
        the geometric mean of ``v``). Full and tied covariances then become
        ``"log_cholesky"``: the lower Cholesky factor ``L`` with its diagonal
        replaced by ``log diag(L)``, stored as ``(K, D, D)`` (tied: ``(D, D)``)
        lower-triangular matrices; the upper triangle is zero and
        :meth:`constrain` ignores it. Diagonal and spherical covariances become
        ``"log_variances"`` (``(K, D)`` and ``(K,)``).
        """
        structure = self.structure
        v = self._unit(params.means.shape[-1], params.means.dtype)
        cov = structure.rescale(params.covariances, 1.0 / v)
        return {"means": params.means / jnp.sqrt(v), structure.unconstrained_key: structure.unconstrain(cov)}

    def constrain(self, u: dict) -> GaussianParams:
        """The inverse of :meth:`unconstrain`. A full or tied covariance is exactly
        ``sqrt(v v^T) * L L^T`` with ``L = tril(u, -1) + diag(exp(diag(u)))``, plus
        ``2 D eps`` of its own diagonal so that it stays positive definite once
        rounded (see ``MatrixStructure.constrain``); ``reg_covar`` is an M-step
        device and is not added."""
        structure = self.structure
        v = self._unit(u["means"].shape[-1], u["means"].dtype)
        cov = structure.rescale(structure.constrain(u[structure.unconstrained_key]), v)
        return GaussianParams(u["means"] * jnp.sqrt(v), cov)

    def _unit(self, n_features: int, dtype) -> Array:
        """``(D,)`` the data's scale ``v`` (``reg_scale``; ones before :meth:`adapt`) in ``dtype``."""
        if self.reg_scale is None:
            return jnp.ones((n_features,), dtype)
        return jnp.broadcast_to(jnp.asarray(self.reg_scale, dtype), (n_features,))

    # -- diagnostics and validation ----------------------------------------------------

    def replace_components(self, mask: Array, new: GaussianParams, old: GaussianParams) -> GaussianParams:
        means = jnp.where(mask[:, None], new.means, old.means)
        return GaussianParams(means, self.structure.replace_components(mask, new.covariances, old.covariances))

    def permute_components(self, params: GaussianParams, perm: Array) -> GaussianParams:
        """Means (and covariances, unless tied: one matrix shared by all) in the order ``perm``."""
        return GaussianParams(params.means[perm], self.structure.permute(params.covariances, perm))

    def degenerate(self, params: GaussianParams, x: Array) -> Array:
        k = params.means.shape[0]
        var = jnp.var(x, axis=0) if self.data_variance is None else self.data_variance.astype(params.means.dtype)
        return self.structure.degenerate(params.covariances, var, self.collapse_tol, k)

    def validate_width(self, n_features: int) -> None:
        """The prior's dimension (as every family) and a given per-feature ``reg_scale`` against the data's width."""
        super().validate_width(n_features)
        if self.reg_scale is not None and not self.measure_scale and jnp.ndim(self.reg_scale) == 1:
            if jnp.shape(self.reg_scale)[0] != n_features:
                raise ValueError(
                    f"reg_scale has {jnp.shape(self.reg_scale)[0]} entries but x has {n_features} features (columns)."
                )

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, GaussianParams):
            raise TypeError(f"Gaussian parameters must be a GaussianParams; got {type(params).__name__}.")
        self._validate_location_scale(params, n_components, n_features)

    def _validate_location_scale(self, params, n_components: int, n_features: int) -> None:
        """``params.means`` ``(K, D)`` finite and ``params.covariances`` valid for the structure."""
        k, d = n_components, n_features
        check_shape(params.means, (k, d), "means")
        m = concrete(params.means)
        if m is not None and not np.all(np.isfinite(m)):
            raise ValueError("means contain NaN or infinite values.")
        self.structure.validate(params.covariances, k, d)


def _draw_conditional(key, xhat, cond, observed, components, scale):
    """``(N, D)``: the observed entries, the missing ones drawn from
    ``N(xhat, cond * scale)`` of each point's component ``components`` ``(N,)``
    (``scale`` ``(N,)`` or ``None``: a Student-t's ``1 / u``)."""
    n = xhat.shape[0]
    rows = jnp.arange(n)
    mean, c = xhat[rows, components], cond[rows, components]
    z = jax.random.normal(key, mean.shape, mean.dtype)
    miss = ~observed
    if c.ndim == 3:
        # The observed rows and columns of cond are 0: the identity there keeps
        # the factor defined; a relative jitter absorbs rounding below 0.
        tiny = jnp.finfo(c.dtype).eps * jnp.maximum(jnp.max(jnp.abs(c), axis=(1, 2)), 1.0)
        eye = jnp.eye(c.shape[-1], dtype=c.dtype)
        chol = cholesky(c + eye * (observed.astype(c.dtype) + tiny[:, None])[:, :, None])
        noise = jnp.einsum("nde,ne->nd", chol, jnp.where(miss, z, 0.0), precision=_EXACT)
    else:
        noise = jnp.sqrt(jnp.maximum(c, 0.0)) * z
    if scale is not None:
        noise = noise * jnp.sqrt(scale)[:, None]
    return jnp.where(miss, mean + noise, mean)
