"""The Data contract: everything an algorithm may ask of the data it fits.

Statistics are additive over rows, so every way of reading the data (chunks of
an in-memory array, rows spread over devices, chunks streamed from the host)
serves the same three questions: the sum over all rows of a per-row function
(the full-data E-step), a contiguous run of rows (a block of incremental EM, a
mini-batch in order) and rows at given indices (a shuffled mini-batch).
Algorithms use only these; they never touch the arrays themselves.
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import equinox as eqx
from jax import Array


class Data(eqx.Module):
    """Abstract base of data sources an algorithm reads.

    Implementations: :class:`emjax.data.ArrayData` (in memory, chunked),
    :class:`emjax.data.ShardedData` (rows split over devices) and
    :class:`emjax.data.StreamData` (chunks streamed from the host).
    """

    @property
    @abc.abstractmethod
    def n_rows(self) -> int:
        """N, the number of rows (a static Python int)."""

    @property
    @abc.abstractmethod
    def n_points(self) -> Array:
        """Total weight of the rows (``N`` without weights)."""

    @property
    @abc.abstractmethod
    def sample(self) -> Any:
        """Rows held in device memory for seeding, collapse tests and
        re-initialisation: all rows for in-memory data, a sample for streams."""

    @property
    def random_access(self) -> bool:
        """Whether :meth:`take` may be called (a stream read in order cannot)."""
        return True

    @abc.abstractmethod
    def map_sum(self, fn: Callable, operands: Any, key=None):
        """``sum over rows of fn(operands, x, weights)``.

        Args:
            fn: ``(operands, x, weights) -> (stats, scalar)`` on a chunk of rows
                ``x`` with their ``weights`` (``None`` for unweighted data); its
                statistics must be additive with :func:`emjax.add_stats`.
            operands: a pytree (model, parameters, options) passed to ``fn``;
                passed explicitly, not closed over, so sharded data can hand it
                to every device and the call ``vmap``s over restarts.
            key: if given, ``fn(operands, x, weights, key)`` receives a key of its
                own for every chunk (folded from ``key`` by the chunk's place),
                so random draws differ between chunks (and depend on the chunking).

        Returns:
            The sum, as ``fn`` returns it.
        """

    @abc.abstractmethod
    def rows(self, start: Array, length: int) -> "Data":
        """Rows ``start .. start + length - 1`` (``start`` may be traced, ``length`` static), in memory."""

    @abc.abstractmethod
    def take(self, index: Array) -> "Data":
        """Rows at ``index`` ``(m,)`` (a shuffled mini-batch)."""

    @abc.abstractmethod
    def reweighted(self, factor: Array) -> "Data":
        """The same rows with their weights multiplied by ``factor`` ``(N,)``
        (incremental EM masks the rows of a read-ahead that belong to another block)."""

    def e_step(self, model, params, *, key=None, **options):
        """``model.e_step`` summed over all rows: ``(stats, loglik)``.

        A ``key`` (for E-steps that draw the latent variables) reaches every
        chunk's ``model.e_step`` as ``key=`` a key of that chunk's own.

        Example:
            Algorithms call it inside the compiled fit; called alone, compile it too:

            >>> import equinox as eqx
            >>> x, _ = emjax.datasets.old_faithful()
            >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
            >>> params = model.init(jax.random.key(0), x)
            >>> data = emjax.data.ArrayData(jnp.asarray(x), None, 100)   # chunks of 100 rows
            >>> stats, loglik = eqx.filter_jit(data.e_step)(model, params)
            >>> print(stats.counts.sum(), round(float(loglik), 2))   # as one E-step over all rows
            272.0 -1143.42
            >>> stats, _ = eqx.filter_jit(data.e_step)(model, params, key=jax.random.key(1), assignment="sample")
        """
        return self.map_sum(_e_step, (model, params, options), key=key)

    def objective(self, model, params, **options) -> Array:
        """The objective EM increases at ``params`` (one full pass)."""
        stats, loglik = self.e_step(model, params, **options)
        return model.objective(stats, params, loglik)


def _e_step(operands, x, weights, *key):
    # map_sum passes a chunk's key only when e_step was given one.
    model, params, options = operands
    return model.e_step(params, x, weights, **options, **({"key": key[0]} if key else {}))
