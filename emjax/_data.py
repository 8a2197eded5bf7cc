"""The data an algorithm sees: points, optional weights and how to chunk them."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jax import Array

from ._chunks import chunked_sum, n_rows


class Data(eqx.Module):
    """Data prepared for a fit.

    Attributes:
        x: a pytree of arrays with a leading point axis ``N`` (a matrix ``(N, D)``
            for mixtures).
        weights: ``(N,)`` non-negative point weights, or ``None``.
        chunk_size: rows per E-step chunk (``None``: the whole data at once).
    """

    x: Any
    weights: Array | None
    chunk_size: int | None = eqx.field(static=True)

    @property
    def n_points(self) -> Array:
        """Total weight of the data (N without weights)."""
        if self.weights is None:
            return jnp.asarray(n_rows(self.x))
        return jnp.sum(self.weights)

    def e_step(self, model, params):
        """``model.e_step`` summed over chunks: ``(stats, loglik)``."""
        if self.weights is None:
            fn = lambda x, w: model.e_step(params, x)  # noqa: E731
        else:
            fn = lambda x, w: model.e_step(params, x, w)  # noqa: E731
        return chunked_sum(fn, self.x, self.weights, self.chunk_size)

    def objective(self, model, params, loglik: Array) -> Array:
        """Log-likelihood plus log prior: what EM increases."""
        return loglik + model.log_prior(params)
