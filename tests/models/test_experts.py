"""Mixtures of experts against a NumPy EM iteration, a direct maximisation (L-BFGS),
planted parameters and closed-form predictive densities (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit, log_expit, logsumexp, softmax

import emjax
from emjax.families import LinearExpertParams
from tests.conftest import assert_monotone, fit_weighted_and_repeated

RNG = np.random.default_rng(3)
N = 600
X = RNG.uniform(-2, 2, size=(N, 2))
Z = np.c_[X, np.ones(N)]
TRUE_GATE = np.array([[-4.0, 2.0, 0.0], [0.0, 0.0, 0.0]])  # logits of expert 0 against expert 1
TRUE_COEF = np.array([[1.0, -2.0, 0.5], [-1.5, 1.0, 2.0]])  # slopes, then the intercept
TRUE_SD = np.array([0.1, 0.3])
LABEL = (RNG.uniform(size=N) < softmax(Z @ TRUE_GATE.T, axis=1)[:, 1]).astype(int)
Y = np.einsum("nq,nq->n", Z, TRUE_COEF[LABEL]) + RNG.normal(size=N) * TRUE_SD[LABEL]
LOGIT_COEF = np.array([[3.0, 0.0, 1.0], [-2.0, 0.0, -0.5]])
YB = (RNG.uniform(size=N) < expit(np.einsum("nq,nq->n", Z, LOGIT_COEF[LABEL]))).astype(float)

LINEAR = emjax.MixtureOfExperts(emjax.LinearExpert(ridge=0.01, reg_var=1e-5), 2, gating=emjax.SoftmaxGating(0.1))
LOGISTIC = emjax.MixtureOfExperts(emjax.LogisticExpert(ridge=0.1), 2, gating=emjax.SoftmaxGating(0.1))


MAX_ITER = 30  # the fits from P0 share it (one trace shape)

#: A start away from the answer (flat experts at two levels, a tilted gate), built by hand:
#: eager k-means would cost more than the fits.
P0 = emjax.MixtureParams(
    jnp.asarray([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]]),
    LinearExpertParams(jnp.asarray([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), jnp.asarray([4.0, 4.0])),
)


@pytest.fixture(scope="module")
def linear_fit():
    return emjax.fit(LINEAR, (X, Y), key=jax.random.key(0), n_restarts=3, max_iter=400, tol=1e-12)


# -- a NumPy EM iteration written from the model's definition ---------------------------------


def _numpy_step(w, coef, var, reg, ridge, tau):
    """One EM iteration of the linear mixture of experts: E-step, weighted ridge least
    squares per expert, variances, and Bohning's bound step for the gating."""
    k, q = w.shape
    log_g = np.log(softmax(Z @ w.T, axis=1))
    mu = Z @ coef.T
    lp = -0.5 * (np.log(2 * np.pi * var) + ((Y[:, None] - mu) ** 2 + reg) / var)
    lj = log_g + lp
    r = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    mask = np.r_[np.ones(q - 1), 0.0]
    new_coef, new_var = np.empty_like(coef), np.empty_like(var)
    for j in range(k):
        s = (Z * r[:, j, None]).T @ Z
        new_coef[j] = np.linalg.solve(s + ridge * np.diag(mask), (Z * r[:, j, None]).T @ Y)
        rss = r[:, j] @ (Y - Z @ new_coef[j]) ** 2
        new_var[j] = (rss + ridge * np.sum(mask * new_coef[j] ** 2)) / r[:, j].sum() + reg
    g = softmax(Z @ w.T, axis=1)
    grad = ((r - g).T @ Z)[:-1]
    v = w[:-1] - w[-1]
    a = 0.5 * (np.eye(k - 1) - 1.0 / k)
    bound = np.kron(a, Z.T @ Z) + tau * np.diag(np.tile(mask, k - 1))
    step = np.linalg.solve(bound, (grad - tau * mask * v).ravel()).reshape(k - 1, q)
    new_w = np.vstack([v + step, np.zeros((1, q))])
    ll = logsumexp(lj, axis=1).sum()
    return new_w, new_coef, new_var, ll


