"""Input validation, run on concrete host values before anything is compiled.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and the problem. Inside ``jit`` (traced inputs) only static properties
(rank, shape, dtype) can be checked; value checks are skipped there.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import jax
import jax.numpy as jnp
from jax import Array


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value under a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def is_sharded(x) -> bool:
    """True for a concrete ``jax.Array`` spread over several devices or processes.

    Such arrays are checked on their devices (jitted reductions) instead of being
    copied to the host: under ``jax.distributed`` no process holds all of it.
    """
    return (
        isinstance(x, jax.Array)
        and not is_traced(x)
        and (not x.is_fully_addressable or len(x.sharding.device_set) > 1)
    )


def _host(a) -> np.ndarray:
    """A replicated (small) result on the host; under several processes each reads its own copy."""
    return np.asarray(a.addressable_data(0))


@partial(jax.jit, static_argnums=1)
def _locate(x: Array, predicate) -> tuple[Array, Array, Array, Array]:
    """Count of entries of ``x`` (N, D) where ``predicate`` holds, the first such
    (row, column) in row-major order and its value; ``row == N`` when none.

    Masked reductions only (no dynamic indexing), so any sharding of ``x`` works.
    """
    bad = predicate(x)
    n, d = x.shape
    rows = jnp.arange(n)[:, None]
    cols = jnp.arange(d)[None, :]
    row = jnp.min(jnp.where(jnp.any(bad, axis=1), jnp.arange(n), n))
    col = jnp.min(jnp.where(bad & (rows == row), cols, d))
    hit = (rows == row) & (cols == col)
    return jnp.sum(bad), row, col, jnp.sum(jnp.where(hit, x, jnp.zeros((), x.dtype)))


def find_on_device(x: Array, predicate) -> tuple[int, int, int, object] | None:
    """``(count, row, column, value)`` of the entries of a sharded ``x`` (N, D) where
    ``predicate`` holds, computed on the devices; ``None`` when there are none.

    Args:
        x: a 2-D ``jax.Array`` (any sharding).
        predicate: a module-level function ``x -> bool array`` (hashable, so the
            check compiles once per shape).

    Returns:
        Python scalars describing the first offending entry, or ``None``.

    Example:
        >>> find_on_device(x, _negative)
        (3, 17, 0, -1.0)
    """
    count, row, col, value = (_host(a) for a in _locate(x, predicate))
    if int(count) == 0:
        return None
    return int(count), int(row), int(col), value.item()


def _not_finite(x):
    return ~jnp.isfinite(x)


def _infinite(x):
    return jnp.isinf(x)


def _negative(x):
    return x < 0


def _not_integer(x):
    return x != jnp.round(x)


def float_dtype(dtype=None):
    """The floating dtype a computation runs in: float64 only where x64 is enabled."""
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_data_matrix(x, name: str = "x", *, allow_nan: bool = False):
    """Validate a data matrix ``(N, D)`` and return it as a floating JAX array.

    Integer and boolean data are converted to the default float dtype; float
    data keep their precision (float64 only where x64 is enabled).

    Raises:
        TypeError: non-numeric or complex data.
        ValueError: wrong rank, no rows or columns, NaN or infinite values.
    """
    if is_traced(x):
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (N, D); got shape {x.shape}.")
        if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
            raise TypeError(f"{name} must be numeric; got dtype {x.dtype}.")
        return x.astype(float_dtype(x.dtype))
    if is_sharded(x):
        return _sharded_data_matrix(x, name, allow_nan)
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind in "USVOM":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"{name} must be numeric; got dtype {arr.dtype} that cannot be read as numbers."
            ) from None
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real; got complex dtype {arr.dtype}.")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {arr.dtype}.")
    if arr.ndim == 1:
        raise ValueError(
            f"{name} must be a 2-D array (N, D); got a 1-D array of shape {arr.shape}. "
            f"Use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one point."
        )
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D); got shape {arr.shape}.")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {arr.shape}.")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if allow_nan:
            bad &= ~np.isnan(arr)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            what = "NaN" if np.isnan(arr[row, col]) else "infinite"
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite value(s); the first is {what} "
                f"at row {row}, column {col}. Remove or impute them (missing-data models accept NaN)."
            )
    dtype = float_dtype(arr.dtype) if arr.dtype.kind == "f" else float_dtype()
    return jnp.asarray(arr, dtype=dtype)


def _sharded_data_matrix(x: Array, name: str, allow_nan: bool) -> Array:
    """:func:`as_data_matrix` for an array spread over devices: the same checks and
    messages, the value checks run where the data live, the sharding is kept."""
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real; got complex dtype {x.dtype}.")
    if not (jnp.issubdtype(x.dtype, jnp.number) or x.dtype == jnp.bool_):
        raise TypeError(f"{name} must be numeric; got dtype {x.dtype}.")
    if x.ndim == 1:
        raise ValueError(
            f"{name} must be a 2-D array (N, D); got a 1-D array of shape {x.shape}. "
            f"Use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one point."
        )
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D); got shape {x.shape}.")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {x.shape}.")
    if jnp.issubdtype(x.dtype, jnp.floating):
        found = find_on_device(x, _infinite if allow_nan else _not_finite)
        if found is not None:
            count, row, col, value = found
            what = "NaN" if np.isnan(value) else "infinite"
            raise ValueError(
                f"{name} contains {count} NaN or infinite value(s); the first is {what} "
                f"at row {row}, column {col}. Remove or impute them (missing-data models accept NaN)."
            )
        dtype = float_dtype(x.dtype)
    else:
        dtype = float_dtype()
    # An elementwise op keeps the row sharding; no copy when the dtype already fits.
    return x if x.dtype == dtype else x.astype(dtype)


def as_sample_weights(weights, n: int, dtype, name: str = "weights"):
    """Validate per-point weights ``(N,)``: finite, non-negative, not all zero."""
    if weights is None:
        return None
    if is_traced(weights):
        if weights.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},); got {weights.shape}.")
        return weights.astype(dtype)
    if is_sharded(weights):
        return _sharded_sample_weights(weights, n, dtype, name)
    w = np.asarray(weights)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {w.dtype}.")
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per data point; got {w.shape}.")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative; the smallest is {w.min()}.")
    if not np.any(w > 0):
        raise ValueError(f"{name} are all zero: there is no data to fit.")
    return jnp.asarray(w, dtype=dtype)


def _sharded_sample_weights(weights: Array, n: int, dtype, name: str) -> Array:
    """:func:`as_sample_weights` for weights spread over devices, checked on them."""
    if not (jnp.issubdtype(weights.dtype, jnp.number) or weights.dtype == jnp.bool_) or jnp.issubdtype(
        weights.dtype, jnp.complexfloating
    ):
        raise TypeError(f"{name} must be numeric; got dtype {weights.dtype}.")
    if weights.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per data point; got {weights.shape}.")
    finite, smallest, largest = (_host(a) for a in _weight_summary(weights))
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values.")
    if smallest < 0:
        raise ValueError(f"{name} must be non-negative; the smallest is {smallest}.")
    if not largest > 0:
        raise ValueError(f"{name} are all zero: there is no data to fit.")
    return weights.astype(dtype)


@jax.jit
def _weight_summary(w: Array) -> tuple[Array, Array, Array]:
    return jnp.all(jnp.isfinite(w)), jnp.min(w), jnp.max(w)


def check_n_components(n_components: int, n_points: int | None = None) -> None:
    if not isinstance(n_components, (int, np.integer)) or isinstance(n_components, bool):
        raise TypeError(f"n_components must be an int; got {type(n_components).__name__}.")
    if n_components < 1:
        raise ValueError(f"n_components must be at least 1; got {n_components}.")
    if n_points is not None and n_components > n_points:
        raise ValueError(
            f"n_components={n_components} is larger than the number of data points N={n_points}: "
            f"each component needs at least one point."
        )


def concrete(x) -> np.ndarray | None:
    """The host value of ``x``, or None under tracing."""
    if is_traced(x):
        return None
    return np.asarray(x)


def check_shape(value, shape: tuple, name: str) -> None:
    if tuple(np.shape(value)) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(np.shape(value))}.")


def check_positive_definite(mats, name: str) -> None:
    """Raise if any matrix in ``mats`` (..., D, D) is not symmetric positive definite."""
    m = concrete(mats)
    if m is None:
        return
    m = m.astype(np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError(f"{name} contain NaN or infinite values.")
    flat = m.reshape((-1,) + m.shape[-2:])
    for i, a in enumerate(flat):
        scale = max(np.abs(a).max(), 1e-300)
        if not np.allclose(a, a.T, rtol=1e-5, atol=1e-8 * scale):
            raise ValueError(f"{name}[{i}] is not symmetric.")
        try:
            np.linalg.cholesky(a)
        except np.linalg.LinAlgError:
            raise ValueError(
                f"{name}[{i}] is not positive definite (smallest eigenvalue "
                f"{np.linalg.eigvalsh(a).min():.3g})."
            ) from None


def count_matrix(x, name: str = "x", *, what: str = "counts") -> Array:
    """Validate count data ``(N, D)``: non-negative and integer-valued; a float JAX array.

    Raises:
        TypeError / ValueError: as :func:`emjax._checks.as_data_matrix`, and for
            negative or non-integer values (naming the first offending entry).
    """
    arr = as_data_matrix(x, name)
    if is_traced(arr):
        return arr
    if is_sharded(arr):
        return _sharded_count_matrix(arr, name, what)
    host = np.asarray(arr)
    neg = host < 0
    if neg.any():
        row, col = np.argwhere(neg)[0]
        raise ValueError(
            f"{name} must hold non-negative {what}; {int(neg.sum())} value(s) are negative, "
            f"the first {host[row, col]} at row {row}, column {col}."
        )
    frac = host != np.round(host)
    if frac.any():
        row, col = np.argwhere(frac)[0]
        raise ValueError(
            f"{name} must hold integer-valued {what}; {int(frac.sum())} value(s) are not integers, "
            f"the first {host[row, col]} at row {row}, column {col}."
        )
    return arr


def _sharded_count_matrix(arr: Array, name: str, what: str) -> Array:
    """The value checks of :func:`count_matrix`, run on the devices that hold ``arr``."""
    found = find_on_device(arr, _negative)
    if found is not None:
        count, row, col, value = found
        raise ValueError(
            f"{name} must hold non-negative {what}; {count} value(s) are negative, "
            f"the first {value} at row {row}, column {col}."
        )
    found = find_on_device(arr, _not_integer)
    if found is not None:
        count, row, col, value = found
        raise ValueError(
            f"{name} must hold integer-valued {what}; {count} value(s) are not integers, "
            f"the first {value} at row {row}, column {col}."
        )
    return arr


def safe_log(p: Array) -> Array:
    """``log p`` with ``p`` clipped below at the dtype's smallest normal number (no ``-inf``)."""
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def check_finite(value, name: str):
    v = concrete(value)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contain NaN or infinite values.")
    return v
