"""Student-t components: heavy-tailed mixtures by EM with latent precision weights.

A multivariate t is a Gaussian scale mixture: ``u ~ Gamma(nu/2, rate nu/2)``,
``x | u ~ N(mu, Sigma / u)``. EM treats ``u`` as a second latent variable beside
the component label (McLachlan & Peel 2000, ch. 7; Liu & Rubin 1995): the E-step
gives each point's responsibilities and its expected precision weights
``E[u | x, k] = (nu_k + D) / (nu_k + delta_nk)`` (``delta`` the Mahalanobis
distance), so a far point counts for little; the M-step is a Gaussian M-step on
the ``u``-weighted statistics, plus a 1-D root solve per component for the
degrees of freedom (ECM). The covariance structures are the Gaussian's
(:mod:`emjax.families._covariance`, :mod:`emjax.families._parsimonious`): the same
types, kernels, regularisation and conjugate priors.
"""

from __future__ import annotations

import functools

from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import digamma, gammaln

from .._ad import split_by_tangent
from .._checks import check_number, check_shape, concrete
from ._covariance import cholesky, count_floor
from ._gaussian import _EXACT, Gaussian, GaussianStats, _LOG_2PI, _draw_conditional

#: Degrees of freedom stay in ``[DOF_MIN, DOF_MAX]``: below 0.1 the tails are so
#: heavy that a point's weight is indistinguishable from 0; above 1e4 the t is a
#: Gaussian to float32's resolution and the root solve has nothing left to find.
DOF_MIN = 0.1
DOF_MAX = 1e4
#: The learned degrees of freedom start here (McLachlan & Peel's choice of a
#: moderately heavy tail); ``StudentT(dof_init=...)`` changes it.
DOF_INIT = 10.0
_BISECTIONS = 64
#: ECME's search for the degrees of freedom: passes over the data, each
#: evaluating the objective and its derivative on a grid of this many points in
#: log nu per component, then narrowing to the bracket of the best sign change
#: (a factor 1/23 per pass: 4e-5 in log nu after 4 passes, then a secant step).
ECME_PASSES = 4
ECME_GRID = 24


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


def dof_objective(nu: Array, delta: Array, d: int) -> tuple[Array, Array]:
    """The terms of ``log t(x | mu, Sigma, nu)`` that depend on ``nu``, and their derivative.

    ``lgamma((nu+D)/2) - lgamma(nu/2) - D/2 log nu - (nu+D)/2 log(1 + delta/nu)``
    (plus terms free of ``nu``), written through :func:`log_gamma_ratio`, and
    ``d/dnu`` of it,
    ``1/2 [log1p(D/nu) - D/nu + rho(nu/2) - rho((nu+D)/2) - (log1p(s) - s) - s^2/(1+s) + (D/nu) s/(1+s)]``
    with ``s = delta / nu`` and ``rho(a) = log a - digamma(a)``: every bracket is
    O(1/nu^2) for large ``nu`` and none is a difference of O(1) terms.

    Args:
        nu: degrees of freedom, broadcastable against ``delta``.
        delta: squared Mahalanobis distances.
        d: the dimension ``D``.
    """
    s = delta / nu
    q = s / (1.0 + s)
    value = log_gamma_ratio(0.5 * nu, 0.5 * d) - 0.5 * (nu + d) * jnp.log1p(s)
    grad = 0.5 * (
        log1p_minus(d / nu) + log_minus_digamma(0.5 * nu) - log_minus_digamma(0.5 * (nu + d))
        - log1p_minus(s) - s * q + (d / nu) * q
    )
    return value, grad


def solve_dof(target: Array, low: float = DOF_MIN, high: float = DOF_MAX) -> Array:
    """``nu`` with ``log(nu / 2) - digamma(nu / 2) = target`` (``(K,)``, ``target >= 0``),
    by bisection on ``log nu`` (the left side decreases in ``nu``), clipped to
    ``[low, high]``: the ECM update of the degrees of freedom.

    Its derivative is the root's, ``dnu/dtarget = 1 / g'(nu)`` with
    ``g(nu) = log(nu / 2) - digamma(nu / 2)`` (0 where the root is clipped), not
    the bisection's, which is 0: fits differentiated through the M-step
    (:class:`emjax.ImplicitAdjoint`, forward or reverse mode through the
    iterations) see how the degrees of freedom move with the data."""
    return _solve_dof(target, float(low), float(high))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _solve_dof(target: Array, low: float, high: float) -> Array:
    lo = jnp.full_like(target, np.log(low))
    hi = jnp.full_like(target, np.log(high))

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = log_minus_digamma(0.5 * jnp.exp(mid)) > target  # nu too small
        return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
    return jnp.exp(0.5 * (lo + hi))


