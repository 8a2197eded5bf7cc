"""``emjax.sklearn``: scikit-learn's estimator checks in full, and each estimator's
numbers against scikit-learn, SciPy or the emjax model it wraps."""

import pickle
import warnings

import jax
import numpy as np
import pytest
import scipy.stats as st
from sklearn import cluster, mixture
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import emjax
from emjax.sklearn import BayesianGaussianMixture, GaussianMixture, KMeans, MixtureModel, StudentTMixture
from tests.conftest import make_blobs

ESTIMATORS = [GaussianMixture, BayesianGaussianMixture, KMeans, StudentTMixture, MixtureModel]

#: Checks scikit-learn itself skips here, for what the environment lacks (not for emjax):
#: array-API dispatch needs array_api_strict and SCIPY_ARRAY_API=1 set before SciPy is imported.
ENVIRONMENT_SKIPS = {"check_array_api_input"}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: e.__name__)
def test_check_estimator_in_full(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(estimator(), on_fail=None)
    assert len(results) >= 40
    failed = [(r["check_name"], r["status"], repr(r["exception"])[:300]) for r in results
              if r["status"] != "passed" and r["check_name"] not in ENVIRONMENT_SKIPS]
    assert failed == []


# -- GaussianMixture against scikit-learn -----------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(5, n=300, d=2, k=3, sep=3.0)[0]


def _start(x, cov_type):
    rng = np.random.default_rng(1)
    means = x[rng.choice(len(x), 3, replace=False)]
    base = np.cov(x.T, bias=True)
    cov = {"full": np.stack([base] * 3), "tied": base, "diag": np.stack([np.diag(base)] * 3),
           "spherical": np.full(3, np.mean(np.diag(base)))}[cov_type]
    prec = np.linalg.inv(cov) if cov_type in ("full", "tied") else 1.0 / cov
    return dict(weights_init=np.array([0.5, 0.3, 0.2]), means_init=means, precisions_init=prec)


@pytest.mark.parametrize("cov_type", ["full", "tied", "diag", "spherical"])
def test_gaussian_mixture_equals_sklearn_and_the_convergence_rule_side_by_side(blobs, cov_type):
    start = _start(blobs, cov_type)
    ours = GaussianMixture(3, covariance_type=cov_type, tol=1e-4, **start).fit(blobs)
    theirs = mixture.GaussianMixture(3, covariance_type=cov_type, tol=1e-4, **start).fit(blobs)
    # Same path, same test: emjax stops one M-step before scikit-learn (README, docstring).
    assert ours.converged_ and theirs.converged_
    assert ours.n_iter_ == theirs.n_iter_ - 1
    # With the M-steps fixed, the parameters are the same (reg_covar=0: emjax's E-step also
    # applies reg_covar's penalty, exact penalised EM, which moves them by about reg_covar).
    fixed = dict(covariance_type=cov_type, tol=0.0, max_iter=ours.n_iter_, reg_covar=0.0, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        theirs = mixture.GaussianMixture(3, **fixed).fit(blobs)
        ours = GaussianMixture(3, **fixed).fit(blobs)
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-9, atol=1e-12, err_msg=name)
    # emjax's lower bound is the log-likelihood of the returned parameters.
    assert ours.lower_bound_ == pytest.approx(ours.score(blobs), rel=1e-12)
    for method in ("score_samples", "predict_proba", "predict"):
        np.testing.assert_allclose(getattr(ours, method)(blobs), getattr(theirs, method)(blobs), rtol=1e-9, atol=1e-12)
    assert ours.bic(blobs) == pytest.approx(theirs.bic(blobs), rel=1e-10)
    assert ours.aic(blobs) == pytest.approx(theirs.aic(blobs), rel=1e-10)


def test_float32_data_give_float32_attributes_that_agree_with_float64(blobs):
    g64 = GaussianMixture(3, random_state=0, tol=1e-6).fit(blobs)
    g32 = GaussianMixture(3, random_state=0, tol=1e-6).fit(blobs.astype(np.float32))
    assert g32.means_.dtype == np.float32 and g32.score_samples(blobs).dtype == np.float32
    assert g64.means_.dtype == np.float64
    order64, order32 = np.argsort(g64.means_[:, 0]), np.argsort(g32.means_[:, 0])
    np.testing.assert_allclose(g32.means_[order32], g64.means_[order64], rtol=1e-4)
    assert g32.score(blobs) == pytest.approx(g64.score(blobs), rel=1e-5)


def test_pickle_clone_pipeline_and_grid_search(blobs, tmp_path):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    again = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(again.score_samples(blobs), gm.score_samples(blobs))
    assert again.get_params() == gm.get_params() and not hasattr(clone(gm), "means_")
    # Grid search by held-out log-likelihood (GaussianMixture.score) over K and the structure.
    search = GridSearchCV(
        make_pipeline(StandardScaler(), GaussianMixture(random_state=0)),
        {"gaussianmixture__n_components": [1, 3], "gaussianmixture__covariance_type": ["full", "spherical"]},
        cv=3,
    ).fit(blobs)
    assert search.best_params_["gaussianmixture__n_components"] == 3
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores)) and len(scores) == 4


