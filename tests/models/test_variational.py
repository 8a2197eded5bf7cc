"""VariationalGaussianMixture: scikit-learn's BayesianGaussianMixture step for step,
the ELBO's monotonicity, emptied components, the drivers, predictions, bad input.

Compile time: one step program per (weight prior, covariance type), shared by the
tests of that configuration; the fits use small data (N = 300, D = 2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import equinox as eqx
import pytest
import scipy.stats
from scipy.special import gammaln, multigammaln
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

import emjax
from tests.conftest import assert_monotone, fit_weighted_and_repeated

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")
PRIOR_TYPES = ("dirichlet_process", "dirichlet_distribution")
K = 4
N_STEPS = 30
PREDICTIONS = {("full", "dirichlet_process"), ("diag", "dirichlet_distribution"),
               ("spherical", "dirichlet_process"), ("tied", "dirichlet_distribution")}

_rng = np.random.default_rng(0)
# Three overlapping, sheared blobs: the components move for many iterations.
X = np.concatenate([_rng.normal(m, s, (100, 2)) for m, s in ((-3.0, 0.5), (0.0, 0.8), (3.0, 0.4))])
X = X @ np.array([[1.0, 0.3], [0.0, 1.0]])
RESP = _rng.dirichlet(np.ones(K), size=X.shape[0])


def sklearn_constant(model, n_points, d):
    """The constants scikit-learn's lower bound leaves out (see VariationalGaussianMixture)."""
    k = model.n_components
    alpha0, kappa0, nu0, _, b0 = model._hyper(d, np.float64)
    b0 = np.asarray(b0) if np.ndim(b0) == 2 else np.diag(np.asarray(b0))
    log_c = nu0 * d / 2 * np.log(2) - nu0 / 2 * np.linalg.slogdet(b0)[1] + multigammaln(nu0 / 2, d)
    c_w = k * np.log(alpha0) if model.stick_breaking else gammaln(k * alpha0) - k * gammaln(alpha0)
    return k * (d * (d - 1) / 4 * np.log(np.pi) - log_c + d / 2 * np.log(kappa0)) - n_points * d / 2 * np.log(2 * np.pi) + c_w


@eqx.filter_jit
def _step(model, params, x):
    """One E-step and M-step: the new posterior, scikit-learn's bound (its convention,
    constants included) and the ELBO at ``params`` (the fit's objective)."""
    stats, ll = model.e_step(params, x)
    new = model.m_step(stats, params)
    q = model.expected_log_joint
    sklearn_convention = ll - q(stats, params) + q(stats, new) + model.log_prior(new)
    return new, sklearn_convention, ll + model.log_prior(params)


def _sklearn(covariance_type, prior_type, **kwargs):
    sk = BayesianGaussianMixture(n_components=K, covariance_type=covariance_type,
                                 weight_concentration_prior_type=prior_type, reg_covar=0.0, **kwargs)
    sk._check_parameters(X)
    sk._initialize(X, RESP)
    return sk


def _sklearn_params(sk, prior_type):
    wc, kappa, means, dof, cov, prec_chol = sk._get_parameters()
    return (np.stack(wc) if prior_type == "dirichlet_process" else wc), kappa, means, dof, cov, prec_chol


def _ours(model, p):
    return (p.weight_concentration, p.mean_precision, p.means, p.degrees_of_freedom, p.covariances,
            model.precisions_cholesky(p))


def _assert_params(model, p, sk, prior_type):
    for ours, theirs in zip(_ours(model, p), _sklearn_params(sk, prior_type)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-9)


# Every covariance type, each weight prior on two of them (the weight prior's updates do
# not depend on the covariance type: the cross product would add compiles, not cases).
CONFIGS = [("full", "dirichlet_process"), ("full", "dirichlet_distribution"), ("diag", "dirichlet_distribution"),
           ("spherical", "dirichlet_process"), ("tied", "dirichlet_distribution")]


