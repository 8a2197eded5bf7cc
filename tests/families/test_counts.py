"""Count-data families: Poisson, Binomial (known trials) and Multinomial.

The checks every family runs (densities against scipy, additive statistics, the
M-step as the maximiser, monotone EM, weights, float32, chunking) are in
``test_conformance.py``; this module has the count families' own.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st
from scipy.optimize import linear_sum_assignment

import emjax
from emjax.families._binomial import Binomial, BinomialParams, BetaPrior
from emjax.families._multinomial import Multinomial, MultinomialParams
from emjax.families._poisson import GammaPrior, Poisson, PoissonParams
from tests.conftest import assert_monotone
from tests.registry import CASES, D_COUNTS as D, K_COUNTS as K, N_DRAWS, N_TRIALS, sample_per_point
from tests.registry import count_sample as sample, count_truth as true_params

__all__ = ["model_for", "sample", "true_params", "sample_per_point", "assert_ml_fit"]  # imported by other test modules

FAMILIES = ["poisson", "binomial", "multinomial"]


def family(name, prior=False):
    return CASES[name].family(prior)


def model_for(name, prior=False, k=K, **kw):
    return CASES[name].model(k, prior, **kw)


def component_leaf(params):
    return np.asarray(jax.tree.leaves(params.components)[0])


# -- the three-coin example -----------------------------------------------------------------

HEADS = [6, 5, 4, 2, 2, 6, 5, 5, 4, 2, 5, 2, 4, 4, 6, 4, 5, 6, 3, 3]
POSTERIORS = {
    2: [0.5674795, 0.4124300, 0.0200905],
    3: [0.4568744, 0.4980674, 0.0450583],
    4: [0.3436451, 0.5619435, 0.0944114],
    5: [0.2370680, 0.5814960, 0.1814361],
    6: [0.1468149, 0.5401758, 0.3130094],
}


def test_three_coins_one_em_step():
    model = emjax.Mixture(Binomial(10), 3)
    x = model.validate_data(np.array(HEADS)[:, None])
    assert x.shape == (20, 1)
    params = emjax.MixtureParams(jnp.array([0.25, 0.5, 0.25]), BinomialParams(jnp.array([[0.4], [0.5], [0.65]])))
    post = np.asarray(model.posterior(params, x))
    for outcome, expected in POSTERIORS.items():
        rows = post[np.array(HEADS) == outcome]
        np.testing.assert_allclose(rows, np.broadcast_to(expected, rows.shape), atol=1e-6)
    stats, loglik = model.e_step(params, x)
    np.testing.assert_allclose(stats.counts, [6.6744913, 10.5237552, 2.8017535], atol=1e-6)
    new = model.m_step(stats, params)
    np.testing.assert_allclose(new.weights, [0.3337246, 0.5261878, 0.1400877], atol=1e-6)
    np.testing.assert_allclose(new.components.probs[:, 0], [0.3536485, 0.4278732, 0.5128013], atol=1e-6)
    # The log-likelihood is the full binomial one (with the C(10, x) terms).
    ref = np.log(sum(w * st.binom.pmf(HEADS, 10, p) for w, p in zip([0.25, 0.5, 0.25], [0.4, 0.5, 0.65])))
    np.testing.assert_allclose(loglik, ref.sum(), rtol=1e-12)


# -- log densities at boundary parameters (against scipy for all parameters: test_conformance.py) --


@eqx.filter_jit
def log_prob_and_grad(fam, comps, x):
    return fam.log_prob(comps, x), jax.grad(lambda c: jnp.sum(fam.log_prob(c, x)))(comps)


@pytest.mark.parametrize("name", FAMILIES)
def test_log_prob_is_finite_at_boundary_parameters(name):
    # Zero rates, probabilities of exactly 0 and 1: finite (clipped), and exact where the
    # outcome is the one the boundary value allows.
    fam = family(name)
    x = jnp.asarray([[0.0, 3.0, 0.0, 1.0], [1.0, 0.0, 0.0, 5.0]])
    if name == "poisson":
        comps = PoissonParams(jnp.array([[0.0, 1.0, 0.0, 2.0]]))
    elif name == "binomial":
        comps = BinomialParams(jnp.array([[0.0, 1.0, 0.0, 1.0]]))
        x = jnp.asarray([[0.0, N_TRIALS, 0.0, N_TRIALS], [0.0, 0.0, 0.0, 5.0]])
    else:
        comps = MultinomialParams(jnp.array([[0.0, 0.5, 0.0, 0.5]]))
    lp, grad = log_prob_and_grad(fam, comps, x)
    lp = np.asarray(lp)
    assert np.all(np.isfinite(lp))
    ref = CASES[name].log_density(comps, np.asarray(x))
    np.testing.assert_allclose(lp[0], ref[0], rtol=1e-12, atol=1e-13)  # p clipped to 1 - eps/2
    assert lp[1, 0] < -300  # impossible outcome: very negative, not NaN
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grad))


# -- M-steps ---------------------------------------------------------------------------------


def random_counts(name, rng, n=40, d=D):
    """Random count data (Multinomial totals differ per point)."""
    if name == "poisson":
        x = rng.poisson(5.0, size=(n, d))
    elif name == "binomial":
        x = rng.integers(0, N_TRIALS + 1, size=(n, d))
    else:
        x = rng.poisson(rng.uniform(0.5, 6.0, size=(n, 1)), size=(n, d))
    return x.astype(np.float64)


@pytest.mark.parametrize("prior", [False, True], ids=["ML", "MAP"])
@pytest.mark.parametrize("name", FAMILIES)
def test_m_step_hand_formulas(name, prior):
    rng = np.random.default_rng(2)
    x = random_counts(name, rng)
    resp = rng.dirichlet(np.ones(K), size=x.shape[0])
    fam = family(name, prior)
    got = component_leaf(emjax.MixtureParams(None, fam.maximize(fam.statistics(jnp.asarray(x), jnp.asarray(resp)))))
    nk = resp.sum(0)[:, None]
    s = resp.T @ x
    if name == "poisson":
        expected = (s + 1.0) / (nk + 0.1) if prior else s / nk
    elif name == "binomial":
        expected = (s + 1.0) / (N_TRIALS * nk + 3.0) if prior else s / (N_TRIALS * nk)
    else:
        expected = (s + 0.5) / (s.sum(1, keepdims=True) + 6.0 - 4) if prior else s / s.sum(1, keepdims=True)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_log_priors_match_scipy():
    rates = jnp.array([[0.5, 3.0], [7.0, 0.1]])
    g = GammaPrior(2.5, 0.4)
    np.testing.assert_allclose(g.log_prob(rates), st.gamma.logpdf(rates, 2.5, scale=1 / 0.4), rtol=1e-12)
    probs = jnp.array([[0.2, 0.9], [0.5, 0.01]])
    b = BetaPrior(2.0, 3.5)
    np.testing.assert_allclose(b.log_prob(probs), st.beta.logpdf(probs, 2.0, 3.5), rtol=1e-12)
    theta = jnp.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    fam = Multinomial(prior=emjax.Dirichlet([1.5, 2.0, 3.0]))
    ref = sum(st.dirichlet.logpdf(t, [1.5, 2.0, 3.0]) for t in np.asarray(theta))
    np.testing.assert_allclose(fam.log_prior(MultinomialParams(theta)), ref, rtol=1e-12)


# -- fitting ------------------------------------------------------------------------------------


def matched_errors(name, est, true):
    """Max abs errors of the weights and of the component parameters (Poisson rates
    divided by sqrt(rate), their standard deviation's scale), after matching components."""
    e, t = component_leaf(est), component_leaf(true)
    scale = np.sqrt(t) if name == "poisson" else np.ones_like(t)
    cost = np.abs((e[:, None, :] - t[None, :, :]) / scale[None]).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    comp_err = np.max(np.abs(e[rows] - t[cols]) / scale[cols])
    w_err = np.max(np.abs(np.asarray(est.weights)[rows] - np.asarray(true.weights)[cols]))
    return max(comp_err, w_err)


@pytest.mark.parametrize("name", FAMILIES)
def test_sample_and_moments(name):
    # Mixture.sample through the family, against the mixture's mean and covariance.
    n = 20000
    model = model_for(name)
    true = true_params(name)
    x, z = eqx.filter_jit(model.sample)(jax.random.key(7), true, n)
    x = np.asarray(x)
    assert x.shape == (n, D) and np.all(x == np.round(x)) and x.min() >= 0
    if name == "multinomial":
        assert np.all(x.sum(1) == N_DRAWS)
    if name == "binomial":
        assert x.max() <= N_TRIALS
    cov = np.asarray(model.covariance(true))
    se = np.sqrt(np.outer(np.diag(cov), np.diag(cov)) / n)  # about the sampling error of a covariance
    np.testing.assert_allclose(x.mean(0), model.mean(true), atol=float(5 * np.sqrt(np.diag(cov) / n).max()))
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 5 * se + 1e-12)
    np.testing.assert_allclose(np.bincount(np.asarray(z), minlength=K) / n, true.weights, atol=0.015)


