"""Host-resident data sources: arrays, memory-mapped ``.npy`` files, lists of
chunks and functions returning fresh iterables of chunks.

:class:`_Source` yields the raw chunks of one pass; :class:`_Reader` serves
rows by position for :class:`emjax.data.StreamData` (a fixed grid of chunks for
full passes, with the next chunk read in a background thread while the device
computes the current one, and arbitrary row ranges or indices for blocks and
mini-batches). Pages of a memory-mapped file are released as soon as they were
copied, so resident memory stays at a few chunks whatever the file's size.
"""

from __future__ import annotations

import itertools
import mmap
import os
import queue
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

import numpy as np
import jax
import jax.numpy as jnp

from .._checks import check_int, check_npy_path
from .._chunks import n_rows

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
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size)
        self._array = None
        self._chunks = None
        self._fn = None
        if isinstance(source, (str, os.PathLike)):
            path = os.fspath(source)
            # Only .npy can be memory-mapped; anything else would meet np.load's pickle message.
            check_npy_path(path)
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


# -- rows by position -------------------------------------------------------------------


class _Cursor:
    """Rows ``start .. stop - 1`` of one source, as NumPy leaves.

    Arrays and lists are read where the rows are; a function's iterable is read
    forward, kept open between reads and restarted only when a read starts
    before its position (full passes and in-order blocks never do).
    """

    def __init__(self, source: _Source, sizes: list[int] | None):
        self.source = source
        self.offsets = None if sizes is None else np.concatenate([[0], np.cumsum(sizes)])
        self.it, self.pos, self.raw = None, 0, None  # the raw chunk held starts at row self.pos

    def _pieces(self, start: int, stop: int):
        src = self.source
        if src._array is not None:
            arr = src._array
            view = arr[start:stop]
            yield _copy_out(view) if isinstance(arr, np.memmap) else view
            return
        if src._chunks is not None:
            first = int(np.searchsorted(self.offsets, start, side="right")) - 1
            for c in range(first, len(src._chunks)):
                lo = int(self.offsets[c])
                if lo >= stop:
                    return
                yield _slice(src._chunks[c], max(start - lo, 0), min(stop, int(self.offsets[c + 1])) - lo)
            return
        # A forward-only iterable.
        if self.it is None or start < self.pos:
            self.it, self.pos, self.raw = iter(src._fn()), 0, None
        while True:
            if self.raw is None:
                try:
                    self.raw = next(self.it)
                except StopIteration:
                    raise RuntimeError(
                        f"the data source yielded fewer rows than in its first pass (rows {start}..{stop - 1} "
                        "were asked for): a function source must yield the same data on every call."
                    ) from None
                if _leading(self.raw) == 0:
                    self.raw = None
                    continue
            rows = _leading(self.raw)
            end = self.pos + rows
            if end > start:
                yield _slice(self.raw, max(start - self.pos, 0), min(stop, end) - self.pos)
            if end >= stop:
                return
            self.pos, self.raw = end, None

    def read(self, start: int, stop: int, layout: _Layout) -> list[np.ndarray]:
        """The rows as one NumPy array per leaf of ``layout``, in its dtypes."""
        parts = [jax.tree.leaves(p) for p in self._pieces(start, stop)]
        leaves = []
        for j, dtype in enumerate(layout.dtypes):
            got = [np.asarray(p[j]) for p in parts]
            leaf = got[0] if len(got) == 1 else np.concatenate(got)
            leaves.append(np.asarray(leaf, dtype=dtype))
        return leaves


def _leading(raw) -> int:
    return int(np.shape(jax.tree.leaves(raw)[0])[0])


def _slice(raw, lo: int, hi: int):
    return jax.tree.map(lambda a: a[lo:hi], raw)


#: Open readers by id: device callbacks name the reader by a traced integer, so a
#: compiled program serves every stream of the same shapes (no recompilation
#: per fit) and holds no reference to one.
_READERS: "weakref.WeakValueDictionary[int, _Reader]" = weakref.WeakValueDictionary()
_NEXT_ID = itertools.count(1)


def read_chunk(reader_id, i) -> tuple:
    """Device callback: chunk ``i`` of a full pass of reader ``reader_id``."""
    return _READERS[int(reader_id)].chunk(i)


def read_rows(reader_id, start, length: int) -> tuple:
    """Device callback: ``length`` rows from ``start``."""
    return _READERS[int(reader_id)].rows(start, length)


