"""Missing entries (NaN, ``Mixture(..., missing=True)``) against a NumPy EM written here.

The reference is the lecture's multivariate-normal missing-data EM, pattern by
pattern in plain NumPy: each point's observed block gives its log-likelihood and
responsibilities; the conditional mean and covariance of its missing block given
the observed one complete the expected sufficient statistics.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import emjax


def mcar(x, rate, seed):
    """``x`` with each entry missing (NaN) with probability ``rate``; rows left with
    nothing observed keep their first entry."""
    rng = np.random.default_rng(seed)
    out = np.array(x, dtype=np.float64)
    hole = rng.random(out.shape) < rate
    hole[np.all(hole, axis=1), 0] = False
    out[hole] = np.nan
    return out


def numpy_missing_em(x, w, mu, cov, n_iter, cov_type="full"):
    """Gaussian-mixture EM on data with NaN entries, float64, one missingness pattern
    at a time (the observed block's marginal, the missing block's conditional law)."""
    n, d = x.shape
    k = len(w)
    w, mu, cov = w.copy(), mu.copy(), cov.copy()
    patterns, which = np.unique(~np.isnan(x), axis=0, return_inverse=True)
    for it in range(n_iter + 1):
        lj = np.empty((n, k))
        xhat = np.repeat(np.nan_to_num(x)[:, None, :], k, axis=1)
        cond = np.zeros((n, k, d, d))
        for p, o in enumerate(patterns):
            rows = np.flatnonzero(which.ravel() == p)
            m = ~o
            xo = x[np.ix_(rows, o)]
            for j in range(k):
                s_oo = cov[j][np.ix_(o, o)]
                lj[rows, j] = np.log(w[j]) + multivariate_normal.logpdf(xo, mu[j, o], s_oo).reshape(-1)
                if m.any():
                    gain = cov[j][np.ix_(m, o)] @ np.linalg.inv(s_oo)
                    xhat[np.ix_(rows, [j], m)] = (mu[j, m] + (xo - mu[j, o]) @ gain.T)[:, None, :]
                    block = cov[j][np.ix_(m, m)] - gain @ cov[j][np.ix_(o, m)]
                    cond[np.ix_(rows, [j], m, m)] = block[None, None]
        ll = logsumexp(lj, axis=1).sum()
        if it == n_iter:
            return w, mu, cov, ll
        r = np.exp(lj - logsumexp(lj, axis=1, keepdims=True))
        nk = r.sum(0)
        w = nk / n
        scatter = np.empty((k, d, d))
        for j in range(k):
            mu[j] = r[:, j] @ xhat[:, j] / nk[j]
            diff = xhat[:, j] - mu[j]
            scatter[j] = np.einsum("n,nd,ne->de", r[:, j], diff, diff) + np.einsum("n,nde->de", r[:, j], cond[:, j])
        if cov_type == "tied":
            cov[:] = scatter.sum(0) / n
        else:
            cov[:] = scatter / nk[:, None, None]
        if cov_type == "diag":
            cov[:] = [np.diag(np.diag(c)) for c in cov]
        if cov_type == "spherical":
            cov[:] = [np.trace(c) / d * np.eye(d) for c in cov]


@pytest.fixture(scope="module")
def data():
    x, z = emjax.datasets.gaussian_mixture_sample(3, n=240, d=3, k=3, separation=3.0)
    return mcar(x, 0.3, seed=0), z


@eqx.filter_jit
def fit_and_score(model, x, p0, max_iter):
    """The fit from ``p0`` (``tol=0``), its full covariances and the log density of
    each row at its parameters: one program."""
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=max_iter, tol=0.0)
    return res, model.family.full_covariances(res.params.components), model.log_prob(res.params, x)


@pytest.mark.parametrize("k,cov_type", [(1, "full"), (3, "full"), (3, "diag"), (3, "tied"), (3, "spherical")])
def test_em_equals_numpy_missing_data_em(data, k, cov_type):
    """Eight iterations from the same start: weights, means, covariances and the
    observed-data log-likelihood of the NumPy EM, to 1e-10."""
    x, _ = data
    rng = np.random.default_rng(1)
    filled = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    mu0 = filled[rng.choice(len(x), k, replace=False)]
    full0 = np.cov(filled.T)
    given = {"full": np.stack([full0] * k), "tied": full0, "diag": np.stack([np.diag(full0)] * k),
             "spherical": np.full(k, np.trace(full0) / 3)}[cov_type]
    w0 = np.full(k, 1.0 / k)
    model = emjax.Mixture(emjax.Gaussian(cov_type, reg_covar=0.0), k, missing=True)
    p0 = emjax.MixtureParams(jnp.asarray(w0), emjax.GaussianParams(jnp.asarray(mu0), jnp.asarray(given)))
    cov0 = np.asarray(model.family.full_covariances(p0.components))
    res, got_cov, log_prob = fit_and_score(model, x, p0, 8)
    w, mu, cov, ll = numpy_missing_em(x, w0, mu0, cov0, 8, cov_type)
    p = res.params
    np.testing.assert_allclose(p.weights, w, rtol=1e-10)
    np.testing.assert_allclose(p.components.means, mu, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got_cov, cov, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(jnp.sum(log_prob), ll, rtol=1e-11)
    trace = np.asarray(res.trace[0])
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))


# -- discrete families: the missing features marginalised -----------------------------

def discrete_case(name, n=400, seed=0):
    """(family, data with 30% of the entries missing, per-feature log pmf in scipy)."""
    from scipy import stats

    rng = np.random.default_rng(seed)
    d, z = 5, rng.integers(0, 2, n)
    if name == "bernoulli":
        x = (rng.random((n, d)) < np.array([0.2, 0.8])[z, None]).astype(float)
        return emjax.Bernoulli(), x, lambda x, p: stats.bernoulli.logpmf(x, p)
    if name == "poisson":
        x = rng.poisson(np.array([2.0, 9.0])[z, None], (n, d)).astype(float)
        return emjax.Poisson(), x, lambda x, lam: stats.poisson.logpmf(x, lam)
    if name == "binomial":
        x = rng.binomial(6, np.array([0.2, 0.7])[z, None], (n, d)).astype(float)
        return emjax.Binomial(6), x, lambda x, p: stats.binom.logpmf(x, 6, p)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    x = np.stack([rng.choice(3, p=probs[zz], size=d) for zz in z]).astype(float)
    return emjax.Categorical(3), x, lambda x, p: np.log(p[np.arange(d)[None, :], x.astype(int)])


@eqx.filter_jit
def discrete_fit(model, x):
    """The fit (400 steps at most, ``tol=1e-12``, from ``random_resp``) and, at its
    parameters, the log density, posterior, imputation and one draw of the missing
    entries: one program."""
    res = emjax.fit(model, x, key=jax.random.key(0), init="random_resp", max_iter=400, tol=1e-12)
    p = res.params
    return (res, model.log_prob(p, x), model.posterior(p, x), model.impute(p, x),
            model.sample_missing(jax.random.key(3), p, x))


@pytest.mark.parametrize("name", ["bernoulli", "poisson", "binomial", "categorical"])
def test_discrete_families_marginalise_missing_features(name):
    """The log density of a row is the mixture over components of the product of its
    observed features' pmfs (scipy), to 1e-12; EM never decreases it and stops at the
    marginal likelihood's stationary point theta_kd = sum r m x / sum r m (1e-5)."""
    family, x, logpmf = discrete_case(name)
    xm = mcar(x, 0.3, seed=1)
    model = emjax.Mixture(family, 2, missing=True)
    res, log_prob, post, filled, drawn = jax.tree.map(np.asarray, discrete_fit(model, xm))
    p = res.params
    theta = np.asarray(jax.tree.leaves(p.components)[0])
    obs = ~np.isnan(xm)
    x0 = np.where(obs, xm, 0.0)
    terms = np.stack([np.where(obs, logpmf(x0, theta[j]), 0.0).sum(1) for j in range(2)], axis=1)
    ref = logsumexp(terms + np.log(np.asarray(p.weights)), axis=1)
    np.testing.assert_allclose(log_prob, ref, rtol=1e-12)
    trace = np.asarray(res.trace[0])
    trace = trace[np.isfinite(trace)]
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    assert int(res.status[0]) == emjax.RESULTS.SUCCESS
    if name == "categorical":
        onehot = np.eye(3)[x0.astype(int)] * obs[..., None]
        direct = np.einsum("nk,nds->kds", post, onehot) / np.einsum("nk,nd->kd", post, obs)[..., None]
    else:
        direct = (post.T @ x0) / (post.T @ obs) / (6 if name == "binomial" else 1)
    np.testing.assert_allclose(theta, direct, atol=1e-5)
    assert not np.isnan(filled).any() and np.all(filled[obs] == xm[obs])
    assert not np.isnan(drawn).any() and np.all(drawn[obs] == xm[obs])
    assert np.all(family.validate_data(np.where(obs, xm, drawn)) == np.where(obs, xm, drawn))  # in the support


