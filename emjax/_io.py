"""Saving and loading models, parameters and fit results: :func:`save`, :func:`load`.

An emjax file is a zip archive (stored, not compressed) holding

* ``emjax.json``: the manifest: ``{"format": "emjax", "format_version": 1,
  "emjax_version": ..., "jax_version": ..., "model": node, "value": node}``,
  where a node is JSON describing one object of the tree (below);
* ``arrays/<i>.npy``: every array of the tree in NumPy's ``.npy`` format,
  read back with ``np.load(..., allow_pickle=False)``.

Nodes: ``None``, ``bool``, ``int``, ``str`` and finite ``float`` are JSON
literals; everything else is an object with a ``"type"``: ``float`` (non-finite
values), ``tuple``, ``list``, ``dict``, ``frozenset``, ``array`` (file, kind
``jax`` / ``numpy`` / ``numpy-scalar``, dtype, shape, JAX's weak type), ``key``
(a typed PRNG key array: its ``key_data`` and the impl's name), ``dtype``
(a ``np.dtype``, a NumPy scalar type or a ``jax.numpy`` scalar type, by name),
``function`` (one of emjax's named functions, e.g. KMedoids' dissimilarities),
``module`` (an ``eqx.Module`` of emjax's: class name and every dataclass field,
static and dynamic alike) and ``namedtuple``.

No code is stored. Classes are named by their public emjax name
(``"emjax.Mixture"``, ``"emjax.families.GaussianStats"``) and looked up on load
in an allow-list built from the public names of ``emjax`` and its subpackages
(classes defined inside emjax only); a name from the file is never imported.
Objects that are code from outside emjax (a :class:`~emjax.UserModel`, a
subclass defined elsewhere, a function in a static field) are refused by
:func:`save`, naming where they are in the tree.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import json
import math
import os
import uuid
import zipfile
import zlib
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: The version of the file layout this library writes, and the newest it reads.
FORMAT_VERSION = 1

_MANIFEST = "emjax.json"
_MAGIC = "emjax"

#: ``jax.numpy`` scalar types (``jnp.float32`` ...) a static field may hold, by name.
_JNP_TYPE_NAMES = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "bfloat16", "float32", "float64", "complex64", "complex128",
)


class Saved(NamedTuple):
    """What :func:`load` returns: ``model, value = emjax.load(path)``.

    Attributes:
        model: the model saved.
        value: the parameters, :class:`~emjax.FitResult` or other pytree saved with it.
    """

    model: Any
    value: Any


# -- the allow-lists -------------------------------------------------------------------------

_CLASSES: dict | None = None  # class -> canonical name
_BY_NAME: dict | None = None  # every public name -> class
_FUNCTIONS: dict | None = None  # id(function) -> (name, function)
_FUNCTIONS_BY_NAME: dict | None = None


def _refused_classes():
    """emjax classes that hold user code or host state, never written to a file."""
    from ._model import UserModel
    from .data import StreamData

    return (UserModel, StreamData)


def _registries():
    """The allow-lists, built once: every class defined in emjax and reachable by a
    public name of ``emjax`` or of one of its subpackages (``emjax.families``,
    ``emjax.models``, ...), named by the first such name (top level first); and
    emjax's named functions that models keep in static fields."""
    global _CLASSES, _BY_NAME, _FUNCTIONS, _FUNCTIONS_BY_NAME
    if _CLASSES is None:
        import emjax
        from .models._kmedoids import _METRICS

        refused = _refused_classes()
        spaces = [("emjax", emjax)] + sorted(
            (f"emjax.{name}", mod) for name, mod in vars(emjax).items()
            if not name.startswith("_") and isinstance(mod, type(emjax)) and hasattr(mod, "__path__")
            and mod.__name__ == f"emjax.{name}"
        )
        classes, by_name = {}, {}
        for prefix, space in spaces:
            for name, obj in sorted(vars(space).items()):
                if (
                    name.startswith("_") or not isinstance(obj, type) or obj in refused
                    or not (obj.__module__ == "emjax" or obj.__module__.startswith("emjax."))
                    or not (issubclass(obj, eqx.Module) or (issubclass(obj, tuple) and hasattr(obj, "_fields")))
                ):
                    continue
                by_name[f"{prefix}.{name}"] = obj
                classes.setdefault(obj, f"{prefix}.{name}")
        functions = {id(fn): (f"KMedoids.dissimilarity:{name}", fn) for name, fn in _METRICS.items()}
        _FUNCTIONS_BY_NAME = {name: fn for name, fn in functions.values()}
        _FUNCTIONS, _BY_NAME, _CLASSES = functions, by_name, classes
    return _CLASSES, _BY_NAME, _FUNCTIONS, _FUNCTIONS_BY_NAME


