"""Data larger than device memory: chunks streamed from the host into the compiled fit.

A :class:`Stream` names a host source (an array or ``np.memmap``, a ``.npy``
path, a list of chunks, or a function returning a fresh iterable of chunks, e.g.
a generator reading a CSV). :func:`stream_data` reads it once on the host,
checking every chunk before anything is compiled, and returns a
:class:`StreamData`: the :class:`emjax.data.Data` of the source, whose full
passes, blocks and mini-batches pull rows into the compiled program through
host callbacks. Every algorithm therefore runs over a stream exactly as over an
in-memory array: the same ``init``/``step``, the same acceptance, stopping and
status codes; only the loop around the steps is a host loop (one compiled
iteration per call), so a long pass reports progress and can be interrupted.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx
from jax import Array

from .._checks import check_int, check_weight_values, float_dtype
from .._model import add_stats, as_model
from ._base import Data
from .._chunks import chunked_sum, default_chunk_size, n_rows
from ._memory import ArrayData
from ._source import _Layout, _Progress, _Reader, _Source, _leading, _run_pass, read_chunk, read_index, read_rows

#: Rows of the initialisation sample when ``init_size`` is not given.
DEFAULT_INIT_SIZE = 100_000


class Stream:
    """A host-resident data source for :func:`emjax.fit`, read in chunks.

    Every pass streams the chunks through the device, so device memory holds a
    few chunks, never the data. ``emjax.fit(model, "points.npy", ...)`` makes a
    ``Stream`` itself; build one to set its options.

    Args:
        source: an ``(N, D)`` array or ``np.memmap`` (read ``chunk_size`` rows at
            a time), a path to a ``.npy`` file (opened memory-mapped), a list or
            tuple of chunks, or a zero-argument function returning a fresh
            iterable of chunks (called once per pass; such a source is read in
            order, so mini-batches must be taken in order: ``shuffle=False``). A
            chunk is an array ``(rows, D)``, or a tuple of arrays for pytree data
            such as ``Binomial(None)``'s ``(successes, trials)``.
        weights: per-row weights travelling with the rows: an ``(N,)`` array or
            memmap, a ``.npy`` path, a list of ``(rows,)`` chunks or a function
            returning a fresh iterable of them (chunked independently of the
            data; only the order of rows matters).
        chunk_size: rows read per chunk (default: about 32 MB of data). The
            chunks of a list or function are re-cut to this grid, so every
            chunk but the last has the same shape and compiles once.
        init_size: rows of the in-memory sample that initialisation, collapse
            tests and re-initialisation see: random rows of an array or file,
            the first rows of other sources.
        progress: a progress line on stderr for every pass: ``True``, ``False``,
            or ``None`` (only on a terminal, for passes longer than 2 s).

    Example:
        >>> import os, tempfile
        >>> x, _ = emjax.datasets.old_faithful()
        >>> path = os.path.join(tempfile.mkdtemp(), "points.npy")
        >>> np.save(path, x)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> data = emjax.Stream(path, chunk_size=100, progress=False)   # 3 chunks per pass
        >>> result = emjax.fit(model, data, key=jax.random.key(0))
        >>> print(round(float(result.objective[0]), 2))
        -1130.27
    """

    def __init__(self, source, *, weights=None, chunk_size: int | None = None,
                 init_size: int = DEFAULT_INIT_SIZE, progress: bool | None = None):
        if isinstance(source, Stream):
            raise TypeError("source is already a Stream.")
        init_size = check_int("init_size", init_size)
        if chunk_size is not None:
            chunk_size = check_int("chunk_size", chunk_size)
        self.source = _Source(source, chunk_size if _is_array_source(source) else None)
        self.weights = None if weights is None else _Source(weights, chunk_size if _is_array_source(weights) else None)
        self.chunk_size = chunk_size
        self.init_size = int(init_size)
        self.progress = progress


def _is_array_source(source) -> bool:
    return isinstance(source, (np.ndarray, jax.Array, str)) or hasattr(source, "__fspath__")


def is_stream_source(x) -> bool:
    """Whether :func:`emjax.fit` reads ``x`` as a host stream rather than an in-memory array:
    a :class:`Stream`, a path, an ``np.memmap``, a list of chunks (arrays, or tuples of
    arrays for pytree data) or a function. A list of rows (numbers) is an in-memory matrix."""
    if isinstance(x, list):
        return all(hasattr(c, "shape") or isinstance(c, tuple) for c in x)
    return (
        isinstance(x, (Stream, np.memmap, str))
        or hasattr(x, "__fspath__")
        or (callable(x) and not hasattr(x, "shape"))
    )


class StreamData(Data):
    """:class:`emjax.data.Data` of a checked host stream (see :func:`stream_data`).

    Attributes:
        sample_x: the in-memory initialisation sample (``Data.sample``).
        total_weight: total weight of the rows (``Data.n_points``).
        reader_id: the id of the host reader the device callbacks call (traced).
        reader: holds that reader alive (compares equal for every stream).
        n: N. inner: rows per device-side sub-chunk of a chunk.
        has_weights: whether rows carry weights. in_order: whether the
            source can only be read forward (no :meth:`take`).
    """

    sample_x: Any
    total_weight: Array
    reader_id: Array
    reader: "_Held" = eqx.field(static=True)
    n: int = eqx.field(static=True)
    chunk_size: int = eqx.field(static=True)
    layout: _Layout = eqx.field(static=True)
    weight_dtype: Any = eqx.field(static=True)
    inner: int = eqx.field(static=True)
    has_weights: bool = eqx.field(static=True)
    in_order: bool = eqx.field(static=True)

    @property
    def n_rows(self) -> int:
        return self.n

    @property
    def n_points(self) -> Array:
        return self.total_weight

    @property
    def sample(self):
        return self.sample_x

    @property
    def random_access(self) -> bool:
        return not self.in_order

    def _shapes(self, rows: int):
        layout = self.layout
        shapes = [jax.ShapeDtypeStruct((rows,) + t, d) for t, d in zip(layout.trailing, layout.dtypes)]
        if self.has_weights:
            shapes.append(jax.ShapeDtypeStruct((rows,), self.weight_dtype))
        return tuple(shapes)

    def _unpack(self, leaves):
        n_leaves = len(self.layout.dtypes)
        x = jax.tree.unflatten(self.layout.treedef, list(leaves[:n_leaves]))
        return x, (leaves[n_leaves] if self.has_weights else None)

    def _call(self, fn, rows: int, *args):
        # Reading rows has no side effects the program depends on, and a batched
        # argument (one mini-batch per restart) is served one restart at a time.
        shapes = self._shapes(rows)
        return self._unpack(jax.pure_callback(fn, shapes, self.reader_id, *args, vmap_method="sequential"))

    def map_sum(self, fn, operands, key=None):
        size = self.chunk_size
        n_full, rest = divmod(self.n, size)

        def chunk_sum(i, rows):
            x, w = self._call(read_chunk, rows, jnp.asarray(i, jnp.int32))
            k = None if key is None else jax.random.fold_in(key, i)
            return chunked_sum(lambda xc, wc, *ck: fn(operands, xc, wc, *ck), x, w, min(self.inner, rows), k)

        total = None
        if n_full:
            total = chunk_sum(0, size)
            if n_full > 1:
                total, _ = jax.lax.scan(
                    lambda acc, i: (add_stats(acc, chunk_sum(i, size)), None), total, jnp.arange(1, n_full)
                )
        if rest:
            last = chunk_sum(n_full, rest)
            total = last if total is None else add_stats(total, last)
        return total

    def rows(self, start, length: int) -> Data:
        x, w = self._call(partial(read_rows, length=length), length, jnp.asarray(start, jnp.int32))
        return ArrayData(x, w, min(self.inner, length))

    def take(self, index) -> Data:
        if self.in_order:
            raise TypeError(
                "this stream is read in order (a function source), so rows cannot be taken at random: "
                "take mini-batches in order (shuffle=False), or give an array, memmap, .npy path or list."
            )
        index = jnp.asarray(index, jnp.int32)
        x, w = self._call(read_index, index.shape[0], index)
        return ArrayData(x, w, min(self.inner, index.shape[0]))

    def reweighted(self, factor) -> Data:
        raise TypeError("a stream's weights are read with its rows; reweight them in the source.")


class _Held:
    """Keeps the reader alive with its :class:`StreamData` while comparing equal to
    any other: the compiled program finds the reader by ``reader_id``, so it is no
    part of the program's identity, and streams of one shape share one program."""

    def __init__(self, reader: _Reader):
        self.reader = reader

    def __eq__(self, other):
        return isinstance(other, _Held)

    def __hash__(self):
        return 0