#: The recovery tests' sample sizes: the fit to the first ``RECOVERY_N[0]`` rows of
#: ``RECOVERY_N[1]`` is the fit to all of them with weight 0 on the others (weights
#: are repetition counts, test_conformance.py), so both sizes are one compiled program.
#: Their restarts run one after another (``restart_batch_size=1``): a restart that has
#: converged stops computing, where under one ``vmap`` all ran as long as the slowest.
RECOVERY_N = (2000, 20000)


def first_rows(n):
    """Weights selecting the first ``n`` of ``RECOVERY_N[1]`` rows."""
    return (np.arange(RECOVERY_N[1]) < n).astype(np.float64)


@eqx.filter_jit
def log_likelihoods(model, restart_params, x, weights):
    """Each restart's log-likelihood ``sum_n w_n log p(x_n)`` (``restart_params`` with a
    leading restart axis)."""
    return jax.vmap(lambda p: model.log_prob(p, x) @ weights)(restart_params)


def assert_ml_fit(model, res, x, weights):
    """Every restart's objective never decreases and is the log-likelihood at its final parameters."""
    assert_monotone(res.trace)
    np.testing.assert_allclose(res.objective, log_likelihoods(model, res.restart_params, x, weights), rtol=1e-12)


@pytest.mark.parametrize("name", FAMILIES)
def test_parameter_recovery_and_monotone_ml(name):
    true = true_params(name)
    model = model_for(name)
    x, _ = sample(name, RECOVERY_N[1], 11)
    errors = []
    for n in RECOVERY_N:
        res = emjax.fit(model, x, key=jax.random.key(n), weights=first_rows(n), n_restarts=8,
                       restart_batch_size=1)
        assert int(res.status[res.best]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
        assert_ml_fit(model, res, x, first_rows(n))  # all 8 restarts
        errors.append(matched_errors(name, res.params, true))
    assert errors[1] < errors[0], errors
    assert errors[1] < {"poisson": 0.06, "binomial": 0.02, "multinomial": 0.02}[name], errors


@pytest.mark.parametrize("name", FAMILIES)
def test_frozen_parameters_and_counts(name):
    x, _ = sample(name, 200, 50)
    model = emjax.Mixture(family(name), K, frozen=("weights",) + type(family(name)).param_groups)
    p0 = eqx.filter_jit(model_for(name).init)(jax.random.key(0), jnp.asarray(x), "random")
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=5, tol=0.0)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p0)):
        np.testing.assert_array_equal(a, b)
    per = {"poisson": K * D, "binomial": K * D, "multinomial": K * (D - 1)}[name]
    assert model_for(name).n_parameters(D) == K - 1 + per
    assert model.n_parameters(D) == 0


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_data_is_rejected(name):
    model = model_for(name)
    good = np.array([[1, 2, 0, 3], [0, 1, 4, 2], [2, 2, 2, 2], [3, 0, 1, 1]])
    model.validate_data(good)
    with pytest.raises(ValueError, match="non-negative"):
        model.validate_data(good - np.eye(4, dtype=int) * 5)
    with pytest.raises(ValueError, match="integer-valued"):
        model.validate_data(good + 0.5 * np.eye(4))
    with pytest.raises(ValueError, match="2-D"):
        model.validate_data(good[0])
    with pytest.raises(ValueError, match="2-D"):
        model.validate_data(good[None])
    with pytest.raises(ValueError, match="NaN"):
        model.validate_data(np.where(np.eye(4) > 0, np.nan, good))
    with pytest.raises(ValueError, match="n_components"):
        model.validate_data(good[:2])
    with pytest.raises(ValueError, match="non-negative"):
        emjax.fit(model, good - np.eye(4, dtype=int) * 5, key=jax.random.key(0))


