"""The runner: stopping rules, a traced tol, the adjoint, status codes, initial parameters."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as st

import emjax
from tests.conftest import make_blobs

X = make_blobs(21, n=300, d=2, k=3, sep=3.0)[0]
MODEL = emjax.Mixture(emjax.Gaussian("full"), 3)
KEY = jax.random.key(0)


@pytest.fixture(scope="module")
def two_states():
    """Batch EM states before and after one step from a k-means start."""
    p0 = MODEL.init(KEY, jnp.asarray(X), "kmeans")
    data = emjax.data.make_data(MODEL, X)
    algo = emjax.BatchEM()
    old = algo.init(MODEL, p0, data)
    new = algo.step(MODEL, old, data)
    return data, old, new


def numpy_posterior(params, x):
    comps = params.components
    dens = np.stack(
        [w * st.multivariate_normal(m, c).pdf(x) for w, m, c in zip(params.weights, comps.means, comps.covariances)],
        axis=1,
    )
    return dens / dens.sum(axis=1, keepdims=True)


def test_stopping_rules_against_numpy(two_states):
    data, old, new = two_states
    n = X.shape[0]
    d_obj = abs(float(new.objective - old.objective))
    smyth = np.mean(np.abs(numpy_posterior(new.params, X) - numpy_posterior(old.params, X)))
    moves = [
        np.max(np.abs(np.asarray(b) - np.asarray(a)) / (1 + np.abs(np.asarray(a))))
        for a, b in zip(jax.tree.leaves(old.params), jax.tree.leaves(new.params))
    ]
    cases = [
        (emjax.ObjectiveChange(), d_obj / n),
        (emjax.RelativeChange(), d_obj / abs(float(old.objective))),
        (emjax.ParameterChange(), max(moves)),
        (emjax.ResponsibilityChange(), smyth),
    ]
    for rule, value in cases:
        assert value > 1e-6, rule  # the step moved: the rule's value is not trivially 0
        assert bool(rule.converged(MODEL, data, old, new, jnp.asarray(value * 1.001))), rule
        assert not bool(rule.converged(MODEL, data, old, new, jnp.asarray(value * 0.999))), rule


@pytest.mark.parametrize("rule", [emjax.RelativeChange(), emjax.ParameterChange(), emjax.ResponsibilityChange()])
def test_fit_stops_by_the_chosen_rule(rule):
    """The fit stops at the first step where the rule holds: one step fewer does not satisfy it."""
    res = emjax.fit(MODEL, X, key=KEY, stopping=rule, tol=1e-4, max_iter=500)
    assert int(res.status[0]) == emjax.RESULTS.SUCCESS
    k = int(res.n_iter[0])
    before = emjax.fit(MODEL, X, key=KEY, stopping=rule, tol=0.0, max_iter=k - 1)
    after = emjax.fit(MODEL, X, key=KEY, stopping=rule, tol=0.0, max_iter=k)
    data = emjax.data.make_data(MODEL, X)
    model = MODEL.adapt(X)  # as fit does: the regularisation's scale from the data
    algo = emjax.BatchEM()
    old = algo.init(model, before.params, data)
    new = algo.step(model, old, data)
    np.testing.assert_allclose(new.objective, after.objective[0], rtol=1e-12)
    assert bool(rule.converged(model, data, old, new, jnp.asarray(1e-4)))
    if k > 1:
        older = algo.init(model, emjax.fit(MODEL, X, key=KEY, tol=0.0, max_iter=k - 2).params, data)
        assert not bool(rule.converged(model, data, older, old, jnp.asarray(1e-4)))


def test_smyth_rule_needs_a_posterior():
    class NoPosterior:
        def e_step(self, p, x, weights=None):
            return jnp.sum(x), jnp.zeros(())

        def m_step(self, s, p):
            return p

    with pytest.raises(TypeError, match="posterior"):
        emjax.fit(NoPosterior(), X, key=KEY, init=jnp.zeros(()), stopping=emjax.ResponsibilityChange())


class Counting(eqx.Module):
    """MODEL, counting how often its E-step is traced (once per compilation of a fit)."""

    inner: emjax.Mixture
    traces: list = eqx.field(static=True)

    def e_step(self, params, x, weights=None):
        self.traces.append(1)
        return self.inner.e_step(params, x, weights)

    def m_step(self, stats, params):
        return self.inner.m_step(stats, params)


def test_a_new_tol_does_not_compile_again():
    model = Counting(MODEL, [])
    p0 = MODEL.init(KEY, jnp.asarray(X), "kmeans")
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if "backend_compile" in event else None  # noqa: E731
    first = emjax.fit(model, X, key=KEY, init=p0, tol=1e-2)
    n_traced = len(model.traces)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        second = emjax.fit(model, X, key=KEY, init=p0, tol=1e-6)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert n_traced > 0 and len(model.traces) == n_traced, "a new tol traced the fit again"
    assert compiles == [], compiles
    assert int(first.n_iter[0]) < int(second.n_iter[0])


def test_a_veto_keeps_the_fit_going():
    class Stubborn(emjax.BatchEM):
        def can_stop(self, state):
            return state.n_passes >= 6

    res = emjax.fit(MODEL, X, key=KEY, tol=1e3, algorithm=Stubborn())
    assert int(res.n_iter[0]) == 5 and int(res.status[0]) == emjax.RESULTS.SUCCESS
    assert int(emjax.fit(MODEL, X, key=KEY, tol=1e3).n_iter[0]) == 1


def test_forward_adjoint_differentiates_a_fit():
    """jax.jvp through a whole fit equals a central finite difference (float64)."""
    p0 = MODEL.init(KEY, jnp.asarray(X), "kmeans")

    def final_loglik(scale):
        res = emjax.fit(MODEL, jnp.asarray(X) * scale, key=KEY, init=p0, max_iter=5, tol=0.0,
                        adjoint=emjax.ForwardAdjoint())
        return res.objective[0]

    _, tangent = jax.jvp(final_loglik, (jnp.asarray(1.0),), (jnp.asarray(1.0),))
    h = 1e-6
    fd = (final_loglik(jnp.asarray(1.0 + h)) - final_loglik(jnp.asarray(1.0 - h))) / (2 * h)
    assert abs(float(tangent)) > 10
    np.testing.assert_allclose(tangent, fd, rtol=1e-5)
    with pytest.raises(TypeError, match="adjoint"):
        emjax.fit(MODEL, X, key=KEY, adjoint="implicit")
    with pytest.raises(TypeError, match="stopping"):
        emjax.fit(MODEL, X, key=KEY, stopping="smyth")


def collapse_case():
    """Data with a triplicated far point, a model without reg_covar and a start whose
    second component sits on that point: its first M-step makes it singular."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(200, 2)), np.repeat([[30.0, 30.0]], 3, axis=0)])
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0), 2)
    p0 = emjax.MixtureParams(
        jnp.array([0.5, 0.5]),
        emjax.GaussianParams(jnp.array([[0.0, 0.0], [30.0, 30.0]]), jnp.stack([jnp.eye(2), 0.1 * jnp.eye(2)])),
    )
    return x, model, p0


