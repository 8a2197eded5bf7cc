"""From what a user passes as data to the :class:`emjax.data.Data` an algorithm reads."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .._checks import as_sample_weights, check_int, float_dtype
from ._base import Data
from .._chunks import default_chunk_size, n_rows
from ._memory import ArrayData
from ._sharded import ShardedData, row_sharding, shard_rows, with_auto_axes
from ._stream import Stream, is_stream_source, stream_data


def make_data(model, x, *, weights=None, chunk_size=None, key=None) -> Data:
    """Check ``x`` (and ``weights``) for ``model`` and wrap them as :class:`Data`, before compiling.

    * a :class:`Data` is used as it is;
    * a :class:`emjax.Stream`, a ``.npy`` path, an ``np.memmap``, a list of
      chunks or a function returning an iterable of chunks becomes a
      :class:`emjax.data.StreamData` (read from the host in chunks);
    * a ``jax.Array`` whose ``NamedSharding`` splits its rows over devices
      becomes :class:`emjax.data.ShardedData` (weights placed with its rows);
    * anything else is checked by ``model.validate_data`` and held in device
      memory as :class:`emjax.data.ArrayData`.

    Args:
        model: the EMModel (its ``validate_data``, ``validate_rows`` and ``row_width``).
        x: the data. weights: optional ``(N,)`` sample weights.
        chunk_size: rows per E-step chunk (in memory, per device when sharded)
            or rows per chunk read from the host (streams); chosen if ``None``.
        key: PRNG key for the random rows of a stream's initialisation sample.
    """
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size)
    if isinstance(x, Data):
        if weights is not None:
            raise ValueError("x is already a Data object: give the weights to it, not to fit.")
        return x
    if weights is not None and not model.accepts_weights:
        raise TypeError(
            f"sample weights were given, but {type(model).__name__}.e_step takes no weights argument: "
            "define e_step(params, x, weights=None)."
        )
    if is_stream_source(x):
        if isinstance(x, Stream):
            if weights is not None or chunk_size is not None:
                raise ValueError("x is a Stream: set its weights and chunk_size on the Stream.")
            stream = x
        else:
            stream = Stream(x, weights=weights, chunk_size=chunk_size)
        return stream_data(model, stream, jax.random.key(0) if key is None else jax.random.fold_in(key, 3))
    x = model.validate_data(x)
    n = n_rows(x)
    dtype = jax.tree.leaves(x)[0].dtype
    weights = as_sample_weights(weights, n, dtype if jnp.issubdtype(dtype, jnp.floating) else float_dtype())
    if chunk_size is None:
        chunk_size = default_chunk_size(n, model.row_width(x))
    rows = row_sharding(x)
    if rows is None:
        return ArrayData(x, weights, int(chunk_size))
    # Rows sharded over devices stay where they are: each device runs the E-step
    # on its own rows, and the weights follow the rows.
    mesh, row_axes = rows
    x, mesh = with_auto_axes(x, mesh, row_axes)
    if weights is not None:
        weights = shard_rows(weights, mesh, row_axes)
    return ShardedData(x, weights, int(chunk_size), mesh, row_axes)
