"""DiscreteBayesNet against independent NumPy references (float64): counting on complete
data, brute-force enumeration of the hidden configurations, NumPy EM steps, a planted
network recovered up to relabelling, and the Categorical mixture as a latent class model.

Few shapes and few fits: every new shape or algorithm compiles a program.
"""

import itertools

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import dirichlet

import emjax
from tests.conftest import assert_monotone

# -- NumPy references ----------------------------------------------------------------------


def shapes(cards, parents):
    return [tuple(cards[u] for u in parents.get(v, ()) + (v,)) for v in range(len(cards))]


def family(parents, v, full):
    """Index tuple of node ``v``'s family (parents, then ``v``) in the rows of ``full`` (M, V)."""
    return tuple(full[..., u] for u in parents.get(v, ()) + (v,))


def np_log_joint(cpts, parents, full):
    """``log p(full row)`` for complete rows (..., V)."""
    return sum(np.log(cpts[v][family(parents, v, full)]) for v in range(len(cpts)))


def np_counts(cards, parents, full, w):
    """Family counts of complete rows ``full`` (M, V) with weights ``w`` (M,)."""
    counts = [np.zeros(s) for s in shapes(cards, parents)]
    for v, c in enumerate(counts):
        np.add.at(c, family(parents, v, full), w)
    return counts


def np_normalize(counts, pc=0.0):
    out = []
    for c in counts:
        num = c + pc
        tot = num.sum(-1, keepdims=True)
        out.append(np.where(tot > 0, num / np.where(tot > 0, tot, 1), 1.0 / c.shape[-1]))
    return out


def np_completions(cards, hidden, x):
    """``(N, H, V)``: every row of ``x`` completed with every hidden configuration
    (itertools.product order: the last hidden node fastest)."""
    configs = np.array(list(itertools.product(*[range(cards[h]) for h in hidden])), dtype=int).reshape(-1, len(hidden))
    observed = [v for v in range(len(cards)) if v not in hidden]
    full = np.zeros((x.shape[0], configs.shape[0], len(cards)), dtype=int)
    full[:, :, observed] = x[:, None, :]
    full[:, :, list(hidden)] = configs[None, :, :]
    return full


def np_e_step(cards, parents, hidden, cpts, x):
    """Brute force: ``(log joint (N, H), loglik (N,), posterior (N, H), completions (N, H, V))``."""
    full = np_completions(cards, hidden, x)
    lj = np_log_joint([np.asarray(c) for c in cpts], parents, full)
    ll = logsumexp(lj, axis=1)
    return lj, ll, np.exp(lj - ll[:, None]), full


def np_em(cards, parents, hidden, cpts, x, w, pc, steps):
    """``steps`` EM steps in NumPy; the parameters and the objective at each."""
    cpts = [np.asarray(c) for c in cpts]
    trace = []
    for _ in range(steps):
        _, ll, post, full = np_e_step(cards, parents, hidden, cpts, x)
        trace.append(np.sum(w * ll) + np_log_prior(cpts, pc))
        counts = np_counts(cards, parents, full.reshape(-1, len(cards)), (post * w[:, None]).ravel())
        cpts = np_normalize(counts, pc)
    return cpts, trace


def np_log_prior(cpts, pc):
    """Every CPT row under SciPy's Dirichlet(pc + 1); 0 for pc = 0."""
    if pc == 0:
        return 0.0
    return sum(dirichlet.logpdf(row, np.full(row.shape, pc + 1.0)) for c in cpts for row in c.reshape(-1, c.shape[-1]))


def assert_cpts_close(a, b, **kw):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), **kw)


# -- networks ----------------------------------------------------------------------------

#: The planted network: hidden root 0 (3 states) with observed children 1, 2, 3, and 4
#: whose parents are the hidden root and the observed node 1.
CARDS = (3, 3, 2, 3, 2)
PARENTS = {1: (0,), 2: (0,), 3: (0,), 4: (0, 1)}
TRUE = [
    np.array([0.3, 0.45, 0.25]),
    np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.15, 0.15, 0.7]]),
    np.array([[0.85, 0.15], [0.2, 0.8], [0.5, 0.5]]),
    np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]),
    np.array([[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]],
              [[0.2, 0.8], [0.5, 0.5], [0.75, 0.25]],
              [[0.4, 0.6], [0.1, 0.9], [0.85, 0.15]]]),
]
N_PLANTED = 4000
N_SMALL = 500

