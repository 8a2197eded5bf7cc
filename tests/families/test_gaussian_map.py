"""MAP-EM: the M-step is the maximiser of the expected complete-data log posterior."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize

import emjax
from tests.conftest import make_blobs

K, D = 2, 2


def unpack(theta, cov_type):
    """Unconstrained vector -> MixtureParams (softmax weights, log-Cholesky covariances)."""
    i = 0

    def take(n):
        nonlocal i
        out = theta[i:i + n]
        i += n
        return out

    weights = jax.nn.softmax(jnp.concatenate([jnp.zeros(1), take(K - 1)]))
    means = take(K * D).reshape(K, D)
    tril = np.tril_indices(D)

    def chol_to_cov(v):
        L = jnp.zeros((D, D)).at[tril].set(v)
        L = L.at[np.diag_indices(D)].set(jnp.exp(jnp.diagonal(L)))
        return L @ L.T

    n_tri = D * (D + 1) // 2
    if cov_type == "full":
        cov = jnp.stack([chol_to_cov(take(n_tri)) for _ in range(K)])
    elif cov_type == "tied":
        cov = chol_to_cov(take(n_tri))
    elif cov_type == "diag":
        cov = jnp.exp(take(K * D)).reshape(K, D)
    else:
        cov = jnp.exp(take(K))
    return emjax.MixtureParams(weights, emjax.GaussianParams(means, cov)), i


def neg_q_at(params, resp, model, x):
    """Minus the expected complete-data log posterior ``Q = sum r log(pi p(x|theta)) + log prior(theta)``."""
    return -(jnp.sum(resp * model.log_joint(params, x)) + model.log_prior(params))


@eqx.filter_jit
def neg_q(theta, model, resp, x, cov_type):
    """``-Q`` at the unconstrained ``theta`` and its gradient. The model is an argument:
    both priors of a structure (they differ in kappa0's value) are one program."""
    return jax.value_and_grad(lambda t: neg_q_at(unpack(t, cov_type)[0], resp, model, x))(theta)


@eqx.filter_jit
def closed_form(model, resp, x):
    """The MAP M-step at the statistics of ``resp`` (about an expansion point of
    equal responsibilities: any will do) and ``-Q`` there."""
    p0 = model.init_from_resp(x, jnp.full((x.shape[0], K), 1.0 / K))
    stats = emjax.MixtureStats(jnp.sum(resp, 0), model.family.statistics(x, resp, p0.components))
    closed = model.m_step(stats, p0)
    return closed, neg_q_at(closed, resp, model, x)


@pytest.mark.parametrize("kappa0", [0.0, 0.5])
@pytest.mark.parametrize("cov_type", ["full", "diag", "spherical", "tied"])
def test_map_m_step_is_the_numerical_maximiser(cov_type, kappa0):
    x, _ = make_blobs(20, n=40, d=D, k=K, sep=2.0)
    x = jnp.asarray(x)
    rng = np.random.default_rng(0)
    resp = jnp.asarray(rng.dirichlet(np.ones(K), size=x.shape[0]))
    prior = emjax.NormalInverseWishart(m0=[0.3, -0.2], kappa0=kappa0, nu0=D + 3.0, S0=[[2.0, 0.3], [0.3, 1.0]])
    model = emjax.Mixture(emjax.Gaussian(cov_type, reg_covar=0.0, prior=prior), K, weights_prior=emjax.Dirichlet([2.0, 3.5]))

    _, n_theta = unpack(jnp.zeros(100), cov_type)
    opt = minimize(lambda t: tuple(np.asarray(v, dtype=np.float64) for v in neg_q(jnp.asarray(t), model, resp, x, cov_type)),
                   np.zeros(n_theta), jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 5000})
    numeric, _ = unpack(jnp.asarray(opt.x), cov_type)

    closed, neg_q_closed = closed_form(model, resp, x)
    for a, b in zip(jax.tree.leaves(closed), jax.tree.leaves(numeric)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert float(neg_q_closed) <= opt.fun + 1e-9


def test_map_formulas_by_hand():
    # The formulas, written out for one full-covariance component.
    x, _ = make_blobs(21, n=30, d=3, k=1)
    prior = emjax.NormalInverseWishart(m0=np.ones(3), kappa0=0.7, nu0=6.0, S0=np.eye(3) * 0.5)
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0, prior=prior), 1)
    m_step = eqx.filter_jit(lambda model, x: model.m_step(
        emjax.MixtureStats(jnp.array([30.0]), model.family.statistics(x, jnp.ones((30, 1)), None)), None))
    p = m_step(model, jnp.asarray(x))
    n, xbar = 30.0, x.mean(0)
    S = (x - xbar).T @ (x - xbar)
    mu = (0.7 * np.ones(3) + n * xbar) / (n + 0.7)
    dm = (xbar - 1.0)[:, None]
    sigma = (0.5 * np.eye(3) + S + 0.7 * n / (0.7 + n) * dm @ dm.T) / (6.0 + n + 3 + 2)
    np.testing.assert_allclose(p.components.means[0], mu, rtol=1e-12)
    np.testing.assert_allclose(p.components.covariances[0], sigma, rtol=1e-12)


def test_dirichlet_weights_mode():
    model = emjax.Mixture(emjax.Gaussian("spherical"), 3, weights_prior=emjax.Dirichlet([1.0, 2.0, 4.0]))
    counts = jnp.array([10.0, 0.0, 5.0])
    w = model.weights_prior.mode(counts)
    np.testing.assert_allclose(w, (counts + jnp.array([0.0, 1.0, 3.0])) / (15.0 + 7.0 - 3.0), rtol=1e-12)


def test_fraley_raftery_default():
    x, _ = make_blobs(22, n=100, d=3)
    prior = emjax.NormalInverseWishart.fraley_raftery(x, 4)
    np.testing.assert_allclose(prior.m0, x.mean(0), rtol=1e-12)
    assert float(prior.nu0) == 5.0 and float(prior.kappa0) == 0.01
    np.testing.assert_allclose(prior.S0, np.diag(x.var(0, ddof=1)) / 4 ** (1 / 3), rtol=1e-12)
    zero = emjax.NormalInverseWishart.fraley_raftery(x, 4, kappa0=0.0)
    assert float(zero.kappa0) == 0.0
