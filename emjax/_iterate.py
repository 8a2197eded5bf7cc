"""The one loop: any algorithm over any data, its restarts as a batch.

:func:`start`, :func:`body` and :func:`finish` are the whole of it. On device
data (in memory or sharded) they run as one compiled program, the loop a
loop the adjoint chooses (:func:`run_compiled`); on a host
stream the same three are compiled separately and a host loop calls
:func:`body` once per iteration (:func:`run_host`), so a long pass reports
progress and can be interrupted. Either way the algorithm's ``init``/``step``,
the acceptance of steps, the stopping rule and the status codes are the same.

Nothing raises inside the loop: a step that produces non-finite values is
rejected and its restart stops with ``NONFINITE`` (or ``COLLAPSED`` when a
collapsed component made it so), keeping its last finite state; restarts never
poison one another. The loop runs over steps of all restarts (not ``vmap`` of
a loop per restart, which XLA runs the same way), so decisions about any
restart stay unbatched: the re-initialisation of collapsed components is a real
``lax.cond``, paid only on steps where some restart needs it.

How the restarts of one step run is :func:`map_restarts`'s choice, by
``Problem.restart_batch``: all together as one ``vmap`` (the default) or in
groups of that many, one group after another (bounded memory, and one at a
time a restart that has finished skips its step).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from ._result import RESULTS, FitResult, best_restart


class Problem(eqx.Module):
    """Everything the loop needs besides its state.

    Attributes:
        model, algorithm, data, stopping: the EMModel, the Algorithm, the
            :class:`emjax.data.Data` and the stopping rule.
        adjoint: how derivatives flow through the loop.
        tol: the stopping rule's tolerance (traced: another value does not recompile).
        remedy_keys: ``(R,)`` keys for re-initialising collapsed components.
        max_iter, reinit_collapsed, verbose, print_every: as :func:`emjax.fit`'s.
        restart_batch: restarts run together as one ``vmap`` (see
            :func:`map_restarts`); ``R`` runs them all at once.
    """

    model: Any
    algorithm: Any
    data: Any
    stopping: Any
    adjoint: Any
    tol: Array
    remedy_keys: Array
    max_iter: int = eqx.field(static=True)
    reinit_collapsed: bool = eqx.field(static=True)
    verbose: bool = eqx.field(static=True)
    print_every: int = eqx.field(static=True)
    restart_batch: int = eqx.field(static=True)


def map_restarts(fn, args: tuple, batch: int):
    """``fn(*args_r)`` for every restart ``r``, stacked: ``args`` are pytrees whose
    leaves have a leading restart axis ``R``.

    One restart is one unbatched call. ``batch >= R`` is ``jax.vmap(fn)(*args)``;
    ``batch == 1`` runs the restarts one after another (a ``lax.map``, so ``fn``
    is traced unbatched and a ``lax.cond`` in it skips work); in between, groups
    of ``batch`` restarts are ``vmap``-ped one group after another (``lax.map``'s
    ``batch_size``).
    """
    r = jax.tree.leaves(args)[0].shape[0]
    if r == 1:  # one restart: traced unbatched, as a plain fit
        out = fn(*jax.tree.map(lambda a: a[0], args))
        return jax.tree.map(lambda a: jnp.asarray(a)[None], out)
    if batch >= r:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), args, batch_size=None if batch == 1 else batch)


class LoopState(eqx.Module):
    """The loop's carry, every leaf with a leading restart axis ``R``.

    Attributes:
        state: the algorithm's states.
        n_iter: steps taken. trace: ``(R, max_iter + 1)`` objectives.
        done, converged, nonfinite: flags. collapsed_stop: ``(R, K)``
            components whose collapse made a step non-finite (that stopped the
            restart), or ``None`` when the model cannot tell.
        n_collapses: steps after which a collapsed component was detected.
        init_ok: whether the initial state was finite.
    """

    state: Any
    n_iter: Array
    trace: Array
    done: Array
    converged: Array
    nonfinite: Array
    collapsed_stop: Array | None
    n_collapses: Array
    init_ok: Array


def all_finite(tree) -> Array:
    """Whether every floating leaf of ``tree`` is finite (a scalar)."""
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def select(pred: Array, on_true, on_false):
    """Per restart: ``on_true`` where ``pred`` ``(R,)`` holds, else ``on_false``."""

    def pick(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def _detect(problem: Problem, params):
    """``(R, K)`` collapsed components, or ``None`` when the model cannot tell."""
    sample = problem.data.sample
    return jax.vmap(lambda p: problem.model.collapsed(p, sample))(params)


def _print_progress(it, objective, n_points, active, every):
    for r in range(objective.shape[0]):
        if active[r] and int(it[r]) % every == 0:
            print(
                f"restart {r:3d}  iter {int(it[r]):5d}  objective {float(objective[r]):.8g}"
                f"  per point {float(objective[r]) / float(n_points):.8g}",
                flush=True,
            )


def start(problem: Problem, params0, keys) -> LoopState:
    """The loop's state at the initial parameters ``params0`` (leading axis ``R``)."""
    model, algorithm, data = problem.model, problem.algorithm, problem.data
    algorithm_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    state = map_restarts(lambda p, k: algorithm.init(model, p, data, k), (params0, algorithm_keys), problem.restart_batch)
    init_ok = jax.vmap(all_finite)(state)
    r = keys.shape[0]
    zeros, false = jnp.zeros((r,), jnp.int32), jnp.zeros((r,), bool)
    trace = jnp.broadcast_to(state.objective[:, None], (r, problem.max_iter + 1))
    # Only the shape of the collapse test is needed here: nothing is computed.
    collapsed = jax.eval_shape(lambda p: _detect(problem, p), state.params)
    collapsed_stop = None if collapsed is None else jnp.zeros(collapsed.shape, bool)
    if problem.verbose:
        jax.debug.callback(_print_progress, zeros, state.objective, data.n_points, init_ok, problem.print_every)
    return LoopState(state, zeros, trace, ~init_ok, false, false, collapsed_stop, zeros, init_ok)


