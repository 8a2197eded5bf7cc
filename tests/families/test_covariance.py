"""The covariance structures' kernels against NumPy sums written out term by term."""

import jax.numpy as jnp
import numpy as np
import pytest

from emjax.families._covariance import covariance_structure, recenter_scatter

N, D, K = 300, 4, 3
RNG = np.random.default_rng(11)
X = RNG.normal(size=(N, D)) * [1.0, 2.0, 0.5, 1.5] + 3.0
RESP = RNG.dirichlet(np.ones(K), size=N) * RNG.uniform(0.5, 2.0, size=(N, 1))  # weights folded in
RESP[:7] = 0.0  # zero-weight rows
MEANS = X[RNG.choice(N, K, replace=False)]
A = RNG.normal(size=(K, D, D))
FULL = A @ np.swapaxes(A, 1, 2) / D + np.eye(D)
COVS = {"full": FULL, "tied": FULL[0], "diag": RNG.uniform(0.5, 2.0, size=(K, D)), "spherical": np.array([0.7, 1.3, 2.1])}


def full_matrices(name):
    c = COVS[name]
    if name == "tied":
        return np.broadcast_to(c, (K, D, D))
    if name == "diag":
        return np.stack([np.diag(v) for v in c])
    return c[:, None, None] * np.eye(D) if name == "spherical" else c


def numpy_scatter(x, resp, shift, name):
    """``sum_n r_nk (x_n - c_k)(x_n - c_k)^T`` term by term, in the structure's layout."""
    s = np.stack([(resp[:, k, None] * (x - shift[k])).T @ (x - shift[k]) for k in range(K)])
    if name == "tied":
        return s.sum(0, keepdims=True)
    return s if name == "full" else np.diagonal(s, axis1=1, axis2=2)


@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical"])
def test_mahalanobis_and_log_determinants_against_numpy(name):
    cov = full_matrices(name)
    maha, logdet = covariance_structure(name).mahalanobis_logdet(jnp.asarray(X), jnp.asarray(MEANS), jnp.asarray(COVS[name]))
    diff = X[:, None, :] - MEANS[None]
    expected = np.einsum("nkd,kde,nke->nk", diff, np.linalg.inv(cov), diff)
    np.testing.assert_allclose(maha, expected, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(logdet, np.linalg.slogdet(cov)[1], rtol=1e-12)


@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("given_shift", [True, False])
def test_moments_are_the_sums_they_claim(name, given_shift):
    s1, s2, shift = covariance_structure(name).moments(
        jnp.asarray(X), jnp.asarray(RESP), jnp.asarray(MEANS) if given_shift else None
    )
    shift = np.asarray(shift)
    if given_shift and name in ("full", "tied"):
        np.testing.assert_array_equal(shift, MEANS)  # each component's own point
    expected_s1 = np.stack([RESP[:, k] @ (X - shift[k]) for k in range(K)])
    np.testing.assert_allclose(s1, expected_s1, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(s2, numpy_scatter(X, RESP, shift, name), rtol=1e-10, atol=1e-9)


def test_tied_scatter_does_not_cancel_for_far_apart_components():
    """Components 1e4 spreads apart with unit spread: the summed scatter about the
    means is N D in size against a total scatter of 1e8 N D, so expanding about one
    centre would keep no digit in float32; the pairwise form keeps float32's."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0], [1e4, 0.0], [0.0, -1e4]])
    z = rng.integers(0, 3, size=3000)
    x = centres[z] + rng.normal(size=(3000, 2))
    resp = np.eye(3)[z] * 0.98 + 0.01
    expected = numpy_scatter(x, resp, centres, "tied")
    _, s2, _ = covariance_structure("tied").moments(
        jnp.asarray(x, jnp.float32), jnp.asarray(resp, jnp.float32), jnp.asarray(centres, jnp.float32)
    )
    np.testing.assert_allclose(np.asarray(s2, np.float64), expected, rtol=2e-5)


@pytest.mark.parametrize(
    "name, separation, rtol",
    [
        # full: one side of exact differences, rounding linear in the distance from
        # the common centre (measured 1.7e-6 at 100 spreads, 3.2e-4 at 1e4)
        ("full", 100.0, 1e-5),
        ("full", 1e4, 2e-3),
        # diag: both moments about the common centre, rounding quadratic in it
        # (measured 5.8e-5 at 10 spreads, 7.7e-3 at 100): the documented price of
        # the matmul statistics; float64 is exact
        ("diag", 10.0, 5e-4),
        ("diag", 100.0, 5e-2),
    ],
)
def test_float32_scatter_error_for_far_apart_components(name, separation, rtol):
    """Unit-spread components ``separation`` spreads apart, hard responsibilities:
    each component's float32 scatter about its own mean (after the M-step's
    recentring) against float64 NumPy, within the error the kernel documents."""
    rng = np.random.default_rng(3)
    centres = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 1.0]]) * separation
    z = rng.integers(0, 3, size=3000)
    x = centres[z] + rng.normal(size=(3000, 3))
    resp = np.eye(3)[z]
    expected = np.stack([(resp[:, k, None] * (x - centres[k])).T @ (x - centres[k]) for k in range(3)])
    if name == "diag":
        expected = np.diagonal(expected, axis1=1, axis2=2)
    c32 = jnp.asarray(centres, jnp.float32)
    s1, s2, shift = covariance_structure(name).moments(jnp.asarray(x, jnp.float32), jnp.asarray(resp, jnp.float32), c32)
    scatter = recenter_scatter(s2, s1, jnp.asarray(resp.sum(0), jnp.float32), shift - c32)
    err = np.max(np.abs(np.asarray(scatter, np.float64) - expected)) / np.max(np.abs(expected))
    assert err < rtol


@pytest.mark.parametrize("name", ["full", "tied", "diag"])
def test_recentred_scatter_equals_the_scatter_about_the_new_points(name):
    structure = covariance_structure(name)
    s1, s2, shift = structure.moments(jnp.asarray(X), jnp.asarray(RESP), jnp.asarray(MEANS))
    new = MEANS + RNG.normal(size=(K, D))
    counts = jnp.asarray(RESP.sum(0))
    moved = recenter_scatter(s2, s1, counts, jnp.asarray(new) - shift, new_minus_old=True)
    np.testing.assert_allclose(moved, numpy_scatter(X, RESP, new, name), rtol=1e-10, atol=1e-9)
