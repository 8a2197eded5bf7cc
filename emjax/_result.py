"""What a fit returns: the status codes of its restarts and the :class:`FitResult`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax import Array


class RESULTS:
    """Status codes of a restart (``FitResult.status``)."""

    SUCCESS = 0  #: converged: the stopping rule held (by default, the objective changed by less than ``tol`` per point).
    MAX_ITER = 1  #: stopped at ``max_iter`` before converging.
    NONFINITE = 2  #: a step produced NaN/inf; the last finite parameters are kept.
    COLLAPSED = 3  #: a component collapsed onto a likelihood singularity (also when that made the step non-finite).
    INIT_FAILED = 4  #: the initial parameters already had a non-finite objective.

    MESSAGES = {
        0: "converged",
        1: "reached max_iter without converging",
        2: "stopped: a step produced non-finite values; last finite parameters kept",
        3: "a component collapsed (likelihood singularity); use a prior or a larger reg_covar",
        4: "the initial parameters have a non-finite objective",
    }

    @classmethod
    def message(cls, code: int) -> str:
        return cls.MESSAGES[int(code)]


class FitResult(eqx.Module):
    """The record of a fit with R restarts.

    Attributes:
        params: parameters of the best restart.
        restart_params: parameters of every restart, leading axis ``R``.
        objective: ``(R,)`` final objective (log-likelihood, plus the log prior
            for MAP-EM), summed over points.
        trace: ``(R, max_iter + 1)`` objective at the initial parameters and after
            each step; entries after a restart stopped repeat its final value.
        n_iter: ``(R,)`` steps taken.
        n_passes: ``(R,)`` passes over the data read by the algorithm's updates
            (fractional for stepwise and incremental EM).
        converged: ``(R,)`` whether the stopping rule held.
        status: ``(R,)`` codes from :class:`RESULTS`.
        collapsed: ``(R, K)`` components at a singularity at the end, or ``None``
            when the model cannot tell (it has no ``collapsed`` method).
        n_collapses: ``(R,)`` steps after which a collapsed component was
            detected (each followed by a re-initialisation with
            ``reinit_collapsed=True``); 0 when the model cannot tell.
        best: index of the best restart: the highest final objective among the
            restarts that ended regularly (converged or ``max_iter``), falling back
            to the others only when none did.
        n_points: total weight of the data.
    """

    params: Any
    restart_params: Any
    objective: Array
    trace: Array
    n_iter: Array
    n_passes: Array
    converged: Array
    status: Array
    collapsed: Array | None
    n_collapses: Array
    best: Array
    n_points: Array

    def summary(self) -> str:
        """A few lines on how each restart ended."""
        lines = []
        for r in range(self.objective.shape[0]):
            star = "*" if r == int(self.best) else " "
            lines.append(
                f"{star} restart {r:3d}: objective {float(self.objective[r]):.6f} "
                f"({float(self.objective[r] / self.n_points):.6f} per point), {int(self.n_iter[r])} iterations, "
                f"{RESULTS.message(int(self.status[r]))}"
                + (f"; {int(self.n_collapses[r])} step(s) with a collapsed component" if int(self.n_collapses[r]) else "")
            )
        return "\n".join(lines)


def best_restart(status: Array, objective: Array) -> Array:
    """Index of the best restart: the highest finite objective among those that
    ended regularly (converged or max_iter), else among those that collapsed or
    hit non-finite values, else any."""
    regular = (status == RESULTS.SUCCESS) | (status == RESULTS.MAX_ITER)
    fallback = (status == RESULTS.COLLAPSED) | (status == RESULTS.NONFINITE)
    rank = jnp.where(regular, 0, jnp.where(fallback, 1, 2))
    finite_obj = jnp.where(jnp.isfinite(objective), objective, -jnp.inf)
    score = jnp.where(rank == jnp.min(rank), finite_obj, -jnp.inf)
    return jnp.argmax(score)