def running(loop: LoopState, max_iter: int) -> Array:
    """Whether any restart still has steps to take."""
    return jnp.any(~loop.done & (loop.n_iter < max_iter))


def _reinitialized(problem: Problem, state, keys, collapsed):
    """Every restart's state after re-initialising its collapsed components
    (``model.reinitialize``) and restarting the algorithm from there."""
    model, algorithm, data = problem.model, problem.algorithm, problem.data

    def one(state, key, mask):
        params = model.reinitialize(key, state.params, data.sample, mask)
        fresh = algorithm.init(model, params, data, key)
        return eqx.tree_at(lambda s: s.n_passes, fresh, state.n_passes + fresh.n_passes)

    return map_restarts(one, (state, keys, collapsed), problem.restart_batch)


def body(problem: Problem, loop: LoopState) -> LoopState:
    """One step of every unfinished restart: step, accept or reject, test convergence and collapse."""
    model, algorithm, data = problem.model, problem.algorithm, problem.data
    state = loop.state
    active = ~loop.done & (loop.n_iter < problem.max_iter)

    def step(old):
        new = algorithm.step(model, old, data)
        return new, problem.stopping.converged(model, data, old, new, problem.tol) & algorithm.can_stop(new)

    def step_active(old, go):
        # Run one after another, a finished restart skips its step (under vmap both run).
        return jax.lax.cond(go, step, lambda s: (s, jnp.zeros((), bool)), old)

    new, step_converged = map_restarts(step_active, (state, active), problem.restart_batch)
    ok = jax.vmap(all_finite)(new)
    n_collapses, collapsed_stop = loop.n_collapses, loop.collapsed_stop
    stop_collapsed = jnp.zeros_like(active)
    collapsed = _detect(problem, new.params)
    if collapsed is not None:
        # Judged on the step's parameters even when its objective is not finite:
        # a component collapsing onto a point is what usually makes it so.
        collapsed = collapsed & (active & jax.vmap(all_finite)(new.params))[:, None]
        hit = jnp.any(collapsed, axis=1)
        n_collapses = n_collapses + hit
        if problem.reinit_collapsed:
            keys = jax.vmap(jax.random.fold_in)(problem.remedy_keys, loop.n_iter)
            fresh = jax.lax.cond(
                jnp.any(hit), lambda s: _reinitialized(problem, s, keys, collapsed), lambda s: s, new
            )
            new = select(hit, fresh, new)
            ok = jnp.where(hit, jax.vmap(all_finite)(fresh), ok)
            step_converged = step_converged & ~hit
        else:
            stop_collapsed = hit & ~ok
            collapsed_stop = jnp.where(stop_collapsed[:, None], collapsed, collapsed_stop)
    take = active & ok
    state = select(take, new, state)
    n_iter = loop.n_iter + take
    trace = loop.trace.at[jnp.arange(n_iter.shape[0]), n_iter].set(state.objective)
    if problem.verbose:
        jax.debug.callback(_print_progress, n_iter, state.objective, data.n_points, take, problem.print_every)
    step_converged = take & step_converged
    rejected = active & ~ok
    return LoopState(
        state=state,
        n_iter=n_iter,
        trace=trace,
        done=loop.done | step_converged | rejected,
        converged=loop.converged | step_converged,
        nonfinite=loop.nonfinite | (rejected & ~stop_collapsed),
        collapsed_stop=collapsed_stop,
        n_collapses=n_collapses,
        init_ok=loop.init_ok,
    )


def finish(problem: Problem, loop: LoopState) -> FitResult:
    """The :class:`FitResult` of a finished loop."""
    state = loop.state
    n_iter = loop.n_iter
    steps = jnp.arange(problem.max_iter + 1)[None, :]
    trace = jnp.where(steps <= n_iter[:, None], loop.trace, state.objective[:, None])
    collapsed = _detect(problem, state.params)
    status = jnp.where(loop.converged, RESULTS.SUCCESS, RESULTS.MAX_ITER)
    status = jnp.where(loop.nonfinite, RESULTS.NONFINITE, status)
    if collapsed is not None:
        collapsed = collapsed | loop.collapsed_stop
        status = jnp.where(jnp.any(collapsed, axis=1), RESULTS.COLLAPSED, status)
    status = jnp.where(loop.init_ok, status, RESULTS.INIT_FAILED)
    best = best_restart(status, state.objective)
    return FitResult(
        params=jax.tree.map(lambda a: a[best], state.params),
        restart_params=state.params,
        objective=state.objective,
        trace=trace,
        n_iter=n_iter,
        n_passes=state.n_passes,
        converged=loop.converged,
        status=status,
        collapsed=collapsed,
        n_collapses=loop.n_collapses,
        best=best,
        n_points=problem.data.n_points,
    )


def run_compiled(problem: Problem, params0, keys) -> FitResult:
    """The whole fit as one program, run by the adjoint (:mod:`emjax._adjoint`):
    :func:`start`, a loop of :func:`body`, :func:`finish`."""
    return problem.adjoint.run(problem, params0, keys)


_start = eqx.filter_jit(start)
_body = eqx.filter_jit(body)
_finish = eqx.filter_jit(finish)


def run_host(problem: Problem, params0, keys) -> FitResult:
    """The same loop driven from the host: one compiled ``body`` call per iteration."""
    loop = _start(problem, params0, keys)
    while bool(np.asarray(running(loop, problem.max_iter))):
        loop = _body(problem, loop)
    return _finish(problem, loop)
