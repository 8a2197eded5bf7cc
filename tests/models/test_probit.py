"""Probit regression by EM against the MAP estimate found by BFGS (float64)."""

import jax
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_ndtr, ndtr

import emjax

RNG = np.random.default_rng(1)
X = RNG.normal(size=(300, 3))
Y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 + RNG.normal(size=300) > 0).astype(float)


def _bfgs_map(x, y, tau):
    a = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    s = 2 * y - 1

    def neg(w):
        return -(log_ndtr(s * (a @ w)).sum() - 0.5 * tau * w @ w)

    def grad(w):
        t = s * (a @ w)
        mills = np.exp(-0.5 * t * t - 0.5 * np.log(2 * np.pi) - log_ndtr(t))
        return -(a.T @ (s * mills) - tau * w)

    res = minimize(neg, np.zeros(a.shape[1]), jac=grad, method="BFGS", options={"gtol": 1e-12})
    return res.x, -res.fun


@pytest.mark.parametrize("tau", [1.0, 0.01])
def test_probit_em_equals_the_bfgs_map_and_is_monotone(tau):
    model = emjax.ProbitRegression(prior_precision=tau)
    res = emjax.fit(model, (X, Y), key=jax.random.key(0), tol=1e-14, max_iter=5000, stopping=emjax.ParameterChange())
    w_map, obj = _bfgs_map(X, Y, tau)
    assert res.status[0] == emjax.RESULTS.SUCCESS
    np.testing.assert_allclose(res.params.weights, w_map, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(res.objective[0]), obj, rtol=1e-10)
    trace = np.asarray(res.trace[0][: int(res.n_iter[0]) + 1])
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:]))
    p = np.asarray(model.predict_proba(res.params, X))
    np.testing.assert_allclose(p, ndtr(X @ w_map[:3] + w_map[3]), rtol=1e-6)


def test_probit_refuses_bad_labels():
    with pytest.raises(ValueError, match="0/1"):
        emjax.fit(emjax.ProbitRegression(), (X, Y * 2), key=jax.random.key(0))


def test_probit_over_a_stream_and_by_gradient_ascent_reaches_the_same_map():
    import optax

    model = emjax.ProbitRegression(prior_precision=1.0)
    w_map, obj = _bfgs_map(X, Y, 1.0)
    chunks = [(X[i:i + 128], Y[i:i + 128]) for i in range(0, len(Y), 128)]
    streamed = emjax.fit(model, chunks, key=jax.random.key(0), tol=0.0, max_iter=15)
    batch = emjax.fit(model, (X, Y), key=jax.random.key(0), tol=0.0, max_iter=15)
    np.testing.assert_allclose(streamed.trace, batch.trace, rtol=1e-12)
    np.testing.assert_allclose(streamed.params.weights, batch.params.weights, rtol=1e-10)
    grad = emjax.fit(model, (X, Y), key=jax.random.key(0), algorithm=emjax.GradientAscent(optax.lbfgs()),
                     max_iter=200, tol=1e-14)
    np.testing.assert_allclose(grad.params.weights, w_map, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(float(grad.objective[0]), obj, rtol=1e-10)
