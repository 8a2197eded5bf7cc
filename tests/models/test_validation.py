"""Input checks of the fitted-mixture API and of seeding: NumPy input, invalid data,
feature counts, sample weights, sample sizes, sparse input, and what runs under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse

import emjax
from emjax._checks import as_data_matrix
from tests.conftest import make_blobs

K = 3


@pytest.fixture(scope="module")
def data():
    return make_blobs(11, n=90, d=2, k=K)[0]


@pytest.fixture(scope="module")
def fitted(data):
    model = emjax.Mixture(emjax.Gaussian("full"), K)
    return model, model.init(jax.random.key(0), jnp.asarray(data), "kmeans")


# -- NumPy input to seeding -------------------------------------------------------------------


def test_seeding_accepts_numpy_arrays(data):
    key = jax.random.key(4)
    centers, labels = emjax.kmeans(key, data, K)
    ref_centers, ref_labels = emjax.kmeans(key, jnp.asarray(data), K)
    np.testing.assert_array_equal(centers, ref_centers)
    np.testing.assert_array_equal(labels, ref_labels)
    seeds = emjax.kmeans_plus_plus(key, data, K)
    np.testing.assert_array_equal(seeds, emjax.kmeans_plus_plus(key, jnp.asarray(data), K))
    # The centres are rows of the data and every label is a nearest centre.
    assert all(np.any(np.all(data == c, axis=1)) for c in np.asarray(seeds))
    dists = ((data[:, None, :] - np.asarray(centers)[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, dists.argmin(1))


@pytest.mark.parametrize("method", ["kmeans", "kmeans++", "random", "random_resp"])
def test_mixture_init_accepts_numpy_arrays(data, method):
    model = emjax.Mixture(emjax.Gaussian("diag"), K)
    from_numpy = model.init(jax.random.key(1), data, method)
    from_jax = model.init(jax.random.key(1), jnp.asarray(data), method)
    for a, b in zip(jax.tree.leaves(from_numpy), jax.tree.leaves(from_jax)):
        np.testing.assert_array_equal(a, b)
    model.validate_params(from_numpy, data)


# -- prediction validates its input ----------------------------------------------------------


def predictors(model, params):
    return {
        "log_prob": lambda x: model.log_prob(params, x),
        "posterior": lambda x: model.posterior(params, x),
        "predict": lambda x: model.predict(params, x),
        "score": lambda x: model.score(params, x),
    }


@pytest.mark.parametrize("method", ["log_prob", "posterior", "predict", "score"])
def test_prediction_refuses_nan_and_names_the_entry(fitted, data, method):
    model, params = fitted
    call = predictors(model, params)[method]
    x = data[:6].copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite.*row 3, column 1"):
        call(x)
    x[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"row 3, column 1"):
        call(x)


@pytest.mark.parametrize("method", ["log_prob", "posterior", "predict", "score"])
def test_prediction_refuses_wrong_rank_dtype_and_width(fitted, data, method):
    model, params = fitted
    call = predictors(model, params)[method]
    with pytest.raises(ValueError, match="2-D"):
        call(data[:, 0])
    with pytest.raises(TypeError, match="numeric"):
        call(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(ValueError, match="x has 3 features but the mixture's components have 2"):
        call(np.ones((5, 3)))


def test_a_nan_row_is_not_given_label_zero(fitted, data):
    model, params = fitted
    x = data[:4].copy()
    x[2] = np.nan
    with pytest.raises(ValueError, match="row 2"):
        model.predict(params, x)


def test_prediction_of_fewer_points_than_components(fitted, data):
    model, params = fitted
    one = data[:1]
    lp = model.log_prob(params, one)
    assert lp.shape == (1,)
    np.testing.assert_allclose(lp, model.log_prob(params, data[:5])[:1], rtol=1e-12)
    assert model.predict(params, one).shape == (1,)
    assert model.posterior(params, list(one)).shape == (1, K)


def test_prediction_checks_the_family_support():
    model = emjax.Mixture(emjax.Poisson(), 2)
    params = emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.PoissonParams(jnp.array([[1.0, 2.0], [5.0, 3.0]])))
    np.testing.assert_allclose(model.log_prob(params, np.array([[0, 1], [2, 3]])).shape, (2,))
    with pytest.raises(ValueError, match="non-negative"):
        model.predict(params, np.array([[0.0, 1.0], [-2.0, 3.0]]))
    with pytest.raises(ValueError, match="x has 3 features but the mixture's components have 2"):
        model.predict(params, np.ones((4, 3)))


def test_under_jit_only_static_checks_run(fitted, data):
    model, params = fitted
    log_prob = jax.jit(model.log_prob)
    x = data[:5].copy()
    x[1, 0] = np.nan
    # A traced x cannot be searched for NaN: its row's density is NaN instead.
    lp = np.asarray(log_prob(params, jnp.asarray(x)))
    assert np.isnan(lp[1]) and np.all(np.isfinite(np.delete(lp, 1)))
    # The static checks still run while tracing.
    with pytest.raises(ValueError, match="x has 3 features but the mixture's components have 2"):
        log_prob(params, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match="2-D"):
        log_prob(params, jnp.ones(5))
    # vmap over parameter sets and grad in x still work.
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    out = jax.vmap(lambda p: model.predict(p, data))(batch)
    np.testing.assert_array_equal(out[0], out[1])
    g = jax.grad(lambda x: model.score(params, x))(jnp.asarray(data))
    assert g.shape == data.shape and bool(jnp.all(jnp.isfinite(g)))


def test_score_validates_weights(fitted, data):
    model, params = fitted
    x = data[:10]
    w = np.arange(1.0, 11.0)
    lp = np.asarray(model.log_prob(params, x))
    np.testing.assert_allclose(float(model.score(params, x, w)), np.sum(w * lp) / np.sum(w), rtol=1e-12)
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        model.score(params, x, np.ones(9))
    with pytest.raises(ValueError, match="non-negative"):
        model.score(params, x, -w)
    with pytest.raises(ValueError, match="NaN"):
        model.score(params, x, np.where(w > 5, np.nan, w))
    with pytest.raises(ValueError, match="all zero"):
        model.score(params, x, np.zeros(10))


@pytest.mark.parametrize("n", [0, -3, 2.5, 4.0, True, "5"])
def test_sample_refuses_a_bad_number_of_points(fitted, n):
    model, params = fitted
    with pytest.raises(ValueError, match="positive integer"):
        model.sample(jax.random.key(0), params, n)


def test_sample_accepts_numpy_integers(fitted):
    model, params = fitted
    xs, z = model.sample(jax.random.key(0), params, np.int64(7))
    assert xs.shape == (7, 2) and z.shape == (7,)


# -- sparse input ------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [scipy.sparse.csr_matrix, scipy.sparse.csr_array, scipy.sparse.coo_matrix])
def test_sparse_input_says_to_pass_a_dense_array(fitted, data, make):
    model, params = fitted
    sparse = make(data)
    for call in (
        lambda: as_data_matrix(sparse),
        lambda: model.validate_data(sparse),
        lambda: model.log_prob(params, sparse),
        lambda: model.predict(params, sparse),
        lambda: emjax.Poisson().validate_data(make(np.ones((4, 2)))),
        lambda: emjax.Mixture(emjax.Bernoulli(), 2).validate_data(make(np.eye(4))),
    ):
        with pytest.raises(TypeError, match=r"sparse.*dense array: pass x\.toarray\(\)"):
            call()


def test_sparse_input_to_fit_is_refused(data):
    with pytest.raises(TypeError, match="sparse"):
        emjax.fit(emjax.Mixture(emjax.Gaussian("diag"), 2), scipy.sparse.csr_matrix(data), key=jax.random.key(0))


def test_nan_message_says_to_remove_or_impute():
    with pytest.raises(ValueError, match="Remove or impute") as info:
        as_data_matrix(np.array([[1.0, np.nan], [0.0, 1.0]]))
    assert "missing-data" not in str(info.value)