def test_family_specific_errors():
    with pytest.raises(ValueError, match="n_trials=5"):
        Binomial(5).validate_data(np.array([[6], [1]]))
    with pytest.raises(TypeError, match="n_trials"):
        Binomial(2.5)
    with pytest.raises(ValueError, match="n_trials"):
        Binomial(0)
    with pytest.raises(ValueError, match="2 categories"):
        Multinomial().validate_data(np.array([[3], [1]]))
    with pytest.raises(ValueError, match="3 entries"):
        Multinomial(prior=emjax.Dirichlet([2.0, 2.0, 2.0])).validate_data(np.ones((5, 4)))
    with pytest.raises(ValueError, match=">= 1"):
        GammaPrior(0.5, 1.0)
    with pytest.raises(ValueError, match="> 0"):
        GammaPrior(2.0, 0.0)
    with pytest.raises(ValueError, match=">= 1"):
        BetaPrior(2.0, 0.9)
    with pytest.raises(TypeError, match="GammaPrior"):
        Poisson(prior=BetaPrior(2.0, 2.0))


@pytest.mark.parametrize("name", FAMILIES)
def test_bad_params_are_rejected(name):
    x, _ = sample(name, 50, 60)
    model = model_for(name)
    good = true_params(name)
    leaf = component_leaf(good)
    cls = type(good.components)
    bad = {
        "shape": emjax.MixtureParams(good.weights, cls(jnp.asarray(leaf[:, :2]))),
        "negative": emjax.MixtureParams(good.weights, cls(jnp.asarray(leaf * np.where(np.eye(K, D) > 0, -1.0, 1.0)))),
    }
    with pytest.raises(ValueError, match=r"shape \(3, 4\)"):
        emjax.fit(model, x, key=jax.random.key(0), init=bad["shape"])
    with pytest.raises(ValueError, match="non-negative|lie in"):
        emjax.fit(model, x, key=jax.random.key(0), init=bad["negative"])
    with pytest.raises(TypeError):
        emjax.fit(model, x, key=jax.random.key(0), init=emjax.MixtureParams(good.weights, emjax.GaussianParams(leaf, leaf)))
    if name == "multinomial":
        with pytest.raises(ValueError, match="sum to 1"):
            emjax.fit(model, x, key=jax.random.key(0), init=emjax.MixtureParams(good.weights, cls(jnp.asarray(leaf * 1.1))))