#: Two hidden nodes in a chain below an observed root, and observed children of both:
#: hidden configurations (1, 2) in row-major order, families mixing hidden and observed nodes.
CARDS2 = (2, 2, 3, 3, 2)
PARENTS2 = {1: (0,), 2: (1,), 3: (1, 2), 4: (2, 0)}
HIDDEN2 = (1, 2)


@pytest.fixture(scope="module")
def planted():
    net = emjax.DiscreteBayesNet(CARDS, PARENTS, hidden=0)
    full = np.asarray(net.sample(jax.random.key(11), emjax.BayesNetParams(tuple(TRUE)), N_PLANTED))
    return net, full


@pytest.fixture(scope="module")
def planted_fits(planted):
    """Three restarts on the first N_SMALL rows and on all N_PLANTED rows: one program
    (the small fit weights the other rows 0, which leaves them out exactly)."""
    net, full = planted
    x = full[:, net.observed]
    fits = {}
    for n in (N_SMALL, N_PLANTED):
        w = (np.arange(N_PLANTED) < n).astype(float)
        fits[n] = emjax.fit(net, x, key=jax.random.key(5), weights=w, n_restarts=3, max_iter=1000, tol=1e-7)
    return fits


def relabelled_error(cpts):
    """Mean absolute error of the CPTs against TRUE under the best relabelling of the hidden root."""
    errors = []
    for perm in itertools.permutations(range(CARDS[0])):
        perm = list(perm)
        errors.append(np.mean(np.concatenate([np.abs(np.asarray(c)[perm] - t).ravel() for c, t in zip(cpts, TRUE)])))
    return min(errors)


# -- complete data: counting ----------------------------------------------------------------------------


def test_complete_data_fit_equals_counting_with_weights_and_pseudo_counts():
    cards, parents = (2, 3, 2, 3), {1: (0,), 2: (0, 1), 3: (2,)}
    net = emjax.DiscreteBayesNet(cards, parents)
    rng = np.random.default_rng(0)
    full = np.asarray(net.sample(jax.random.key(1), net.init(jax.random.key(2), np.zeros((1, 4)), "random"), 400))
    # Parent configuration (1, 2) of node 2 never occurs: its row must come out uniform.
    full = full[~((full[:, 0] == 1) & (full[:, 1] == 2))]
    w = rng.integers(0, 4, size=len(full)).astype(float)
    repeated = np.repeat(full, w.astype(int), axis=0)
    counted = np_counts(cards, parents, repeated, np.ones(len(repeated)))
    expected = np_normalize(counted)
    assert np.allclose(expected[2][1, 2], 0.5)

    res = emjax.fit(net, full, key=jax.random.key(0), weights=w, max_iter=3, tol=0.0)  # init="default"
    assert_cpts_close(res.params.cpts, expected, rtol=1e-12, atol=1e-14)
    # One M-step reaches the maximum: the objective is the log-likelihood of the counted tables, from then on.
    loglik = np.sum(np_log_joint(expected, parents, repeated))
    np.testing.assert_allclose(np.asarray(res.trace[0, 1:]), loglik, rtol=1e-12)

    # Pseudo-counts: the Dirichlet(pc + 1) posterior mode, and its log density (SciPy's).
    pc = 1.5
    prior_net = emjax.DiscreteBayesNet(cards, parents, pseudo_count=pc)

    @jax.jit
    def em_step(params, x, w):
        stats, ll = prior_net.e_step(params, x, w)
        return prior_net.m_step(stats), ll

    new, ll = em_step(res.params, prior_net.validate_data(full), w)
    np.testing.assert_allclose(float(ll), loglik, rtol=1e-12)
    assert_cpts_close(new.cpts, np_normalize(counted, pc), rtol=1e-12)
    np.testing.assert_allclose(float(prior_net.log_prior(new)), np_log_prior([np.asarray(c) for c in new.cpts], pc),
                               rtol=1e-12)
    assert net.n_parameters() == 1 + 2 * 2 + 6 * 1 + 2 * 2


# -- inference: brute-force enumeration ------------------------------------------------------------------


