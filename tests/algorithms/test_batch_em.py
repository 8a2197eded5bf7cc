"""Batch EM: monotone objective, float32 against float64, restarts, freezing.

Chunking, sample weights and float32 for every family (Gaussians included) are
checked in tests/families/test_conformance.py.

Compilation dominates: the fits that several checks read are traced into one
program (``emjax.fit`` under ``jax.jit``), computed once per module.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from tests.conftest import assert_monotone, make_blobs

COV_TYPES = ["full", "diag", "spherical", "tied"]


def gaussian_model(cov_type, x, k=3, prior=False, **kw):
    p = emjax.NormalInverseWishart.fraley_raftery(x, k) if prior else None
    wp = emjax.Dirichlet(2.0) if prior else None
    return emjax.Mixture(emjax.Gaussian(cov_type, prior=p, **kw), k, weights_prior=wp)


@eqx.filter_jit
def objective_fits(models, x):
    """Each model's fit from 4 random starts, 150 steps, and the log-likelihood plus
    log prior at its best parameters: one program for all of them."""
    out = {}
    for name, model in models.items():
        res = emjax.fit(model, x, key=jax.random.key(1), n_restarts=4, init="random", max_iter=150, tol=0.0)
        out[name] = res, jnp.sum(model.log_prob(res.params, x)) + model.log_prior(res.params)
    return out


@pytest.fixture(scope="module")
def monotone_fits():
    # Overlapping components and a random start: many iterations with real progress.
    x, _ = make_blobs(5, n=800, d=3, k=4, sep=1.5)
    models = {(c, prior): gaussian_model(c, x, k=4, prior=prior, reg_covar=0.0) for c in COV_TYPES for prior in (0, 1)}
    return jax.tree.map(np.asarray, objective_fits(models, x))


@pytest.mark.parametrize("prior", [False, True], ids=["ML", "MAP"])
@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_objective_never_decreases(monotone_fits, cov_type, prior):
    res, expected = monotone_fits[cov_type, int(prior)]
    trace = np.asarray(res.trace)
    assert_monotone(trace)
    # EM made real progress from the start.
    assert np.all(trace[:, -1] - trace[:, 0] > 1.0)
    # The trace is the log-likelihood (with a prior, plus the log prior: the log posterior).
    np.testing.assert_allclose(float(res.objective[res.best]), float(expected), rtol=1e-12)


@eqx.filter_jit
def precision_fits(models, x64):
    """Each model's fit in float64 and in float32 from the same k-means++ start: one program."""
    out = {}
    for name, model in models.items():
        p0 = model.init(jax.random.key(2), x64, "kmeans++")
        r64 = emjax.fit(model, x64, key=jax.random.key(0), init=p0, max_iter=200, tol=1e-10)
        p0_32 = jax.tree.map(lambda a: a.astype(jnp.float32), p0)
        r32 = emjax.fit(model, x64.astype(jnp.float32), key=jax.random.key(0), init=p0_32, max_iter=200, tol=1e-7)
        out[name] = r64, r32
    return out


@pytest.fixture(scope="module")
def float32_fits():
    x64, _ = make_blobs(6, n=2000, d=4, k=3, sep=4.0)
    x64 = x64 + 50.0  # an offset far from the origin: raw second moments would lose digits
    models = {c: emjax.Mixture(emjax.Gaussian(c), 3) for c in COV_TYPES}
    return jax.tree.map(np.asarray, precision_fits(models, jnp.asarray(x64)))


@pytest.mark.parametrize("cov_type", COV_TYPES)
def test_float32_agrees_with_float64(float32_fits, cov_type):
    r64, r32 = float32_fits[cov_type]
    assert r32.params.weights.dtype == np.float32 and r32.objective.dtype == np.float32
    assert r64.status[0] == emjax.RESULTS.SUCCESS
    ll32, ll64 = float(r32.objective[0]), float(r64.objective[0])
    assert abs(ll32 - ll64) <= 1e-4 * abs(ll64)
    # And the parameters themselves agree (same fixed point).
    np.testing.assert_allclose(r32.params.components.means, r64.params.components.means, rtol=1e-3, atol=1e-3)


