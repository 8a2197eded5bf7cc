"""Gradient ascent through optax: the unconstrained parametrisation, exact gradients,
EM's stationary points, and agreement with EM on Old Faithful."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import emjax
from emjax.data import ArrayData as Data
from emjax.algorithms import GradientAscent
from tests.conftest import FAMILY_NAMES, family_model, family_sample, make_blobs

FAITHFUL = jnp.asarray(emjax.datasets.old_faithful()[0])
N_FAITHFUL = FAITHFUL.shape[0]
# One object per optimizer: the optimizer is a static field of the algorithm, so
# reusing it reuses the compiled fit.
ADAM = GradientAscent(optax.adam(0.05))
LBFGS = GradientAscent(optax.lbfgs())


def leaves_close(a, b, rtol, atol):
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def per_point_objective(model, u, x):
    """The objective over N as a function of the unconstrained ``u``, written
    independently of GradientAscent."""
    params = model.constrain(u)
    _, loglik = model.e_step(params, x)
    return (loglik + model.log_prior(params)) / x.shape[0]


# -- the parametrisation ----------------------------------------------------------------


def random_like(u, seed, scale=1.0):
    leaves, treedef = jax.tree.flatten(u)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [scale * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_unconstrain_constrain_round_trip_and_any_u_is_valid(name):
    x = jnp.asarray(family_sample(name, 200, 0))
    model = family_model(name)
    params = model.init(jax.random.key(1), x, "random")

    @jax.jit
    def round_trip(params, noise):
        u = model.unconstrain(params)
        back = model.constrain(u)
        return u, back, model.unconstrain(back), model.constrain(noise), per_point_objective(model, noise, x)

    u = jax.eval_shape(model.unconstrain, params)
    for seed in range(3):
        u, back, u2, p, value = round_trip(params, random_like(u, seed, 2.0))
        assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree.leaves(u))
        leaves_close(back, params, rtol=1e-12, atol=1e-12)
        leaves_close(u2, u, rtol=1e-10, atol=1e-10)
        model.validate_params(p, x)  # shapes, PD covariances, probabilities on their simplex
        np.testing.assert_allclose(float(jnp.sum(p.weights)), 1.0, atol=1e-12)
        assert np.isfinite(float(value))


def test_gaussian_coordinates_are_documented_shapes():
    fam = emjax.Gaussian("full")
    p = emjax.GaussianParams(jnp.zeros((2, 3)), jnp.broadcast_to(jnp.eye(3) * 4.0, (2, 3, 3)))
    u = fam.unconstrain(p)
    np.testing.assert_allclose(np.asarray(u["log_cholesky"]), np.broadcast_to(np.eye(3) * np.log(2.0), (2, 3, 3)))
    # The upper triangle is ignored by constrain; reg_covar is not added.
    v = u["log_cholesky"].at[:, 0, 2].set(5.0)
    cov = fam.constrain({"means": u["means"], "log_cholesky": v}).covariances
    np.testing.assert_allclose(np.asarray(cov), np.asarray(p.covariances), rtol=1e-14)


@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_float32_covariances_from_any_coordinates_are_positive_definite(covariance_type):
    """A conditional variance 1e-8 of the marginal one (where an optimiser chasing the
    singularity goes) rounds away in a float32 ``L L^T``; constrain's ``2 D eps``
    floor keeps the float32 matrix factorisable, within that floor of the exact product."""
    d = 3
    chol = np.eye(d)
    chol[1:, 0] = 1.0  # rows 1, 2 are row 0 plus a conditional part of 1e-4 (variance 1e-8)
    chol[1, 1] = chol[2, 2] = 1e-4
    u = np.tril(chol, -1) + np.diag(np.log(np.diag(chol)))
    u = u if covariance_type == "tied" else np.stack([u, u])
    fam = emjax.Gaussian(covariance_type)
    cov = fam.constrain({"means": jnp.zeros((2, d), jnp.float32), "log_cholesky": jnp.asarray(u, jnp.float32)}).covariances
    exact = chol @ chol.T
    for c in np.reshape(np.asarray(cov), (-1, d, d)):
        assert c.dtype == np.float32
        np.linalg.cholesky(c)  # raises LinAlgError without the floor
        np.testing.assert_allclose(c, exact, rtol=3 * 2 * d * np.finfo(np.float32).eps, atol=1e-7)
    with pytest.raises(np.linalg.LinAlgError):  # what the floor prevents
        np.linalg.cholesky((chol.astype(np.float32) @ chol.T.astype(np.float32)))


def test_family_without_bijection_says_so():
    class NoBijection(emjax.Poisson):
        unconstrain = emjax.families.Family.unconstrain
        constrain = emjax.families.Family.constrain

    model = emjax.Mixture(NoBijection(), 2)
    x = family_sample("poisson", 50, 0)
    assert not model.provides("unconstrain")
    with pytest.raises(TypeError, match=r"NoBijection does not have: .* implement its unconstrain\(\) and constrain\(\)"):
        emjax.fit(model, x, key=jax.random.key(0), algorithm=ADAM, max_iter=1)


def test_validation():
    model = family_model("full", k=2)
    with pytest.raises(ValueError, match="batch_size"):
        emjax.fit(model, FAITHFUL, key=jax.random.key(0), algorithm=GradientAscent(optax.adam(0.1), batch_size=1000))
    with pytest.raises(TypeError, match="optax"):
        GradientAscent(0.1)
    with pytest.raises(ValueError, match="updates_per_step"):
        GradientAscent(optax.adam(0.1), updates_per_step=0)


# -- the gradient ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_gradient_equals_finite_differences(name):
    x = jnp.asarray(family_sample(name, 150, 2))
    model = family_model(name)
    params = model.init(jax.random.key(3), x, "random")
    h = 1e-5

    @jax.jit
    def derivatives(params, d):
        # The gradient GradientAscent uses: of its loss -objective / N, over chunks.
        grad = ADAM.init(model, params, Data(x, None, 64), jax.random.key(0)).loss_grad
        exact = -sum(jnp.vdot(g, b) for g, b in zip(jax.tree.leaves(grad), jax.tree.leaves(d)))
        u = model.unconstrain(params)
        f = lambda t: per_point_objective(model, jax.tree.map(lambda a, b: a + t * b, u, d), x)  # noqa: E731
        return exact, f(h), f(-h)

    shapes = jax.eval_shape(model.unconstrain, params)
    for seed in range(3):
        exact, plus, minus = derivatives(params, random_like(shapes, 10 + seed))
        fd = (float(plus) - float(minus)) / (2 * h)
        np.testing.assert_allclose(float(exact), fd, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def faithful_em():
    """Batch EM on Old Faithful, K=2 full, no covariance regularisation (so its
    fixed point is a stationary point of the plain log-likelihood), run to a
    standstill (500 iterations, tol=0) from k-means++ parameters that the fits
    below start from too."""
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0), 2)
    p0 = model.init(jax.random.key(0), FAITHFUL, "kmeans++")  # eager k-means would cost seconds
    return model, p0, emjax.fit(model, FAITHFUL, key=jax.random.key(0), init=p0, tol=0.0, max_iter=500)


def max_abs(tree):
    return max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(tree))


@pytest.mark.parametrize("name", ["full", "poisson"])
def test_gradient_vanishes_at_an_em_fixed_point(name, faithful_em):
    """EM and gradient ascent agree on what a stationary point is: at EM's
    converged parameters the gradient of the per-point log-likelihood, in the
    unconstrained coordinates, is below 1e-6."""
    if name == "full":
        model, p0, em = faithful_em
        x = FAITHFUL
    else:
        x, model = jnp.asarray(family_sample("poisson", 300, 0)), family_model("poisson")
        p0 = model.init(jax.random.key(0), x, "kmeans++")
        em = emjax.fit(model, x, key=jax.random.key(0), init=p0, tol=0.0, max_iter=1000)
    g_u = jax.jit(jax.grad(lambda u: per_point_objective(model, u, x)))
    assert max_abs(g_u(model.unconstrain(em.params))) < 1e-6
    assert max_abs(g_u(model.unconstrain(p0))) > 1e-3  # the test has teeth
    if name == "full":  # and in the natural coordinates: the means directly
        params = em.params

        @jax.jit
        @jax.grad
        def by_means(mu):
            p = emjax.MixtureParams(params.weights, emjax.GaussianParams(mu, params.components.covariances))
            return model.e_step(p, x)[1] / x.shape[0]

        assert max_abs(by_means(params.components.means)) < 1e-6


# -- fits -------------------------------------------------------------------------------------


def fit_from(model, x, p0, algo, **kw):
    kw = {"tol": 1e-10, "max_iter": 500} | kw  # shared settings share compiled fits
    return emjax.fit(model, x, key=jax.random.key(0), init=p0, algorithm=algo, **kw)


@pytest.mark.parametrize("algo", [ADAM, LBFGS], ids=["adam", "lbfgs"])
def test_old_faithful_reaches_em_log_likelihood(faithful_em, algo):
    model, p0, em = faithful_em
    res = fit_from(model, FAITHFUL, p0, algo)
    assert int(res.status[0]) == emjax.RESULTS.SUCCESS
    assert abs(float(em.objective[0]) - float(res.objective[0])) / N_FAITHFUL < 1e-3
    trace = np.asarray(res.trace[0])
    assert np.all(np.isfinite(trace)) and trace[-1] > trace[0]
    # The traced objective is the log-likelihood at the reported parameters.
    loglik = float(jnp.sum(model.log_prob(res.params, FAITHFUL)))
    np.testing.assert_allclose(float(res.objective[0]), loglik, rtol=1e-12)
    assert float(res.n_passes[0]) >= int(res.n_iter[0]) + 1


def test_restarts_with_kmeans_init(faithful_em):
    model, _, em = faithful_em
    res = emjax.fit(
        model, FAITHFUL, key=jax.random.key(1), algorithm=ADAM, n_restarts=4, init="kmeans", tol=1e-10, max_iter=500
    )
    assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)
    assert np.all(np.isfinite(np.asarray(res.trace)))
    assert abs(float(em.objective[0]) - float(res.objective[res.best])) / N_FAITHFUL < 1e-3


def test_sample_weights_are_repetitions(faithful_em):
    model, p0, _ = faithful_em
    counts = np.random.default_rng(0).integers(1, 4, size=N_FAITHFUL)
    keep = np.cumsum(counts) <= N_FAITHFUL  # repeated, the rows kept fill N_FAITHFUL rows
    x, w = np.asarray(FAITHFUL)[keep], counts[keep].astype(np.float64)
    w[-1] += N_FAITHFUL - w.sum()
    rep = np.repeat(x, w.astype(int), axis=0)
    a = fit_from(model, x, p0, ADAM, weights=w)
    b = fit_from(model, rep, p0, ADAM)  # the shape of Old Faithful: the compiled fit above
    np.testing.assert_allclose(np.asarray(a.trace[0, :10]), np.asarray(b.trace[0, :10]), rtol=1e-8)
    np.testing.assert_allclose(float(a.objective[0]), float(b.objective[0]), rtol=1e-8)
    leaves_close(a.params, b.params, rtol=1e-5, atol=1e-5)


def test_frozen_groups_stay_put():
    x = jnp.asarray(family_sample("poisson", 300, 0))
    model = family_model("poisson", frozen="weights")
    p0 = model.init(jax.random.key(0), x, "kmeans++")
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, algorithm=ADAM, tol=0.0, max_iter=5)
    np.testing.assert_array_equal(np.asarray(res.params.weights), np.asarray(p0.weights))
    assert float(res.objective[0]) > float(res.trace[0, 0])


def test_mini_batch_adam_gets_close_to_em():
    x = jnp.asarray(make_blobs(0, n=600)[0])
    model = family_model("full", k=3)
    # k-means parameters from which EM reaches the best optimum (gradient ascent
    # from worse starts can end elsewhere, as EM can).
    p0 = jax.jit(model.init, static_argnums=2)(jax.random.key(1), x, "kmeans")
    em = emjax.fit(model, x, key=jax.random.key(0), init=p0, tol=1e-10, max_iter=500)
    algo = GradientAscent(optax.adam(0.02), batch_size=100)
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, algorithm=algo, tol=0.0, max_iter=30)
    trace = np.asarray(res.trace[0])
    assert np.all(np.isfinite(trace))
    assert abs(float(em.objective[0]) - trace[-1]) / 600 < 1e-2
    # One epoch (6 updates of 100 rows) per step, plus the initial evaluation.
    np.testing.assert_allclose(float(res.n_passes[0]), 31.0)


# -- a user-defined model ------------------------------------------------------------------------


class Linkage(eqx.Module):
    """The README's genetic linkage model (tests/models/test_user_model.py), params: t in (0, 1);
    an equinox Module, so it passes through jax.jit as a pytree."""

    def e_step(self, t, x, weights=None):
        y1, y2, y3, y4 = x[:, 0], x[:, 1], x[:, 2], x[:, 3]
        latent = y1 * (t / 4) / (0.5 + t / 4)
        stats = jnp.stack([jnp.sum(latent + y4), jnp.sum(y2 + y3)])
        loglik = jnp.sum(y1 * jnp.log(0.5 + t / 4) + (y2 + y3) * jnp.log((1 - t) / 4) + y4 * jnp.log(t / 4))
        return stats, loglik

    def m_step(self, stats, t):
        return stats[0] / (stats[0] + stats[1])

    def log_prior(self, t):
        return jnp.zeros(())


class LogitLinkage(Linkage):
    """The same model with a user-provided bijection to the real line."""

    def unconstrain(self, t):
        return jnp.log(t) - jnp.log1p(-t)

    def constrain(self, v):
        return jax.nn.sigmoid(v)


def test_user_model_reaches_the_closed_form_mle():
    x = jnp.array([[125.0, 18.0, 20.0, 34.0]])
    mle = (15 + np.sqrt(15**2 + 4 * 197 * 68)) / (2 * 197)
    # Identity parametrisation: plain gradient steps small enough to stay in (0, 1).
    res = emjax.fit(Linkage(), x, key=jax.random.key(0), init=jnp.asarray(0.5), tol=0.0, max_iter=60,
                    algorithm=GradientAscent(optax.sgd(2e-3)))
    assert abs(float(res.params) - mle) < 1e-6
    # With the user's constrain every real step is valid.
    res = emjax.fit(LogitLinkage(), x, key=jax.random.key(0), init=jnp.asarray(0.5), tol=0.0, max_iter=60,
                    algorithm=GradientAscent(optax.sgd(0.05)))
    assert abs(float(res.params) - mle) < 1e-6
