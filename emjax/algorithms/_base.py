"""The Algorithm contract: a pure ``init`` / ``step`` pair, as optax and blackjax use."""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
from jax import Array


class AlgorithmState(eqx.Module):
    """What the runner reads of every algorithm's state.

    Attributes:
        params: the current parameters.
        objective: the objective (log-likelihood plus log prior) at ``params``.
        n_passes: data passes so far (an E-step over all points is one pass).
    """

    params: Any
    objective: Array
    n_passes: Array


class Algorithm(eqx.Module):
    """An EM-family algorithm: ``init(model, params, data) -> state`` and
    ``step(model, state, data) -> state``, both pure and jit-able.

    The state must expose ``params``, ``objective`` (at ``params``) and
    ``n_passes``; the runner (:func:`emjax.fit`) loops ``step`` in one
    ``lax.while_loop`` and decides when to stop.
    """

    @abc.abstractmethod
    def init(self, model, params, data) -> AlgorithmState:
        """The state at initial ``params`` (evaluates their objective)."""

    @abc.abstractmethod
    def step(self, model, state: AlgorithmState, data) -> AlgorithmState:
        """One iteration."""
