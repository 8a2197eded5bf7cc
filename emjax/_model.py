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

    ``expected_log_joint(stats, params) -> scalar`` (optional)
        ``E_q[log p(x, z | params)]`` for the posterior that produced ``stats``,
        linear in ``stats`` and exact up to terms free of ``params``. Needed by
        :class:`emjax.IncrementalEM`, which tracks its free energy with it.

    Optional hooks the runner uses when present: ``validate_data(x) -> x``,
    ``validate_params(params, x)`` (raise on inconsistent parameters) and
    ``collapsed(params, x) -> (K,) bool`` (components at a singularity).
    """

    def e_step(self, params: Params, x: Any, weights: Array | None = None) -> tuple[Stats, Array]: ...

    def m_step(self, stats: Stats, params: Params) -> Params: ...

    def log_prior(self, params: Params) -> Array: ...


def _adds_itself(node) -> bool:
    return isinstance(node, eqx.Module) and hasattr(type(node), "__add__")


def add_stats(a: Stats, b: Stats) -> Stats:
    """Sum of two statistics pytrees.

    Leaves are added elementwise, except inside a Module that defines
    ``__add__`` (statistics stored about an expansion point, such as
    :class:`emjax.families.GaussianStats`), which adds itself wherever it sits
    in the tree (``(stats, loglik)`` pairs included).
    """
    return jax.tree.map(lambda u, v: u + v if _adds_itself(u) else jnp.add(u, v), a, b, is_leaf=_adds_itself)


def scale_stats(s: Stats, c) -> Stats:
    """Statistics ``s`` multiplied by the scalar ``c``, as if every point's weight were scaled.

    Leaves are multiplied, except inside a Module that defines ``__mul__``
    (statistics stored about an expansion point keep their point). Stepwise EM
    moves running statistics with ``add_stats(scale_stats(new, eta), scale_stats(s, 1 - eta))``.
    """
    scales_itself = lambda node: isinstance(node, eqx.Module) and hasattr(type(node), "__mul__")  # noqa: E731
    return jax.tree.map(lambda a: a * c, s, is_leaf=scales_itself)


def sum_stats(stacked: Stats) -> Stats:
    """The sum over the leading axis of stacked statistics (``add_stats`` folded
    in order, so Modules with their own ``__add__`` add correctly)."""
    first = jax.tree.map(lambda a: a[0], stacked)
    rest = jax.tree.map(lambda a: a[1:], stacked)
    if jax.tree.leaves(stacked)[0].shape[0] == 1:
        return first
    total, _ = jax.lax.scan(lambda acc, s: (add_stats(acc, s), None), first, rest)
    return total
