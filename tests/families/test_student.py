"""Student-t components against SciPy, a NumPy EM written here, and planted outliers.

The family-wide checks (log density against ``scipy.stats.multivariate_t``,
additive statistics, the M-step as the maximiser, monotone EM, weights,
float32, chunks) run in ``test_conformance.py`` through the registry.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as opt
import scipy.stats as st
from scipy.special import digamma, logsumexp

import emjax
from emjax.families._student import log_gamma_ratio, log_minus_digamma, solve_dof

from ..registry import student_t_blobs


def test_special_functions_against_scipy():
    from scipy.special import gammaln

    a = np.array([0.05, 0.7, 3.0, 7.9, 8.1, 50.0, 5e3])
    h = 1.5
    # the reference's own rounding is eps |lgamma(a)| ~ 4e-12 at a = 5e3
    np.testing.assert_allclose(log_gamma_ratio(jnp.asarray(a), h), gammaln(a + h) - gammaln(a) - h * np.log(a), rtol=1e-11, atol=2e-11)
    np.testing.assert_allclose(log_minus_digamma(jnp.asarray(a)), np.log(a) - digamma(a), rtol=1e-10)
    # float32 at a large dof: the plain lgamma difference has no digit left, the series keeps them
    big = log_gamma_ratio(jnp.asarray([5e3], jnp.float32), 1.5)
    np.testing.assert_allclose(np.asarray(big, np.float64), gammaln(5e3 + 1.5) - gammaln(5e3) - 1.5 * np.log(5e3), rtol=1e-4)
    target = np.log(a / 2) - digamma(a / 2)
    nu = solve_dof(jnp.asarray(target[1:6]))
    np.testing.assert_allclose(nu, a[1:6], rtol=1e-9)


def ecme_dof_derivative(nu, d, r, maha):
    """d/dnu of sum_n r_n log t(x_n | mu, Sigma, nu) (Mahalanobis distances maha), plainly."""
    return 0.5 * r @ (digamma((nu + d) / 2) - digamma(nu / 2) - d / nu - np.log1p(maha / nu)
                      + (nu + d) * maha / (nu * (nu + maha)))


def numpy_t_em(x, weights, means, scales, dofs, n_iter, learn_dof, update="ecm"):
    """The textbook EM of a full-covariance Student-t mixture (McLachlan & Peel 2000,
    ch. 7), float64, with the ECM update of the degrees of freedom, or the ECME one
    (the responsibility-weighted t log-likelihood maximised over nu at the new
    location and scale: the root of its derivative), both by brentq."""
    n, d = x.shape
    k = len(weights)
    w, mu, s, nu = weights.copy(), means.copy(), scales.copy(), dofs.copy()
    for _ in range(n_iter):
        lj, maha = np.empty((n, k)), np.empty((n, k))
        for j in range(k):
            diff = x - mu[j]
            maha[:, j] = np.einsum("nd,de,ne->n", diff, np.linalg.inv(s[j]), diff)
            lj[:, j] = np.log(w[j]) + st.multivariate_t.logpdf(x, mu[j], s[j], df=nu[j])
        r = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        u = (nu + d) / (nu + maha)
        nk = r.sum(0)
        w = nk / n
        for j in range(k):
            ru = r[:, j] * u[:, j]
            mu[j] = ru @ x / ru.sum()
            diff = x - mu[j]
            s[j] = (ru[:, None] * diff).T @ diff / nk[j]
            if learn_dof and update == "ecme":
                maha_new = np.einsum("nd,de,ne->n", diff, np.linalg.inv(s[j]), diff)
                nu[j] = opt.brentq(lambda v: ecme_dof_derivative(v, d, r[:, j], maha_new), 0.1, 1e4,
                                   xtol=1e-14, rtol=1e-15)
            elif learn_dof:
                elog = digamma((nu[j] + d) / 2) - np.log((nu[j] + maha[:, j]) / 2)
                c = 1 + r[:, j] @ (elog - u[:, j]) / nk[j]
                nu[j] = opt.brentq(lambda v: -digamma(v / 2) + np.log(v / 2) + c, 1e-3, 1e6, xtol=1e-14, rtol=1e-15)
    ll = 0.0
    lj = np.stack([np.log(w[j]) + st.multivariate_t.logpdf(x, mu[j], s[j], df=nu[j]) for j in range(k)], axis=1)
    ll = logsumexp(lj, axis=1).sum()
    return w, mu, s, nu, ll


@eqx.filter_jit
def fit_and_score(model, x, init, n_iter):
    """The fit from ``init`` (``n_iter`` steps, ``tol=0``) and the mean log-likelihood at its parameters: one program."""
    result = emjax.fit(model, x, key=jax.random.key(0), init=init, max_iter=n_iter, tol=0.0)
    return result, model.score(result.params, x)


@pytest.mark.parametrize("learn_dof,update", [(False, "ecm"), (True, "ecm"), (True, "ecme")])
def test_em_equals_numpy_reference(learn_dof, update):
    """Twelve iterations from the same start, fixed (4) or learned degrees of freedom (ECM
    or ECME): the parameters and the log-likelihood of a NumPy EM written out above, to
    1e-9 (ECME's degrees of freedom: a grid search and a secant step, to 1e-8)."""
    x, _ = student_t_blobs(300, 2)
    k = 2
    rng = np.random.default_rng(0)
    w0 = np.array([0.4, 0.6])
    m0 = x[rng.choice(len(x), k, replace=False)]
    s0 = np.stack([np.cov(x.T)] * k)
    nu0 = np.array([4.0, 4.0])
    family = emjax.StudentT("full", reg_covar=0.0, dof=None if learn_dof else 4.0, dof_update=update)
    model = emjax.Mixture(family, k)
    init = emjax.MixtureParams(jnp.asarray(w0), emjax.StudentTParams(jnp.asarray(m0), jnp.asarray(s0), jnp.asarray(nu0)))
    n_iter = 12
    result, score = fit_and_score(model, x, init, n_iter)
    w, mu, s, nu, ll = numpy_t_em(x, w0, m0, s0, nu0, n_iter, learn_dof, update)
    p = result.params
    tol = 1e-8 if update == "ecme" else 1e-9
    print(f"\ndofs {np.asarray(p.components.dofs)} vs {nu}")
    np.testing.assert_allclose(p.weights, w, rtol=tol)
    np.testing.assert_allclose(p.components.means, mu, rtol=tol, atol=1e-10)
    np.testing.assert_allclose(p.components.covariances, s, rtol=tol, atol=1e-10)
    np.testing.assert_allclose(p.components.dofs, nu, rtol=tol)
    if not learn_dof:
        np.testing.assert_array_equal(p.components.dofs, [4.0, 4.0])
    # the fit's objective is the log-likelihood of the parameters it evaluated last
    np.testing.assert_allclose(score * len(x), ll, rtol=1e-10)
    np.testing.assert_allclose(result.objective[0], ll, rtol=1e-10)
    trace = np.asarray(result.trace[0])
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))  # ECM and ECME never decrease it


