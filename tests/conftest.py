"""Reference comparisons run in float64; float32 tests cast their data explicitly."""

import jax
import numpy as np
import pytest

jax.config.update("jax_enable_x64", True)


def make_blobs(seed, n=600, d=3, k=3, sep=4.0, dtype=np.float64):
    """A well-separated Gaussian mixture sample with random full covariances."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=sep, size=(k, d))
    z = rng.integers(0, k, size=n)
    a = rng.normal(size=(k, d, d)) * 0.5
    covs = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    chol = np.linalg.cholesky(covs)
    x = means[z] + np.einsum("nde,ne->nd", chol[z], rng.normal(size=(n, d)))
    return x.astype(dtype), z


@pytest.fixture
def blobs():
    return make_blobs(0)[0]
