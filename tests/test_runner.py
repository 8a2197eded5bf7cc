"""The runner: stopping rules, a traced tol, the adjoint, status codes, initial parameters."""

import functools

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


@functools.cache
def start():
    """MODEL's parameters from random points of X: the start of the fits below that take one."""
    return jax.jit(MODEL.init, static_argnums=2)(KEY, jnp.asarray(X), "random")


@eqx.filter_jit
def converged(rule, model, data, old, new, tol):
    """``rule.converged``, compiled (op by op it compiles dozens of small programs)."""
    return rule.converged(model, data, old, new, tol)


@functools.cache
def batch_em():
    """Batch EM's ``init`` and ``step`` on X, each one compiled program, for MODEL as
    fit sees it (the regularisation's scale measured on the data): ``(model, data, init, step)``."""
    data = emjax.data.make_data(MODEL, X)
    model = MODEL.adapt(X)
    algo = emjax.BatchEM()
    return model, data, jax.jit(lambda p: algo.init(model, p, data)), jax.jit(lambda s: algo.step(model, s, data))


@pytest.fixture(scope="module")
def two_states():
    """Batch EM states before and after one step from the start."""
    model, data, init, step = batch_em()
    old = init(start())
    return model, data, old, step(old)


def numpy_posterior(params, x):
    comps = params.components
    dens = np.stack(
        [w * st.multivariate_normal(m, c).pdf(x) for w, m, c in zip(params.weights, comps.means, comps.covariances)],
        axis=1,
    )
    return dens / dens.sum(axis=1, keepdims=True)


def test_stopping_rules_against_numpy(two_states):
    model, data, old, new = two_states
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
        assert bool(converged(rule, model, data, old, new, jnp.asarray(value * 1.001))), rule
        assert not bool(converged(rule, model, data, old, new, jnp.asarray(value * 0.999))), rule


@pytest.mark.parametrize("rule", [emjax.RelativeChange(), emjax.ParameterChange(), emjax.ResponsibilityChange()])
def test_fit_stops_by_the_chosen_rule(rule):
    """The fit stops at the first step where the rule holds: one step fewer does not satisfy it."""
    res = emjax.fit(MODEL, X, key=KEY, init=start(), stopping=rule, tol=1e-4, max_iter=500)
    assert int(res.status[0]) == emjax.RESULTS.SUCCESS
    k = int(res.n_iter[0])
    # The fit's k steps, one at a time: the states after 0, 1, ..., k steps.
    model, data, init, step = batch_em()
    states = [init(start())]
    for _ in range(k):
        states.append(step(states[-1]))
    np.testing.assert_allclose([float(s.objective) for s in states], res.trace[0, : k + 1], rtol=1e-12)
    for a, b in zip(jax.tree.leaves(states[k].params), jax.tree.leaves(res.params)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert bool(converged(rule, model, data, states[k - 1], states[k], jnp.asarray(1e-4)))
    assert k > 1 and not bool(converged(rule, model, data, states[k - 2], states[k - 1], jnp.asarray(1e-4)))


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
    p0 = start()
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

    @jax.jit
    def fits(p0):  # with and without the veto: one program
        return [emjax.fit(MODEL, X, key=KEY, init=p0, tol=1e3, algorithm=algo) for algo in (Stubborn(), emjax.BatchEM())]

    res, plain = fits(start())
    assert int(res.n_iter[0]) == 5 and int(res.status[0]) == emjax.RESULTS.SUCCESS
    assert int(plain.n_iter[0]) == 1


def test_forward_adjoint_differentiates_a_fit():
    """jax.jvp through a whole fit equals a central finite difference (float64)."""
    p0 = start()

    def final_loglik(scale):
        res = emjax.fit(MODEL, jnp.asarray(X) * scale, key=KEY, init=p0, max_iter=5, tol=0.0,
                        adjoint=emjax.ForwardAdjoint())
        return res.objective[0]

    h = 1e-6

    @jax.jit
    def derivatives():  # the tangent and the two ends of the difference: one program
        return jax.jvp(final_loglik, (jnp.asarray(1.0),), (jnp.asarray(1.0),))[1], final_loglik(1.0 + h), final_loglik(1.0 - h)

    tangent, plus, minus = derivatives()
    fd = (plus - minus) / (2 * h)
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

    @jax.jit
    def fits(p0):  # without and with the remedy: one program
        return [emjax.fit(model, x, key=KEY, init=p0, max_iter=10, reinit_collapsed=r) for r in (False, True)]

    res, fixed = fits(p0)
    assert int(res.status[0]) == emjax.RESULTS.COLLAPSED
    np.testing.assert_array_equal(res.collapsed[0], [False, True])
    assert int(res.n_collapses[0]) == 1 and int(res.n_iter[0]) == 0
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(res.params))
    # With the remedy the fit goes on from a re-initialised component.
    assert int(fixed.n_iter[0]) >= 1 and int(fixed.n_collapses[0]) >= 1
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(fixed.params))


def test_init_function_parameters_are_cast_and_validated():
    x32 = X.astype(np.float32)
    good = start()

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


STOPPING = {"objective": emjax.ObjectiveChange(), "responsibilities": emjax.ResponsibilityChange()}


@pytest.fixture(scope="module")
def restart_fits():
    """For each rule of STOPPING, the same 5 restarts run as one vmap (restart batch 5),
    in groups of 2 and one after another (batch 1): all six fits one program."""

    @jax.jit
    def fits(x):
        return {
            name: {
                b: emjax.fit(MODEL, x, key=KEY, n_restarts=5, init="random", max_iter=40, tol=1e-3, stopping=rule,
                             restart_batch_size=b)
                for b in (5, 2, 1)
            }
            for name, rule in STOPPING.items()
        }

    return jax.tree.map(np.asarray, fits(jnp.asarray(X)))


@pytest.mark.parametrize("stopping", list(STOPPING))
def test_restarts_one_at_a_time_equal_restarts_batched(restart_fits, stopping):
    # The same restarts run as one vmap, in groups of 2 and one after another (where a
    # finished restart's step is skipped by a cond): the same fits, to rounding. A
    # loose tol makes the restarts stop at different iterations.
    fits = restart_fits[stopping]
    ref = fits[5]
    assert len(set(np.asarray(ref.n_iter).tolist())) > 1  # the restarts really finish apart
    for b in (2, 1):
        np.testing.assert_array_equal(fits[b].n_iter, ref.n_iter)
        np.testing.assert_array_equal(fits[b].status, ref.status)
        np.testing.assert_allclose(fits[b].trace, ref.trace, rtol=1e-10)
        np.testing.assert_allclose(fits[b].restart_params.components.covariances,
                                   ref.restart_params.components.covariances, rtol=1e-8, atol=1e-12)