@_solve_dof.defjvp
def _solve_dof_jvp(low, high, primals, tangents):
    (target,), (t_target,) = primals, tangents
    nu = _solve_dof(target, low, high)
    # g'(nu) of g(nu) = log_minus_digamma(nu / 2), negative; the implicit function theorem.
    slope = jax.jvp(lambda v: log_minus_digamma(0.5 * v), (nu,), (jnp.ones_like(nu),))[1]
    inside = _inside(nu, low, high)
    return nu, jnp.where(inside, t_target / jnp.where(inside, slope, 1.0), 0.0)


def _inside(nu: Array, low: float = DOF_MIN, high: float = DOF_MAX) -> Array:
    """Whether each root ``nu`` lies strictly inside ``[low, high]``: one clipped to a
    bound does not move with the data (its derivative is 0)."""
    return (nu > low * (1 + 1e-6)) & (nu < high * (1 - 1e-6))


class StudentT(Gaussian):
    """Multivariate Student-t components with learned or fixed degrees of freedom.

    The configuration is the :class:`emjax.Gaussian`'s (covariance structure,
    relative ``reg_covar``, a :class:`NormalInverseWishart` prior on the
    location and scale, collapse detection) plus the degrees of freedom.

    Args:
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"``, ``"tied"`` or
            an mclust model code such as ``"VEV"`` (the scale matrices' structure,
            as for :class:`emjax.Gaussian`; the constrained M-step then takes the
            ``u``-weighted scatters).
        dof: a positive number fixes every component's degrees of freedom;
            ``None`` (the default) learns one per component.
        dof_init: where learned degrees of freedom start (10).
        dof_update: how learned degrees of freedom are updated: ``"ecm"`` (the
            default) or ``"ecme"`` (see below).
        reg_covar, prior, collapse_tol, reg_scale: as for :class:`emjax.Gaussian`;
            the prior is ``N(m0, Sigma / kappa0)`` on the location and the
            inverse-Wishart on the scale, both given the precision weights.

    The learned update is ECM (Liu & Rubin 1995): the degrees of freedom
    maximise the expected complete-data log-likelihood given the precision
    weights of the E-step, ``log(nu/2) - digamma(nu/2) = -mean_r(E log u - E u + 1)``,
    solved by bisection in ``[0.1, 1e4]``. ``K = 1`` is the single multivariate t.

    ``dof_update="ecme"`` (Liu & Rubin 1994; McLachlan & Peel 2000, 7.5) instead
    maximises, after the location and scale update, each component's
    responsibility-weighted t log-likelihood ``sum_n r_nk log t(x_n | mu_k, Sigma_k, nu)``
    over ``nu`` with the new location and scale (the precision weights integrated
    out, not fixed at the E-step's): the observed-data likelihood's conditional
    maximum, which converges in far fewer iterations when a degree of freedom is
    large. It needs the data: batch EM runs ``ECME_PASSES`` (4) extra passes per
    iteration (grid searches with a final secant step, root to about 1e-9 in
    ``log nu``). The incremental and stepwise algorithms, which see the data a
    block at a time, refuse it.

    Derivatives through a fit (:class:`emjax.ImplicitAdjoint`, or through the
    steps) see the degrees of freedom as the roots they are: ECM's bisection and
    ECME's search are differentiated by the implicit function theorem, not through
    their steps (ECME's rule costs two more passes, only when differentiated).

    Example:
        Altman's bankrupt and solvent firms, a few bankrupt ones very far out:

        >>> x, labels, _ = emjax.datasets.bankruptcy()
        >>> model = emjax.Mixture(emjax.StudentT("full"), n_components=2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> bool(result.params.components.dofs.min() < 5)   # heavy tails for the outliers
        True
        >>> print(round(emjax.adjusted_rand_index(labels, model.predict(result.params, x)), 2))
        0.77
    """

    dof: float | None = eqx.field(static=True)
    dof_init: float = eqx.field(static=True)
    dof_update: str = eqx.field(static=True)

    param_groups: ClassVar[tuple[str, ...]] = ("means", "covariances", "dofs")

    def __init__(
        self,
        covariance_type: str = "full",
        *,
        dof: float | None = None,
        dof_init: float = DOF_INIT,
        dof_update: str = "ecm",
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
        if dof_update not in ("ecm", "ecme"):
            raise ValueError(f"dof_update must be 'ecm' or 'ecme'; got {dof_update!r}.")
        super().__init__(covariance_type, reg_covar=reg_covar, prior=prior, collapse_tol=collapse_tol, reg_scale=reg_scale)
        self.dof = dof
        self.dof_init = dof_init
        self.dof_update = dof_update

    # -- densities -----------------------------------------------------------------

    def log_prob(self, params: StudentTParams, x: Array) -> Array:
        return self.log_prob_and_cache(params, x)[0]

    def log_prob_and_cache(self, params: StudentTParams, x: Array):
        # The statistics reuse the centred data and the distances (for the weights u).
        centred = self.structure.centre(x, params.means)
        maha, logdet = self.structure.mahalanobis_logdet(x, params.means, params.covariances, centred)
        return _t_log_density(params.dofs[None, :], x.shape[-1], logdet[None, :], maha), (centred, maha)

    # -- missing entries ---------------------------------------------------------------

    def log_prob_observed(self, params: StudentTParams, x0, observed):
        # The observed entries' marginal is a t of dimension d_n with the same nu.
        maha, logdet, xhat, cond = self.structure.conditional(x0, observed, params.means, params.covariances)
        d = jnp.sum(observed, axis=1).astype(maha.dtype)[:, None]
        return _t_log_density(params.dofs[None, :], d, logdet, maha), (xhat, cond, maha, d)

    def statistics_observed(self, x0, observed, resp, params: StudentTParams, cache) -> StudentTStats:
        # Given x_o and u, x_m is normal with covariance cond / u: E[u (x - s)(x - s)^T]
        # is u (xhat - s)(xhat - s)^T + cond, the conditional covariance unweighted.
        xhat, cond, maha, d = cache
        t, gap = _weight_terms(params.dofs[None, :], d, maha)
        ru = resp * (1.0 + t)
        xc = xhat - params.means[None]
        s1 = jnp.einsum("nk,nkd->kd", ru, xc, precision=_EXACT)
        s2 = self.structure.missing_scatter(ru, resp, xc, cond)
        weighted = GaussianStats(jnp.sum(ru, axis=0), s1, s2, params.means)
        return StudentTStats(jnp.sum(resp, axis=0), weighted, jnp.sum(resp * gap, axis=0))

    def sample_missing(self, key, params: StudentTParams, x0, observed, components):
        # x_m | x_o, u ~ N(xhat, cond / u), u | x_o ~ Gamma((nu + d) / 2, rate (nu + delta) / 2).
        maha, _, xhat, cond = self.structure.conditional(x0, observed, params.means, params.covariances)
        k_u, k_x = jax.random.split(key)
        rows = jnp.arange(x0.shape[0])
        d = jnp.sum(observed, axis=1).astype(maha.dtype)
        nu = params.dofs[components]
        u = jax.random.gamma(k_u, 0.5 * (nu + d), dtype=maha.dtype) / (0.5 * (nu + maha[rows, components]))
        return _draw_conditional(k_x, xhat, cond, observed, components, 1.0 / u)

    def precision_weights(self, params: StudentTParams, maha: Array, d) -> Array:
        """``(N, K)`` ``E[u | x_n, z = k] = (nu_k + d) / (nu_k + delta_nk)`` from the squared
        distances ``maha`` ``(N, K)`` in ``d`` dimensions (``D``, or ``(N, 1)`` observed
        counts): how much each point counts in component ``k``'s location and scale
        (small: an outlier)."""
        return 1.0 + _weight_terms(params.dofs[None, :], d, maha)[0]

    # -- statistics and M-step -----------------------------------------------------

    def statistics(self, x: Array, resp: Array, params: StudentTParams | None = None) -> StudentTStats:
        counts = jnp.sum(resp, axis=0)
        if params is None:
            # No parameters to weigh by: the Gaussian's statistics (u = 1), and the
            # degrees-of-freedom statistic whose M-step returns dof_init.
            weighted = Gaussian.statistics(self, x, resp, None)
            target = log_minus_digamma(jnp.asarray(0.5 * self._initial_dof(), x.dtype))
            return StudentTStats(counts, weighted, -counts * target)
        return self.cached_statistics(x, resp, params, (None, self.mahalanobis(params, x)))

    def cached_statistics(self, x, resp, params, cache):
        centred, maha = cache
        t, gap = _weight_terms(params.dofs[None, :], x.shape[-1], maha)
        ru = resp * (1.0 + t)
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

    # -- ECME: the degrees of freedom from the data ------------------------------------

    @property
    def refine_passes(self) -> int:
        return ECME_PASSES if self.dof is None and self.dof_update == "ecme" else 0

    def refine(self, mixture, params, new, data, frozen: frozenset = frozenset()):
        """ECME's conditional maximisation of the degrees of freedom (see the class).

        Each pass sums, over the data, ``r_nk`` (the E-step's responsibilities at
        ``params``) times :func:`dof_objective` at the new location and scale, on a
        grid of ``ECME_GRID`` values of ``log nu`` per component; the next pass
        searches the grid interval where the derivative changes sign from + to -
        (the sign change with the highest objective; an end of ``[0.1, 1e4]`` where
        the derivative keeps its sign there), the last ends with a secant step.

        Args:
            mixture: the :class:`emjax.Mixture` (for its responsibilities).
            params: the parameters of the E-step behind the M-step.
            new: the M-step's components.
            data: an :class:`emjax.data.Data`.
            frozen: the frozen parameter groups.

        Returns:
            ``new`` with the ECME degrees of freedom.
        """
        if "dofs" in frozen or not self.refine_passes:
            return new
        dtype = new.means.dtype
        k = new.dofs.shape[0]
        lo = jnp.full((k,), np.log(DOF_MIN), dtype)
        hi = jnp.full((k,), np.log(DOF_MAX), dtype)
        steps = jnp.linspace(0.0, 1.0, ECME_GRID, dtype=dtype)
        for _ in range(ECME_PASSES):
            grid = lo[:, None] + (hi - lo)[:, None] * steps  # (K, G) log nu
            (counts, value, grad), _ = data.map_sum(_ecme_pass, (mixture, params, new, jnp.exp(grid)))
            lo, hi, g_lo, g_hi = _narrow(grid, value, grad)
        # The secant root of the derivative in the last bracket (log nu).
        span = g_lo - g_hi
        t = jnp.where(span > 0, g_lo / jnp.where(span > 0, span, 1.0), 0.5)
        dofs = jax.lax.stop_gradient(jnp.exp(lo + jnp.clip(t, 0.0, 1.0) * (hi - lo)))
        live = counts > count_floor(dtype)
        dofs = _ecme_root(dofs, mixture, params, new, data, live & _inside(dofs))
        dofs = jnp.where(live, dofs, new.dofs)  # an empty component keeps its own
        return StudentTParams(new.means, new.covariances, dofs)

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

    def permute_components(self, params: StudentTParams, perm: Array) -> StudentTParams:
        g = super().permute_components(params, perm)
        return StudentTParams(g.means, g.covariances, params.dofs[perm])

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


def _t_log_density(nu: Array, d, logdet: Array, maha: Array) -> Array:
    """``log t(x | mu, Sigma, nu)`` in ``d`` dimensions from ``log |Sigma|`` and the
    squared distance ``maha`` (all broadcast against each other)."""
    const = log_gamma_ratio(0.5 * nu, 0.5 * d) - 0.5 * (d * _LOG_2PI + logdet)
    return const - 0.5 * (nu + d) * jnp.log1p(maha / nu)


def _weight_terms(nu: Array, d, maha: Array) -> tuple[Array, Array]:
    """``u - 1`` for the expected precision weight ``u = (nu + d) / (nu + maha)``
    (as ``(d - maha) / (nu + maha)``, exact where ``u`` is near 1), and
    ``E[log u] - E[u] + 1 = log u - u + 1 - (log a - digamma(a))``, ``a = (nu + d) / 2``."""
    t = (d - maha) / (nu + maha)
    return t, log1p_minus(t) - log_minus_digamma(0.5 * (nu + d))


def _ecme_pass(operands, x, weights):
    """One chunk's ``sum_n r_nk`` and ``sum_n r_nk (f, f')(nu_kg)`` for ECME."""
    mixture, params, new, nu = operands  # nu (K, G)
    resp = mixture.responsibilities(params, x)
    if weights is not None:
        resp = resp * weights[:, None]
    delta, d = mixture.family.distances(new, x, mixture.missing)  # at the new location and scale
    value, grad = dof_objective(nu[None], delta[:, :, None], jnp.asarray(d, delta.dtype)[..., None])
    r = resp[:, :, None]
    return (jnp.sum(resp, axis=0), jnp.sum(r * value, axis=0), jnp.sum(r * grad, axis=0)), jnp.zeros((), x.dtype)


def _ecme_score(nu: Array, mixture, params, new, data) -> Array:
    """``(K,)`` ``sum_n r_nk d/dnu log t(x_n | mu_k, Sigma_k, nu_k)``: ECME's equation in ``nu``."""
    (_, _, grad), _ = data.map_sum(_ecme_pass, (mixture, params, new, nu[:, None]))
    return grad[:, 0]


@eqx.filter_custom_jvp
def _ecme_root(nu, mixture, params, new, data, inside):
    """ECME's degrees of freedom ``nu`` (the search's root of :func:`_ecme_score`),
    unchanged; differentiated as the root, ``dnu = -dscore / (dscore/dnu)`` (0 where
    not ``inside``), not through the search's secant step. Two passes over the data,
    only when differentiated."""
    return nu


@_ecme_root.def_jvp
def _ecme_root_jvp(primals, tangents):
    nu, mixture, params, new, data, inside = primals
    dynamic, static, t_dynamic = split_by_tangent((mixture, params, new, data), tangents[1:5])
    if not jax.tree.leaves(t_dynamic):
        return nu, None

    def score(v, d):
        return _ecme_score(v, *eqx.combine(d, static))

    moved = jax.jvp(lambda d: score(nu, d), (dynamic,), (t_dynamic,))[1]
    slope = jax.jvp(lambda v: score(v, dynamic), (nu,), (jnp.ones_like(nu),))[1]  # per component: diagonal
    ok = inside & (slope < 0)
    return nu, jnp.where(ok, -moved / jnp.where(ok, slope, -1.0), 0.0)


def _narrow(grid: Array, value: Array, grad: Array):
    """The next bracket ``(lo, hi)`` in ``log nu`` ``(K,)`` and the derivative at its ends.

    Candidates: every interval ``[g_j, g_j+1]`` where the derivative falls from
    positive to non-positive (a maximum inside), scored by the larger objective at
    its ends; the lower end of the grid if the derivative is non-positive there, the
    upper if positive there (maxima at the bounds, degenerate brackets).
    """
    sign_change = (grad[:, :-1] > 0) & (grad[:, 1:] <= 0)  # (K, G-1)
    score = jnp.where(sign_change, jnp.maximum(value[:, :-1], value[:, 1:]), -jnp.inf)
    at_low = jnp.where(grad[:, 0] <= 0, value[:, 0], -jnp.inf)
    at_high = jnp.where(grad[:, -1] > 0, value[:, -1], -jnp.inf)
    j = jnp.argmax(score, axis=1)
    best = jnp.take_along_axis(score, j[:, None], axis=1)[:, 0]
    take = lambda a, i: jnp.take_along_axis(a, i[:, None], axis=1)[:, 0]  # noqa: E731
    lo, hi = take(grid, j), take(grid, j + 1)
    g_lo, g_hi = take(grad, j), take(grad, j + 1)
    low_wins = at_low >= jnp.maximum(best, at_high)
    high_wins = ~low_wins & (at_high > best)
    last = grid.shape[1] - 1
    lo = jnp.where(low_wins, grid[:, 0], jnp.where(high_wins, grid[:, last], lo))
    hi = jnp.where(low_wins, grid[:, 0], jnp.where(high_wins, grid[:, last], hi))
    zero = jnp.zeros_like(g_lo)
    g_lo = jnp.where(low_wins | high_wins, zero, g_lo)
    g_hi = jnp.where(low_wins | high_wins, zero, g_hi)
    return lo, hi, g_lo, g_hi
