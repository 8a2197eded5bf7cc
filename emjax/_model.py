"""The EMModel contract, and the statistics algebra every driver relies on."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

Params = Any
Stats = Any


@runtime_checkable
class EMModel(Protocol):
    """Anything EM can fit. Implement these and every driver works with it.

    ``e_step(params, x, weights=None) -> (stats, loglik)``
        Expected sufficient statistics of the data under the posterior of the
        latent variables at ``params``, and the (weighted) log-likelihood of
        ``x`` at ``params``. The statistics must be a pytree additive over data
        points (see :func:`add_stats`). ``weights`` ``(N,)`` mean repetition
        counts; a model that does not support them may omit the argument.
    ``m_step(stats, params) -> params``
        The parameters maximising the expected complete-data log likelihood plus
        the log prior. ``params`` are the current parameters: closed-form M-steps
        ignore them; frozen parameter groups, ECM and generalized-EM steps need them.
    ``log_prior(params) -> scalar``
        0 for maximum likelihood; with it the traced objective is the log posterior.
    ``init(key, x, method) -> params`` (optional)
        Used when :func:`emjax.fit` is given ``init`` as a string.

    Optional hooks the runner uses when present: ``validate_data(x) -> x``,
    ``validate_params(params, x)`` (raise on inconsistent parameters) and
    ``collapsed(params, x) -> (K,) bool`` (components at a singularity).
    """

    def e_step(self, params: Params, x: Any, weights: Array | None = None) -> tuple[Stats, Array]: ...

    def m_step(self, stats: Stats, params: Params) -> Params: ...

    def log_prior(self, params: Params) -> Array: ...


def add_stats(a: Stats, b: Stats) -> Stats:
    """Sum of two statistics pytrees.

    Leaves are added elementwise, except for a Module that defines ``__add__``
    (statistics stored about an expansion point, such as
    :class:`emjax.families.GaussianStats`), which adds itself.
    """
    if isinstance(a, eqx.Module) and hasattr(type(a), "__add__"):
        return a + b
    return jax.tree.map(jnp.add, a, b)
