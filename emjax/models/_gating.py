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

from .._checks import check_shape, concrete
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
    def init(self, n_components: int, dtype) -> Params:
        """Starting parameters: uniform weights."""

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
    def n_parameters(self, n_components: int) -> int:
        """Number of free parameters of the gating of ``n_components`` components."""

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
        >>> ConstantGating().maximize(jnp.array([2.0, 6.0]))
        Array([0.25, 0.75], dtype=float32)
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
        if self.prior is not None:
            return self.prior.mode(stats)
        return stats / jnp.sum(stats)

    def log_prior(self, params: Array) -> Array:
        if self.prior is None:
            return jnp.zeros((), params.dtype)
        return self.prior.log_prob(params)

    def expected_log_likelihood(self, stats: Array, params: Array) -> Array:
        return jnp.sum(xlogy(stats, params))

    def init(self, n_components: int, dtype) -> Array:
        return jnp.full((n_components,), 1.0 / n_components, dtype=dtype)

    def unconstrain(self, params: Array) -> Array:
        """Log weights, defined up to an additive constant (:meth:`constrain` takes a softmax)."""
        # Clipped at the smallest normal number: a weight of 0 maps to a finite coordinate.
        return jnp.log(jnp.maximum(params, jnp.finfo(params.dtype).tiny))

    def constrain(self, u: Array) -> Array:
        """``softmax(u)``: valid weights from any real ``u``."""
        return jax.nn.softmax(u)

    def n_parameters(self, n_components: int) -> int:
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
