"""mclust's 14 parsimonious Gaussian models against a NumPy EM written out here.

One compiled program runs 50 EM iterations of every model (and the MAP and
Student-t cases) from the same responsibilities; a NumPy EM with its own M-steps
(Celeux & Govaert 1995; Browne & McNicholas 2014 for a common orientation),
iterated to convergence, runs alongside. Small data (N = 210, D = 3, K = 3) keep
the file to a few compiles.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.special import logsumexp

import emjax
from emjax.families import MCLUST_MODELS
from emjax.families._covariance import Diag, Full, Spherical, Tied, covariance_structure
from emjax.families._parsimonious import Parsimonious
from tests.conftest import assert_monotone

N_ITER = 50
K, D = 3, 3
REG = 1e-6  # reg_covar with reg_scale=1: R = 1e-6 I
RNG = np.random.default_rng(5)
_ROT = np.linalg.qr(RNG.normal(size=(D, D)))[0]
X = np.concatenate([
    RNG.normal(size=(80, D)) * [2.0, 1.0, 0.5] @ _ROT.T,
    RNG.normal(size=(70, D)) * [1.0, 0.6, 0.3] @ np.linalg.qr(RNG.normal(size=(D, D)))[0].T + [5.0, 1.0, -2.0],
    RNG.normal(size=(60, D)) * 0.7 + [-4.0, 3.0, 2.0],
])
LABELS = np.repeat(np.arange(K), [80, 70, 60])
RESP0 = 0.6 * np.eye(K)[LABELS] + 0.4 * RNG.dirichlet(np.ones(K), size=X.shape[0])  # a rough start

#: mclust's nVarParams, by hand.
N_VAR_PARAMS = {
    "EII": lambda k, d: 1, "VII": lambda k, d: k, "EEI": lambda k, d: d, "VEI": lambda k, d: k + d - 1,
    "EVI": lambda k, d: 1 + k * (d - 1), "VVI": lambda k, d: k * d, "EEE": lambda k, d: d * (d + 1) // 2,
    "VEE": lambda k, d: k + d - 1 + d * (d - 1) // 2, "EVE": lambda k, d: 1 + k * (d - 1) + d * (d - 1) // 2,
    "VVE": lambda k, d: k * d + d * (d - 1) // 2, "EEV": lambda k, d: d + k * d * (d - 1) // 2,
    "VEV": lambda k, d: k + d - 1 + k * d * (d - 1) // 2, "EVV": lambda k, d: 1 + k * (d * (d + 1) // 2 - 1),
    "VVV": lambda k, d: k * d * (d + 1) // 2,
}


# -- the NumPy reference --------------------------------------------------------------------------


def _normalise(v):
    """``v / geometric mean`` (a diagonal of determinant 1)."""
    return v / np.exp(np.mean(np.log(v)))


def _iterate(update, x, tol=1e-12, max_iter=20000):
    for _ in range(max_iter):
        y = update(x)
        if np.max(np.abs(y - x)) < tol:
            return y
        x = y
    return x


def _orientation_mm(w, variances):
    """Common orientation: Browne & McNicholas's MM steps in turn,
    ``D <- polar(sum_k (alpha_k I - W_k) D Psi_k)``, ``D^T <- polar(sum_k (beta_k I - Psi_k) D^T W_k)``."""
    alpha = np.array([np.linalg.eigvalsh(wk)[-1] for wk in w])

    def polar(f):
        u, _, vt = np.linalg.svd(f)
        return u @ vt

    def psi(b):
        return 1.0 / variances(np.stack([np.diag(b.T @ wk @ b) for wk in w]))

    def update(b):
        p = psi(b)
        b = polar(sum((alpha[k] * np.eye(D) - w[k]) @ b @ np.diag(p[k]) for k in range(K)))
        p = psi(b)
        return polar(sum(np.diag(p[k].max() - p[k]) @ b.T @ w[k] for k in range(K))).T

    b = _iterate(update, np.linalg.eigh(w.sum(0))[1])
    v = variances(np.stack([np.diag(b.T @ wk @ b) for wk in w]))
    return np.stack([b @ np.diag(vk) @ b.T for vk in v])


def numpy_mstep(code, w, n):
    """The covariances maximising ``-1/2 sum_k [n_k log|S_k| + tr(S_k^-1 W_k)]`` under ``code``."""
    vol, shape, orient = code
    ntot = n.sum()
    if code == "VVV":
        return w / n[:, None, None]
    if orient == "I":
        e = np.stack([np.diag(wk) for wk in w])
        if shape == "I":
            lam = np.trace(w, axis1=1, axis2=2) / (D * n) if vol == "V" else np.full(K, np.trace(w.sum(0)) / (D * ntot))
            return lam[:, None, None] * np.eye(D)
        if shape == "V":
            if vol == "V":
                return np.stack([np.diag(ek / nk) for ek, nk in zip(e, n)])
            g = np.exp(np.mean(np.log(e), axis=1))
            return np.stack([np.diag(g.sum() / ntot * ek / gk) for ek, gk in zip(e, g)])
        if vol == "E":  # EEI
            return np.broadcast_to(np.diag(e.sum(0) / ntot), (K, D, D))
        lam_of = lambda a: np.sum(e / a, axis=1) / (D * n)  # noqa: E731
        a = _iterate(lambda a: _normalise((e / lam_of(a)[:, None]).sum(0)), _normalise(e.sum(0)))
        return np.stack([lk * np.diag(a) for lk in lam_of(a)])  # VEI
    if orient == "E":
        if shape == "E":
            if vol == "E":
                return np.broadcast_to(w.sum(0) / ntot, (K, D, D))
            det1 = lambda m: m / np.linalg.det(m) ** (1 / D)  # noqa: E731
            lam_of = lambda c: np.trace(np.linalg.solve(c, w), axis1=1, axis2=2) / (D * n)  # noqa: E731
            c = _iterate(lambda c: det1(sum(wk / lk for wk, lk in zip(w, lam_of(c)))), det1(w.sum(0)))
            return lam_of(c)[:, None, None] * c  # VEE
        if vol == "V":
            return _orientation_mm(w, lambda e: e / n[:, None])  # VVE

        def eve(e):
            g = np.exp(np.mean(np.log(e), axis=1))
            return g.sum() / ntot * e / g[:, None]

        return _orientation_mm(w, eve)
    omega, basis = np.linalg.eigh(w)  # orient == "V": eigenvalues ascending
    if shape == "E":
        if vol == "E":
            o = omega.sum(0)
            lam = np.exp(np.mean(np.log(o))) / ntot
            return np.stack([lam * bk @ np.diag(_normalise(o)) @ bk.T for bk in basis])
        lam_of = lambda a: np.sum(omega / a, axis=1) / (D * n)  # noqa: E731
        a = _iterate(lambda a: _normalise((omega / lam_of(a)[:, None]).sum(0)), _normalise(omega.sum(0)))
        return np.stack([lk * bk @ np.diag(a) @ bk.T for lk, bk in zip(lam_of(a), basis)])  # VEV
    g = np.linalg.det(w) ** (1 / D)  # EVV
    return g.sum() / ntot * w / g[:, None, None]


def numpy_em(code, x, resp, n_iter, prior=None):
    """Penalised EM (``W_k = S_k + n_k R``; MAP: Fraley & Raftery's posterior scale)
    from responsibilities; returns the objective trace and the final parameters."""
    r_mat = REG * np.eye(D)
    trace = []
    for it in range(n_iter + 1):
        n = resp.sum(0)
        weights = n / n.sum()
        xbar = resp.T @ x / n[:, None]
        s = np.stack([(resp[:, k, None] * (x - xbar[k])).T @ (x - xbar[k]) for k in range(K)])
        if prior is None:
            means, w, power = xbar, s + n[:, None, None] * r_mat, n
        else:
            m0, kappa0, nu0, s0 = prior
            means = (n[:, None] * xbar + kappa0 * m0) / (n + kappa0)[:, None]
            dm = means - m0
            w = s0 + s + n[:, None, None] * r_mat + np.stack([n[k] * np.outer(xbar[k] - means[k], xbar[k] - means[k])
                                                              + kappa0 * np.outer(dm[k], dm[k]) for k in range(K)])
            power = nu0 + n + D + 2
        cov = numpy_mstep(code, w, power)
        if it == n_iter:
            return np.array(trace), weights, means, cov
        prec = np.linalg.inv(cov)
        diff = x[:, None, :] - means[None]
        maha = np.einsum("nkd,kde,nke->nk", diff, prec, diff)
        logdet = np.linalg.slogdet(cov)[1]
        penalty = 0.5 * np.trace(r_mat @ prec, axis1=1, axis2=2)
        lj = np.log(weights) - 0.5 * (D * np.log(2 * np.pi) + logdet + maha) - penalty
        ll = logsumexp(lj, axis=1)
        objective = ll.sum()
        if prior is not None:
            objective += _numpy_log_prior(means, cov, prior)
        trace.append(objective)
        resp = np.exp(lj - ll[:, None])


def _numpy_log_prior(means, cov, prior):
    """``sum_k log IW(Sigma_k | S0, nu0) + log N(mu_k | m0, Sigma_k / kappa0)`` (scipy)."""
    from scipy.stats import invwishart, multivariate_normal

    m0, kappa0, nu0, s0 = prior
    return sum(invwishart.logpdf(c, df=nu0, scale=s0) + multivariate_normal.logpdf(m, m0, c / kappa0)
               for m, c in zip(means, cov))


# -- the compiled fits ------------------------------------------------------------------------------

MAP_CASES = ("EVI", "VEE", "EVE", "VEV")  # closed form, volume/shape fixed point, common orientation, eigen fixed point


def _prior():
    return emjax.NormalInverseWishart.fraley_raftery(X, K)


def _models():
    ml = {c: emjax.Mixture(emjax.Gaussian(c, reg_covar=REG, reg_scale=1.0), K) for c in MCLUST_MODELS}
    maps = {f"MAP-{c}": emjax.Mixture(emjax.Gaussian(c, reg_covar=REG, reg_scale=1.0, prior=_prior()), K)
            for c in MAP_CASES}
    student = {"t-VEE": emjax.Mixture(emjax.StudentT("VEE", reg_covar=REG, reg_scale=1.0), K)}
    return {**ml, **maps, **student}


@eqx.filter_jit
def _run_all(models, x, resp0):
    out = {}
    for name, model in models.items():
        p0 = model.init_from_resp(x, resp0)

        def body(p, _, model=model):
            stats, ll = model.e_step(p, x)
            return model.m_step(stats, p), ll + model.log_prior(p)

        out[name] = jax.lax.scan(body, p0, None, length=N_ITER)
    return out


@pytest.fixture(scope="module")
def fits():
    models = _models()
    return models, _run_all(models, jnp.asarray(X), jnp.asarray(RESP0))


@pytest.mark.parametrize("code", MCLUST_MODELS)
def test_em_matches_numpy_reference_and_is_monotone(fits, code):
    """Objective trace to 1e-8 relative (each of the 50 values; measured: rounding for the
    closed forms, 5e-10 at worst for the iterative EVE), parameters to 1e-6 absolute
    (data of scale 1-5; measured 5e-8), and the trace never decreases by more than
    1e-9 relative."""
    params, trace = fits[1][code]
    ref_trace, weights, means, cov = numpy_em(code, X, RESP0, N_ITER)
    trace = np.asarray(trace)
    assert_monotone(trace[None], rtol=1e-9)
    assert_monotone(ref_trace[None], rtol=1e-9)
    np.testing.assert_allclose(trace, ref_trace, rtol=1e-8)
    fitted = emjax.Gaussian(code).full_covariances(params.components)
    np.testing.assert_allclose(params.weights, weights, atol=1e-6)
    np.testing.assert_allclose(params.components.means, means, atol=1e-6)
    np.testing.assert_allclose(fitted, cov, atol=1e-6)
    # the fitted matrices are of the model's form (the structure's own check)
    emjax.Gaussian(code).structure.validate(params.components.covariances, K, D)


@pytest.mark.parametrize("code", MAP_CASES)
def test_map_em_matches_numpy_reference_and_is_monotone(fits, code):
    """MAP-EM (Fraley & Raftery's prior restricted to the model) increases the log posterior
    and agrees with the NumPy reference whose log prior is scipy's."""
    params, trace = fits[1][f"MAP-{code}"]
    prior = _prior()
    ref_trace, _, means, cov = numpy_em(code, X, RESP0, N_ITER, prior=(
        np.asarray(prior.m0), float(prior.kappa0), float(prior.nu0), np.asarray(prior.S0)))
    assert_monotone(np.asarray(trace)[None], rtol=1e-9)
    np.testing.assert_allclose(trace, ref_trace, rtol=1e-8)
    np.testing.assert_allclose(params.components.means, means, atol=1e-6)
    np.testing.assert_allclose(params.components.covariances, cov, atol=1e-6)


def test_student_t_with_a_parsimonious_scale_is_monotone_and_constrained(fits):
    params, trace = fits[1]["t-VEE"]
    assert_monotone(np.asarray(trace)[None], rtol=1e-9)
    cov = np.asarray(params.components.covariances)
    shapes = cov / np.linalg.det(cov)[:, None, None] ** (1 / D)  # lambda_k C: one C
    np.testing.assert_allclose(shapes, np.broadcast_to(shapes[0], shapes.shape), atol=1e-8)
    emjax.StudentT("VEE").structure.validate(cov, K, D)


# -- structure table, aliases, errors -------------------------------------------------------------


def test_names_parameter_counts_and_aliases():
    assert MCLUST_MODELS == tuple(N_VAR_PARAMS)  # mclust's order
    for code in MCLUST_MODELS:
        for k, d in ((1, 1), (3, 2), (4, 5)):
            assert covariance_structure(code).n_parameters(k, d) == N_VAR_PARAMS[code](k, d), (code, k, d)
    for code, cls in (("VVV", Full), ("EEE", Tied), ("VVI", Diag), ("VII", Spherical)):
        assert type(covariance_structure(code)) is cls
        g = emjax.Gaussian(code)
        assert g.covariance_type == code and type(g.structure) is cls
    for code in set(MCLUST_MODELS) - {"VVV", "EEE", "VVI", "VII"}:
        s = covariance_structure(code)
        assert isinstance(s, Parsimonious) and s.name == code and s.shape(K, D) == (K, D, D)
    # a tied alias permutes as tied (one shared matrix)
    p = emjax.GaussianParams(jnp.zeros((K, D)), jnp.eye(D))
    assert emjax.Gaussian("EEE").permute_components(p, jnp.array([2, 0, 1])).covariances.shape == (D, D)


def test_unknown_code_names_every_valid_one():
    with pytest.raises(ValueError) as err:
        emjax.Gaussian("VVX")
    for name in MCLUST_MODELS + ("full", "diag", "spherical", "tied"):
        assert repr(name) in str(err.value)


def test_unconstrained_algorithms_are_refused_naming_the_structure(monkeypatch):
    import emjax._runner

    def not_compiled(*args):
        raise AssertionError("compiled before refusing")

    monkeypatch.setattr(emjax._runner, "_fit_compiled", not_compiled)
    model = emjax.Mixture(emjax.Gaussian("EVE"), K)
    assert not model.provides("unconstrain") and emjax.Mixture(emjax.Gaussian("EEE"), K).provides("unconstrain")
    for algorithm in (emjax.GradientAscent(optax.adam(1e-2)), emjax.OverRelaxedEM(), emjax.GeneralizedEM()):
        with pytest.raises(TypeError, match=r"Gaussian\('EVE'\), a parsimonious covariance structure"):
            emjax.fit(model, X, key=jax.random.key(0), algorithm=algorithm, max_iter=2)


def test_given_covariances_must_be_of_the_models_form():
    full = np.stack([np.eye(D), np.diag([1.0, 2.0, 3.0]), np.eye(D)])
    params = emjax.GaussianParams(jnp.zeros((K, D)), jnp.asarray(full))
    with pytest.raises(ValueError, match="not of the EII form"):
        emjax.Gaussian("EII").validate_params(params, K, D)
    emjax.Gaussian("VVI").validate_params(emjax.GaussianParams(jnp.zeros((K, D)), jnp.ones((K, D))), K, D)
    emjax.Gaussian("EEV").structure.validate(jnp.asarray(np.broadcast_to(np.diag([1.0, 2.0, 3.0]), (K, D, D))), K, D)


# -- select: masked components are exact ------------------------------------------------------------


def test_select_sweep_and_masking_is_exact():
    """A K = 2 fit inside select's K_max = 3 program equals the plain K = 2 fit from the
    same start: EVE's pooled volume and common orientation ignore the masked component
    (MAP, where its posterior scale S0 + kappa0 dm dm^T would otherwise weigh in; the
    objective differs by the masked component's constant log prior)."""
    eve = emjax.Gaussian("EVE", prior=_prior())
    families = [emjax.Gaussian("EII"), eve]
    sel = emjax.select(families, X, ks=(2, 3), key=jax.random.key(1), n_restarts=1, max_iter=20, tol=0.0)
    assert [(r.structure, r.k) for r in sel.table] == [
        ("Gaussian(EII)", 2), ("Gaussian(EII)", 3), ("Gaussian(EVE)", 2), ("Gaussian(EVE)", 3)]
    assert all(np.isfinite(r.bic) and r.n_parameters == r.k * D + r.k - 1 + N_VAR_PARAMS[r.structure[9:12]](r.k, D)
               for r in sel.table)
    name = "Gaussian(EVE)"
    start = jax.tree.map(lambda a: a[0], sel.initial_params[(name, 2)])
    plain = emjax.fit(emjax.Mixture(eve, 2), X, key=jax.random.key(0), init=start, max_iter=20, tol=0.0)
    inside = sel.fits[(name, 2)]
    np.testing.assert_allclose(np.diff(inside.trace[0]), np.diff(plain.trace[0]), rtol=1e-9, atol=1e-9)
    for a, b in zip(jax.tree.leaves(inside.params), jax.tree.leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