@pytest.mark.parametrize("covariance_type,prior_type", CONFIGS)
def test_equals_sklearn_step_for_step_and_the_elbo_never_decreases(covariance_type, prior_type):
    model = emjax.VariationalGaussianMixture(K, covariance_type, weight_concentration_prior_type=prior_type).adapt(X)
    sk = _sklearn(covariance_type, prior_type)
    params = model.init_from_resp(X, RESP)
    _assert_params(model, params, sk, prior_type)
    constant = sklearn_constant(model, X.shape[0], X.shape[1])
    bounds, elbos = [], []
    for t in range(N_STEPS):
        log_prob_norm, log_resp = sk._e_step(X)
        sk._m_step(X, log_resp)
        params, bound, elbo = _step(model, params, X)
        np.testing.assert_allclose(float(bound) - constant, float(np.squeeze(sk._compute_lower_bound(log_resp, log_prob_norm))),
                                   rtol=1e-9, atol=1e-6)
        bounds.append(float(bound))
        elbos.append(float(elbo))
        if t in (0, N_STEPS - 1):  # after one iteration and after many
            _assert_params(model, params, sk, prior_type)
    elbos.append(float(_step(model, params, X)[2]))
    assert_monotone(np.asarray(elbos)[None], rtol=1e-12)
    assert elbos[-1] > elbos[0]  # it moved
    # scikit-learn's bound at t lies between the ELBO of the E-steps before and after it.
    slack = 1e-9 * np.abs(elbos[1:])
    assert np.all(np.asarray(elbos[:-1]) <= np.asarray(bounds) + slack)
    assert np.all(np.asarray(bounds) <= np.asarray(elbos[1:]) + slack)

    if (covariance_type, prior_type) not in PREDICTIONS:
        return
    # Predictions against scikit-learn's fitted model and closed forms (per covariance
    # type once: they do not depend on the weight prior beyond the weights).
    sk._set_parameters(sk._get_parameters())
    np.testing.assert_allclose(model.weights(params), sk.weights_, rtol=1e-9)
    np.testing.assert_allclose(model.posterior(params, X), sk.predict_proba(X), rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(model.predict(params, X), sk.predict(X))
    np.testing.assert_allclose(model.log_prob(params, X, "expected"), sk.score_samples(X), rtol=1e-9)
    plugin = GaussianMixture(K, covariance_type=covariance_type)
    plugin.weights_, plugin.means_, plugin.precisions_cholesky_ = sk.weights_, sk.means_, sk.precisions_cholesky_
    np.testing.assert_allclose(model.log_prob(params, X, "plugin"), plugin.score_samples(X), rtol=1e-9)
    full = emjax.Gaussian(covariance_type).full_covariances(emjax.GaussianParams(params.means, params.covariances))
    nu = np.broadcast_to(np.asarray(params.degrees_of_freedom), (K,))
    kappa, d = np.asarray(params.mean_precision), X.shape[1]
    dof = nu + 1 - d
    t_densities = [
        scipy.stats.multivariate_t(params.means[k], full[k] * (1 + kappa[k]) * nu[k] / (kappa[k] * dof[k]), df=dof[k]).pdf(X)
        for k in range(K)
    ]
    predictive = np.log(np.asarray(model.weights(params)) @ np.asarray(t_densities))
    np.testing.assert_allclose(model.log_prob(params, X), predictive, rtol=1e-9)


N_FIT = 200


@pytest.fixture(scope="module")
def batch():
    """A batch fit (full covariances, stick-breaking weights) from RESP, and its start."""
    model = emjax.VariationalGaussianMixture(K, "full")
    p0 = model.adapt(X).init_from_resp(X, RESP)
    return model, p0, emjax.fit(model, X, key=jax.random.key(0), init=p0, max_iter=N_FIT, tol=0.0)


def test_fit_is_the_same_iteration_on_a_stream_and_with_weights(batch):
    model, p0, res = batch
    sk = _sklearn("full", "dirichlet_process")
    for _ in range(N_FIT):
        sk._m_step(X, sk._e_step(X)[1])
    _assert_params(model, res.params, sk, "dirichlet_process")
    assert_monotone(res.trace, rtol=1e-12)
    # A host stream (three chunks; the priors' defaults measured over all of them).
    stream = emjax.fit(model, emjax.Stream(X, chunk_size=100), key=jax.random.key(0), init=p0, max_iter=20, tol=0.0)
    np.testing.assert_allclose(stream.trace, res.trace[:, :21], rtol=1e-10)
    # Integer weights are repetition counts (the priors' data defaults included).
    # Bootstrap counts: they sum to N, so the fit to the repeated rows is the batch
    # fixture's program (the same steps too).
    counts = np.bincount(np.random.default_rng(1).integers(0, X.shape[0], X.shape[0]), minlength=X.shape[0])
    assert counts.sum() == X.shape[0] and counts.max() > 1 and counts.min() == 0
    fit_weighted_and_repeated(model, X, counts, p0, max_iter=N_FIT)


def test_incremental_em_climbs_the_elbo_to_the_batch_optimum(batch):
    model, p0, res = batch
    incremental = emjax.fit(model, X, key=jax.random.key(0), init=p0, max_iter=N_FIT, tol=1e-10,
                            algorithm=emjax.IncrementalEM(n_blocks=6))
    assert_monotone(incremental.trace, rtol=1e-12)
    np.testing.assert_allclose(incremental.objective, res.objective, rtol=1e-6)


def _blobs(dtype=np.float64):
    rng = np.random.default_rng(3)
    centres = np.array([[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]])
    return np.concatenate([rng.normal(c, 0.7, (100, 2)) for c in centres]).astype(dtype)


BLOBS_MODEL = emjax.VariationalGaussianMixture(8, "full")  # scikit-learn's default priors (alpha0 = 1/K)


def _fit_blobs(dtype):
    # From some starts the ELBO converges (1e-9 per point) with a spare component still at 0.3%:
    # a local optimum. The best of these restarts (key 1) empties all five.
    return emjax.fit(BLOBS_MODEL, _blobs(dtype), key=jax.random.key(1), n_restarts=3, max_iter=400, tol=1e-9)


@pytest.fixture(scope="module")
def blobs_fit():
    return _fit_blobs(np.float64)


def test_superfluous_components_are_emptied_through_restarts(blobs_fit):
    # K = 8 on three well-separated blobs: five components empty out.
    res = blobs_fit
    assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)
    assert np.all(np.isfinite(res.objective)) and all(np.all(np.isfinite(a)) for a in jax.tree.leaves(res.restart_params))
    w = np.sort(np.asarray(BLOBS_MODEL.weights(res.params)))[::-1]
    np.testing.assert_allclose(w[:3], 1 / 3, atol=0.01)
    assert np.all(w[3:] < 1e-3), w  # an emptied component keeps about alpha0 / N
    assert np.all(np.asarray(res.objective) <= float(res.objective[res.best]) + 1e-9)
    # The emptied components are back at the prior: kappa = kappa0, nu = nu0.
    empty = np.argsort(np.asarray(BLOBS_MODEL.weights(res.params)))[:5]
    np.testing.assert_allclose(np.asarray(res.params.mean_precision)[empty], 1.0, atol=0.1)
    labels = np.asarray(BLOBS_MODEL.predict(res.params, _blobs()))
    assert emjax.adjusted_rand_index(labels, np.repeat(np.arange(3), 100)) > 0.99


