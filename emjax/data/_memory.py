"""In-memory data: rows on one device, read in chunks so no (N, K, D) array is built."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

import equinox as eqx

from ._base import Data
from .._chunks import chunked_sum, n_rows


class ArrayData(Data):
    """Data held in device memory.

    Attributes:
        x: a pytree of arrays with a leading point axis ``N`` (``(N, D)`` for mixtures).
        weights: ``(N,)`` non-negative point weights, or ``None``.
        chunk_size: rows per E-step chunk (``None``: all rows at once).

    Example:
        >>> import equinox as eqx
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> params = model.init(jax.random.key(0), x)
        >>> data = ArrayData(jnp.asarray(x), None, 100)   # E-steps over chunks of 100 rows
        >>> data.n_rows
        272
        >>> stats, loglik = eqx.filter_jit(data.e_step)(model, params)   # compiled, as in a fit
        >>> print(stats.counts.sum())
        272.0
    """

    x: Any
    weights: Array | None
    chunk_size: int | None = eqx.field(static=True)

    @property
    def n_rows(self) -> int:
        return n_rows(self.x)

    @property
    def n_points(self) -> Array:
        if self.weights is None:
            return jnp.asarray(self.n_rows)
        return jnp.sum(self.weights)

    @property
    def sample(self):
        return self.x

    def map_sum(self, fn, operands, key=None):
        return chunked_sum(lambda x, w, *k: fn(operands, x, w, *k), self.x, self.weights, self.chunk_size, key)

    def rows(self, start, length: int) -> "ArrayData":
        def cut(a):
            return jax.lax.dynamic_slice_in_dim(a, start, length)

        weights = None if self.weights is None else cut(self.weights)
        return ArrayData(jax.tree.map(cut, self.x), weights, self.chunk_size)

    def take(self, index) -> "ArrayData":
        weights = None if self.weights is None else self.weights[index]
        return ArrayData(jax.tree.map(lambda a: a[index], self.x), weights, self.chunk_size)

    def reweighted(self, factor) -> "ArrayData":
        weights = factor if self.weights is None else self.weights * factor
        return ArrayData(self.x, weights, self.chunk_size)