# -- Binomial with per-point trials (n_trials=None, data (successes, trials)) -------------------


@pytest.mark.parametrize("per_feature", [False, True])
def test_binomial_per_point_log_prob_matches_scipy(per_feature):
    s, t, _ = sample_per_point(300, 70, per_feature, allow_zero=True)
    rng = np.random.default_rng(71)
    probs = rng.uniform(0.02, 0.98, size=(K, D))
    w = np.array([0.2, 0.3, 0.5])
    fam = Binomial(None)
    tt = t if per_feature else t[:, None]
    ref = np.stack([st.binom.logpmf(s, tt, probs[k]).sum(1) for k in range(K)], axis=1)
    got = fam.log_prob(BinomialParams(jnp.asarray(probs)), fam.validate_data((s, t)))
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    model = emjax.Mixture(fam, K)
    params = emjax.MixtureParams(jnp.asarray(w), BinomialParams(jnp.asarray(probs)))
    mix_ref = np.log(np.exp(ref) @ w)
    np.testing.assert_allclose(model.log_prob(params, (s, t)), mix_ref, rtol=1e-10)
    np.testing.assert_allclose(model.posterior(params, (s, t)).sum(1), 1.0, rtol=1e-12)
    assert model.predict(params, (s, t)).shape == (300,)


