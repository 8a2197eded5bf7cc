"""Probit regression by EM: the latent Gaussian utilities of Albert & Chib (1993)."""

from __future__ import annotations

import math

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import log_ndtr, ndtr

from .._chunks import compiled
from .._checks import as_regression_data, check_number
from .._model import EMModel

_EXACT = jax.lax.Precision.HIGHEST
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class ProbitParams(eqx.Module):
    """Probit regression parameters.

    Attributes:
        weights: ``(D,)`` coefficients, or ``(D + 1,)`` with the intercept last
            (``fit_intercept``).
    """

    weights: Array


class ProbitStats(eqx.Module):
    """Additive over rows: ``xx`` ``(D', D')`` the (weighted) ``X^T X`` and ``xz``
    ``(D',)`` ``X^T E[z]``, the design against the expected utilities."""

    xx: Array
    xz: Array


def _mills(t: Array) -> Array:
    """``phi(t) / Phi(t)``, from logs (finite far in the lower tail, where it tends to ``-t``)."""
    return jnp.exp(-0.5 * t * t - _HALF_LOG_2PI - log_ndtr(t))


class ProbitRegression(EMModel):
    """Probit regression, ``P(y = 1 | x) = Phi(x^T w)``, with a Gaussian prior
    ``w ~ N(0, prior_precision^-1 I)``, fitted by EM.

    Each label comes from a latent utility ``z = x^T w + e``, ``e ~ N(0, 1)``,
    ``y = [z > 0]`` (Albert & Chib, 1993). The E-step takes the mean of each
    utility given its label, a truncated normal: ``E[z] = mu + s phi(mu) / Phi(s mu)``
    with ``mu = x^T w`` and ``s = 2y - 1``; the M-step is the ridge regression of those
    expected utilities, ``w = (X^T X + prior_precision I)^-1 X^T E[z]``. The
    objective, the log posterior ``sum log Phi(s x^T w) - prior_precision |w|^2 / 2``,
    never decreases and its maximiser is the MAP estimate (tested against BFGS).

    Args:
        prior_precision: the Gaussian prior's precision on every weight (the
            intercept's included); 0 is maximum likelihood (which needs data that
            are not separable).
        fit_intercept: add a constant feature (its weight is last).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.normal(size=(100, 3))
        >>> y = (X[:, 0] - X[:, 1] + 0.3 * rng.normal(size=100) > 0).astype(int)
        >>> model = emjax.ProbitRegression(prior_precision=1.0)
        >>> res = emjax.fit(model, (X, y), key=jax.random.key(0), max_iter=200)
        >>> print(np.asarray(model.predict_proba(res.params, X[:3])).round(2), y[:3])
        [0.7  0.91 0.76] [1 1 1]
    """

    prior_precision: float = eqx.field(static=True)
    fit_intercept: bool = eqx.field(static=True)

    init_methods = ("zeros",)

    def __init__(self, prior_precision: float = 1.0, fit_intercept: bool = True):
        self.prior_precision = check_number("prior_precision", prior_precision, low=0.0)
        self.fit_intercept = bool(fit_intercept)

    def _design(self, x: Array) -> Array:
        x = jnp.asarray(x)
        return jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1) if self.fit_intercept else x

    def e_step(self, params: ProbitParams, data, weights: Array | None = None, **options):
        x, y = data
        a = self._design(x)
        mu = jnp.matmul(a, params.weights, precision=_EXACT)
        s = 2.0 * y - 1.0
        ez = mu + s * _mills(s * mu)
        w = jnp.ones(a.shape[0], a.dtype) if weights is None else weights.astype(a.dtype)
        wa = a * w[:, None]
        stats = ProbitStats(jnp.matmul(wa.T, a, precision=_EXACT), jnp.matmul(wa.T, ez, precision=_EXACT))
        return stats, jnp.sum(w * log_ndtr(s * mu))

    def m_step(self, stats: ProbitStats, params: ProbitParams | None = None) -> ProbitParams:
        d = stats.xz.shape[0]
        chol = jnp.linalg.cholesky(stats.xx + self.prior_precision * jnp.eye(d, dtype=stats.xx.dtype))
        return ProbitParams(jax.scipy.linalg.cho_solve((chol, True), stats.xz))

    def log_prior(self, params: ProbitParams) -> Array:
        """``-prior_precision |w|^2 / 2`` (up to a constant)."""
        return -0.5 * self.prior_precision * jnp.sum(params.weights * params.weights)

    @compiled
    def init(self, key, data, method: str = "zeros") -> ProbitParams:
        """All weights 0 (every probability 1/2)."""
        x = jnp.asarray(data[0])
        return ProbitParams(jnp.zeros(x.shape[1] + int(self.fit_intercept), x.dtype))

    def predict_proba(self, params: ProbitParams, x) -> Array:
        """``(N,)`` ``P(y = 1 | x)``."""
        return ndtr(jnp.matmul(self._design(x), params.weights, precision=_EXACT))

    def predict(self, params: ProbitParams, x) -> Array:
        """``(N,)`` the more probable label (0 or 1)."""
        return (self.predict_proba(params, x) > 0.5).astype(jnp.int32)

    def validate_data(self, data):
        return as_regression_data(data, "ProbitRegression", labels=True)

    def validate_params(self, params, data) -> None:
        if not isinstance(params, ProbitParams):
            raise TypeError(f"ProbitRegression parameters must be ProbitParams; got {type(params).__name__}.")
        d = np.shape(data[0])[1] + int(self.fit_intercept)
        if np.shape(params.weights) != (d,):
            raise ValueError(f"weights must have shape ({d},); got {np.shape(params.weights)}.")

    def row_width(self, data) -> int:
        d = np.shape(data[0])[-1] + 1
        return d * d