def test_warm_start_continues_the_iterations(blobs):
    start = _start(blobs, "full")
    one_go = GaussianMixture(3, max_iter=4, tol=0.0, **start)
    stepwise = GaussianMixture(3, max_iter=2, tol=0.0, warm_start=True, **start)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one_go.fit(blobs)
        stepwise.fit(blobs).fit(blobs)
    np.testing.assert_allclose(stepwise.means_, one_go.means_, rtol=1e-12)


def test_bad_initial_parameters_are_named(blobs):
    with pytest.raises(ValueError, match=r"The parameter 'weights' should be normalized"):
        GaussianMixture(3, weights_init=[0.5, 0.3, 0.1]).fit(blobs)
    with pytest.raises(ValueError, match=r"'full precision' should be symmetric, positive-definite"):
        GaussianMixture(3, precisions_init=-np.stack([np.eye(2)] * 3)).fit(blobs)
    with pytest.raises(ValueError, match=r"The 'covariance_type' parameter"):
        GaussianMixture(3, covariance_type="VVV").fit(blobs)
    with pytest.raises(ValueError, match=r"Expected n_samples >= n_components"):
        GaussianMixture(5).fit(blobs[:3])
    with pytest.raises(ValueError, match=r"X has 3 features, but GaussianMixture is expecting 2"):
        GaussianMixture(3, random_state=0).fit(blobs).predict(np.zeros((4, 3)))


# -- the other estimators -----------------------------------------------------------------------


def test_kmeans_equals_sklearn_from_the_same_centres(blobs):
    init = blobs[[0, 100, 200]]
    ours = KMeans(3, init=init, n_init=1, tol=0.0).fit(blobs)
    theirs = cluster.KMeans(3, init=init, n_init=1, tol=0.0).fit(blobs)
    np.testing.assert_allclose(ours.cluster_centers_, theirs.cluster_centers_, rtol=1e-12)
    np.testing.assert_array_equal(ours.labels_, theirs.labels_)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-12)
    np.testing.assert_allclose(ours.transform(blobs), theirs.transform(blobs), rtol=1e-9)
    assert ours.score(blobs) == pytest.approx(theirs.score(blobs), rel=1e-12)
    # k-means++ restarts find the same clustering of separated blobs.
    auto = KMeans(3, random_state=0, n_init=4).fit(blobs)
    assert auto.inertia_ == pytest.approx(theirs.inertia_, rel=1e-9)


def test_kmeans_weights_are_repetitions_whatever_the_order(blobs):
    rng = np.random.default_rng(0)
    w = rng.integers(0, 3, len(blobs))
    repeated = np.repeat(blobs, w, axis=0)
    shuffled = repeated[rng.permutation(len(repeated))]
    weighted = KMeans(3, random_state=4).fit(blobs, sample_weight=w)
    plain = KMeans(3, random_state=4).fit(shuffled)
    np.testing.assert_allclose(np.sort(weighted.cluster_centers_, axis=0), np.sort(plain.cluster_centers_, axis=0),
                               rtol=1e-12)
    assert weighted.inertia_ == pytest.approx(plain.inertia_, rel=1e-12)