@eqx.filter_jit
def with_and_without_missing(family, x):
    """Fits from a k-means start (6 steps, ``tol=0``) without and with ``missing=True``:
    one program. (One restart: a second, vmapped, costs compile time and checks
    nothing more here; missing=True over two vmapped restarts is the planted fit's below.)"""
    kw = dict(key=jax.random.key(0), max_iter=6, tol=0.0)
    return emjax.fit(emjax.Mixture(family, 2), x, **kw), emjax.fit(emjax.Mixture(family, 2, missing=True), x, **kw)


@pytest.mark.parametrize("family", [emjax.Gaussian("tied"), emjax.StudentT("full"), emjax.Categorical(3)],
                         ids=["tied", "student_t_full", "categorical"])
def test_without_missing_entries_the_fit_is_the_complete_data_fit(family):
    """missing=True on data with no NaN: the same trace and parameters (1e-10), the
    k-means start included."""
    if isinstance(family, emjax.Categorical):
        x = discrete_case("categorical", n=200)[1]
    else:
        x = emjax.datasets.gaussian_mixture_sample(2, n=200, d=3, k=2, separation=3.0)[0]
    a, b = with_and_without_missing(family, x)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-10)
    for u, v in zip(jax.tree.leaves(a.restart_params), jax.tree.leaves(b.restart_params)):
        np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-12)


