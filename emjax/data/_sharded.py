"""Data sharded over devices: each device sums the statistics of its own rows.

When ``x`` is a ``jax.Array`` with a :class:`jax.sharding.NamedSharding` that
splits its rows (axis 0) over one or more mesh axes, the E-step is a
``jax.shard_map``: every device runs the chunked E-step on its local rows, the
per-device ``(stats, loglik)`` are all-gathered and folded with
:func:`emjax.add_stats` in device order, so statistics kept about an expansion
point (``GaussianStats``) add correctly and every device holds the same,
replicated result. A leafwise ``psum`` would be wrong for such statistics (it
would add their expansion points too).

The same code serves several processes (``jax.distributed.initialize``): ``x``
is then a global array whose rows live on the devices of every process, and
``shard_map`` runs over the global mesh.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import jax
import jax.numpy as jnp
from jax import Array
import equinox as eqx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .._checks import is_sharded, is_traced
from ._base import Data
from ._memory import ArrayData
from .._chunks import chunked_sum, n_rows
from .._model import sum_stats


def _leaf_rows(a) -> tuple[Mesh, tuple[str, ...]] | None:
    """``(mesh, row axes)`` of one leaf when its rows are split over mesh axes, else None."""
    if not isinstance(a, jax.Array) or is_traced(a) or not isinstance(a.sharding, NamedSharding):
        return None
    spec = tuple(a.sharding.spec)
    if not spec or spec[0] is None:
        return None
    if any(s is not None for s in spec[1:]):
        raise ValueError(
            f"x is sharded over rows and other axes (PartitionSpec {a.sharding.spec}); shard the rows only, "
            f"e.g. NamedSharding(mesh, PartitionSpec({spec[0]!r}))."
        )
    axes = (spec[0],) if isinstance(spec[0], str) else tuple(spec[0])
    return a.sharding.mesh, axes


def row_sharding(x) -> tuple[Mesh, tuple[str, ...]] | None:
    """The mesh and the mesh axes that split the rows of ``x``, or None.

    Args:
        x: data, a pytree of arrays with a leading point axis.

    Returns:
        ``(mesh, row_axes)`` when every leaf of ``x`` is a ``jax.Array`` whose
        ``NamedSharding`` splits axis 0 (and only axis 0) over ``row_axes``;
        ``None`` for unsharded data (NumPy, single-device or replicated arrays).

    Raises:
        ValueError: leaves sharded differently, columns sharded too, or a row
            count that does not divide evenly over the devices.

    Example:
        >>> from jax.sharding import NamedSharding, PartitionSpec
        >>> x, _ = emjax.datasets.old_faithful()   # 272 rows: a multiple of 1, 2, 4, 8 or 16 devices
        >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
        >>> x = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
        >>> mesh, row_axes = row_sharding(x)
        >>> row_axes
        ('data',)
        >>> row_sharding(np.zeros((4, 2))) is None
        True
    """
    layouts = [_leaf_rows(a) for a in jax.tree.leaves(x)]
    if all(layout is None for layout in layouts):
        return None
    if any(layout != layouts[0] for layout in layouts):
        raise ValueError(
            "the leaves of x are sharded differently; give every leaf the same row sharding, "
            "NamedSharding(mesh, PartitionSpec(row_axes))."
        )
    mesh, axes = layouts[0]
    shards = n_shards(mesh, axes)
    n = n_rows(x)
    if n % shards:
        raise ValueError(
            f"x has N={n} rows, which do not split evenly over {shards} devices; pad x to a multiple of {shards} "
            f"rows (copies of real rows) and give the padding weight 0 through weights=."
        )
    return mesh, axes


def with_auto_axes(x, mesh: Mesh, row_axes: tuple[str, ...]):
    """``x`` and ``mesh`` re-expressed on the same devices with ``Auto`` mesh axes.

    ``jax.make_mesh`` gives ``Explicit`` axes by default, under which JAX refuses
    operations whose output sharding it cannot infer (a gather from sharded rows
    in k-means seeding, for one). The fit outside the E-step is left to the
    compiler's sharding propagation, which ``Auto`` axes allow. The per-device
    buffers are reused, not copied, so this works for multi-process arrays too.

    Returns:
        ``(x, mesh)``: unchanged when every mesh axis is already ``Auto``.
    """
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return x, mesh
    auto_mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * len(mesh.axis_names))

    def relabel(a):
        sharding = NamedSharding(auto_mesh, P(row_axes))
        return jax.make_array_from_single_device_arrays(a.shape, sharding, [s.data for s in a.addressable_shards])

    return jax.tree.map(relabel, x), auto_mesh


def n_shards(mesh: Mesh, row_axes: tuple[str, ...]) -> int:
    """Number of row blocks: the product of the sizes of ``row_axes`` in ``mesh``."""
    return math.prod(mesh.shape[a] for a in row_axes)


def shard_rows(a, mesh: Mesh, row_axes: tuple[str, ...]):
    """``a`` (an array with a leading point axis) placed with its rows split over ``row_axes``.

    Unsharded input goes through the host (weights are small), so under
    ``jax.distributed`` every process passes the same global array and keeps
    only its own rows; an array already spread over devices is resharded there.
    """
    if not is_sharded(a):
        a = np.asarray(a)
    return jax.device_put(a, NamedSharding(mesh, P(row_axes)))


def sharded_sum(
    fn: Callable,
    operands: Any,
    x,
    weights,
    chunk_size: int | None,
    mesh: Mesh,
    row_axes: tuple[str, ...],
    key=None,
):
    """``fn(operands, x, weights) -> (stats, scalar)`` summed over all rows of
    ``x``, each device summing its own rows.

    Args:
        fn: the per-chunk E-step; its statistics must be additive with
            :func:`emjax.add_stats`.
        operands: a pytree replicated on every device (model and parameters);
            its arrays are passed to ``shard_map`` explicitly rather than closed
            over, so the function can be ``vmap``-ped over restarts.
        x: data whose rows are split over ``row_axes`` of ``mesh``.
        weights: ``(N,)`` weights split the same way, or ``None``.
        chunk_size: rows per chunk on each device (capped at the local rows);
            ``None`` for all local rows at once.
        mesh: the device mesh.
        row_axes: mesh axes that split the rows.
        key: if given, ``fn(operands, x, weights, key)`` gets a key of its own
            for every chunk of every device.

    Returns:
        ``(stats, scalar)``, replicated on every device of ``mesh``.
    """
    count = n_shards(mesh, row_axes)
    local_rows = n_rows(x) // count
    chunk = local_rows if chunk_size is None else min(chunk_size, local_rows)
    dynamic, static = eqx.partition((operands, key), eqx.is_array)
    rows = P(row_axes)

    def local(dynamic, x, weights):
        ops, k = eqx.combine(dynamic, static)
        if k is not None:  # one stream per device: fold in its position along the row axes
            k = jax.random.fold_in(k, _shard_index(row_axes))
        total = chunked_sum(lambda xc, wc, *ck: fn(ops, xc, wc, *ck), x, weights, chunk, key=k)
        # Every device gathers every device's sums and folds them in the same
        # order: the result is identical (replicated) everywhere.
        parts = jax.lax.all_gather(total, row_axes, **({"to": "invarying"} if _INVARIANT_GATHER else {}))
        return sum_stats(parts)

    in_specs = (P(), jax.tree.map(lambda _: rows, x), None if weights is None else rows)
    return jax.shard_map(local, mesh=mesh, in_specs=in_specs, out_specs=P(), check_vma=_INVARIANT_GATHER)(
        dynamic, x, weights
    )


def _shard_index(row_axes: tuple[str, ...]) -> Array:
    """This device's position along the mesh axes ``row_axes`` (inside ``shard_map``)."""
    index = jnp.zeros((), jnp.int32)
    for axis in row_axes:
        index = index * jax.lax.axis_size(axis) + jax.lax.axis_index(axis)
    return index