def test_a_collapse_on_the_first_step_reports_collapsed():
    """A component that collapses onto one (triplicated) point makes the first step
    non-finite without reg_covar: the restart ends COLLAPSED, naming the component,
    with finite parameters (its last finite ones)."""
    x, model, p0 = collapse_case()
    res = emjax.fit(model, x, key=KEY, init=p0, max_iter=10)
    assert int(res.status[0]) == emjax.RESULTS.COLLAPSED
    np.testing.assert_array_equal(res.collapsed[0], [False, True])
    assert int(res.n_collapses[0]) == 1 and int(res.n_iter[0]) == 0
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(res.params))
    # With the remedy the fit goes on from a re-initialised component.
    fixed = emjax.fit(model, x, key=KEY, init=p0, max_iter=10, reinit_collapsed=True)
    assert int(fixed.n_iter[0]) >= 1 and int(fixed.n_collapses[0]) >= 1
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(fixed.params))


def test_init_function_parameters_are_cast_and_validated():
    x32 = X.astype(np.float32)
    good = MODEL.init(KEY, jnp.asarray(X), "kmeans")

    def mixed_dtypes(key, x):  # one float64 leaf among float32 data
        return emjax.MixtureParams(good.weights.astype(jnp.float64), jax.tree.map(lambda a: a.astype(jnp.float32), good.components))

    res = emjax.fit(MODEL, x32, key=KEY, init=mixed_dtypes, max_iter=5)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(res.params))
    ref = emjax.fit(MODEL, x32, key=KEY, init=jax.tree.map(lambda a: a.astype(jnp.float32), good), max_iter=5)
    np.testing.assert_allclose(res.trace, ref.trace, rtol=1e-6)

    def heavy(key, x):  # weights summing to 1.8
        return emjax.MixtureParams(good.weights * 1.8, good.components)

    with pytest.raises(ValueError, match="restart 0: .*sum to 1"):
        emjax.fit(MODEL, X, key=KEY, init=heavy, n_restarts=2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(tol=None), TypeError, "tol must be a number"),
        (dict(tol="1e-3"), TypeError, "tol must be a number"),
        (dict(tol=-1.0), ValueError, "tol must be a finite number"),
        (dict(max_iter=-1), ValueError, "max_iter"),
        (dict(n_restarts=0), ValueError, "n_restarts"),
        (dict(init="kmedoids"), ValueError, "unknown init method 'kmedoids'"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(restart_batch_size=0), ValueError, "restart_batch_size"),
        (dict(restart_batch_size=1.5), ValueError, "restart_batch_size must be a positive integer"),
    ],
)
def test_bad_arguments_are_refused_before_compiling(kwargs, error, match):
    with pytest.raises(error, match=match):
        emjax.fit(MODEL, X, key=KEY, **kwargs)


@pytest.mark.parametrize("stopping", [emjax.ObjectiveChange(), emjax.ResponsibilityChange()])
def test_restarts_one_at_a_time_equal_restarts_batched(stopping):
    # The same restarts run as one vmap, in groups of 2 and one after another (where a
    # finished restart's step is skipped by a cond): the same fits, to rounding. A
    # loose tol makes the restarts stop at different iterations.
    fits = {
        b: emjax.fit(MODEL, X, key=KEY, n_restarts=5, init="random", max_iter=40, tol=1e-3, stopping=stopping,
                     restart_batch_size=b)
        for b in (5, 2, 1)
    }
    ref = fits[5]
    assert len(set(np.asarray(ref.n_iter).tolist())) > 1  # the restarts really finish apart
    for b in (2, 1):
        np.testing.assert_array_equal(fits[b].n_iter, ref.n_iter)
        np.testing.assert_array_equal(fits[b].status, ref.status)
        np.testing.assert_allclose(fits[b].trace, ref.trace, rtol=1e-10)
        np.testing.assert_allclose(fits[b].restart_params.components.covariances,
                                   ref.restart_params.components.covariances, rtol=1e-8, atol=1e-12)