# -- Gaussian and Student-t: recovery, imputation, precision, data sources -------------

TRUE_MEANS = np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0]])
TRUE_COV = np.array([[1.0, 0.6, 0.2], [0.6, 1.5, -0.4], [0.2, -0.4, 0.8]])


def planted(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 2, n)
    return TRUE_MEANS[z] + rng.multivariate_normal(np.zeros(3), TRUE_COV, n)


#: The planted mixture's model.
MODEL = emjax.Mixture(emjax.Gaussian("full"), 2, missing=True)


def planted_missing(n):
    """``n`` rows of the planted mixture with 30% of the entries missing."""
    return mcar(planted(n, seed=n), 0.3, seed=n + 1)


def starts(key, x):
    """A restart's start, ``(key, x) -> params``: the planted means halved and moved
    by the key, covariances 2 I."""
    means = 0.5 * TRUE_MEANS + 0.5 * jax.random.normal(key, TRUE_MEANS.shape, x.dtype)
    return emjax.MixtureParams(jnp.full(2, 0.5, x.dtype), emjax.GaussianParams(means, jnp.broadcast_to(2 * jnp.eye(3, dtype=x.dtype), (2, 3, 3))))


def planted_fit(xm):
    return emjax.fit(MODEL, xm, key=jax.random.key(0), n_restarts=2, init=starts, max_iter=300, tol=1e-9)


@pytest.fixture(scope="module")
def fit_600():
    """The planted mixture's fit to 600 rows (two restarts, to convergence), shared."""
    xm = planted_missing(600)
    return xm, planted_fit(xm)


def test_planted_recovery_with_30_percent_missing_improves_with_n(fit_600):
    errors = []
    for n in (600, 8000):
        xm = planted_missing(n)
        res = fit_600[1] if n == 600 else planted_fit(xm)
        assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)
        assert int(res.best) == int(np.argmax(np.asarray(res.objective)))
        p = res.params
        for leaf in jax.tree.leaves(p):
            assert np.all(np.isfinite(np.asarray(leaf)))
        order = np.argsort(np.asarray(p.components.means)[:, 0])
        err = max(np.max(np.abs(np.asarray(p.components.means)[order] - TRUE_MEANS)),
                  np.max(np.abs(np.asarray(p.components.covariances)[order] - TRUE_COV)))
        errors.append(err)
    print(f"\nlargest error of the means and covariances: N=600 {errors[0]:.3f}, N=8000 {errors[1]:.3f}")
    assert errors[1] < 0.1 and errors[1] < errors[0] / 2


@jax.jit
def impute_and_posterior(p1, p2, x):
    one = emjax.Mixture(emjax.Gaussian("full"), 1, missing=True)
    return one.impute(p1, x), MODEL.impute(p2, x), MODEL.posterior(p2, x)


