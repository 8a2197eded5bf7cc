"""Label matching against scipy's linear_sum_assignment and scikit-learn's adjusted
Rand score; component alignment undoes a known permutation exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment
from sklearn.metrics import adjusted_rand_score

import emjax
from tests.conftest import make_blobs

RNG = np.random.default_rng(0)


@pytest.mark.parametrize("shape", [(1, 1), (4, 4), (5, 9), (9, 5), (30, 30)])
def test_assignment_has_scipys_least_cost(shape):
    for trial in range(40):
        # Integer costs have ties: the least total must still be found.
        cost = RNG.normal(size=shape) if trial % 2 else RNG.integers(0, 4, size=shape).astype(float)
        rows, cols = emjax.linear_sum_assignment(cost)
        ref_rows, ref_cols = scipy_assignment(cost)
        assert len(rows) == min(shape) and len(set(rows)) == len(rows) and len(set(cols)) == len(cols)
        assert np.all(np.diff(rows) > 0)
        np.testing.assert_allclose(cost[rows, cols].sum(), cost[ref_rows, ref_cols].sum(), rtol=1e-12, atol=1e-12)


def test_adjusted_rand_index_equals_scikit_learn():
    for ka, kb in [(2, 2), (4, 3), (6, 6)]:
        a, b = RNG.integers(0, ka, 300), RNG.integers(0, kb, 300)
        noisy = np.where(RNG.uniform(size=300) < 0.7, a, b)
        for u, v in [(a, b), (a, noisy)]:
            np.testing.assert_allclose(emjax.adjusted_rand_index(u, v), adjusted_rand_score(u, v), rtol=1e-12)
    perm = np.array([2, 0, 1])
    a = RNG.integers(0, 3, 50)
    assert emjax.adjusted_rand_index(a, perm[a]) == 1.0
    assert emjax.adjusted_rand_index(np.zeros(5, int), np.zeros(5, int)) == adjusted_rand_score([0] * 5, [0] * 5)


def test_match_labels_undoes_a_relabelling():
    reference = RNG.integers(0, 4, 200)
    perm = np.array([3, 1, 0, 2])
    relabelled = np.argsort(perm)[reference]  # label l of reference is argsort(perm)[l] here
    np.testing.assert_array_equal(emjax.match_labels(reference, relabelled)[relabelled], reference)
    # More labels than the reference has: the extra one keeps a fresh name.
    extra = np.where(np.arange(200) < 5, 4, relabelled)
    aligned = emjax.match_labels(reference, extra)[extra]
    assert set(np.unique(aligned[5:])) <= {0, 1, 2, 3} and np.all(aligned[:5] == 4)


@pytest.mark.parametrize("structure", ["full", "tied"])
def test_align_components_undoes_a_permutation(structure):
    x = jnp.asarray(make_blobs(0, n=300)[0])
    model = emjax.Mixture(emjax.Gaussian(structure), 3)
    labels = np.argsort(np.asarray(x[:, 0]))  # three slabs along the first axis
    params = model.init_from_labels(x, jnp.asarray(np.repeat([0, 1, 2], 100)[np.argsort(labels)]))
    shuffled = model.permute(params, jnp.array([2, 0, 1]))
    np.testing.assert_allclose(model.log_prob(shuffled, x), model.log_prob(params, x), rtol=1e-12)
    assert not np.allclose(shuffled.components.means, params.components.means)
    back = emjax.align_components(model, shuffled, params, x)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def test_permute_refuses_what_is_not_a_permutation():
    model = emjax.Mixture(emjax.Gaussian("diag"), 2)
    params = emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.GaussianParams(jnp.zeros((2, 2)), jnp.ones((2, 2))))
    with pytest.raises(ValueError, match="permutation of 0..1"):
        model.permute(params, [0, 0])
    with pytest.raises(ValueError, match="integer labels"):
        emjax.adjusted_rand_index([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match="same points"):
        emjax.adjusted_rand_index([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="finite 2-D"):
        emjax.linear_sum_assignment(np.array([[np.inf, 0.0]]))