def test_ecme_degrees_of_freedom_are_differentiated_as_the_root():
    """One ECME iteration differentiated in the data (``jax.jvp`` through the fit): the
    degrees of freedom's tangent is the exact root's (the search's secant step is not
    differentiated), against central differences of the NumPy EM above, whose roots
    brentq finds to 1e-14; the means' tangents likewise."""
    x, _ = student_t_blobs(300, 2)
    rng = np.random.default_rng(0)
    w0 = np.array([0.4, 0.6])
    m0 = x[rng.choice(len(x), 2, replace=False)]
    s0 = np.stack([np.cov(x.T)] * 2)
    nu0 = np.array([4.0, 4.0])
    model = emjax.Mixture(emjax.StudentT("full", reg_covar=0.0, dof_update="ecme"), 2)
    init = emjax.MixtureParams(jnp.asarray(w0), emjax.StudentTParams(jnp.asarray(m0), jnp.asarray(s0), jnp.asarray(nu0)))
    v = rng.normal(size=x.shape)

    @jax.jit
    def tangent(x, v):
        step = lambda x: emjax.fit(model, x, key=jax.random.key(0), init=init, max_iter=1, tol=0.0).params  # noqa: E731
        return jax.jvp(step, (x,), (v,))[1].components

    t = tangent(jnp.asarray(x), jnp.asarray(v))
    h = 1e-5
    plus, minus = (numpy_t_em(x + e * v, w0, m0, s0, nu0, 1, True, "ecme") for e in (h, -h))
    np.testing.assert_allclose(t.dofs, (plus[3] - minus[3]) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(t.means, (plus[1] - minus[1]) / (2 * h), rtol=1e-6, atol=1e-9)


def test_single_t_matches_scipy_mle_1d():
    """K=1, one feature: the maximum-likelihood (dof, loc, scale) of scipy's t log
    density, found by Nelder-Mead from scipy's own t.fit, to 1e-5."""
    x = st.t.rvs(3.0, loc=1.0, scale=2.0, size=800, random_state=np.random.default_rng(4))
    nll = lambda th: -st.t.logpdf(x, np.exp(th[0]), th[1], np.exp(th[2])).sum()  # noqa: E731
    df0, loc0, scale0 = st.t.fit(x)
    ref = opt.minimize(nll, [np.log(df0), loc0, np.log(scale0)], method="Nelder-Mead",
                       options={"xatol": 1e-12, "fatol": 1e-13, "maxiter": 20000, "maxfev": 40000})
    df, loc, scale = np.exp(ref.x[0]), ref.x[1], np.exp(ref.x[2])
    model = emjax.Mixture(emjax.StudentT("full", reg_covar=0.0), 1)
    result = emjax.fit(model, x[:, None], key=jax.random.key(0), max_iter=5000, tol=1e-13)
    c = result.params.components
    np.testing.assert_allclose(float(c.dofs[0]), df, rtol=1e-5)
    np.testing.assert_allclose(float(c.means[0, 0]), loc, rtol=1e-5)
    np.testing.assert_allclose(float(np.sqrt(c.covariances[0, 0, 0])), scale, rtol=1e-5)
    assert float(result.objective[0]) >= -ref.fun - 1e-7


def test_outliers_pull_gaussian_means_but_not_t_means():
    """Two planted Gaussian clusters plus 5% gross outliers scattered far around them:
    the Gaussian mixture's means are pulled (or one is spent on the outliers), the t
    mixture's stay within the sampling error; the outliers get the smallest
    precision weights."""
    rng = np.random.default_rng(7)
    true = np.array([[0.0, 0.0], [6.0, 0.0]])
    z = rng.integers(0, 2, size=950)
    clean = true[z] + rng.normal(size=(950, 2))
    angle = rng.uniform(0, 2 * np.pi, size=50)
    outliers = [3.0, 0.0] + rng.uniform(30.0, 80.0, size=(50, 1)) * np.stack([np.cos(angle), np.sin(angle)], 1)
    x = np.concatenate([clean, outliers])

    def fit(family):
        model = emjax.Mixture(family, 2)
        # k-means starts put one component on the outliers for both families: random points
        r = emjax.fit(model, x, key=jax.random.key(1), init="random", n_restarts=8, max_iter=500, tol=1e-9)
        means = np.asarray(r.params.components.means)
        return model, r, means[np.argsort(means[:, 0])]

    _, _, gauss_means = fit(emjax.Gaussian("full"))
    t_model, t_result, t_means = fit(emjax.StudentT("full"))
    gauss_err = np.max(np.abs(gauss_means - true))
    t_err = np.max(np.abs(t_means - true))
    assert gauss_err > 0.5  # pulled (or a component spent on the outliers)
    assert t_err < 0.15  # about 3 standard errors of a mean of 475 unit-variance points
    weight, distance = jax.jit(t_model.outlier_scores)(t_result.params, x)
    flagged = np.argsort(np.asarray(weight))[:50]
    assert set(flagged.tolist()) == set(range(950, 1000))
    assert np.min(np.asarray(distance)[950:]) > np.max(np.asarray(distance)[:950])


def test_fixed_dof_is_not_counted():
    """Fixed degrees of freedom are not parameters (that a fit keeps them: the fixed
    case of test_em_equals_numpy_reference, to the bit)."""
    fam_fixed, fam_free = emjax.StudentT("diag", dof=3.0), emjax.StudentT("diag")
    assert fam_free.n_parameters(2, 3) == fam_fixed.n_parameters(2, 3) + 2
    assert fam_fixed.n_parameters(2, 3) == emjax.Gaussian("diag").n_parameters(2, 3)


def test_sampling_moments():
    """Draws of one component: mean mu and covariance nu / (nu - 2) * scale (nu = 6)."""
    family = emjax.StudentT("full")
    scale = np.array([[[2.0, 0.5], [0.5, 1.0]]])
    params = emjax.StudentTParams(jnp.asarray([[1.0, -2.0]]), jnp.asarray(scale), jnp.asarray([6.0]))
    draws = np.asarray(jax.jit(family.sample)(jax.random.key(0), params, jnp.zeros(200_000, int)))
    np.testing.assert_allclose(draws.mean(0), [1.0, -2.0], atol=0.02)
    np.testing.assert_allclose(np.cov(draws.T), 1.5 * scale[0], rtol=0.05)
    means, covs = family.moments(params)
    np.testing.assert_allclose(covs[0], 1.5 * scale[0])
    heavy = emjax.StudentTParams(params.means, params.covariances, jnp.asarray([1.5]))
    assert np.all(np.isinf(family.moments(heavy)[1]))


@eqx.filter_jit
def fixed_point(model, x):
    """EM to convergence (3000 steps at most, ``tol=1e-12``); the gradient of the mean
    log-likelihood in the unconstrained coordinates there; the degrees of freedom
    after ``constrain(unconstrain(.))``; gradient ascent (Adam, 50 steps) from there.
    One program."""
    import optax

    em = emjax.fit(model, x, key=jax.random.key(0), max_iter=3000, tol=1e-12)
    grad = jax.grad(lambda u: model.score(model.constrain(u), x))(model.unconstrain(em.params))
    dofs = model.family.constrain(model.family.unconstrain(em.params.components)).dofs
    ga = emjax.fit(model, x, key=jax.random.key(0), algorithm=emjax.GradientAscent(optax.adam(1e-3)),
                   init=em.params, max_iter=50, tol=0.0)
    return em, grad, dofs, ga


def test_em_fixed_point_is_stationary_and_gradient_ascent_stays():
    """At EM's converged fit (degrees of freedom learned by ECM) the log-likelihood's
    gradient in the unconstrained coordinates (softplus degrees of freedom) vanishes,
    and the optax baseline started there does not find higher ground."""
    x, _ = student_t_blobs(300, 5)
    model = emjax.Mixture(emjax.StudentT("full", reg_covar=0.0), 3)
    em, grad, dofs, ga = fixed_point(model, x)
    assert int(em.status[0]) == emjax.RESULTS.SUCCESS
    assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grad)) < 1e-5
    np.testing.assert_allclose(dofs, em.params.components.dofs, rtol=1e-10)
    assert float(ga.objective[0]) <= float(em.objective[0]) + 1e-6 * len(x)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="dof"):
        emjax.StudentT("full", dof=0.0)
    with pytest.raises(ValueError, match="dof_init"):
        emjax.StudentT("full", dof_init=1e9)
    model = emjax.Mixture(emjax.StudentT("diag"), 2)
    bad = emjax.MixtureParams(
        jnp.asarray([0.5, 0.5]), emjax.StudentTParams(jnp.zeros((2, 3)), jnp.ones((2, 3)), jnp.asarray([3.0, -1.0]))
    )
    with pytest.raises(ValueError, match="dofs"):
        model.validate_params(bad, jnp.zeros((5, 3)))
    gaussian_params = emjax.MixtureParams(jnp.asarray([0.5, 0.5]), emjax.GaussianParams(jnp.zeros((2, 3)), jnp.ones((2, 3))))
    with pytest.raises(TypeError, match="StudentTParams"):
        model.validate_params(gaussian_params, jnp.zeros((5, 3)))


