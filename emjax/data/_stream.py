"""EM over data larger than device memory: statistics accumulated chunk by chunk.

Statistics are additive, so the E-step over N points is the sum of E-steps over
chunks however the points are cut. :func:`fit_chunks` streams the chunks of a
source (an array, a memory-mapped ``.npy`` file, a list of arrays or a function
returning a fresh iterable, e.g. a generator reading a CSV) through the device,
adds their statistics there and makes one M-step per pass: exactly batch EM
(:func:`emjax.fit`), with device memory bounded by a few chunks. With
:class:`emjax.algorithms.StepwiseEM` every chunk makes one stepwise update instead.
:func:`score_chunks` and :func:`predict_chunks` evaluate a fitted model the same way.

The driver is a host loop (it reads files), not one compiled program: each
chunk's E-step for all restarts is one jitted call whose statistics are added
to totals kept on the device. A background thread reads, validates and
transfers the next chunk while the device computes the current one (double
buffering), and pages of a memory-mapped file are released as soon as they were
copied, so resident memory stays at a few chunks whatever the file's size.
"""

from __future__ import annotations

import mmap
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx

from ._chunks import chunked_sum, default_chunk_size, n_features, n_rows
from ..models._mixture import Mixture
from .._model import EMModel, add_stats
from .._runner import RESULTS, FitResult, _all_finite, _check_key, _select, best_restart
from ..algorithms import Algorithm, BatchEM, StepwiseEM
from ..algorithms._stepwise import step_size, stepwise_update

#: Chunks in memory at once: the one computed and the next, read meanwhile.
_PREFETCH_DEPTH = 2
#: Host bytes per chunk when ``chunk_size`` is not given (array and file sources).
_DEFAULT_CHUNK_BYTES = 1 << 25
#: With ``progress=None`` the bar appears once a pass has run this long (on a terminal).
_PROGRESS_DELAY_S = 2.0
_PROGRESS_EVERY_S = 0.2


# -- sources ---------------------------------------------------------------------------


