"""emjax.save / emjax.load: every model and family round-trips exactly; versions,
corrupt files and code are refused with clear errors.

Kept cheap: parameters come from eager ``init`` calls or are written by hand (no
fits but one tiny k-means fit for a real FitResult), data are a few dozen rows,
and each model compiles one small program (its ``log_prob`` / ``predict``), run on
the original and on the loaded model: the loaded one must hit the same compiled
program (no retrace) and give the same bits.
"""

from __future__ import annotations

import json
import os
import zipfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from emjax import _io
from tests.registry import CASES, D_GAUSS, DB, DC, SC

KEY = jax.random.key(0)


# -- helpers ---------------------------------------------------------------------------------


def _leaf_info(leaf):
    """What must survive a round trip for one leaf: its Python type, and for arrays
    dtype, shape, weak type and bytes (keys: their impl and key data)."""
    if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return ("key", _io._impl_name(leaf), np.asarray(jax.random.key_data(leaf)).tobytes())
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
        arr = np.asarray(leaf)
        return (type(leaf), arr.dtype, arr.shape, getattr(leaf, "weak_type", None), arr.tobytes())
    return (type(leaf), repr(leaf))  # repr: NaN equals itself, -0.0 differs from 0.0


def assert_identical(a, b):
    """Same tree structure (classes and static fields), same leaf types, dtypes,
    shapes, weak types and bits."""
    la, ta = jax.tree.flatten(a, is_leaf=lambda v: v is None)
    lb, tb = jax.tree.flatten(b, is_leaf=lambda v: v is None)
    assert ta == tb
    assert [_leaf_info(v) for v in la] == [_leaf_info(v) for v in lb]


def roundtrip(path, model, value):
    emjax.save(path, model, value)
    loaded = emjax.load(path)
    assert isinstance(loaded, _io.Saved)
    loaded_model, loaded_value = loaded
    assert type(loaded_model) is type(model)
    assert loaded_model == model
    assert_identical(model, loaded_model)
    assert_identical(value, loaded_value)
    return loaded_model, loaded_value


def assert_same_program(fn, model, params, loaded_model, loaded_params, *args):
    """``fn`` jitted: the loaded model and parameters reuse the original's compiled
    program (no retrace) and give the same bits."""
    traces = []

    @eqx.filter_jit
    def run(m, p, *a):
        traces.append(1)
        return fn(m, p, *a)

    expected = run(model, params, *args)
    got = run(loaded_model, loaded_params, *args)
    assert len(traces) == 1, "the loaded model retraced: its static configuration or leaf types differ"
    for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
        assert e.dtype == g.dtype and np.asarray(e).tobytes() == np.asarray(g).tobytes()


@eqx.filter_jit
def _adapted_start(model, x, method="random"):
    """The model adapted to ``x`` and its ``method`` start: one compiled program (eager
    calls compile every operation of ``adapt`` and ``init`` separately, several times slower)."""
    model = model.adapt(x)
    return model, model.init(KEY, x, method)


def _mixture_outputs(m, p, x):
    return m.log_prob(p, x), m.predict(p, x)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("io")


# -- every registered family -------------------------------------------------------------------


#: NumPy draws of the right width for the cases whose planted sample runs Mixture.sample
#: eagerly (a second of op-by-op compilation each); any valid data do here.
_FAST_DATA = {
    "bernoulli": lambda: (np.random.default_rng(0).random((24, DB)) < 0.5).astype(np.float64),
    "categorical": lambda: np.random.default_rng(0).integers(0, SC, size=(24, DC)).astype(np.float64),
}


@pytest.mark.parametrize("name", list(CASES))
def test_family_roundtrip(folder, name):
    """A Mixture of every registry family, with its conjugate prior and a Dirichlet on
    the weights, adapted to data (a Gaussian's measured reg_scale), with random
    parameters: the model, the parameters and the log densities and labels."""
    case = CASES[name]
    x = _FAST_DATA[name]() if name in _FAST_DATA else case.sample(24, 0)[0]
    model, params = _adapted_start(case.model(prior=True), x)
    loaded_model, loaded_params = roundtrip(folder / f"{name}.emjax", model, params)
    assert_same_program(_mixture_outputs, model, params, loaded_model, loaded_params, x)