def test_float32_agrees_with_float64(blobs_fit):
    f32 = _fit_blobs(np.float32)
    assert f32.objective.dtype == jnp.float32
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(f32.restart_params))
    np.testing.assert_allclose(float(f32.objective[f32.best]), float(blobs_fit.objective[blobs_fit.best]), rtol=1e-6)


def test_unconstrained_coordinates_round_trip():
    for covariance_type in COVARIANCE_TYPES:
        model = emjax.VariationalGaussianMixture(K, covariance_type, weight_concentration_prior_type="dirichlet_distribution")
        p = model.init_from_resp(X, RESP)
        back = model.constrain(model.unconstrain(p))
        for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(p)):
            np.testing.assert_allclose(a, b, rtol=1e-10)


def test_algorithms_that_do_not_apply_are_refused_before_compiling():
    model = emjax.VariationalGaussianMixture(K)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="temperature"):
        emjax.fit(model, X, key=key, algorithm=emjax.AnnealedEM())
    with pytest.raises(TypeError, match="HardEM needs e_step.*assignment"):
        emjax.fit(model, X, key=key, algorithm=emjax.HardEM())
    with pytest.raises(TypeError, match="assignment"):
        emjax.fit(model, X, key=key, algorithm=emjax.StochasticEM())
    with pytest.raises(TypeError, match="conditional_m_step|param_groups|groups"):
        emjax.fit(model, X, key=key, algorithm=emjax.ECM())
    with pytest.raises(TypeError, match="reinit_collapsed"):
        emjax.fit(model, X, key=key, reinit_collapsed=True)


