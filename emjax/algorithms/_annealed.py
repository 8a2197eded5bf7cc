"""Deterministic annealing EM (Ueda & Nakano, 1998): a tempered posterior cooled to the true one."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_int, check_number
from ._base import Algorithm, AlgorithmState, check_e_step, float_dtype_of


class AnnealedEMState(AlgorithmState):
    """Annealed EM state.

    Attributes:
        stats: the statistics at ``params`` under the tempered posterior of ``temperature``.
        temperature: the temperature of those statistics (1 once annealing is over).
        fitted_temperature: the temperature of the statistics ``params`` were
            maximised from (the initial temperature at ``init``).
        n_steps: steps taken (the schedule's clock).
    """

    stats: Any
    temperature: Array
    fitted_temperature: Array
    n_steps: Array


class AnnealedEM(Algorithm):
    """Deterministic annealing EM (Ueda & Nakano, 1998).

    The E-step's responsibilities are the tempered posterior
    ``softmax_k(log pi_k p_k(x) / T)``; the temperature ``T`` starts high (every
    point shared almost evenly: one broad cluster, few poor local optima) and
    falls to 1 on a schedule, where the algorithm becomes plain EM. At a fixed
    ``T`` each step cannot decrease the tempered objective
    ``T sum_n logsumexp_k(log pi_k p_k(x_n) / T)`` (plus the log prior); the
    objective reported (and compared by ``tol``) is the log-likelihood, and the
    fit may not stop before ``T`` reaches 1 (:meth:`can_stop`).

    Too hot a start defeats it: far above the data's critical temperature every
    component moves to the data's mean, identical components stay identical
    under EM, and the fit ends at a saddle with one distinct component (at
    ``T0 = 10`` and 50 every one of 16 restarts did, on five clusters in 2-D).
    ``T0`` of 2 to 5 keeps the components apart while smoothing away the poor
    optima: from the same 16 random starts, ``T0=2, cooling=0.9`` reached the
    best optimum in 13 (spherical) and 15 (full) restarts where EM did in 0 and 3
    (``benchmarks/bench_variants.py``).

    The schedule is geometric, ``T_j = max(1, T0 * cooling**j)`` for the ``j``-th
    block of ``steps_per_temperature`` steps, or any ``schedule(step) -> T``
    (``step`` a traced integer from 0; it must reach 1 and stay there).

    Args:
        initial_temperature: ``T0 >= 1``.
        cooling: ``0 < cooling < 1``, the factor between temperatures.
        steps_per_temperature: EM steps at each temperature.
        schedule: a function ``step -> temperature`` replacing the geometric one.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> algo = emjax.AnnealedEM(initial_temperature=3.0, cooling=0.5, steps_per_temperature=5)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo)
        >>> print(round(float(result.objective[0]), 2))
        -1130.27
    """

    initial_temperature: float = eqx.field(static=True, default=2.0)
    cooling: float = eqx.field(static=True, default=0.9)
    steps_per_temperature: int = eqx.field(static=True, default=10)
    schedule: Callable[[Array], Array] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        check_number("initial_temperature", self.initial_temperature, low=1.0)
        check_number("cooling", self.cooling, low=0.0, high=1.0, low_open=True)
        if self.cooling == 1.0 and self.initial_temperature > 1.0:
            raise ValueError("cooling must be < 1: the temperature would never reach 1.")
        check_int("steps_per_temperature", self.steps_per_temperature)
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(f"schedule must be a function step -> temperature; got {self.schedule!r}.")

    def validate(self, model, data) -> None:
        check_e_step(self, model, option="temperature")

    def temperature(self, step: Array) -> Array:
        """The temperature of the E-step after ``step`` steps (``T(0)`` at ``init``)."""
        if self.schedule is not None:
            return jnp.maximum(jnp.asarray(self.schedule(step), jnp.result_type(float)), 1.0)
        level = jnp.asarray(step) // self.steps_per_temperature
        return jnp.maximum(self.initial_temperature * self.cooling ** level.astype(jnp.result_type(float)), 1.0)

    def init(self, model, params, data, key=None) -> AnnealedEMState:
        zero = jnp.zeros((), jnp.int32)
        t = self.temperature(zero).astype(float_dtype_of(params))
        stats, loglik = data.e_step(model, params, temperature=t)
        objective = model.objective(stats, params, loglik)
        return AnnealedEMState(params, objective, jnp.ones((), objective.dtype), stats, t, t, zero)

    def step(self, model, state: AnnealedEMState, data) -> AnnealedEMState:
        params = model.m_step(state.stats, state.params)
        params = model.refine(state.params, params, data)
        n = state.n_steps + 1
        t = self.temperature(n).astype(state.temperature.dtype)
        stats, loglik = data.e_step(model, params, temperature=t)
        passes = state.n_passes + 1 + model.refine_passes
        return AnnealedEMState(params, model.objective(stats, params, loglik), passes, stats, t, state.temperature, n)

    def can_stop(self, state: AnnealedEMState) -> Array:
        # Both the statistics behind the parameters and the new ones at T = 1: the
        # first step at T = 1 still maximised tempered statistics.
        return (state.fitted_temperature <= 1.0) & (state.temperature <= 1.0)
