"""Linear regression with a global latent variable (the weights), fitted by EM on the evidence:
Bayesian linear regression (one weight precision) and the relevance vector machine (one per weight).

The data are ``(X, y)``: ``X`` ``(N, D)`` and ``y`` ``(N,)``. The statistics are the
(weighted) count, means and centred cross-products of ``X`` and ``y``, additive over rows
(merged exactly, as parallel variances are); everything else (the posterior of the
weights, the evidence) is computed from them, so the objective is not a sum over rows.
"""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._chunks import compiled
from .._checks import as_regression_data, check_number
from .._model import EMModel

_EXACT = jax.lax.Precision.HIGHEST
_LOG_2PI = math.log(2.0 * math.pi)


class RegressionStats(eqx.Module):
    """Sufficient statistics of ``(X, y)``, additive over rows.

    Attributes:
        n: total weight. x_mean: ``(D,)``. y_mean: scalar.
        xx: ``(D, D)`` centred ``sum w (x - x_mean)(x - x_mean)^T``.
        xy: ``(D,)`` centred ``sum w (x - x_mean)(y - y_mean)``.
        yy: centred ``sum w (y - y_mean)^2``.
    """

    n: Array
    x_mean: Array
    y_mean: Array
    xx: Array
    xy: Array
    yy: Array

    def __add__(self, other: "RegressionStats") -> "RegressionStats":
        # Chan et al.'s pairwise update: exact, no raw second moments.
        n = self.n + other.n
        f = jnp.where(n > 0, other.n / jnp.where(n > 0, n, 1.0), 0.0)
        dx, dy = other.x_mean - self.x_mean, other.y_mean - self.y_mean
        c = self.n * f  # n_a n_b / n
        return RegressionStats(
            n,
            self.x_mean + f * dx,
            self.y_mean + f * dy,
            self.xx + other.xx + c * jnp.outer(dx, dx),
            self.xy + other.xy + c * dx * dy,
            self.yy + other.yy + c * dy * dy,
        )

    def __mul__(self, s) -> "RegressionStats":
        return RegressionStats(self.n * s, self.x_mean, self.y_mean, self.xx * s, self.xy * s, self.yy * s)


def regression_stats(x: Array, y: Array, weights: Array | None, fit_intercept: bool) -> RegressionStats:
    """The statistics of one chunk; without an intercept the means are held at 0."""
    w = jnp.ones(x.shape[0], x.dtype) if weights is None else weights.astype(x.dtype)
    n = jnp.sum(w)
    if fit_intercept:
        safe = jnp.where(n > 0, n, 1.0)
        xm, ym = jnp.matmul(w, x, precision=_EXACT) / safe, jnp.sum(w * y) / safe
    else:
        xm, ym = jnp.zeros(x.shape[1], x.dtype), jnp.zeros((), x.dtype)
    xc, yc = x - xm, y - ym
    wx = xc * w[:, None]
    return RegressionStats(
        n, xm, ym, jnp.matmul(wx.T, xc, precision=_EXACT), jnp.matmul(wx.T, yc, precision=_EXACT), jnp.sum(w * yc * yc)
    )


class RegressionParams(eqx.Module):
    """Evidence-maximisation parameters and the weights' posterior they imply.

    Attributes:
        alpha: weight precision: a scalar (Bayesian linear regression) or ``(D,)``
            (one per weight: the relevance vector machine).
        beta: noise precision.
        active: ``(D,)`` booleans, False for a weight the relevance vector machine
            pruned (its weight is 0; its ``alpha`` keeps the last value below the threshold).
        mean: ``(D,)`` posterior mean of the weights at ``alpha``, ``beta``.
        cov: ``(D, D)`` their posterior covariance.
        x_offset: ``(D,)`` and y_offset: the data means the model is centred on
            (zeros without an intercept).
    """

    alpha: Array
    beta: Array
    active: Array
    mean: Array
    cov: Array
    x_offset: Array
    y_offset: Array