def test_ecme_is_monotone_and_converges_where_ecm_crawls():
    """The bankruptcy data (one component's degrees of freedom run off to the bound):
    ECME's trace never falls and it converges within 150 iterations; ECM's never falls
    either but after the same 150 iterations is still below ECME's optimum, with its
    degrees of freedom far from the bound."""
    x, _, _ = emjax.datasets.bankruptcy()
    # The k-means start fit(init="kmeans", key=key(0)) draws (its one restart's key, the
    # adapted model), computed once for both.
    start = emjax.Mixture(emjax.StudentT("full"), 2)
    p0 = eqx.filter_jit(lambda x: start.adapt(x).init(jax.random.split(jax.random.key(0), 1)[0], x, "kmeans"))(x)
    out = {}
    for update in ("ecm", "ecme"):
        model = emjax.Mixture(emjax.StudentT("full", dof_update=update), 2)
        res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=150, tol=1e-9)
        trace = np.asarray(res.trace[0])
        trace = trace[np.isfinite(trace)]
        assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:])), update
        out[update] = res
    ecme, ecm = out["ecme"], out["ecm"]
    assert int(ecme.status[0]) == emjax.RESULTS.SUCCESS and int(ecme.n_iter[0]) < 150
    assert int(ecm.status[0]) == emjax.RESULTS.MAX_ITER
    assert float(ecme.objective[0]) > float(ecm.objective[0]) + 1e-3
    assert np.max(ecme.params.components.dofs) > 0.99e4 > 10 * np.max(ecm.params.components.dofs)
    # ECME's extra passes are counted: one E-step and four searches per iteration
    assert float(ecme.n_passes[0]) == 1 + 5 * int(ecme.n_iter[0])


def test_ecme_needs_full_passes():
    x, _ = student_t_blobs(100, 2)
    model = emjax.Mixture(emjax.StudentT("diag", dof_update="ecme"), 2)
    for algorithm in (emjax.IncrementalEM(n_blocks=4), emjax.StepwiseEM(batch_size=25)):
        with pytest.raises(ValueError, match="dof_update='ecm'"):
            emjax.fit(model, x, key=jax.random.key(0), algorithm=algorithm, max_iter=2)
    with pytest.raises(ValueError, match="dof_update"):
        emjax.StudentT("full", dof_update="ecme2")
    # fixed degrees of freedom: nothing to refine, every algorithm runs
    fixed = emjax.Mixture(emjax.StudentT("diag", dof=5.0, dof_update="ecme"), 2)
    res = emjax.fit(fixed, x, key=jax.random.key(0), algorithm=emjax.IncrementalEM(n_blocks=4), max_iter=2)
    assert np.all(np.asarray(res.params.components.dofs) == 5.0)
