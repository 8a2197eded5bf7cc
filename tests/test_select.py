"""Model selection: one compiled fit per family covers every K, and each K's fit is
the K-component fit step for step; criteria from their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scipy.stats import multivariate_normal

import emjax
import emjax._runner
from emjax._result import best_restart
from emjax._select import _starts
from tests.conftest import make_blobs

X = make_blobs(0, n=400, d=2, k=3, sep=8.0)[0]
XV = X[::4] + 0.25  # validation rows: moved copies of a quarter of the rows
KS = (1, 2, 3, 4)
FAMILIES = (emjax.Gaussian("full"), emjax.Gaussian("tied"))


def counting_fits(sweep, *args, **kwargs):
    """``sweep(*args, **kwargs)`` and the number of compiled fits it ran."""
    calls = []
    compiled = emjax._runner._fit_compiled

    def counting(*a):
        calls.append(1)
        return compiled(*a)

    emjax._runner._fit_compiled = counting
    try:
        return sweep(*args, **kwargs), len(calls)
    finally:
        emjax._runner._fit_compiled = compiled


@pytest.fixture(scope="module")
def sweep():
    return counting_fits(emjax.select, FAMILIES, X, ks=KS, key=jax.random.key(0), n_restarts=2, max_iter=30, tol=0.0,
                         validation=XV)


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
    assert "<- best" in str(sel) and "held-out" in str(sel)


def test_validation_rows_are_scored_by_each_fit(sweep):
    sel, _ = sweep
    for r in sel.table[:len(KS)]:  # full covariances: the log density by SciPy
        p = sel.fits[(r.structure, r.k)].params
        dens = sum(float(w) * multivariate_normal(m, c).pdf(XV) for w, m, c in
                   zip(p.weights, np.asarray(p.components.means), np.asarray(p.components.covariances)))
        np.testing.assert_allclose(r.heldout, np.sum(np.log(dens)), rtol=1e-10)
    # Choosing by held-out log-likelihood: the highest, from the same fits.
    by_heldout = emjax.select(FAMILIES, X, ks=KS, key=jax.random.key(0), n_restarts=2, max_iter=30, tol=0.0,
                              validation=XV, criterion="heldout")
    assert by_heldout.best.heldout == max(r.heldout for r in by_heldout.table)
    assert [r.heldout for r in by_heldout.table] == [r.heldout for r in sel.table]


@pytest.mark.parametrize("family,k", [(0, 2), (1, 3)])
def test_each_k_is_the_k_component_fit_step_for_step(sweep, family, k):
    """The components beyond K had weight exactly 0 throughout: the masked fit's trace
    is the K-component mixture's from the same start (tied: the shared matrix from
    every M-step although some components are dropped)."""
    sel, _ = sweep
    name = ("Gaussian(full)", "Gaussian(tied)")[family]
    fitted = sel.fits[(name, k)]
    alone = emjax.fit(emjax.Mixture(FAMILIES[family], k), X, key=jax.random.key(0),
                      init=_starts(sel.initial_params[(name, k)]), max_iter=30, tol=0.0)
    np.testing.assert_allclose(fitted.trace, alone.trace, rtol=1e-10)
    for a, b in zip(jax.tree.leaves(fitted.restart_params), jax.tree.leaves(alone.restart_params)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def test_bad_requests_are_refused_before_compiling():
    with pytest.raises(ValueError, match="criterion"):
        emjax.select(emjax.Gaussian("full"), X, ks=KS, key=jax.random.key(0), criterion="bic2")
    with pytest.raises(ValueError, match="needs validation data"):
        emjax.select(emjax.Gaussian("full"), X, ks=KS, key=jax.random.key(0), criterion="heldout")
    with pytest.raises(ValueError, match="families must differ"):
        emjax.select([emjax.Gaussian("full"), emjax.Gaussian("full")], X, ks=KS, key=jax.random.key(0))
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        emjax.cross_validate(emjax.Gaussian("full"), X, ks=KS, key=jax.random.key(0), n_folds=1)
    with pytest.raises(ValueError, match="fewer than max"):
        emjax.cross_validate(emjax.Gaussian("full"), X[:6], ks=(1, 5), key=jax.random.key(0), n_folds=3)
    with pytest.raises(ValueError, match="holds out rows whose weights are all 0"):
        emjax.cross_validate(emjax.Gaussian("full"), X, ks=(1, 2), key=jax.random.key(0), n_folds=10,
                             weights=np.r_[np.ones(5), np.zeros(len(X) - 5)])


def test_every_familys_data_is_checked_before_any_fit(monkeypatch):
    def not_compiled(*args):
        raise AssertionError("a fit compiled before the data were checked")

    monkeypatch.setattr(emjax._runner, "_fit_compiled", not_compiled)
    counts = np.abs(np.round(X)).astype(int)
    with pytest.raises(ValueError, match="negative"):  # the second family refuses the validation rows
        emjax.select([emjax.Gaussian("full"), emjax.Poisson()], counts, ks=KS, key=jax.random.key(0),
                     validation=-counts[:10] - 1)
    with pytest.raises(ValueError, match="distinct"):
        emjax.select(emjax.Gaussian("full"), X, ks=(2, 2), key=jax.random.key(0))
    with pytest.raises(TypeError, match="Family"):
        emjax.select("full", X, key=jax.random.key(0))
    with pytest.raises(ValueError, match="n_components"):
        emjax.select(emjax.Gaussian("full"), X[:3], ks=(1, 5), key=jax.random.key(0))


# -- K-fold cross-validation -----------------------------------------------------------------

N_FOLDS = 3


def _cv(x):
    return counting_fits(emjax.cross_validate, emjax.Gaussian("full"), x, ks=KS, key=jax.random.key(3),
                         n_folds=N_FOLDS, n_restarts=2, max_iter=30, tol=0.0)


@pytest.fixture(scope="module")
def cv():
    return _cv(X)


def test_cross_validation_is_one_vmapped_fit_and_chooses_the_planted_k(cv):
    cv, n_fits = cv
    assert n_fits == 1  # every fold, K and restart in one program (the folds a vmap over weight masks)
    sizes = np.bincount(cv.fold_of)
    assert len(sizes) == N_FOLDS and sizes.max() - sizes.min() <= 1 and sizes.sum() == len(X)
    assert cv.best.k == 3 and cv.best.heldout == max(r.heldout for r in cv.table)
    for r in cv.table:
        np.testing.assert_allclose(r.heldout, sum(r.folds), rtol=1e-12)
        np.testing.assert_allclose(r.per_point, r.heldout / len(X), rtol=1e-12)
        per_fold = np.array(r.folds) / sizes
        np.testing.assert_allclose(r.std_error, per_fold.std(ddof=1) / np.sqrt(N_FOLDS), rtol=1e-10)
    assert "<- best" in str(cv)


def test_a_fold_is_the_fit_on_its_training_rows_scored_on_its_held_out_rows(cv):
    """Weight masks are row subsets exactly: fold f at K = 2 equals a plain fit of the
    2-component mixture on the training rows from the same starts, and its held-out
    log-likelihood is SciPy's density of the held-out rows under that fit."""
    cv, _ = cv
    f, k, name = 1, 2, "Gaussian(full)"
    train, test = X[cv.fold_of != f], X[cv.fold_of == f]
    starts = jax.tree.map(lambda a: a[f], cv.initial_params[(name, k)])
    alone = emjax.fit(emjax.Mixture(emjax.Gaussian("full"), k), train, key=jax.random.key(0), init=_starts(starts),
                      max_iter=30, tol=0.0)
    best = int(best_restart(alone.status, alone.objective))
    for a, b in zip(jax.tree.leaves(jax.tree.map(lambda a: a[best], alone.restart_params)),
                    jax.tree.leaves(jax.tree.map(lambda a: a[f], cv.params[(name, k)]))):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)
    p = jax.tree.map(lambda a: a[f], cv.params[(name, k)])
    dens = sum(float(w) * multivariate_normal(m, c).pdf(test) for w, m, c in
               zip(p.weights, np.asarray(p.components.means), np.asarray(p.components.covariances)))
    row = next(r for r in cv.table if r.k == k)
    np.testing.assert_allclose(row.folds[f], np.sum(np.log(dens)), rtol=1e-10)


def test_held_out_rows_reach_neither_the_start_nor_the_fit_of_their_fold(cv):
    cv, _ = cv
    moved = X.copy()
    moved[cv.fold_of == 0] += 3.0  # change only fold 0's held-out rows
    cv2, _ = _cv(moved)
    np.testing.assert_array_equal(cv2.fold_of, cv.fold_of)
    for key in cv.params:
        for a, b in zip(jax.tree.leaves(cv.initial_params[key]), jax.tree.leaves(cv2.initial_params[key])):
            np.testing.assert_array_equal(np.asarray(a)[0], np.asarray(b)[0])
        for a, b in zip(jax.tree.leaves(cv.params[key]), jax.tree.leaves(cv2.params[key])):
            np.testing.assert_allclose(np.asarray(a)[0], np.asarray(b)[0], rtol=1e-12, atol=1e-12)
        # The other folds train on the moved rows: their means move.
        assert not np.allclose(cv.params[key].components.means[1:], cv2.params[key].components.means[1:])