class _EvidenceRegression(EMModel):
    """Shared by :class:`BayesianLinearRegression` and :class:`RelevanceVectorMachine`:
    the E-step is the Gaussian posterior of the weights, the M-step re-estimates the
    precisions from its moments, and the objective is the log evidence plus the
    Gamma hyperpriors' log density."""

    fit_intercept: bool = eqx.field(static=True)
    alpha_1: float = eqx.field(static=True)
    alpha_2: float = eqx.field(static=True)
    lambda_1: float = eqx.field(static=True)
    lambda_2: float = eqx.field(static=True)

    def __init__(self, fit_intercept: bool = True, alpha_1=1e-6, alpha_2=1e-6, lambda_1=1e-6, lambda_2=1e-6):
        self.fit_intercept = bool(fit_intercept)
        self.alpha_1 = check_number("alpha_1", alpha_1, low=0.0)
        self.alpha_2 = check_number("alpha_2", alpha_2, low=0.0)
        self.lambda_1 = check_number("lambda_1", lambda_1, low=0.0)
        self.lambda_2 = check_number("lambda_2", lambda_2, low=0.0)

    # -- the weights' posterior ------------------------------------------------------------

    def _alpha_vector(self, alpha: Array, d: int) -> Array:
        return jnp.broadcast_to(alpha, (d,))

    def posterior(self, stats: RegressionStats, alpha: Array, beta: Array, active: Array):
        """``(mean, cov, logdet A)`` of the weights given the data, with ``A = diag(alpha) +
        beta X^T X`` over the active weights (a pruned one has mean and variance 0)."""
        d = stats.xy.shape[0]
        a = self._alpha_vector(alpha, d)
        mask = active[:, None] & active[None, :]
        # Pruned weights drop out: their rows and columns become the identity.
        prec = jnp.where(mask, beta * stats.xx, 0.0) + jnp.diag(jnp.where(active, a, 1.0))
        chol = jnp.linalg.cholesky(prec)
        mean = jax.scipy.linalg.cho_solve((chol, True), jnp.where(active, beta * stats.xy, 0.0))
        cov = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(d, dtype=prec.dtype))
        logdet = 2.0 * jnp.sum(jnp.where(active, jnp.log(jnp.diagonal(chol)), 0.0))
        return jnp.where(active, mean, 0.0), jnp.where(mask, cov, 0.0), logdet

    def _residual(self, stats: RegressionStats, mean: Array) -> Array:
        """``|y - X m|^2`` over the centred data (clamped at 0 against rounding)."""
        fit = jnp.matmul(stats.xx, mean, precision=_EXACT)
        return jnp.maximum(stats.yy - 2.0 * jnp.dot(mean, stats.xy) + jnp.dot(mean, fit), 0.0)

    def _params(self, stats: RegressionStats, alpha: Array, beta: Array, active: Array) -> RegressionParams:
        mean, cov, _ = self.posterior(stats, alpha, beta, active)
        return RegressionParams(alpha, beta, active, mean, cov, stats.x_mean, stats.y_mean)

    # -- the EM contract ---------------------------------------------------------------------

    def e_step(self, params: RegressionParams, data, weights: Array | None = None, **options):
        """The data's statistics (the weights' posterior is computed from them in the
        M-step and the objective); the second output is 0: the evidence is not a sum
        over rows (see :meth:`objective`)."""
        x, y = data
        stats = regression_stats(x, y, weights, self.fit_intercept)
        return stats, jnp.zeros((), x.dtype)

    def objective(self, stats: RegressionStats, params: RegressionParams, loglik: Array) -> Array:
        """The log evidence ``log p(y | X, alpha, beta)`` plus the hyperpriors'
        ``lambda_1 log alpha - lambda_2 alpha + alpha_1 log beta - alpha_2 beta``
        (scikit-learn's ``BayesianRidge.scores_``)."""
        d = stats.xy.shape[0]
        a = self._alpha_vector(params.alpha, d)
        keep = params.active
        mean, _, logdet = self.posterior(stats, params.alpha, params.beta, keep)
        beta = params.beta
        sq = jnp.sum(jnp.where(keep, a * mean * mean, 0.0))
        evidence = 0.5 * (
            jnp.sum(jnp.where(keep, jnp.log(a), 0.0)) + stats.n * jnp.log(beta)
            - beta * self._residual(stats, mean) - sq - logdet - stats.n * _LOG_2PI
        )
        hyper = (
            jnp.sum(jnp.where(keep, self.lambda_1 * jnp.log(a) - self.lambda_2 * a, 0.0))
            + self.alpha_1 * jnp.log(beta) - self.alpha_2 * beta
        )
        return evidence + hyper

    def _new_beta(self, stats: RegressionStats, mean: Array, cov: Array) -> Array:
        # E|y - X w|^2 = |y - X m|^2 + tr(X^T X Sigma); the Gamma hyperprior's mode.
        expected = self._residual(stats, mean) + jnp.sum(stats.xx * cov)
        return (stats.n + 2.0 * self.alpha_1) / (expected + 2.0 * self.alpha_2)

    def m_step(self, stats: RegressionStats, params: RegressionParams) -> RegressionParams:
        mean, cov, _ = self.posterior(stats, params.alpha, params.beta, params.active)
        alpha, active = self._new_alpha(mean, cov, params.alpha, params.active)
        beta = self._new_beta(stats, mean, cov)
        return self._params(stats, alpha, beta, active)

    # -- initialisation, prediction ---------------------------------------------------------

    init_methods = ("default",)

    @compiled
    def init(self, key, data, method: str = "default") -> RegressionParams:
        """scikit-learn's start: ``beta = 1 / var(y)``, ``alpha = 1``; the posterior at them."""
        x, y = (jnp.asarray(a) for a in data)
        stats = regression_stats(x, y, None, self.fit_intercept)
        var = stats.yy / stats.n if self.fit_intercept else jnp.var(y)
        beta = 1.0 / jnp.maximum(var, jnp.finfo(x.dtype).tiny)
        alpha = self._initial_alpha(x.shape[1], x.dtype)
        return self._params(stats, alpha, beta, jnp.ones(x.shape[1], bool))

    def predict(self, params: RegressionParams, x: Array, return_std: bool = False):
        """Predictive mean ``(N,)`` (and standard deviation, with ``return_std``:
        ``sqrt(1 / beta + x^T Sigma x)``)."""
        xc = jnp.asarray(x) - params.x_offset
        mean = jnp.matmul(xc, params.mean, precision=_EXACT) + params.y_offset
        if not return_std:
            return mean
        var = 1.0 / params.beta + jnp.sum(jnp.matmul(xc, params.cov, precision=_EXACT) * xc, axis=1)
        return mean, jnp.sqrt(var)

    def validate_data(self, data):
        return as_regression_data(data, type(self).__name__)

    def row_width(self, data) -> int:
        d = np.shape(data[0])[-1]
        return d * d


