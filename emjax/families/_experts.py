"""Regression experts: component families of a mixture of experts.

An expert is a conditional density ``p(y | x, theta_k)`` of an output ``y`` given
covariates ``x``; its data are the pair ``(X, y)``. :class:`LinearExpert` is a
linear-Gaussian regression (closed-form M-step), :class:`LogisticExpert` a
logistic regression for 0/1 outputs (a generalized-EM step under a curvature
bound). Both use the design ``[x, 1]`` (with ``fit_intercept``).
"""

from __future__ import annotations

import abc
import math

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import as_regression_data, check_number, check_shape, concrete
from ._base import Family

_EXACT = jax.lax.Precision.HIGHEST
_LOG_2PI = math.log(2.0 * math.pi)


def design(x: Array, fit_intercept: bool) -> Array:
    """``(N, Q)`` the design matrix: the covariates ``(N, P)`` and, with ``fit_intercept``, a last column of ones."""
    x = jnp.asarray(x)
    return jnp.concatenate([x, jnp.ones(x.shape[:1] + (1,), x.dtype)], axis=1) if fit_intercept else x


def slope_mask(q: int, fit_intercept: bool, dtype) -> Array:
    """``(Q,)`` 1 on the slopes, 0 on the intercept: the coefficients a ridge prior shrinks."""
    mask = jnp.ones((q,), dtype)
    return mask.at[-1].set(0.0) if fit_intercept else mask


def ridge_solve(scatter: Array, rhs: Array, penalty: Array) -> Array:
    """``(scatter + diag(penalty))^-1 rhs`` by Cholesky, batched over a leading axis.

    ``scatter`` ``(..., Q, Q)`` is positive semi-definite; a jitter of a few
    ulps of its trace keeps the factorisation finite where it is singular (an
    expert no point is responsible for, a constant covariate).
    """
    q = scatter.shape[-1]
    eye = jnp.eye(q, dtype=scatter.dtype)
    trace = jnp.trace(scatter, axis1=-2, axis2=-1)[..., None, None]
    jitter = 16 * jnp.finfo(scatter.dtype).eps * (trace / q + 1.0)
    a = scatter + penalty[..., None, :] * eye + jitter * eye
    chol = jnp.linalg.cholesky(a)
    return jax.scipy.linalg.cho_solve((chol, True), rhs)


class Expert(Family):
    """Abstract base of regression experts: families of conditional densities ``p(y | x)``.

    Their data are ``(X, y)``; :class:`emjax.MixtureOfExperts` predicts with
    :meth:`mean` and :meth:`log_prob`.
    """

    fit_intercept: bool = eqx.field(static=True)

    @abc.abstractmethod
    def mean(self, params, x: Array) -> Array:
        """``E[y | x, k]``: ``(N, K)`` for a scalar output, ``(N, K, Dy)`` for a vector one."""

    def seed_points(self, data) -> Array:
        """``(N, P + Dy)`` the covariates beside the outputs: k-means seeds the experts in the joint space."""
        x, y = data
        return jnp.concatenate([x, y.reshape(y.shape[0], -1).astype(x.dtype)], axis=1)

    def sample(self, key, params, components):
        raise TypeError(
            "an expert's draw needs the covariates: use MixtureOfExperts.sample(key, params, X)."
        )

    def moments(self, params):
        raise TypeError("an expert's moments depend on the covariates: use MixtureOfExperts.predict_mean(params, X).")

    def n_features(self, params) -> int:
        return int(jnp.shape(params.coef)[1]) - int(self.fit_intercept)

    def row_width(self, n_components: int, n_features: int) -> int:
        return n_components * (n_features + 2)


class LinearExpertParams(eqx.Module):
    """Linear-Gaussian experts ``y | x, k ~ N(coef_k^T [x, 1], diag(variance_k))``.

    Attributes:
        coef: ``(K, Q)`` for a scalar output, ``(K, Q, Dy)`` for a vector one
            (``Q = P + 1`` with an intercept, which is the last row).
        variance: ``(K,)``, or ``(K, Dy)``: the noise variances.
    """

    coef: Array
    variance: Array