def test_bayesian_gaussian_mixture_reaches_sklearn_optimum():
    x = make_blobs(2, n=300, d=2, k=3, sep=5.0)[0]
    kw = dict(n_components=5, weight_concentration_prior=1e-3, tol=1e-9, max_iter=2000, random_state=0)
    ours = BayesianGaussianMixture(**kw).fit(x)
    theirs = mixture.BayesianGaussianMixture(reg_covar=0.0, **kw).fit(x)
    used_ours, used_theirs = ours.weights_ > 0.05, theirs.weights_ > 0.05
    assert used_ours.sum() == used_theirs.sum() == 3
    a, b = ours.means_[used_ours], theirs.means_[used_theirs]
    np.testing.assert_allclose(a[np.argsort(a[:, 0])], b[np.argsort(b[:, 0])], rtol=1e-5)
    wa, wb = ours.weights_[used_ours], theirs.weights_[used_theirs]
    np.testing.assert_allclose(wa[np.argsort(a[:, 0])], wb[np.argsort(b[:, 0])], rtol=1e-4)
    np.testing.assert_allclose(ours.mean_prior_, theirs.mean_prior_, rtol=1e-12)
    np.testing.assert_allclose(ours.covariance_prior_, theirs.covariance_prior_, rtol=1e-12)
    assert ours.degrees_of_freedom_prior_ == theirs.degrees_of_freedom_prior_
    # Labels agree up to the components' order.
    assert emjax.adjusted_rand_index(ours.predict(x), theirs.predict(x)) == pytest.approx(1.0)


def test_student_t_mixture_density_is_scipys():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_t(3, (150, 2)) - 5, rng.standard_t(3, (150, 2)) + 5])
    st_mix = StudentTMixture(2, random_state=0).fit(x)
    assert st_mix.converged_
    dens = sum(w * st.multivariate_t(m, s, df=nu).pdf(x)
               for w, m, s, nu in zip(st_mix.weights_, st_mix.means_, st_mix.scales_, st_mix.degrees_of_freedom_))
    np.testing.assert_allclose(st_mix.score_samples(x), np.log(dens), rtol=1e-10)
    assert np.all((st_mix.degrees_of_freedom_ > 1.5) & (st_mix.degrees_of_freedom_ < 10))


def test_mixture_model_of_poisson_counts():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.poisson(2.0, (100, 3)), rng.poisson(15.0, (100, 3))]).astype(float)
    mm = MixtureModel(emjax.Poisson(), n_components=2, random_state=0).fit(x)
    rates = mm.components_.rates
    dens = sum(w * np.prod(st.poisson(r).pmf(x), axis=1) for w, r in zip(mm.weights_, rates))
    np.testing.assert_allclose(mm.score_samples(x), np.log(dens), rtol=1e-10)
    n_params = 1 + 2 * 3
    assert mm.bic(x) == pytest.approx(-2 * np.log(dens).sum() + n_params * np.log(len(x)), rel=1e-10)
    bad = x.copy()
    bad[7, 2] = -1.0
    with pytest.raises(ValueError, match=r"row 7, column 2"):
        MixtureModel(emjax.Poisson(), n_components=2).fit(bad)
    with pytest.raises(ValueError, match=r"row 7, column 2"):
        mm.predict(bad)
    with pytest.raises(ValueError, match=r"emjax family"):
        MixtureModel("poisson").fit(x)


def test_mixture_model_with_missing_entries():
    x = make_blobs(3, n=200, d=2, k=2, sep=6.0)[0]
    holes = x.copy()
    holes[::7, 1] = np.nan
    mm = MixtureModel(emjax.Gaussian("full"), n_components=2, missing=True, random_state=0).fit(holes)
    model = emjax.Mixture(emjax.Gaussian("full"), 2, missing=True)
    np.testing.assert_allclose(mm.score_samples(holes), model.log_prob(jax.tree.map(np.asarray, mm.params_), holes),
                               rtol=1e-12)
    with pytest.raises(ValueError, match="NaN"):
        MixtureModel(emjax.Gaussian("full"), n_components=2).fit(holes)
