"""Processing data in fixed-size chunks, so no (N, K, D) intermediate is built.

Statistics are additive, so an E-step over N points is the sum of E-steps over
chunks: a ``lax.scan`` over equal chunks and one call on the ragged remainder
(shapes stay static; no padding, so user models need no mask).
"""

from __future__ import annotations

import functools
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ._checks import is_traced
from ._model import add_stats

#: Elements of the largest per-chunk intermediate (chunk x K x D) aimed for: small
#: on a CPU, where chunks that stay in cache are fastest; large on an accelerator,
#: where a chunk must fill the device and each scan step costs a launch.
_TARGET_ELEMENTS = {"cpu": 1 << 20}
_TARGET_ELEMENTS_ACCELERATOR = 1 << 26


def n_rows(x) -> int:
    """N, the leading axis shared by every leaf of the data pytree ``x``."""
    return jax.tree.leaves(x)[0].shape[0]


def n_features(x) -> int:
    """D: the trailing size of the data (of its first leaf for pytree data)."""
    leaf = jax.tree.leaves(x)[0]
    return leaf.shape[-1] if leaf.ndim > 1 else 1


def default_chunk_size(n: int, width: int) -> int:
    """Rows per chunk so that a ``(chunk, width)`` intermediate stays about 4 MB in
    float32 on a CPU (256 MB on a GPU), for ``width`` = K x D."""
    target = _TARGET_ELEMENTS.get(jax.default_backend(), _TARGET_ELEMENTS_ACCELERATOR)
    return int(max(256, min(n, target // max(width, 1))))


def default_restart_batch(chunk_rows: int, width: int, n_restarts: int) -> int:
    """Restarts per ``vmap`` so that a batched chunk's ``(R, chunk, width)``
    intermediate stays within the same target as one chunk's (:func:`default_chunk_size`).

    On a CPU a chunk of a large data set already fills that target, so restarts
    run one after another, each at the speed of a single fit (batched, the
    intermediates outgrow the cache: 64 full-covariance restarts at N=100000
    cost 1.3x a single fit per restart); on small data many run as one ``vmap``,
    which amortises the per-operation cost. An accelerator's target is 64 times
    larger.
    """
    target = _TARGET_ELEMENTS.get(jax.default_backend(), _TARGET_ELEMENTS_ACCELERATOR)
    return int(max(1, min(n_restarts, target // max(1, chunk_rows * width))))


def _split(x, weights, chunk_size: int):
    """``(n_full, take, rest)``: ``take(i)`` is full chunk ``i`` of ``(x, weights)``,
    ``rest`` the rows after the last full chunk (``None`` if there are none).

    Chunks are dynamic slices of the arrays themselves: reshaping ``a[:cut]`` into
    ``(n_full, chunk, ...)`` makes XLA copy the whole data set once per pass
    (0.6 ms of a 10 ms diagonal iteration at N=1e5, D=16).
    """
    n = n_rows(x)
    n_full = n // chunk_size
    cut = n_full * chunk_size

    def take(i):
        start = i * chunk_size
        piece = lambda a: jax.lax.dynamic_slice_in_dim(a, start, chunk_size)  # noqa: E731
        return jax.tree.map(piece, x), None if weights is None else piece(weights)

    rest = None
    if cut < n:
        rest = (jax.tree.map(lambda a: a[cut:], x), None if weights is None else weights[cut:])
    return n_full, take, rest


def chunked_sum(fn: Callable, x, weights, chunk_size: int | None, key=None):
    """``fn(x, weights) -> (stats, scalar)`` summed over chunks of ``x``.

    Equals ``fn(x, weights)`` up to rounding, with memory bounded by one chunk.
    With a ``key``, ``fn(x, weights, key)`` gets ``fold_in(key, i)`` for chunk
    ``i`` (0 for the only chunk): independent draws in every chunk.
    """
    if key is None:
        call = lambda i, xc, wc: fn(xc, wc)  # noqa: E731
    else:
        call = lambda i, xc, wc: fn(xc, wc, jax.random.fold_in(key, i))  # noqa: E731
    n = n_rows(x)
    if chunk_size is None or chunk_size >= n:
        return call(0, x, weights)
    n_full, take, rest = _split(x, weights, chunk_size)

    total = call(0, *take(0))
    if n_full > 1:

        def body(carry, i):
            stats, ll = carry
            s, l = call(i, *take(i))
            return (add_stats(stats, s), ll + l), None

        total, _ = jax.lax.scan(body, total, jnp.arange(1, n_full))
    if rest is not None:
        s, l = call(n_full, *rest)
        total = (add_stats(total[0], s), total[1] + l)
    return total


def chunked_map(fn: Callable, x, chunk_size: int | None):
    """``fn(x)`` row-wise over chunks of ``x``, concatenated along the first axis."""
    n = n_rows(x)
    if chunk_size is None or chunk_size >= n:
        return fn(x)
    n_full, take, rest = _split(x, None, chunk_size)
    out = jax.lax.map(lambda i: fn(take(i)[0]), jnp.arange(n_full))
    out = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), out)
    if rest is not None:
        out = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), out, fn(rest[0]))
    return out


def compiled(fn: Callable) -> Callable:
    """``fn`` as a public entry point: compiled (``eqx.filter_jit``: arrays traced,
    everything else static) when called on concrete values, so that it compiles once
    per configuration, shape and dtype, and run as it is when any argument is traced,
    inlined into the caller's program (a nested jit would make ``vmap`` re-trace it
    batched and add a function to the lowered module: a fit's trace took 15-30% longer).

    Decorates functions and methods alike (``self`` is the first argument).
    """
    jitted = eqx.filter_jit(fn)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if any(is_traced(a) for a in jax.tree.leaves((args, kwargs))):
            return fn(*args, **kwargs)
        return jitted(*args, **kwargs)

    return call


@compiled
def rowwise(model, name: str, params, x, chunk_size: int | None, *options):
    """``model.<name>(params, rows, *options)`` over chunks of ``x`` (:func:`chunked_map`):
    one compiled program per model configuration, method, options, shape and dtype.

    The models' prediction methods check their arguments on the host and then call
    this, so that a prediction compiles once instead of dispatching its operations
    one by one (each chunk loop traced anew on every call)."""
    return chunked_map(lambda xc: getattr(model, name)(params, xc, *options), x, chunk_size)