class LinearExpertStats(eqx.Module):
    """Responsibility-weighted statistics of linear experts about an expansion point.

    The residuals are taken at the coefficients ``point`` (those of the E-step),
    which keeps float32 accurate near convergence; addition re-expresses the right
    operand about the left one's point exactly, as :class:`emjax.families.GaussianStats` does.

    Attributes:
        counts: ``(K,)`` ``sum_n r_nk``.
        scatter: ``(K, Q, Q)`` ``sum_n r_nk z_n z_n^T`` (``z = [x, 1]``).
        cross: ``(K, Q, Dy)`` ``sum_n r_nk z_n e_nk^T``, ``e_nk = y_n - point_k^T z_n``.
        sq: ``(K, Dy)`` ``sum_n r_nk e_nk^2``.
        point: ``(K, Q, Dy)`` the expansion point.
        scalar: the output is one column ``y`` ``(N,)`` (the parameters drop the ``Dy`` axis).
    """

    counts: Array
    scatter: Array
    cross: Array
    sq: Array
    point: Array
    scalar: bool = eqx.field(static=True, default=False)

    def at(self, point: Array) -> "LinearExpertStats":
        """The same statistics about another ``point`` ``(K, Q, Dy)``."""
        d = self.point - point  # e(point) = e(self.point) + z^T d
        sd = jnp.einsum("kqr,krd->kqd", self.scatter, d, precision=_EXACT)
        cross = self.cross + sd
        sq = self.sq + 2.0 * jnp.sum(d * self.cross, axis=1) + jnp.sum(d * sd, axis=1)
        return LinearExpertStats(self.counts, self.scatter, cross, sq, point, self.scalar)

    def __add__(self, other: "LinearExpertStats") -> "LinearExpertStats":
        o = other.at(self.point)
        return LinearExpertStats(
            self.counts + o.counts, self.scatter + o.scatter, self.cross + o.cross, self.sq + o.sq, self.point,
            self.scalar,
        )

    def __mul__(self, c) -> "LinearExpertStats":
        return LinearExpertStats(self.counts * c, self.scatter * c, self.cross * c, self.sq * c, self.point, self.scalar)


def _as3(coef: Array) -> Array:
    return coef[..., None] if coef.ndim == 2 else coef