def _release_pages(view: np.ndarray) -> None:
    """Drop the pages under ``view``, a slice of a memory-mapped file, from this
    process's resident set.

    Mapped file pages count toward the process's memory for as long as they stay
    mapped; after a chunk was copied to the device they are not needed, and a
    later pass faults them in again from the page cache. Does nothing where the
    platform or the array cannot tell (not a memmap, no ``madvise``).
    """
    raw = getattr(view, "_mmap", None)
    if raw is None or not hasattr(raw, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or view.size == 0:
        return
    try:
        # The mapping's own address, read from a zero-copy view of it; the slice's
        # pages are found relative to it.
        base = np.frombuffer(raw, np.uint8).ctypes.data
        first = view.ctypes.data - base
        last = first + view.nbytes
        start = first - first % mmap.PAGESIZE
        raw.madvise(mmap.MADV_DONTNEED, start, min(last, len(raw)) - start)
    except (OSError, ValueError, BufferError):
        pass


def _copy_out(view: np.memmap) -> np.ndarray:
    """A memory-mapped chunk copied into process memory, its mapped pages released.

    The copy is 64-byte aligned, which lets a CPU device adopt it without a
    second copy (a plain ``np.array`` copy is only 16-byte aligned).
    """
    raw = np.empty(view.nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    chunk = raw[skip : skip + view.nbytes].view(view.dtype).reshape(view.shape)
    np.copyto(chunk, view)
    _release_pages(view)
    return chunk


def _is_leaf_array(a) -> bool:
    return hasattr(a, "__array__") or (hasattr(a, "shape") and hasattr(a, "dtype"))


class _Source:
    """The chunks of a data source, one fresh pass at a time.

    Args:
        source: an array ``(N, D)`` (NumPy, ``np.memmap`` or JAX), a path to a
            ``.npy`` file (opened memory-mapped), a list or tuple of chunks, a
            zero-argument function returning a fresh iterable of chunks (called
            once per pass) or, with ``reusable=False``, any iterable.
        chunk_size: rows per chunk of an array or file source.
        reusable: whether several passes are needed (then a one-shot iterator is refused).
    """

    def __init__(self, source, chunk_size: int | None, reusable: bool = True):
        if chunk_size is not None and (
            not isinstance(chunk_size, (int, np.integer)) or isinstance(chunk_size, bool) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}.")
        self._array = None
        self._chunks = None
        self._fn = None
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            if not os.path.exists(path):
                raise FileNotFoundError(f"no such data file: {path!r}.")
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{path!r} is not a single .npy array (an .npz archive?); save one array with np.save.")
            source = arr
        if isinstance(source, (np.ndarray, jax.Array)):
            if source.ndim == 0:
                raise ValueError("the data source is a 0-d array; give an (N, D) array.")
            self._array = source
            row_bytes = max(1, source.dtype.itemsize * int(np.prod(source.shape[1:], dtype=np.int64)))
            self.chunk_size = int(chunk_size) if chunk_size is not None else max(1, _DEFAULT_CHUNK_BYTES // row_bytes)
        else:
            if chunk_size is not None:
                raise ValueError(
                    "chunk_size applies to array and .npy sources; a list or a function yields its own chunks."
                )
            self.chunk_size = None
            if isinstance(source, (list, tuple)):
                self._chunks = source
            elif callable(source):
                self._fn = source
            elif isinstance(source, Iterable) and not reusable:
                self._fn = _once(source)
            elif isinstance(source, Iterable):
                raise TypeError(
                    f"a {type(source).__name__} can be read only once, but a fit reads the data once per "
                    "iteration: pass a function that returns a fresh iterable, e.g. "
                    "`lambda: read_chunks(path)`, or a list of arrays."
                )
            else:
                raise TypeError(
                    "the data source must be an (N, D) array, a path to a .npy file, a list of arrays or a "
                    f"function returning an iterable of arrays; got {type(source).__name__}."
                )

    @property
    def n_rows(self) -> int | None:
        """N where it is known without reading the data."""
        return None if self._array is None else int(self._array.shape[0])

    @property
    def n_chunks(self) -> int | None:
        if self._array is not None:
            return -(-self.n_rows // self.chunk_size)
        return len(self._chunks) if self._chunks is not None else None

    def chunks(self) -> Iterator:
        """One pass over the raw chunks. A memory-mapped chunk is copied out and
        its pages released (a device array made from the mapped pages themselves
        may alias them, and computing on it would fault them back in)."""
        if self._array is not None:
            arr, size = self._array, self.chunk_size
            mapped = isinstance(arr, np.memmap)
            for start in range(0, arr.shape[0], size):
                # No local name keeps a chunk alive while the next one is read.
                yield _copy_out(arr[start : start + size]) if mapped else arr[start : start + size]
        else:
            yield from self._chunks if self._chunks is not None else self._fn()

    def rows_sample(self, key, size: int):
        """About ``size`` rows for initialisation, as host data.

        Random rows of an array (drawn without replacement, read in increasing
        order so a memory-mapped file is read forward, one chunk's pages at a
        time); the first rows of other sources. ``None`` for those; use
        :meth:`chunks` and stop after ``size`` rows.
        """
        if self._array is None:
            return None
        arr, n = self._array, self._array.shape[0]
        if n == 0:
            raise ValueError("the data source yielded no rows.")
        if size >= n:
            idx = np.arange(n)
        else:
            seed = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
            idx = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        parts = []
        bounds = np.searchsorted(idx, np.arange(0, n + self.chunk_size, self.chunk_size))
        for b in range(len(bounds) - 1):
            lo, hi = bounds[b], bounds[b + 1]
            if lo == hi:
                continue
            start = b * self.chunk_size
            view = arr[start : start + self.chunk_size]
            parts.append(np.asarray(view[idx[lo:hi] - start]))
            if isinstance(arr, np.memmap):
                _release_pages(view)
        return np.concatenate(parts)


def _once(iterable):
    used = []

    def fresh():
        if used:
            raise RuntimeError("this iterable was already read; pass a function returning a fresh one.")
        used.append(True)
        return iter(iterable)

    return fresh


# -- validation and the prefetch thread ------------------------------------------------


def _chunk_validator(model) -> Callable:
    """Per-chunk host validation: the family's for a mixture (the mixture's own
    also checks N >= K, which a small last chunk need not meet), else the model's."""
    if isinstance(model, Mixture):
        return model.family.validate_data
    if hasattr(model, "validate_data"):
        return model.validate_data
    return lambda x: jax.tree.map(jnp.asarray, x)


class _Layout(NamedTuple):
    """What every chunk must share with the first: pytree structure, trailing shapes, dtypes."""

    treedef: Any
    trailing: tuple
    dtypes: tuple

    @classmethod
    def of(cls, x) -> "_Layout":
        leaves, treedef = jax.tree.flatten(x)
        return cls(treedef, tuple(a.shape[1:] for a in leaves), tuple(a.dtype for a in leaves))


def _describe(layout: _Layout) -> str:
    shapes = ["(rows" + "".join(f", {s}" for s in t) + ")" for t in layout.trailing]
    return shapes[0] if len(shapes) == 1 else "(" + ", ".join(shapes) + ")"


def _prepare(index: int, start: int, raw, validate: Callable, layout: _Layout | None):
    """Check, convert and transfer one chunk; errors name the chunk and its first row."""
    leaves = jax.tree.leaves(raw)
    if not leaves or not all(_is_leaf_array(a) for a in leaves):
        raise TypeError(
            f"chunk {index} is a {type(raw).__name__}, not an array: every chunk must be an array "
            "(N_chunk, D) (a tuple of arrays for pytree data)."
        )
    rows = np.shape(leaves[0])[0] if np.ndim(leaves[0]) else None
    if rows == 0:
        return None
    try:
        x = validate(raw)
    except (TypeError, ValueError) as e:
        raise type(e)(f"chunk {index} (starting at row {start} of the data): {e}") from None
    x = jax.tree.map(jnp.asarray, x)
    if layout is not None:
        got = _Layout.of(x)
        if got.treedef != layout.treedef or got.trailing != layout.trailing:
            raise ValueError(
                f"chunk {index} (starting at row {start} of the data) has shape {_describe(got)}, but the data "
                f"have shape {_describe(layout)}: every chunk needs the same columns."
            )
        # The data dtype is the first chunk's: later chunks follow it.
        x = jax.tree.unflatten(layout.treedef, [a.astype(d) for a, d in zip(jax.tree.leaves(x), layout.dtypes)])
    return x


_ITEM, _END, _ERROR = range(3)


class _Prefetcher:
    """Runs ``produce()`` in a background thread, at most ``depth`` items ahead.

    An item counts until the consumer asks for the next one, so with ``depth=2``
    the thread reads and transfers the next chunk while the current one is
    computed (double buffering), and memory holds two chunks, not the source.
    Iterating yields the items; an exception raised in the thread is re-raised
    in the consumer; ``close()`` (or leaving the ``with`` block) stops the thread
    even if the consumer stopped early, and closes the producing generator there.
    """

    def __init__(self, produce: Callable[[], Iterator], depth: int = _PREFETCH_DEPTH):
        self._queue = queue.SimpleQueue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(produce,), name="emjax-prefetch", daemon=True)
        self._thread.start()

    def _work(self, produce):
        it = None
        try:
            it = iter(produce())
            while True:
                # Wait for a free slot before reading: the read is what costs memory.
                while not self._slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    item = next(it)
                except StopIteration:
                    self._queue.put((_END, None))
                    return
                self._queue.put((_ITEM, item))
                del item
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self._queue.put((_ERROR, e))
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()

    def __iter__(self):
        while True:
            kind, item = self._queue.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise item
            yield item
            # The consumer is done with this item: drop it and let the thread read another.
            item = None
            self._slots.release()

    def close(self):
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Progress:
    """A dependency-free progress line on stderr: pass, chunks, rows/s, elapsed.

    ``show=True`` always; ``None`` only on a terminal and once the pass has run
    for ``_PROGRESS_DELAY_S`` (short passes stay silent); ``False`` never.
    """

    def __init__(self, label: str, n_chunks: int | None, show: bool | None):
        self.label, self.n_chunks, self.show = label, n_chunks, show
        self.t0 = self.last = time.perf_counter()
        self.shown = False

    def _active(self, now) -> bool:
        if self.show is None:
            return sys.stderr.isatty() and now - self.t0 > _PROGRESS_DELAY_S
        return bool(self.show)

    def update(self, chunks: int, rows: int, final: bool = False):
        now = time.perf_counter()
        if not (final or now - self.last >= _PROGRESS_EVERY_S) or not self._active(now):
            return
        self.last = now
        elapsed = max(now - self.t0, 1e-9)
        total = f"/{self.n_chunks}" if self.n_chunks is not None else ""
        sys.stderr.write(
            f"\r{self.label}: {chunks}{total} chunks, {rows:,} rows, {rows / elapsed:,.0f} rows/s, {elapsed:.1f} s"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self, chunks: int, rows: int):
        self.update(chunks, rows, final=True)
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _run_pass(source: _Source, validate, layout, fold: Callable, carry, bar: _Progress):
    """Fold every prepared chunk of one pass into ``carry``; ``(carry, rows)``.

    ``fold`` dispatches device work asynchronously; its result is waited for
    before the next chunk is taken, so one chunk is computed while the prefetch
    thread reads the next ones, and memory stays at a few chunks.
    """
    n_done = rows_done = 0
    with _Prefetcher(lambda: _prepared_chunks(source, validate, layout)) as chunks:
        for x, rows in chunks:
            carry = fold(carry, x)
            del x
            jax.block_until_ready(carry)
            n_done, rows_done = n_done + 1, rows_done + rows
            bar.update(n_done, rows_done)
    bar.close(n_done, rows_done)
    if rows_done == 0:
        raise ValueError("the data source yielded no rows.")
    return carry, rows_done


def _sample(model, source: _Source, key, size: int, validate):
    """The initialisation sample, checked by the model (it needs at least K rows)."""
    raw = source.rows_sample(key, size)
    if raw is None:
        parts = list(_first_chunks(source, validate, size))
        if not parts:
            raise ValueError("the data source yielded no rows.")
        raw = jax.tree.map(lambda *a: jnp.concatenate(a)[:size], *parts)
    if hasattr(model, "validate_data"):
        try:
            return model.validate_data(raw)
        except (TypeError, ValueError):
            # Name the chunk and row of a bad value: check the chunks in turn.
            for _ in _prepared_chunks(source, validate, None):
                pass
            raise
    return jax.tree.map(jnp.asarray, raw)


def _prepared_chunks(source: _Source, validate, layout: _Layout | None):
    """One pass of checked device chunks, ``(x, rows)``, empty ones skipped.

    Every chunk must match ``layout``, or the first chunk's where it is ``None``.
    """
    start = 0
    for index, raw in enumerate(source.chunks()):
        x = _prepare(index, start, raw, validate, layout)
        if x is None:
            continue
        if layout is None:
            layout = _Layout.of(x)
        rows = n_rows(x)
        yield x, rows
        del x, raw
        start += rows


def _first_chunks(source: _Source, validate, size: int):
    rows = 0
    for x, m in _prepared_chunks(source, validate, None):
        yield x
        rows += m
        if rows >= size:
            return


# -- compiled kernels ------------------------------------------------------------------


def _inner_chunk(model, x) -> int:
    """Rows per device-side sub-chunk, so no (chunk, K, D) intermediate is built.

    About the default size, but dividing the chunk evenly where a divisor is
    near: then the sub-chunks are a reshape of the chunk, not a sliced copy.
    """
    rows = n_rows(x)
    target = default_chunk_size(rows, getattr(model, "n_components", 1) * n_features(x))
    first = -(-rows // target)
    for parts in range(first, 2 * first + 1):
        if rows % parts == 0:
            return rows // parts
    return target


@eqx.filter_jit
def _chunk_e_step(model, params, x, inner: int):
    """Every restart's E-step on the shared chunk ``x``: ``(stats, loglik)``, leading axis ``R``."""
    return jax.vmap(lambda p: chunked_sum(lambda xc, _: model.e_step(p, xc), x, None, inner))(params)


@eqx.filter_jit
def _add_totals(total, new):
    # Separate from the E-step: it compiles once, not once per chunk shape.
    return jax.vmap(lambda t, s: (add_stats(t[0], s[0]), t[1] + s[1]))(total, new)


@eqx.filter_jit
def _stepwise_chunk(model, params, running, active, x, k, n_total, kappa, inner: int):
    """One stepwise update per restart from chunk ``x``, in StepwiseEM's order: an
    M-step from the running statistics, the chunk's statistics at the new
    parameters, the running statistics moved toward them. Stopped restarts keep theirs."""
    eta = step_size(k, kappa)
    scale = n_total / n_rows(x)

    def one(p, run):
        new_p = model.m_step(run, p)
        stats, _ = chunked_sum(lambda xc, _: model.e_step(new_p, xc), x, None, inner)
        return new_p, stepwise_update(run, stats, scale, eta)

    new_params, new_running = jax.vmap(one)(params, running)
    return _select(active, new_params, params), _select(active, new_running, running)


@eqx.filter_jit
def _m_step(model, stats, params):
    return jax.vmap(model.m_step)(stats, params)


@eqx.filter_jit
def _initial_params(model, keys, sample, init):
    if isinstance(init, str):
        return jax.vmap(lambda k: model.init(k, sample, init))(keys)
    return jax.vmap(lambda k: init(k, sample))(keys)


class _Restarts(eqx.Module):
    """The host loop's state of R restarts (leading axis ``R`` everywhere).

    ``stats`` travel with ``params``: the full-data statistics at them for batch
    EM (the next M-step's input), the running statistics for stepwise EM.
    """

    params: Any
    stats: Any
    objective: jax.Array
    trace: jax.Array
    n_iter: jax.Array
    done: jax.Array
    converged: jax.Array
    nonfinite: jax.Array
    n_collapses: jax.Array
    init_ok: jax.Array


@eqx.filter_jit
def _start(model, params, stats, loglik, max_iter: int) -> _Restarts:
    objective = loglik + jax.vmap(model.log_prior)(params)
    ok = jax.vmap(_all_finite)((params, objective, stats))
    r = objective.shape[0]
    zeros, false = jnp.zeros((r,), jnp.int32), jnp.zeros((r,), bool)
    trace = jnp.broadcast_to(objective[:, None], (r, max_iter + 1))
    return _Restarts(params, stats, objective, trace, zeros, ~ok, false, false, zeros, ok)


def _detect(model, params, sample):
    """``(R, K)`` collapsed components, judged on the sample; ``None`` when the model cannot tell."""
    if not hasattr(model, "collapsed"):
        return None
    return jax.vmap(lambda p: model.collapsed(p, sample))(params)


@eqx.filter_jit
def _advance(model, st: _Restarts, params, stats, loglik, threshold, sample) -> _Restarts:
    """emjax.fit's step rule for every unfinished restart: take a finite step,
    stop on convergence or on a non-finite step (keeping the last finite state),
    count the steps that leave a component collapsed."""
    objective = loglik + jax.vmap(model.log_prior)(params)
    ok = jax.vmap(_all_finite)((params, objective, stats))
    active = ~st.done
    take = active & ok
    converged = take & (jnp.abs(objective - st.objective) < threshold)
    params = _select(take, params, st.params)
    objective = jnp.where(take, objective, st.objective)
    n_collapses = st.n_collapses
    collapsed = _detect(model, params, sample)
    if collapsed is not None:
        n_collapses = n_collapses + (jnp.any(collapsed, axis=1) & take)
    n_iter = st.n_iter + take
    slot = jnp.arange(st.trace.shape[1])[None, :] == n_iter[:, None]
    return _Restarts(
        params=params,
        stats=_select(take, stats, st.stats),
        objective=objective,
        trace=jnp.where(slot, objective[:, None], st.trace),
        n_iter=n_iter,
        done=st.done | converged | (active & ~ok),
        converged=st.converged | converged,
        nonfinite=st.nonfinite | (active & ~ok),
        n_collapses=n_collapses,
        init_ok=st.init_ok,
    )


@eqx.filter_jit
def _finish(model, st: _Restarts, sample):
    trace = jnp.where(jnp.arange(st.trace.shape[1])[None, :] <= st.n_iter[:, None], st.trace, st.objective[:, None])
    collapsed = _detect(model, st.params, sample)
    status = jnp.where(st.converged, RESULTS.SUCCESS, RESULTS.MAX_ITER)
    status = jnp.where(st.nonfinite, RESULTS.NONFINITE, status)
    if collapsed is not None:
        status = jnp.where(jnp.any(collapsed, axis=1), RESULTS.COLLAPSED, status)
    status = jnp.where(st.init_ok, status, RESULTS.INIT_FAILED)
    best = best_restart(status, st.objective)
    return trace, collapsed, status, best


# -- the drivers -----------------------------------------------------------------------


def fit_chunks(
    model: EMModel,
    source,
    *,
    key,
    algorithm: Algorithm | None = None,
    n_restarts: int = 1,
    init: str | Callable | Any = "kmeans",
    init_size: int = 100_000,
    max_iter: int = 100,
    tol: float = 1e-6,
    chunk_size: int | None = None,
    progress: bool | None = None,
    throw: bool = True,
) -> FitResult:
    """Fit ``model`` to data streamed in chunks: exact EM for data larger than device memory.

    Each iteration is one pass over the source: every chunk's statistics (for all
    restarts at once) are added on the device, then one M-step follows, so the
    result is batch EM's (:func:`emjax.fit`) up to rounding: the same trace
    (objective at the initial parameters, then after each step, padded with the
    final value), stopping rule (change below ``tol`` per point), rejection of
    non-finite steps and status codes. Restarts that stopped stay frozen while
    the others go on; the loop ends when all have stopped.

    With ``algorithm=StepwiseEM(kappa=...)`` every chunk is one mini-batch of
    stepwise EM, in the source's order (shuffle the rows of a sorted file first):
    an M-step from the running statistics, then the running statistics moved
    toward the chunk's, scaled to the full data, with step size
    ``(k + 2) ** -kappa``; they start from the full-data statistics at the
    initial parameters, as :class:`emjax.StepwiseEM`'s do. An iteration is one
    pass of updates; the trace holds the full-data objective from an extra
    evaluation pass after each, not counted in ``n_passes``.

    A background thread reads, validates and transfers the next chunks while the
    device computes; a memory-mapped file's pages are released once copied, so
    host memory stays at a few chunks.

    Args:
        model: an EMModel (e.g. :class:`emjax.Mixture`).
        source: the data: an ``(N, D)`` array or ``np.memmap`` (cut into
            ``chunk_size`` rows), a path to a ``.npy`` file (opened
            memory-mapped), a list or tuple of chunks, or a zero-argument
            function returning a fresh iterable of chunks (called once per pass,
            e.g. a generator function reading a CSV). A chunk is an array
            ``(rows, D)``, or a tuple of arrays for pytree data such as
            ``Binomial(None)``'s ``(successes, trials)`` (so a list of such
            pairs, never one bare pair, is a source). Every chunk must have the
            same columns, empty chunks are skipped and the data dtype is the
            first chunk's. Each chunk shape compiles the E-step once: give
            equal chunks (the last may be smaller).
        key: PRNG key, split into one key per restart as :func:`emjax.fit` does.
        algorithm: ``None`` or :class:`emjax.BatchEM` (exact EM), or a
            ``StepwiseEM`` (one update per chunk).
        n_restarts: R, restarts run together (a ``vmap`` over each chunk).
        init: a method name for ``model.init`` (mixtures: ``"kmeans"``,
            ``"kmeans++"``, ``"random"``, ``"random_resp"``), a function
            ``(key, x) -> params`` or explicit initial parameters (then
            ``n_restarts`` must be 1). Methods and functions see an in-memory
            sample of the data.
        init_size: rows of that sample: random rows of an array or file, the
            first rows of other sources. With ``N <= init_size`` it is the whole
            data, and initialisation is :func:`emjax.fit`'s.
        max_iter: the most iterations (passes) per restart.
        tol: stop when the objective changes by less than ``tol`` per point.
        chunk_size: rows per chunk of an array or file source (default: about
            32 MB of data per chunk). A list or function yields its own chunks.
        progress: show a progress line on stderr for every pass: ``True``,
            ``False``, or ``None`` (only on a terminal, for passes longer than 2 s).
        throw: raise if every restart failed to start (non-finite initial objective).

    Returns:
        A :class:`emjax.FitResult`, as :func:`emjax.fit`'s. ``collapsed`` and
        ``n_collapses`` are judged against the initialisation sample (the data's
        spread, for a Gaussian). Sample weights and ``reinit_collapsed`` are not
        supported over chunks.

    Example:
        >>> # 10^8 points of 8 features on disk (3.2 GB in float32), fitted with 4 restarts.
        >>> x = np.lib.format.open_memmap("points.npy", mode="w+", dtype=np.float32, shape=(10**8, 8))
        >>> ...  # fill x block by block, then x.flush()
        >>> model = emjax.Mixture(emjax.Gaussian("diag"), n_components=5)
        >>> result = emjax.fit_chunks(model, "points.npy", key=jax.random.key(0), n_restarts=4,
        ...                           chunk_size=2_000_000, progress=True)
        >>> result.params.weights, result.trace[result.best]
    """
    for name in ("e_step", "m_step", "log_prior"):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must implement {name}(); {type(model).__name__} does not.")
    key = _check_key(key)
    if algorithm is not None and not isinstance(algorithm, (BatchEM, StepwiseEM)):
        raise TypeError(
            f"fit_chunks runs BatchEM (exact EM) or StepwiseEM over chunks; got {type(algorithm).__name__}."
        )
    # Stepwise EM over chunks reads only the step-size exponent: the chunks are the mini-batches.
    kappa = float(algorithm.kappa) if isinstance(algorithm, StepwiseEM) else None
    for name, value, low in (("n_restarts", n_restarts, 1), ("max_iter", max_iter, 0), ("init_size", init_size, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}.")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0; got {tol}.")

    src = _Source(source, chunk_size)
    validate = _chunk_validator(model)
    sample_key = jax.random.fold_in(key, 1)
    sample = _sample(model, src, sample_key, int(init_size), validate)
    layout = _Layout.of(sample)
    dtype = jax.tree.leaves(sample)[0].dtype

    keys = jax.random.split(key, n_restarts)
    if isinstance(init, str) or callable(init):
        if isinstance(init, str) and not hasattr(model, "init"):
            raise TypeError(f"{type(model).__name__} has no init(); pass initial parameters or a function as init.")
        params = _initial_params(model, keys, sample, init)
    else:
        if n_restarts != 1:
            raise ValueError(
                "explicit initial parameters make every restart identical: use n_restarts=1, "
                "or pass init as a method name or a function (key, x) -> params."
            )
        if hasattr(model, "validate_params"):
            model.validate_params(init, sample)

        def one_restart(a):
            a = jnp.asarray(a)
            return (a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a)[None]

        params = jax.tree.map(one_restart, init)

    def data_pass(params, label):
        def fold(total, x):
            new = _chunk_e_step(model, params, x, _inner_chunk(model, x))
            return new if total is None else _add_totals(total, new)

        bar = _Progress(label, src.n_chunks, progress)
        return _run_pass(src, validate, layout, fold, None, bar)

    (stats, loglik), n = data_pass(params, "initial pass")
    # Batch EM carries the full-data statistics at the current parameters into the
    # next M-step; stepwise EM carries its running statistics, which start there.
    st = _start(model, params, stats, loglik, int(max_iter))
    if throw and not np.any(np.asarray(st.init_ok)):
        raise RuntimeError(
            "every restart started from parameters with a non-finite objective; "
            "check the initial parameters, or use a prior or a larger reg_covar."
        )
    threshold = jnp.asarray(tol * n, dtype)
    n_updates = jnp.zeros((), jnp.int32)

    for it in range(1, int(max_iter) + 1):
        if np.all(np.asarray(st.done)):
            break
        if kappa is None:
            new_params, new_stats = _m_step(model, st.stats, st.params), None
        else:
            new_params, new_stats, n_updates = _stepwise_pass(
                model, src, validate, layout, st, n, kappa, n_updates, _Progress(f"pass {it}", src.n_chunks, progress)
            )
        (stats, loglik), _ = data_pass(new_params, f"pass {it}" if kappa is None else f"evaluation {it}")
        st = _advance(model, st, new_params, stats if kappa is None else new_stats, loglik, threshold, sample)

    trace, collapsed, status, best = _finish(model, st, sample)
    # As emjax.fit counts them: the initial pass and one per step (stepwise EM's
    # evaluation passes are monitoring and not counted).
    n_passes = (st.n_iter + 1).astype(dtype)
    return FitResult(
        params=jax.tree.map(lambda a: a[best], st.params),
        restart_params=st.params,
        objective=st.objective,
        trace=trace,
        n_iter=st.n_iter,
        n_passes=n_passes,
        converged=st.converged,
        status=status,
        collapsed=collapsed,
        n_collapses=st.n_collapses,
        best=best,
        n_points=jnp.asarray(n),
    )


def _stepwise_pass(model, src, validate, layout, st: _Restarts, n: int, kappa: float, n_updates, bar):
    """One pass of stepwise updates, one per chunk, from ``st`` (whose ``stats``
    are the running statistics); stopped restarts keep theirs.

    Returns:
        ``(params, running statistics, updates made so far)``.
    """
    active = ~st.done
    n_total = jnp.asarray(n, st.objective.dtype)
    kappa = jnp.asarray(kappa, st.objective.dtype)

    def fold(carry, x):
        params, running, k = carry
        params, running = _stepwise_chunk(model, params, running, active, x, k, n_total, kappa, _inner_chunk(model, x))
        return params, running, k + 1

    carry, _ = _run_pass(src, validate, layout, fold, (st.params, st.stats, n_updates), bar)
    return carry


def score_chunks(model, params, source, *, chunk_size: int | None = None, progress: bool | None = None) -> jax.Array:
    """Total log-likelihood of data streamed in chunks: ``sum_n log p(x_n)``.

    Args:
        model: a fitted model with ``log_prob(params, x)`` (any EMModel works:
            without ``log_prob`` the E-step's log-likelihood is summed).
        params: its parameters (one set, e.g. ``result.params``).
        source: the data, as for :func:`fit_chunks` (a one-shot iterator is
            accepted here: one pass is read).
        chunk_size: rows per chunk of an array or file source.
        progress: as for :func:`fit_chunks`.

    Returns:
        A scalar: the log-likelihood summed over all points (divide by N for
        ``Mixture.score``'s mean).

    Example:
        >>> total = emjax.score_chunks(model, result.params, "points.npy")
        >>> per_point = total / np.load("points.npy", mmap_mode="r").shape[0]
    """
    src = _Source(source, chunk_size, reusable=False)
    validate = _chunk_validator(model)

    def fold(total, x):
        ll = _chunk_loglik(model, params, x)
        return ll if total is None else total + ll

    total, _ = _run_pass(src, validate, None, fold, None, _Progress("score", src.n_chunks, progress))
    return total


@eqx.filter_jit
def _chunk_loglik(model, params, x):
    if hasattr(model, "log_prob"):
        return jnp.sum(model.log_prob(params, x))
    return model.e_step(params, x)[1]


@eqx.filter_jit
def _chunk_predict(model, params, x, posterior: bool):
    return model.posterior(params, x) if posterior else model.predict(params, x)


def predict_chunks(
    model, params, source, *, posterior: bool = False, chunk_size: int | None = None, progress: bool | None = None
) -> np.ndarray:
    """Most probable component (or the posterior) of every point of data streamed in chunks.

    Args:
        model: a fitted :class:`emjax.Mixture` (anything with ``predict`` and
            ``posterior``).
        params: its parameters (one set, e.g. ``result.params``).
        source: the data, as for :func:`fit_chunks` (a one-shot iterator is
            accepted here: one pass is read).
        posterior: return responsibilities ``(N, K)`` instead of labels ``(N,)``.
        chunk_size: rows per chunk of an array or file source.
        progress: as for :func:`fit_chunks`.

    Returns:
        A host array: labels ``(N,)`` or responsibilities ``(N, K)``, in the
        order of the source's rows.

    Example:
        >>> labels = emjax.predict_chunks(model, result.params, "points.npy", chunk_size=2_000_000)
        >>> np.bincount(labels, minlength=model.n_components)
    """
    src = _Source(source, chunk_size, reusable=False)
    validate = _chunk_validator(model)
    parts = []

    def fold(_, x):
        parts.append(np.asarray(_chunk_predict(model, params, x, bool(posterior))))

    _run_pass(src, validate, None, fold, None, _Progress("predict", src.n_chunks, progress))
    return np.concatenate(parts)
