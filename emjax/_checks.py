"""Input validation, run on concrete host values before anything is compiled.

Every check raises ``ValueError`` or ``TypeError`` with a message that names the
argument and the problem. Inside ``jit`` (traced inputs) only static properties
(rank, shape, dtype) can be checked; value checks are skipped there.
"""

from __future__ import annotations

import os
from functools import cache, partial
from typing import NamedTuple

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


def on_devices(x) -> bool:
    """True for a concrete ``jax.Array`` checked where it lives rather than read on
    the host: sharded (:func:`is_sharded`) or in an accelerator's memory (a GPU's
    data would otherwise cross to the host and back). A CPU array is read on the
    host without a copy."""
    return is_sharded(x) or (
        isinstance(x, jax.Array) and not is_traced(x) and any(d.platform != "cpu" for d in x.sharding.device_set)
    )


def _host(a) -> np.ndarray:
    """A replicated (small) result on the host; under several processes each reads its own copy."""
    return np.asarray(a.addressable_data(0))


class Found(NamedTuple):
    """Where a predicate holds in an array: how often, and its first entry.

    Attributes:
        count: number of entries where the predicate holds.
        row: row of the first one (row-major order).
        col: its column; ``None`` when every array searched was 1-D.
        values: the entry of each array searched at ``(row, col)``, as Python scalars.
    """

    count: int
    row: int
    col: int | None
    values: tuple


def find_first(predicate, *arrays) -> Found | None:
    """The entries of ``arrays`` where ``predicate`` holds: their count and the first one.

    NumPy and single-device arrays are searched on the host. Sharded ``jax.Array``
    inputs are searched on their devices (masked reductions) and only the few
    result scalars are read back: under ``jax.distributed`` no process holds all
    of the data, so they cannot be gathered.

    Args:
        predicate: a module-level function ``(xp, *arrays) -> bool (N, D)``,
            elementwise, written against ``xp`` (``numpy`` on the host,
            ``jax.numpy`` on the devices); hashable, so the device search
            compiles once per predicate and shape.
        *arrays: ``(N, D)`` or ``(N,)`` arrays; an ``(N,)`` array is a column
            broadcast against the others.

    Returns:
        A :class:`Found`, or ``None`` when the predicate holds nowhere.

    Example:
        >>> find_first(negative, np.array([[1.0, -2.0], [-3.0, 4.0]]))
        Found(count=2, row=0, col=1, values=(-2.0,))
    """
    if any(on_devices(a) for a in arrays):
        count, row, col, values = jax.tree.map(_host, _locate(predicate, *arrays))
        if int(count) == 0:
            return None
    else:
        host = [_as_columns(np.asarray(a)) for a in arrays]
        bad = predicate(np, *host)
        count = np.count_nonzero(bad)
        if count == 0:
            return None
        row, col = np.unravel_index(np.argmax(bad), bad.shape)  # argmax: the first True
        values = [np.broadcast_to(a, bad.shape)[row, col] for a in host]
    col = None if all(np.ndim(a) == 1 for a in arrays) else int(col)
    return Found(int(count), int(row), col, tuple(np.asarray(v).item() for v in values))


def _as_columns(a):
    """``(N,)`` as an ``(N, 1)`` column; ``(N, D)`` unchanged."""
    return a.reshape(a.shape[0], 1) if a.ndim == 1 else a


@partial(jax.jit, static_argnums=0)
def _locate(predicate, *arrays) -> tuple[Array, Array, Array, list[Array]]:
    """:func:`find_first` on the devices: the count, the first (row, column) in
    row-major order (``row == N`` when none) and each array's value there.

    Masked reductions only (no dynamic indexing), so any sharding of the arrays works.
    """
    arrays = [_as_columns(a) for a in arrays]
    bad = predicate(jnp, *arrays)
    n, d = bad.shape
    rows = jnp.arange(n)[:, None]
    cols = jnp.arange(d)[None, :]
    row = jnp.min(jnp.where(jnp.any(bad, axis=1), jnp.arange(n), n))
    col = jnp.min(jnp.where(bad & (rows == row), cols, d))
    hit = (rows == row) & (cols == col)
    # Exactly one entry is hit: the masked sum is its value (cast back: a bool sums to an int).
    values = [jnp.sum(jnp.where(hit, a, jnp.zeros((), a.dtype))).astype(a.dtype) for a in arrays]
    return jnp.sum(bad), row, col, values


