"""Collapsing components: detected during any fit, reported per restart, and remedied."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from tests.conftest import make_blobs


def old_faithful_with_a_planted_collapse(covariance_type="full"):
    """Old Faithful with its first point twice more, and K=3 parameters whose third
    component sits on that point with a tiny covariance."""
    x = np.asarray(emjax.datasets.old_faithful()[0], np.float64)
    x = np.concatenate([x, x[:1], x[:1]])
    model = emjax.Mixture(emjax.Gaussian(covariance_type), 3)
    p = model.init(jax.random.key(0), jnp.asarray(x), "kmeans")
    # At the regularisation's scale (reg_covar = 1e-6 of each feature's variance):
    # far below it the penalty tr(R Sigma^-1) / 2 would empty the component at once.
    v = 1e-6 * np.var(x, axis=0)
    cov = {"full": jnp.diag(v), "diag": jnp.asarray(v), "spherical": float(np.mean(v))}[covariance_type]
    comps = emjax.GaussianParams(p.components.means.at[2].set(x[0]), p.components.covariances.at[2].set(cov))
    return model, x, emjax.MixtureParams(p.weights, comps)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_planted_collapse_is_detected_and_reported(covariance_type):
    model, x, p0 = old_faithful_with_a_planted_collapse(covariance_type)
    res = emjax.fit(model, x, key=jax.random.key(1), init=p0, max_iter=100)
    assert int(res.status[0]) == emjax.RESULTS.COLLAPSED
    np.testing.assert_array_equal(np.asarray(res.collapsed[0]), [False, False, True])
    assert int(res.n_collapses[0]) >= 1
    assert "collapsed component" in res.summary()
    # The collapsed component holds the duplicated point and nothing else.
    var = np.asarray(model.family.full_covariances(res.params.components))[2]
    # (its variance is about the regularisation, reg_covar = 1e-6 of the data's)
    assert np.max(np.linalg.eigvalsh(var)) < 1e-5 * np.max(np.var(np.asarray(x), axis=0))
    np.testing.assert_allclose(res.params.weights[2] * x.shape[0], 3.0, rtol=1e-3)  # the point, twice duplicated


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical"])
def test_reinitialising_a_collapsed_component_ends_finite_and_regular(covariance_type):
    model, x, p0 = old_faithful_with_a_planted_collapse(covariance_type)
    res = emjax.fit(model, x, key=jax.random.key(1), init=p0, max_iter=300, reinit_collapsed=True)
    assert all(np.all(np.isfinite(a)) for a in jax.tree.leaves(res.params))
    assert int(res.n_collapses[0]) >= 1
    assert int(res.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    assert not np.any(np.asarray(res.collapsed[0]))
    var = np.asarray(model.family.full_covariances(res.params.components))
    data_var = np.var(x, axis=0).min()
    assert np.min(np.linalg.eigvalsh(var)) > 1e-4 * data_var
    # After the last re-initialisation the fit is plain EM again: monotone from there.
    trace = np.asarray(res.trace[0, : int(res.n_iter[0]) + 1])
    drops = np.nonzero(np.diff(trace) < -1e-9 * np.abs(trace[1:]))[0]
    assert drops.size <= int(res.n_collapses[0])
    assert np.all(np.diff(trace[drops.max() + 1 if drops.size else 0 :]) >= -1e-9 * np.abs(trace[-1]))


def test_a_prior_prevents_the_planted_collapse():
    _, x, p0 = old_faithful_with_a_planted_collapse()
    prior = emjax.NormalInverseWishart.fraley_raftery(x, 3)
    model = emjax.Mixture(emjax.Gaussian("full", prior=prior), 3)
    res = emjax.fit(model, x, key=jax.random.key(1), init=p0, max_iter=300)
    assert int(res.n_collapses[0]) == 0 and int(res.status[0]) == emjax.RESULTS.SUCCESS


def test_collapses_are_reported_per_restart_and_only_collapsed_restarts_are_reinitialised():
    model, x, p_bad = old_faithful_with_a_planted_collapse()
    p_good = model.init(jax.random.key(0), jnp.asarray(x[:-2]), "kmeans")
    warm = jax.tree.map(lambda a, b: jnp.stack([a, b]), p_good, p_bad)
    stub = emjax.fit(model, x, key=jax.random.key(0), init=p_good, max_iter=0)
    init = emjax.FitResult(**{**stub.__dict__, "restart_params": warm})
    plain = emjax.fit(model, x, key=jax.random.key(2), init=init, max_iter=300)
    np.testing.assert_array_equal(np.asarray(plain.n_collapses) > 0, [False, True])
    assert int(plain.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    assert int(plain.status[1]) == emjax.RESULTS.COLLAPSED
    assert int(plain.best) == 0
    fixed = emjax.fit(model, x, key=jax.random.key(2), init=init, max_iter=300, reinit_collapsed=True)
    # The healthy restart is untouched by the remedy: the same trace as without it.
    np.testing.assert_allclose(fixed.trace[0], plain.trace[0], rtol=1e-12)
    assert int(fixed.n_collapses[1]) >= 1 and not np.any(np.asarray(fixed.collapsed))


def test_effective_count_threshold_detects_a_dying_component():
    x = make_blobs(0, n=600, k=2)[0]
    model = emjax.Mixture(emjax.Gaussian("full"), 3, collapse_count=5.0)
    p = model.init(jax.random.key(0), jnp.asarray(x), "kmeans")
    p = emjax.MixtureParams(jnp.array([0.5, 0.5 - 1e-3, 1e-3]), p.components)
    assert bool(model.collapsed(p, jnp.asarray(x))[2])
    assert not bool(emjax.Mixture(emjax.Gaussian("full"), 3).collapsed(p, jnp.asarray(x))[2])
    with pytest.raises(ValueError, match="collapse_count"):
        emjax.Mixture(emjax.Gaussian("full"), 3, collapse_count=-1.0)


def test_reinitialize_replaces_only_masked_components_and_respects_frozen_groups():
    x = jnp.asarray(make_blobs(1, n=300)[0])
    for ct in ("full", "tied"):
        model = emjax.Mixture(emjax.Gaussian(ct), 3, frozen=("weights",))
        p = model.init(jax.random.key(0), x, "kmeans")
        mask = jnp.array([False, True, False])
        q = model.reinitialize(jax.random.key(5), p, x, mask)
        np.testing.assert_array_equal(q.weights, p.weights)  # frozen
        np.testing.assert_array_equal(np.asarray(q.components.means)[[0, 2]], np.asarray(p.components.means)[[0, 2]])
        assert np.any(np.asarray(q.components.means[1] != p.components.means[1]))
        assert np.any(np.all(np.isclose(np.asarray(x), np.asarray(q.components.means[1])), axis=1))  # a data point
        data_cov = np.cov(np.asarray(x).T, bias=True)
        new_cov = q.components.covariances if ct == "tied" else q.components.covariances[1]
        # The data's covariance plus R (reg_covar at scale 1: the model is not adapted) plus
        # sqrt(eps) of its own diagonal (every start positive definite in its dtype).
        floor = np.sqrt(np.finfo(np.float64).eps) * np.diag(np.diag(data_cov))
        np.testing.assert_allclose(new_cov, data_cov + 1e-6 * np.eye(3) + floor, rtol=1e-10)


def test_reinit_needs_a_model_that_can_tell():
    x = make_blobs(0, n=100)[0]
    model = emjax.Mixture(emjax.Gaussian("full"), 3)

    class Plain:
        e_step, m_step, log_prior = model.e_step, model.m_step, model.log_prior

    with pytest.raises(TypeError, match="reinit_collapsed"):
        emjax.fit(Plain(), x, key=jax.random.key(0), init=model.init(jax.random.key(0), jnp.asarray(x)), reinit_collapsed=True)