def test_e_step_and_predictions_equal_brute_force_enumeration():
    net = emjax.DiscreteBayesNet(CARDS2, PARENTS2, hidden=HIDDEN2)
    assert net.observed == (0, 3, 4) and net.n_hidden_states == 6
    np.testing.assert_array_equal(net.hidden_states, list(itertools.product(range(2), range(3))))
    params = net.init(jax.random.key(3), np.zeros((1, 3)), "random")
    full = np.asarray(net.sample(jax.random.key(4), params, 300))
    x = full[:, net.observed]
    w = np.random.default_rng(1).uniform(0, 2, size=len(x))
    lj, ll, post, completions = np_e_step(CARDS2, PARENTS2, HIDDEN2, params.cpts, x)
    flat = completions.reshape(-1, len(CARDS2))

    @jax.jit
    def e_steps(params, x, w, key):
        """The E-step's variants, compiled as one program."""
        soft = net.e_step(params, x, w)
        return (soft, net.expected_log_joint(soft[0], params), net.e_step(params, x, assignment="hard"),
                net.e_step(params, x, temperature=2.0), net.e_step(params, x, assignment="sample", key=key))

    soft, elj, hard, tempered, sampled = e_steps(params, net.validate_data(x), w, jax.random.key(0))
    stats, total = soft
    np.testing.assert_allclose(float(total), np.sum(w * ll), rtol=1e-12)
    assert_cpts_close(stats.counts, np_counts(CARDS2, PARENTS2, flat, (post * w[:, None]).ravel()), rtol=1e-10,
                      atol=1e-12)
    np.testing.assert_allclose(float(elj), np.sum(w[:, None] * post * lj), rtol=1e-12)
    np.testing.assert_allclose(net.log_prob(params, x), ll, rtol=1e-12)
    np.testing.assert_allclose(net.posterior(params, x), post, rtol=1e-10, atol=1e-14)
    marginals = net.hidden_marginals(params, x)
    np.testing.assert_allclose(marginals[0], post.reshape(-1, 2, 3).sum(2), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(marginals[1], post.reshape(-1, 2, 3).sum(1), rtol=1e-10, atol=1e-14)
    np.testing.assert_array_equal(net.predict(params, x), completions[np.arange(len(x)), lj.argmax(1)][:, HIDDEN2])

    # Hard assignments: each row wholly in its best configuration; the classification log-likelihood.
    stats, total = hard
    np.testing.assert_allclose(float(total), lj.max(1).sum(), rtol=1e-12)
    best = completions[np.arange(len(x)), lj.argmax(1)]
    assert_cpts_close(stats.counts, np_counts(CARDS2, PARENTS2, best, np.ones(len(x))), atol=1e-12)
    # Tempered posterior softmax(lj / T); the log-likelihood stays untempered.
    stats, total = tempered
    soft = np.exp(lj / 2 - logsumexp(lj / 2, axis=1, keepdims=True))
    np.testing.assert_allclose(float(total), ll.sum(), rtol=1e-12)
    assert_cpts_close(stats.counts, np_counts(CARDS2, PARENTS2, flat, soft.ravel()), rtol=1e-10, atol=1e-12)
    # Sampled assignments: whole configurations, one per row, each of positive posterior.
    for c in sampled[0].counts:
        np.testing.assert_allclose(np.sum(c), len(x))
        np.testing.assert_allclose(c, np.round(c))
    # Gradient ascent's coordinates map back onto the tables.
    assert_cpts_close(net.constrain(net.unconstrain(params)).cpts, params.cpts, rtol=1e-12)


# -- EM: planted recovery, monotone objective, drivers and sources ------------------------------------------------


def test_planted_network_is_recovered_up_to_relabelling(planted_fits):
    errors = {}
    for n, res in planted_fits.items():
        assert res.restart_params.cpts[0].shape == (3, 3)
        assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS), res.status
        assert int(res.best) == int(np.argmax(res.objective))
        assert_monotone(res.trace)
        errors[n] = relabelled_error(res.params.cpts)
    assert errors[N_PLANTED] < 0.06, errors
    assert errors[N_PLANTED] < 0.6 * errors[N_SMALL], errors


def test_incremental_em_with_two_hidden_nodes_and_pseudo_counts_is_monotone():
    pc = 0.5
    net = emjax.DiscreteBayesNet(CARDS2, PARENTS2, hidden=HIDDEN2, pseudo_count=pc)
    x = np.asarray(net.sample(jax.random.key(8), net.init(jax.random.key(7), np.zeros((1, 3)), "random"), 500))
    x = x[:, net.observed]
    res = emjax.fit(net, x, key=jax.random.key(9), algorithm=emjax.IncrementalEM(n_blocks=4), max_iter=30, tol=0.0)
    assert_monotone(res.trace)
    assert float(res.trace[0, -1]) > float(res.trace[0, 0]) + 1.0
    # Its objective, the free energy of blocks last visited at different parameters, is a
    # lower bound on the log-likelihood plus the Dirichlet log prior (NumPy, SciPy), tight near a fixed point.
    cpts = [np.asarray(c) for c in res.params.cpts]
    _, ll, _, _ = np_e_step(CARDS2, PARENTS2, HIDDEN2, cpts, x)
    exact = ll.sum() + np_log_prior(cpts, pc)
    assert exact - 1e-5 * abs(exact) < float(res.objective[0]) <= exact + 1e-9 * abs(exact)