@pytest.mark.parametrize("per_feature", [False, True])
def test_binomial_per_point_recovery_and_monotone(per_feature):
    true = true_params("binomial")
    model = emjax.Mixture(Binomial(None), K)
    s, t, _ = sample_per_point(RECOVERY_N[1], 73, per_feature)
    errors = []
    for n in RECOVERY_N:
        res = emjax.fit(model, (s, t), key=jax.random.key(n), weights=first_rows(n), n_restarts=4,
                       restart_batch_size=1)
        assert int(res.status[res.best]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
        assert_ml_fit(model, res, (s, t), first_rows(n))
        errors.append(matched_errors("binomial", res.params, true))
    assert errors[1] < errors[0], errors
    assert errors[1] < 0.02, errors


@jax.jit
def pair_starts(x, trials):
    """Two restarts' starts (keys ``split(key(1), 2)``) of each init method: on ``x``
    for known trials, and on ``(x, t)`` for each ``t`` of ``trials`` for per-point trials."""
    keys = jax.random.split(jax.random.key(1), 2)
    fixed, per = model_for("binomial"), emjax.Mixture(Binomial(None), K)
    return {method: (jax.vmap(functools.partial(fixed.init, x=x, method=method))(keys),
                     [jax.vmap(functools.partial(per.init, x=(x, t), method=method))(keys) for t in trials])
            for method in ("kmeans", "random_resp")}


@eqx.filter_jit
def pair_fits(x, trials, p0):
    """Fits from ``p0`` (30 steps, ``tol=0``) for known trials and for each per-point ``trials``."""
    kw = dict(key=jax.random.key(1), init=p0, tol=0.0, max_iter=30)
    return (emjax.fit(model_for("binomial"), x, **kw), [emjax.fit(emjax.Mixture(Binomial(None), K), (x, t), **kw) for t in trials])


def test_binomial_per_point_equal_trials_equals_fixed():
    """Per-point trials all equal to the known number: the same starts for every init
    method (k-means, random responsibilities), and the same fit, with trials ``(N,)``
    or ``(N, D)``."""
    x, _ = sample("binomial", 1000, 74)
    t = np.full(x.shape[0], N_TRIALS)
    trials = [t, np.broadcast_to(t[:, None], x.shape)]
    for method, (fixed, per) in pair_starts(x, trials).items():
        for p in per:
            for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(fixed)):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10, err_msg=method)
    p0 = jax.tree.map(lambda a: a[0], pair_starts(x, trials)["kmeans"][0])
    fixed, per = pair_fits(x, trials, p0)
    for res in per:
        for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(fixed.params)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(res.trace, fixed.trace, rtol=1e-10)


def test_binomial_per_point_float32_successes_with_integer_trials():
    # The runner takes the dtype from the first leaf (weights = repetition and monotone
    # MAP for per-point trials are in test_conformance.py): the fit's output types,
    # traced without compiling.
    s, t, _ = sample_per_point(200, 75, allow_zero=True)
    counts = np.random.default_rng(1).integers(0, 4, size=s.shape[0])
    model = model_for("binomial_per_point", prior=True)
    model.validate_data((s.astype(np.float32), t))
    r32 = jax.eval_shape(lambda s: emjax.fit(model, (s, t), key=jax.random.key(0), weights=counts, max_iter=40),
                         s.astype(np.float32))
    assert all(a.dtype == np.float32 for a in jax.tree.leaves((r32.params, r32.objective, r32.trace)))