def raise_first(found: Found | None, name: str, what: str, *, rule: str = "", hint: str = "", value=None) -> None:
    """Raise the standard ``ValueError`` that names the first offending entry; nothing when ``found`` is None.

    The message reads ``"{rule}; {name} contains {count} {what}, the first is {value}
    at row {row}, column {col}. {hint}"`` (the rule and the hint only when given,
    no column for a 1-D array).

    Args:
        found: the result of :func:`find_first`.
        name: the argument searched, e.g. ``"x"``.
        what: the offending entries, e.g. ``"negative value(s)"``.
        rule: what the data must satisfy, e.g. ``"x must hold non-negative counts"``.
        hint: what to do about it.
        value: text shown for the first entry instead of its value in the first array.

    Raises:
        ValueError: when ``found`` is not None.
    """
    if found is None:
        return
    shown = found.values[0] if value is None else value
    where = f"row {found.row}" if found.col is None else f"row {found.row}, column {found.col}"
    message = f"{name} contains {found.count} {what}, the first is {shown} at {where}."
    if rule:
        message = f"{rule}; {message}"
    if hint:
        message = f"{message} {hint}"
    raise ValueError(message)


# Predicates for find_first: elementwise, on NumPy (xp = numpy) or on the devices (xp = jax.numpy).


def not_finite(xp, x):
    return ~xp.isfinite(x)


def infinite(xp, x):
    return xp.isinf(x)


def negative(xp, x):
    return x < 0


def not_integer(xp, x):
    return x != xp.round(x)


def not_count(xp, x):
    """Not a non-negative integer (NaN and infinities included)."""
    return ~xp.isfinite(x) | (x < 0) | (x != xp.round(x))


@cache
def outside(lo, hi):
    """The predicate ``x < lo or x > hi``, one function per bounds (so the device search compiles once)."""

    def predicate(xp, x):
        return (x < lo) | (x > hi)

    return predicate


def float_dtype(dtype=None):
    """The floating dtype a computation runs in: float64 only where x64 is enabled.

    Floats narrower than 32 bits (float16, bfloat16, the float8 types) run in
    float32: EM's Cholesky factors, log-sum-exps and accumulated statistics need
    at least single precision, and XLA's CPU linear algebra has no float16
    kernels. Data in such a dtype are therefore converted to float32.
    """
    if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
        if jnp.dtype(dtype).itemsize < 4:
            return jnp.dtype(jnp.float32)
        return jnp.dtype(jax.dtypes.canonicalize_dtype(dtype))
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def as_data_matrix(x, name: str = "x", *, allow_nan: bool = False):
    """Validate a data matrix ``(N, D)`` and return it as a floating JAX array.

    Integer and boolean data are converted to the default float dtype; float
    data keep their precision (float64 only where x64 is enabled), except that
    floats narrower than 32 bits (float16, bfloat16) become float32 (see
    :func:`float_dtype`).

    Raises:
        TypeError: ``None``, sparse, non-numeric (strings, objects, dates and
            times) or complex data.
        ValueError: a ragged nested list, wrong rank, no rows or columns, NaN or
            infinite values.
    """
    check_dense(x, name)
    if is_traced(x):
        if x.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (N, D); got shape {x.shape}.")
        check_numeric_dtype(x.dtype, name)
        return x.astype(float_dtype(x.dtype))
    if isinstance(x, jax.Array):
        return _device_data_matrix(x, name, allow_nan)
    arr = host_array(x, name)
    check_numeric_dtype(arr.dtype, name)
    _check_matrix_shape(arr.shape, name)
    floating = jnp.issubdtype(arr.dtype, jnp.floating)
    if floating:
        _check_finite_entries(arr, name, allow_nan)
    return jnp.asarray(arr, dtype=float_dtype(arr.dtype) if floating else float_dtype())


