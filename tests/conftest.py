"""Reference comparisons run in float64; float32 tests cast their data explicitly.

The data generators and the family registry live in ``tests/registry.py``; the
names other modules import from here are re-exported.

Compile time dominates the suite, so before JAX starts (here, and through the
environment in the subprocesses the tests start) two things cut it without
touching numerics as the tests check them: XLA's cheaper code generation (no
expensive LLVM passes; the classic elemental emitters instead of the fusion
emitters, and copy insertion without region analysis: together they halve the
compile time of a fit's program on CPU), and a persistent compilation cache, so a program compiled again after the per-module
``jax.clear_caches()`` (or in another pytest-xdist worker) is read back from disk.
Set ``EMJAX_TEST_FULL_OPT=1`` to run with XLA's default optimisation.
"""

import os
import tempfile

if not os.environ.get("EMJAX_TEST_FULL_OPT"):
    _FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
              " --xla_cpu_use_fusion_emitters=false --xla_cpu_copy_insertion_use_region_analysis=false")
    if _FLAGS not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAGS).strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "emjax-test-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

from tests.registry import FAMILY_NAMES, family_model, family_sample, make_blobs  # noqa: E402

__all__ = [
    "FAMILY_NAMES", "family_model", "family_sample", "make_blobs",
    "assert_monotone", "fit_weighted_and_repeated", "assert_weighted_equals_repeated", "repeat_rows",
    "random_start", "fitting_loglik",
]


@pytest.fixture
def blobs():
    return make_blobs(0)[0]


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module: one process compiles
    hundreds of programs over the suite, and keeping them all grew it past 4 GB."""
    yield
    jax.clear_caches()


def random_start(model, x, seed):
    """``model.init(jax.random.key(seed), x, "random")``, compiled once per model and
    data shape (the seed is traced): a fixed start that EM fits can share."""
    return _random_start(model, jax.random.key(seed), jax.tree.map(jnp.asarray, x))


@eqx.filter_jit
def _random_start(model, key, x):
    return model.init(key, x, "random")


@eqx.filter_jit
def fitting_loglik(model, params, x):
    """The objective a fit reports at ``params``: the E-step's log-likelihood of the
    model adapted to ``x`` (a Gaussian's ``reg_covar`` penalty at the data's scale)."""
    return model.adapt(x).e_step(params, x)[1]


def assert_monotone(trace, rtol=1e-9):
    """Every restart's objective trace ``(R, T)`` is finite and never drops by more
    than ``rtol`` relative."""
    trace = np.asarray(trace)
    assert np.all(np.isfinite(trace))
    steps = np.diff(trace, axis=-1)
    assert np.all(steps >= -rtol * np.abs(trace[..., 1:])), steps.min()


def fit_weighted_and_repeated(model, x, counts, p0, max_iter=40):
    """Fits with integer ``counts`` as weights and with the rows repeated that often,
    from the same start; asserts they agree (:func:`assert_weighted_equals_repeated`)
    and returns the repeated fit. ``x`` may be a pytree of arrays with a leading row
    axis (e.g. ``(successes, trials)``)."""
    import emjax

    weighted = emjax.fit(model, x, key=jax.random.key(0), init=p0, weights=counts, max_iter=max_iter, tol=0.0)
    repeated = emjax.fit(model, repeat_rows(x, counts), key=jax.random.key(0), init=p0, max_iter=max_iter, tol=0.0)
    assert_weighted_equals_repeated(weighted, repeated)
    return repeated


def repeat_rows(x, counts):
    """Row ``n`` of every leaf of ``x`` repeated ``counts[n]`` times (numpy)."""
    return jax.tree.map(lambda a: np.repeat(np.asarray(a), counts, axis=0), x)


def assert_weighted_equals_repeated(weighted, repeated):
    """A fit with integer sample weights equals the fit to the rows repeated that
    often, from the same start: parameters 1e-9, trace 1e-10, final objective 1e-12."""
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.trace, repeated.trace, rtol=1e-10)
    np.testing.assert_allclose(weighted.objective, repeated.objective, rtol=1e-12)


#: The files that take longest, longest first:
#: pytest-xdist's ``--dist loadfile --no-loadscope-reorder`` (pyproject.toml) hands out
#: whole files in collection order, so starting the long ones first keeps both workers
#: busy to the end (longest job first). Without ``--no-loadscope-reorder`` xdist orders
#: files by their number of tests instead, and ``tests/sklearn/test_estimators.py`` (113 s,
#: 19 tests) started at 74% and ran alone for the last two minutes.
LONG_FILES = (  # seconds of test time each, measured at 03ef615 (2-core CPU, cold compilation cache, -n 2)
    "tests/sklearn/test_estimators.py",  # 95
    "tests/sklearn/test_sklearn_gaussian_mixture.py",  # 87
    "tests/test_readme.py",  # 66
    "tests/test_adjoint.py",  # 65
    "tests/test_doctests.py",  # 63
    "tests/families/test_conformance.py",  # 56
    "tests/test_notebooks.py",  # 54
    "tests/data/test_sharded.py",  # 41 (one subprocess)
    "tests/algorithms/test_em_variants.py",  # 41
    "tests/test_compile_once.py",  # 40 (one subprocess)
    "tests/test_properties.py",  # 38
    "tests/data/test_sources.py",  # 36
    "tests/families/test_student.py",  # 35
    "tests/algorithms/test_online_em.py",  # 34
    "tests/data/test_stream.py",  # 32
    "tests/algorithms/test_gradient.py",  # 31
    "tests/models/test_missing.py",  # 31
    "tests/algorithms/test_batch_em.py",  # 28
    "tests/models/test_variational.py",  # 24
    "tests/cli/test_cli.py",  # 24
    "tests/families/test_counts.py",  # 23
    "tests/families/test_regularization.py",  # 22
)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        path = item.nodeid.split("::", 1)[0]
        return LONG_FILES.index(path) if path in LONG_FILES else len(LONG_FILES)

    items.sort(key=rank)  # stable: the order within a file and among the others is kept
