"""A sparse Dirichlet weights prior (alpha < 1): the MAP M-step drops a component whose
expected count falls to ``1 - alpha`` or below, cleanly (weight exactly 0, finite
parameters, out of the prior and of the parameter count), and the fit then is the
smaller mixture's MAP fit step for step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import gammaln, logsumexp
from scipy.stats import invwishart, multivariate_normal

import emjax
from tests.conftest import make_blobs

X = make_blobs(0, n=400, d=2, k=3, sep=8.0)[0]
ALPHA = 0.5
# A component prior too: a dropped component's prior must leave the objective with it.
PRIOR = emjax.NormalInverseWishart(np.zeros(2), 0.01, 5.0, np.eye(2))
FAMILY = emjax.Gaussian("full", reg_covar=0.0, prior=PRIOR)


def start(k_extra):
    """A k-means start of 3 components, plus ``k_extra`` far from every point (weight 0.1 each)."""
    p3 = emjax.Mixture(FAMILY, 3).init(jax.random.key(0), jnp.asarray(X), "kmeans")
    means = np.asarray(p3.components.means)
    far = means[:1] + 60.0 * (1 + np.arange(k_extra))[:, None]
    w = np.concatenate([np.asarray(p3.weights) * (1 - 0.1 * k_extra), np.full(k_extra, 0.1)])
    covs = np.concatenate([np.asarray(p3.components.covariances)] + [np.asarray(p3.components.covariances[:1])] * k_extra)
    return p3, emjax.MixtureParams(jnp.asarray(w), emjax.GaussianParams(jnp.asarray(np.concatenate([means, far])),
                                                                          jnp.asarray(covs)))


@pytest.fixture(scope="module")
def fits():
    p3, p5 = start(2)
    sparse = emjax.Mixture(FAMILY, 5, weights_prior=emjax.Dirichlet(ALPHA))
    small = emjax.Mixture(FAMILY, 3, weights_prior=emjax.Dirichlet(ALPHA))
    key = jax.random.key(0)
    big = emjax.fit(sparse, X, key=key, init=p5, max_iter=25, tol=0.0)
    p3 = emjax.MixtureParams(p3.weights, p3.components)
    alone = emjax.fit(small, X, key=key, init=p3, max_iter=25, tol=0.0)
    return sparse, p5, big, small, alone


def test_far_components_are_dropped_by_the_closed_form_mode(fits):
    sparse, p5, big, _, _ = fits
    # One M-step by hand: responsibilities from SciPy densities, then max(N_k + alpha - 1, 0), normalised.
    w = np.asarray(p5.weights)
    means, covs = np.asarray(p5.components.means), np.asarray(p5.components.covariances)
    lj = np.stack([np.log(w[k]) + multivariate_normal(means[k], covs[k]).logpdf(X) for k in range(5)], axis=1)
    counts = np.exp(lj - logsumexp(lj, axis=1, keepdims=True)).sum(0)
    assert np.all(counts[3:] < 1 - ALPHA)
    num = np.maximum(counts + ALPHA - 1, 0)
    stats, _ = sparse.e_step(p5, jnp.asarray(X))
    one = sparse.m_step(stats, p5)
    np.testing.assert_allclose(one.weights, num / num.sum(), rtol=1e-12)
    assert np.all(np.asarray(one.weights[3:]) == 0.0)
    # Dropped for good, with their last parameters kept and every parameter finite.
    assert np.all(np.asarray(big.params.weights[3:]) == 0.0)
    np.testing.assert_array_equal(big.params.components.means[3:], p5.components.means[3:])
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(big.params))
    assert int(big.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)


def test_the_fit_after_the_drop_is_the_smaller_mixtures_fit(fits):
    sparse, _, big, small, alone = fits
    # From the first M-step on, the 5-component fit is the 3-component one (their
    # first E-steps give the same responsibilities: the far ones take none).
    np.testing.assert_allclose(big.trace[0, 1:], alone.trace[0, 1:], rtol=1e-11)
    np.testing.assert_allclose(big.params.weights[:3], alone.params.weights, rtol=1e-10)
    np.testing.assert_allclose(big.params.components.means[:3], alone.params.components.means, rtol=1e-10)
    # MAP-EM never decreases the log posterior once the set of components is fixed.
    assert np.all(np.diff(np.asarray(big.trace[0, 1:])) >= -1e-9 * np.abs(np.asarray(big.trace[0, 1:-1])))
    # The prior is the Dirichlet of the kept weights and the kept components' NIW prior
    # (SciPy's densities); the dropped ones leave the parameter count.
    w = np.asarray(big.params.weights[:3])
    ref = gammaln(3 * ALPHA) - 3 * gammaln(ALPHA) + (ALPHA - 1) * np.log(w).sum()
    for m, c in zip(np.asarray(big.params.components.means[:3]), np.asarray(big.params.components.covariances[:3])):
        ref += multivariate_normal(np.zeros(2), c / 0.01).logpdf(m) + invwishart(5.0, np.eye(2)).logpdf(c)
    np.testing.assert_allclose(float(sparse.log_prior(big.params)), ref, rtol=1e-10)
    ic_big, ic_small = sparse.information_criteria(big.params, X), small.information_criteria(alone.params, X)
    assert ic_big["n_parameters"] == ic_small["n_parameters"] == 2 + 3 * 2 + 3 * 3
    np.testing.assert_allclose(ic_big["bic"], ic_small["bic"], rtol=1e-10)
    # Predictions never name a dropped component, and the density stays finite.
    assert int(jnp.max(sparse.predict(big.params, X))) <= 2
    np.testing.assert_allclose(sparse.log_prob(big.params, X), small.log_prob(alone.params, X), rtol=1e-10)


def test_mode_edge_cases_and_refusals():
    prior = emjax.Dirichlet(ALPHA)
    # Every count below 1 - alpha: all the weight to the largest active count.
    np.testing.assert_array_equal(prior.mode(jnp.array([0.2, 0.4, 0.3]), jnp.array([True, False, True])), [0, 0, 1])
    # A dropped component stays dropped under alpha >= 1 too (emjax.select's components beyond K).
    np.testing.assert_allclose(emjax.Dirichlet(2.0).mode(jnp.array([3.0, 5.0, 0.0]), jnp.array([True, True, False])),
                               [4 / 10, 6 / 10, 0.0])
    for algorithm in (emjax.GradientAscent(optax.adam(1e-2)), emjax.OverRelaxedEM(), emjax.GeneralizedEM()):
        with pytest.raises(ValueError, match="cannot fit a Dirichlet weights prior with alpha < 1"):
            emjax.fit(emjax.Mixture(FAMILY, 3, weights_prior=prior), X, key=jax.random.key(0), algorithm=algorithm)


def test_coordinates_and_conditional_steps_keep_dropped_components_dropped(fits):
    sparse, p5, big, _, _ = fits
    # A softmax of log weights gives 1e-308 for a weight of 0: held back at exactly 0.
    dropped = big.params
    back = sparse.hold_frozen(sparse.constrain(sparse.unconstrain(dropped)), dropped)
    assert np.all(np.asarray(back.weights[3:]) == 0.0)
    np.testing.assert_allclose(back.weights[:3], dropped.weights[:3], rtol=1e-12)
    # ECM's conditional M-steps keep a dropped component's parameters (no M-step from no data).
    ecm = emjax.fit(sparse, X, key=jax.random.key(0), init=p5, max_iter=10, tol=0.0, algorithm=emjax.ECM())
    assert int(ecm.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    assert np.all(np.asarray(ecm.params.weights[3:]) == 0.0)
    np.testing.assert_array_equal(ecm.params.components.covariances[3:], p5.components.covariances[3:])
    assert np.all(np.diff(np.asarray(ecm.trace[0, 1:])) >= -1e-9 * np.abs(np.asarray(ecm.trace[0, 1:-1])))
