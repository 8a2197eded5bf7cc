"""The mixture as a density: moments, sampling, statistics algebra, transformations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.stats import multivariate_normal

import emjax

COV_TYPES = ["full", "diag", "spherical", "tied"]


def some_params(cov_type, k=3, d=2, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=3, size=(k, d))
    a = rng.normal(size=(k, d, d))
    full = a @ np.swapaxes(a, 1, 2) + np.eye(d)
    cov = {"full": full, "tied": full[0], "diag": np.stack([np.diag(c) for c in full]),
           "spherical": np.array([np.mean(np.diag(c)) for c in full])}[cov_type]
    w = rng.dirichlet(np.ones(k))
    return emjax.MixtureParams(jnp.asarray(w), emjax.GaussianParams(jnp.asarray(means), jnp.asarray(cov)))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_log_prob_matches_scipy(cov_type):
    model = emjax.Mixture(emjax.Gaussian(cov_type), 3)
    p = some_params(cov_type)
    x = np.random.default_rng(1).normal(scale=3, size=(50, 2))
    covs = np.asarray(model.family.full_covariances(p.components))
    dens = sum(float(p.weights[k]) * multivariate_normal(np.asarray(p.components.means[k]), covs[k]).pdf(x) for k in range(3))
    np.testing.assert_allclose(model.log_prob(p, x), np.log(dens), rtol=1e-10)
    post = np.asarray(model.posterior(p, x))
    np.testing.assert_allclose(post.sum(1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(model.predict(p, x), post.argmax(1))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_moments_and_sampling(cov_type):
    model = emjax.Mixture(emjax.Gaussian(cov_type), 3)
    p = some_params(cov_type, seed=2)
    means = np.asarray(p.components.means)
    covs = np.asarray(model.family.full_covariances(p.components))
    w = np.asarray(p.weights)
    mean = w @ means
    cov = np.einsum("k,kde->de", w, covs + np.einsum("kd,ke->kde", means, means)) - np.outer(mean, mean)
    np.testing.assert_allclose(model.mean(p), mean, rtol=1e-12)
    np.testing.assert_allclose(model.covariance(p), cov, rtol=1e-10)

    n = 200_000
    xs, z = model.sample(jax.random.key(3), p, n)
    assert xs.shape == (n, 2) and z.shape == (n,)
    freq = np.bincount(np.asarray(z), minlength=3) / n
    np.testing.assert_allclose(freq, w, atol=4 * np.sqrt(w * (1 - w) / n).max())
    np.testing.assert_allclose(np.asarray(xs).mean(0), mean, atol=0.05)
    np.testing.assert_allclose(np.cov(np.asarray(xs).T), cov, rtol=0.03, atol=0.05)
    k0 = np.asarray(z) == 0
    np.testing.assert_allclose(np.cov(np.asarray(xs)[k0].T), covs[0], rtol=0.05, atol=0.05)


@settings(max_examples=25, deadline=None)
@given(split=st.integers(1, 59), seed=st.integers(0, 1000), cov_type=st.sampled_from(COV_TYPES))
def test_statistics_are_additive(split, seed, cov_type):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(60, 3)) + 10.0)
    resp = jnp.asarray(rng.dirichlet(np.ones(2), size=60))
    p_a = emjax.GaussianParams(jnp.asarray(rng.normal(size=(2, 3)) + 10), jnp.ones(1))
    p_b = emjax.GaussianParams(jnp.asarray(rng.normal(size=(2, 3)) + 10), jnp.ones(1))
    whole, parts, m_whole, m_parts = _whole_and_parts(cov_type, x, resp, jnp.arange(60) < split, p_a, p_b)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(m_whole, m_parts, rtol=1e-12)


@functools.partial(jax.jit, static_argnums=0)
def _whole_and_parts(cov_type, x, resp, first, p_a, p_b):
    """The statistics of all rows at ``p_a``, and the sum of those of the rows before the
    split (at ``p_a``) and after it (at ``p_b``), re-expressed about the whole's expansion
    point; with the M-step's means of both. The split is a 0/1 mask on the responsibilities
    (a row with none adds nothing), so one program serves every split."""
    fam = emjax.Gaussian(cov_type)
    whole = fam.statistics(x, resp, p_a)
    parts = emjax.add_stats(fam.statistics(x, resp * first[:, None], p_a), fam.statistics(x, resp * ~first[:, None], p_b))
    parts = emjax.add_stats(emjax.scale_stats(whole, 0.0), parts)  # about the whole's expansion point
    return whole, parts, fam.maximize(whole).means, fam.maximize(parts).means


def test_mixture_is_a_pytree_for_jit_grad_and_vmap():
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    p = some_params("full")
    x = jnp.asarray(np.random.default_rng(4).normal(size=(20, 2)))

    @jax.jit
    def nll(model, params, x):
        return -jnp.sum(model.log_prob(params, x))

    g = jax.grad(nll, argnums=1)(model, p, x)
    # Finite differences on one mean coordinate.
    eps = 1e-6
    bump = lambda s: emjax.MixtureParams(p.weights, emjax.GaussianParams(p.components.means.at[1, 0].add(s), p.components.covariances))  # noqa: E731
    fd = (nll(model, bump(eps), x) - nll(model, bump(-eps), x)) / (2 * eps)
    np.testing.assert_allclose(g.components.means[1, 0], fd, rtol=1e-6)
    gx = jax.grad(lambda x: jnp.sum(model.log_prob(p, x)))(x)
    assert gx.shape == x.shape and bool(jnp.all(jnp.isfinite(gx)))
    # vmap over a batch of parameter sets.
    batch = jax.tree.map(lambda a: jnp.stack([a, a]), p)
    lp = jax.vmap(lambda q: model.log_prob(q, x))(batch)
    np.testing.assert_allclose(lp[0], lp[1])
    # The whole fit runs under jit with traced data.
    fitted = jax.jit(lambda x: emjax.fit(model, x, key=jax.random.key(0), init="kmeans++", max_iter=10).objective)(x)
    assert fitted.shape == (1,) and bool(jnp.isfinite(fitted[0]))


def test_large_inputs_are_processed_in_chunks():
    # log_prob over more rows than one chunk equals the row-by-row formula.
    model = emjax.Mixture(emjax.Gaussian("diag"), 3)
    p = some_params("diag")
    x = jnp.asarray(np.random.default_rng(5).normal(size=(300_001, 2)))
    lp = model.log_prob(p, x)
    assert lp.shape == (300_001,)
    np.testing.assert_allclose(lp[-7:], model.log_prob(p, x[-7:]), rtol=1e-12)
    np.testing.assert_allclose(lp[:5], model.log_prob(p, x[:5]), rtol=1e-12)


def test_kmeans_init():
    rng = np.random.default_rng(40)
    z = rng.integers(0, 3, 600)
    x = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])[z] + rng.normal(size=(600, 2))
    centers, labels = emjax.kmeans(jax.random.key(0), jnp.asarray(x), 3)
    # Well-separated blobs: k-means recovers the planted partition (up to relabelling).
    table = np.zeros((3, 3), int)
    np.add.at(table, (np.asarray(labels), z), 1)
    assert table.max(0).sum() == 600
    seeds = jax.vmap(lambda k: emjax.kmeans_plus_plus(k, jnp.asarray(x), 3))(jax.random.split(jax.random.key(1), 4))
    assert seeds.shape == (4, 3, 2)
    # Seeds are data points, distinct within a draw, and differ across keys.
    for s in np.asarray(seeds):
        assert all(np.any(np.all(np.isclose(x, c), axis=1)) for c in s)
        assert len({tuple(c) for c in s}) == 3
    assert not np.allclose(seeds[0], seeds[1])
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    p = model.init_from_labels(jnp.asarray(x), labels)
    for k in range(3):
        pts = x[np.asarray(labels) == k]
        np.testing.assert_allclose(p.components.means[k], pts.mean(0), rtol=1e-10)
        np.testing.assert_allclose(p.components.covariances[k], np.cov(pts.T, bias=True) + 1e-6 * np.eye(2), rtol=1e-9)
    np.testing.assert_allclose(p.weights, np.bincount(np.asarray(labels)) / 600, rtol=1e-12)
    for method in ("kmeans", "kmeans++", "random", "random_resp"):
        q = model.init(jax.random.key(2), jnp.asarray(x), method)
        model.validate_params(q, x)


@pytest.mark.parametrize("seeding", ["kmeans++", "greedy, one trial"])
def test_seeding_draws_with_probability_proportional_to_squared_distance(seeding):
    """The first centre uniform, the next with probability d^2 / sum d^2 (greedy
    k-means++ with one local trial is plain k-means++): the frequencies of the 6
    ordered pairs over 100,000 draws on the points 0, 1, 3, 0 against the exact
    probabilities (hand-computed), within 4 standard errors."""
    pts = np.array([0.0, 1.0, 3.0, 0.0])
    x = jnp.asarray(pts[:, None])
    seed = {"kmeans++": lambda k: emjax.kmeans_plus_plus(k, x, 2),
            "greedy, one trial": lambda k: emjax.greedy_kmeans_plus_plus(k, x, 2, n_local_trials=1)}[seeding]
    draws = np.asarray(jax.jit(jax.vmap(seed))(jax.random.split(jax.random.key(1), 100_000)))[:, :, 0]
    exact = {}
    for i in range(4):  # first centre: each row with probability 1/4
        d2 = (pts - pts[i]) ** 2
        for j in np.flatnonzero(d2):
            pair = (float(pts[i]), float(pts[j]))
            exact[pair] = exact.get(pair, 0.0) + 0.25 * d2[j] / d2.sum()
    assert set(exact) == {(0, 1), (0, 3), (1, 0), (1, 3), (3, 0), (3, 1)}
    n = len(draws)
    for pair, p in exact.items():
        freq = np.mean((draws[:, 0] == pair[0]) & (draws[:, 1] == pair[1]))
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / n), (pair, freq, p)
    # Every point already a centre (all distances 0): uniform draws, no NaN.
    assert np.all(np.asarray(emjax.kmeans_plus_plus(jax.random.key(0), jnp.zeros((5, 2)), 3)) == 0)


def test_information_criteria_equal_their_formulas():
    """BIC, AIC and ICL from NumPy densities: the ICL adds the MAP classification's entropy."""
    from scipy.special import logsumexp

    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    p = some_params("full")
    x = np.random.default_rng(7).normal(size=(80, 2)) * 2.0
    w, means, covs = (np.asarray(a) for a in (p.weights, p.components.means, p.components.covariances))
    lj = np.log(w) + np.stack([multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(3)], axis=1)
    ll = logsumexp(lj, axis=1)
    n_par = 2 + 3 * 2 + 3 * 3  # weights, means, covariances
    bic = -2 * ll.sum() + n_par * np.log(80)
    np.testing.assert_allclose(model.bic(p, x), bic, rtol=1e-12)
    np.testing.assert_allclose(model.aic(p, x), -2 * ll.sum() + 2 * n_par, rtol=1e-12)
    np.testing.assert_allclose(model.icl(p, x), bic - 2 * np.sum(lj.max(axis=1) - ll), rtol=1e-12)
    counts = np.random.default_rng(8).integers(0, 3, size=80)
    weighted = model.information_criteria(p, x, counts)
    repeated = model.information_criteria(p, np.repeat(x, counts, axis=0))
    for name in ("log_likelihood", "bic", "aic", "icl"):
        np.testing.assert_allclose(weighted[name], repeated[name], rtol=1e-12)
