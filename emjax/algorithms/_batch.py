"""Batch EM: every iteration an E-step over all the data, then an M-step."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from ._base import Algorithm, AlgorithmState


class BatchEMState(AlgorithmState):
    """Batch EM state: the statistics at ``params`` travel with them, so one
    step is one M-step and one E-step (the E-step also yields the objective)."""

    stats: Any


class BatchEM(Algorithm):
    """Batch (classic) EM (Dempster, Laird & Rubin, 1977).

    Each step is ``params <- m_step(E[stats | params])``. The objective
    (log-likelihood, plus the log prior for MAP-EM) never decreases.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=BatchEM())   # the default
        >>> print(round(float(result.objective[0]), 2), result.n_iter)
        -1130.27 [5]
    """

    def init(self, model, params, data, key=None) -> BatchEMState:
        return evaluated(model, params, data, None)

    def step(self, model, state: BatchEMState, data) -> BatchEMState:
        params = model.m_step(state.stats, state.params)
        params = model.refine(state.params, params, data)  # ECME's passes, if the model has any
        return evaluated(model, params, data, state.n_passes + model.refine_passes)


def evaluated(model, params, data, n_passes, **options) -> BatchEMState:
    """The state at ``params``: one E-step (with ``options``) gives the statistics
    and the objective; ``n_passes`` (``None`` at ``init``) grows by that pass."""
    stats, loglik = data.e_step(model, params, **options)
    objective = model.objective(stats, params, loglik)
    passes = jnp.ones((), objective.dtype) if n_passes is None else n_passes + 1
    return BatchEMState(params, objective, passes, stats)