def stream_data(model, stream: Stream, key) -> StreamData:
    """Read ``stream`` once on the host, check it, and make its :class:`StreamData`.

    Every chunk is checked with ``model.validate_rows`` (errors name the chunk
    and its first row), the weights with the sample-weight rules, and the
    initialisation sample with ``model.validate_data`` (which also checks what
    concerns the whole data, such as N >= K), all before anything is compiled.

    Args:
        model: the EMModel to be fitted.
        stream: the :class:`Stream`.
        key: PRNG key choosing the random rows of the sample of an array source.
    """
    src = stream.source
    sample_parts, sample_rows = [], 0

    def fold(carry, x):
        nonlocal sample_rows
        if sample_rows < stream.init_size and src._array is None:
            sample_parts.append(x)
            sample_rows += n_rows(x)
        return x if carry is None else carry

    bar = _Progress("checking the data", src.n_chunks, stream.progress)
    first, n = _run_pass(src, model.validate_rows, None, fold, None, bar)
    layout = _Layout.of(first)
    for raw in ([] if src._chunks is None else src._chunks):
        if _leading(raw) and len(jax.tree.leaves(raw)) != len(layout.dtypes):
            raise ValueError("every chunk of the source must have the same structure.")
    raw_sample = src.rows_sample(key, stream.init_size)
    if raw_sample is None:
        raw_sample = jax.tree.map(lambda *a: jnp.concatenate(a)[: stream.init_size], *sample_parts)
    sample = model.validate_data(raw_sample)

    dtype = jax.tree.leaves(first)[0].dtype
    weight_dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else float_dtype()
    total_weight = jnp.asarray(n, weight_dtype)
    weight_sizes = None
    if stream.weights is not None:
        total_weight, weight_sizes = _check_weights(stream.weights, n, weight_dtype)
    sizes = None if src._chunks is None else [_leading(c) for c in src._chunks]
    chunk_size = stream.chunk_size or src.chunk_size or max(1, (1 << 25) // max(1, _row_bytes(layout)))
    reader = _Reader(src, stream.weights, sizes, weight_sizes, n, layout, weight_dtype, int(min(chunk_size, n)),
                     stream.progress)
    inner = default_chunk_size(reader.chunk_size, model.row_width(sample))
    return StreamData(
        sample, total_weight, jnp.asarray(reader.id, jnp.int32), _Held(reader), n, reader.chunk_size, layout,
        np.dtype(weight_dtype), inner, stream.weights is not None, src._fn is not None,
    )


def _row_bytes(layout: _Layout) -> int:
    return sum(np.dtype(d).itemsize * int(np.prod(t, dtype=np.int64)) for t, d in zip(layout.trailing, layout.dtypes))


def _check_weights(source: _Source, n: int, dtype) -> tuple[Array, list[int] | None]:
    """Check a weights source chunk by chunk; its total weight and (for a list) chunk sizes."""
    total, rows = 0.0, 0
    for index, raw in enumerate(source.chunks()):
        w = np.asarray(raw)
        if w.ndim != 1:
            raise ValueError(f"weights chunk {index} must be 1-D (rows,); got shape {w.shape}.")
        if w.size == 0:
            continue
        check_weight_values(w, f"weights chunk {index} (rows {rows}..{rows + w.size - 1})")
        total += float(np.sum(w, dtype=np.float64))
        rows += w.size
    if rows != n:
        raise ValueError(f"the weights have {rows} rows but the data have {n}: give one weight per row.")
    if not total > 0:
        raise ValueError("weights are all zero: there is no data to fit.")
    sizes = None if source._chunks is None else [int(np.shape(c)[0]) for c in source._chunks]
    return jnp.asarray(total, dtype), sizes


def score_chunks(model, params, source, *, chunk_size: int | None = None, progress: bool | None = None) -> jax.Array:
    """Total log-likelihood of data streamed in chunks: ``sum_n log p(x_n)``.

    Args:
        model: a fitted EMModel (its ``log_prob`` summed where it has one, as
            :class:`emjax.Mixture`; the E-step's log-likelihood otherwise).
        params: its parameters (one set, e.g. ``result.params``).
        source: the data, as for :class:`Stream` (a one-shot iterator is
            accepted here: one pass is read).
        chunk_size: rows per chunk of an array or file source.
        progress: as for :class:`Stream`.

    Returns:
        A scalar: the log-likelihood summed over all points (divide by N for
        ``Mixture.score``'s mean).

    Example:
        >>> import os, tempfile
        >>> x, _ = emjax.datasets.old_faithful()
        >>> path = os.path.join(tempfile.mkdtemp(), "points.npy")
        >>> np.save(path, x)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> total = emjax.score_chunks(model, result.params, path, chunk_size=100)
        >>> per_point = total / np.load(path, mmap_mode="r").shape[0]
        >>> print(round(float(total), 2), round(float(per_point), 3))
        -1130.26 -4.155
    """
    model = as_model(model)
    src = _Source(source, chunk_size, reusable=False)
    validate = _prediction_check(model, params)

    def fold(total, x):
        ll = _chunk_loglik(model, params, x)
        return ll if total is None else total + ll

    total, _ = _run_pass(src, validate, None, fold, None, _Progress("score", src.n_chunks, progress))
    return total


def _prediction_check(model, params):
    """How every chunk is checked before it is scored or predicted: against ``params``
    too (the width of the data, one set of parameters) where the model can
    (``validate_prediction``, as :class:`emjax.Mixture`), else ``validate_rows``."""
    check = getattr(model, "validate_prediction", None)
    if check is None:
        return model.validate_rows
    return lambda x: check(params, x)


@eqx.filter_jit
def _chunk_loglik(model, params, x):
    # The density itself where the model has one (a mixture's log_prob, without
    # the fitting penalty of a Gaussian's reg_covar); the E-step's otherwise.
    if callable(getattr(model, "log_prob", None)):
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
        source: the data, as for :class:`Stream` (a one-shot iterator is
            accepted here: one pass is read).
        posterior: return responsibilities ``(N, K)`` instead of labels ``(N,)``.
        chunk_size: rows per chunk of an array or file source.
        progress: as for :class:`Stream`.

    Returns:
        A host array: labels ``(N,)`` or responsibilities ``(N, K)``, in the
        order of the source's rows.

    Example:
        >>> import os, tempfile
        >>> x, _ = emjax.datasets.old_faithful()
        >>> path = os.path.join(tempfile.mkdtemp(), "points.npy")
        >>> np.save(path, x)
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0))
        >>> labels = emjax.predict_chunks(model, result.params, path, chunk_size=100)
        >>> np.bincount(labels, minlength=model.n_components)
        array([175,  97])
    """
    src = _Source(source, chunk_size, reusable=False)
    validate = _prediction_check(model, params)
    parts = []

    def fold(_, x):
        parts.append(np.asarray(_chunk_predict(model, params, x, bool(posterior))))

    _run_pass(src, validate, None, fold, None, _Progress("predict", src.n_chunks, progress))
    return np.concatenate(parts)