#: jax >= 0.10 gathers into a value ``shard_map`` knows to be the same on every device;
#: before that the gathered value counts as varying, so the replication check is off
#: (every device folds the same gathered parts in the same order).
_INVARIANT_GATHER = tuple(int(p) for p in jax.__version__.split(".")[:2]) >= (0, 10)


class ShardedData(ArrayData):
    """Rows split over the devices of ``mesh``: each device reads its own rows.

    Attributes:
        x: data whose rows are split over ``row_axes`` of ``mesh``.
        weights: ``(N,)`` weights split the same way, or ``None``.
        chunk_size: rows per E-step chunk on each device.
        mesh: the device mesh (``Auto`` axes, see :func:`with_auto_axes`).
        row_axes: the mesh axes that split the rows.

    Example:
        >>> import equinox as eqx
        >>> from jax.sharding import NamedSharding, PartitionSpec
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> params = model.init(jax.random.key(0), x)
        >>> mesh = jax.make_mesh((jax.device_count(),), ("data",))
        >>> xs = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
        >>> data = ShardedData(xs, None, 100, mesh, ("data",))   # chunks of 100 rows per device
        >>> stats, loglik = eqx.filter_jit(data.e_step)(model, params)  # replicated on every device
        >>> print(stats.counts.sum())
        272.0
    """

    mesh: Mesh = eqx.field(static=True)
    row_axes: tuple[str, ...] = eqx.field(static=True)

    def map_sum(self, fn, operands, key=None):
        return sharded_sum(fn, operands, self.x, self.weights, self.chunk_size, self.mesh, self.row_axes, key)

    def _spread(self, data: ArrayData) -> Data:
        """Selected rows, split over the devices again when they divide evenly
        (so a mini-batch's E-step runs on every device), else in one place."""
        if data.n_rows % n_shards(self.mesh, self.row_axes):
            return data
        rows = NamedSharding(self.mesh, P(self.row_axes))
        x = jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, rows), data.x)
        weights = None if data.weights is None else jax.lax.with_sharding_constraint(data.weights, rows)
        return ShardedData(x, weights, self.chunk_size, self.mesh, self.row_axes)

    def rows(self, start, length: int) -> Data:
        return self._spread(ArrayData.rows(self, start, length))

    def take(self, index) -> Data:
        return self._spread(ArrayData.take(self, index))

    def reweighted(self, factor) -> Data:
        weights = factor if self.weights is None else self.weights * factor
        return ShardedData(self.x, weights, self.chunk_size, self.mesh, self.row_axes)