def test_em_iteration_equals_numpy():
    model = emjax.MixtureOfExperts(emjax.LinearExpert(ridge=0.5, reg_var=1e-3), 2, gating=emjax.SoftmaxGating(0.1))
    model = model.adapt((jnp.asarray(X), jnp.asarray(Y)))
    reg = 1e-3 * np.var(Y)
    params = P0
    w, coef, var = (np.asarray(a) for a in (P0.weights, P0.components.coef, P0.components.variance))

    @jax.jit
    def step(params):
        stats, ll = model.e_step(params, (jnp.asarray(X), jnp.asarray(Y)))
        return model.m_step(stats, params), ll

    for _ in range(2):
        params, ll = step(params)
        w, coef, var, ll_ref = _numpy_step(w, coef, var, reg, 0.5, 0.1)
        np.testing.assert_allclose(float(ll), ll_ref, rtol=1e-12)
        np.testing.assert_allclose(params.weights, w, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(params.components.coef, coef, rtol=1e-9)
        np.testing.assert_allclose(params.components.variance, var, rtol=1e-9)


# -- the fitted model ------------------------------------------------------------------------


def _objective(model, u_flat, unravel, y):
    params = model.constrain(unravel(u_flat))
    lp = model.family.log_prob(params.components, (X, y)) - model.family.fit_penalty(params.components)
    lj = lp + model.gating.log_weights(params.weights, (X, y))
    return jnp.sum(jax.scipy.special.logsumexp(lj, axis=1)) + model.log_prior(params)


def _lbfgs_from(model, params, y):
    """A direct maximisation of EM's objective (the conditional log-likelihood of the
    fitting density plus the log priors) from EM's answer: it finds nothing higher."""
    from jax.flatten_util import ravel_pytree

    u0, unravel = ravel_pytree(model.unconstrain(params))
    f = jax.jit(lambda u: -_objective(model, u, unravel, y))
    g = jax.jit(jax.grad(lambda u: -_objective(model, u, unravel, y)))
    res = minimize(lambda u: float(f(u)), np.asarray(u0), jac=lambda u: np.asarray(g(u)), method="L-BFGS-B",
                   options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-10})
    return -res.fun, float(-f(u0)), model.constrain(unravel(jnp.asarray(res.x)))


def _relabel(coef):
    return coef if coef[0, 0] > coef[1, 0] else coef[::-1]


def test_linear_experts_recover_the_planted_model_monotonically(linear_fit):
    res = linear_fit
    assert_monotone(res.trace)
    p = res.params
    coef = np.asarray(p.components.coef)
    order = [0, 1] if coef[0, 0] > coef[1, 0] else [1, 0]
    np.testing.assert_allclose(coef[order], TRUE_COEF, atol=0.08)
    np.testing.assert_allclose(np.sqrt(np.asarray(p.components.variance)[order]), TRUE_SD, rtol=0.15)
    # The gating's boundary: the direction of the logit difference, and where it crosses 0.
    w = np.asarray(p.weights)[order]
    diff = w[0] - w[1]
    true = TRUE_GATE[0] - TRUE_GATE[1]
    cos = diff[:2] @ true[:2] / np.linalg.norm(diff[:2]) / np.linalg.norm(true[:2])
    assert cos > 0.99, cos
    assert abs(diff[2] / np.linalg.norm(diff[:2])) < 0.1
    # Free parameters: (K - 1)(P + 1) gating + K (P + 1) coefficients + K variances = 3 + 6 + 2.
    ll = float(jnp.sum(LINEAR.log_prob(p, (X, Y))))
    np.testing.assert_allclose(float(LINEAR.bic(p, (X, Y))), -2 * ll + 11 * np.log(N), rtol=1e-12)
    # EM's answer is a maximum: L-BFGS on the same objective gains nothing.
    best, here, _ = _lbfgs_from(LINEAR.adapt((jnp.asarray(X), jnp.asarray(Y))), p, jnp.asarray(Y))
    np.testing.assert_allclose(here, float(np.max(res.objective)), rtol=1e-12)
    assert best - here < 1e-6 * abs(here)