def test_binomial_per_point_sampling():
    params = true_params("binomial")
    fam = Binomial(None)
    model = emjax.Mixture(fam, K)
    with pytest.raises(ValueError, match="sample_successes"):
        model.sample(jax.random.key(0), params, 10)
    with pytest.raises(ValueError, match="n_trials=None"):
        model.mean(params)
    z = jnp.asarray(np.random.default_rng(0).integers(0, K, 50000))
    trials = np.random.default_rng(1).integers(0, 30, 50000)
    x = jax.jit(fam.sample_successes)(jax.random.key(1), params.components, z, trials)
    assert x.shape == (50000, D)
    assert np.all(np.asarray(x) <= trials[:, None]) and np.all(np.asarray(x) >= 0)
    fam.validate_data((x, trials))
    probs = component_leaf(params)
    for k in range(K):
        sel = np.asarray(z) == k
        frac = np.asarray(x)[sel].sum(0) / trials[sel].sum()
        np.testing.assert_allclose(frac, probs[k], atol=0.01)
    # Fixed mode: sample and sample_successes(n) agree.
    fixed = Binomial(7)
    np.testing.assert_array_equal(*jax.jit(lambda c, z: (fixed.sample(jax.random.key(2), c, z),
                                                          fixed.sample_successes(jax.random.key(2), c, z, 7)))(
        params.components, z[:100]))


def test_binomial_per_point_bad_data_is_rejected():
    fam = Binomial(None)
    s = np.array([[1, 2], [0, 3], [2, 2]])
    t = np.array([3, 4, 2])
    out = fam.validate_data((s, t))
    assert isinstance(out, tuple) and out[1].dtype == out[0].dtype
    fam.validate_data([s, np.array([[1, 2], [0, 3], [2, 2]])])
    fam.validate_data((s * 0, np.zeros(3)))  # zero trials: allowed (nothing observed)
    with pytest.raises(TypeError, match=r"pair \(successes, trials\)"):
        fam.validate_data(s)
    with pytest.raises(TypeError, match="pair"):
        fam.validate_data((s, t, t))
    with pytest.raises(ValueError, match=r"trials must have shape"):
        fam.validate_data((s, t[:2]))
    with pytest.raises(ValueError, match=r"trials must have shape"):
        fam.validate_data((s, np.ones((3, 3))))
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, D\)"):
        fam.validate_data((s, np.ones((3, 2, 1))))
    with pytest.raises(ValueError, match="non-negative integer"):
        fam.validate_data((s, np.array([3, -4, 2])))
    with pytest.raises(ValueError, match="non-negative integer"):
        fam.validate_data((s, np.array([3, 4.5, 2])))
    with pytest.raises(ValueError, match="non-negative integer"):
        fam.validate_data((s, np.array([3, np.nan, 2])))
    with pytest.raises(ValueError, match="non-negative"):
        fam.validate_data((s - 1, t))
    with pytest.raises(ValueError, match="integer-valued"):
        fam.validate_data((s + 0.5, t))
    with pytest.raises(ValueError, match=r"must not exceed trials.*3.0 > 2.0 at row 1, column 1"):
        fam.validate_data((s, np.array([3, 2, 2])))
    with pytest.raises(ValueError, match="must not exceed trials"):
        emjax.fit(emjax.Mixture(fam, 2), (s, np.array([[3, 4], [4, 2], [2, 2]])), key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"Binomial\(n_trials=None\)"):
        Binomial(5).validate_data((s, t))
    with pytest.raises(TypeError, match="or None"):
        Binomial(2.5)