@pytest.mark.parametrize("code", emjax.families.MCLUST_MODELS)
def test_parsimonious_roundtrip(folder, code):
    """mclust's 14 covariance models (their name is the static configuration; the
    ten constrained ones store (K, D, D) matrices), with frozen groups and a
    collapse_count set, parameters written by hand."""
    model = emjax.Mixture(emjax.Gaussian(code, reg_covar=1e-4), 2, frozen=("weights", "means"), collapse_count=2.5)
    rng = np.random.default_rng(1)
    a = rng.normal(size=(2, D_GAUSS, D_GAUSS))
    full = jnp.asarray(a @ np.swapaxes(a, 1, 2) + np.eye(D_GAUSS))
    covariances = {"EEE": full[:1], "VVI": jnp.diagonal(full, axis1=1, axis2=2), "VII": full[:, 0, 0]}.get(code, full)
    means = jnp.asarray(rng.normal(size=(2, D_GAUSS)))
    params = emjax.MixtureParams(jnp.array([0.4, 0.6]), emjax.GaussianParams(means, covariances))
    loaded_model, loaded_params = roundtrip(folder / f"{code}.emjax", model, params)
    assert loaded_model.frozen == frozenset({"weights", "means"}) and loaded_model.collapse_count == 2.5
    if code in ("VEV", "VVV"):  # the log density once for a constrained and an unconstrained structure
        assert_same_program(_mixture_outputs, model, params, loaded_model, loaded_params, rng.normal(size=(5, 3)))


# -- the other models --------------------------------------------------------------------------


def _regression_data():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(30, 3))
    return X, X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=30)


def _kmeans():
    x = np.random.default_rng(3).normal(size=(20, 2))
    return *_adapted_start(emjax.KMeans(3), x), lambda m, p, x: m.predict(p, x), x


def _kmedoids():
    x = np.random.default_rng(4).normal(size=(16, 2))
    model = emjax.KMedoids(3, dissimilarity="manhattan", method="pam")
    return *_adapted_start(model, x), lambda m, p, x: m.predict(p, x), x


def _variational():
    x = np.random.default_rng(5).normal(size=(20, 2))
    model = emjax.VariationalGaussianMixture(
        3, covariance_type="diag", weight_concentration_prior_type="dirichlet_process")
    return *_adapted_start(model, x, "random_resp"), lambda m, p, x: m.predict(p, x), x


def _evidence(cls):
    def make():
        X, y = _regression_data()
        return *_adapted_start(cls(), (X, y), "default"), lambda m, p, X: m.predict(p, X, return_std=True), X
    return make


def _probit():
    X, y = _regression_data()
    model = emjax.ProbitRegression(prior_precision=0.5)
    params = emjax.ProbitParams(jnp.array([0.5, -1.0, 0.25, 0.1]))
    return model, params, lambda m, p, X: m.predict_proba(p, X), X


def _bayesnet():
    model = emjax.DiscreteBayesNet((3, 2, 4, 2), {1: (0,), 2: (0,), 3: (0, 1)}, hidden=0, pseudo_count=0.5)
    x = np.random.default_rng(6).integers(0, 2, size=(12, 3))
    return *_adapted_start(model, x), lambda m, p, x: (m.log_prob(p, x), m.posterior(p, x)), x


def _experts(expert):
    def make():
        X, y = _regression_data()
        if isinstance(expert, emjax.LogisticExpert):
            y = (y > 0).astype(np.float64)
        return *_adapted_start(emjax.MixtureOfExperts(expert, 2), (X, y)), _mixture_outputs, (X, y)
    return make


OTHER_MODELS = {
    "kmeans": _kmeans,
    "kmedoids": _kmedoids,
    "variational": _variational,
    "bayesian_linear_regression": _evidence(emjax.BayesianLinearRegression),
    "relevance_vector_machine": _evidence(emjax.RelevanceVectorMachine),
    "probit": _probit,
    "bayesnet": _bayesnet,
    "linear_experts": _experts(emjax.LinearExpert(ridge=1e-3)),
    "logistic_experts": _experts(emjax.LogisticExpert()),
}


