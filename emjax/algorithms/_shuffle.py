"""Shuffled epochs without sorting: a keyed pseudo-random permutation of ``[0, N)``.

``jax.random.permutation`` sorts N keys, and inside a ``vmap``ped
``while_loop`` a reshuffle at the start of an epoch runs at *every* step (a
``cond`` on a batched predicate becomes a ``select``). Instead, row ``j`` of
an epoch is ``perm(j)`` for a Feistel network on the smallest ``4^h >= N``
with cycle walking (values ``>= N`` are permuted again until they land in
``[0, N)``), as format-preserving encryption does: a bijection of ``[0, N)``
computed in O(1) per index, with a fresh permutation per epoch key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

_ROUNDS = 6


def _mix(x: Array) -> Array:
    """A 32-bit integer hash with good avalanche (``lowbias32``)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def _half_bits(n: int) -> int:
    h = 1
    while (1 << (2 * h)) < n:
        h += 1
    return h


def _feistel(p: Array, round_keys: Array, h: int) -> Array:
    mask = jnp.uint32((1 << h) - 1)
    left, right = p >> h, p & mask
    for r in range(_ROUNDS):
        left, right = right, left ^ (_mix(right ^ round_keys[r]) & mask)
    return (left << h) | right


def permute(key: Array, idx: Array, n: int) -> Array:
    """``perm_key(idx)``: positions ``idx`` (ints in ``[0, n)``) under a random
    permutation of ``[0, n)`` chosen by ``key``.

    Args:
        key: PRNG key; one key, one permutation.
        idx: integer array of positions.
        n: the size of the permuted range (static).

    Returns:
        ``int32`` array shaped like ``idx``; distinct positions map to distinct rows.

    Example:
        >>> rows = permute(jax.random.key(0), jnp.arange(1000), 1000)  # a shuffle of 0..999
        >>> bool(jnp.all(jnp.sort(rows) == jnp.arange(1000)))
        True
    """
    if n >= 1 << 31:
        raise ValueError(f"permute supports n < 2**31; got {n}.")
    h = _half_bits(n)
    round_keys = jax.random.bits(key, (_ROUNDS,), jnp.uint32)
    p = _feistel(jnp.asarray(idx).astype(jnp.uint32), round_keys, h)

    # Cycle walking: at most 3 of 4 values lie outside [0, n), so walks are short.
    def cond(p):
        return jnp.any(p >= n)

    def body(p):
        return jnp.where(p >= n, _feistel(p, round_keys, h), p)

    return jax.lax.while_loop(cond, body, p).astype(jnp.int32)


def minibatch(data, key: Array, u: Array, size: int, shuffle: bool):
    """Mini-batch ``u`` (counted from 0 over all epochs) of ``size`` rows of ``data``.

    An epoch is ``N // size`` mini-batches. Shuffled: the rows of epoch ``e``
    walk the permutation chosen by ``fold_in(key, e)``; in order: mini-batch
    ``j`` of every epoch is rows ``j * size .. (j + 1) * size - 1`` (what a
    stream read forward can serve).

    Returns:
        A :class:`emjax.data.Data` of the mini-batch's rows.
    """
    n = data.n_rows
    per_epoch = n // size
    first = (u % per_epoch) * size
    if not shuffle:
        return data.rows(first, size)
    return data.take(permute(jax.random.fold_in(key, u // per_epoch), first + jnp.arange(size), n))