def test_impute_is_the_exact_conditional_mean():
    """K=1 with known parameters: E[x_m | x_o] = mu_m + S_mo S_oo^-1 (x_o - mu_o), row
    by row in NumPy (1e-12); K=2 mixes them with the posterior of the observed entries."""
    x = mcar(planted(50, seed=7), 0.4, seed=8)
    p1 = emjax.MixtureParams(jnp.ones(1), emjax.GaussianParams(jnp.asarray(TRUE_MEANS[:1]), jnp.asarray(TRUE_COV[None])))
    p2 = emjax.MixtureParams(jnp.asarray([0.3, 0.7]),
                             emjax.GaussianParams(jnp.asarray(TRUE_MEANS), jnp.asarray(np.stack([TRUE_COV, 2 * TRUE_COV]))))
    got1, got2, post = (np.asarray(a) for a in impute_and_posterior(p1, p2, x))
    for i, row in enumerate(x):
        o, m = ~np.isnan(row), np.isnan(row)
        want = [row.copy(), row.copy()]
        for j, (mu, s) in enumerate([(TRUE_MEANS[0], TRUE_COV), (TRUE_MEANS[1], 2 * TRUE_COV)]):
            want[j][m] = mu[m] + s[np.ix_(m, o)] @ np.linalg.solve(s[np.ix_(o, o)], row[o] - mu[o])
        np.testing.assert_allclose(got1[i], want[0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got2[i], post[i, 0] * want[0] + post[i, 1] * want[1], rtol=1e-12, atol=1e-12)


def test_sample_missing_follows_the_conditional_law():
    """One row, entry 0 missing, drawn 20000 times under K=1: the draws' mean and
    variance are the conditional ones (within 5 standard errors)."""
    row = np.array([[np.nan, 0.5, -0.3]])
    model = emjax.Mixture(emjax.Gaussian("full"), 1, missing=True)
    p = emjax.MixtureParams(jnp.ones(1), emjax.GaussianParams(jnp.asarray(TRUE_MEANS[:1]), jnp.asarray(TRUE_COV[None])))
    draw = jax.jit(model.sample_missing)
    draws = np.asarray(draw(jax.random.key(0), p, np.repeat(row, 20000, axis=0)))[:, 0]
    o = np.array([1, 2])
    gain = TRUE_COV[0, o] @ np.linalg.inv(TRUE_COV[np.ix_(o, o)])
    mean = TRUE_MEANS[0, 0] + gain @ (row[0, o] - TRUE_MEANS[0, o])
    var = TRUE_COV[0, 0] - gain @ TRUE_COV[o, 0]
    assert abs(draws.mean() - mean) < 5 * np.sqrt(var / draws.size)
    assert abs(draws.var() - var) < 5 * var * np.sqrt(2 / draws.size)


def test_float32_agrees_with_float64(fit_600):
    """The same fit (same starts, to convergence) to the float32 data: the best
    objective within 1e-4 of float64's."""
    xm, r64 = fit_600
    r32 = planted_fit(xm.astype(np.float32))
    assert r32.objective.dtype == np.float32 and r32.params.components.covariances.dtype == np.float32
    ll32, ll64 = float(r32.objective[r32.best]), float(r64.objective[r64.best])
    assert abs(ll32 - ll64) <= 1e-4 * abs(ll64), (ll32, ll64)


@eqx.filter_jit
def student_t_fits(x, complete, p0):
    """ECM and ECME fits (8 steps, ``tol=0``) from ``p0`` with ``missing=True``, and the
    outlier scores at ECME's parameters: of every row, and of the ``complete`` rows
    under the plain model. One program."""
    fits = {update: emjax.fit(emjax.Mixture(emjax.StudentT("full", dof_update=update), 2, missing=True), x,
                              key=jax.random.key(0), init=p0, max_iter=8, tol=0.0) for update in ("ecm", "ecme")}
    params = fits["ecme"].params
    scores = emjax.Mixture(emjax.StudentT("full", dof_update="ecme"), 2, missing=True).outlier_scores(params, x)
    plain = emjax.Mixture(emjax.StudentT("full"), 2).outlier_scores(params, complete)
    return fits, scores, plain


def test_student_t_is_monotone_with_outlier_scores():
    xm = planted_missing(600)[:200]
    p0 = emjax.MixtureParams(jnp.asarray([0.5, 0.5]), emjax.StudentTParams(
        jnp.asarray(0.5 * TRUE_MEANS), jnp.asarray(np.stack([2 * np.eye(3)] * 2)), jnp.asarray([5.0, 5.0])))
    complete = ~np.isnan(xm).any(axis=1)
    fits, (weight, dist), (w_plain, d_plain) = jax.tree.map(np.asarray, student_t_fits(xm, xm[complete], p0))
    for update, res in fits.items():
        trace = np.asarray(res.trace[0])
        assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:])), update
        assert trace[-1] > trace[0], update
        assert np.all(np.isfinite(np.asarray(res.params.components.dofs)))
    # outlier scores from the observed entries: on complete rows those of the plain model
    np.testing.assert_allclose(weight[complete], w_plain, rtol=1e-10)
    np.testing.assert_allclose(dist[complete], d_plain, rtol=1e-10)
    assert np.all(np.isfinite(weight)) and np.all(np.isfinite(dist)) and not complete.all()