def host_array(x, name: str = "x") -> np.ndarray:
    """``np.asarray(x)``, with errors that name ``name`` for ``None`` and ragged nested lists.

    Raises:
        TypeError: ``x`` is ``None``.
        ValueError: ``x`` is a nested sequence whose rows differ in length.
    """
    if x is None:
        raise TypeError(f"{name} must be an array; got None.")
    try:
        return np.asarray(x)
    except ValueError:
        # NumPy refuses ragged nested lists ("inhomogeneous shape"); say which argument and why.
        raise ValueError(
            f"{name} is not a rectangular array: its rows (nested sequences) differ in length. "
            f"Give an (N, D) array, every row with the same number of values."
        ) from None


def check_numeric_dtype(dtype, name: str = "x") -> None:
    """Raise a ``TypeError`` unless ``dtype`` is boolean, integer or real floating.

    Object and string arrays (e.g. a DataFrame with a text column), dates and
    times (``datetime64``, ``timedelta64``: their unit is a choice emjax cannot
    make) and complex numbers are refused rather than converted.
    """
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating) or dtype.kind in "biu":
        return
    if dtype.kind == "c":
        raise TypeError(f"{name} must be real; got complex dtype {dtype}.")
    if dtype.kind in "mM":
        raise TypeError(
            f"{name} must be numeric; got dtype {dtype} (dates or durations). Convert them to numbers "
            f"in the unit you mean, e.g. ({name} - {name}.min()) / np.timedelta64(1, 's')."
        )
    if dtype.kind in "OUSV":
        raise TypeError(
            f"{name} must be numeric; got dtype {dtype} (objects or strings). Convert it first, "
            f"e.g. np.asarray({name}, dtype=float), after removing any text columns."
        )
    raise TypeError(f"{name} must be numeric; got dtype {dtype}.")


def is_sparse(x) -> bool:
    """True for a sparse matrix or array (scipy.sparse, or anything with ``nnz`` and ``tocsr``/``toarray``)."""
    return hasattr(x, "nnz") and (hasattr(x, "tocsr") or hasattr(x, "toarray"))


def check_dense(x, name: str = "x") -> None:
    """Raise a ``TypeError`` for sparse input, before ``np.asarray`` turns it into an object array.

    Pytree data (a tuple of arrays) are searched leaf by leaf.

    Example:
        >>> import scipy.sparse
        >>> check_dense(scipy.sparse.csr_matrix(np.eye(2)))
        Traceback (most recent call last):
        TypeError: x is a sparse matrix (csr_matrix); emjax needs a dense array: pass x.toarray().
    """
    parts = x if isinstance(x, (tuple, list)) else (x,)
    for part in parts:
        if is_sparse(part):
            raise TypeError(
                f"{name} is a sparse matrix ({type(part).__name__}); emjax needs a dense array: "
                f"pass {name}.toarray()."
            )


def _check_matrix_shape(shape: tuple, name: str) -> None:
    """Raise unless ``shape`` is that of an ``(N, D)`` matrix with N, D >= 1."""
    if len(shape) == 1:
        raise ValueError(
            f"{name} must be a 2-D array (N, D); got a 1-D array of shape {shape}. "
            f"Use x.reshape(-1, 1) for one feature or x.reshape(1, -1) for one point."
        )
    if len(shape) != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D); got shape {shape}.")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; got shape {shape}.")


def _device_data_matrix(x: Array, name: str, allow_nan: bool) -> Array:
    """:func:`as_data_matrix` for a ``jax.Array``: the same checks and messages, the
    value checks run where the data live (:func:`on_devices`), the sharding is kept,
    and the array itself is returned when its dtype fits (no copy of the data)."""
    check_numeric_dtype(x.dtype, name)
    _check_matrix_shape(x.shape, name)
    if jnp.issubdtype(x.dtype, jnp.floating):
        _check_finite_entries(x, name, allow_nan)
        dtype = float_dtype(x.dtype)
    else:
        dtype = float_dtype()
    # An elementwise op keeps the row sharding; no copy when the dtype already fits.
    return x if x.dtype == dtype else x.astype(dtype)