def read_index(reader_id, index) -> tuple:
    """Device callback: the rows at ``index``."""
    return _READERS[int(reader_id)].take(index)


class _Reader:
    """Rows of a checked source (and its weights) by position, for device callbacks.

    Full passes read a fixed grid of ``chunk_size`` rows; while the device
    computes on chunk ``i`` a background thread reads chunk ``i + 1`` (the first
    again after the last: the next pass starts there). Every read goes through
    that one thread, so a forward-only source is never read from two places.

    Args:
        source: the data's source; ``weights``: a source of ``(rows,)`` weights
            read in step with it, or ``None``.
        sizes: rows of each chunk of a list source (to find rows without reading).
        n: N. layout: the checked data's layout (weights: a float vector).
        chunk_size: rows per chunk of a full pass.
        progress: ``True``, ``False`` or ``None`` (a terminal and a pass longer than 2 s).
    """

    def __init__(self, source, weights, sizes, weight_sizes, n: int, layout: _Layout, weight_dtype,
                 chunk_size: int, progress):
        self.cursor = _Cursor(source, sizes)
        self.weight_cursor = None if weights is None else _Cursor(weights, weight_sizes)
        self.weight_layout = None if weights is None else _Layout(None, ((),), (np.dtype(weight_dtype),))
        self.n, self.layout, self.chunk_size = n, layout, chunk_size
        self.n_chunks = -(-n // chunk_size)
        self.progress = progress
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="emjax-stream")
        self._ahead = None
        self._bar = None
        self._rows_done = 0
        self._passes = 0
        self.id = next(_NEXT_ID)
        _READERS[self.id] = self

    def _read(self, start: int, stop: int) -> tuple:
        out = self.cursor.read(start, stop, self.layout)
        if self.weight_cursor is not None:
            out = out + self.weight_cursor.read(start, stop, self.weight_layout)
        return tuple(out)

    def chunk_bounds(self, i: int) -> tuple[int, int]:
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.n)

    def chunk(self, i) -> tuple:
        """Chunk ``i`` of a full pass (leaves, then the weights if any)."""
        i = int(i)
        if self._ahead is not None and self._ahead[0] == i:
            future = self._ahead[1]
        else:
            future = self._pool.submit(self._read, *self.chunk_bounds(i))
        self._ahead = None
        if self.n_chunks > 1:
            nxt = (i + 1) % self.n_chunks
            self._ahead = (nxt, self._pool.submit(self._read, *self.chunk_bounds(nxt)))
        out = future.result()
        self._report(i)
        return out

    def rows(self, start, length: int) -> tuple:
        """Rows ``start .. start + length - 1``."""
        start = int(start)
        return self._pool.submit(self._read, start, start + length).result()

    def take(self, index) -> tuple:
        """Rows at ``index`` (read in increasing order, returned in ``index``'s)."""
        index = np.asarray(index)
        order = np.argsort(index, kind="stable")
        sorted_rows = index[order]

        def gather():
            src = self.cursor.source
            if src._array is not None:
                arr = src._array
                leaves = [np.asarray(arr[sorted_rows], dtype=self.layout.dtypes[0])]
            else:
                leaves = [np.concatenate(parts) for parts in zip(*(
                    [np.asarray(leaf) for leaf in self.cursor.read(int(r), int(r) + 1, self.layout)]
                    for r in sorted_rows
                ))]
            if self.weight_cursor is not None:
                wsrc = self.weight_cursor.source
                if wsrc._array is not None:
                    w = np.asarray(wsrc._array[sorted_rows], dtype=self.weight_layout.dtypes[0])
                else:
                    w = np.concatenate([self.weight_cursor.read(int(r), int(r) + 1, self.weight_layout)[0]
                                        for r in sorted_rows])
                leaves.append(w)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(order.size)
            return tuple(leaf[inverse] for leaf in leaves)

        return self._pool.submit(gather).result()

    def _report(self, i: int):
        if self.progress is False:
            return
        if i == 0 or self._bar is None:
            self._passes += 1
            self._bar, self._rows_done = _Progress(f"pass {self._passes}", self.n_chunks, self.progress), 0
        start, stop = self.chunk_bounds(i)
        self._rows_done += stop - start
        if i == self.n_chunks - 1:
            self._bar.close(i + 1, self._rows_done)
            self._bar = None
        else:
            self._bar.update(i + 1, self._rows_done)

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
