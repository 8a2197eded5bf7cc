"""The EM variants: annealed, over-relaxed, stochastic / Monte-Carlo / SAEM, ECM,
generalized and hard (classification) EM, each against the property theory gives it.

One small float64 problem (three overlapping 2-D Gaussians, N=600) and one
start serve most tests; the batch-EM fit to it is the reference fixed point.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

import emjax
from tests.conftest import assert_monotone, make_blobs

K = 3


def _overlapping(seed=0, n_per=200):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [2.5, 0.0], [0.0, 3.0]])
    return np.concatenate([rng.normal(size=(n_per, 2)) + c for c in centres])


X = _overlapping()
MODEL = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0), K)
# The starts are computed compiled (eagerly, k-means alone dispatched some 90 small programs).
_init = jax.jit(MODEL.init, static_argnums=2)
P0 = _init(jax.random.key(1), jnp.asarray(X), "random")  # a start from which ECM in either order reaches EM's fixed point
# Well separated (EM converges in tens of steps): where the sampling variants are
# compared with EM's fixed point after a few hundred steps.
XS, _ = make_blobs(2, n=600, d=2, k=K, sep=4.0)
PS = _init(jax.random.key(5), jnp.asarray(XS), "kmeans")


def _fit(algorithm, *, model=MODEL, x=X, init=P0, max_iter=400, tol=1e-10, **kw):
    return emjax.fit(model, x, key=jax.random.key(1), init=init, algorithm=algorithm, max_iter=max_iter, tol=tol, **kw)


def _trace(res, r=0):
    return np.asarray(res.trace[r][: int(res.n_iter[r]) + 1])


@pytest.fixture(scope="module")
def em():
    """Batch EM to its fixed point from P0 (slow: overlapping components)."""
    res = _fit(emjax.BatchEM(), max_iter=3000, tol=1e-13)
    assert res.status[0] == emjax.RESULTS.SUCCESS
    return res


# -- hard EM ----------------------------------------------------------------------------


def _numpy_lloyd(x, centres, max_iter=100):
    """Lloyd's algorithm written out: labels, centres, iterations until the labels repeat."""
    labels = None
    for it in range(max_iter):
        new = np.argmin(((x[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
        if labels is not None and np.array_equal(new, labels):
            return labels, centres, it
        labels = new
        centres = np.stack([x[labels == k].mean(0) for k in range(centres.shape[0])])
    raise AssertionError("Lloyd did not settle")


def test_hard_em_with_fixed_equal_spherical_covariances_is_lloyd():
    model = emjax.Mixture(emjax.Gaussian("spherical", reg_covar=0.0), K, frozen=("weights", "covariances"))
    centres = X[[0, 1, 2]]  # three points of the first cluster: Lloyd has work to do
    p0 = emjax.MixtureParams(
        jnp.full((K,), 1.0 / K), emjax.GaussianParams(jnp.asarray(centres), jnp.full((K,), 0.7))
    )
    res = _fit(emjax.HardEM(), model=model, init=p0, tol=1e-12, stopping=emjax.ParameterChange())
    labels, ref_centres, n_iter = _numpy_lloyd(X, centres)
    np.testing.assert_allclose(res.params.components.means, ref_centres, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.predict(res.params, X), labels)
    # ParameterChange stops at the first step that changes nothing but rounding: the
    # M-step after the labels repeat (NumPy's count of assignments is one less).
    assert int(res.n_iter[0]) == n_iter + 1
    assert res.status[0] == emjax.RESULTS.SUCCESS
    # Its objective is the classification log-likelihood: sum of the best class's log joint.
    lj = np.asarray(model.log_joint(res.params, X))
    np.testing.assert_allclose(float(res.objective[0]), lj.max(axis=1).sum(), rtol=1e-12)


def test_hard_em_classification_likelihood_never_decreases_with_a_prior_and_restarts():
    model = emjax.Mixture(emjax.Gaussian("full", prior=emjax.NormalInverseWishart.fraley_raftery(X, K)), K,
                          weights_prior=emjax.Dirichlet(2.0))
    res = emjax.fit(model, X, key=jax.random.key(3), n_restarts=4, init="random", algorithm=emjax.HardEM(),
                    max_iter=100, tol=1e-12, stopping=emjax.ParameterChange())
    assert_monotone(res.trace)
    assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)  # a labelling repeats
    assert np.all(np.asarray(res.trace[:, -1] - res.trace[:, 0]) > 1.0)


# -- annealed EM -------------------------------------------------------------------------


def _tempered(params, t):
    lj = np.asarray(MODEL.log_joint(params, X))
    return t * logsumexp(lj / t, axis=1).sum()


def test_annealed_em_raises_the_tempered_objective_at_each_temperature():
    algo = emjax.AnnealedEM(initial_temperature=4.0, cooling=0.5, steps_per_temperature=5)
    data = emjax.data.ArrayData(jnp.asarray(X), None, None)
    init, step = jax.jit(lambda p: algo.init(MODEL, p, data)), jax.jit(lambda s: algo.step(MODEL, s, data))
    state = init(P0)
    temps = [4.0, 4.0, 4.0, 4.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    prev = state
    for i, t in enumerate(temps[1:], start=1):
        state = step(prev)
        assert float(state.temperature) == t
        # The M-step (from statistics at temps[i-1]) raises that temperature's objective.
        assert _tempered(state.params, temps[i - 1]) >= _tempered(prev.params, temps[i - 1]) - 1e-9
        np.testing.assert_allclose(float(state.objective), _tempered(state.params, 1.0), rtol=1e-12)
        prev = state
    assert bool(algo.can_stop(state)) and not bool(algo.can_stop(init(P0)))
    assert float(state.fitted_temperature) == 1.0


def test_annealed_em_cannot_stop_before_the_temperature_reaches_one():
    algo = emjax.AnnealedEM(initial_temperature=8.0, cooling=0.5, steps_per_temperature=4)
    res = _fit(algo, tol=1.0)  # a tolerance every step meets
    # T = 8, 4, 2 for 4 steps each; the 12th step's E-step is at T = 1 but its M-step
    # used T = 2 statistics: the 13th is the first that may stop.
    assert int(res.n_iter[0]) == 13
    assert res.status[0] == emjax.RESULTS.SUCCESS


def test_annealed_em_beats_em_from_the_same_poor_starts():
    # Well-separated clusters of unequal sizes: EM from random starts often puts
    # two components in one cluster; a warm start of the annealing smooths those
    # optima away.
    rng = np.random.default_rng(5)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0], [4.0, 16.0]])
    sizes = [400, 200, 100, 60, 40]
    x = np.concatenate([rng.normal(scale=0.7, size=(s, 2)) + c for s, c in zip(sizes, centres)])
    model = emjax.Mixture(emjax.Gaussian("spherical"), 5)
    kw = dict(key=jax.random.key(7), n_restarts=8, init="random", max_iter=300, tol=1e-9)
    plain = emjax.fit(model, x, algorithm=emjax.BatchEM(), **kw)
    annealed = emjax.fit(model, x, algorithm=emjax.AnnealedEM(), **kw)
    best = max(float(plain.objective.max()), float(annealed.objective.max()))
    hit = lambda r: np.mean(np.asarray(r.objective) > best - 1e-4 * abs(best))  # noqa: E731
    # Measured: 6 of 8 annealed restarts reach the best optimum, none of EM's.
    assert hit(annealed) >= hit(plain) + 0.5
    assert float(np.median(annealed.objective)) > float(np.median(plain.objective))


# -- over-relaxed EM ---------------------------------------------------------------------


def test_over_relaxed_em_is_monotone_and_faster_than_em_to_the_same_optimum(em):
    tol = 1e-10
    plain = _fit(emjax.BatchEM(), tol=tol, max_iter=3000)
    fast = _fit(emjax.OverRelaxedEM(), tol=tol, max_iter=3000)
    assert_monotone(fast.trace)
    assert fast.status[0] == emjax.RESULTS.SUCCESS and plain.status[0] == emjax.RESULTS.SUCCESS
    assert int(fast.n_iter[0]) < 0.5 * int(plain.n_iter[0])
    assert float(fast.n_passes[0]) < 0.6 * float(plain.n_passes[0])  # rejected steps' second pass included
    np.testing.assert_allclose(float(fast.objective[0]), float(em.objective[0]), rtol=1e-8)


# -- stochastic, Monte-Carlo EM and SAEM ----------------------------------------------------


def test_sampled_e_step_draws_whole_points_and_averages_to_the_posterior():
    key = jax.random.key(11)
    stats, ll = MODEL.e_step(P0, jnp.asarray(X), assignment="sample", key=key)
    soft, ll_soft = MODEL.e_step(P0, jnp.asarray(X))
    counts = np.asarray(stats.counts)
    np.testing.assert_array_equal(counts, np.round(counts))
    assert counts.sum() == len(X)
    assert float(ll) == pytest.approx(float(ll_soft), rel=1e-14)  # the log-likelihood, not a draw
    many, _ = MODEL.e_step(P0, jnp.asarray(X), assignment="sample", key=key, n_samples=4000)
    # Each row's share of 4000 draws is within a few binomial standard errors of its posterior.
    post = np.asarray(MODEL.responsibilities(P0, X))
    np.testing.assert_allclose(many.counts, post.sum(0), atol=4 * np.sqrt(len(X) / 4000))
    other, _ = MODEL.e_step(P0, jnp.asarray(X), assignment="sample", key=jax.random.key(12))
    assert not np.array_equal(np.asarray(other.components.s1), np.asarray(stats.components.s1))


@pytest.fixture(scope="module")
def em_fast():
    res = _fit(emjax.BatchEM(), x=XS, init=PS, max_iter=500, tol=1e-13)
    assert res.status[0] == emjax.RESULTS.SUCCESS
    return res


def test_stochastic_em_wanders_near_the_optimum_with_independent_restarts(em):
    # Overlapping components, so the draws are far from certain and the chain moves.
    kw = dict(key=jax.random.key(2), n_restarts=2, init=lambda key, x: P0, algorithm=emjax.StochasticEM(),
              max_iter=100, tol=0.0)
    res = emjax.fit(MODEL, X, **kw)
    tail = np.asarray(res.trace[:, 30:]) / len(X)
    assert not np.array_equal(tail[0], tail[1])  # the two chains drew differently
    assert np.all(np.std(tail, axis=1) > 1e-4)  # and keep moving
    assert np.all(np.abs(tail.mean(axis=1) - float(em.objective[0]) / len(X)) < 0.02)
    np.testing.assert_array_equal(res.trace, emjax.fit(MODEL, X, **kw).trace)  # the key decides the draws


def test_monte_carlo_em_settles_at_em_fixed_point(em_fast):
    res = _fit(emjax.MonteCarloEM(initial_samples=1, growth=1.1, max_samples=20000), x=XS, init=PS,
               max_iter=120, tol=0.0)
    assert abs(float(res.objective[0]) - float(em_fast.objective[0])) / len(XS) < 1e-3
    np.testing.assert_allclose(res.params.components.means, em_fast.params.components.means, atol=0.02)


def test_saem_converges_to_em_fixed_point(em_fast):
    res = _fit(emjax.SAEM(burn_in=10, kappa=0.75), x=XS, init=PS, max_iter=300, tol=0.0)
    assert abs(float(res.objective[0]) - float(em_fast.objective[0])) / len(XS) < 1e-3
    np.testing.assert_allclose(res.params.components.means, em_fast.params.components.means, atol=0.02)
    np.testing.assert_allclose(res.params.weights, em_fast.params.weights, atol=0.005)


# -- ECM and generalized EM -----------------------------------------------------------------


def test_ecm_cycle_in_em_order_is_em_and_other_orders_reach_the_same_fixed_point(em):
    first = _fit(emjax.ECM(), max_iter=60, tol=0.0)
    batch = _fit(emjax.BatchEM(), max_iter=60, tol=0.0)
    np.testing.assert_allclose(first.trace, batch.trace, rtol=1e-13)
    for e_step in ("cycle", "group"):
        res = _fit(emjax.ECM(groups=(("covariances",), ("weights", "means")), e_step=e_step), max_iter=3000,
                   tol=1e-13)
        assert_monotone(res.trace)
        assert res.status[0] == emjax.RESULTS.SUCCESS
        np.testing.assert_allclose(float(res.objective[0]), float(em.objective[0]), rtol=1e-9)
        if e_step == "group":  # an E-step after each of the two conditional maximisations
            assert float(res.n_passes[0]) == 1 + 2 * int(res.n_iter[0])


def test_generalized_em_is_monotone_and_reaches_em_optimum(em):
    res = _fit(emjax.GeneralizedEM(), max_iter=3000, tol=1e-13)
    assert_monotone(res.trace)
    np.testing.assert_allclose(float(res.objective[0]), float(em.objective[0]), rtol=1e-9)
    adam = _fit(emjax.GeneralizedEM(optax.adam(0.02), n_steps=5), max_iter=200, tol=0.0)
    assert_monotone(adam.trace)  # a fixed-step optimizer improves less, never for the worse
    assert float(adam.objective[0]) > float(adam.trace[0, 0]) + 10.0


# -- weights, priors, frozen groups, data sources --------------------------------------------


@pytest.mark.parametrize(
    "algorithm",
    # The E-step options (hard, tempered) reach the weighted statistics as the soft
    # E-step's do; these three cover the distinct M-steps (closed form, over-relaxed,
    # conditional with a pass per group).
    [emjax.HardEM(), emjax.OverRelaxedEM(), emjax.ECM(groups=(("covariances",), ("weights", "means")), e_step="group")],
    ids=lambda a: type(a).__name__,
)
def test_sample_weights_are_repetitions_with_a_prior(algorithm):
    x, counts = X[::20], np.arange(len(X[::20])) % 3 + 1
    model = emjax.Mixture(emjax.Gaussian("diag", prior=emjax.NormalInverseWishart.fraley_raftery(x, K)), K,
                          weights_prior=emjax.Dirichlet(2.0))
    p0 = model.init(jax.random.key(0), jnp.asarray(x), "kmeans++")
    kw = dict(key=jax.random.key(0), init=p0, algorithm=algorithm, max_iter=15, tol=0.0)
    weighted = emjax.fit(model, x, weights=counts, **kw)
    repeated = emjax.fit(model, np.repeat(x, counts, axis=0), **kw)
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(weighted.trace, repeated.trace, rtol=1e-9)


def test_frozen_groups_hold_under_every_variant():
    model = emjax.Mixture(emjax.Gaussian("full"), K, frozen="means")
    for algo in (emjax.OverRelaxedEM(), emjax.ECM(), emjax.GeneralizedEM(n_steps=3), emjax.SAEM(), emjax.HardEM()):
        res = _fit(algo, model=model, max_iter=10, tol=0.0)
        np.testing.assert_array_equal(res.params.components.means, P0.components.means)


def test_sampled_variants_run_over_a_stream_with_chunks_drawing_independently():
    stream = emjax.Stream(XS, chunk_size=100)
    res = emjax.fit(MODEL, stream, key=jax.random.key(4), init=PS, algorithm=emjax.SAEM(), max_iter=30, tol=0.0)
    mem = emjax.fit(MODEL, XS, key=jax.random.key(4), init=PS, algorithm=emjax.SAEM(), max_iter=30, tol=0.0,
                    chunk_size=100)
    assert np.all(np.isfinite(res.trace))
    assert abs(float(res.objective[0]) - float(mem.objective[0])) / len(XS) < 0.01


# -- bad settings -----------------------------------------------------------------------------


class _NoAssignments(emjax.EMModel):
    def e_step(self, params, x, weights=None):
        n = x.shape[0]
        return jnp.sum(x), jnp.asarray(-float(n))

    def m_step(self, stats, params):
        return stats


def test_bad_settings_are_refused_before_compiling():
    user = _NoAssignments()
    for algo, msg in [(emjax.HardEM(), "assignment="), (emjax.SAEM(), "assignment="),
                      (emjax.AnnealedEM(), "temperature"), (emjax.ECM(), "param_groups"),
                      (emjax.GeneralizedEM(), "expected_log_joint")]:
        with pytest.raises(TypeError, match=msg):
            emjax.fit(user, np.ones((10, 2)), key=jax.random.key(0), init=jnp.zeros(()), algorithm=algo)
    with pytest.raises(ValueError, match="unestimated"):
        _fit(emjax.ECM(groups=(("means",),)))
    with pytest.raises(ValueError, match="not among"):
        _fit(emjax.ECM(groups=(("means", "covariances", "weights", "dofs"),)))
    with pytest.raises(ValueError, match="e_step must be"):
        emjax.ECM(e_step="sometimes")
    with pytest.raises(ValueError, match="cooling"):
        emjax.AnnealedEM(cooling=1.5)
    with pytest.raises(ValueError, match="kappa"):
        emjax.SAEM(kappa=0.4)
    with pytest.raises(TypeError, match="optax"):
        emjax.GeneralizedEM(optimizer="adam")
    with pytest.raises(ValueError, match="pass key"):
        MODEL.e_step(P0, jnp.asarray(X), assignment="sample")
    with pytest.raises(ValueError, match="assignment must be"):
        MODEL.e_step(P0, jnp.asarray(X), assignment="fuzzy")
