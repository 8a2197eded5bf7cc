"""Bayesian linear regression and the relevance vector machine by EM on the evidence,
against scikit-learn's BayesianRidge and ARDRegression (float64)."""

import jax
import numpy as np
import pytest
from sklearn.linear_model import ARDRegression, BayesianRidge

import emjax

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 6))
W = np.array([1.5, 0.0, -2.0, 0.0, 0.5, 0.0])
Y = X @ W + 0.3 * RNG.normal(size=200) + 2.0


def _fit(model, data=(X, Y), **kw):
    kw = {"tol": 1e-12, "max_iter": 20000, "stopping": emjax.ParameterChange(), **kw}
    return emjax.fit(model, data, key=jax.random.key(0), **kw)


def _assert_monotone(res):
    trace = np.asarray(res.trace[0][: int(res.n_iter[0]) + 1])
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_bayesian_linear_regression_equals_bayesian_ridge(fit_intercept):
    model = emjax.BayesianLinearRegression(fit_intercept=fit_intercept)
    res = _fit(model)
    sk = BayesianRidge(fit_intercept=fit_intercept, tol=1e-14, max_iter=100000).fit(X, Y)
    assert res.status[0] == emjax.RESULTS.SUCCESS
    np.testing.assert_allclose(float(res.params.alpha), sk.lambda_, rtol=1e-6)  # weight precision
    np.testing.assert_allclose(float(res.params.beta), sk.alpha_, rtol=1e-6)  # noise precision
    np.testing.assert_allclose(res.params.mean, sk.coef_, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(res.params.cov, sk.sigma_, rtol=1e-6, atol=1e-12)
    mean, std = model.predict(res.params, X[:20], return_std=True)
    sk_mean, sk_std = sk.predict(X[:20], return_std=True)
    np.testing.assert_allclose(mean, sk_mean, rtol=1e-6)
    np.testing.assert_allclose(std, sk_std, rtol=1e-6)
    _assert_monotone(res)
    # The objective is the log evidence plus the hyperpriors: scikit-learn's score
    # (with compute_score).
    sk = BayesianRidge(fit_intercept=fit_intercept, tol=1e-14, max_iter=100000, compute_score=True).fit(X, Y)
    np.testing.assert_allclose(float(res.objective[0]), sk.scores_[-1], rtol=1e-6)


def test_statistics_merge_over_chunks_and_weights_are_repetitions():
    model = emjax.BayesianLinearRegression()
    whole = _fit(model)
    chunked = _fit(model, chunk_size=37)
    np.testing.assert_allclose(chunked.params.alpha, whole.params.alpha, rtol=1e-10)
    np.testing.assert_allclose(chunked.params.mean, whole.params.mean, rtol=1e-10)
    counts = np.arange(len(Y)) % 3 + 1
    weighted = _fit(model, weights=counts)
    repeated = _fit(model, data=(np.repeat(X, counts, axis=0), np.repeat(Y, counts)))
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.objective, repeated.objective, rtol=1e-10)


def test_relevance_vector_machine_equals_ard_regression():
    model = emjax.RelevanceVectorMachine(threshold_alpha=1e4)
    res = _fit(model)
    sk = ARDRegression(threshold_lambda=1e4, tol=1e-14, max_iter=100000).fit(X, Y)
    active = np.asarray(res.params.active)
    # The same weights pruned (scikit-learn's coef_ is exactly 0 there), the others to 1e-4.
    np.testing.assert_array_equal(active, sk.lambda_ < 1e4)
    np.testing.assert_allclose(res.params.mean, sk.coef_, rtol=1e-4, atol=1e-12)
    np.testing.assert_allclose(np.asarray(res.params.alpha)[active], sk.lambda_[active], rtol=1e-4)
    np.testing.assert_allclose(float(res.params.beta), sk.alpha_, rtol=1e-4)
    assert not active.all()  # an irrelevant weight was pruned
    _assert_monotone(res)
    np.testing.assert_allclose(model.predict(res.params, X[:10]), sk.predict(X[:10]), rtol=1e-4)


def test_regression_data_are_checked():
    model = emjax.BayesianLinearRegression()
    with pytest.raises(TypeError, match=r"\(X, y\)"):
        emjax.fit(model, X, key=jax.random.key(0))
    with pytest.raises(ValueError, match="one entry per row of X"):
        emjax.fit(model, (X, Y[:-1]), key=jax.random.key(0))
    bad = Y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite value.s., the first is nan at row 3"):
        emjax.fit(model, (X, bad), key=jax.random.key(0))


@pytest.mark.parametrize("model", [emjax.BayesianLinearRegression(), emjax.RelevanceVectorMachine(threshold_alpha=1e4)],
                         ids=["blr", "rvm"])
def test_streams_restarts_and_stepwise_em_reach_the_batch_fixed_point(model):
    batch = _fit(model, max_iter=25, tol=0.0)
    chunks = [(X[i:i + 64], Y[i:i + 64]) for i in range(0, len(Y), 64)]  # a short last chunk
    streamed = emjax.fit(model, chunks, key=jax.random.key(0), max_iter=25, tol=0.0, n_restarts=2)
    for r in range(2):  # the start is deterministic: both restarts are the batch fit
        np.testing.assert_allclose(np.asarray(streamed.restart_params.alpha)[r], batch.params.alpha, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(streamed.restart_params.mean)[r], batch.params.mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(streamed.trace[0], batch.trace[0], rtol=1e-10)
    # Stepwise EM: the statistics do not depend on the parameters, so the running
    # average of mini-batch statistics tends to the whole data's and the precisions follow.
    online = emjax.fit(model, (X, Y), key=jax.random.key(0), max_iter=300, tol=0.0,
                       algorithm=emjax.StepwiseEM(batch_size=50, kappa=0.6))
    converged = _fit(model)
    np.testing.assert_allclose(float(online.params.beta), float(converged.params.beta), rtol=0.1)
    np.testing.assert_allclose(online.params.mean, converged.params.mean, atol=0.05)


def test_algorithms_the_evidence_does_not_admit_are_refused_before_compiling():
    model = emjax.BayesianLinearRegression()
    with pytest.raises(TypeError, match="expected_log_joint"):
        emjax.fit(model, (X, Y), key=jax.random.key(0), algorithm=emjax.IncrementalEM(n_blocks=2))
    with pytest.raises(TypeError, match="not a float"):
        emjax.fit(model, (X, Y), key=jax.random.key(0), algorithm=emjax.GradientAscent(__import__("optax").adam(0.1)))
    with pytest.raises(TypeError, match="not a sum over rows"):
        emjax.fit(model, (X, Y), key=jax.random.key(0),
                  algorithm=emjax.GradientAscent(__import__("optax").adam(0.1), batch_size=50))
    with pytest.raises(TypeError, match="temperature"):
        emjax.fit(model, (X, Y), key=jax.random.key(0), algorithm=emjax.AnnealedEM())
