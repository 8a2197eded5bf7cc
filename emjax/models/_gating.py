"""Gating: where a mixture's weights come from.

A :class:`emjax.Mixture` asks its gating for the log weights of every point and
for the M-step of the weights' parameters; it keeps those parameters in
``MixtureParams.weights``. :class:`ConstantGating` is the classical mixture: one
weight vector for all points, optionally with a Dirichlet prior. A gating whose
weights depend on covariates (a softmax of the covariates: a mixture of
experts) implements the same methods, its ``maximize`` a generalized-EM step
from statistics taken at the current parameters.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array
from jax.scipy.special import xlogy

from .._checks import check_number, check_shape, concrete
from ..families._experts import design, ridge_solve, slope_mask
from ..families._priors import Dirichlet

Params = Any
Stats = Any


class Gating(eqx.Module):
    """Abstract base of a mixture's weights. Subclass it to add a gating.

    The gating's parameters are a pytree (``MixtureParams.weights``); its
    statistics are additive over data points, like a family's. Every method is
    pure and traceable.
    """

    #: True when the gating's statistics are the effective counts ``sum_n r_nk``
    #: alone: :class:`emjax.Mixture` then reuses ``MixtureStats.counts`` instead
    #: of storing them twice.
    counts_suffice: ClassVar[bool] = False

    @abc.abstractmethod
    def log_weights(self, params: Params, x: Any) -> Array:
        """Log mixing weights: ``(N, K)``, or ``(K,)`` when they are the same for every point.

        Args:
            params: the gating's parameters.
            x: the data ``(N, ...)``, or ``None`` for the marginal weights (a
                covariate-dependent gating raises then).
        """

    def weights(self, params: Params, x: Any = None) -> Array:
        """Mixing weights, ``exp(log_weights)``: ``(N, K)`` or ``(K,)``."""
        return jnp.exp(self.log_weights(params, x))

    @abc.abstractmethod
    def statistics(self, x: Any, resp: Array, params: Params | None = None) -> Stats:
        """The gating's statistics, additive over rows.

        Args:
            x: data ``(N, ...)``.
            resp: responsibilities times sample weights ``(N, K)``.
            params: the current parameters, the expansion point of a
                generalized-EM step; ``None`` where the statistics do not need them.
        """

    @abc.abstractmethod
    def maximize(self, stats: Stats, params: Params | None = None) -> Params:
        """The M-step (or a generalized-EM step) of the gating's parameters, prior included."""

    def log_prior(self, params: Params) -> Array:
        """Log prior density of the gating's parameters (0 without a prior)."""
        return jnp.zeros(())

    def expected_log_likelihood(self, stats: Stats, params: Params) -> Array:
        """``sum_n sum_k r_nk log pi_k(x_n)`` from the statistics, linear in them (incremental EM).

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(f"{type(self).__name__} does not provide expected_log_likelihood.")

    @abc.abstractmethod
    def init(self, n_components: int, dtype, x: Any = None) -> Params:
        """Starting parameters: uniform weights (``x``, the data, sizes a covariate-dependent gating)."""

    def unconstrain(self, params: Params) -> Any:
        """The parameters in unconstrained coordinates (gradient ascent).

        Raises:
            NotImplementedError: by default; implement it with :meth:`constrain`.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement unconstrain()/constrain().")

    def constrain(self, u: Any) -> Params:
        """The inverse of :meth:`unconstrain`.

        Raises:
            NotImplementedError: by default.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement unconstrain()/constrain().")

    @abc.abstractmethod
    def n_parameters(self, n_components: int, n_features: int | None = None) -> int:
        """Number of free parameters of the gating of ``n_components`` components (on ``n_features`` covariates)."""

    def validate_params(self, params: Params, n_components: int) -> None:
        """Raise a clear error if ``params`` are inconsistent (shapes, constraints); no check by default."""

    def reinitialize(self, params: Params, mask: Array) -> Params:
        """The parameters when the components in ``mask`` ``(K,)`` are started afresh.

        The default keeps them: the fresh components compete under the current gating.
        """
        return params


class ConstantGating(Gating):
    """One weight vector for every point: ``p(z = k) = pi_k``, optionally under a Dirichlet prior.

    The parameters are the weights ``(K,)`` themselves; the statistics are the
    effective counts ``N_k = sum_n r_nk`` and the M-step is ``N_k / N`` (the
    Dirichlet mode with a prior).

    Args:
        prior: a :class:`emjax.Dirichlet` prior on the weights, or ``None``.

    Example:
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 3, gating=ConstantGating(emjax.Dirichlet(2.0)))
        >>> print(ConstantGating().maximize(jnp.array([2.0, 6.0])))   # the counts' proportions
        [0.25 0.75]
    """

    counts_suffice: ClassVar[bool] = True

    prior: Dirichlet | None

    def __init__(self, prior: Dirichlet | None = None):
        if prior is not None and not isinstance(prior, Dirichlet):
            raise TypeError(f"the weights' prior must be a Dirichlet or None; got {type(prior).__name__}.")
        self.prior = prior

    def log_weights(self, params: Array, x: Any = None) -> Array:
        return jnp.log(params)

    def weights(self, params: Array, x: Any = None) -> Array:
        return params

    def statistics(self, x: Any, resp: Array, params: Array | None = None) -> Array:
        return jnp.sum(resp, axis=0)

    def maximize(self, stats: Array, params: Array | None = None) -> Array:
        # A component of weight exactly 0 in ``params`` was dropped (a sparse Dirichlet
        # prior, or a component beyond K in emjax.select): it stays dropped.
        if self.prior is not None:
            return self.prior.mode(stats, None if params is None else params > 0)
        return stats / jnp.sum(stats)

    def log_prior(self, params: Array) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.dtype)
        return self.prior.log_prob(params)

    def expected_log_likelihood(self, stats: Array, params: Array) -> Array:
        return jnp.sum(xlogy(stats, params))

    def init(self, n_components: int, dtype, x: Any = None) -> Array:
        return jnp.full((n_components,), 1.0 / n_components, dtype=dtype)

    def unconstrain(self, params: Array) -> Array:
        """Log weights, defined up to an additive constant (:meth:`constrain` takes a softmax)."""
        # Clipped at the smallest normal number: a weight of 0 maps to a finite coordinate.
        return jnp.log(jnp.maximum(params, jnp.finfo(params.dtype).tiny))

    def constrain(self, u: Array) -> Array:
        """``softmax(u)``: valid weights from any real ``u``."""
        return jax.nn.softmax(u)

    def n_parameters(self, n_components: int, n_features: int | None = None) -> int:
        return n_components - 1

    def validate_params(self, params: Array, n_components: int) -> None:
        check_shape(params, (n_components,), "weights")
        w = concrete(params)
        if w is None:
            return
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError(f"weights must be finite and non-negative; got {w}.")
        total = float(np.sum(w, dtype=np.float64))
        if abs(total - 1.0) > 1e-5:
            raise ValueError(f"weights must sum to 1; they sum to {total}.")

    def reinitialize(self, params: Array, mask: Array) -> Array:
        """Weight ``1/K`` for every component in ``mask``, then renormalised."""
        k = params.shape[0]
        weights = jnp.where(mask, 1.0 / k, params)
        return weights / jnp.sum(weights)


def covariates(x: Any) -> Array:
    """The covariates of the data a covariate-dependent gating sees: ``X`` of a pair ``(X, y)``, else ``x`` itself."""
    return x[0] if isinstance(x, (tuple, list)) else x


class SoftmaxGating(Gating):
    """Weights that depend on covariates: ``pi_k(x) = softmax_k(W [x, 1])``, the gating of a mixture of experts.

    The parameters are the logit coefficients ``W`` ``(K, Q)`` (``Q = P + 1`` with
    the intercept, last); softmax is unchanged by adding one row to all, so the
    M-step works with the differences to the last row, which it keeps at 0. A
    Gaussian prior ``N(0, 1 / prior_precision)`` on those differences' slopes
    keeps ``W`` finite when the components are separable in ``x``.

    The M-step has no closed form; it is a generalized-EM step: one Newton step in
    which the Hessian of ``sum_nk r_nk log pi_k(x_n)`` is replaced by Bohning's
    bound ``-(1/2) (I - 11^T / K) (x) sum_n w_n z_n z_n^T`` (Bohning 1992; ``w_n``
    the row's weight), the maximum of a quadratic minorant, so every step raises
    the expected complete-data log-likelihood (and EM's objective). Its
    statistics are the gradient at the E-step's ``W`` and the weighted scatter
    of the design: they add over rows taken at the same ``W`` (batch
    algorithms); incremental EM, which needs them linear, refuses the gating.

    Args:
        prior_precision: the slopes' prior precision, ``>= 0``.
        fit_intercept: a constant covariate (the intercept of each logit).

    Example:
        >>> model = emjax.MixtureOfExperts(emjax.LinearExpert(), 3, gating=emjax.SoftmaxGating(prior_precision=1.0))
        >>> model.gating
        SoftmaxGating(prior_precision=1.0, fit_intercept=True)
    """

    prior_precision: float = eqx.field(static=True)
    fit_intercept: bool = eqx.field(static=True)

    def __init__(self, prior_precision: float = 1e-2, fit_intercept: bool = True):
        self.prior_precision = check_number("prior_precision", prior_precision, low=0.0)
        self.fit_intercept = bool(fit_intercept)

    def log_weights(self, params: Array, x: Any) -> Array:
        """``(N, K)`` ``log softmax(z_n W^T)``.

        Raises:
            ValueError: ``x`` is ``None`` (the weights depend on the covariates).
        """
        if x is None:
            raise ValueError(
                "SoftmaxGating's weights depend on the covariates: there are no marginal weights to give "
                "without x (sample and predict with MixtureOfExperts' methods, which take X)."
            )
        z = design(covariates(x), self.fit_intercept)
        return jax.nn.log_softmax(jnp.matmul(z, params.T, precision=jax.lax.Precision.HIGHEST), axis=1)

    def statistics(self, x: Any, resp: Array, params: Array | None = None) -> "SoftmaxGatingStats":
        z = design(covariates(x), self.fit_intercept)
        w = jnp.sum(resp, axis=1)
        if params is None:
            probs = jnp.full(resp.shape, 1.0 / resp.shape[1], resp.dtype)
        else:
            probs = jax.nn.softmax(jnp.matmul(z, params.T, precision=jax.lax.Precision.HIGHEST), axis=1)
        grad = jnp.matmul((resp - w[:, None] * probs).T, z, precision=jax.lax.Precision.HIGHEST)
        scatter = jnp.matmul((z * w[:, None]).T, z, precision=jax.lax.Precision.HIGHEST)
        return SoftmaxGatingStats(grad, scatter)

    def _free(self, params: Array) -> Array:
        """``(K - 1, Q)`` the rows less the last: the identified coordinates."""
        return params[:-1] - params[-1:]

    def _penalty(self, q: int, dtype) -> Array:
        return self.prior_precision * slope_mask(q, self.fit_intercept, dtype)

    def maximize(self, stats: "SoftmaxGatingStats", params: Array | None = None) -> Array:
        k, q = stats.grad.shape
        dtype = stats.grad.dtype
        v = jnp.zeros((k - 1, q), dtype) if params is None else self._free(params)
        penalty = self._penalty(q, dtype)
        # Bohning's bound on the (K-1)-class block: A (x) S with A = (I - 11^T / K) / 2.
        a = 0.5 * (jnp.eye(k - 1, dtype=dtype) - 1.0 / k)
        bound = jnp.kron(a, stats.scatter)
        rhs = (stats.grad[:-1] - penalty * v).reshape(-1)
        step = ridge_solve(bound, rhs[:, None], jnp.tile(penalty, k - 1))[:, 0]
        v = v + step.reshape(k - 1, q)
        return jnp.concatenate([v, jnp.zeros((1, q), dtype)], axis=0)

    def log_prior(self, params: Array) -> Array:
        """``-prior_precision / 2`` times the squared slopes of the rows less the last (up to a constant)."""
        v = self._free(params)
        return -0.5 * jnp.sum(self._penalty(v.shape[1], v.dtype) * v * v)

    def init(self, n_components: int, dtype, x: Any = None) -> Array:
        """``W = 0``: equal weights everywhere."""
        if x is None:
            raise ValueError("SoftmaxGating.init needs the data to size W (K, P + 1).")
        q = covariates(x).shape[1] + int(self.fit_intercept)
        return jnp.zeros((n_components, q), dtype)

    def unconstrain(self, params: Array) -> Array:
        return params

    def constrain(self, u: Array) -> Array:
        return u

    def n_parameters(self, n_components: int, n_features: int | None = None) -> int:
        if n_features is None:
            raise TypeError("SoftmaxGating.n_parameters needs n_features, the number of covariates.")
        return (n_components - 1) * (n_features + int(self.fit_intercept))

    def validate_params(self, params: Array, n_components: int) -> None:
        shape = jnp.shape(params)
        if len(shape) != 2 or shape[0] != n_components:
            raise ValueError(f"SoftmaxGating parameters must be W ({n_components}, Q); got shape {shape}.")
        w = concrete(params)
        if w is not None and not np.all(np.isfinite(w)):
            raise ValueError("SoftmaxGating parameters W must be finite.")


class SoftmaxGatingStats(eqx.Module):
    """Statistics of a :class:`SoftmaxGating` at the E-step's ``W``.

    Attributes:
        grad: ``(K, Q)`` ``sum_n z_n (r_nk - w_n pi_k(x_n))``, the gradient of
            ``sum_nk r_nk log pi_k(x_n)`` with respect to ``W``.
        scatter: ``(Q, Q)`` ``sum_n w_n z_n z_n^T``, ``w_n = sum_k r_nk``.
    """

    grad: Array
    scatter: Array