def test_latent_class_network_over_a_stream_equals_the_categorical_mixture():
    k, d, s = 3, 4, 3
    net = emjax.DiscreteBayesNet((k,) + (s,) * d, {v: (0,) for v in range(1, d + 1)}, hidden=0)
    x = np.asarray(net.sample(jax.random.key(1), net.init(jax.random.key(2), np.zeros((1, d)), "random"), 800))[:, 1:]
    p0 = net.init(jax.random.key(3), x, "random")
    mixture = emjax.Mixture(emjax.Categorical(s), k)
    m0 = emjax.MixtureParams(p0.cpts[0], emjax.CategoricalParams(jax.numpy.stack(p0.cpts[1:], axis=1)))
    kw = dict(key=jax.random.key(0), max_iter=25, tol=0.0)
    a = emjax.fit(net, emjax.Stream(x, chunk_size=400), init=p0, **kw)
    b = emjax.fit(mixture, x, init=m0, **kw)
    # The same EM map computed two ways: equal to rounding (the 1e-6 asked for, and far below it).
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-12)
    np.testing.assert_allclose(a.params.cpts[0], b.params.weights, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.stack(a.params.cpts[1:], axis=1), b.params.components.probs, rtol=1e-10, atol=1e-12)
    assert float(a.trace[0, -1]) > float(a.trace[0, 0]) + 1.0  # the fit moved
    assert_monotone(a.trace)


# -- errors ----------------------------------------------------------------------------------------------


def test_structure_errors_are_clear():
    with pytest.raises(ValueError, match=r"cycle, 0 -> 1 -> 2 -> 0"):
        emjax.DiscreteBayesNet((2, 2, 2), {1: (0,), 2: (1,), 0: (2,)})
    with pytest.raises(ValueError, match="node 1 lists itself"):
        emjax.DiscreteBayesNet((2, 2), {1: (0, 1)})
    with pytest.raises(ValueError, match=r"node 5, but the network has nodes 0..2"):
        emjax.DiscreteBayesNet((2, 2, 2), {1: (5,)})
    with pytest.raises(ValueError, match=r"cardinalities\[1\] must be at least 1"):
        emjax.DiscreteBayesNet((2, 0))
    with pytest.raises(TypeError, match="hidden"):
        emjax.DiscreteBayesNet((2, 2), hidden="0")
    with pytest.raises(ValueError, match="every node"):
        emjax.DiscreteBayesNet((2, 2), hidden=(0, 1))
    with pytest.raises(ValueError, match=r"have 8000 joint configurations, more than max_hidden_states=4096"):
        emjax.DiscreteBayesNet((20, 20, 20, 2), {3: (0, 1, 2)}, hidden=(0, 1, 2))
    assert emjax.DiscreteBayesNet((20, 20, 20, 2), {3: (0, 1, 2)}, hidden=(0, 1, 2), max_hidden_states=8000)


def test_data_and_parameter_errors_at_fit_and_at_prediction(planted):
    net, full = planted
    x = full[:50, net.observed].copy()
    params = emjax.BayesNetParams(tuple(TRUE))
    bad = x.copy()
    bad[7, 3] = 2  # node 4 has two states
    for call in (lambda d: emjax.fit(net, d, key=jax.random.key(0)), lambda d: net.log_prob(params, d)):
        with pytest.raises(ValueError, match=r"column 3 is node 4, whose codes are 0..1 .* the first is 2 at row 7"):
            call(bad)
        with pytest.raises(ValueError, match=r"x has 5 columns but the network observes 4 nodes \(1, 2, 3, 4\)"):
            call(full[:50])
        with pytest.raises(ValueError, match="non-integer"):
            call(x + 0.5)
        with pytest.raises(ValueError, match="2-D"):
            call(x[:, 0])
    unnormalised = emjax.BayesNetParams((TRUE[0] * 2,) + tuple(TRUE[1:]))
    with pytest.raises(ValueError, match="node 0 must sum to 1"):
        emjax.fit(net, x, key=jax.random.key(0), init=unnormalised)
    with pytest.raises(ValueError, match=r"node 4 must have shape \(3, 3, 2\)"):
        net.log_prob(emjax.BayesNetParams(tuple(TRUE[:4]) + (TRUE[4][0],)), x)