@eqx.filter_jit
def other_fits(model, x, p0):
    """The fits of :func:`test_every_algorithm_over_chunks_streams_and_weights` but batch
    EM on all rows: with weights 2 on the first half, and by the other algorithms; from
    ``p0``, 5 steps, ``tol=0``. One program."""
    kw = dict(key=jax.random.key(0), init=p0, max_iter=5, tol=0.0)
    return dict(
        weighted=emjax.fit(model, x[:150], weights=jnp.full(150, 2.0), **kw),
        incremental=emjax.fit(model, x, algorithm=emjax.IncrementalEM(n_blocks=4), **kw),
        stepwise=emjax.fit(model, x, algorithm=emjax.StepwiseEM(batch_size=50), **kw),
        gradient=emjax.fit(model, x, algorithm=emjax.GradientAscent(optax.adam(0.05)), **kw),
    )


def test_every_algorithm_over_chunks_streams_and_weights():
    """Batch EM over a stream (chunks of 64) equals the in-memory fit; doubled weights
    equal repeated rows; incremental EM's objective never falls; stepwise EM and
    gradient ascent run."""
    xm = mcar(planted(300, seed=5), 0.3, seed=6)
    model = emjax.Mixture(emjax.Gaussian("diag"), 2, missing=True)
    p0 = emjax.MixtureParams(jnp.asarray([0.5, 0.5]), emjax.GaussianParams(jnp.asarray(0.5 * TRUE_MEANS), jnp.full((2, 3), 2.0)))
    fits = jax.tree.map(np.asarray, other_fits(model, xm, p0))
    kw = dict(key=jax.random.key(0), init=p0, max_iter=5, tol=0.0)
    memory = emjax.fit(model, xm, **kw)
    repeated = emjax.fit(model, np.concatenate([xm[:150], xm[:150]]), **kw)  # the same program: 300 rows
    streamed = emjax.fit(model, emjax.Stream(xm, chunk_size=64), **kw)
    np.testing.assert_allclose(streamed.trace, memory.trace, rtol=1e-10)
    np.testing.assert_allclose(fits["weighted"].trace, repeated.trace, rtol=1e-10)
    trace = fits["incremental"].trace[0]
    assert np.all(np.diff(trace) >= -1e-10 * np.abs(trace[1:]))
    assert np.all(np.isfinite(fits["stepwise"].objective))
    # gradient ascent on the same observed-data objective climbs from the same start
    grad = fits["gradient"]
    assert float(grad.objective[0]) > float(grad.trace[0, 0]) and np.isfinite(float(grad.objective[0]))


def test_bad_input_is_refused_with_the_option_named():
    x = mcar(planted(40, seed=9), 0.3, seed=10)
    with pytest.raises(ValueError, match="missing=True"):
        emjax.fit(emjax.Mixture(emjax.Gaussian("full"), 2), x, key=jax.random.key(0))
    model = MODEL
    bad = x.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="row 3 has every entry missing"):
        emjax.fit(model, bad, key=jax.random.key(0))
    params = emjax.MixtureParams(jnp.asarray([0.5, 0.5]), emjax.GaussianParams(jnp.asarray(TRUE_MEANS), jnp.asarray(np.stack([TRUE_COV] * 2))))
    with pytest.raises(ValueError, match="row 3 has every entry missing"):
        model.log_prob(params, bad)
    inf = x.copy()
    inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        emjax.fit(model, inf, key=jax.random.key(0))
    with pytest.raises(ValueError, match="do not support missing"):
        emjax.Mixture(emjax.Multinomial(), 2, missing=True)
    with pytest.raises(ValueError, match="do not support missing"):
        emjax.Mixture(emjax.Binomial(None), 2, missing=True)
    with pytest.raises(ValueError, match="missing=True"):
        emjax.Mixture(emjax.Gaussian("full"), 2).impute(params, x)
