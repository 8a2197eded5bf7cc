"""Reference comparisons run in float64; float32 tests cast their data explicitly."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


def make_blobs(seed, n=600, d=3, k=3, sep=4.0, dtype=np.float64):
    """A well-separated Gaussian mixture sample with random full covariances."""
    import emjax

    x, z = emjax.datasets.gaussian_mixture_sample(seed, n, d, k, sep)
    return x.astype(dtype), z


@pytest.fixture
def blobs():
    return make_blobs(0)[0]


#: Every component family, as (name, Mixture factory) for parametrised tests.
FAMILY_NAMES = ["full", "diag", "spherical", "tied", "bernoulli", "categorical", "multinomial", "binomial", "poisson"]


def family_model(name, k=3, **kw):
    """A K-component mixture of the family ``name`` (a Gaussian covariance type or a count family)."""
    import emjax

    if name in ("full", "diag", "spherical", "tied"):
        fam = emjax.Gaussian(name)
    elif name == "bernoulli":
        fam = emjax.Bernoulli()
    elif name == "categorical":
        fam = emjax.Categorical(4)
    elif name == "multinomial":
        fam = emjax.Multinomial()
    elif name == "binomial":
        fam = emjax.Binomial(12)
    else:
        fam = emjax.Poisson()
    return emjax.Mixture(fam, k, **kw)


def family_sample(name, n, seed, k=3, d=3):
    """``n`` rows drawn from a random K-component mixture of family ``name``."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, k, size=n)
    if name in ("full", "diag", "spherical", "tied"):
        return make_blobs(seed, n=n, d=d, k=k, sep=2.0)[0]
    if name == "bernoulli":
        p = rng.uniform(0.1, 0.9, size=(k, d + 3))
        return (rng.random((n, d + 3)) < p[z]).astype(np.float64)
    if name == "categorical":
        probs = rng.dirichlet(np.full(4, 0.5), size=(k, d + 3))  # peaked, so K is identifiable
        u = rng.random((n, d + 3, 1))
        return (u > np.cumsum(probs[z], axis=-1)).sum(-1).astype(np.float64)
    if name == "multinomial":
        probs = rng.dirichlet(np.ones(d + 1), size=k)
        return np.stack([rng.multinomial(20, probs[c]) for c in z]).astype(np.float64)
    if name == "binomial":
        return rng.binomial(12, rng.uniform(0.1, 0.9, size=(k, d))[z]).astype(np.float64)
    return rng.poisson(rng.uniform(0.5, 8.0, size=(k, d))[z]).astype(np.float64)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled programs after each test module: one process compiles
    hundreds of programs over the suite, and keeping them all grew it past 4 GB."""
    yield
    jax.clear_caches()


def fit_weighted_and_repeated(model, x, counts, p0, max_iter=40):
    """Fits with integer ``counts`` as weights and with the rows repeated that often,
    from the same start; asserts they agree (parameters 1e-9, trace 1e-10) and
    returns the repeated fit."""
    import emjax

    weighted = emjax.fit(model, x, key=jax.random.key(0), init=p0, weights=counts, max_iter=max_iter, tol=0.0)
    repeated = emjax.fit(model, np.repeat(x, counts, axis=0), key=jax.random.key(0), init=p0, max_iter=max_iter, tol=0.0)
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(weighted.trace, repeated.trace, rtol=1e-10)
    return repeated
