"""Adaptive over-relaxed EM (Salakhutdinov & Roweis, 2003)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_number
from ._base import Algorithm, AlgorithmState, check_unconstrained


class OverRelaxedEMState(AlgorithmState):
    """Over-relaxed EM state.

    Attributes:
        stats: the E-step's statistics at ``params``.
        eta: the step length the next step tries.
        n_accepted: over-relaxed steps accepted so far (the rest fell back to EM's).
    """

    stats: Any
    eta: Array
    n_accepted: Array


class OverRelaxedEM(Algorithm):
    """Adaptive over-relaxed EM (Salakhutdinov & Roweis, 2003).

    Each step moves past EM's: ``u + eta (u_EM - u)`` in the model's
    unconstrained coordinates (``model.unconstrain``: log weights, Cholesky
    factors, logits; any point there is valid parameters), where ``u_EM`` is the
    EM update of the current ``u``. If that does not lower the objective it is
    taken and ``eta`` grows by ``growth``; otherwise the plain EM step is taken
    and ``eta`` falls back to 1. So the objective never decreases, and on a
    slowly converging problem (overlapping components, where EM crawls along one
    direction) the steps lengthen and take far fewer iterations. A rejected
    step costs a second E-step (``n_passes`` counts both).

    Args:
        growth: ``eta``'s factor after an accepted step (> 1).
        max_eta: the longest step tried.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=emjax.OverRelaxedEM())
        >>> print(round(float(result.objective[0]), 2))
        -1130.27
    """

    growth: float = eqx.field(static=True, default=1.5)
    max_eta: float = eqx.field(static=True, default=64.0)

    def __check_init__(self):
        check_number("growth", self.growth, low=1.0, low_open=True)
        check_number("max_eta", self.max_eta, low=1.0)

    def validate(self, model, data) -> None:
        check_unconstrained(self, model)
        if not model.provides("unconstrain"):
            raise TypeError(
                f"OverRelaxedEM steps in unconstrained coordinates; {type(model).__name__} defines no "
                "unconstrain(params) / constrain(u) pair."
            )

    def init(self, model, params, data, key=None) -> OverRelaxedEMState:
        stats, loglik = data.e_step(model, params)
        objective = model.objective(stats, params, loglik)
        one = jnp.ones((), objective.dtype)
        return OverRelaxedEMState(params, objective, one, stats, one, jnp.zeros((), jnp.int32))

    def step(self, model, state: OverRelaxedEMState, data) -> OverRelaxedEMState:
        em = model.m_step(state.stats, state.params)
        em = model.refine(state.params, em, data)
        u0, u1 = model.unconstrain(state.params), model.unconstrain(em)
        eta = state.eta
        moved = model.constrain(jax.tree.map(lambda a, b: a + eta.astype(a.dtype) * (b - a), u0, u1))
        moved = model.hold_frozen(moved, em)
        stats, loglik = data.e_step(model, moved)
        objective = model.objective(stats, moved, loglik)
        # NaN compares False: a step to invalid parameters falls back to EM's.
        accept = objective >= state.objective

        def fall_back(_):
            s, ll = data.e_step(model, em)
            return em, s, model.objective(s, em, ll)

        params, stats, objective = jax.lax.cond(
            accept, lambda _: (moved, stats, objective), fall_back, None
        )
        eta = jnp.where(accept, jnp.minimum(eta * self.growth, self.max_eta), 1.0).astype(eta.dtype)
        passes = state.n_passes + 1 + model.refine_passes + jnp.where(accept, 0.0, 1.0).astype(state.n_passes.dtype)
        return OverRelaxedEMState(params, objective, passes, stats, eta, state.n_accepted + accept)