def test_sixty_four_restarts_are_one_compiled_program():
    x, _ = make_blobs(7, n=400, d=2, k=4, sep=2.0)

    class CountingMixture(emjax.Mixture):
        def e_step(self, params, x, weights=None):
            traces.append(1)
            return super().e_step(params, x, weights)

    model = CountingMixture(emjax.Gaussian("full"), 4)
    # fit splits its key into one key per restart and initialises restart r from
    # the r-th: restarts 0 and 63 are the single-restart fits from those initial
    # points (fit's init, at fit's regularisation scale).
    keys = jax.random.split(jax.random.key(3), 64)
    starts = jax.jit(jax.vmap(lambda k: model.adapt(x).init(k, jnp.asarray(x), "random")))(keys[jnp.array([0, 63])])
    traces = []
    single = {r: emjax.fit(model, x, key=jax.random.key(3), init=jax.tree.map(lambda a: a[i], starts), max_iter=60)
              for i, r in enumerate((0, 63))}
    n_traced_one = len(traces)  # one restart (the two single fits are one program)
    traces.clear()
    res = emjax.fit(model, x, key=jax.random.key(3), n_restarts=64, init="random", max_iter=60)
    # 64 restarts trace the E-step as often as one: a vmap, not a Python loop.
    assert len(traces) == n_traced_one <= 4
    assert res.objective.shape == (64,) and res.trace.shape == (64, 61)
    assert res.status.shape == res.n_iter.shape == res.converged.shape == (64,)
    assert jax.tree.leaves(res.restart_params)[0].shape[0] == 64
    # Restarts really differ, and the best one is the one with the highest final objective.
    obj = np.asarray(res.objective)
    assert np.ptp(obj) > 1e-3
    assert np.all(np.isin(np.asarray(res.status), [emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER]))
    assert int(res.best) == int(np.argmax(obj))
    np.testing.assert_array_equal(res.params.components.means, res.restart_params.components.means[int(np.argmax(obj))])
    assert single[0].objective.shape == (1,)
    for r in (0, 63):
        for a, b in zip(jax.tree.leaves(single[r].params), jax.tree.leaves(res.restart_params)):
            np.testing.assert_allclose(a, b[r], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(single[r].trace[0], res.trace[r], rtol=1e-10)
        assert int(single[r].n_iter[0]) == int(res.n_iter[r]) and int(single[r].status[0]) == int(res.status[r])


def test_trace_is_padded_with_the_final_value():
    x, _ = make_blobs(8, n=300)
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    res = emjax.fit(model, x, key=jax.random.key(0), max_iter=200, tol=1e-4)
    n = int(res.n_iter[0])
    assert bool(res.converged[0]) and n < 200
    trace = np.asarray(res.trace[0])
    np.testing.assert_array_equal(trace[n:], trace[n])
    assert trace[n] == float(res.objective[0])
    assert abs(trace[n] - trace[n - 1]) < 1e-4 * x.shape[0]


FROZEN = ["weights", "means", "covariances", ("weights", "means")]


@pytest.fixture(scope="module")
def frozen_fits():
    """The random start and, for each entry of FROZEN, the fit from it: one program."""
    x, _ = make_blobs(11, n=500)
    models = [emjax.Mixture(emjax.Gaussian("full"), 3, frozen=(g,) if isinstance(g, str) else g) for g in FROZEN]

    @eqx.filter_jit
    def fits(models, x):
        p0 = emjax.Mixture(emjax.Gaussian("full"), 3).init(jax.random.key(1), x, "random")
        return p0, [emjax.fit(m, x, key=jax.random.key(0), init=p0, max_iter=60, tol=0.0) for m in models]

    return jax.tree.map(np.asarray, fits(models, jnp.asarray(x)))


@pytest.mark.parametrize("frozen", FROZEN)
def test_frozen_groups_stay_at_their_initial_values(frozen_fits, frozen):
    p0, fits = frozen_fits
    res = fits[FROZEN.index(frozen)]
    frozen = (frozen,) if isinstance(frozen, str) else frozen
    p = res.params
    got = {"weights": p.weights, "means": p.components.means, "covariances": p.components.covariances}
    start = {"weights": p0.weights, "means": p0.components.means, "covariances": p0.components.covariances}
    for g in got:
        if g in frozen:
            np.testing.assert_array_equal(got[g], start[g])
        else:
            assert np.max(np.abs(np.asarray(got[g]) - np.asarray(start[g]))) > 1e-3
    # Conditional maximisation keeps EM monotone.
    assert_monotone(res.trace)


def test_frozen_means_give_the_scatter_about_them():
    # With the means frozen, the ML covariance is the weighted scatter about those means.
    x, _ = make_blobs(12, n=300, d=2, k=2)
    model = emjax.Mixture(emjax.Gaussian("full", reg_covar=0.0), 2, frozen=("means",))

    @jax.jit
    def one_step(x):  # a random start, the M-step from it and the responsibilities there
        p0 = model.init(jax.random.key(2), x, "random")
        stats, _ = model.e_step(p0, x)
        return p0, model.m_step(stats, p0), model.posterior(p0, x)

    p0, p1, resp = jax.tree.map(np.asarray, one_step(jnp.asarray(x)))
    for k in range(2):
        d = x - p0.components.means[k]
        expected = (resp[:, k, None] * d).T @ d / resp[:, k].sum()
        np.testing.assert_allclose(p1.components.covariances[k], expected, rtol=1e-10)


def test_verbose_prints_progress(capfd):
    x, _ = make_blobs(13, n=200)
    model = emjax.Mixture(emjax.Gaussian("diag"), 3)
    res = emjax.fit(model, x, key=jax.random.key(0), max_iter=20, tol=0.0, verbose=True, print_every=5)
    jax.effects_barrier()
    out = capfd.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("restart")]
    assert [int(line.split()[3]) for line in lines] == [0, 5, 10, 15, 20]
    assert f"{float(res.trace[0, 20]):.8g}" in lines[-1]


