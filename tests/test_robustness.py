"""Singularities, failing restarts and bad input: clear errors, never NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from tests.conftest import make_blobs


def collapse_setup():
    x, _ = make_blobs(30, n=200, d=2, k=2, sep=5.0)
    dup = x[0]
    x = np.vstack([x, dup[None]])  # x[0] appears twice
    base = emjax.Mixture(emjax.Gaussian("full"), 3)
    p = base.init(jax.random.key(0), jnp.asarray(x), "kmeans++")
    means = p.components.means.at[2].set(jnp.asarray(dup))
    covs = p.components.covariances.at[2].set(1e-4 * jnp.eye(2))
    return x, emjax.MixtureParams(jnp.array([0.45, 0.45, 0.1]), emjax.GaussianParams(means, covs))


def finite(tree):
    return all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(tree))


def test_collapse_with_default_prior_stays_finite():
    x, p0 = collapse_setup()
    prior = emjax.NormalInverseWishart.fraley_raftery(x, 3)
    model = emjax.Mixture(emjax.Gaussian("full", prior=prior), 3)
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=300)
    assert finite(res.params) and finite(res.trace)
    assert int(res.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    assert not bool(jnp.any(res.collapsed))
    # The prior keeps every covariance well away from singular.
    eig = np.linalg.eigvalsh(np.asarray(res.params.components.covariances))
    assert eig.min() > 1e-3


@pytest.mark.parametrize("reg_covar", [1e-6, 0.0])
def test_collapse_without_prior_is_reported_not_nan(reg_covar):
    x, p0 = collapse_setup()
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=reg_covar), 3)
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=300)
    assert finite(res.params)
    assert finite(res.trace)
    assert int(res.status[0]) == emjax.RESULTS.COLLAPSED
    assert np.asarray(res.collapsed[0]).tolist() == [False, False, True]
    assert "collapsed" in res.summary()


def test_one_failing_restart_does_not_poison_the_others():
    x, _ = make_blobs(31, n=300, d=2, k=2)
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0), 2)
    good = model.init(jax.random.key(0), jnp.asarray(x), "kmeans")

    def init(key, x):
        # Restart keys decide: about half start where the density underflows to
        # zero at every point (valid parameters, a non-finite objective).
        bad = jax.random.bernoulli(key)
        means = jnp.where(bad, 1e300, 1.0) * good.components.means
        return emjax.MixtureParams(good.weights, emjax.GaussianParams(means, good.components.covariances))

    res = emjax.fit(model, x, key=jax.random.key(5), n_restarts=8, init=init, max_iter=50)
    status = np.asarray(res.status)
    assert (status == emjax.RESULTS.INIT_FAILED).any() and (status != emjax.RESULTS.INIT_FAILED).any()
    assert finite(res.params)
    assert status[int(res.best)] != emjax.RESULTS.INIT_FAILED
    ok = status != emjax.RESULTS.INIT_FAILED
    np.testing.assert_allclose(np.asarray(res.objective)[ok], float(res.objective[res.best]), rtol=1e-9)

    def all_bad(key, x):
        return emjax.MixtureParams(good.weights, emjax.GaussianParams(1e300 * good.components.means, good.components.covariances))

    with pytest.raises(RuntimeError, match="non-finite objective"):
        emjax.fit(model, x, key=jax.random.key(5), n_restarts=2, init=all_bad, max_iter=5)
    res = emjax.fit(model, x, key=jax.random.key(5), n_restarts=2, init=all_bad, max_iter=5, throw=False)
    assert np.all(np.asarray(res.status) == emjax.RESULTS.INIT_FAILED)


MODEL = emjax.Mixture(emjax.Gaussian("full"), 2)
KEY = jax.random.key(0)
X = make_blobs(32, n=50, d=2, k=2)[0]


@pytest.mark.parametrize(
    "x, error, match",
    [
        (X[:, 0], ValueError, "2-D array"),
        (X[None], ValueError, "2-D array"),
        (np.zeros((0, 2)), ValueError, "at least one row"),
        (np.where(np.arange(100).reshape(50, 2) == 7, np.nan, X), ValueError, "NaN or infinite.*row 3, column 1"),
        (np.where(np.arange(100).reshape(50, 2) == 0, np.inf, X), ValueError, "infinite"),
        (X[:1], ValueError, "larger than the number of data points"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "numeric"),
        (X.astype(np.complex128), TypeError, "complex"),
    ],
    ids=["1d", "3d", "empty", "nan", "inf", "k>n", "strings", "complex"],
)
def test_bad_data_is_rejected_before_compiling(x, error, match):
    with pytest.raises(error, match=match):
        emjax.fit(MODEL, x, key=KEY)


def good_params():
    return emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.GaussianParams(jnp.zeros((2, 2)), jnp.stack([jnp.eye(2)] * 2)))


@pytest.mark.parametrize(
    "edit, error, match",
    [
        (lambda p: emjax.MixtureParams(jnp.array([0.5, 0.6]), p.components), ValueError, "sum to 1"),
        (lambda p: emjax.MixtureParams(jnp.array([1.5, -0.5]), p.components), ValueError, "non-negative"),
        (lambda p: emjax.MixtureParams(jnp.array([1.0]), p.components), ValueError, "weights must have shape"),
        (lambda p: emjax.MixtureParams(p.weights, emjax.GaussianParams(jnp.zeros((2, 3)), p.components.covariances)),
         ValueError, "means must have shape"),
        (lambda p: emjax.MixtureParams(p.weights, emjax.GaussianParams(p.components.means, jnp.stack([jnp.eye(2), -jnp.eye(2)]))),
         ValueError, r"covariances\[1\] is not positive definite"),
        (lambda p: emjax.MixtureParams(p.weights, emjax.GaussianParams(p.components.means, jnp.array([[[1.0, 0.5], [0.0, 1.0]]] * 2))),
         ValueError, "not symmetric"),
        (lambda p: emjax.MixtureParams(p.weights, emjax.GaussianParams(p.components.means.at[0, 0].set(jnp.nan), p.components.covariances)),
         ValueError, "means contain NaN"),
    ],
    ids=["weights-sum", "negative-weight", "weights-shape", "means-shape", "not-pd", "asymmetric", "nan-means"],
)
def test_inconsistent_initial_parameters_are_rejected(edit, error, match):
    with pytest.raises(error, match=match):
        emjax.fit(MODEL, X, key=KEY, init=edit(good_params()))


def test_bad_arguments():
    with pytest.raises(TypeError, match="explicit PRNG key"):
        emjax.fit(MODEL, X, key=None)
    with pytest.raises(TypeError, match="PRNG key"):
        emjax.fit(MODEL, X, key=0)
    with pytest.raises(ValueError, match="n_restarts"):
        emjax.fit(MODEL, X, key=KEY, n_restarts=0)
    with pytest.raises(ValueError, match="tol"):
        emjax.fit(MODEL, X, key=KEY, tol=float("nan"))
    with pytest.raises(ValueError, match="identical"):
        emjax.fit(MODEL, X, key=KEY, init=good_params(), n_restarts=3)
    with pytest.raises(ValueError, match="unknown init method"):
        emjax.fit(MODEL, X, key=KEY, init="nope")
    with pytest.raises(ValueError, match="weights must be non-negative|non-negative"):
        emjax.fit(MODEL, X, key=KEY, weights=-np.ones(50))
    with pytest.raises(ValueError, match=r"shape \(50,\)"):
        emjax.fit(MODEL, X, key=KEY, weights=np.ones(49))
    with pytest.raises(ValueError, match="covariance_type"):
        emjax.Gaussian("banana")
    with pytest.raises(ValueError, match="cannot freeze"):
        emjax.Mixture(emjax.Gaussian(), 2, frozen=("precisions",))
    with pytest.raises(ValueError, match="> 0"):
        emjax.Dirichlet(-0.5)
    with pytest.raises(ValueError, match="nu0"):
        emjax.NormalInverseWishart(np.zeros(2), 0.0, 0.5, np.eye(2))
    with pytest.raises(ValueError, match="n_components"):
        emjax.Mixture(emjax.Gaussian(), 0)


def test_integer_data_is_accepted_as_float():
    xi = np.round(X * 10).astype(np.int64)
    res = emjax.fit(MODEL, xi, key=KEY, max_iter=5)
    assert jnp.issubdtype(res.params.weights.dtype, jnp.floating) and finite(res.params)