# -- writing ---------------------------------------------------------------------------------


def _describe(obj) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _refuse(where: str, what: str) -> TypeError:
    return TypeError(
        f"emjax.save cannot store {where}: {what}. An emjax file holds arrays, plain data (None, bool, "
        "int, float, str, tuples, lists, dicts, frozensets, dtypes, PRNG keys) and emjax's own classes, "
        "never code (no pickle), so it can be loaded without running anything from the file."
    )


def _is_key_array(obj) -> bool:
    return isinstance(obj, jax.Array) and jnp.issubdtype(obj.dtype, jax.dtypes.prng_key)


def _impl_name(key) -> str:
    """The name of a typed key array's PRNG implementation (``"threefry2x32"``), as
    ``jax.random.wrap_key_data(impl=...)`` takes it: a string in recent JAX, a
    ``PRNGSpec`` wrapping the implementation in older ones."""
    impl = jax.random.key_impl(key)
    if isinstance(impl, str):
        return impl
    return str(getattr(getattr(impl, "_impl", impl), "name", impl))


class _Writer:
    def __init__(self):
        self.arrays: list[tuple[str, np.ndarray]] = []

    def _array(self, arr: np.ndarray, where: str) -> str:
        if arr.dtype.hasobject:
            raise _refuse(where, "an array of Python objects (dtype object)")
        name = f"arrays/{len(self.arrays)}.npy"
        self.arrays.append((name, arr))
        return name

    def encode(self, obj, where: str):
        if obj is None or type(obj) in (bool, int, str):
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"type": "float", "value": repr(obj)}
        if isinstance(obj, jax.core.Tracer):
            raise _refuse(where, "a traced value (emjax.save runs outside jit, vmap and grad)")
        if _is_key_array(obj):
            data = np.asarray(jax.random.key_data(obj))
            return {"type": "key", "impl": _impl_name(obj), "file": self._array(data, where)}
        if isinstance(obj, jax.Array) or type(obj) is np.ndarray or isinstance(obj, np.generic):
            kind = "jax" if isinstance(obj, jax.Array) else "numpy" if isinstance(obj, np.ndarray) else "numpy-scalar"
            arr = np.asarray(obj)
            return {
                "type": "array", "kind": kind, "dtype": arr.dtype.name, "shape": list(arr.shape),
                "weak_type": bool(kind == "jax" and getattr(obj, "weak_type", False)),
                "file": self._array(arr, where),
            }
        if isinstance(obj, np.dtype):
            return {"type": "dtype", "form": "dtype", "name": self._dtype_name(obj, where)}
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return {"type": "dtype", "form": "numpy-type", "name": self._dtype_name(np.dtype(obj), where)}
        jax_type = next((n for n in _JNP_TYPE_NAMES if obj is getattr(jnp, n, None)), None)
        if jax_type is not None:
            return {"type": "dtype", "form": "jax-type", "name": jax_type}
        classes, _, functions, _ = _registries()
        if isinstance(obj, eqx.Module):
            if type(obj) not in classes:
                raise _refuse(where, self._foreign(obj))
            fields = dataclasses.fields(obj)
            if set(obj.__dict__) - {f.name for f in fields}:  # eqx keeps a wrapped function's attributes there
                raise _refuse(where, f"a {type(obj).__name__} wrapping a function")
            return {
                "type": "module", "class": classes[type(obj)],
                "fields": {f.name: self.encode(getattr(obj, f.name), f"{where}.{f.name}") for f in fields
                           if f.name in obj.__dict__},
            }
        if isinstance(obj, tuple) and hasattr(type(obj), "_fields"):
            if type(obj) not in classes:
                raise _refuse(where, self._foreign(obj))
            return {"type": "namedtuple", "class": classes[type(obj)],
                    "items": [self.encode(v, f"{where}.{n}") for n, v in zip(obj._fields, obj)]}
        if type(obj) in (tuple, list):
            return {"type": type(obj).__name__, "items": [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}
        if type(obj) is dict:
            keys = list(obj)
            return {"type": "dict", "keys": [self.encode(k, f"{where} key {k!r}") for k in keys],
                    "values": [self.encode(obj[k], f"{where}[{k!r}]") for k in keys]}
        if type(obj) is frozenset:
            items = [self.encode(v, f"{where} item {v!r}") for v in obj]
            return {"type": "frozenset", "items": sorted(items, key=lambda n: json.dumps(n, sort_keys=True))}
        if id(obj) in functions and functions[id(obj)][1] is obj:
            return {"type": "function", "name": functions[id(obj)][0]}
        raise _refuse(where, self._foreign(obj))

    @staticmethod
    def _dtype_name(dtype: np.dtype, where: str) -> str:
        if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise _refuse(where, f"the structured or object dtype {dtype}")
        return dtype.name

    @staticmethod
    def _foreign(obj) -> str:
        from ._model import UserModel

        if isinstance(obj, UserModel):
            return (f"an emjax.UserModel wrapping a {_describe(obj.model)}: its e_step and m_step are user code. "
                    "Save its parameters with your own tools, or write the model as an emjax model")
        if isinstance(obj, tuple(_refused_classes())):
            return f"a {type(obj).__name__}, which holds host state and user code"
        if isinstance(obj, type):
            return f"the class {obj.__module__}.{obj.__qualname__} (code)"
        if isinstance(obj, eqx.Module) or (isinstance(obj, tuple) and hasattr(type(obj), "_fields")):
            return (f"a {_describe(obj)}, which is not one of emjax's own classes "
                    "(a class defined outside emjax is code)")
        if callable(obj):
            return f"the function or callable {getattr(obj, '__qualname__', None) or _describe(obj)} (code)"
        return f"an object of type {_describe(obj)}"


def save(path: str | os.PathLike, model: Any, value: Any) -> None:
    """Writes a model and its parameters (or a whole fit result) to a file.

    The file is a zip archive of ``.npy`` arrays and a JSON description of the
    tree (see ``emjax._io``); no code is stored. It records its format version
    and the emjax version that wrote it. The file is written to a temporary
    file beside ``path`` and moved into place, so an interrupted save leaves any
    old file intact. No extension is added (``.emjax`` is a good one).

    Args:
        path: the file to write (replaced if it exists).
        model: an emjax model, e.g. a :class:`~emjax.Mixture` (any tree of
            emjax's own classes and plain data).
        value: what goes with it: parameters (``result.params``), a
            :class:`~emjax.FitResult`, or any pytree of arrays, plain data and
            emjax classes (``None`` leaves, Python scalars, NumPy arrays and
            typed PRNG keys included).

    Raises:
        TypeError: something in ``model`` or ``value`` is code or not emjax's:
            a :class:`~emjax.UserModel`, a subclass defined outside emjax, a
            function in a static field, an arbitrary object. The message says
            where it is (``model.family.prior``, ``value.params``, ...).

    Example:
        >>> import os, tempfile, jax.numpy as jnp, emjax
        >>> model = emjax.Mixture(emjax.Poisson(), 2)
        >>> params = emjax.MixtureParams(jnp.array([0.25, 0.75]), emjax.PoissonParams(jnp.array([[1.0], [5.0]])))
        >>> path = os.path.join(tempfile.mkdtemp(), "poisson.emjax")
        >>> emjax.save(path, model, params)
        >>> loaded_model, loaded = emjax.load(path)
        >>> loaded_model == model, loaded.components.rates.tolist()
        (True, [[1.0], [5.0]])
    """
    import emjax

    writer = _Writer()
    manifest = {
        "format": _MAGIC,
        "format_version": FORMAT_VERSION,
        "emjax_version": emjax.__version__,
        "jax_version": jax.__version__,
        "model": writer.encode(model, "model"),
        "value": writer.encode(value, "value"),
    }
    text = json.dumps(manifest, indent=1, allow_nan=False)
    path = os.fspath(path)
    # A temporary file beside the target, created as open() creates files (so the umask
    # gives the usual permissions), then moved into place in one step.
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(_MANIFEST, text)
            for name, arr in writer.arrays:
                buf = io.BytesIO()
                np.save(buf, arr, allow_pickle=False)
                zf.writestr(name, buf.getvalue())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# -- reading ---------------------------------------------------------------------------------


class _Corrupt(Exception):
    """A malformed node or array, turned into a ValueError naming the file by :func:`load`."""


def _require(cond, message):
    if not cond:
        raise _Corrupt(message)


def _dtype(name) -> np.dtype:
    """The dtype named ``name``: NumPy's, or one of JAX's extended ones (``bfloat16``)."""
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = jnp.dtype(name)
    _require(not dtype.hasobject and dtype.fields is None, f"the dtype {name!r} is not a plain numeric dtype")
    return dtype


class _Reader:
    def __init__(self, zf: zipfile.ZipFile):
        self.zf = zf

    def _array(self, node) -> np.ndarray:
        name = node["file"]
        _require(isinstance(name, str) and name.startswith("arrays/"), f"bad array entry {name!r}")
        try:
            data = self.zf.read(name)
        except KeyError:
            raise _Corrupt(f"the array {name} is missing") from None
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        _require(isinstance(arr, np.ndarray), f"{name} is not a .npy array")
        return arr

    def decode(self, node, where: str):
        if node is None or type(node) in (bool, int, float, str):
            return node
        _require(isinstance(node, dict) and "type" in node, f"unrecognised entry at {where}")
        kind = node["type"]
        if kind == "float":
            _require(node["value"] in ("inf", "-inf", "nan"), f"bad float at {where}")
            return float(node["value"])
        if kind == "array":
            arr = self._array(node)
            if arr.dtype.name != node["dtype"]:
                # Extended dtypes (bfloat16 ...) go through .npy as raw bytes: view them back.
                target = _dtype(node["dtype"])
                _require(arr.dtype.kind == "V" and arr.dtype.itemsize == target.itemsize,
                         f"{where} has dtype {arr.dtype}, not the recorded {node['dtype']}")
                arr = arr.view(target)
            _require(list(arr.shape) == list(node["shape"]), f"{where} has shape {arr.shape}, not {node['shape']}")
            if node["kind"] == "numpy":
                return arr
            if node["kind"] == "numpy-scalar":
                _require(arr.ndim == 0, f"{where} is not a scalar")
                return arr[()]
            _require(node["kind"] == "jax", f"unknown array kind at {where}")
            out = jnp.asarray(arr)
            if node.get("weak_type"):
                out = _weak(out)
            return out
        if kind == "key":
            return jax.random.wrap_key_data(jnp.asarray(self._array(node)), impl=node["impl"])
        if kind == "dtype":
            name, form = node["name"], node["form"]
            if form == "jax-type":
                _require(name in _JNP_TYPE_NAMES, f"unknown jax.numpy type {name!r} at {where}")
                return getattr(jnp, name)
            dtype = _dtype(name)
            _require(form in ("dtype", "numpy-type"), f"bad dtype entry at {where}")
            return dtype if form == "dtype" else dtype.type
        if kind in ("tuple", "list"):
            items = [self.decode(v, f"{where}[{i}]") for i, v in enumerate(node["items"])]
            return tuple(items) if kind == "tuple" else items
        if kind == "frozenset":
            return frozenset(self.decode(v, where) for v in node["items"])
        if kind == "dict":
            _require(len(node["keys"]) == len(node["values"]), f"bad dict at {where}")
            return {self.decode(k, where): self.decode(v, f"{where}[{k!r}]")
                    for k, v in zip(node["keys"], node["values"])}
        _, by_name, _, functions = _registries()
        if kind == "function":
            _require(node["name"] in functions, f"unknown function {node['name']!r} at {where}")
            return functions[node["name"]]
        if kind in ("module", "namedtuple"):
            name = node["class"]
            cls = by_name.get(name) if isinstance(name, str) else None
            _require(cls is not None, f"{name!r} at {where} is not one of emjax's classes")
            if kind == "namedtuple":
                _require(issubclass(cls, tuple), f"{name} at {where} is not a named tuple")
                return cls(*(self.decode(v, f"{where}[{i}]") for i, v in enumerate(node["items"])))
            _require(issubclass(cls, eqx.Module) and not inspect.isabstract(cls),
                     f"{name} at {where} is not a concrete module")
            stored = node["fields"]
            fields = dataclasses.fields(cls)
            names = [f.name for f in fields]
            _require(isinstance(stored, dict) and set(stored) <= set(names),
                     f"{name} at {where} has fields {sorted(stored)}; this emjax's {name} has {names}")
            values = {}
            for f in fields:
                if f.name in stored:
                    values[f.name] = self.decode(stored[f.name], f"{where}.{f.name}")
                elif f.default is not dataclasses.MISSING:  # a field added since the file was written
                    values[f.name] = f.default
                elif f.default_factory is not dataclasses.MISSING:
                    values[f.name] = f.default_factory()
                else:
                    raise _Corrupt(f"{name} at {where} lacks the field {f.name!r}, which this emjax's {name} needs")
            # Rebuilt as JAX rebuilds a Module from its leaves (equinox's tree_unflatten:
            # object.__new__ and object.__setattr__ per field), not through __init__:
            # __init__ maps arguments to fields (Mixture's weights_prior -> gating,
            # Gaussian's reg_scale -> measure_scale, KMedoids' metric name -> function,
            # converters to arrays of the default dtype), so calling it again would not
            # give back an adapted model or a float32 prior under x64. The saved object
            # passed __init__'s checks when it was built; __check_init__ is not run again,
            # as JAX's unflattening does not run it.
            obj = object.__new__(cls)
            for n, v in values.items():
                object.__setattr__(obj, n, v)
            return obj
        raise _Corrupt(f"unknown entry type {kind!r} at {where}")


def _weak(x: jax.Array) -> jax.Array:
    """``x`` as a weakly typed array (as ``jnp.asarray(1.0)`` is), so promotion and
    jit caches treat it as the saved array."""
    try:
        from jax._src.lax.lax import _convert_element_type
    except ImportError:  # pragma: no cover - a JAX without it: the value and dtype are still exact
        return x
    return _convert_element_type(x, x.dtype, weak_type=True)


def load(path: str | os.PathLike) -> Saved:
    """Reads a model and what was saved with it by :func:`save`.

    Classes are looked up among emjax's own (no name from the file is
    imported) and rebuilt field by field as JAX rebuilds them from their
    leaves, so the model equals the saved one (``loaded == model``; jitted
    functions of the model reuse their compiled programs) and every array has
    the saved bits, dtype and weak type. JAX arrays come back as JAX arrays on
    the default device, NumPy arrays and scalars as NumPy's. A float64 (or
    int64) JAX array loaded with ``jax_enable_x64`` off becomes float32 (int32),
    as ``jnp.asarray`` makes it: JAX's usual downcast, not an error. Files
    written by an older emjax load; a newer format version is refused.

    Args:
        path: a file written by :func:`save`.

    Returns:
        ``Saved(model, value)``, a named tuple: ``model, value = emjax.load(path)``.

    Raises:
        FileNotFoundError: there is no file at ``path``.
        ValueError: the file is not an emjax file, is truncated or corrupt, or
            has a format version newer than this emjax reads (the message names
            the path and both versions).

    Example:
        >>> import os, tempfile, jax.numpy as jnp, emjax
        >>> path = os.path.join(tempfile.mkdtemp(), "kmeans.emjax")
        >>> emjax.save(path, emjax.KMeans(2), emjax.KMeansParams(jnp.array([[0.0], [3.0]])))
        >>> model, params = emjax.load(path)
        >>> model == emjax.KMeans(2), params.centers.dtype == jnp.zeros(1).dtype, params.centers.tolist()
        (True, True, [[0.0], [3.0]])
    """
    import emjax

    path_text = os.fspath(path)
    try:
        zf = zipfile.ZipFile(path_text)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise ValueError(f"{path_text} is not an emjax file (not a zip archive, or truncated): {err}") from None
    with zf:
        try:
            text = zf.read(_MANIFEST)
        except KeyError:
            raise ValueError(f"{path_text} is not an emjax file: it has no {_MANIFEST}.") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ValueError(f"{path_text} is corrupt: {_MANIFEST} cannot be read ({err}).") from None
        try:
            manifest = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path_text} is corrupt: {_MANIFEST} is not valid JSON ({err}).") from None
        if not isinstance(manifest, dict) or manifest.get("format") != _MAGIC:
            raise ValueError(f"{path_text} is not an emjax file: its {_MANIFEST} does not say format 'emjax'.")
        version = manifest.get("format_version")
        if type(version) is not int or version < 1:
            raise ValueError(f"{path_text} is corrupt: format_version {version!r} is not a positive integer.")
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{path_text} has file format version {version} (written by emjax "
                f"{manifest.get('emjax_version', '?')}); this emjax {emjax.__version__} reads format versions up "
                f"to {FORMAT_VERSION}. Upgrade emjax to load it."
            )
        reader = _Reader(zf)
        try:
            return Saved(reader.decode(manifest["model"], "model"), reader.decode(manifest["value"], "value"))
        except _Corrupt as err:
            raise ValueError(f"{path_text} is corrupt: {err}.") from None
        except (KeyError, TypeError, IndexError, AttributeError, ValueError, RecursionError,
                zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ValueError(f"{path_text} is corrupt: {type(err).__name__}: {err}.") from None