def _check_finite_entries(x, name: str, allow_nan: bool) -> None:
    """Raise naming the first NaN or infinite entry of float data (infinite only, with ``allow_nan``)."""
    raise_first(
        find_first(infinite if allow_nan else not_finite, x),
        name,
        "NaN or infinite value(s)",
        hint=("Remove or impute them before fitting or predicting; or, for NaN as missing values, build "
              "the model with emjax.Mixture(family, K, missing=True)." if not allow_nan else
              "Remove or impute them before fitting or predicting."),
    )


def check_int(name: str, value, low: int = 1, high: int | None = None) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` unless it is an integer
    in ``low..high`` (no upper bound when ``high`` is None)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < low:
        need = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {need}; got {value!r}.")
    if high is not None and value > high:
        raise ValueError(f"{name} must be at most {high}; got {value!r}.")
    return int(value)


def check_number(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> float:
    """``value`` as a float: a finite real scalar in ``[low, high]`` (``(low, high]`` with ``low_open``).

    Python and NumPy numbers and 0-d numeric arrays are accepted; booleans are not.

    Raises:
        TypeError: ``value`` is not a real number (``None``, a string, complex, an array).
        ValueError: NaN, infinite, or out of bounds.

    Example:
        >>> check_number("collapse_tol", -1.0, low=0.0)
        Traceback (most recent call last):
        ValueError: collapse_tol must be a finite number >= 0.0; got -1.0.
    """
    arr = None if isinstance(value, (bool, np.bool_, str, bytes)) or value is None else np.asarray(value)
    if arr is None or arr.shape != () or arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    v = float(arr)
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    ok = np.isfinite(v) and (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite number{' ' + ' and '.join(bounds) if bounds else ''}; got {value!r}.")
    return v


def check_bool(name: str, value) -> bool:
    """``value`` as a bool, or a ``TypeError`` naming ``name`` (a string such as ``"no"`` is truthy)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}.")
    return bool(value)


def check_key(key, name: str = "key"):
    """A single PRNG key (new-style or a raw ``uint32[2]``) as a JAX array.

    Raises:
        TypeError: ``None`` or anything that is not a PRNG key.
        ValueError: a batch of keys.
    """
    if key is None:
        raise TypeError(f"{name} must be an explicit PRNG key, e.g. {name}=jax.random.key(0); got None.")
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"{name} must be a single PRNG key; got a batch of shape {key.shape}.")
        return key
    arr = key if is_traced(key) else (np.asarray(key) if isinstance(key, (np.ndarray, jax.Array)) else None)
    if arr is None or arr.shape != (2,) or arr.dtype != np.uint32:
        raise TypeError(
            f"{name} must be a PRNG key from jax.random.key(seed) or jax.random.PRNGKey(seed); got {key!r}."
        )
    return jnp.asarray(key)


def real_array(value, name: str, *, finite: bool = True) -> np.ndarray:
    """``value`` as a float64 host array of real numbers (finite unless ``finite=False``).

    For hyperparameters (priors), not data: strings, ``None``, objects and
    complex numbers raise a ``TypeError`` naming ``name``; an empty array or
    (with ``finite``) NaN or infinite entries a ``ValueError``. ``finite=False``
    leaves those to a caller with its own rule (e.g. "finite and >= 1").
    """
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number or an array of numbers; got {value!r}.")
    arr = host_array(value, name)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real; got complex {value!r}.")
    if arr.dtype.kind not in "biuf" and not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"{name} must be a number or an array of numbers; got {value!r} (dtype {arr.dtype}).")
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {arr.shape}.")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return arr


def check_labels(labels, n: int, k: int, name: str = "labels") -> None:
    """Raise unless ``labels`` are ``(n,)`` integer codes in ``0..k-1``.

    Under tracing only the shape and dtype are checked.

    Raises:
        TypeError: non-numeric labels.
        ValueError: wrong shape, non-integer values, values outside ``0..k-1``
            (naming the first offender).
    """
    if is_traced(labels):
        if labels.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), one label per row; got {labels.shape}.")
        return
    lab = labels if is_sharded(labels) else host_array(labels, name)
    check_numeric_dtype(lab.dtype, name)
    if tuple(lab.shape) != (n,):
        raise ValueError(f"{name} must have shape ({n},), one label per row; got {tuple(lab.shape)}.")
    rule = f"{name} must be integer component indices in 0..{k - 1} (n_components={k})"
    if jnp.issubdtype(lab.dtype, jnp.floating):
        raise_first(find_first(not_finite, lab), name, "NaN or infinite value(s)", rule=rule)
        raise_first(find_first(not_integer, lab), name, "non-integer value(s)", rule=rule)
    raise_first(find_first(outside(0, k - 1), lab), name, "value(s) out of range", rule=rule)


def check_responsibilities(resp, n: int, k: int, name: str = "resp") -> None:
    """Raise unless ``resp`` is an ``(n, k)`` array of finite, non-negative
    responsibilities whose every row has a positive sum.

    Rows need not sum to 1 (each is one point's weights over the components), but
    a row of zeros drops its point, and negative entries are not weights. Under
    tracing only the shape is checked.
    """
    if is_traced(resp):
        if resp.shape != (n, k):
            raise ValueError(f"{name} must have shape ({n}, {k}), (points, components); got {resp.shape}.")
        return
    r = resp if is_sharded(resp) else host_array(resp, name)
    check_numeric_dtype(r.dtype, name)
    if tuple(r.shape) != (n, k):
        raise ValueError(f"{name} must have shape ({n}, {k}), (points, components); got {tuple(r.shape)}.")
    rule = f"{name} must hold non-negative, finite responsibilities"
    if jnp.issubdtype(r.dtype, jnp.floating):
        raise_first(find_first(not_finite, r), name, "NaN or infinite value(s)", rule=rule)
    raise_first(find_first(negative, r), name, "negative value(s)", rule=rule)
    raise_first(
        find_first(_not_positive, r.sum(axis=1)), name, "row(s) whose sum is not positive",
        rule=f"every row of {name} must give its point some weight",
    )


def _not_positive(xp, x):
    return ~(x > 0)


def check_npy_path(path: str, name: str = "the data source") -> None:
    """Raise unless ``path`` names an existing ``.npy`` file (or an ``.npz`` archive, refused later with its own message).

    Only NumPy's own format can be memory-mapped and read in chunks; a CSV or
    any other file would otherwise reach ``np.load`` and its pickle message.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not in ``.npy`` format.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path!r}.")
    if os.path.isdir(path):
        raise ValueError(f"{name} {path!r} is a directory; give a .npy file.")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        raise ValueError(
            f"{name} {path!r} is not a .npy file: emjax reads only NumPy's .npy format from a path "
            "(memory-mapped, in chunks). Load other files yourself, e.g. np.loadtxt(path, delimiter=',') "
            "for a CSV, and np.save it as .npy (or pass the array, or a function yielding chunks)."
        )


def check_prior_features(prior, n_features: int, name: str = "prior") -> None:
    """Raise if a per-feature ``prior`` describes another number of features than the data's.

    Priors that say how many features they describe (``prior.n_features()``:
    ``NormalInverseWishart``, per-feature ``BetaPrior`` and ``GammaPrior``) are
    checked; others, and ``None``, pass.
    """
    count = getattr(prior, "n_features", None)
    d = count() if callable(count) else None
    if d is not None and d != n_features:
        raise ValueError(
            f"the {name} ({type(prior).__name__}) describes {d} features, but x has {n_features} features "
            f"(columns): give a prior of dimension {n_features}, e.g. built from the data."
        )


def check_weight_values(w: np.ndarray, name: str) -> None:
    """Raise unless the host weights ``w`` are numeric, finite and non-negative (``name`` in the message)."""
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric; got dtype {w.dtype}.")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    if np.any(w < 0):
        raise ValueError(f"{name} must be non-negative; the smallest is {w.min()}.")


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
    if w.dtype.kind in "biuf" and w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one weight per data point; got {w.shape}.")
    check_weight_values(w, name)
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
        check_spd_matrix(a, f"{name}[{i}]")


def check_spd_matrix(a: np.ndarray, name: str) -> None:
    """Raise unless the finite host matrix ``a`` ``(D, D)`` is symmetric positive definite.

    Symmetry is tested explicitly: a Cholesky factorisation reads one triangle only.
    """
    scale = max(np.abs(a).max(), 1e-300)
    if not np.allclose(a, a.T, rtol=1e-5, atol=1e-8 * scale):
        raise ValueError(f"{name} is not symmetric.")
    try:
        np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise ValueError(
            f"{name} is not positive definite (smallest eigenvalue {np.linalg.eigvalsh(a).min():.3g})."
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
    # Sharded data are searched on their devices; anything else is read to the host once.
    values = arr if is_sharded(arr) else np.asarray(arr)
    raise_first(find_first(negative, values), name, "negative value(s)", rule=f"{name} must hold non-negative {what}")
    raise_first(
        find_first(not_integer, values), name, "non-integer value(s)", rule=f"{name} must hold integer-valued {what}"
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


def check_probabilities(value, shape: tuple, name: str) -> np.ndarray | None:
    """Check a table of probabilities: its shape, finite, every entry in ``[0, 1]``.

    Args:
        value: the table, e.g. ``(K, D)`` Bernoulli means.
        shape: the shape it must have.
        name: how messages name it, e.g. ``"Bernoulli means"``.

    Returns:
        The host value, or ``None`` under tracing (only the shape is checked then).

    Raises:
        ValueError: wrong shape, NaN or infinite entries, or entries outside ``[0, 1]``.
    """
    check_shape(value, shape, name)
    p = check_finite(value, name)
    if p is not None and (np.any(p < 0) or np.any(p > 1)):
        raise ValueError(
            f"{name} are probabilities and must lie in [0, 1]; got values in [{np.min(p)}, {np.max(p)}]."
        )
    return p


def not_binary(xp, x):
    return (x != 0) & (x != 1)


def as_regression_data(data, model: str, *, labels: bool = False, multi_output: bool = False):
    """``(X, y)`` data of a regression model, checked and converted before anything compiles.

    ``X`` is checked as :func:`as_data_matrix` checks a data matrix (naming it
    ``X``); ``y`` must have one entry per row of ``X``, be real and finite, and,
    with ``labels``, hold 0/1 labels. Both come back in ``X``'s floating dtype.

    Args:
        data: a pair ``(X, y)``: ``X`` ``(N, D)``, ``y`` ``(N,)`` (or ``(N, Dy)``
            with ``multi_output``).
        model: the model's name, for the messages.
        labels: ``y`` holds 0/1 labels (booleans allowed).
        multi_output: ``y`` may be ``(N, Dy)``.

    Returns:
        ``(X, y)`` as JAX arrays.

    Raises:
        TypeError: not a pair, or a part that is not numeric.
        ValueError: wrong shapes, NaN or infinite values, labels other than 0/1.

    Example:
        >>> x, y = as_regression_data((np.ones((3, 2)), np.array([0, 1, 1])), "ProbitRegression", labels=True)
        >>> print(y, y.dtype == x.dtype)   # the labels as floats of the covariates' precision
        [0. 1. 1.] True
    """
    shape = "(N,) or (N, Dy)" if multi_output else "(N,)"
    kind = " of 0/1 labels" if labels else ""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError(
            f"{model} takes data as a pair (X, y): X (N, D) and y {shape}{kind}; got {type(data).__name__}"
            + (f" of length {len(data)}." if isinstance(data, (tuple, list)) else ".")
        )
    x = as_data_matrix(data[0], "X")
    y = data[1]
    check_dense(y, "y")
    if not is_traced(y) and not is_sharded(y):
        y = host_array(y, "y")
        check_numeric_dtype(y.dtype, "y")
    ndims = (1, 2) if multi_output else (1,)
    if jnp.ndim(y) not in ndims or jnp.shape(y)[0] != x.shape[0]:
        raise ValueError(
            f"{model}: y must be {shape} with one entry per row of X ({x.shape[0]} rows); got shape {jnp.shape(y)}."
        )
    if not is_traced(y):
        if jnp.issubdtype(y.dtype, jnp.floating):
            raise_first(find_first(not_finite, y), "y", "NaN or infinite value(s)",
                        hint="Remove those rows before fitting or predicting.")
        if labels:
            raise_first(find_first(not_binary, y), "y", "value(s) other than 0 and 1",
                        rule=f"{model} takes y of 0/1 labels")
    return x, jnp.asarray(y, x.dtype)