@pytest.mark.parametrize("name", list(OTHER_MODELS))
def test_model_roundtrip(folder, name):
    model, params, predict, x = OTHER_MODELS[name]()
    loaded_model, loaded_params = roundtrip(folder / f"{name}.emjax", model, params)
    assert_same_program(predict, model, params, loaded_model, loaded_params, x)


def test_kmedoids_metric_is_named():
    """A named dissimilarity is stored by name and comes back as the same function."""
    model = emjax.KMedoids(2, dissimilarity="sqeuclidean")
    assert _io._Writer().encode(model, "model")["fields"]["dissimilarity"] == {
        "type": "function", "name": "KMedoids.dissimilarity:sqeuclidean"}


# -- fit results, dtypes, plain data -----------------------------------------------------------


@pytest.fixture(scope="module")
def kmeans_fit():
    x = np.random.default_rng(7).normal(size=(24, 2))
    model = emjax.KMeans(2)
    return model, emjax.fit(model, x, key=KEY, n_restarts=2, max_iter=3), x


def test_fit_result_roundtrip(folder, kmeans_fit):
    """A whole FitResult (k-means: ``collapsed`` is None), then continued from the
    loaded one as from the original."""
    model, result, x = kmeans_fit
    assert result.collapsed is None
    loaded_model, loaded = roundtrip(folder / "fit.emjax", model, result)
    assert isinstance(loaded, emjax.FitResult) and loaded.collapsed is None
    assert loaded.summary() == result.summary()
    assert_same_program(lambda m, r, x: m.predict(r.params, x), model, result, loaded_model, loaded, x)


def test_mixture_fit_result_roundtrip(folder):
    """A FitResult of a mixture, written by hand (``collapsed`` an (R, K) array)."""
    model = emjax.Mixture(emjax.Bernoulli(), 2)
    params = emjax.MixtureParams(jnp.array([[0.3, 0.7], [0.5, 0.5]]), emjax.BernoulliParams(jnp.full((2, 2, 3), 0.25)))
    result = emjax.FitResult(
        params=jax.tree.map(lambda a: a[0], params), restart_params=params, objective=jnp.array([-3.5, -4.0]),
        trace=jnp.array([[-5.0, -3.5], [-6.0, -4.0]]), n_iter=jnp.array([1, 1], jnp.int32),
        n_passes=jnp.array([1.0, 1.0]), converged=jnp.array([True, False]), status=jnp.array([0, 1], jnp.int32),
        collapsed=jnp.zeros((2, 2), bool), n_collapses=jnp.zeros(2, jnp.int32), best=jnp.asarray(0),
        n_points=jnp.asarray(10.0),
    )
    roundtrip(folder / "mixture_fit.emjax", model, result)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_kept(folder, dtype):
    """float32 parameters stay float32 (under x64) and float64 ones float64, and the
    log densities agree to the bit."""
    x = np.random.default_rng(8).normal(size=(20, 3)).astype(dtype)
    model, params = _adapted_start(emjax.Mixture(emjax.Gaussian("diag"), 2), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {np.dtype(dtype)}
    loaded_model, loaded_params = roundtrip(folder / f"diag_{np.dtype(dtype).name}.emjax", model, params)
    assert_same_program(_mixture_outputs, model, params, loaded_model, loaded_params, x)


def test_float64_loaded_without_x64(folder):
    """A float64 file loaded with x64 off: JAX arrays come back float32 (JAX's
    downcast), NumPy arrays keep float64, nothing raises."""
    path = folder / "x64.emjax"
    emjax.save(path, emjax.KMeans(2), {"jax": jnp.arange(3.0), "numpy": np.arange(3.0), "int": jnp.arange(3)})
    without_x64 = jax.enable_x64(False) if hasattr(jax, "enable_x64") else jax.experimental.disable_x64()
    with without_x64:
        _, value = emjax.load(path)
        assert value["jax"].dtype == jnp.float32 and value["int"].dtype == jnp.int32
    assert value["numpy"].dtype == np.float64
    np.testing.assert_array_equal(value["jax"], [0.0, 1.0, 2.0])


def test_plain_data_roundtrip(folder):
    """None leaves, 0-d and weakly typed arrays, NumPy arrays and scalars, Python
    scalars (non-finite floats too), typed PRNG keys, dtypes, nested containers."""
    value = {
        "none": None, "zero_d": jnp.asarray(2.5, jnp.float32), "weak": jnp.asarray(1.0),
        "numpy": np.arange(4, dtype=np.int16),
        "scalar": np.float32(0.5), "python": (1, 2.5, True, "s", float("inf"), float("nan"), -0.0),
        "keys": jax.random.split(jax.random.key(3), 2), "rbg": jax.random.key(1, impl="rbg"),
        "bf16": jnp.arange(3, dtype=jnp.bfloat16),
        "dtypes": [np.dtype("int8"), np.float32, jnp.float64], "set": frozenset({"a", "b"}),
        "ints": {3: [(), {}], 1: None},
    }
    _, loaded = roundtrip(folder / "plain.emjax", emjax.Mixture(emjax.Poisson(), 2), value)
    assert loaded["weak"].weak_type and not loaded["zero_d"].weak_type
    assert np.isnan(loaded["python"][5]) and str(loaded["python"][6]) == "-0.0"
    assert loaded["dtypes"][2] is jnp.float64 and loaded["dtypes"][1] is np.float32


# -- versions and damaged files ----------------------------------------------------------------


@pytest.fixture(scope="module")
def good_file(folder):
    path = folder / "good.emjax"
    emjax.save(path, emjax.Mixture(emjax.Poisson(), 2),
               emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.PoissonParams(jnp.arange(1.0, 5.0).reshape(2, 2))))
    return path


