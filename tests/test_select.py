"""Model selection: one compiled fit per family covers every K, and each K's fit is
the K-component fit step for step; criteria from their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
import emjax._runner
from emjax._select import _starts
from tests.conftest import make_blobs

X = make_blobs(0, n=400, d=2, k=3, sep=8.0)[0]
KS = (1, 2, 3, 4)
FAMILIES = (emjax.Gaussian("full"), emjax.Gaussian("tied"))


@pytest.fixture(scope="module")
def sweep():
    calls = []
    compiled = emjax._runner._fit_compiled

    def counting(*args):
        calls.append(1)
        return compiled(*args)

    emjax._runner._fit_compiled = counting
    try:
        sel = emjax.select(FAMILIES, X, ks=KS, key=jax.random.key(0), n_restarts=2, max_iter=30, tol=0.0)
    finally:
        emjax._runner._fit_compiled = compiled
    return sel, len(calls)


def test_one_fit_per_family_chooses_the_planted_k(sweep):
    sel, n_fits = sweep
    assert n_fits == len(FAMILIES)  # every K and restart of a family in one program
    assert [(r.structure, r.k) for r in sel.table] == [(s, k) for s in ("Gaussian(full)", "Gaussian(tied)") for k in KS]
    assert sel.best.k == 3 and sel.criterion == "bic"
    assert sel.best.bic == min(r.bic for r in sel.table)
    assert sel.model.n_components == 3 and sel.result.params.weights.shape == (3,)
    np.testing.assert_allclose(float(jnp.sum(sel.result.params.weights)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(sel.mclust_bic(), [-r.bic for r in sel.table])
    for r in sel.table:
        d = 2
        p = (r.k - 1) + r.k * d + (r.k * 3 if r.structure == "Gaussian(full)" else 3)
        assert r.n_parameters == p
        np.testing.assert_allclose(r.bic, -2 * r.log_likelihood + p * np.log(len(X)), rtol=1e-12)
        np.testing.assert_allclose(r.aic, -2 * r.log_likelihood + 2 * p, rtol=1e-12)
        assert r.icl >= r.bic - 1e-9  # the classification's entropy is non-negative
    assert "<- best" in str(sel)


@pytest.mark.parametrize("k", [2, 3])
def test_each_k_is_the_k_component_fit_step_for_step(sweep, k):
    """The components beyond K had weight exactly 0 throughout: the masked fit's trace
    is the K-component mixture's from the same start."""
    sel, _ = sweep
    fitted = sel.fits[("Gaussian(full)", k)]
    alone = emjax.fit(emjax.Mixture(emjax.Gaussian("full"), k), X, key=jax.random.key(0),
                      init=_starts(sel.initial_params[("Gaussian(full)", k)]), max_iter=30, tol=0.0)
    np.testing.assert_allclose(fitted.trace, alone.trace, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(fitted.restart_params), jax.tree.leaves(alone.restart_params)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_bad_requests_are_refused_before_compiling():
    with pytest.raises(ValueError, match="criterion"):
        emjax.select(emjax.Gaussian("full"), X, ks=KS, key=jax.random.key(0), criterion="bic2")
    with pytest.raises(ValueError, match="distinct"):
        emjax.select(emjax.Gaussian("full"), X, ks=(2, 2), key=jax.random.key(0))
    with pytest.raises(TypeError, match="Family"):
        emjax.select("full", X, key=jax.random.key(0))
    with pytest.raises(ValueError, match="n_components"):
        emjax.select(emjax.Gaussian("full"), X[:3], ks=(1, 5), key=jax.random.key(0))