class LinearExpert(Expert):
    """Linear-Gaussian regression experts: ``y | x, k ~ N(coef_k^T [x, 1], diag(variance_k))``.

    ``y`` is ``(N,)`` (one output) or ``(N, Dy)`` (independent noise per output).
    The M-step is weighted least squares and the residual variance, in closed
    form. A Gaussian prior ``N(0, variance / ridge)`` on the slopes (not the
    intercept) keeps the solve well posed; ``reg_var`` times the output's
    variance is added to every noise variance, the penalty on the fitting
    density that keeps an expert from collapsing onto a few points it fits
    exactly (as a Gaussian's ``reg_covar``), so EM increases exactly the
    objective it reports.

    Args:
        ridge: the slopes' prior precision relative to the noise precision
            (``>= 0``; 0: least squares).
        reg_var: added to the variances, relative to each output's variance over the data.
        fit_intercept: give every expert an intercept.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.uniform(-1, 1, (200, 1))   # two lines: y = -2x left of 0, 1 + x right of it
        >>> y = np.where(X[:, 0] < 0, -2.0 * X[:, 0], 1.0 + X[:, 0]) + 0.1 * rng.normal(size=200)
        >>> model = emjax.MixtureOfExperts(emjax.LinearExpert(), 2)
        >>> res = emjax.fit(model, (X, y), key=jax.random.key(0))
        >>> res.params.components.coef.shape   # (K, P + 1): slope and intercept per expert
        (2, 2)
    """

    ridge: float = eqx.field(static=True)
    reg_var: float = eqx.field(static=True)
    reg_scale: Array | None

    param_groups = ("coef", "variance")

    def __init__(self, *, ridge: float = 1e-6, reg_var: float = 1e-6, fit_intercept: bool = True, reg_scale=None):
        self.ridge = check_number("ridge", ridge, low=0.0)
        self.reg_var = check_number("reg_var", reg_var, low=0.0)
        self.fit_intercept = bool(fit_intercept)
        self.reg_scale = reg_scale

    # -- data --------------------------------------------------------------------------

    def validate_data(self, data):
        return as_regression_data(data, "LinearExpert", multi_output=True)

    def adapt(self, data, weights=None) -> "LinearExpert":
        """The expert with ``reg_scale``, each output's variance over the data (1 where it is 0)."""
        if self.reg_scale is not None:
            return self
        if not hasattr(data, "map_sum"):
            from ..data._memory import ArrayData

            data = ArrayData(jax.tree.map(jnp.asarray, data), None if weights is None else jnp.asarray(weights), None)
        y0 = data.sample[1]
        shift = jnp.mean(y0.reshape(y0.shape[0], -1), axis=0)

        def moments(shift, batch, w):
            y = batch[1].reshape(batch[1].shape[0], -1)
            d = y - shift
            w = jnp.ones(y.shape[:1], y.dtype) if w is None else w.astype(y.dtype)
            return (jnp.sum(w), w @ d, w @ (d * d)), jnp.zeros((), y.dtype)

        (n, s1, s2), _ = data.map_sum(moments, shift)
        mean = s1 / n
        var = jnp.maximum(s2 / n - mean * mean, 0.0)
        return eqx.tree_at(lambda f: f.reg_scale, self, jnp.where(var > 0, var, 1.0), is_leaf=lambda v: v is None)

    def _reg(self, dtype) -> Array:
        scale = 1.0 if self.reg_scale is None else jnp.asarray(self.reg_scale, dtype)
        return self.reg_var * scale * jnp.ones((), dtype)

    # -- density and statistics -----------------------------------------------------------

    def _residuals(self, params: LinearExpertParams, data):
        x, y = data
        z = design(x, self.fit_intercept)
        coef = _as3(params.coef)
        mean = jnp.einsum("nq,kqd->nkd", z, coef, precision=_EXACT)
        y2 = y.reshape(y.shape[0], -1).astype(z.dtype)
        return z, y2[:, None, :] - mean

    def _variance(self, params) -> Array:
        v = params.variance
        return v[:, None] if v.ndim == 1 else v

    def log_prob_and_cache(self, params: LinearExpertParams, data):
        z, e = self._residuals(params, data)
        var = self._variance(params)
        lp = -0.5 * jnp.sum(_LOG_2PI + jnp.log(var)[None] + e * e / var[None], axis=-1)
        return lp, (z, e)

    def log_prob(self, params: LinearExpertParams, data) -> Array:
        """``(N, K)`` ``log N(y_n | coef_k^T z_n, variance_k)``."""
        return self.log_prob_and_cache(params, data)[0]

    def fit_penalty(self, params: LinearExpertParams) -> Array:
        """``(K,)`` ``sum_d reg_d / (2 variance_kd)``: the penalty whose M-step adds ``reg`` to the variances."""
        var = self._variance(params)
        return jnp.sum(self._reg(var.dtype) / (2.0 * var), axis=-1)

    def mean(self, params: LinearExpertParams, x: Array) -> Array:
        z = design(x, self.fit_intercept)
        if params.coef.ndim == 2:
            return jnp.matmul(z, params.coef.T, precision=_EXACT)
        return jnp.einsum("nq,kqd->nkd", z, params.coef, precision=_EXACT)

    def cached_statistics(self, data, resp, params, cache) -> LinearExpertStats:
        z, e = cache
        return self._stats(z, e, resp, _as3(params.coef), data[1].ndim == 1)

    def statistics(self, data, resp, params=None) -> LinearExpertStats:
        if params is None:
            x, y = data
            q = x.shape[1] + int(self.fit_intercept)
            dy = 1 if y.ndim == 1 else y.shape[1]
            params = LinearExpertParams(jnp.zeros((resp.shape[1], q, dy), x.dtype), jnp.ones((resp.shape[1], dy), x.dtype))
        z, e = self._residuals(params, data)
        return self._stats(z, e, resp, _as3(params.coef), data[1].ndim == 1)

    @staticmethod
    def _stats(z, e, resp, point, scalar) -> LinearExpertStats:
        rz = resp[:, :, None] * z[:, None, :]  # (N, K, Q)
        return LinearExpertStats(
            jnp.sum(resp, axis=0),
            jnp.einsum("nkq,nr->kqr", rz, z, precision=_EXACT),
            jnp.einsum("nkq,nkd->kqd", rz, e, precision=_EXACT),
            jnp.einsum("nk,nkd->kd", resp, e * e, precision=_EXACT),
            point,
            scalar,
        )

    def _penalty(self, q, dtype) -> Array:
        return self.ridge * slope_mask(q, self.fit_intercept, dtype)

    def _rss(self, stats: LinearExpertStats, coef3: Array) -> Array:
        """``(K, Dy)`` the weighted residual sum of squares at ``coef3``, from the statistics."""
        return stats.at(coef3).sq

    def expected_log_likelihood(self, stats: LinearExpertStats, params: LinearExpertParams) -> Array:
        coef = _as3(params.coef)
        var = self._variance(params)
        rss = self._rss(stats, coef)
        n = stats.counts[:, None]
        return jnp.sum(-0.5 * n * (_LOG_2PI + jnp.log(var)) - (rss + n * self._reg(var.dtype)) / (2.0 * var))

    def log_prior(self, params: LinearExpertParams) -> Array:
        """``-ridge / 2 sum_kd |slopes_kd|^2 / variance_kd`` (up to terms free of the parameters)."""
        coef = _as3(params.coef)
        mask = slope_mask(coef.shape[1], self.fit_intercept, coef.dtype)
        return -0.5 * self.ridge * jnp.sum(jnp.einsum("kqd,q->kd", coef * coef, mask) / self._variance(params))

    def maximize(self, stats: LinearExpertStats, params=None, frozen: frozenset = frozenset()) -> LinearExpertParams:
        point = stats.point
        mask = self._penalty(point.shape[1], point.dtype)
        if "coef" in frozen:
            coef = _as3(params.coef)
        else:
            # coef = (S + ridge)^-1 sum r z y = point + (S + ridge)^-1 (cross - ridge point).
            coef = point + ridge_solve(stats.scatter, stats.cross - mask[None, :, None] * point, mask[None, :])
        n = stats.counts[:, None]
        rss = self._rss(stats, coef)
        shrink = jnp.einsum("kqd,q->kd", coef * coef, mask)
        var = (rss + shrink) / jnp.maximum(n, jnp.finfo(n.dtype).tiny) + self._reg(point.dtype)
        # An expert no point is responsible for keeps its variance (it would be 0 / 0).
        old = jnp.ones_like(var) if params is None else self._variance(params)
        var = old if "variance" in frozen else jnp.where(n > 0, var, old)
        return self._shaped(coef, var, stats.scalar)

    def _shaped(self, coef3, var, scalar) -> LinearExpertParams:
        if scalar:
            return LinearExpertParams(coef3[..., 0], var[..., 0])
        return LinearExpertParams(coef3, var)

    # -- initialisation and the rest of the Family contract -----------------------------------

    def init_from_centers(self, data, centers: Array) -> LinearExpertParams:
        """Flat experts through the centres: intercept the centre's output, no slope; the output's variance."""
        x, y = data
        p = x.shape[1]
        dy = 1 if y.ndim == 1 else y.shape[1]
        k = centers.shape[0]
        q = p + int(self.fit_intercept)
        coef = jnp.zeros((k, q, dy), x.dtype)
        if self.fit_intercept:
            coef = coef.at[:, -1, :].set(centers[:, p:])
        y2 = y.reshape(y.shape[0], dy).astype(x.dtype)
        var = jnp.broadcast_to(jnp.var(y2, axis=0) + self._reg(x.dtype) + jnp.finfo(x.dtype).tiny, (k, dy))
        return self._shaped(coef, var, y.ndim == 1)

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset(), n_outputs: int = 1) -> int:
        q = n_features + int(self.fit_intercept)
        per_output = (0 if "coef" in frozen else q) + (0 if "variance" in frozen else 1)
        return n_components * per_output * n_outputs

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, LinearExpertParams):
            raise TypeError(f"LinearExpert parameters must be a LinearExpertParams; got {type(params).__name__}.")
        q = n_features + int(self.fit_intercept)
        coef = jnp.shape(params.coef)
        if len(coef) not in (2, 3) or coef[:2] != (n_components, q):
            raise ValueError(f"coef must be ({n_components}, {q}) or ({n_components}, {q}, Dy); got {coef}.")
        check_shape(params.variance, (n_components,) + coef[2:], "variance")
        v = concrete(params.variance)
        if v is not None and not (np.all(np.isfinite(v)) and np.all(v > 0)):
            raise ValueError(f"variance must be positive and finite; got {v}.")

    def unconstrain(self, params: LinearExpertParams) -> dict:
        """``{"coef": coef, "log_variance": log(variance)}``."""
        return {"coef": params.coef, "log_variance": jnp.log(params.variance)}

    def constrain(self, u: dict) -> LinearExpertParams:
        return LinearExpertParams(u["coef"], jnp.exp(u["log_variance"]))