class BayesianLinearRegression(_EvidenceRegression):
    """Bayesian linear regression with its precisions chosen by EM on the evidence
    (Bishop, 2006, sec. 3.5 and 9.3.4).

    ``y = X w + e``, ``w ~ N(0, alpha^-1 I)``, ``e ~ N(0, beta^-1)``: the weights are the
    latent variable. The E-step is their Gaussian posterior (``Sigma = (alpha I + beta
    X^T X)^-1``, ``m = beta Sigma X^T y``), the M-step ``alpha = (D + 2 lambda_1) /
    (E|w|^2 + 2 lambda_2)`` and ``beta = (N + 2 alpha_1) / (E|y - X w|^2 + 2 alpha_2)``:
    the maximum of the expected complete-data log-likelihood plus the Gamma
    hyperpriors (scikit-learn's ``BayesianRidge`` parametrisation: its ``lambda_`` is
    this ``alpha``, its ``alpha_`` this ``beta``). The objective, the log evidence plus
    the hyperpriors, never decreases; its maximum is the one scikit-learn's MacKay
    updates find. With ``fit_intercept`` the data are centred (the statistics merge
    chunks exactly).

    Args:
        fit_intercept: centre ``X`` and ``y`` on their (weighted) means.
        alpha_1, alpha_2: the noise precision's Gamma hyperprior (shape, rate), 1e-6.
        lambda_1, lambda_2: the weight precision's, 1e-6.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> X = rng.normal(size=(100, 3))
        >>> y = X @ np.array([1.0, -2.0, 0.0]) + 0.5 + 0.1 * rng.normal(size=100)
        >>> model = emjax.BayesianLinearRegression()
        >>> res = emjax.fit(model, (X, y), key=jax.random.key(0), tol=1e-10, max_iter=1000)
        >>> print(np.asarray(res.params.mean[:2]).round(2))   # the weights' posterior mean
        [ 1.   -1.99]
        >>> mean, std = model.predict(res.params, X[:2], return_std=True)
        >>> print(np.asarray(mean).round(2), np.asarray(std).round(2))
        [-0.79 -2.61] [0.09 0.09]
    """

    def _initial_alpha(self, d, dtype):
        return jnp.ones((), dtype)

    def _new_alpha(self, mean, cov, alpha, active):
        d = mean.shape[0]
        return (d + 2.0 * self.lambda_1) / (jnp.dot(mean, mean) + jnp.trace(cov) + 2.0 * self.lambda_2), active