def _rewrite(src, dst, edit_manifest=None, drop=(), replace=None, add=None):
    """A copy of the zip ``src`` with its manifest edited, entries dropped, replaced or added."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename in drop:
                continue
            if info.filename == "emjax.json" and edit_manifest is not None:
                manifest = json.loads(data)
                edit_manifest(manifest)
                data = json.dumps(manifest).encode()
            if replace and info.filename in replace:
                data = replace[info.filename]
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_versions_recorded_and_future_refused(folder, good_file):
    with zipfile.ZipFile(good_file) as zf:
        manifest = json.loads(zf.read("emjax.json"))
    assert manifest["format"] == "emjax" and manifest["format_version"] == _io.FORMAT_VERSION == 1
    assert manifest["emjax_version"] == emjax.__version__
    path = _rewrite(good_file, folder / "future.emjax", lambda m: m.update(format_version=2, emjax_version="9.0"))
    expected = r"format version 2 \(written by emjax 9\.0\).*reads format versions up to 1"
    with pytest.raises(ValueError, match=expected) as err:
        emjax.load(path)
    assert str(path) in str(err.value)


def _corrupt_files(folder, good):
    raw = good.read_bytes()
    not_zip = folder / "not_zip.emjax"
    not_zip.write_text("hello")
    truncated = folder / "truncated.emjax"
    truncated.write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    at = raw.index(b"\x93NUMPY") + 200  # inside the first array's data
    flipped[at] ^= 0xFF
    bad_crc = folder / "bad_crc.emjax"
    bad_crc.write_bytes(bytes(flipped))
    other_zip = folder / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("data.txt", "x")

    def foreign_class(m):
        m["model"]["class"] = "os.system"

    def object_dtype(m):
        m["value"]["fields"]["weights"]["dtype"] = "object"

    def pickled(m):
        m["value"]["fields"]["weights"]["file"] = "arrays/pickle.npy"

    buf = __import__("io").BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    return {
        "not a zip": (not_zip, "not an emjax file"),
        "truncated": (truncated, "not an emjax file"),
        "bad CRC": (bad_crc, "corrupt"),
        "no manifest": (other_zip, "no emjax.json"),
        "bad JSON": (_rewrite(good, folder / "json.emjax", replace={"emjax.json": b"{not json"}), "not valid JSON"),
        "not emjax": (_rewrite(good, folder / "fmt.emjax", lambda m: m.update(format="npz")), "format 'emjax'"),
        "bad version": (_rewrite(good, folder / "ver.emjax", lambda m: m.update(format_version="1")), "format_version"),
        "missing array": (_rewrite(good, folder / "arr.emjax", drop=("arrays/0.npy",)), "arrays/0.npy is missing"),
        "foreign class": (_rewrite(good, folder / "cls.emjax", foreign_class), "'os.system' .* not one of emjax's"),
        "unknown field": (_rewrite(good, folder / "fld.emjax", lambda m: m["model"]["fields"].update(bogus=1)),
                          "fields"),
        "missing field": (_rewrite(good, folder / "nfld.emjax", lambda m: m["model"]["fields"].pop("n_components")),
                          "lacks the field 'n_components'"),
        "abstract class": (_rewrite(good, folder / "abs.emjax", lambda m: m["model"].update({"class": "emjax.Gating"})),
                           "not a concrete module"),
        "pickled array": (_rewrite(good, folder / "pkl.emjax", pickled, add={"arrays/pickle.npy": buf.getvalue()}),
                          "Object arrays cannot be loaded when allow_pickle=False"),
        "object dtype": (_rewrite(good, folder / "odt.emjax", object_dtype), "not a plain numeric dtype"),
    }


def test_damaged_files_raise_value_error(folder, good_file):
    """Every kind of damage is a ValueError naming the file, never a zipfile, json
    or numpy error (a pickled array is not unpickled; a class name is not imported)."""
    files = _corrupt_files(folder, good_file)
    for label, (path, message) in files.items():
        with pytest.raises(ValueError, match=message) as err:
            emjax.load(path)
        assert str(path) in str(err.value), label
    with pytest.raises(FileNotFoundError):
        emjax.load(folder / "absent.emjax")


def test_field_with_default_may_be_absent(folder):
    """A field the file lacks takes the class's default (a field added in a later
    emjax), so an older file still loads."""
    path = folder / "kmeans.emjax"
    emjax.save(path, emjax.KMeans(2), None)
    path = _rewrite(path, folder / "kmeans_old.emjax", lambda m: m["model"]["fields"].pop("offset"))
    assert emjax.load(path).model == emjax.KMeans(2)


# -- what cannot be saved ----------------------------------------------------------------------


class _Coin:
    def e_step(self, p, x, weights=None):
        return jnp.sum(x), jnp.sum(x) * jnp.log(p)

    def m_step(self, stats, p):
        return p


class _MyModel(emjax.EMModel):
    rate: jax.Array

    def e_step(self, params, x, weights=None):
        return jnp.sum(x), 0.0

    def m_step(self, stats, params):
        return params


class _MyMixture(emjax.Mixture):
    pass


@pytest.mark.parametrize(
    "model, value, where, what",
    [
        (emjax.UserModel(_Coin()), None, "model", "UserModel wrapping a tests.test_io._Coin"),
        (_MyModel(jnp.asarray(1.0)), None, "model", "tests.test_io._MyModel, which is not one of emjax's own"),
        (_MyMixture(emjax.Poisson(), 2), None, "model", "_MyMixture, which is not one of emjax's own"),
        (emjax.KMedoids(2, dissimilarity=lambda a, b: jnp.sum(a != b)), None, "model.dissimilarity",
         "<lambda> \\(code\\)"),
        (emjax.KMeans(2), {"f": print}, "value\\['f'\\]", "print \\(code\\)"),
        (emjax.KMeans(2), np.array([object()]), "value", "dtype object"),
    ],
    ids=["user_model", "user_subclass", "mixture_subclass", "lambda_metric", "function_in_value", "object_array"],
)
def test_code_refused(folder, model, value, where, what):
    """Code is refused at save time, naming where it is and why; nothing is written
    and an existing file is kept."""
    path = folder / "refused.emjax"
    path.write_bytes(b"old")
    with pytest.raises(TypeError, match=f"cannot store {where}: .*{what}.*never code \\(no pickle\\)"):
        emjax.save(path, model, value)
    assert path.read_bytes() == b"old"
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]


def test_traced_values_refused(folder):
    """Saving inside jit names the traced value instead of failing in NumPy."""
    with pytest.raises(TypeError, match="cannot store value: a traced value"):
        jax.jit(lambda a: emjax.save(folder / "traced.emjax", emjax.KMeans(2), a) or a)(1.0)
