"""The data an algorithm sees: points, optional weights, how to chunk them, and
where their rows live when they are sharded over devices."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import Array

from ._chunks import chunked_sum, n_rows
from ._sharded import sharded_sum


class Data(eqx.Module):
    """Data prepared for a fit.

    Attributes:
        x: a pytree of arrays with a leading point axis ``N`` (a matrix ``(N, D)``
            for mixtures).
        weights: ``(N,)`` non-negative point weights, or ``None``.
        chunk_size: rows per E-step chunk (``None``: the whole data at once); on
            sharded data, rows per chunk on each device.
        mesh: the ``jax.sharding.Mesh`` whose devices hold the rows of ``x``, or
            ``None`` for unsharded data.
        row_axes: the mesh axes that split the rows (with ``mesh``).

    Example:
        >>> data = Data(x, None, 4096)  # unsharded, chunks of 4096 rows
        >>> data = Data(x, w, 4096, mesh, ("data",))  # x and w split over mesh axis "data"
        >>> stats, loglik = data.e_step(model, params)
    """

    x: Any
    weights: Array | None
    chunk_size: int | None = eqx.field(static=True)
    mesh: Any = eqx.field(static=True, default=None)
    row_axes: tuple[str, ...] | None = eqx.field(static=True, default=None)

    @property
    def n_points(self) -> Array:
        """Total weight of the data (N without weights)."""
        if self.weights is None:
            return jnp.asarray(n_rows(self.x))
        return jnp.sum(self.weights)

    def take(self, rows: Array) -> "Data":
        """The points at indices ``rows`` (a mini-batch), as unsharded data."""
        weights = None if self.weights is None else self.weights[rows]
        return Data(jax.tree.map(lambda a: a[rows], self.x), weights, self.chunk_size)

    def e_step(self, model, params):
        """``model.e_step`` summed over chunks (and over devices for sharded data): ``(stats, loglik)``.

        On sharded data each device sums its own rows and the per-device sums are
        folded with :func:`emjax.add_stats`; the result is replicated.
        """
        if self.weights is None:
            fn = lambda ops, x, w: ops[0].e_step(ops[1], x)  # noqa: E731
        else:
            fn = lambda ops, x, w: ops[0].e_step(ops[1], x, w)  # noqa: E731
        if self.mesh is None:
            return chunked_sum(lambda x, w: fn((model, params), x, w), self.x, self.weights, self.chunk_size)
        return sharded_sum(fn, (model, params), self.x, self.weights, self.chunk_size, self.mesh, self.row_axes)

    def objective(self, model, params, loglik: Array) -> Array:
        """Log-likelihood plus log prior: what EM increases."""
        return loglik + model.log_prior(params)
