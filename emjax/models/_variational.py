"""Variational Bayes for Gaussian mixtures (Attias 2000; Bishop 2006, sec. 10.2; Blei & Jordan 2006).

The model: weights with a Dirichlet prior or a truncated Dirichlet-process
(stick-breaking) prior, and each component's mean and precision with a
normal-Wishart prior, ``mu_k | Lambda_k ~ N(m0, (kappa0 Lambda_k)^-1)``,
``Lambda_k ~ W(nu0, B0^-1)``. The variational posterior
``q(z) q(pi) prod_k q(mu_k, Lambda_k)`` is fitted by coordinate ascent, which is EM's
shape exactly: the E-step computes ``q(z)`` from the current ``q(theta)`` and
returns the Gaussian statistics (counts, first and second moments, additive over
rows: :class:`emjax.families.GaussianStats`); the M-step maps the summed statistics to
``q(theta)`` (Dirichlet or Beta concentrations, ``kappa``, ``m``, ``nu``, ``W``).
So every driver of :func:`emjax.fit` works unchanged: restarts, chunks, devices,
streams, sample weights, incremental EM (Neal & Hinton's free energy is the
ELBO), stepwise EM (stochastic variational inference, Hoffman et al. 2013) and
gradient ascent over :meth:`VariationalGaussianMixture.unconstrain`'s coordinates.

The four covariance types are one model with four variational families, which
is what scikit-learn's ``BayesianGaussianMixture`` computes (its updates are
exactly the coordinate ascent on them; see the class docstring). The objective
is the exact ELBO, every constant included.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import betaln, digamma, gammaln, logsumexp, multigammaln

from . import _seeding as _init
from ._mixture import latent_posterior
from .._checks import (
    check_dense,
    check_n_components,
    check_number,
    check_responsibilities,
    check_shape,
    check_spd_matrix,
    concrete,
    is_traced,
    real_array,
)
from .._chunks import chunked_sum, compiled, default_chunk_size, n_features, n_rows, rowwise
from .._model import EMModel
from ..families._covariance import (
    COVARIANCE_TYPES,
    MatrixStructure,
    cholesky,
    count_floor,
    covariance_structure,
    logdet_from_chol,
    recenter_scatter,
    tri_inverse,
)
from ..families._gaussian import Gaussian, GaussianParams, GaussianStats
from ..families._student import _t_log_density, log_minus_digamma

#: The weight priors, scikit-learn's names.
WEIGHT_PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
#: What :meth:`VariationalGaussianMixture.log_prob` can return.
LOG_PROB_KINDS = ("predictive", "plugin", "expected")
_LOG_2PI = math.log(2.0 * math.pi)


class VariationalGaussianParams(eqx.Module):
    """The variational posterior ``q(pi) prod_k q(mu_k, Lambda_k)`` (scikit-learn's fitted attributes).

    ``q(mu_k, Lambda_k) = N(mu_k | m_k, (kappa_k Lambda_k)^-1) W(Lambda_k | nu_k, W_k)``;
    the covariances are scikit-learn's ``covariances_``, ``(nu_k W_k)^-1 = E[Lambda_k]^-1``
    (for diag and spherical ``W_k`` is diagonal, a multiple of the identity; tied
    shares ``(nu, W)`` across components).

    Attributes:
        weight_concentration: ``(K,)`` the Dirichlet's concentrations, or ``(2, K)``
            the stick-breaking Betas' ``(a_k, b_k)`` (scikit-learn's tuple, stacked).
        mean_precision: ``(K,)`` ``kappa_k``.
        means: ``(K, D)`` ``m_k``.
        degrees_of_freedom: ``(K,)`` ``nu_k`` (tied: a scalar).
        covariances: ``(K, D, D)`` full, ``(K, D)`` diag, ``(K,)`` spherical, ``(D, D)`` tied.
    """

    weight_concentration: Array
    mean_precision: Array
    means: Array
    degrees_of_freedom: Array
    covariances: Array


class VariationalGaussianMixture(EMModel):
    """A Gaussian mixture fitted by variational Bayes (scikit-learn's ``BayesianGaussianMixture``).

    The E-step gives each point the responsibilities ``r_nk ∝ exp(E[log pi_k] +
    E[log N(x_n | mu_k, Lambda_k^-1)])`` under the current variational posterior and
    returns the Gaussian statistics; the M-step is the conjugate update
    (``alpha_k = alpha0 + N_k``, or ``a_k = 1 + N_k``, ``b_k = alpha0 + sum_{j>k} N_j``
    for the stick-breaking prior; ``kappa_k = kappa0 + N_k``, ``nu_k = nu0 + N_k``,
    ``m_k`` and ``W_k``). Superfluous components empty out: their posterior returns
    to the prior and their weight goes to about ``alpha0 / N``.

    **The objective** (``FitResult.objective``, the trace) is the exact evidence
    lower bound at each E-step: ``ELBO(q*(z), q(theta)) = sum_n w_n log sum_k exp(E[log pi_k]
    + E[log N(x_n | ...)]) - KL(q(theta) || p(theta))``, ``q*(z)`` the optimal
    responsibilities for the current ``q(theta)``; :meth:`log_prior` is the
    ``-KL`` part, :meth:`expected_log_joint` the rest given the statistics
    (so incremental EM's free energy is the ELBO). It never decreases. scikit-learn's
    ``lower_bound_`` differs in two ways: it is evaluated after the M-step with
    the preceding E-step's responsibilities, ``ELBO(q_t(z), q_{t+1}(theta))``, which lies between
    this trace's entries ``t`` and ``t + 1``; and it drops the constants
    ``C = K [D(D-1)/4 log pi - log c(nu0, B0) + D/2 log kappa0] - N D/2 log 2 pi + c_w``
    with ``log c(nu, B) = nu D/2 log 2 - nu/2 log|B| + log Gamma_D(nu/2)`` and
    ``c_w = log Gamma(K alpha0) - K log Gamma(alpha0)`` (Dirichlet) or ``K log alpha0``
    (stick-breaking); ``N`` the total weight. With ``resp`` the E-step's and ``new``
    the M-step's, ``stats, ll = model.e_step(params, x)``, scikit-learn's bound is
    ``ll - Q(stats, params) + Q(stats, new) + log_prior(new) - C`` with
    ``Q = expected_log_joint`` (tested to 1e-6 in float64).

    **Covariance types** are variational families of one model (per component a full
    precision ``Lambda_k``): ``"full"`` leaves ``q(Lambda_k)`` free, ``"diag"`` and
    ``"spherical"`` restrict its scale matrix ``W_k`` to a diagonal or a multiple of
    the identity (prior scales ``diag(b0)`` and ``b0 I``), and ``"tied"`` makes the
    ``q(Lambda_k)`` equal across components. Each M-step is then the exact
    maximiser of the ELBO over its family (so the objective is monotone for all
    four), and the updates are scikit-learn's, including the tied
    ``nu = nu0 + N / K``.

    Args:
        n_components: K, the truncation (the most components used).
        covariance_type: ``"full"``, ``"diag"``, ``"spherical"`` or ``"tied"``.
        weight_concentration_prior_type: ``"dirichlet_process"`` (stick-breaking,
            scikit-learn's default) or ``"dirichlet_distribution"``.
        weight_concentration_prior: ``alpha0 > 0``; ``1 / K`` by default.
        mean_precision_prior: ``kappa0 > 0``; 1 by default.
        mean_prior: ``m0`` ``(D,)``; the data's (weighted) mean by default.
        degrees_of_freedom_prior: ``nu0 > D - 1``; ``D`` by default.
        covariance_prior: ``B0``, the Wishart's inverse scale: ``(D, D)`` positive
            definite (full, tied), ``(D,)`` positive (diag), a positive number
            (spherical); by default the data's covariance (``ddof=1``, weights as
            repetition counts), its diagonal, or the mean of that diagonal.

    The data-dependent defaults are measured by :meth:`adapt`, which
    :func:`emjax.fit` calls (one pass over the data, inside the compiled fit);
    a loop of your own calls it first. scikit-learn adds ``reg_covar`` (1e-6) to its
    scatter, which this model does not (the prior keeps every covariance positive
    definite): compare with ``reg_covar=0``.

    Algorithms: batch EM (the default), :class:`emjax.IncrementalEM`,
    :class:`emjax.StepwiseEM`, :class:`emjax.GradientAscent`,
    :class:`emjax.OverRelaxedEM` and :class:`emjax.GeneralizedEM`. The E-step
    has no options (no temperature, hard or sampled assignments), so the
    annealed, classification and stochastic variants refuse it before compiling,
    as ECM does (no parameter groups) and ``reinit_collapsed`` (an emptied
    component is the point, not a failure).

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.VariationalGaussianMixture(4, weight_concentration_prior=0.01)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> print(np.asarray(model.weights(result.params)).round(3))   # two components in use
        [0.644 0.356 0.    0.   ]
        >>> import equinox as eqx
        >>> log_prob = eqx.filter_jit(model.log_prob)   # compiled once, not op by op
        >>> print(np.asarray(log_prob(result.params, x[:2])).round(2))   # the posterior predictive
        [-4.62 -3.82]
    """

    n_components: int = eqx.field(static=True)
    covariance_type: str = eqx.field(static=True)
    weight_concentration_prior_type: str = eqx.field(static=True)
    weight_concentration_prior: float | None = eqx.field(static=True)
    mean_precision_prior: float = eqx.field(static=True)
    degrees_of_freedom_prior: float | None = eqx.field(static=True)
    mean_prior: Array | None
    covariance_prior: Array | None
    measure_mean: bool = eqx.field(static=True)
    measure_covariance: bool = eqx.field(static=True)

    init_methods: ClassVar[tuple[str, ...]] = ("kmeans", "random_resp")

    def __init__(
        self,
        n_components: int,
        covariance_type: str = "full",
        *,
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior=None,
        mean_precision_prior=None,
        mean_prior=None,
        degrees_of_freedom_prior=None,
        covariance_prior=None,
    ):
        check_n_components(n_components)
        # The four of scikit-learn (each a variational family, see above), not mclust's parsimonious models.
        if not isinstance(covariance_type, str) or covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}; got {covariance_type!r}.")
        structure = covariance_structure(covariance_type)
        if weight_concentration_prior_type not in WEIGHT_PRIOR_TYPES:
            raise ValueError(
                f"weight_concentration_prior_type must be one of {WEIGHT_PRIOR_TYPES}; "
                f"got {weight_concentration_prior_type!r}."
            )
        self.n_components = int(n_components)
        self.covariance_type = covariance_type
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = (
            None if weight_concentration_prior is None
            else check_number("weight_concentration_prior", weight_concentration_prior, low=0.0, low_open=True)
        )
        self.mean_precision_prior = (
            1.0 if mean_precision_prior is None
            else check_number("mean_precision_prior", mean_precision_prior, low=0.0, low_open=True)
        )
        self.degrees_of_freedom_prior = (
            None if degrees_of_freedom_prior is None else check_number("degrees_of_freedom_prior", degrees_of_freedom_prior)
        )
        self.measure_mean = mean_prior is None
        self.measure_covariance = covariance_prior is None
        if mean_prior is not None:
            m0 = real_array(mean_prior, "mean_prior")
            if m0.ndim != 1:
                raise ValueError(f"mean_prior must have shape (D,); got {m0.shape}.")
            mean_prior = jnp.asarray(m0, dtype=float)
        self.mean_prior = mean_prior
        if covariance_prior is not None:
            covariance_prior = jnp.asarray(_check_covariance_prior(covariance_prior, structure), dtype=float)
        self.covariance_prior = covariance_prior

    # -- configuration -----------------------------------------------------------------

    @property
    def stick_breaking(self) -> bool:
        """Whether the weights have the truncated Dirichlet-process prior."""
        return self.weight_concentration_prior_type == "dirichlet_process"

    @property
    def structure(self):
        """The covariance structure (``emjax.families._covariance``) of ``covariance_type``."""
        return covariance_structure(self.covariance_type)

    @property
    def _family(self) -> Gaussian:
        # The Gaussian at the expected precisions: E[log N] is its log density plus a
        # per-component constant, and its statistics are the ones VB needs.
        return Gaussian(self.covariance_type, reg_covar=0.0)

    def _hyper(self, n_features: int, dtype):
        """``(alpha0, kappa0, nu0, m0, b0)`` in ``dtype``; ``b0`` is ``B0`` as a
        ``(D, D)`` matrix (full, tied) or its ``(D,)`` diagonal (diag, spherical)."""
        if self.mean_prior is None or self.covariance_prior is None:
            raise ValueError(
                "VariationalGaussianMixture measures its default mean_prior and covariance_prior on the data: "
                "call model = model.adapt(x) first (emjax.fit does), or give both."
            )
        d = n_features
        alpha0 = 1.0 / self.n_components if self.weight_concentration_prior is None else self.weight_concentration_prior
        nu0 = float(d) if self.degrees_of_freedom_prior is None else self.degrees_of_freedom_prior
        b0 = jnp.asarray(self.covariance_prior, dtype)
        if not isinstance(self.structure, MatrixStructure):
            b0 = jnp.broadcast_to(b0, (d,))
        # Arrays of the data's dtype: a Python float would make multigammaln run (and return) in float64.
        alpha0, kappa0, nu0 = (jnp.asarray(v, dtype) for v in (alpha0, self.mean_precision_prior, nu0))
        return alpha0, kappa0, nu0, jnp.asarray(self.mean_prior, dtype), b0

    def _prior_scatter(self, b0: Array) -> Array:
        """``B0`` of every component in the structure's scatter layout (tied: their sum, ``(1, D, D)``)."""
        s = jnp.broadcast_to(b0, (self.n_components,) + b0.shape)
        return jnp.sum(s, axis=0, keepdims=True) if self.covariance_type == "tied" else s

    def _dofs(self, params: VariationalGaussianParams) -> Array:
        return jnp.broadcast_to(params.degrees_of_freedom, (self.n_components,))

    def adapt(self, x, weights: Array | None = None) -> "VariationalGaussianMixture":
        """The model with the data-dependent prior defaults measured on the data:
        ``mean_prior`` the (weighted) mean, ``covariance_prior`` the covariance with
        ``ddof=1`` (weights as repetition counts; scikit-learn's ``np.cov``), its
        diagonal (diag) or the diagonal's mean (spherical); itself when both were given.

        Args:
            x: an :class:`emjax.data.Data` (:func:`emjax.fit` passes its data: one
                pass over a stream), or an ``(N, D)`` array.
            weights: optional ``(N,)`` weights of an array ``x``.
        """
        if not (self.measure_mean or self.measure_covariance):
            return self
        if not hasattr(x, "map_sum"):
            from ..data._memory import ArrayData

            x = ArrayData(jnp.asarray(x), None if weights is None else jnp.asarray(weights), None)
        full = covariance_structure("full")
        centre = jnp.mean(x.sample, axis=0)[None]

        def moments(shift, xc, w):
            one = jnp.ones((xc.shape[0], 1), xc.dtype) if w is None else w.astype(xc.dtype)[:, None]
            s1, s2, _ = full.moments(xc, one, shift, (shift[0], xc - shift[0]))
            return GaussianStats(jnp.sum(one, axis=0), s1, s2, shift), jnp.zeros((), xc.dtype)

        stats, _ = x.map_sum(moments, centre)
        n = stats.counts[0]
        mean = stats.shift[0] + stats.s1[0] / n
        scatter = recenter_scatter(stats.s2, stats.s1, stats.counts, stats.shift - mean[None])[0]
        cov = scatter / jnp.where(n > 1, n - 1, 1.0)
        # A constant feature has variance 0 and would make B0 singular (scikit-learn's
        # reg_covar rescues only components with points): it takes the largest
        # variance, as a Gaussian's regularisation scale does (all constant: 1).
        var = jnp.diagonal(cov)
        top = jnp.max(var)
        constant = var <= jnp.finfo(var.dtype).eps * top
        cov = cov + jnp.diag(jnp.where(constant, jnp.where(top > 0, top, 1.0) - var, 0.0))
        if self.covariance_type in ("diag", "spherical"):
            cov = jnp.diagonal(cov)
            cov = jnp.mean(cov) if self.covariance_type == "spherical" else cov
        new = self
        if self.measure_mean:
            new = eqx.tree_at(lambda m: m.mean_prior, new, mean, is_leaf=lambda a: a is None)
        if self.measure_covariance:
            new = eqx.tree_at(lambda m: m.covariance_prior, new, cov, is_leaf=lambda a: a is None)
        return new

    # -- the variational E-step --------------------------------------------------------

    def expected_log_weights(self, params: VariationalGaussianParams) -> Array:
        """``E[log pi_k]`` ``(K,)`` under ``q(pi)`` (for the stick-breaking prior,
        ``E[log v_k] + sum_{j<k} E[log(1 - v_j)]``)."""
        c = params.weight_concentration
        if not self.stick_breaking:
            return digamma(c) - digamma(jnp.sum(c))
        a, b = c[0], c[1]
        total = digamma(a + b)
        rest = digamma(b) - total
        return digamma(a) - total + jnp.cumsum(rest) - rest  # the exclusive cumulative sum

    def _log_det_terms(self, params: VariationalGaussianParams, n_features: int) -> Array:
        """``(K,)`` ``E[log N(x | mu_k, Lambda_k^-1)] - log N(x | m_k, covariances_k)``:
        ``(E log|Lambda_k| + log|covariances_k|) / 2 - D / (2 kappa_k)``.

        ``E log|Lambda| = sum_i digamma((nu - i)/2) + D log 2 - log|B|`` with
        ``covariances = B / nu``, written as ``sum_i [log1p(-i / nu) - (log a_i -
        digamma(a_i))]`` (``a_i = (nu - i) / 2``) so no ``log nu`` cancels."""
        nu = self._dofs(params)
        i = jnp.arange(n_features, dtype=nu.dtype)
        a = 0.5 * (nu[:, None] - i)
        log_lambda = jnp.sum(jnp.log1p(-i / nu[:, None]) - log_minus_digamma(a), axis=1)
        return 0.5 * log_lambda - 0.5 * n_features / params.mean_precision

    def _gaussian(self, params: VariationalGaussianParams) -> GaussianParams:
        return GaussianParams(params.means, params.covariances)

    def _log_joint_and_cache(self, params: VariationalGaussianParams, x: Array):
        """``(N, K)`` ``E[log pi_k] + E[log N(x_n | mu_k, Lambda_k^-1)]`` and the Gaussian's cache."""
        lp, cache = self._family.log_prob_and_cache(self._gaussian(params), x)
        shift = self.expected_log_weights(params) + self._log_det_terms(params, x.shape[-1])
        return lp + shift[None, :], cache

    def log_joint(self, params: VariationalGaussianParams, x: Array) -> Array:
        """``(N, K)`` the E-step's ``E[log pi_k + log N(x_n | mu_k, Lambda_k^-1)]``
        (scikit-learn's ``_estimate_weighted_log_prob``)."""
        return self._log_joint_and_cache(params, x)[0]

    def e_step(self, params: VariationalGaussianParams, x: Array, weights: Array | None = None):
        """The responsibilities' Gaussian statistics and the data part of the ELBO.

        Args:
            params: the current variational posterior.
            x: data ``(N, D)``.
            weights: optional ``(N,)`` non-negative weights (repetition counts).

        Returns:
            ``(GaussianStats, elbo_data)``: the statistics (about the means
            ``m_k``), and ``sum_n w_n log sum_k exp(log_joint_nk)``, the ELBO less
            ``KL(q(theta) || p(theta))`` with the optimal ``q(z)``.
        """
        lj, cache = self._log_joint_and_cache(params, x)
        ll, resp = latent_posterior(lj)
        if weights is not None:
            resp = resp * weights[:, None]
            ll = ll * weights
        return self._family.cached_statistics(x, resp, self._gaussian(params), cache), jnp.sum(ll)

    def posterior(self, params: VariationalGaussianParams, x: Array) -> Array:
        """``(N, K)`` the responsibilities ``q(z_n = k)`` (scikit-learn's ``predict_proba``)."""
        return self._map("_rows_posterior", params, x)

    def predict(self, params: VariationalGaussianParams, x: Array) -> Array:
        """``(N,)`` each point's most probable component (scikit-learn's ``predict``)."""
        return self._map("_rows_predict", params, x)

    def _rows_posterior(self, params, x):
        return jax.nn.softmax(self.log_joint(params, x), axis=1)

    def _rows_predict(self, params, x):
        return jnp.argmax(self.log_joint(params, x), axis=1)

    # -- the M-step: statistics to the variational posterior --------------------------

    def m_step(self, stats: GaussianStats, params: VariationalGaussianParams | None = None) -> VariationalGaussianParams:
        """The conjugate update of ``q(theta)`` from summed statistics (``params`` unused)."""
        n = stats.counts
        k, d = stats.s1.shape
        dtype = stats.s1.dtype
        alpha0, kappa0, nu0, m0, b0 = self._hyper(d, dtype)
        if self.stick_breaking:
            # b_k = alpha0 + sum_{j>k} N_j, summed from the end (no cancellation).
            tail = jnp.concatenate([jnp.cumsum(n[::-1])[::-1][1:], jnp.zeros((1,), dtype)])
            concentration = jnp.stack([1.0 + n, alpha0 + tail])
        else:
            concentration = alpha0 + n
        kappa = kappa0 + n
        # m = m0 + N / kappa (xbar - m0), with xbar - m0 = (shift - m0) + s1 / N (an
        # empty component keeps m0; its s1 is 0).
        xbar_minus_m0 = (stats.shift - m0) + stats.s1 / (n + count_floor(dtype))[:, None]
        means = m0 + (n / kappa)[:, None] * xbar_minus_m0
        # B = B0 + S_m + kappa0 (m - m0)(m - m0)^T with S_m the scatter about the new
        # means, which is Bishop's B0 + S_xbar + kappa0 N / kappa (xbar - m0)(xbar - m0)^T.
        scatter = recenter_scatter(stats.s2, stats.s1, n, means - stats.shift, new_minus_old=True)
        scale = self._scale_scatter(scatter + self._prior_scatter(b0), kappa0, means - m0)
        if self.covariance_type == "tied":
            nu = nu0 + jnp.sum(n) / k  # K equal factors q(Lambda_k): the average of their updates
        else:
            nu = nu0 + n
        cov = self.structure.symmetrize(self.structure.ml_covariances(scale, jnp.broadcast_to(nu, (k,))))
        return VariationalGaussianParams(concentration, kappa, means, nu, cov)

    def _scale_scatter(self, scatter: Array, kappa0, dm: Array) -> Array:
        """``scatter + kappa0 dm_k dm_k^T`` in the structure's scatter layout."""
        zeros = jnp.zeros_like(dm)
        return recenter_scatter(scatter, zeros, jnp.broadcast_to(kappa0, dm.shape[:1]), dm)

    # -- the ELBO ----------------------------------------------------------------------

    def expected_log_joint(self, stats: GaussianStats, params: VariationalGaussianParams) -> Array:
        """``E_q[log p(x, z | theta)]`` for the responsibilities behind ``stats``,
        under ``q(theta) = params``: linear in ``stats``, every constant included
        (so ``loglik - expected_log_joint`` is the entropy of ``q(z)``)."""
        d = stats.s1.shape[-1]
        per_point = self.expected_log_weights(params) + self._log_det_terms(params, d)
        return self._family.expected_log_likelihood(stats, self._gaussian(params)) + jnp.sum(stats.counts * per_point)

    def log_prior(self, params: VariationalGaussianParams) -> Array:
        """``-KL(q(theta) || p(theta))``: the ELBO's global part (what a MAP fit's log
        prior is to its objective), 0 when ``q`` is the prior."""
        return -(self._kl_weights(params) + self._kl_gaussian_wishart(params))

    def _kl_weights(self, params: VariationalGaussianParams) -> Array:
        c = params.weight_concentration
        alpha0 = self._hyper(params.means.shape[-1], c.dtype)[0]
        if self.stick_breaking:
            # sum_k KL(Beta(a_k, b_k) || Beta(1, alpha0)).
            a, b = c[0], c[1]
            total = digamma(a + b)
            kl = (-jnp.log(alpha0) - betaln(a, b) + (a - 1.0) * (digamma(a) - total)
                  + (b - alpha0) * (digamma(b) - total))
            return jnp.sum(kl)
        k = c.shape[0]
        total = jnp.sum(c)
        return (gammaln(total) - jnp.sum(gammaln(c)) - gammaln(k * alpha0) + k * gammaln(alpha0)
                + jnp.sum((c - alpha0) * (digamma(c) - digamma(total))))

    def _kl_gaussian_wishart(self, params: VariationalGaussianParams) -> Array:
        """``sum_k KL(q(mu_k, Lambda_k) || p(mu_k, Lambda_k))`` with ``covariances = B / nu``:
        the normal part ``D/2 (kappa0/kappa - 1 + log(kappa/kappa0)) + kappa0/2
        (m - m0)^T Sigma^-1 (m - m0)`` and the Wishart part ``-nu0/2 log|B0 B^-1| +
        (tr(B0 B^-1) nu - nu D)/2 + log Gamma_D(nu0/2) - log Gamma_D(nu/2) + (nu - nu0)/2
        psi_D(nu/2)``, whose traces come from one ``trace_logdet`` of the structure."""
        k, d = params.means.shape
        dtype = params.means.dtype
        _, kappa0, nu0, m0, b0 = self._hyper(d, dtype)
        nu = self._dofs(params)
        kappa = params.mean_precision
        prior_scatter = self._scale_scatter(self._prior_scatter(b0), kappa0, params.means - m0)
        trace, logdet = self.structure.trace_logdet(prior_scatter, params.covariances)
        logdet = jnp.broadcast_to(logdet, (k,))  # tied: the one shared matrix
        logdet_b0 = logdet_from_chol(cholesky(b0)) if b0.ndim == 2 else jnp.sum(jnp.log(b0))
        ratio = kappa0 / kappa
        normal = 0.5 * d * (ratio - 1.0 - jnp.log(ratio))
        i = jnp.arange(d, dtype=dtype)
        psi = jnp.sum(digamma(0.5 * (nu[:, None] - i)), axis=1)
        wishart = (-0.5 * nu0 * (logdet_b0 - d * jnp.log(nu) - logdet) - 0.5 * nu * d
                   + multigammaln(0.5 * nu0, d) - multigammaln(0.5 * nu, d) + 0.5 * (nu - nu0) * psi)
        return jnp.sum(normal + wishart) + 0.5 * jnp.sum(trace)

    # -- initialisation ---------------------------------------------------------------

    @compiled
    def init(self, key, x: Array, method: str = "kmeans") -> VariationalGaussianParams:
        """The posterior after one M-step from initial responsibilities (scikit-learn's
        ``_initialize``), a pure function of ``key``.

        Args:
            key: PRNG key.
            x: data ``(N, D)``.
            method: ``"kmeans"`` (one-hot labels of k-means, k-means++ seeded: scikit-learn's
                default) or ``"random_resp"`` (responsibilities uniform on the simplex).
        """
        x = jnp.asarray(x)
        if method == "kmeans":
            _, labels = _init.kmeans(key, x, self.n_components)
            resp = jax.nn.one_hot(labels, self.n_components, dtype=x.dtype)
        elif method == "random_resp":
            resp = _init.random_responsibilities(key, n_rows(x), self.n_components, x.dtype)
        else:
            raise ValueError(f"unknown init method {method!r}; choose one of {self.init_methods}.")
        return self._from_resp(x, resp)

    def init_from_resp(self, x: Array, resp: Array) -> VariationalGaussianParams:
        """The posterior after one M-step from responsibilities ``resp`` ``(N, K)``
        (scikit-learn's ``_initialize(X, resp)``); the priors' defaults are measured
        on ``x`` if the model was not adapted.

        Raises:
            TypeError / ValueError: invalid ``x`` or ``resp`` (shape, negative or
                non-finite entries, a row of zeros), checked on concrete values.
        """
        if not is_traced(x):
            x = self.validate_rows(x)
        check_responsibilities(resp, n_rows(x), self.n_components)
        return self._from_resp(x, jnp.asarray(resp, x.dtype))

    def _from_resp(self, x: Array, resp: Array) -> VariationalGaussianParams:
        model = self.adapt(x) if self.mean_prior is None or self.covariance_prior is None else self
        family = self._family

        def chunk_stats(xc, rc):
            return family.statistics(xc, rc, None), jnp.zeros((), xc.dtype)

        stats, _ = chunked_sum(chunk_stats, x, resp, self._chunk_size(x))
        return model.m_step(stats)

    # -- the fitted posterior ---------------------------------------------------------

    def weights(self, params: VariationalGaussianParams) -> Array:
        """``(K,)`` the weights' posterior means ``E[pi_k]`` (scikit-learn's ``weights_``;
        under the stick-breaking prior normalised over the ``K`` components, as there)."""
        c = params.weight_concentration
        if not self.stick_breaking:
            return c / jnp.sum(c)
        a, b = c[0], c[1]
        stay = b / (a + b)
        w = a / (a + b) * jnp.concatenate([jnp.ones((1,), c.dtype), jnp.cumprod(stay[:-1])])
        return w / jnp.sum(w)

    def precisions_cholesky(self, params: VariationalGaussianParams) -> Array:
        """scikit-learn's ``precisions_cholesky_``: the upper factors ``L^-T`` of
        ``covariances = L L^T`` (full ``(K, D, D)``, tied ``(D, D)``), or
        ``covariances^-1/2`` (diag, spherical)."""
        cov = params.covariances
        if isinstance(self.structure, MatrixStructure):
            return jnp.swapaxes(tri_inverse(cholesky(cov)), -1, -2)
        return 1.0 / jnp.sqrt(cov)

    def log_prob(self, params: VariationalGaussianParams, x: Array, kind: str = "predictive") -> Array:
        """``(N,)`` log density of each point.

        Args:
            params: the fitted posterior.
            x: ``(N, D)`` points.
            kind: ``"predictive"`` (the default): the posterior predictive
                ``sum_k E[pi_k] t(x | m_k, (1 + kappa_k) / (kappa_k (nu_k + 1 - D)) B_k,
                nu_k + 1 - D)``, a mixture of Student-t's: ``∫ p(x | theta)
                q(theta) dtheta`` exactly under the Dirichlet prior, and with the
                truncated stick-breaking weights' means renormalised over the ``K``
                components (as scikit-learn's ``weights_``); ``"plugin"``: the mixture at the point estimates
                ``sum_k E[pi_k] N(x | m_k, E[Lambda_k]^-1)`` (``weights``, ``means``,
                ``covariances``: scikit-learn's ``GaussianMixture`` with the fitted
                attributes); ``"expected"``: ``log sum_k exp(E[log pi_k] + E[log N(x |
                mu_k, Lambda_k^-1)])``, each point's share of the ELBO (what
                scikit-learn's ``BayesianGaussianMixture.score_samples`` returns, a
                lower bound on the predictive density, not a normalised density).

        Raises:
            ValueError: an unknown ``kind``; TypeError / ValueError: invalid ``x``.
        """
        if kind not in LOG_PROB_KINDS:
            raise ValueError(f"kind must be one of {LOG_PROB_KINDS}; got {kind!r}.")
        return self._map("_rows_log_prob", params, x, kind)

    def _rows_log_prob(self, params, xc, kind):
        if kind == "expected":
            return logsumexp(self.log_joint(params, xc), axis=1)
        log_w = jnp.log(self.weights(params))
        d = xc.shape[-1]
        maha, logdet = self.structure.mahalanobis_logdet(xc, params.means, params.covariances)
        if kind == "plugin":
            lp = -0.5 * (d * _LOG_2PI + logdet[None, :] + maha)
        else:
            # The t's scale is s_k covariances_k with s = (1 + kappa) nu / (kappa nu').
            nu = self._dofs(params)
            kappa = params.mean_precision
            dof = nu + 1.0 - d
            log_s = jnp.log1p(kappa) - jnp.log(kappa) + jnp.log(nu) - jnp.log(dof)
            lp = _t_log_density(dof[None, :], d, (logdet + d * log_s)[None, :], maha * jnp.exp(-log_s)[None, :])
        return logsumexp(lp + log_w[None, :], axis=1)

    def score(self, params: VariationalGaussianParams, x: Array, kind: str = "predictive") -> Array:
        """The mean of :meth:`log_prob` over the points of ``x``."""
        return jnp.mean(self.log_prob(params, x, kind))

    # -- unconstrained coordinates (gradient ascent) ----------------------------------

    def unconstrain(self, params: VariationalGaussianParams) -> dict:
        """Free reals: the logs of the concentrations and ``kappa``, ``log(nu - D + 1)``,
        the means, and the structure's coordinates of the covariances."""
        d = params.means.shape[-1]
        return {
            "weight_concentration": jnp.log(params.weight_concentration),
            "mean_precision": jnp.log(params.mean_precision),
            "means": params.means,
            "degrees_of_freedom": jnp.log(params.degrees_of_freedom - (d - 1)),
            "covariances": self.structure.unconstrain(params.covariances),
        }

    def constrain(self, u: dict) -> VariationalGaussianParams:
        """The inverse of :meth:`unconstrain`: a valid posterior from any reals."""
        d = u["means"].shape[-1]
        return VariationalGaussianParams(
            jnp.exp(u["weight_concentration"]),
            jnp.exp(u["mean_precision"]),
            u["means"],
            (d - 1) + jnp.exp(u["degrees_of_freedom"]),
            self.structure.constrain(u["covariances"]),
        )

    # -- validation (host side, before compiling) --------------------------------------

    def validate_rows(self, x) -> Array:
        """``x`` checked as a Gaussian mixture's data, and the priors against its width."""
        check_dense(x)
        x = self._family.validate_data(x)
        self._check_width(n_features(x))
        return x

    def validate_data(self, x) -> Array:
        """:meth:`validate_rows` and at least ``K`` rows."""
        x = self.validate_rows(x)
        check_n_components(self.n_components, n_rows(x))
        return x

    def _check_width(self, d: int) -> None:
        if self.mean_prior is not None and not self.measure_mean:
            check_shape(self.mean_prior, (d,), "mean_prior")
        if self.covariance_prior is not None and not self.measure_covariance:
            shape = {"full": (d, d), "tied": (d, d), "diag": (d,), "spherical": ()}[self.covariance_type]
            check_shape(self.covariance_prior, shape, f"{self.covariance_type} covariance_prior")
        if self.degrees_of_freedom_prior is not None and not self.degrees_of_freedom_prior > d - 1:
            raise ValueError(
                f"degrees_of_freedom_prior must be > D - 1 = {d - 1} (D = {d} features); got {self.degrees_of_freedom_prior}."
            )

    def validate_params(self, params, x) -> None:
        if not isinstance(params, VariationalGaussianParams):
            raise TypeError(f"parameters must be a VariationalGaussianParams; got {type(params).__name__}.")
        k, d = self.n_components, n_features(x)
        concentration = (2, k) if self.stick_breaking else (k,)
        check_shape(params.weight_concentration, concentration, "weight_concentration")
        check_shape(params.mean_precision, (k,), "mean_precision")
        check_shape(params.means, (k, d), "means")
        check_shape(params.degrees_of_freedom, () if self.covariance_type == "tied" else (k,), "degrees_of_freedom")
        self.structure.validate(params.covariances, k, d)
        for name, low in (("weight_concentration", 0.0), ("mean_precision", 0.0), ("degrees_of_freedom", d - 1.0)):
            v = concrete(getattr(params, name))
            if v is not None and not (np.all(np.isfinite(v)) and np.all(v > low)):
                raise ValueError(f"{name} must be finite and > {low:g}; got {v}.")

    def row_width(self, x) -> int:
        return int(self._family.row_width(self.n_components, n_features(x)))

    def _chunk_size(self, x) -> int:
        return default_chunk_size(n_rows(x), self.row_width(x))

    def _map(self, name: str, params, x, *options):
        if not is_traced(x):
            x = self.validate_rows(x)
            self.validate_params(params, x)
        return rowwise(self, name, params, x, self._chunk_size(x), *options)


def _check_covariance_prior(value, structure) -> np.ndarray:
    """The covariance prior as a host array, positive (definite) for its structure;
    its width is checked against the data's later."""
    name = f"{structure.name} covariance_prior"
    b0 = real_array(value, name)
    ndim = {"full": 2, "tied": 2, "diag": 1, "spherical": 0}[structure.name]
    if b0.ndim != ndim:
        want = {2: "a (D, D) matrix", 1: "a (D,) vector", 0: "a number"}[ndim]
        raise ValueError(f"{name} must be {want}; got shape {b0.shape}.")
    if ndim == 2:
        if b0.shape[0] != b0.shape[1]:
            raise ValueError(f"{name} must be square; got shape {b0.shape}.")
        check_spd_matrix(b0, name)
    elif not np.all(b0 > 0):
        raise ValueError(f"{name} must be positive; got {value!r}.")
    return b0
