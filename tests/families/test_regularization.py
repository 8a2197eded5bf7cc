"""A Gaussian's reg_covar: relative to the data's scale, and a penalty EM increases exactly."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import emjax
from tests.conftest import assert_monotone, make_blobs

TYPES = ["full", "diag", "spherical", "tied"]
K = 3


def start(model, x, labels):
    """Fixed initial parameters: one M-step from the planted labels."""
    return model.adapt(x).init_from_labels(x, labels)


#: :func:`start`, compiled (one program per structure).
jit_start = eqx.filter_jit(start)


def scaled(params, c):
    comps = params.components
    cov_power = 2
    return emjax.MixtureParams(params.weights, emjax.GaussianParams(comps.means * c, comps.covariances * c**cov_power))


def rescaling_data():
    """The rescaling tests' blobs and their planted labels."""
    return make_blobs(11, n=300, d=2, k=K, sep=2.0)


@pytest.mark.parametrize("cov_type", TYPES)
def test_rescaled_data_give_the_rescaled_fit(cov_type):
    """Fitting c x from the rescaled start is the fit of x rescaled: same labels,
    means times c, covariances times c^2, objective less N D log c."""
    x, z = rescaling_data()
    model = emjax.Mixture(emjax.Gaussian(cov_type), K)
    p0 = jit_start(model, x, z)
    predict = jax.jit(model.predict)
    # The same configuration on data of another scale: one compiled program.
    ref = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=40, tol=0.0)
    n, d = x.shape
    for c in (1e-4, 1e4):
        res = emjax.fit(model, c * x, key=jax.random.key(0), init=scaled(p0, c), max_iter=40, tol=0.0)
        np.testing.assert_array_equal(predict(res.params, c * x), predict(ref.params, x))
        np.testing.assert_allclose(res.params.weights, ref.params.weights, rtol=1e-8)
        np.testing.assert_allclose(res.params.components.means, c * ref.params.components.means, rtol=1e-8)
        np.testing.assert_allclose(res.params.components.covariances, c**2 * ref.params.components.covariances,
                                   rtol=1e-8, atol=1e-8 * c**2)
        np.testing.assert_allclose(res.trace, ref.trace - n * d * np.log(c), rtol=1e-10)


def test_absolute_regularisation_dominates_data_of_small_spread():
    """With scikit-learn's absolute regularisation (reg_scale=1) the rescaling holds only
    where reg_covar is negligible: at 1e-4 it dominates the covariances. (The scale,
    given or measured, enters every structure's code alike: one structure.)"""
    x, z = rescaling_data()
    model = emjax.Mixture(emjax.Gaussian("full"), K)
    absolute = emjax.Mixture(emjax.Gaussian("full", reg_scale=1.0), K)
    small = emjax.fit(absolute, 1e-4 * x, key=jax.random.key(0), init=scaled(jit_start(model, x, z), 1e-4),
                      max_iter=40, tol=0.0)
    full = np.asarray(absolute.family.full_covariances(small.params.components))
    assert np.min(np.linalg.eigvalsh(full)) > 0.9e-6  # reg_covar I, far above the data's 1e-8 variances


def penalised_log_joint(params, x, cov_type, reg):
    """The E-step's ``log pi_k + log N(x | mu_k, Sigma_k) - tr(R Sigma_k^{-1}) / 2``
    with SciPy and NumPy, for ``R = diag(reg)``."""
    w = np.asarray(params.weights)
    mu = np.asarray(params.components.means)
    cov = np.asarray(params.components.covariances)
    k, d = mu.shape
    full = {
        "full": lambda j: cov[j],
        "tied": lambda j: cov,
        "diag": lambda j: np.diag(cov[j]),
        "spherical": lambda j: cov[j] * np.eye(d),
    }[cov_type]
    cols = []
    for j in range(k):
        s = full(j)
        penalty = 0.5 * np.trace(np.diag(reg) @ np.linalg.inv(s))
        cols.append(np.log(w[j]) + multivariate_normal(mu[j], s).logpdf(x) - penalty)
    return np.stack(cols, axis=1)