@pytest.mark.parametrize("cov_type", ["full", "diag"])
def test_no_full_data_intermediate(cov_type):
    # The compiled E-step, initialisation and fit never hold an (N, K, D) array.
    # (Compiled for data of that shape: lowering needs the shapes only, nothing runs.)
    n, d, k = 200_000, 8, 32
    x = jax.ShapeDtypeStruct((n, d), jnp.float32)
    labels = jax.ShapeDtypeStruct((n,), jnp.int32)
    model = emjax.Mixture(emjax.Gaussian(cov_type), k)
    nkd_bytes = n * k * d * 4
    init_mem = jax.jit(model.init_from_labels).lower(x, labels).compile().memory_analysis()
    assert init_mem.temp_size_in_bytes < nkd_bytes / 3  # the (N, K) one-hot labels are nkd / 8
    p0 = jax.eval_shape(model.init_from_labels, x, labels)
    fit_mem = (
        jax.jit(lambda x, p: emjax.fit(model, x, key=jax.random.key(0), init=p, max_iter=3).objective)
        .lower(x, p0).compile().memory_analysis()
    )
    assert fit_mem.temp_size_in_bytes < nkd_bytes / 3


def test_gaussian_parameters_are_recovered_with_shrinking_error():
    from scipy.optimize import linear_sum_assignment

    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    truth = emjax.MixtureParams(
        jnp.array([0.5, 0.3, 0.2]),
        emjax.GaussianParams(jnp.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]]),
                             jnp.array([[[1.0, 0.3], [0.3, 0.8]], [[0.5, 0.0], [0.0, 1.5]], [[1.2, -0.4], [-0.4, 0.7]]])),
    )

    @jax.jit
    def estimates(truth):  # the best of four restarts on 2,000 and on 20,000 samples: one program
        return [emjax.fit(model, model.sample(jax.random.key(n), truth, n)[0], key=jax.random.key(1), n_restarts=4).params
                for n in (2000, 20000)]

    errors = []
    for p in jax.tree.map(np.asarray, estimates(truth)):
        m = p.components.means
        cost = ((m[:, None] - np.asarray(truth.components.means)[None]) ** 2).sum(-1)
        rows, cols = linear_sum_assignment(cost)
        err = max(
            np.abs(m[rows] - np.asarray(truth.components.means)[cols]).max(),
            np.abs(p.components.covariances[rows] - np.asarray(truth.components.covariances)[cols]).max(),
            np.abs(p.weights[rows] - np.asarray(truth.weights)[cols]).max(),
        )
        errors.append(err)
    assert errors[1] < errors[0] and errors[1] < 0.05, errors
