"""Student-t components: heavy-tailed mixtures by EM with latent precision weights.

A multivariate t is a Gaussian scale mixture: ``u ~ Gamma(nu/2, rate nu/2)``,
``x | u ~ N(mu, Sigma / u)``. EM treats ``u`` as a second latent variable beside
the component label (McLachlan & Peel 2000, ch. 7; Liu & Rubin 1995): the E-step
gives each point's responsibilities and its expected precision weights
``E[u | x, k] = (nu_k + D) / (nu_k + delta_nk)`` (``delta`` the Mahalanobis
distance), so a far point counts for little; the M-step is a Gaussian M-step on
the ``u``-weighted statistics, plus a 1-D root solve per component for the
degrees of freedom (ECM). The covariance structures are the Gaussian's
(:mod:`emjax.families._covariance`): the same four types, kernels, regularisation
and conjugate priors.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import digamma, gammaln

from .._checks import check_number, check_shape, concrete
from ._covariance import cholesky, count_floor
from ._gaussian import Gaussian, GaussianStats, _LOG_2PI

#: Degrees of freedom stay in ``[DOF_MIN, DOF_MAX]``: below 0.1 the tails are so
#: heavy that a point's weight is indistinguishable from 0; above 1e4 the t is a
#: Gaussian to float32's resolution and the root solve has nothing left to find.
DOF_MIN = 0.1
DOF_MAX = 1e4
#: The learned degrees of freedom start here (McLachlan & Peel's choice of a
#: moderately heavy tail); ``StudentT(dof_init=...)`` changes it.
DOF_INIT = 10.0
_BISECTIONS = 64


class StudentTParams(eqx.Module):
    """Parameters of K Student-t components.

    Attributes:
        means: ``(K, D)`` locations.
        covariances: scale matrices in the covariance structure's shape
            (``(K, D, D)`` full, ``(K, D)`` diag, ``(K,)`` spherical, ``(D, D)``
            tied); the covariance of component ``k`` is ``nu_k / (nu_k - 2)``
            times its scale where ``nu_k > 2``.
        dofs: ``(K,)`` degrees of freedom ``nu_k > 0``.
    """

    means: Array
    covariances: Array
    dofs: Array


class StudentTStats(eqx.Module):
    """Statistics of K Student-t components (additive; :func:`emjax.add_stats`).

    Attributes:
        counts: ``(K,)`` sum of responsibilities ``r``.
        weighted: the Gaussian statistics of the ``r u``-weighted points (its
            ``counts`` are ``sum r u``).
        dof_stat: ``(K,)`` ``sum r (E[log u] - E[u] + 1)`` (``<= 0``), all the
            degrees of freedom's M-step needs.
    """

    counts: Array
    weighted: GaussianStats
    dof_stat: Array


def _stirling_gamma(z: Array) -> Array:
    """``lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2)`` for ``z > 0``, without
    cancellation: Stirling's series from ``z = 8`` (error below 1e-12), the direct
    difference below it (where its terms are small)."""
    big = z >= 8
    zb = jnp.where(big, z, 8.0)
    inv = 1.0 / zb
    inv2 = inv * inv
    series = inv * (1 / 12 - inv2 * (1 / 360 - inv2 * (1 / 1260 - inv2 / 1680)))
    zs = jnp.where(big, 1.0, z)
    direct = gammaln(zs) - ((zs - 0.5) * jnp.log(zs) - zs + 0.5 * _LOG_2PI)
    return jnp.where(big, series, direct)


def log1p_minus(t: Array) -> Array:
    """``log(1 + t) - t`` for ``t > -1``, by its Taylor series where ``|t| < 0.01``
    (the direct difference keeps only ``eps / t`` of its relative precision there)."""
    small = jnp.abs(t) < 0.01
    ts = jnp.where(small, t, 0.0)
    series = ts * ts * (-1 / 2 + ts * (1 / 3 + ts * (-1 / 4 + ts * (1 / 5 - ts / 6))))
    tb = jnp.where(small, 1.0, t)
    return jnp.where(small, series, jnp.log1p(tb) - tb)


def log_gamma_ratio(a: Array, h) -> Array:
    """``lgamma(a + h) - lgamma(a) - h log a`` for ``a > 0``, ``h >= 0``, accurate
    for every ``a``: from Stirling's formula, ``(a + h - 1/2) log(1 + h/a) - h``
    plus the remainders, written as ``a (log(1 + t) - t) + (h - 1/2) log(1 + t)``
    (``t = h / a``) so that nothing of size ``h`` cancels (the plain difference of
    two ``lgamma`` near ``a log a`` keeps no digit in float32 at ``a = 1e4``)."""
    t = h / a
    return a * log1p_minus(t) + (h - 0.5) * jnp.log1p(t) + _stirling_gamma(a + h) - _stirling_gamma(a)


def log_minus_digamma(x: Array) -> Array:
    """``log x - digamma(x)`` for ``x > 0`` (decreasing from infinity to 0), by its
    asymptotic series from ``x = 8`` where the difference cancels."""
    big = x >= 8
    xb = jnp.where(big, x, 8.0)
    inv = 1.0 / xb
    inv2 = inv * inv
    series = inv * (0.5 + inv * (1 / 12 - inv2 * (1 / 120 - inv2 * (1 / 252 - inv2 * (1 / 240 - inv2 / 132)))))
    xs = jnp.where(big, 1.0, x)
    return jnp.where(big, series, jnp.log(xs) - digamma(xs))


def solve_dof(target: Array, low: float = DOF_MIN, high: float = DOF_MAX) -> Array:
    """``nu`` with ``log(nu / 2) - digamma(nu / 2) = target`` (``(K,)``, ``target >= 0``),
    by bisection on ``log nu`` (the left side decreases in ``nu``), clipped to
    ``[low, high]``: the ECM update of the degrees of freedom."""
    lo = jnp.full_like(target, np.log(low))
    hi = jnp.full_like(target, np.log(high))

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = log_minus_digamma(0.5 * jnp.exp(mid)) > target  # nu too small
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


class StudentT(Gaussian):
    """Multivariate Student-t components with learned or fixed degrees of freedom.

    The configuration is the :class:`emjax.Gaussian`'s (covariance structure,
    relative ``reg_covar``, a :class:`NormalInverseWishart` prior on the
    location and scale, collapse detection) plus the degrees of freedom.

    Args:
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``
            (the scale matrices' structure, as for :class:`emjax.Gaussian`).
        dof: a positive number fixes every component's degrees of freedom;
            ``None`` (the default) learns one per component.
        dof_init: where learned degrees of freedom start (10).
        reg_covar, prior, collapse_tol, reg_scale: as for :class:`emjax.Gaussian`;
            the prior is ``N(m0, Sigma / kappa0)`` on the location and the
            inverse-Wishart on the scale, both given the precision weights.

    The learned update is ECM (Liu & Rubin 1995): the degrees of freedom
    maximise the expected complete-data log-likelihood given the precision
    weights of the E-step, ``log(nu/2) - digamma(nu/2) = -mean_r(E log u - E u + 1)``,
    solved by bisection in ``[0.1, 1e4]``. ``K = 1`` is the single multivariate t.

    Example:
        >>> model = emjax.Mixture(emjax.StudentT("full"), n_components=2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> result.params.components.dofs
    """

    dof: float | None = eqx.field(static=True)
    dof_init: float = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("means", "covariances", "dofs")

    def __init__(
        self,
        covariance_type: str = "full",
        *,
        dof: float | None = None,
        dof_init: float = DOF_INIT,
        reg_covar: float = 1e-6,
        prior=None,
        collapse_tol=1e-5,
        reg_scale=None,
    ):
        if dof is not None:
            dof = check_number("dof", dof, low=0.0)
            if not dof > 0:
                raise ValueError(f"dof must be positive (or None to learn it); got {dof!r}.")
        dof_init = check_number("dof_init", dof_init, low=0.0)
        if not DOF_MIN <= dof_init <= DOF_MAX:
            raise ValueError(f"dof_init must lie in [{DOF_MIN}, {DOF_MAX}]; got {dof_init!r}.")
        super().__init__(covariance_type, reg_covar=reg_covar, prior=prior, collapse_tol=collapse_tol, reg_scale=reg_scale)
        self.dof = dof
        self.dof_init = dof_init

    # -- densities -----------------------------------------------------------------

    def log_prob(self, params: StudentTParams, x: Array) -> Array:
        return self.log_prob_and_cache(params, x)[0]

    def log_prob_and_cache(self, params: StudentTParams, x: Array):
        # The statistics reuse the centred data and the distances (for the weights u).
        centred = self.structure.centre(x, params.means)
        maha, logdet = self.structure.mahalanobis_logdet(x, params.means, params.covariances, centred)
        nu = params.dofs
        d = x.shape[-1]
        const = log_gamma_ratio(0.5 * nu, 0.5 * d) - 0.5 * (d * _LOG_2PI + logdet)  # (K,)
        return const[None, :] - 0.5 * (nu + d)[None, :] * jnp.log1p(maha / nu[None, :]), (centred, maha)

    def precision_weights(self, params: StudentTParams, x: Array) -> Array:
        """``(N, K)`` ``E[u | x_n, z = k] = (nu_k + D) / (nu_k + delta_nk)``: how much
        each point counts in component ``k``'s location and scale (small: an outlier)."""
        nu = params.dofs[None, :]
        return (nu + x.shape[-1]) / (nu + self.mahalanobis(params, x))

    # -- statistics and M-step -----------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: StudentTParams | None = None) -> StudentTStats:
        counts = jnp.sum(resp, axis=0)
        d = x.shape[-1]
        if params is None:
            # No parameters to weigh by: the Gaussian's statistics (u = 1), and the
            # degrees-of-freedom statistic whose M-step returns dof_init.
            weighted = Gaussian.statistics(self, x, resp, None)
            target = log_minus_digamma(jnp.asarray(0.5 * self._initial_dof(), x.dtype))
            return StudentTStats(counts, weighted, -counts * target)
        return self.cached_statistics(x, resp, params, (None, self.mahalanobis(params, x)))

    def cached_statistics(self, x, resp, params, cache):
        centred, maha = cache
        d = x.shape[-1]
        nu = params.dofs[None, :]
        t = (d - maha) / (nu + maha)  # u - 1, exact where u is near 1
        u = 1.0 + t
        # E[log u] - E[u] + 1 = log u - u + 1 - (log a - digamma(a)), a = (nu + D) / 2
        gap = log1p_minus(t) - log_minus_digamma(0.5 * (nu + d))
        ru = resp * u
        s1, s2, shift = self.structure.moments(x, ru, params.means, centred)
        weighted = GaussianStats(jnp.sum(ru, axis=0), s1, s2, shift)
        return StudentTStats(jnp.sum(resp, axis=0), weighted, jnp.sum(resp * gap, axis=0))

    def expected_log_likelihood(self, stats: StudentTStats, params: StudentTParams) -> Array:
        """``sum_n sum_k r_nk E_u[log p(x_n, u | theta_k)]`` from the statistics, up to terms free of ``params``."""
        n = stats.counts
        gaussian = self._expected_location_scale(stats.weighted, n, params)  # scatter sum r u (x - mu)(x - mu)^T
        # sum r E[log Gamma(u | a, a)] in a = nu / 2: n (a log a - lgamma a) + a sum r (E log u - E u),
        # written as n (log a - log 2 pi) / 2 - n rho(a) + a dof_stat without the a log a cancellation.
        a = 0.5 * params.dofs
        gamma = n * (0.5 * (jnp.log(a) - _LOG_2PI) - _stirling_gamma(a)) + a * stats.dof_stat
        return gaussian + jnp.sum(gamma)

    def maximize(self, stats: StudentTStats, params=None, frozen: frozenset = frozenset()) -> StudentTParams:
        w, n = stats.weighted, stats.counts
        dtype = w.s1.dtype
        # The u-weighted Gaussian M-step; the power of |Sigma| in the complete-data
        # likelihood is sum r (not sum r u).
        mu, cov = self._maximize_location_scale(w, n, params, frozen)

        if self.dof is not None:
            dofs = jnp.full(n.shape, self.dof, dtype)
        elif "dofs" in frozen:
            dofs = params.dofs
        else:
            target = jnp.maximum(-stats.dof_stat / jnp.where(n > 0, n, 1.0), 0.0)
            dofs = solve_dof(target)
            if params is not None:  # an empty component keeps its degrees of freedom
                dofs = jnp.where(n > count_floor(dtype), dofs, params.dofs)
        return StudentTParams(mu, cov, dofs)

    # -- initialisation, sampling, moments -------------------------------------------

    def _initial_dof(self) -> float:
        return self.dof if self.dof is not None else self.dof_init

    def init_from_centers(self, x: Array, centers: Array) -> StudentTParams:
        g = super().init_from_centers(x, centers)
        return StudentTParams(g.means, g.covariances, jnp.full(centers.shape[:1], self._initial_dof(), g.means.dtype))

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset()) -> int:
        learned = self.dof is None and "dofs" not in frozen
        return super().n_parameters(n_components, n_features, frozen) + (n_components if learned else 0)

    def sample(self, key, params: StudentTParams, components: Array) -> Array:
        k_gauss, k_gamma = jax.random.split(key)
        chol = cholesky(self.full_covariances(params))
        m, d = components.shape[0], params.means.shape[1]
        z = jax.random.normal(k_gauss, (m, d), params.means.dtype)
        half = 0.5 * params.dofs[components]
        u = jax.random.gamma(k_gamma, half, dtype=params.means.dtype) / half
        return params.means[components] + jnp.einsum("mde,me->md", chol[components], z) / jnp.sqrt(u)[:, None]

    def moments(self, params: StudentTParams):
        """Means and covariances ``nu / (nu - 2) * scale``; infinite where ``nu <= 2``
        (and the means where ``nu <= 1``)."""
        nu = params.dofs
        scale = jnp.where(nu > 2, nu / jnp.where(nu > 2, nu - 2, 1.0), jnp.inf)
        means = jnp.where((nu > 1)[:, None], params.means, jnp.nan)
        return means, self.full_covariances(params) * scale[:, None, None]

    # -- unconstrained coordinates (gradient ascent) -----------------------------------

    def unconstrain(self, params: StudentTParams) -> dict:
        """The Gaussian's coordinates of the location and scale, and learned degrees of
        freedom as ``"dofs"``: ``softplus^-1(nu - 0.1)`` (fixed ones are not coordinates)."""
        u = super().unconstrain(params)
        if self.dof is None:
            excess = params.dofs - DOF_MIN
            u["dofs"] = excess + jnp.log(-jnp.expm1(-excess))  # softplus^-1
        return u

    def constrain(self, u: dict) -> StudentTParams:
        g = super().constrain({key: value for key, value in u.items() if key != "dofs"})
        if self.dof is None:
            dofs = DOF_MIN + jax.nn.softplus(u["dofs"])
        else:
            dofs = jnp.full(g.means.shape[:1], self.dof, g.means.dtype)
        return StudentTParams(g.means, g.covariances, dofs)

    # -- diagnostics and validation ----------------------------------------------------

    def replace_components(self, mask: Array, new: StudentTParams, old: StudentTParams) -> StudentTParams:
        g = super().replace_components(mask, new, old)
        return StudentTParams(g.means, g.covariances, jnp.where(mask, new.dofs, old.dofs))

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, StudentTParams):
            raise TypeError(f"StudentT parameters must be a StudentTParams; got {type(params).__name__}.")
        self._validate_location_scale(params, n_components, n_features)
        check_shape(params.dofs, (n_components,), "dofs")
        v = concrete(params.dofs)
        if v is not None and not np.all(np.isfinite(v) & (v > 0)):
            raise ValueError(f"dofs must be finite and positive; got {np.asarray(v)}.")