@eqx.filter_jit
def penalised_fit(model, x, labels):
    """The fit (60 steps, ``tol=0``) from :func:`start`; the mixture's log density at
    its parameters; and one more M-step there (the E-step's statistics at them). One program."""
    res = emjax.fit(model, x, key=jax.random.key(1), init=start(model, x, labels), max_iter=60, tol=0.0)
    adapted = model.adapt(x)
    stats, _ = adapted.e_step(res.params, x)
    return res, model.log_prob(res.params, x), adapted.m_step(stats, res.params)


@pytest.mark.parametrize("cov_type", TYPES)
def test_the_objective_is_the_penalised_log_likelihood_and_em_increases_it(cov_type):
    """At default settings on data of small spread (where an absolute reg_covar made
    batch EM's objective fall): the reported objective is the log-likelihood with
    tr(R Sigma_k^-1)/2 off each component's log density, R = 1e-6 diag(var(x)),
    and batch EM never decreases it."""
    x, z = make_blobs(12, n=240, d=3, k=K, sep=1.5)
    x = 1e-4 * x * np.array([1.0, 30.0, 0.2])  # unequal feature scales
    model = emjax.Mixture(emjax.Gaussian(cov_type), K)
    res, log_prob, step = jax.tree.map(np.asarray, penalised_fit(model, x, z))
    assert_monotone(res.trace, rtol=1e-12)
    reg = 1e-6 * np.var(x, axis=0)
    lj = penalised_log_joint(res.params, x, cov_type, reg)
    np.testing.assert_allclose(float(res.objective[0]), logsumexp(lj, axis=1).sum(), rtol=1e-12)
    # Prediction uses the density itself, without the penalty.
    lj0 = penalised_log_joint(res.params, x, cov_type, 0 * reg)
    np.testing.assert_allclose(log_prob, logsumexp(lj0, axis=1), rtol=1e-12)
    # The M-step is scikit-learn's S_k / n_k + R: the covariances of one more step from
    # the responsibilities at the fit's parameters.
    if cov_type == "full":
        resp = np.exp(lj)
        resp /= resp.sum(1, keepdims=True)
        for j in range(K):
            nk = resp[:, j].sum()
            mu = resp[:, j] @ x / nk
            want = (resp[:, j, None] * (x - mu)).T @ (x - mu) / nk + np.diag(reg)
            np.testing.assert_allclose(step.components.covariances[j], want, rtol=1e-8)


def test_weights_enter_the_scale_as_repetition_counts():
    x, _ = make_blobs(13, n=50, d=2, k=2)
    counts = np.random.default_rng(0).integers(0, 4, size=50)
    family = emjax.Gaussian("diag")
    np.testing.assert_allclose(family.adapt(x, counts).reg_scale, np.var(np.repeat(x, counts, axis=0), axis=0),
                               rtol=1e-12)
    # A constant feature takes the largest variance; a given scale is kept.
    x[:, 1] = 7.0
    np.testing.assert_allclose(family.adapt(x).reg_scale, [np.var(x[:, 0])] * 2, rtol=1e-12)
    np.testing.assert_array_equal(emjax.Gaussian(reg_scale=2.0).adapt(x).reg_scale, 2.0)
    # Never below the data's rounding: float32 values near 1e8 are multiples of 8, and
    # R = reg_covar v is at least D ulp^2 per feature, whatever their measured spread.
    big = (1e8 + np.random.default_rng(1).normal(size=(50, 2))).astype(np.float32)
    ulp = np.finfo(np.float32).eps * 1e8
    scale = np.asarray(family.adapt(big).reg_scale)
    np.testing.assert_allclose(scale, 2 * ulp**2 / 1e-6, rtol=1e-5)


@eqx.filter_jit
def float32_starts(model, data, n_restarts):
    """For each of ``model.init_methods``: the initial parameters ``fit`` draws (the
    adapted model's ``init``, one key of ``split(key(2), n_restarts)`` per restart) on
    each data set of ``data`` ``(S, N, D)``, and the fits (5 steps, ``throw=False``)
    from each of them. One program; the fits are one ``vmap``."""
    keys = jax.random.split(jax.random.key(2), n_restarts)

    def starts(x):
        adapted = model.adapt(x)
        inits = [jax.vmap(functools.partial(adapted.init, x=x, method=method))(keys) for method in model.init_methods]
        return jax.tree.map(lambda *a: jnp.stack(a), *inits)  # (methods, restarts, ...)

    p0 = jax.vmap(starts)(data)  # (S, methods, restarts, ...)
    shape = jax.tree.leaves(p0)[0].shape[:3]
    flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[3:]), p0)
    runs = jax.vmap(lambda x, p: emjax.fit(model, x, key=jax.random.key(2), init=p, max_iter=5, throw=False))(
        jnp.repeat(data, shape[1] * shape[2], axis=0), flat)
    return jax.tree.map(lambda a: a.reshape(shape + a.shape[1:]), runs)


