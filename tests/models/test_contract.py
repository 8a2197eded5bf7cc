"""The model contract: EMModel's defaults, the UserModel wrapper, the gating of a mixture,
tempered E-steps and frozen groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import emjax
from emjax.families import Family
from tests.algorithms.test_gradient import Linkage
from tests.conftest import make_blobs

K = 3


@pytest.fixture(scope="module")
def blobs():
    return make_blobs(7, n=120, d=2, k=K)[0]


@pytest.fixture(scope="module")
def fitted(blobs):
    """A full-covariance mixture and parameters away from a fixed point (one M-step from k-means)."""
    model = emjax.Mixture(emjax.Gaussian("full"), K)
    return model, model.init(jax.random.key(0), jnp.asarray(blobs), "kmeans")


def reference_log_joint(params, x, reg=1e-6):
    """The E-step's ``log pi_k + log N(x_n | mu_k, Sigma_k) - tr(R Sigma_k^{-1}) / 2``
    with SciPy, ``R = reg I`` (a Gaussian's default ``reg_covar`` at scale 1, as
    before ``adapt``): ``(N, K)``."""
    w = np.asarray(params.weights)
    means, covs = np.asarray(params.components.means), np.asarray(params.components.covariances)
    return np.stack([
        np.log(w[k]) + multivariate_normal(means[k], covs[k]).logpdf(x) - 0.5 * reg * np.trace(np.linalg.inv(covs[k]))
        for k in range(len(w))
    ], axis=1)


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


# -- EMModel: abstract methods and defaults ----------------------------------------------


class Minimal(emjax.EMModel):
    """The smallest EMModel: the mean of the data, as an EM fixed point."""

    def e_step(self, params, x, weights=None, **options):
        return jnp.sum(x, axis=0), -jnp.sum((x - params) ** 2)

    def m_step(self, stats, params):
        return stats


def test_emmodel_without_e_step_cannot_be_instantiated():
    class NoEStep(emjax.EMModel):
        def m_step(self, stats, params):
            return stats

    with pytest.raises(TypeError, match="e_step"):
        NoEStep()


def test_emmodel_defaults():
    model = Minimal()
    x = np.arange(6.0).reshape(3, 2)
    assert float(model.log_prior(1.0)) == 0.0
    assert float(model.objective(None, 1.0, jnp.asarray(-2.5))) == -2.5
    assert model.init_methods == ()
    with pytest.raises(TypeError, match="Minimal has no init"):
        model.init(jax.random.key(0), x, "kmeans")
    with pytest.raises(NotImplementedError, match="expected_log_joint"):
        model.expected_log_joint(None, 1.0)
    assert model.collapsed(1.0, x) is None
    with pytest.raises(NotImplementedError, match="reinitialize"):
        model.reinitialize(jax.random.key(0), 1.0, x, jnp.zeros(2, bool))
    with pytest.raises(NotImplementedError, match="posterior"):
        model.posterior(1.0, x)
    checked = model.validate_data((x, x[:, 0]))
    assert all(isinstance(a, jax.Array) for a in checked)
    np.testing.assert_array_equal(checked[0], x)
    assert model.validate_params(1.0, x) is None
    p = {"a": jnp.ones(2)}
    assert model.unconstrain(p) is p and model.constrain(p) is p
    assert model.hold_frozen(p, {"a": jnp.zeros(2)}) is p
    assert model.row_width(x) == 2 and model.row_width(x[:, 0]) == 1 and model.row_width((x[:, :1], x)) == 1
    assert model.provides("e_step") and model.provides("m_step")
    for hook in ("log_prior", "objective", "init", "expected_log_joint", "collapsed", "reinitialize",
                 "validate_data", "validate_params", "unconstrain", "constrain", "hold_frozen", "posterior"):
        assert not model.provides(hook), hook


def test_provides_sees_overrides_and_needs_both_halves_of_the_bijection():
    class Partial(Minimal):
        def log_prior(self, params):
            return -jnp.sum(params**2)

        def unconstrain(self, params):
            return params

    model = Partial()
    assert model.provides("log_prior") and not model.provides("expected_log_joint")
    assert not model.provides("unconstrain") and not model.provides("constrain")
    # The objective default uses the override.
    assert float(model.objective(None, jnp.asarray(2.0), jnp.asarray(1.0))) == -3.0
    mixture = emjax.Mixture(emjax.Gaussian("diag"), 2)
    for hook in ("expected_log_joint", "collapsed", "reinitialize", "unconstrain", "hold_frozen", "posterior", "init"):
        assert mixture.provides(hook), hook
    assert not mixture.provides("objective")


def test_mixture_init_methods_and_row_width(blobs):
    model = emjax.Mixture(emjax.Gaussian("full"), 4)
    assert emjax.Mixture.init_methods == model.init_methods == ("kmeans", "kmeans++", "random", "random_resp")
    assert model.row_width(blobs) == 4 * 2


# -- UserModel and as_model ---------------------------------------------------------------


class Recorder:
    """A duck-typed model that records how its e_step is called."""

    def __init__(self):
        self.calls = []

    def e_step(self, params, x, weights=None, **options):
        self.calls.append((weights is not None, dict(options)))
        return jnp.sum(x), jnp.asarray(-1.0)

    def m_step(self, stats, params):
        return stats / 2

    def log_prior(self, params):
        return jnp.asarray(-0.5)

    def collapsed(self, params, x):
        return jnp.array([False, True])

    def unconstrain(self, params):
        return jnp.log(params)

    def constrain(self, u):
        return jnp.exp(u)

    def hold_frozen(self, params, reference):
        return reference


def test_user_model_forwards_and_provides():
    obj = Recorder()
    model = emjax.as_model(obj)
    assert isinstance(model, emjax.UserModel) and model.model is obj
    x = jnp.ones((4, 2))
    model.e_step(1.0, x)
    model.e_step(1.0, x, None)
    model.e_step(1.0, x, jnp.ones(4))
    model.e_step(1.0, x, None, temperature=2.0)
    assert obj.calls == [(False, {}), (False, {}), (True, {}), (False, {"temperature": 2.0})]
    assert float(model.m_step(jnp.asarray(4.0), None)) == 2.0
    assert float(model.log_prior(1.0)) == -0.5
    assert float(model.objective(None, 1.0, jnp.asarray(3.0))) == 2.5  # default objective, the object's prior
    np.testing.assert_array_equal(model.collapsed(None, x), [False, True])
    np.testing.assert_allclose(model.constrain(model.unconstrain(jnp.asarray(3.0))), 3.0)
    assert model.hold_frozen(1.0, 2.0) == 2.0
    for hook in ("e_step", "m_step", "log_prior", "collapsed", "unconstrain", "constrain", "hold_frozen"):
        assert model.provides(hook), hook
    for hook in ("objective", "init", "expected_log_joint", "reinitialize", "validate_data", "validate_params",
                 "posterior"):
        assert not model.provides(hook), hook
    # Missing hooks fall back on EMModel's defaults.
    assert model.init_methods == ()
    with pytest.raises(TypeError, match="Recorder has no init"):
        model.init(jax.random.key(0), x, "kmeans")
    with pytest.raises(NotImplementedError, match="expected_log_joint"):
        model.expected_log_joint(None, 1.0)
    with pytest.raises(NotImplementedError, match="reinitialize"):
        model.reinitialize(jax.random.key(0), 1.0, x, jnp.zeros(2, bool))
    assert isinstance(model.validate_data(np.ones((2, 2))), jax.Array)
    assert model.row_width(x) == 2


def test_as_model_keeps_emmodels_and_names_missing_methods():
    mixture = emjax.Mixture(emjax.Gaussian("full"), 2)
    assert emjax.as_model(mixture) is mixture

    class OnlyE:
        def e_step(self, params, x):
            return x, 0.0

    with pytest.raises(TypeError, match="OnlyE has no m_step") as info:
        emjax.as_model(OnlyE())
    assert "e_step" not in info.value.args[0].split("has no")[1]
    with pytest.raises(TypeError, match="has no e_step and no m_step"):
        emjax.as_model(object())

    class NotCallable:
        e_step = 1

        def m_step(self, stats, params):
            return stats

    with pytest.raises(TypeError, match="has no e_step"):
        emjax.as_model(NotCallable())


def test_accepts_weights_reads_the_signature():
    class Two:
        def e_step(self, params, x):
            return x, 0.0

        def m_step(self, stats, params):
            return stats

    class Three(Two):
        def e_step(self, params, x, weights=None):
            return x, 0.0

    class Star(Two):
        def e_step(self, *args):
            return args[1], 0.0

    class KeywordOnly(Two):
        def e_step(self, params, x, *, weights=None):
            return x, 0.0

    assert not emjax.as_model(Two()).accepts_weights
    assert emjax.as_model(Three()).accepts_weights
    assert emjax.as_model(Star()).accepts_weights
    assert not emjax.as_model(KeywordOnly()).accepts_weights


def test_readme_linkage_through_as_model_reaches_the_closed_form_mle():
    model = emjax.as_model(Linkage())
    assert model.accepts_weights and model.provides("log_prior") and not model.provides("collapsed")
    x = model.validate_data(np.array([[125.0, 18.0, 20.0, 34.0]]))

    @jax.jit
    def step(model, t):
        stats, loglik = model.e_step(t, x)
        return model.m_step(stats, t), model.objective(stats, t, loglik)

    t, objectives = jnp.asarray(0.5), []
    for _ in range(40):
        t, objective = step(model, t)
        objectives.append(float(objective))
    mle = (15 + np.sqrt(15**2 + 4 * 197 * 68)) / (2 * 197)  # the root of 197 t^2 - 15 t - 68 = 0
    np.testing.assert_allclose(float(t), mle, rtol=1e-12)
    assert np.all(np.diff(objectives) >= -1e-12)
    # Weights reach the object's e_step positionally (the README's example accepts and ignores them).
    s1, l1 = model.e_step(t, x)
    s2, l2 = model.e_step(t, x, jnp.asarray([2.0]))
    np.testing.assert_array_equal(s2, s1)
    assert float(l2) == float(l1)


# -- Family.maximize is abstract ------------------------------------------------------------


def test_family_without_maximize_is_a_type_error():
    class NoMaximize(Family):
        def log_prob(self, params, x):
            return x

        def statistics(self, x, resp, params=None):
            return resp

        def expected_log_likelihood(self, stats, params):
            return 0.0

        def init_from_centers(self, x, centers):
            return centers

        def n_parameters(self, n_components, n_features, frozen=frozenset()):
            return 0

        def sample(self, key, params, components):
            return components

        def moments(self, params):
            return params, params

    with pytest.raises(TypeError, match="maximize"):
        NoMaximize()


def test_family_n_features_reads_the_feature_axis():
    means = jnp.zeros((3, 2))
    assert emjax.Gaussian("spherical").n_features(emjax.GaussianParams(means, jnp.ones(3))) == 2
    assert emjax.Categorical(4).n_features(emjax.CategoricalParams(jnp.full((3, 5, 4), 0.25))) == 5


# -- gating ---------------------------------------------------------------------------------


def test_constant_gating_gives_the_weights_prior_results(blobs):
    prior = emjax.Dirichlet(2.0)
    family = emjax.Gaussian("full")
    shortcut = emjax.Mixture(family, K, weights_prior=prior)
    explicit = emjax.Mixture(family, K, gating=emjax.ConstantGating(emjax.Dirichlet(2.0)))
    assert isinstance(shortcut.gating, emjax.ConstantGating) and shortcut.weights_prior is shortcut.gating.prior
    assert float(explicit.weights_prior.alpha) == 2.0
    assert emjax.Mixture(family, K).weights_prior is None
    with pytest.raises(ValueError, match="not both"):
        emjax.Mixture(family, K, gating=emjax.ConstantGating(), weights_prior=prior)
    with pytest.raises(TypeError, match="Gating"):
        emjax.Mixture(family, K, gating=prior)

    x = jnp.asarray(blobs)
    p0 = shortcut.init(jax.random.key(1), x, "kmeans++")
    assert_trees_equal(p0, explicit.init(jax.random.key(1), x, "kmeans++"))
    stats, loglik = shortcut.e_step(p0, x)
    stats_e, loglik_e = explicit.e_step(p0, x)
    assert_trees_equal((stats, loglik), (stats_e, loglik_e))
    assert stats.gating is None  # constant weights need only the counts
    new = shortcut.m_step(stats, p0)
    assert_trees_equal(new, explicit.m_step(stats, p0))
    # The Dirichlet mode by hand: (N_k + alpha - 1) / (N + K (alpha - 1)).
    counts = np.asarray(stats.counts)
    np.testing.assert_allclose(new.weights, (counts + 1.0) / (counts.sum() + K), rtol=1e-13)
    # The responsibilities behind the counts, from SciPy densities.
    lj = reference_log_joint(p0, blobs)
    np.testing.assert_allclose(counts, np.exp(lj - logsumexp(lj, axis=1, keepdims=True)).sum(0), rtol=1e-10)
    np.testing.assert_allclose(float(loglik), logsumexp(lj, axis=1).sum(), rtol=1e-12)
    # Without a prior the weights are the counts' proportions; the priors' log densities match.
    np.testing.assert_allclose(emjax.Mixture(family, K).m_step(stats, p0).weights, counts / counts.sum(), rtol=1e-13)
    np.testing.assert_array_equal(shortcut.log_prior(new), explicit.log_prior(new))
    # Dirichlet(2) on K = 3 weights: log Gamma(6) - 3 log Gamma(2) + sum_k log w_k (no prior on the components).
    np.testing.assert_allclose(float(shortcut.log_prior(new)), np.log(120.0) + np.sum(np.log(np.asarray(new.weights))),
                               rtol=1e-12)
    # A whole fit is the same through either spelling.
    fit_a = emjax.fit(shortcut, x, key=jax.random.key(2), max_iter=15)
    fit_b = emjax.fit(explicit, x, key=jax.random.key(2), max_iter=15)
    assert_trees_equal(fit_a.params, fit_b.params)
    np.testing.assert_array_equal(fit_a.trace, fit_b.trace)


def test_constant_gating_methods():
    gating = emjax.ConstantGating()
    w = jnp.array([0.2, 0.3, 0.5])
    resp = jnp.array([[0.5, 0.25, 0.25], [0.0, 1.0, 0.0]])
    np.testing.assert_array_equal(gating.statistics(None, resp), [0.5, 1.25, 0.25])
    np.testing.assert_allclose(gating.maximize(jnp.array([1.0, 3.0, 4.0])), [0.125, 0.375, 0.5])
    np.testing.assert_allclose(gating.log_weights(w, None), np.log([0.2, 0.3, 0.5]))
    np.testing.assert_allclose(float(gating.expected_log_likelihood(jnp.array([1.0, 0.0, 2.0]), w)),
                               np.log(0.2) + 2 * np.log(0.5))
    np.testing.assert_allclose(gating.init(4, jnp.float64), np.full(4, 0.25))
    np.testing.assert_allclose(gating.constrain(gating.unconstrain(w)), w, rtol=1e-14)
    assert gating.n_parameters(3) == 2
    assert float(gating.log_prior(w)) == 0.0
    # Masked weights reset to 1/K, then all renormalised.
    np.testing.assert_allclose(gating.reinitialize(w, jnp.array([True, False, False])),
                               np.array([1 / 3, 0.3, 0.5]) / (1 / 3 + 0.8), rtol=1e-14)
    gating.validate_params(w, 3)
    with pytest.raises(ValueError, match="weights must have shape"):
        gating.validate_params(w, 2)
    with pytest.raises(ValueError, match="sum to 1"):
        gating.validate_params(jnp.array([0.5, 0.6, 0.1]), 3)
    with pytest.raises(ValueError, match="non-negative"):
        gating.validate_params(jnp.array([1.5, -0.5, 0.0]), 3)
    with pytest.raises(TypeError, match="Dirichlet"):
        emjax.ConstantGating(2.0)
    # Dirichlet(alpha) log density: log Gamma(sum alpha) - sum log Gamma(alpha_k) + sum (alpha_k - 1) log w_k.
    dirichlet = emjax.ConstantGating(emjax.Dirichlet([2.0, 3.0, 1.0]))
    expected = np.log(120.0) - np.log(2.0) + np.log(0.2) + 2 * np.log(0.3)  # Gamma(6)/(Gamma(2) Gamma(3) Gamma(1))
    np.testing.assert_allclose(float(dirichlet.log_prior(w)), expected, rtol=1e-13)


# -- the tempered E-step ----------------------------------------------------------------------


def test_temperature_one_is_the_untempered_e_step_exactly(fitted, blobs):
    model, params = fitted
    x = jnp.asarray(blobs)
    weights = jnp.asarray(np.random.default_rng(3).uniform(0.5, 2.0, size=x.shape[0]))
    for w in (None, weights):
        default = model.e_step(params, x, w)
        assert_trees_equal(model.e_step(params, x, w, temperature=1.0), default)
        assert_trees_equal(model.e_step(params, x, w, temperature=1), default)


@pytest.mark.parametrize("temperature", [0.5, 3.0])
def test_tempered_responsibilities_match_a_numpy_softmax(fitted, blobs, temperature):
    model, params = fitted
    x = jnp.asarray(blobs)
    lj = reference_log_joint(params, blobs)
    scaled = lj / temperature
    resp = np.exp(scaled - logsumexp(scaled, axis=1, keepdims=True))
    stats, loglik = model.e_step(params, x, temperature=temperature)
    np.testing.assert_allclose(stats.counts, resp.sum(0), rtol=1e-10)
    # The statistics are those of the tempered responsibilities: the M-step's means are their weighted means.
    means = resp.T @ blobs / resp.sum(0)[:, None]
    np.testing.assert_allclose(model.m_step(stats, params).components.means, means, rtol=1e-10)
    # The returned log-likelihood stays the true one.
    np.testing.assert_allclose(float(loglik), logsumexp(lj, axis=1).sum(), rtol=1e-12)
    # A traced temperature gives the same numbers.
    traced = jax.jit(lambda t: model.e_step(params, x, temperature=t))(jnp.asarray(temperature))
    np.testing.assert_allclose(traced[0].counts, stats.counts, rtol=1e-12)
    np.testing.assert_allclose(float(traced[1]), float(loglik), rtol=1e-14)


def test_bad_temperature_is_refused(fitted, blobs):
    model, params = fitted
    for t in (0.0, -1.0, float("nan"), jnp.ones(2)):
        with pytest.raises(ValueError, match="temperature"):
            model.e_step(params, jnp.asarray(blobs), temperature=t)


# -- frozen groups ------------------------------------------------------------------------------


def test_hold_frozen_takes_the_frozen_groups_from_the_reference(fitted, blobs):
    _, params = fitted
    other = jax.tree.map(lambda a: a + 0.01, params)
    free = emjax.Mixture(emjax.Gaussian("full"), K)
    assert free.hold_frozen(other, params) is other
    model = emjax.Mixture(emjax.Gaussian("full"), K, frozen=("weights", "means"))
    held = model.hold_frozen(other, params)
    np.testing.assert_array_equal(held.weights, params.weights)
    np.testing.assert_array_equal(held.components.means, params.components.means)
    np.testing.assert_array_equal(held.components.covariances, other.components.covariances)

    # The M-step holds them too (the covariances maximised about the frozen means) ...
    x = jnp.asarray(blobs)
    stats, _ = model.e_step(params, x)
    new = model.m_step(stats, params)
    np.testing.assert_array_equal(new.weights, params.weights)
    np.testing.assert_array_equal(new.components.means, params.components.means)
    lj = reference_log_joint(params, blobs)
    resp = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    mu = np.asarray(params.components.means)
    for k in range(K):
        dev = blobs - mu[k]
        cov = (resp[:, k, None] * dev).T @ dev / resp[:, k].sum() + 1e-6 * np.eye(2)
        np.testing.assert_allclose(new.components.covariances[k], cov, rtol=1e-9)
    # ... and so does re-initialisation: only the unfrozen covariances of the masked component change.
    mask = jnp.array([False, True, False])
    again = model.reinitialize(jax.random.key(5), params, x, mask)
    np.testing.assert_array_equal(again.weights, params.weights)
    np.testing.assert_array_equal(again.components.means, params.components.means)
    np.testing.assert_array_equal(again.components.covariances[0], params.components.covariances[0])
    assert not np.allclose(again.components.covariances[1], params.components.covariances[1])