class RelevanceVectorMachine(_EvidenceRegression):
    """Sparse Bayesian regression, automatic relevance determination (Tipping, 2001;
    MacKay, 1994): one precision ``alpha_i`` per weight, chosen by EM on the evidence.

    The E-step is the weights' Gaussian posterior (``Sigma = (diag(alpha) + beta
    X^T X)^-1``), the M-step ``alpha_i = (1 + 2 lambda_1) / (m_i^2 + Sigma_ii + 2
    lambda_2)`` and ``beta`` as in :class:`BayesianLinearRegression`. Weights that
    explain nothing see their precision grow without bound; one that passes
    ``threshold_alpha`` is pruned (its weight fixed at 0, ``active_i`` False), as in
    scikit-learn's ``ARDRegression`` (its ``threshold_lambda``, default 1e4). The
    objective (log evidence plus hyperpriors) never decreases while no weight is
    pruned; a pruning step removes a weight whose contribution has already
    vanished. Applied to a design of basis functions centred on the data points
    (kernels), it is Tipping's relevance vector machine.

    Args:
        threshold_alpha: precision beyond which a weight is pruned.
        fit_intercept, alpha_1, alpha_2, lambda_1, lambda_2: as in
            :class:`BayesianLinearRegression`.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> X = rng.normal(size=(100, 3))
        >>> y = X @ np.array([1.0, -2.0, 0.0]) + 0.5 + 0.1 * rng.normal(size=100)
        >>> model = emjax.RelevanceVectorMachine(threshold_alpha=1e4)
        >>> res = emjax.fit(model, (X, y), key=jax.random.key(0), tol=1e-10, max_iter=1000)
        >>> print(np.asarray(res.params.mean).round(2), ~res.params.active)  # weights, pruned ones
        [ 1.   -1.99  0.  ] [False False  True]
    """

    threshold_alpha: float = eqx.field(static=True)

    def __init__(self, threshold_alpha=1e4, fit_intercept: bool = True, alpha_1=1e-6, alpha_2=1e-6, lambda_1=1e-6,
                 lambda_2=1e-6):
        self.threshold_alpha = check_number("threshold_alpha", threshold_alpha, low=0.0, low_open=True)
        super().__init__(fit_intercept, alpha_1, alpha_2, lambda_1, lambda_2)

    def _initial_alpha(self, d, dtype):
        return jnp.ones((d,), dtype)

    def _new_alpha(self, mean, cov, alpha, active):
        new = (1.0 + 2.0 * self.lambda_1) / (mean * mean + jnp.diagonal(cov) + 2.0 * self.lambda_2)
        active = active & (new < self.threshold_alpha)
        return jnp.where(active, new, alpha), active