@pytest.mark.parametrize("cov_type", TYPES)
def test_float32_starts_on_collinear_data_and_an_outlier(cov_type):
    """Every string init starts in float32 where the data's covariance is singular
    (an exactly collinear feature) or dominated by one far point: from each of three
    restarts' initial parameters the objective is finite (not ``INIT_FAILED``) and
    five EM steps keep the parameters finite."""
    x, _ = make_blobs(14, n=120, d=3, k=K)
    collinear = x.copy()
    collinear[:, 2] = 2.0 * collinear[:, 0]
    outlier = x.copy()
    outlier[0] = 1e5
    model = emjax.Mixture(emjax.Gaussian(cov_type), K)
    assert set(model.init_methods) == {"kmeans", "kmeans++", "random", "random_resp"}
    res = float32_starts(model, np.stack([collinear, outlier]).astype(np.float32), 3)
    status = np.asarray(res.status)  # (data sets, methods, restarts, 1)
    assert status.shape == (2, len(model.init_methods), 3, 1)
    failed = np.argwhere(status == emjax.RESULTS.INIT_FAILED)
    assert failed.size == 0, [(["collinear", "outlier"][i], model.init_methods[m], r) for i, m, r, _ in failed]
    for a in jax.tree.leaves(res.restart_params):
        assert a.dtype == np.float32 and np.all(np.isfinite(np.asarray(a)))


@jax.jit
def round_trips(x):
    """For every structure: k-means++ initial components on ``x`` and the same after
    ``constrain(unconstrain(.))`` of the family adapted to ``x`` with features rescaled."""
    out = {}
    for cov_type in TYPES:
        fam = emjax.Gaussian(cov_type).adapt(x * jnp.array([1.0, 1e3, 1e-3]))
        m = emjax.Mixture(emjax.Gaussian(cov_type), 2).init(jax.random.key(1), x, "kmeans++").components
        out[cov_type] = m, fam.constrain(fam.unconstrain(m))
    return out


def test_gradient_ascent_steps_in_units_of_the_data():
    """Gradient ascent's coordinates are scaled by the data's variances: an
    optimiser step means the same on data in any units, so fitting 1e-4 x from the
    rescaled start is the fit of x rescaled (with a fixed Adam step in absolute
    units the off-diagonal Cholesky entries jumped by 0.05 on data of spread 1e-4
    and the covariance came out singular)."""
    import optax

    x, z = make_blobs(15, n=200, d=3, k=2, sep=2.0)
    model = emjax.Mixture(emjax.Gaussian("full"), 2)
    algo = emjax.GradientAscent(optax.adam(0.05))
    p0 = jit_start(model, x, z)
    ref = emjax.fit(model, x, key=jax.random.key(0), algorithm=algo, init=p0, max_iter=20, tol=0.0)
    c = 1e-4
    res = emjax.fit(model, c * x, key=jax.random.key(0), algorithm=algo, init=scaled(p0, c), max_iter=20, tol=0.0)
    np.testing.assert_allclose(res.params.components.means, c * ref.params.components.means, rtol=1e-6)
    np.testing.assert_allclose(res.params.components.covariances, c**2 * ref.params.components.covariances,
                               rtol=1e-6, atol=1e-6 * c**2)
    np.testing.assert_allclose(res.trace, ref.trace - x.size * np.log(c), rtol=1e-9)
    # The unconstrained coordinates round-trip exactly with a measured scale, for every structure.
    for cov_type, (m, back) in round_trips(x).items():
        np.testing.assert_allclose(back.means, m.means, rtol=1e-12)
        np.testing.assert_allclose(back.covariances, m.covariances, rtol=1e-12)