def test_predictions_equal_the_closed_form(linear_fit):
    p = linear_fit.params
    xs = X[:40]
    zs = Z[:40]
    g = softmax(zs @ np.asarray(p.weights).T, axis=1)
    mu = zs @ np.asarray(p.components.coef).T
    sd = np.sqrt(np.asarray(p.components.variance))
    np.testing.assert_allclose(LINEAR.gate(p, xs), g, rtol=1e-10)
    np.testing.assert_allclose(LINEAR.predict_mean(p, xs), np.sum(g * mu, axis=1), rtol=1e-10)
    grid = np.linspace(-12, 12, 4001)
    dens = np.exp(np.asarray(LINEAR.predictive_log_prob(p, xs, grid)))
    ref = np.sum(g[:, None, :] * np.exp(-0.5 * ((grid[None, :, None] - mu[:, None, :]) / sd) ** 2)
                 / (np.sqrt(2 * np.pi) * sd), axis=2)
    np.testing.assert_allclose(dens, ref, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(np.trapezoid(dens, grid, axis=1), 1.0, rtol=1e-6)
    mode = np.asarray(LINEAR.predict_mode(p, xs))
    np.testing.assert_allclose(mode, grid[np.argmax(dens, axis=1)], atol=2 * (grid[1] - grid[0]))
    modes, log_d = LINEAR.predictive_modes(p, xs)
    # Each reported mode is a stationary point of the density: its derivative vanishes there.
    dlog = jax.vmap(jax.grad(lambda y, x: LINEAR.predictive_log_prob(p, x[None], y[None])[0, 0]))
    for j in range(2):
        np.testing.assert_allclose(dlog(modes[:, j], xs), 0.0, atol=1e-6)
        lp_at = np.diag(np.asarray(LINEAR.predictive_log_prob(p, xs, modes[:, j])))
        np.testing.assert_allclose(log_d[:, j], lp_at, rtol=1e-10)
    y_draw, z_draw = LINEAR.sample(jax.random.key(1), p, np.repeat(xs[:1], 4000, axis=0))
    np.testing.assert_allclose(np.mean(np.asarray(z_draw) == 1), g[0, 1], atol=0.03)
    np.testing.assert_allclose(np.mean(y_draw), np.sum(g[0] * mu[0]), atol=0.05)


def test_gating_step_raises_its_objective_and_converges_to_the_bfgs_maximum():
    gating = emjax.SoftmaxGating(prior_precision=0.3)
    r = softmax(RNG.normal(size=(N, 3)) * 2, axis=1) * RNG.uniform(0.5, 2.0, size=(N, 1))  # weighted rows
    data = (jnp.asarray(X), None)

    def q(w):
        return float(jnp.sum(r * gating.log_weights(w, data)) + gating.log_prior(w))

    step = jax.jit(lambda w: gating.maximize(gating.statistics(data, jnp.asarray(r), w), w))
    w = jnp.zeros((3, 3))
    values = [q(w)]
    for _ in range(300):
        w = step(w)
        values.append(q(w))
    assert np.all(np.diff(values) >= -1e-10 * np.abs(values[1:]))

    def neg(v):
        full = np.vstack([v.reshape(2, 3), np.zeros((1, 3))])
        lw = np.log(softmax(Z @ full.T, axis=1))
        vv = v.reshape(2, 3)
        return -(np.sum(r * lw) - 0.5 * 0.3 * np.sum(vv[:, :2] ** 2))

    ref = minimize(neg, np.zeros(6), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(values[-1], -ref.fun, rtol=1e-10)
    np.testing.assert_allclose(np.asarray(w)[:2], ref.x.reshape(2, 3), atol=1e-5)


def test_logistic_experts_reach_a_maximum_monotonically():
    # A weakly identified model: EM needs about 1100 iterations to 1e-12.
    res = emjax.fit(LOGISTIC, (X, YB), key=jax.random.key(0), n_restarts=2, max_iter=2000, tol=1e-12)
    assert np.all(res.status == emjax.RESULTS.SUCCESS)
    assert_monotone(res.trace)
    best, here, _ = _lbfgs_from(LOGISTIC, res.params, jnp.asarray(YB))
    assert best - here < 1e-9 * abs(here), (best, here)
    p = np.asarray(LOGISTIC.predict_mean(res.params, X[:50]))
    g = softmax(Z[:50] @ np.asarray(res.params.weights).T, axis=1)
    np.testing.assert_allclose(p, np.sum(g * expit(Z[:50] @ np.asarray(res.params.components.coef).T), axis=1),
                               rtol=1e-10)
    np.testing.assert_array_equal(LOGISTIC.predict_mode(res.params, X[:50]), (p > 0.5).astype(int))
    ll = np.sum(np.log(np.sum(g * np.exp(log_expit((2 * YB[:50, None] - 1) * (Z[:50] @ np.asarray(
        res.params.components.coef).T))), axis=1)))
    np.testing.assert_allclose(float(jnp.sum(LOGISTIC.log_prob(res.params, (X[:50], YB[:50])))), ll, rtol=1e-10)


def test_weights_act_as_repetitions_and_float32_agrees():
    counts = RNG.integers(0, 3, size=N)
    f64 = fit_weighted_and_repeated(LINEAR, (X, Y), counts, P0, max_iter=MAX_ITER)
    p32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), P0)
    f32 = emjax.fit(LINEAR, (X.astype(np.float32), Y.astype(np.float32)), key=jax.random.key(0), init=p32,
                    weights=counts.astype(np.float32), max_iter=MAX_ITER, tol=0.0)
    # Relative to the objective's scale: the trace crosses 0 on its way up.
    np.testing.assert_allclose(np.asarray(f32.trace, np.float64), f64.trace, atol=1e-5 * np.abs(f64.trace).max())
    np.testing.assert_allclose(float(f32.objective[0]), float(f64.objective[0]), rtol=1e-5)