def test_bad_input_is_refused_with_a_clear_error():
    V = emjax.VariationalGaussianMixture
    with pytest.raises(ValueError, match="covariance_type"):
        V(3, "banded")
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        V(3, "VEV")  # mclust's parsimonious models are not variational families here
    with pytest.raises(ValueError, match="weight_concentration_prior_type"):
        V(3, weight_concentration_prior_type="pitman_yor")
    with pytest.raises(ValueError, match="weight_concentration_prior must be a finite number > 0"):
        V(3, weight_concentration_prior=-1.0)
    with pytest.raises(ValueError, match="mean_precision_prior"):
        V(3, mean_precision_prior=0.0)
    with pytest.raises(TypeError, match="degrees_of_freedom_prior"):
        V(3, degrees_of_freedom_prior="two")
    with pytest.raises(ValueError, match=r"mean_prior must have shape \(D,\)"):
        V(3, mean_prior=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="full covariance_prior is not positive definite"):
        V(3, covariance_prior=-np.eye(2))
    with pytest.raises(ValueError, match="diag covariance_prior must be a \\(D,\\) vector"):
        V(3, "diag", covariance_prior=np.eye(2))
    with pytest.raises(ValueError, match="spherical covariance_prior must be positive"):
        V(3, "spherical", covariance_prior=0.0)
    with pytest.raises(ValueError, match="n_components must be at least 1"):
        V(0)
    key = jax.random.key(0)
    # Widths are checked against the data before compiling.
    with pytest.raises(ValueError, match=r"mean_prior must have shape \(2,\)"):
        emjax.fit(V(3, mean_prior=np.zeros(3)), X, key=key)
    with pytest.raises(ValueError, match=r"tied covariance_prior must have shape \(2, 2\)"):
        emjax.fit(V(3, "tied", covariance_prior=np.eye(3)), X, key=key)
    with pytest.raises(ValueError, match="degrees_of_freedom_prior must be > D - 1 = 1"):
        emjax.fit(V(3, degrees_of_freedom_prior=0.5), X, key=key)
    with pytest.raises(ValueError, match="larger than the number of data points"):
        emjax.fit(V(3), X[:2], key=key)
    with pytest.raises(ValueError, match="contains 1 NaN"):
        emjax.fit(V(3), np.where(np.arange(600).reshape(300, 2) == 7, np.nan, X), key=key)
    model = V(K)
    p = model.init_from_resp(X, RESP)
    with pytest.raises(ValueError, match="call model = model.adapt"):
        model.m_step(model.e_step(p, X)[0])
    with pytest.raises(ValueError, match="kind must be one of"):
        model.log_prob(p, X, kind="map")
    with pytest.raises(ValueError, match="degrees_of_freedom must be finite and > 1"):
        emjax.fit(model, X, key=key, init=eqx.tree_at(lambda q: q.degrees_of_freedom, p, p.degrees_of_freedom - 300))
    with pytest.raises(ValueError, match=r"weight_concentration must have shape \(4,\)"):
        V(K, weight_concentration_prior_type="dirichlet_distribution").validate_params(p, X)


def test_a_constant_feature_keeps_the_default_covariance_prior_positive_definite():
    xc = np.column_stack([X, np.full(X.shape[0], 7.0)])
    b0 = np.asarray(emjax.VariationalGaussianMixture(K, "full").adapt(xc).covariance_prior)
    cov = np.cov(X.T)
    np.testing.assert_allclose(b0[:2, :2], cov, rtol=1e-12)  # scikit-learn's default elsewhere
    np.testing.assert_allclose(b0[2], [0.0, 0.0, cov.diagonal().max()], atol=1e-12)
    assert np.all(np.linalg.eigvalsh(b0) > 0)
