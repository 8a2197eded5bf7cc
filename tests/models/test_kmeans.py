"""k-means as a model: scikit-learn's Lloyd from the same centres, restarts, weights,
prediction, vector quantisation, float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

import emjax
from tests.conftest import make_blobs

K = 4
X, _ = make_blobs(3, n=500, d=3, k=K, sep=2.0)
C0 = X[[0, 1, 2, 3]]  # four points of whatever clusters come first: Lloyd has work to do


def _emjax(x=X, centres=C0, tol=1e-4, **kw):
    model = emjax.KMeans(K)
    res = emjax.fit(model, x, key=jax.random.key(0), init=emjax.KMeansParams(jnp.asarray(centres)), tol=tol,
                    max_iter=300, **kw)
    return model, res


@pytest.mark.parametrize("tol", [1e-4, 0.0])
def test_equals_scikit_learn_lloyd_from_the_same_centres(tol):
    sk = SKKMeans(K, init=C0, n_init=1, algorithm="lloyd", tol=tol, max_iter=300).fit(X)
    model, res = _emjax(tol=tol)
    np.testing.assert_allclose(res.params.centers, sk.cluster_centers_, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(model.predict(res.params, X), sk.labels_)
    np.testing.assert_allclose(-float(res.objective[0]), sk.inertia_, rtol=1e-12)
    assert int(res.n_iter[0]) == sk.n_iter_
    assert res.status[0] == emjax.RESULTS.SUCCESS
    assert_monotone_inertia(res)


def assert_monotone_inertia(res):
    trace = np.asarray(res.trace[0][: int(res.n_iter[0]) + 1])
    assert np.all(np.diff(trace) >= -1e-9 * np.abs(trace[1:]))


def test_restarts_keep_the_lowest_inertia_and_match_scikit_learn_best_of_n():
    model = emjax.KMeans(K)
    res = emjax.fit(model, X, key=jax.random.key(1), n_restarts=8, init="k-means++", tol=1e-6, max_iter=300)
    objective = np.asarray(res.objective)
    assert int(res.best) == int(np.argmax(objective))
    np.testing.assert_allclose(-objective[int(res.best)], float(model.inertia(res.params, X)), rtol=1e-12)
    sk = SKKMeans(K, n_init=8, algorithm="lloyd", tol=1e-6, random_state=0).fit(X)
    assert -objective.max() <= sk.inertia_ * (1 + 1e-9)


def test_sample_weights_are_repetitions():
    counts = np.arange(len(X)) % 3 + 1
    model = emjax.KMeans(K)
    kw = dict(key=jax.random.key(0), init=emjax.KMeansParams(jnp.asarray(C0)), tol=1e-4, max_iter=300)
    weighted = emjax.fit(model, X, weights=counts, **kw)
    repeated = emjax.fit(model, np.repeat(X, counts, axis=0), **kw)
    np.testing.assert_allclose(weighted.params.centers, repeated.params.centers, rtol=1e-10)
    np.testing.assert_allclose(weighted.objective, repeated.objective, rtol=1e-10)
    assert int(weighted.n_iter[0]) == int(repeated.n_iter[0])
    sk = SKKMeans(K, init=C0, n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(X, sample_weight=counts)
    np.testing.assert_allclose(weighted.params.centers, sk.cluster_centers_, atol=1e-10)


def test_prediction_distances_and_vector_quantisation():
    model, res = _emjax()
    c = np.asarray(res.params.centers)
    dist = np.sqrt(((X[:, None, :] - c[None]) ** 2).sum(-1))
    np.testing.assert_allclose(model.transform(res.params, X), dist, rtol=1e-10, atol=1e-12)
    codes = model.encode(res.params, X)
    np.testing.assert_array_equal(codes, dist.argmin(1))
    np.testing.assert_array_equal(model.decode(res.params, codes), c[dist.argmin(1)])
    np.testing.assert_allclose(float(model.inertia(res.params, X)), (dist.min(1) ** 2).sum(), rtol=1e-12)


def test_greedy_kmeans_plus_plus_seeds_distinct_rows_and_beats_plain_seeding():
    x = jnp.asarray(X)
    model = emjax.KMeans(K)
    greedy, plain = [], []
    for s in range(20):
        c = model.init(jax.random.key(s), x, "k-means++").centers
        rows = [int(np.flatnonzero((X == np.asarray(ci)).all(1))[0]) for ci in c]
        assert len(set(rows)) == K
        greedy.append(float(model.inertia(emjax.KMeansParams(c), X)))
        plain.append(float(model.inertia(emjax.KMeansParams(emjax.kmeans_plus_plus(jax.random.key(s), x, K)), X)))
    assert np.mean(greedy) < np.mean(plain)


def test_float32_agrees_with_float64_far_from_the_origin():
    # The same float32-representable data (1e4 away, unit spread) in both precisions.
    x32, c32 = (X + 1e4).astype(np.float32), (C0 + 1e4).astype(np.float32)
    model, r64 = _emjax(x=x32.astype(np.float64), centres=c32.astype(np.float64), tol=0.0)
    _, r32 = _emjax(x=x32, centres=c32, tol=0.0)
    assert r32.params.centers.dtype == jnp.float32
    np.testing.assert_array_equal(model.predict(r32.params, x32), model.predict(r64.params, x32.astype(np.float64)))
    np.testing.assert_allclose(r32.params.centers, r64.params.centers, rtol=0, atol=2e-3)
    np.testing.assert_allclose(float(r32.objective[0]), float(r64.objective[0]), rtol=1e-4)


def test_hard_em_on_kmeans_is_batch_em_and_other_assignments_are_refused():
    model, res = _emjax()
    hard = emjax.fit(model, X, key=jax.random.key(0), init=emjax.KMeansParams(jnp.asarray(C0)), tol=1e-4,
                     max_iter=300, algorithm=emjax.HardEM())
    np.testing.assert_array_equal(hard.params.centers, res.params.centers)
    with pytest.raises(TypeError, match="assignment='sample'"):
        emjax.fit(model, X, key=jax.random.key(0), algorithm=emjax.SAEM())
    with pytest.raises(ValueError, match="nearest centre"):
        model.e_step(res.params, jnp.asarray(X), assignment="sample")


def test_bad_input_is_refused():
    model = emjax.KMeans(K)
    with pytest.raises(ValueError, match="centers must have shape"):
        emjax.fit(model, X, key=jax.random.key(0), init=emjax.KMeansParams(jnp.zeros((K + 1, 3))))
    with pytest.raises(ValueError):
        emjax.fit(model, X[:3], key=jax.random.key(0))
    with pytest.raises(ValueError, match="method must be"):
        model.init(jax.random.key(0), X, "kmeans||")
    with pytest.raises(ValueError):
        emjax.KMeans(0)


def test_stepwise_em_on_kmeans_is_macqueen_online_kmeans():
    # batch_size=1, kappa=1, rows in order: each update moves the assigned centre to
    # the running mean of its points, the initial pass counting as a pseudo-point
    # of weight 1/N (its statistics start the running average).
    x = X[:200]
    model = emjax.KMeans(K)
    p0 = emjax.KMeansParams(jnp.asarray(C0))
    algo = emjax.StepwiseEM(batch_size=1, kappa=1.0, shuffle=False)
    res = emjax.fit(model, x, key=jax.random.key(0), init=p0, algorithm=algo, max_iter=1, tol=0.0)
    n = len(x)
    labels0 = ((x[:, None] - C0[None]) ** 2).sum(-1).argmin(1)
    sums = np.stack([x[labels0 == k].sum(0) for k in range(K)]) / n
    counts = np.bincount(labels0, minlength=K) / n
    centres = C0.copy()
    for row in x:
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1e-300)[:, None], centres)
        j = ((row - centres) ** 2).sum(-1).argmin()
        sums[j] += row
        counts[j] += 1
    # The fit's parameters are those of the last update's M-step (before its row).
    np.testing.assert_allclose(res.params.centers, centres, rtol=1e-10)


def test_mini_batch_kmeans_gets_within_two_percent_of_lloyd_in_fewer_passes():
    x, _ = emjax.datasets.gaussian_mixture_sample(0, 20000, 4, 8, 2.0)
    model = emjax.KMeans(8)
    p0 = model.init(jax.random.key(0), jnp.asarray(x), "random")
    lloyd = emjax.fit(model, x, key=jax.random.key(1), init=p0, tol=1e-4, max_iter=300)
    mini = emjax.fit(model, x, key=jax.random.key(1), init=p0, max_iter=3, tol=0.0,
                     algorithm=emjax.StepwiseEM(batch_size=500, kappa=0.7))
    assert -float(mini.objective[0]) <= 1.02 * -float(lloyd.objective[0])
    assert float(mini.n_passes[0]) < float(lloyd.n_passes[0])


# -- k-medoids ---------------------------------------------------------------------------------


def _brute_force_medoids(x, k, d):
    import itertools

    dist = np.array([[d(a, b) for b in x] for a in x])
    return min((dist[:, list(c)].min(1).sum(), c) for c in itertools.combinations(range(len(x)), k))


@pytest.mark.parametrize("method", ["alternate", "pam"])
def test_kmedoids_reaches_the_brute_force_optimum_with_any_dissimilarity(method):
    x = np.asarray(X[:14, :2])
    manhattan = lambda a, b: jnp.sum(jnp.abs(a - b))  # noqa: E731
    best, _ = _brute_force_medoids(x, 3, lambda a, b: np.abs(a - b).sum())
    model = emjax.KMedoids(3, dissimilarity=manhattan, method=method)
    res = emjax.fit(model, x, key=jax.random.key(0), n_restarts=8, init="random", max_iter=50, tol=0.0,
                    stopping=emjax.ParameterChange())
    trace = np.asarray(res.trace)
    assert np.all(np.diff(trace, axis=1) >= -1e-12)  # the cost never rises
    np.testing.assert_allclose(-float(res.objective[res.best]), best, rtol=1e-12)
    chosen = np.asarray(res.params.medoids)
    dist = np.abs(x[:, None] - x[None]).sum(-1)
    np.testing.assert_allclose(dist[:, chosen].min(1).sum(), best, rtol=1e-12)  # an optimal set (ties exist)
    np.testing.assert_array_equal(np.asarray(res.params.points), x[chosen])
    np.testing.assert_allclose(float(model.cost(res.params, x)), best, rtol=1e-12)
    labels = model.predict(res.params, x)
    np.testing.assert_array_equal(labels, np.abs(x[:, None] - np.asarray(res.params.points)[None]).sum(-1).argmin(1))
    if method == "pam":
        assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)


def test_kmedoids_refuses_bad_settings():
    with pytest.raises(ValueError, match="dissimilarity must be"):
        emjax.KMedoids(3, dissimilarity="cosine-ish")
    with pytest.raises(ValueError, match="method must be"):
        emjax.KMedoids(3, method="clara")
    with pytest.raises(ValueError, match="distinct row indices"):
        emjax.fit(emjax.KMedoids(2), X[:10], key=jax.random.key(0),
                  init=emjax.KMedoidsParams(jnp.array([1, 1], jnp.int32), jnp.asarray(X[[1, 1]])))


def test_kmedoids_seeding_never_repeats_a_row_even_when_all_points_coincide():
    model = emjax.KMedoids(3)
    for s in range(10):
        medoids = np.asarray(model.init(jax.random.key(s), jnp.zeros((4, 2)), "k-medoids++").medoids)
        assert len(set(medoids.tolist())) == 3, medoids


def test_weighted_greedy_kmeans_plus_plus_is_the_repeated_rows_seeding():
    """Integer weights draw the centres of the rows repeated (inverse CDF on the same
    uniforms), a weight-0 row is never a centre, and the draws follow the weights."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2))
    w = rng.integers(0, 4, 40)
    repeated = np.repeat(x, w, axis=0)
    for seed in range(5):
        key = jax.random.key(seed)
        a = emjax.greedy_kmeans_plus_plus(key, x, 4, weights=w)
        b = emjax.greedy_kmeans_plus_plus(key, repeated, 4, weights=np.ones(len(repeated)))
        np.testing.assert_array_equal(a, b)
        zero = {tuple(r) for r in x[w == 0]}
        assert not zero & {tuple(r) for r in np.asarray(a)}
    # The first centre is drawn in proportion to the weights (a chi-square test over 2000 draws).
    pts = np.arange(4.0)[:, None]
    firsts = jax.vmap(lambda k: emjax.greedy_kmeans_plus_plus(k, pts, 1, weights=np.array([1.0, 2, 3, 4]))[0, 0])(
        jax.random.split(jax.random.key(9), 2000))
    counts = np.bincount(np.asarray(firsts).astype(int), minlength=4)
    import scipy.stats as st
    assert st.chisquare(counts, 2000 * np.array([0.1, 0.2, 0.3, 0.4])).pvalue > 1e-3