class LogisticExpertParams(eqx.Module):
    """Logistic-regression experts ``P(y = 1 | x, k) = sigmoid(coef_k^T [x, 1])``.

    Attributes:
        coef: ``(K, Q)``, the intercept last.
    """

    coef: Array


class LogisticExpertStats(eqx.Module):
    """Statistics of logistic experts under the Jaakkola-Jordan bound at the E-step's coefficients.

    Attributes:
        counts: ``(K,)`` ``sum_n r_nk``.
        target: ``(K, Q)`` ``sum_n r_nk (y_n - 1/2) z_n``.
        curvature: ``(K, Q, Q)`` ``sum_n r_nk 2 lambda(eta_nk) z_n z_n^T``, ``eta_nk`` the
            logit at the E-step's coefficients and ``lambda(e) = tanh(e / 2) / (4 e)``.
    """

    counts: Array
    target: Array
    curvature: Array


def jj_lambda(eta: Array) -> Array:
    """``tanh(eta / 2) / (4 eta)``, the curvature of the Jaakkola-Jordan bound on
    ``log sigmoid`` tight at ``+-eta`` (``1/8`` at 0, by its series there)."""
    a = jnp.abs(eta)
    small = a < 1e-3
    safe = jnp.where(small, 1.0, a)
    return jnp.where(small, 0.125 - a * a / 96.0, jnp.tanh(0.5 * safe) / (4.0 * safe))


