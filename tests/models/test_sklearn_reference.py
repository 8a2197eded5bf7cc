"""emjax against scikit-learn's GaussianMixture from identical initial parameters."""

import warnings

import jax
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

import emjax
from tests.conftest import make_blobs

K = 3


def initial_params(x, cov_type, seed=1):
    rng = np.random.default_rng(seed)
    n, d = x.shape
    means = x[rng.choice(n, K, replace=False)]
    base = np.cov(x.T, bias=True)
    weights = np.array([0.5, 0.3, 0.2])
    cov = {
        "full": np.stack([base * s for s in (1.0, 0.7, 1.3)]),
        "tied": base,
        "diag": np.stack([np.diag(base) * s for s in (1.0, 0.7, 1.3)]),
        "spherical": np.array([1.0, 0.7, 1.3]) * np.mean(np.diag(base)),
    }[cov_type]
    return weights, means, cov


def precision(cov, cov_type):
    if cov_type in ("full", "tied"):
        return np.linalg.inv(cov)
    return 1.0 / cov


def rel_err(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("cov_type", ["full", "diag", "spherical", "tied"])
def test_fifty_iterations_match_sklearn(cov_type):
    x, _ = make_blobs(3, n=500, d=3, k=K, sep=2.5)
    w0, m0, c0 = initial_params(x, cov_type)
    sk = GaussianMixture(
        K, covariance_type=cov_type, weights_init=w0, means_init=m0, precisions_init=precision(c0, cov_type),
        max_iter=50, tol=0.0, reg_covar=1e-6,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x)
    assert sk.n_iter_ == 50

    # reg_scale=1: scikit-learn's absolute reg_covar (emjax's is relative to the data's variances).
    model = emjax.Mixture(emjax.Gaussian(cov_type, reg_covar=1e-6, reg_scale=1.0), K)
    p0 = emjax.MixtureParams(w0, emjax.GaussianParams(m0, c0))
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=50, tol=0.0)
    assert int(res.n_iter[0]) == 50
    p = res.params
    assert p.weights.dtype == np.float64
    assert rel_err(p.weights, sk.weights_) < 1e-6
    assert rel_err(p.components.means, sk.means_) < 1e-6
    assert rel_err(p.components.covariances, sk.covariances_) < 1e-6
    ll_emjax = float(res.objective[0]) / x.shape[0]
    assert abs(ll_emjax - sk.score(x)) < 1e-6 * abs(sk.score(x))
    # The iterations moved the parameters: the comparison is not of the start.
    assert rel_err(p.components.means, m0) > 1e-2


@pytest.mark.parametrize("cov_type", ["full", "diag", "spherical", "tied"])
def test_density_api_matches_sklearn(cov_type):
    x, _ = make_blobs(4, n=300, d=4, k=K)
    w0, m0, c0 = initial_params(x, cov_type, seed=2)
    sk = GaussianMixture(K, covariance_type=cov_type, weights_init=w0, means_init=m0,
                         precisions_init=precision(c0, cov_type), max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(x)
    model = emjax.Mixture(emjax.Gaussian(cov_type), K)
    params = emjax.MixtureParams(sk.weights_, emjax.GaussianParams(sk.means_, sk.covariances_))
    np.testing.assert_allclose(model.log_prob(params, x), sk.score_samples(x), rtol=1e-10)
    np.testing.assert_allclose(model.posterior(params, x), sk.predict_proba(x), atol=1e-10)
    np.testing.assert_array_equal(model.predict(params, x), sk.predict(x))
    assert model.n_parameters(x.shape[1]) == sk._n_parameters()
    np.testing.assert_allclose(model.bic(params, x), sk.bic(x), rtol=1e-10)
    np.testing.assert_allclose(model.aic(params, x), sk.aic(x), rtol=1e-10)
