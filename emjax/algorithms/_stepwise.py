"""Stepwise (online) EM: running statistics moved toward each mini-batch's."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_bool, check_int, check_number
from .._model import add_stats, scale_stats
from ._base import Algorithm, AlgorithmState, check_no_refine
from ._shuffle import minibatch


def step_size(k: Array, kappa: float) -> Array:
    """``eta_k = (k + 2) ** -kappa``, the stepwise-EM step size of update ``k`` (from 0).

    ``0.5 < kappa <= 1`` makes ``sum eta = inf`` and ``sum eta^2 < inf``, the
    Robbins-Monro conditions under which stepwise EM converges.
    """
    return (jnp.asarray(k) + 2.0) ** (-kappa)


def stepwise_update(running: Any, batch_stats: Any, scale: Array, eta: Array) -> Any:
    """``(1 - eta) * running + eta * scale * batch_stats``.

    Args:
        running: running statistics, on the scale of the whole data set (so the
            M-step, priors included, sees them as full-data statistics).
        batch_stats: the mini-batch's statistics at the current parameters.
        scale: full-data size over mini-batch size (N / m, or total weight over
            the mini-batch's expected weight), so ``scale * batch_stats``
            estimates the full-data statistics.
        eta: step size in ``(0, 1]``.

    Returns:
        The new running statistics. The new batch's statistics are the left
        operand, so statistics kept about an expansion point move to the current one.
    """
    return add_stats(scale_stats(batch_stats, eta * scale), scale_stats(running, 1.0 - eta))


class StepwiseEMState(AlgorithmState):
    """Stepwise EM state.

    Attributes:
        stats: running statistics on the scale of the whole data set, including
            the latest mini-batch (computed at ``params``).
        key: the key that chooses each epoch's shuffle.
        n_updates: mini-batch updates done so far.
    """

    stats: Any
    key: Array
    n_updates: Array


class StepwiseEM(Algorithm):
    """Stepwise (online) EM (Sato & Ishii, 2000; Cappe & Moulines, 2009; Liang & Klein, 2009).

    Each update draws a mini-batch of ``batch_size`` rows, moves the running
    statistics toward the mini-batch's (scaled to the whole data set) with step
    size ``eta_k = (k + 2) ** -kappa``, then does an M-step. Mini-batches walk a
    fresh pseudo-random permutation of the rows each epoch (``N // batch_size``
    updates), drawn from the key inside the compiled loop, so the fit stays one
    program and ``vmap``s over restarts.

    One runner iteration (one trace entry) is ``updates_per_step`` updates
    followed by one evaluation of the full-data objective at the new parameters;
    the evaluation is monitoring and is not counted in ``n_passes``, which counts
    the rows the updates read. ``tol`` compares consecutive evaluations.

    The running statistics start as the full-data statistics at the initial
    parameters (the pass that evaluates the initial objective), so the first
    update follows a batch EM M-step.

    To polish a stepwise warm-up with batch EM, continue from its result:
    ``emjax.fit(model, x, key=key, init=warm, algorithm=emjax.BatchEM())``.

    Args:
        batch_size: rows per mini-batch (``m``).
        kappa: step-size exponent, ``0.5 < kappa <= 1``; smaller forgets faster.
        updates_per_step: updates between evaluations of the objective (default
            one epoch, ``N // batch_size``).
        shuffle: draw each epoch's mini-batches from a fresh permutation of the
            rows (default); ``False`` takes them in the order of the rows (a
            stream read forward needs it; shuffle the rows beforehand).

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> algo = emjax.StepwiseEM(batch_size=64, kappa=0.7)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo, max_iter=5)
        >>> result.trace.shape, round(float(result.n_passes[0]), 2)   # objective per epoch, passes read
        ((1, 6), 5.71)
    """

    batch_size: int = eqx.field(static=True, default=1000)
    kappa: float = eqx.field(static=True, default=0.7)
    updates_per_step: int | None = eqx.field(static=True, default=None)
    shuffle: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_int("batch_size", self.batch_size)
        check_number("kappa", self.kappa, low=0.5, high=1.0, low_open=True)  # Robbins-Monro step sizes
        if self.updates_per_step is not None:
            check_int("updates_per_step", self.updates_per_step)
        check_bool("shuffle", self.shuffle)

    def validate(self, model, data) -> None:
        check_no_refine(self, model)
        check_batches(self, data)

    def init(self, model, params, data, key) -> StepwiseEMState:
        stats, loglik = data.e_step(model, params)
        objective = model.objective(stats, params, loglik)
        return StepwiseEMState(params, objective, jnp.ones((), objective.dtype), stats, key, jnp.zeros((), jnp.int32))

    def step(self, model, state: StepwiseEMState, data) -> StepwiseEMState:
        n = data.n_rows
        m = self.batch_size
        n_updates = self.updates_per_step or n // m

        def update(j, carry):
            params, stats = carry
            u = state.n_updates + j
            params = model.m_step(stats, params)
            batch = minibatch(data, state.key, u, m, self.shuffle)
            # Rows are drawn uniformly, so (n / m) x the batch's statistics
            # estimates the full data's, weighted or not.
            batch_stats, _ = batch.e_step(model, params)
            return params, stepwise_update(stats, batch_stats, n / m, step_size(u, self.kappa))

        params, stats = jax.lax.fori_loop(0, n_updates, update, (state.params, state.stats))
        objective = data.objective(model, params)
        n_passes = state.n_passes + n_updates * m / n
        return StepwiseEMState(params, objective, n_passes, stats, state.key, state.n_updates + n_updates)


def check_batches(algorithm, data) -> None:
    """Raise before compiling if ``algorithm``'s mini-batches (``batch_size``,
    ``shuffle``) cannot be read from ``data``."""
    if algorithm.batch_size > data.n_rows:
        raise ValueError(f"batch_size ({algorithm.batch_size}) exceeds the number of rows ({data.n_rows}).")
    if algorithm.shuffle and not data.random_access:
        raise ValueError(
            f"{type(algorithm).__name__} draws shuffled mini-batches, but the data are a stream read in order "
            "(a function source): pass shuffle=False to take mini-batches in the order of the rows."
        )