class LogisticExpert(Expert):
    """Logistic-regression experts for 0/1 outputs: ``P(y = 1 | x, k) = sigmoid(coef_k^T [x, 1])``.

    The M-step has no closed form; it is a generalized-EM step: the maximum of
    the Jaakkola-Jordan quadratic lower bound on ``log sigmoid``, tight at the
    E-step's logits (Jaakkola & Jordan 2000), a weighted ridge regression in
    closed form. The bound touches the expected log-likelihood at the current
    coefficients, so every step raises it (and EM's objective); its curvature
    ``tanh(eta / 2) / (4 eta)`` is at most Bohning's fixed ``1/8``, so it steps
    further where the logits are large. A Gaussian prior ``N(0, 1 / ridge)`` on
    the slopes keeps the coefficients finite when an expert's data are separable.

    The statistics depend on the E-step's coefficients through the bound's
    curvature: they add over rows taken at the same coefficients (batch
    algorithms); incremental EM, which needs an expected log-likelihood linear
    in the statistics, refuses them.

    Args:
        ridge: the slopes' prior precision (``>= 0``).
        fit_intercept: give every expert an intercept.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> X = rng.uniform(-1, 1, (200, 1))
        >>> labels = (X[:, 0] > 0.3).astype(int)
        >>> model = emjax.MixtureOfExperts(emjax.LogisticExpert(ridge=1.0), 2)
        >>> res = emjax.fit(model, (X, labels), key=jax.random.key(0), max_iter=50)
        >>> print(model.predict_mode(res.params, jnp.array([[-0.5], [0.9]])))
        [0 1]
    """

    ridge: float = eqx.field(static=True)

    param_groups = ("coef",)

    def __init__(self, *, ridge: float = 1e-3, fit_intercept: bool = True):
        self.ridge = check_number("ridge", ridge, low=0.0)
        self.fit_intercept = bool(fit_intercept)

    def validate_data(self, data):
        return as_regression_data(data, "LogisticExpert", labels=True)

    def _eta(self, params: LogisticExpertParams, x) -> tuple[Array, Array]:
        z = design(x, self.fit_intercept)
        return z, jnp.matmul(z, params.coef.T, precision=_EXACT)

    def log_prob_and_cache(self, params: LogisticExpertParams, data):
        x, y = data
        z, eta = self._eta(params, x)
        s = (2.0 * y - 1.0)[:, None]
        return jax.nn.log_sigmoid(s * eta), (z, eta)

    def log_prob(self, params: LogisticExpertParams, data) -> Array:
        """``(N, K)`` ``log P(y_n | x_n, k)``."""
        return self.log_prob_and_cache(params, data)[0]

    def mean(self, params: LogisticExpertParams, x) -> Array:
        """``(N, K)`` ``P(y = 1 | x, k)``."""
        return jax.nn.sigmoid(self._eta(params, x)[1])

    def cached_statistics(self, data, resp, params, cache) -> LogisticExpertStats:
        z, eta = cache
        return self._stats(z, eta, data[1], resp)

    def statistics(self, data, resp, params=None) -> LogisticExpertStats:
        x, y = data
        if params is None:
            z = design(x, self.fit_intercept)
            eta = jnp.zeros((z.shape[0], resp.shape[1]), z.dtype)
        else:
            z, eta = self._eta(params, x)
        return self._stats(z, eta, y, resp)

    @staticmethod
    def _stats(z, eta, y, resp) -> LogisticExpertStats:
        rz = (resp * (2.0 * jj_lambda(eta)))[:, :, None] * z[:, None, :]
        return LogisticExpertStats(
            jnp.sum(resp, axis=0),
            jnp.matmul((resp * (y[:, None] - 0.5)).T, z, precision=_EXACT),
            jnp.einsum("nkq,nr->kqr", rz, z, precision=_EXACT),
        )

    def log_prior(self, params: LogisticExpertParams) -> Array:
        """``-ridge / 2 sum_k |slopes_k|^2`` (up to a constant)."""
        mask = slope_mask(params.coef.shape[1], self.fit_intercept, params.coef.dtype)
        return -0.5 * self.ridge * jnp.sum(params.coef * params.coef * mask)

    def maximize(self, stats: LogisticExpertStats, params=None, frozen: frozenset = frozenset()) -> LogisticExpertParams:
        if "coef" in frozen:
            return LogisticExpertParams(params.coef)
        penalty = self.ridge * slope_mask(stats.target.shape[1], self.fit_intercept, stats.target.dtype)
        # The bound's maximum: (sum r 2 lambda z z^T + ridge)^-1 sum r (y - 1/2) z.
        coef = ridge_solve(stats.curvature, stats.target[..., None], penalty[None, :])[..., 0]
        return LogisticExpertParams(coef)

    def init_from_centers(self, data, centers: Array) -> LogisticExpertParams:
        """Flat experts: each predicts its centre's label frequency (clipped to [0.05, 0.95]) everywhere."""
        x, _ = data
        p = x.shape[1]
        q = p + int(self.fit_intercept)
        coef = jnp.zeros((centers.shape[0], q), x.dtype)
        if self.fit_intercept:
            prob = jnp.clip(centers[:, p], 0.05, 0.95)
            coef = coef.at[:, -1].set(jnp.log(prob) - jnp.log1p(-prob))
        return LogisticExpertParams(coef)

    def n_parameters(self, n_components: int, n_features: int, frozen: frozenset = frozenset(), n_outputs: int = 1) -> int:
        return 0 if "coef" in frozen else n_components * (n_features + int(self.fit_intercept))

    def validate_params(self, params, n_components: int, n_features: int) -> None:
        if not isinstance(params, LogisticExpertParams):
            raise TypeError(f"LogisticExpert parameters must be a LogisticExpertParams; got {type(params).__name__}.")
        check_shape(params.coef, (n_components, n_features + int(self.fit_intercept)), "coef")

    def unconstrain(self, params: LogisticExpertParams) -> LogisticExpertParams:
        return params

    def constrain(self, u) -> LogisticExpertParams:
        return u
