"""``emjax.fit``: normalise the arguments, check everything, pick the loop.

Everything that can be wrong with the arguments is found here, on the host,
before anything is compiled; then :mod:`emjax._iterate` runs the loop: one
compiled program for data in device memory, a host loop for streams.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx

from ._adjoint import Adjoint, ForwardAdjoint
from ._chunks import default_restart_batch
from ._checks import check_bool, check_int, check_key, float_dtype, is_traced
from ._iterate import Problem, map_restarts, run_compiled, run_host
from ._model import EMModel, as_model
from ._result import RESULTS, FitResult
from ._stopping import ObjectiveChange, StoppingRule
from .algorithms import Algorithm, BatchEM
from .data import Data, StreamData, make_data
from .data._stream import DEFAULT_INIT_SIZE, Stream


@eqx.filter_jit
def _fit_compiled(problem: Problem, keys, init, params0) -> FitResult:
    # The data-measured constants (a Gaussian's regularisation scale): one pass, inside the program.
    problem = eqx.tree_at(lambda p: p.model, problem, problem.model.adapt(problem.data))
    if params0 is None:
        # An init method's start is not differentiated (k-means labels, seeding draws):
        # derivatives flow from the data through the iterations.
        sample = jax.lax.stop_gradient(problem.data.sample)
        params0 = map_restarts(lambda k: problem.model.init(k, sample, init), (keys,), problem.restart_batch)
    return run_compiled(problem, params0, keys)


@eqx.filter_jit
def _start(model, data, keys, init: str, batch: int):
    """Every restart's start from the init method ``init`` on in-memory ``data``, with
    the data-measured constants set: a program of its own, so that the k-means
    seeding's compilation and temporaries are freed before the fit's begin (one
    program holding both peaked at 1.9x the data's size on 5,000,000 x 8 float32 rows
    with the k-means start, apart 1.6x)."""
    model = model.adapt(data)
    return map_restarts(lambda k: model.init(k, data.sample, init), (keys,), batch)


#: Data of at least this many bytes start in a program of their own (:func:`_start`).
SEPARATE_START_BYTES = 32 * 2**20


def _separate_start(data) -> bool:
    """Whether an init method runs as a program of its own: for concrete data of at
    least :data:`SEPARATE_START_BYTES`, whose peak memory it lowers; smaller data start
    inside the fit's program, which compiles faster than two (a small Gaussian fit's
    first call: 1.7 s against 2.0 s); data under a trace (a fit differentiated or
    vmapped over its data) always do."""
    leaves = jax.tree.leaves(data)
    if any(is_traced(a) for a in leaves):
        return False
    return sum(a.size * a.dtype.itemsize for a in leaves if hasattr(a, "dtype")) >= SEPARATE_START_BYTES


@eqx.filter_jit
def _initial_params(model, keys, sample, init, batch: int):
    if isinstance(init, str):
        return map_restarts(lambda k: model.init(k, sample, init), (keys,), batch)
    return map_restarts(lambda k: init(k, sample), (keys,), batch)


#: The largest ``max_iter``: the loop counts iterations in int32, and the trace holds ``max_iter + 1`` entries.
MAX_ITER = 2**31 - 2


def _check_tol(tol):
    if is_traced(tol) and jnp.ndim(tol) == 0 and jnp.issubdtype(jnp.result_type(tol), jnp.floating):
        return tol  # a traced scalar (a fit vmapped or jitted over tol): its value cannot be checked
    if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.integer, np.floating)):
        raise TypeError(f"tol must be a number; got {tol!r}.")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0; got {tol}.")
    return float(tol)


def _as_params(model, params, data: Data, n_restarts: int, dtype):
    """Initial parameters with a leading restart axis, checked and in the data's float dtype.

    ``params`` already has the restart axis. Each restart's parameters are
    checked with ``model.validate_params`` (on concrete values), and floating
    leaves are cast to ``dtype``: a float64 leaf among float32 data would
    otherwise change the loop's carry type.
    """
    params = jax.tree.map(jnp.asarray, params)
    leaves = jax.tree.leaves(params)
    if any(a.ndim == 0 or a.shape[0] != n_restarts for a in leaves):
        raise ValueError(f"initial parameters must have one set per restart ({n_restarts}).")
    if not any(is_traced(a) for a in leaves):
        for r in range(n_restarts):
            try:
                model.validate_params(jax.tree.map(lambda a: a[r], params), data.sample)
            except (TypeError, ValueError) as e:
                where = f"the initial parameters of restart {r}" if n_restarts > 1 else "the initial parameters"
                raise type(e)(f"{where}: {e}") from None
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, params)


def fit(
    model: EMModel,
    x,
    *,
    key,
    algorithm: Algorithm | None = None,
    n_restarts: int = 1,
    init: str | Callable | Any = "default",
    max_iter: int = 100,
    tol: float = 1e-6,
    stopping: StoppingRule | None = None,
    weights=None,
    chunk_size: int | None = None,
    adjoint: Adjoint | None = None,
    verbose: bool = False,
    print_every: int = 10,
    reinit_collapsed: bool = False,
    throw: bool = True,
    restart_batch_size: int | None = None,
) -> FitResult:
    """Fit ``model`` to ``x``: one compiled program for all restarts.

    Args:
        model: an EMModel (e.g. :class:`emjax.Mixture`).
        x: the data, ``(N, D)`` for mixtures (a pytree with leading axis ``N``
            for user-defined models): real numbers (bool, int or float; float
            data keep their precision, but float16 and bfloat16 data are
            converted to float32, the least EM runs in); strings, objects,
            dates and complex numbers are refused. A ``jax.Array`` whose ``NamedSharding``
            splits the rows over devices stays there: it is checked on the
            devices, each device runs the E-step on its own rows and the
            statistics are summed across devices (also across processes under
            ``jax.distributed``); the parameters are replicated. Data larger
            than device memory: an :class:`emjax.Stream`, a ``.npy`` path, an
            ``np.memmap``, a list of chunks or a function returning an
            iterable of chunks, read from the host in chunks on every pass
            (the loop is then a host loop; every algorithm works the same).
            Or any :class:`emjax.data.Data`.
        key: PRNG key; split into one key per restart.
        algorithm: an :class:`emjax.algorithms.Algorithm`; batch EM by default.
        n_restarts: R, random restarts, independent fits in one program (see
            ``restart_batch_size``); the result holds them all and picks the best.
        init: a method name for ``model.init`` (mixtures: ``"kmeans"``,
            ``"kmeans++"``, ``"random"``, ``"random_resp"``; :class:`emjax.KMeans`:
            ``"k-means++"``, ``"random"``), ``"default"`` (the model's first: a
            mixture's ``"kmeans"``, k-means' ``"k-means++"``), a function
            ``(key, x) -> params``, explicit initial parameters (then
            ``n_restarts`` must be 1), or a :class:`FitResult` whose restarts
            are all continued (e.g. batch EM polishing a stepwise warm-up).
        max_iter: the most steps per restart, at most ``2**31 - 2`` (iterations
            are counted in int32); the trace has ``max_iter + 1`` entries.
        tol: the stopping rule's tolerance; by default stop when the objective
            changes by less than ``tol`` per point (per unit of weight) in one
            step. A traced value: fitting again with another ``tol`` does not
            compile again, and ``tol`` may itself be a traced float scalar
            (``jax.jit`` or ``jax.vmap`` over it).
        stopping: a :class:`emjax.StoppingRule`: ``ObjectiveChange()`` (the
            default, unless the model names its own: ``CenterShift()`` for
            :class:`emjax.KMeans`), ``RelativeChange()``, ``ParameterChange()`` or
            ``ResponsibilityChange()`` (Smyth's rule).
        weights: optional ``(N,)`` non-negative per-point weights, with the
            meaning of repetition counts; placed with the row sharding of a
            sharded ``x``.
        chunk_size: rows per E-step chunk (per device for sharded ``x``; rows
            read per chunk for a stream); by default chosen so no chunk
            intermediate exceeds about 4 MB on a CPU (256 MB on a GPU).
        adjoint: how derivatives flow through the fit: :class:`emjax.ForwardAdjoint`
            (the default: ``jax.jvp`` through the iterations taken),
            :class:`emjax.ImplicitAdjoint` (forward and reverse mode, the
            derivative of EM's fixed point; nothing stored per iteration) or
            :class:`emjax.RecursiveCheckpointAdjoint` (forward and reverse mode
            through the iterations taken, checkpointed). A start from an init
            method is never differentiated.
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
        restart_batch_size: how many restarts run together as one ``vmap``;
            groups run one after another. ``None`` (the default) chooses as the
            chunk size is chosen: as many as keep a chunk's intermediates times
            the group size within about 4 MB on a CPU (256 MB on a GPU), so
            restarts on large data run one at a time on a CPU and many restarts
            on small data run as one ``vmap``. With ``1`` each restart's step is
            traced unbatched and skipped once that restart has finished. The
            results do not depend on it beyond rounding.

    Returns:
        A :class:`FitResult`.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()   # (272, 2)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), n_components=2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=4)
        >>> print(np.sort(np.asarray(result.params.weights).round(3)))   # the best restart's
        [0.356 0.644]
        >>> print(result.status, result.converged)             # one per restart
        [0 0 0 0] [ True  True  True  True]
    """
    model = as_model(model)
    key = check_key(key, "key")
    algorithm = BatchEM() if algorithm is None else algorithm
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be an emjax Algorithm; got {type(algorithm).__name__}.")
    if stopping is None:
        stopping = model.default_stopping() or ObjectiveChange()
    if not isinstance(stopping, StoppingRule):
        raise TypeError(f"stopping must be an emjax StoppingRule, e.g. emjax.RelativeChange(); got {stopping!r}.")
    adjoint = ForwardAdjoint() if adjoint is None else adjoint
    if not isinstance(adjoint, Adjoint):
        raise TypeError(f"adjoint must be an emjax Adjoint, e.g. emjax.ForwardAdjoint(); got {adjoint!r}.")
    n_restarts = check_int("n_restarts", n_restarts, 1)
    max_iter = check_int("max_iter", max_iter, 0, MAX_ITER)
    if restart_batch_size is not None:
        restart_batch_size = check_int("restart_batch_size", restart_batch_size, 1)
    print_every = check_int("print_every", print_every, 1)
    tol = _check_tol(tol)
    # A string such as "no" would be truthy: flags must be booleans.
    reinit_collapsed = check_bool("reinit_collapsed", reinit_collapsed)
    verbose = check_bool("verbose", verbose)
    throw = check_bool("throw", throw)
    stopping.validate(model)
    if reinit_collapsed and not (model.provides("collapsed") and model.provides("reinitialize")):
        raise TypeError(
            f"reinit_collapsed needs model.collapsed(params, x) and model.reinitialize(key, params, x, mask); "
            f"{type(model).__name__} lacks them."
        )

    previous = None
    if isinstance(init, FitResult):
        # Continue every restart of an earlier fit (e.g. batch EM after a stepwise warm-up).
        previous = init.restart_params
        n_prev = jax.tree.leaves(previous)[0].shape[0]
        if n_restarts not in (1, n_prev):
            raise ValueError(f"init is a FitResult with {n_prev} restarts; n_restarts must be 1 or {n_prev}, got {n_restarts}.")
        n_restarts = n_prev
    elif isinstance(init, str):
        if init == "default" and model.init_methods:
            init = model.init_methods[0]
        if init not in model.init_methods:
            methods = model.init_methods
            raise ValueError(
                f"unknown init method {init!r}; {type(model).__name__} knows {methods}."
                if methods else
                f"{type(model).__name__} has no init methods; pass initial parameters or a function (key, x) -> params."
            )
    elif not callable(init) and not jax.tree.leaves(init):
        # None (or an empty pytree) would reach model.init inside the compiled program.
        raise TypeError(
            f"init must be a method name such as 'kmeans', a function (key, x) -> params, initial parameters "
            f"or a FitResult; got {init!r}."
        )
    elif not callable(init) and n_restarts != 1:
        raise ValueError(
            "explicit initial parameters make every restart identical: use n_restarts=1, "
            "or pass init as a method name or a function (key, x) -> params."
        )

    data = make_data(model, x, weights=weights, chunk_size=chunk_size, key=key)
    algorithm.validate(model, data)
    adjoint.validate(model, algorithm, data)
    sample_dtype = jax.tree.leaves(data.sample)[0].dtype
    dtype = sample_dtype if jnp.issubdtype(sample_dtype, jnp.floating) else float_dtype()
    keys = jax.random.split(key, n_restarts)
    if restart_batch_size is None:
        rows = getattr(data, "chunk_size", None) or data.n_rows
        restart_batch_size = default_restart_batch(min(rows, data.n_rows), model.row_width(data.sample), n_restarts)
    host = isinstance(data, StreamData)
    if host:
        # Data-measured constants (a Gaussian's regularisation scale): one pass over
        # the stream now; device data measure them inside the compiled fit.
        model = model.adapt(data)

    params0 = None
    if previous is not None:
        params0 = previous
    elif callable(init) and not isinstance(init, str):
        params0 = _initial_params(model, keys, data.sample, init, restart_batch_size)
    elif not isinstance(init, str):
        params0 = jax.tree.map(lambda a: jnp.asarray(a)[None], init)
    elif host:
        params0 = _initial_params(model, keys, data.sample, init, restart_batch_size)
    if params0 is not None:
        params0 = _as_params(model, params0, data, n_restarts, dtype)
    elif _separate_start(data):
        params0 = _start(model, data, keys, init, min(restart_batch_size, n_restarts))

    problem = Problem(
        model=model,
        algorithm=algorithm,
        data=data,
        stopping=stopping,
        adjoint=adjoint,
        tol=jnp.asarray(tol, dtype),
        remedy_keys=jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys),
        max_iter=max_iter,
        reinit_collapsed=bool(reinit_collapsed),
        verbose=bool(verbose),
        print_every=print_every,
        restart_batch=min(restart_batch_size, n_restarts),
    )
    if host:
        result = run_host(problem, params0, keys)
    else:
        result = _fit_compiled(problem, keys, init if params0 is None else None, params0)
    if throw and not is_traced(result.status):
        status = np.asarray(result.status)
        if np.all(status == RESULTS.INIT_FAILED):
            raise RuntimeError(
                "every restart started from parameters with a non-finite objective; "
                "check the initial parameters, or use a prior or a larger reg_covar."
            )
    return result


def fit_chunks(model, source, *, chunk_size: int | None = None, init_size: int = DEFAULT_INIT_SIZE,
               progress: bool | None = None, weights=None, **kwargs) -> FitResult:
    """:func:`fit` on a host stream: ``fit(model, Stream(source, ...), **kwargs)``.

    Kept for code written before :func:`fit` accepted streams; see
    :class:`emjax.Stream` for the sources and options.

    Example:
        >>> import os, tempfile
        >>> x, _ = emjax.datasets.old_faithful()
        >>> path = os.path.join(tempfile.mkdtemp(), "points.npy")
        >>> np.save(path, x)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit_chunks(model, path, key=jax.random.key(0), chunk_size=100)
        >>> print(round(float(result.objective[0]), 2), int(result.n_passes[0]))   # passes over the file
        -1130.27 6
    """
    stream = Stream(source, weights=weights, chunk_size=chunk_size, init_size=init_size, progress=progress)
    return fit(model, stream, **kwargs)
