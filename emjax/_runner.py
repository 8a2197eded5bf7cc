"""The runner: any algorithm on any model, as one compiled program.

One ``lax.while_loop`` iterates an algorithm's ``step`` until the objective
changes by less than ``tol`` per point or ``max_iter`` steps have run; random
restarts are a ``vmap`` of the whole fit over split keys. Nothing raises inside
the loop: each restart ends with a status code (as optimistix's ``RESULTS``),
and a step that would produce non-finite values is rejected, so a restart that
fails keeps its last finite parameters and never poisons the others.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from ._checks import as_sample_weights, float_dtype, is_traced
from .data._chunks import default_chunk_size, n_features, n_rows
from .data._memory import Data
from ._model import EMModel
from .data._sharded import row_sharding, shard_rows, with_auto_axes
from .algorithms import Algorithm, BatchEM


class RESULTS:
    """Status codes of a restart (``FitResult.status``)."""

    SUCCESS = 0  #: converged: the objective changed by less than ``tol`` per point.
    MAX_ITER = 1  #: stopped at ``max_iter`` before converging.
    NONFINITE = 2  #: a step produced NaN/inf; the last finite parameters are kept.
    COLLAPSED = 3  #: the parameters reached a likelihood singularity (a collapsed component).
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
        converged: ``(R,)`` whether the ``tol`` criterion was met.
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


def _all_finite(state) -> Array:
    leaves = [jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _select(pred: Array, on_true, on_false):
    """Per restart: ``on_true`` where ``pred`` ``(R,)`` holds, else ``on_false``."""

    def pick(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def _print_progress(it, objective, n_points, active, every):
    for r in range(objective.shape[0]):
        if active[r] and int(it[r]) % every == 0:
            print(
                f"restart {r:3d}  iter {int(it[r]):5d}  objective {float(objective[r]):.8g}"
                f"  per point {float(objective[r]) / float(n_points):.8g}",
                flush=True,
            )


def _reinitialized(model, algorithm, data, state, keys, collapsed):
    """Every restart's state after re-initialising its collapsed components
    (``model.reinitialize``) and restarting the algorithm from there."""

    def one(state, key, mask):
        params = model.reinitialize(key, state.params, data.x, mask)
        fresh = algorithm.init(model, params, data, key)
        return eqx.tree_at(lambda s: s.n_passes, fresh, state.n_passes + fresh.n_passes)

    return jax.vmap(one)(state, keys, collapsed)


def _run(model, algorithm, data, params0, keys, max_iter, tol, verbose, print_every, reinit_collapsed):
    """All restarts in one ``lax.while_loop`` over ``vmap``-ped steps.

    Looping over the batch (rather than ``vmap`` of a loop per restart, which XLA
    runs the same way) keeps decisions that concern any restart unbatched: the
    re-initialisation of collapsed components is a real ``lax.cond``, paid only
    on the steps where some restart needs it.
    """
    n_restarts = keys.shape[0]
    algorithm_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
    remedy_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
    state = jax.vmap(lambda p, k: algorithm.init(model, p, data, k))(params0, algorithm_keys)
    init_ok = jax.vmap(_all_finite)(state)
    n_points = data.n_points
    threshold = tol * n_points
    detect = jax.vmap(lambda p: model.collapsed(p, data.x)) if hasattr(model, "collapsed") else None
    if reinit_collapsed and (detect is None or not hasattr(model, "reinitialize")):
        raise TypeError(
            f"reinit_collapsed needs model.collapsed(params, x) and model.reinitialize(key, params, x, mask); "
            f"{type(model).__name__} lacks them."
        )
    zeros = jnp.zeros((n_restarts,), jnp.int32)
    false = jnp.zeros((n_restarts,), bool)
    trace = jnp.broadcast_to(state.objective[:, None], (n_restarts, max_iter + 1))
    if verbose:
        jax.debug.callback(_print_progress, zeros, state.objective, n_points, init_ok, print_every)

    def cond(carry):
        _, i, _, done, _, _, _ = carry
        return jnp.any(~done & (i < max_iter))

    def body(carry):
        state, i, trace, done, converged, nonfinite, n_collapses = carry
        active = ~done & (i < max_iter)
        new = jax.vmap(lambda s: algorithm.step(model, s, data))(state)
        ok = jax.vmap(_all_finite)(new)
        take = active & ok
        step_converged = take & (jnp.abs(new.objective - state.objective) < threshold)
        state = _select(take, new, state)
        if detect is not None:
            collapsed = detect(state.params) & take[:, None]
            hit = jnp.any(collapsed, axis=1)
            n_collapses = n_collapses + hit
            if reinit_collapsed:
                step_keys = jax.vmap(jax.random.fold_in)(remedy_keys, i)
                state = jax.lax.cond(
                    jnp.any(hit),
                    lambda s: _select(hit, _reinitialized(model, algorithm, data, s, step_keys, collapsed), s),
                    lambda s: s,
                    state,
                )
                step_converged = step_converged & ~hit
        i = i + take
        trace = trace.at[jnp.arange(n_restarts), i].set(state.objective)
        if verbose:
            jax.debug.callback(_print_progress, i, state.objective, n_points, take, print_every)
        done = done | step_converged | (active & ~ok)
        return state, i, trace, done, converged | step_converged, nonfinite | (active & ~ok), n_collapses

    carry = (state, zeros, trace, ~init_ok, false, false, zeros)
    state, n_iter, trace, _, converged, nonfinite, n_collapses = jax.lax.while_loop(cond, body, carry)
    trace = jnp.where(jnp.arange(max_iter + 1)[None, :] <= n_iter[:, None], trace, state.objective[:, None])

    collapsed = detect(state.params) if detect is not None else None
    status = jnp.where(converged, RESULTS.SUCCESS, RESULTS.MAX_ITER)
    status = jnp.where(nonfinite, RESULTS.NONFINITE, status)
    if collapsed is not None:
        status = jnp.where(jnp.any(collapsed, axis=1), RESULTS.COLLAPSED, status)
    status = jnp.where(init_ok, status, RESULTS.INIT_FAILED)
    return state, trace, n_iter, converged, status, collapsed, n_collapses


def _initial_params(model, key, x, init):
    if isinstance(init, str):
        return model.init(key, x, init)
    return init(key, x)


@eqx.filter_jit
def _fit_compiled(model, algorithm, data, keys, init, explicit, max_iter, tol, verbose, print_every, reinit_collapsed):
    if explicit is None:
        params0 = jax.vmap(lambda k: _initial_params(model, k, data.x, init))(keys)
    else:
        params0 = explicit
    state, trace, n_iter, converged, status, collapsed, n_collapses = _run(
        model, algorithm, data, params0, keys, max_iter, tol, verbose, print_every, reinit_collapsed
    )
    best = best_restart(status, state.objective)
    return FitResult(
        params=jax.tree.map(lambda a: a[best], state.params),
        restart_params=state.params,
        objective=state.objective,
        trace=trace,
        n_iter=n_iter,
        n_passes=state.n_passes,
        converged=converged,
        status=status,
        collapsed=collapsed,
        n_collapses=n_collapses,
        best=best,
        n_points=data.n_points,
    )


def _check_key(key):
    if key is None:
        raise TypeError("fit needs an explicit PRNG key, e.g. key=jax.random.key(0).")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key; got a batch of shape {key.shape}.")
        return key
    arr = key if is_traced(key) else np.asarray(key)
    if arr.shape != (2,) or arr.dtype != np.uint32:
        raise TypeError("key must be a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed).")
    return jnp.asarray(key)


def fit(
    model: EMModel,
    x,
    *,
    key,
    algorithm: Algorithm | None = None,
    n_restarts: int = 1,
    init: str | Callable | Any = "kmeans",
    max_iter: int = 100,
    tol: float = 1e-6,
    weights=None,
    chunk_size: int | None = None,
    verbose: bool = False,
    print_every: int = 10,
    reinit_collapsed: bool = False,
    throw: bool = True,
) -> FitResult:
    """Fit ``model`` to ``x``: one compiled program for all restarts.

    Args:
        model: an EMModel (e.g. :class:`emjax.Mixture`).
        x: the data, ``(N, D)`` for mixtures (a pytree with leading axis ``N``
            for user-defined models). A ``jax.Array`` whose ``NamedSharding``
            splits the rows over devices stays there: it is checked on the
            devices, each device runs the E-step on its own rows and the
            statistics are summed across devices (also across processes under
            ``jax.distributed``); the parameters are replicated.
        key: PRNG key; split into one key per restart.
        algorithm: an :class:`emjax.algorithms.Algorithm`; batch EM by default.
        n_restarts: R, random restarts run together as a ``vmap``.
        init: a method name for ``model.init`` (mixtures: ``"kmeans"``,
            ``"kmeans++"``, ``"random"``, ``"random_resp"``), a function
            ``(key, x) -> params``, explicit initial parameters (then
            ``n_restarts`` must be 1), or a :class:`FitResult` whose restarts
            are all continued (e.g. batch EM polishing a stepwise warm-up).
        max_iter: the most steps per restart; the trace has ``max_iter + 1`` entries.
        tol: stop when the objective changes by less than ``tol`` per point
            (per unit of weight) in one step.
        weights: optional ``(N,)`` non-negative per-point weights, with the
            meaning of repetition counts; placed with the row sharding of a
            sharded ``x``.
        chunk_size: rows per E-step chunk (per device for sharded ``x``); by
            default chosen so no chunk intermediate exceeds about 4 MB on a CPU
            (256 MB on a GPU).
        verbose: print the objective every ``print_every`` iterations while the
            compiled loop runs (a host callback; it slows a GPU fit a little).
        print_every: iterations between progress lines.
        reinit_collapsed: after any step that leaves a component collapsed
            (``model.collapsed``: a variance below ``collapse_tol`` times the
            data's, or an effective count below ``collapse_count``), give it a
            random data point as its location and the data's spread
            (``model.reinitialize``), restart the algorithm there and go on. The
            trace drops at such steps; ``n_collapses`` counts them. The other
            remedies are a prior (MAP-EM) and a larger ``reg_covar``.
        throw: raise if every restart failed to start (non-finite initial
            objective). Failures inside the loop never raise: see ``status``.

    Returns:
        A :class:`FitResult`.

    Example:
        >>> model = emjax.Mixture(emjax.Gaussian("full"), n_components=3)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=8)
        >>> result.params.weights, result.status
    """
    for name in ("e_step", "m_step", "log_prior"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must implement {name}(); {type(model).__name__} does not.")
    key = _check_key(key)
    if algorithm is None:
        algorithm = BatchEM()
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be an emjax Algorithm; got {type(algorithm).__name__}.")
    for name, value, low in (("n_restarts", n_restarts, 1), ("max_iter", max_iter, 0), ("print_every", print_every, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0; got {tol}.")

    x = model.validate_data(x) if hasattr(model, "validate_data") else jax.tree.map(jnp.asarray, x)
    n = n_rows(x)
    dtype = jax.tree.leaves(x)[0].dtype
    weights = as_sample_weights(weights, n, dtype if jnp.issubdtype(dtype, jnp.floating) else float_dtype())
    # Rows sharded over devices stay where they are: each device runs the E-step
    # on its own rows (Data.e_step), and the weights follow the rows.
    rows = row_sharding(x)
    if rows is not None:
        mesh, row_axes = rows
        x, mesh = with_auto_axes(x, mesh, row_axes)
        rows = (mesh, row_axes)
        if weights is not None:
            weights = shard_rows(weights, mesh, row_axes)
    if chunk_size is None:
        chunk_size = default_chunk_size(n, getattr(model, "n_components", 1) * n_features(x))
    elif not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")

    algorithm.validate(model, n)

    explicit = None
    if isinstance(init, FitResult):
        # Continue every restart of an earlier fit (e.g. batch EM after a stepwise warm-up).
        n_prev = jax.tree.leaves(init.restart_params)[0].shape[0]
        if n_restarts not in (1, n_prev):
            raise ValueError(f"init is a FitResult with {n_prev} restarts; n_restarts must be 1 or {n_prev}, got {n_restarts}.")
        n_restarts = n_prev
        explicit = init.restart_params
        init = None
    elif not isinstance(init, str) and not callable(init):
        if n_restarts != 1:
            raise ValueError(
                "explicit initial parameters make every restart identical: use n_restarts=1, "
                "or pass init as a method name or a function (key, x) -> params."
            )
        explicit = jax.tree.map(lambda a: jnp.asarray(a)[None], init)
        init = None
    elif isinstance(init, str) and not hasattr(model, "init"):
        raise TypeError(f"{type(model).__name__} has no init(); pass initial parameters or a function as init.")
    if explicit is not None:
        if hasattr(model, "validate_params"):
            for r in range(n_restarts):
                model.validate_params(jax.tree.map(lambda a: a[r], explicit), x)
        param_dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else float_dtype()
        explicit = jax.tree.map(
            lambda a: jnp.asarray(a, param_dtype) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a,
            explicit,
        )

    data = Data(x, weights, int(chunk_size)) if rows is None else Data(x, weights, int(chunk_size), *rows)
    keys = jax.random.split(key, n_restarts)
    result = _fit_compiled(
        model, algorithm, data, keys, init, explicit, int(max_iter), float(tol), bool(verbose), int(print_every),
        bool(reinit_collapsed),
    )
    if throw and not is_traced(result.status):
        status = np.asarray(result.status)
        if np.all(status == RESULTS.INIT_FAILED):
            raise RuntimeError(
                "every restart started from parameters with a non-finite objective; "
                "check the initial parameters, or use a prior or a larger reg_covar."
            )
    return result