def test_mixture_of_regressions_runs_incremental_em_and_streams():
    """With constant weights (a mixture of linear regressions) the statistics are
    linear, so incremental EM runs, monotone; a stream gives the in-memory fit."""
    model = emjax.MixtureOfExperts(emjax.LinearExpert(), 2, gating=emjax.ConstantGating())
    p0 = emjax.MixtureParams(jnp.asarray([0.5, 0.5]), P0.components)
    inc = emjax.fit(model, (X, Y), key=jax.random.key(0), init=p0, algorithm=emjax.IncrementalEM(n_blocks=3),
                    max_iter=MAX_ITER, tol=0.0)
    assert_monotone(inc.trace)
    batch = emjax.fit(model, (X, Y), key=jax.random.key(0), init=p0, max_iter=MAX_ITER, tol=0.0)
    chunks = [(X[i:i + 200], Y[i:i + 200]) for i in range(0, N, 200)]
    streamed = emjax.fit(model, chunks, key=jax.random.key(0), init=p0, max_iter=MAX_ITER, tol=0.0)
    np.testing.assert_allclose(streamed.trace, batch.trace, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(streamed.params), jax.tree.leaves(batch.params)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_bad_inputs_are_refused_clearly(linear_fit):
    with pytest.raises(ValueError, match="0 and 1"):
        emjax.fit(LOGISTIC, (X, YB * 2), key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"pair \(X, y\)"):
        emjax.fit(LINEAR, X, key=jax.random.key(0))
    with pytest.raises(ValueError, match="one entry per row of X"):
        emjax.fit(LINEAR, (X, Y[:-1]), key=jax.random.key(0))
    with pytest.raises(ValueError, match="2 covariates"):
        LINEAR.predict_mean(linear_fit.params, np.ones((3, 3)))
    with pytest.raises(ValueError, match="row 1"):
        LINEAR.predict_mode(linear_fit.params, np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(TypeError, match="expected_log_joint"):
        emjax.fit(LINEAR, (X, Y), key=jax.random.key(0), algorithm=emjax.IncrementalEM(n_blocks=2))
    with pytest.raises(TypeError, match="expert family"):
        emjax.MixtureOfExperts(emjax.Gaussian("full"), 2)
    with pytest.raises(TypeError, match="predict_mean"):
        LINEAR.mean(linear_fit.params)


@pytest.mark.parametrize("algorithm", ["ecm", "hard", "annealed"])
def test_other_algorithms_run_a_mixture_of_experts(algorithm):
    """ECM (weights, coefficients, variances in turn), classification EM and annealed
    EM (from T = 1 on) never decrease their objectives."""
    algo = {
        "ecm": emjax.ECM(), "hard": emjax.HardEM(),
        "annealed": emjax.AnnealedEM(initial_temperature=2.0, cooling=0.5, steps_per_temperature=10),
    }[algorithm]
    res = emjax.fit(LINEAR, (X, Y), key=jax.random.key(0), init=P0, algorithm=algo, max_iter=MAX_ITER, tol=0.0)
    trace = np.asarray(res.trace)
    assert_monotone(trace[:, 12:] if algorithm == "annealed" else trace)  # annealed: at T = 1 from step 10


def test_vector_outputs_m_step_is_weighted_ridge_least_squares_per_output():
    """With Dy = 2 outputs, fixed responsibilities: each expert's coefficients are the
    weighted ridge solution of each output, its variances the residual ones (NumPy),
    and statistics taken about another expansion point give the same M-step."""
    expert = emjax.LinearExpert(ridge=0.3, reg_var=0.0)
    y2 = np.c_[Y, 0.5 * Y + RNG.normal(size=N)]
    resp = softmax(RNG.normal(size=(N, 2)), axis=1)
    point = LinearExpertParams(jnp.asarray(RNG.normal(size=(2, 3, 2))), jnp.ones((2, 2)))
    step = jax.jit(lambda p: expert.maximize(expert.statistics((jnp.asarray(X), jnp.asarray(y2)), jnp.asarray(resp), p)))
    new = step(point)
    shifted = step(LinearExpertParams(point.coef + 1.0, point.variance))
    mask = np.diag([1.0, 1.0, 0.0])
    for k in range(2):
        s = (Z * resp[:, k, None]).T @ Z
        coef = np.linalg.solve(s + 0.3 * mask, (Z * resp[:, k, None]).T @ y2)
        rss = resp[:, k] @ (y2 - Z @ coef) ** 2
        var = (rss + 0.3 * np.sum(mask @ coef**2, axis=0)) / resp[:, k].sum()
        np.testing.assert_allclose(new.coef[k], coef, rtol=1e-9)
        np.testing.assert_allclose(new.variance[k], var, rtol=1e-9)
        np.testing.assert_allclose(shifted.coef[k], coef, rtol=1e-9)
        np.testing.assert_allclose(shifted.variance[k], var, rtol=1e-9)
