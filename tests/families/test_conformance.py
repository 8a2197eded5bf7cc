"""The family conformance suite: every case of ``tests/registry.py`` runs every check.

* ``family.log_prob`` (and the mixture's) against scipy.stats;
* statistics are additive over data;
* the M-step maximises the expected complete-data log-likelihood (plus the log
  prior): no random perturbation beats it, nor does BFGS over the family's
  unconstrained coordinates;
* batch EM never decreases its objective, with and without the family's prior,
  and the objective is the log-likelihood (plus the log prior) at the final parameters;
* sample weights equal repetition (the prior enters once, whatever the weights);
* float32 agrees with float64;
* chunking the E-step changes nothing.

Speed is compilation: a fit compiles in seconds on a CPU and runs 25 steps on
256 rows in milliseconds, and every fit of another configuration (model,
dtype, weights, chunks) is another compilation. So each case has one data set
(and its bootstrap resample, the rows repeated by their counts) and one initial
point, and one program per case (:func:`case_program`, compiled once and shared
by the checks) computes the initial point, the log densities at perturbed
parameters, the additive statistics, the ML fit to the data and three MAP fits:
to the resample in float64 and in float32, in one chunk, and to the data
weighted by the counts in ragged chunks (which must equal the first: weights are
repetition counts, chunks change nothing). The M-step check's objective, called by BFGS, is one
more program per case, for both the ML and the MAP model.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp

import emjax
from tests.conftest import assert_monotone, repeat_rows
from tests.registry import CASES

N = 256  # rows
CHUNK = 96  # two full chunks (the first, then a scan over the rest) and a ragged remainder of 64 rows
CUT = 101  # the additive statistics' split
MAX_ITER = 25
SEED = 11


# -- the compiled programs -----------------------------------------------------------------------


@eqx.filter_jit
def perturbed(model, params, step):
    """Valid parameters near ``params``: ``constrain(unconstrain(params) + step)``."""
    return model.constrain(jax.tree.map(lambda a, b: a + b.astype(a.dtype), model.unconstrain(params), step))


def rows(x, sl):
    return jax.tree.map(lambda a: a[sl], x)


def additive_statistics(family, x, resp, params, cut):
    """The statistics of all rows, and the sum of those of the rows before and after ``cut``
    (expressed about the whole's expansion point, where statistics carry one: each part
    may choose its own, and addition re-expresses the right operand about the left's)."""
    whole = family.statistics(x, resp, params)
    head = family.statistics(rows(x, slice(None, cut)), resp[:cut], params)
    tail = family.statistics(rows(x, slice(cut, None)), resp[cut:], params)
    return whole, emjax.add_stats(emjax.scale_stats(whole, 0.0), emjax.add_stats(head, tail))


def flat(tree):
    """The leaves of ``tree``, raveled and concatenated (in ``jax.tree.leaves`` order)."""
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(tree)])


def unflattener(shapes):
    """The inverse of :func:`flat` for trees with the structure and shapes of ``shapes``."""
    leaves, treedef = jax.tree.flatten(shapes)
    ends = np.cumsum([int(np.prod(a.shape)) for a in leaves])
    return lambda u: jax.tree.unflatten(treedef, [u[e - a.size:e].reshape(a.shape) for a, e in zip(leaves, ends)])


def q_value(model, stats, params):
    """``Q(params) = E[log p(x, z | params)] + log p(params)`` at the statistics ``stats``."""
    return model.expected_log_joint(stats, params) + model.log_prior(params)


def log_posterior(model, params, x):
    """The objective EM increases: the log-likelihood with each component's log
    density less the family's ``fit_penalty`` (a Gaussian's ``reg_covar``, at the
    scale ``fit`` measures), plus the log prior."""
    model = model.adapt(x)
    log_joint = model.log_joint(params, x) - model.family.fit_penalty(params.components)
    return jnp.sum(jax.scipy.special.logsumexp(log_joint, axis=1)) + model.log_prior(params)


def fit(model, x, p0, chunk_size, weights=None):
    return emjax.fit(model, x, key=jax.random.key(0), init=p0, weights=weights, max_iter=MAX_ITER, tol=0.0,
                     chunk_size=chunk_size)


@eqx.filter_jit
def case_program(ml, map_, key, x, x_repeated, counts, x32_repeated, noise, resp):
    """Everything one case's checks compare, as one program.

    ``p0``: the initial point (``init="random"``); ``perturbed``: parameters near
    it (``noise`` in the unconstrained coordinates) and ``log_probs``: the
    components' ``(N, K)`` and the mixture's ``(N,)`` log densities there;
    ``statistics``: the statistics of all rows under ``resp`` and the sum of
    those of the rows before and after ``CUT``. ``fits``: batch EM from ``p0``,
    ``MAX_ITER`` steps, ``tol=0``: ML on the data; MAP on the repeated rows in
    one chunk (in float64 and in float32), and on the data weighted by the
    repetition counts in chunks of ``CHUNK`` rows; ``objectives``: the
    log-likelihood (plus the log prior) at the ML and float64 MAP fits' parameters.
    """
    p0 = ml.init(key, x, "random")
    params = perturbed(ml, p0, noise)
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p0)
    fits = {
        "ML": fit(ml, x, p0, N),
        "MAP": fit(map_, x_repeated, p0, N),
        "MAP float32": fit(map_, x32_repeated, p32, N),
        "MAP weighted, chunked": fit(map_, x, p0, CHUNK, weights=counts),
    }
    return dict(
        p0=p0,
        perturbed=params,
        log_probs=(ml.family.log_prob(params.components, x), ml.log_prob(params, x)),
        statistics=additive_statistics(ml.family, x, resp, p0.components, CUT),
        fits=fits,
        objectives={"ML": log_posterior(ml, fits["ML"].params, x),
                    "MAP": log_posterior(map_, fits["MAP"].params, x_repeated)},
    )


class Setup:
    """One case's data, models and the results of its program (compiled on first use)."""

    def __init__(self, case):
        self.case = case
        self.x, _ = case.sample(N, SEED)
        self.models = {False: case.model(), True: case.model(prior=True)}
        self.xv = self.models[False].validate_data(self.x)
        # Bootstrap counts: they sum to N, so the repeated rows are N rows too.
        self.counts = np.bincount(np.random.default_rng(4).integers(0, N, size=N), minlength=N)

    @functools.cached_property
    def results(self):
        ml, map_ = self.models[False], self.models[True]
        key = jax.random.key(SEED)
        shapes = jax.eval_shape(ml.unconstrain, jax.eval_shape(lambda k: ml.init(k, self.xv, "random"), key))
        noise = jax.tree.map(lambda s: 0.5 * np.random.default_rng(1).normal(size=s.shape), shapes)
        resp = np.random.default_rng(2).dirichlet(np.ones(ml.n_components), size=N)
        repeated = repeat_rows(self.x, self.counts)
        x_repeated = ml.validate_data(repeated)
        x32_repeated = ml.validate_data(jax.tree.map(lambda a: np.asarray(a).astype(np.float32), repeated))
        weights = jnp.asarray(self.counts, jnp.float64)
        out = case_program(ml, map_, key, self.xv, x_repeated, weights, x32_repeated, noise, jnp.asarray(resp))
        return jax.tree.map(np.asarray, out)

    @property
    def p0(self):
        return self.results["p0"]

    @functools.cached_property
    def neg_q(self):
        """``neg_q(prior, u)``: -Q of the model with or without its prior at
        ``constrain(u)``, with (those parameters, the M-step's, their ``u``, Q at
        them), and the gradient. Q is at the statistics of the E-step at ``p0``;
        the E- and M-step are recomputed at every call (cheap at N = 256). One
        compiled program for both models: it evaluates both, the other at a
        fixed point."""
        p0, x = self.p0, self.xv
        shapes = jax.eval_shape(self.models[False].unconstrain, p0)
        unflat = unflattener(shapes)
        zero = np.zeros(sum(a.size for a in jax.tree.leaves(shapes)))

        def minus_q(model, u):
            stats, _ = model.e_step(p0, x)
            closed = model.m_step(stats, p0)
            params = model.constrain(unflat(u))
            return -q_value(model, stats, params), (params, closed, flat(model.unconstrain(closed)), q_value(model, stats, closed))

        @jax.jit
        def both(u_ml, u_map):
            return tuple(jax.value_and_grad(functools.partial(minus_q, self.models[prior]), has_aux=True)(u)
                         for prior, u in ((False, u_ml), (True, u_map)))

        return lambda prior, u: both(zero, u)[1] if prior else both(u, zero)[0]


@pytest.fixture(scope="module", params=list(CASES))
def setup(request):
    return Setup(CASES[request.param])


# -- the registry -------------------------------------------------------------------------------


def test_every_family_and_configuration_is_registered():
    """Every Family the library exports has a case (so it runs every check here), and
    so does each Gaussian covariance type and Binomial mode. Regression experts are
    conditional densities of (X, y) with no marginal law to sample or moments to
    give: tests/models/test_experts.py checks them."""
    families = emjax.families
    exported = {c for c in vars(families).values() if isinstance(c, type) and issubclass(c, families.Family)}
    experts = {c for c in exported if issubclass(c, families.Expert)}
    assert experts == {families.Expert, families.LinearExpert, families.LogisticExpert}
    registered = {type(case.family(prior)) for case in CASES.values() for prior in (False, True)}
    assert exported - experts - {families.Family} == registered
    gaussian = {case.family(False).covariance_type for case in CASES.values() if isinstance(case.family(False), emjax.Gaussian)}
    assert gaussian == set(emjax.families.COVARIANCE_TYPES)
    binomial = {case.family(False).n_trials is None for case in CASES.values() if isinstance(case.family(False), emjax.Binomial)}
    assert binomial == {False, True}
    for name, case in CASES.items():
        model = case.model(prior=True)
        assert model.family.prior is not None and model.weights_prior is not None, name


# -- densities and statistics ------------------------------------------------------------------


def test_log_prob_matches_scipy(setup):
    model, params = setup.models[False], setup.results["perturbed"]
    ref = setup.case.log_density(params.components, setup.x)
    got, mix = setup.results["log_probs"]
    assert got.shape == (N, model.n_components)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mix, logsumexp(ref + np.log(params.weights), axis=1), rtol=1e-12)


def test_statistics_are_additive(setup):
    whole, parts = setup.results["statistics"]
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(parts)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


# -- the M-step ---------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [False, True], ids=["ML", "MAP"])
def test_m_step_is_the_maximiser(setup, prior):
    """Q (the expected complete-data log posterior at the statistics of the E-step at
    ``p0``) is largest at the M-step's parameters: above Q at random perturbations
    of them, and BFGS over the unconstrained coordinates, from a perturbed point,
    finds no higher value, and the same parameters."""
    neg_q = functools.partial(setup.neg_q, prior)
    shapes = jax.eval_shape(setup.models[prior].unconstrain, setup.p0)
    (_, (_, closed, u_closed, q_closed)), _ = neg_q(np.zeros(sum(a.size for a in jax.tree.leaves(shapes))))
    q_closed, u_closed = float(q_closed), np.asarray(u_closed)
    (minus_q, _), _ = neg_q(u_closed)
    np.testing.assert_allclose(-float(minus_q), q_closed, rtol=1e-12)  # constrain(unconstrain(closed)) == closed

    rng = np.random.default_rng(3)
    for scale in (1e-4, 1e-3, 1e-2, 0.1, 0.3, 1.0):
        for _ in range(2):
            (minus_q, _), _ = neg_q(u_closed + scale * rng.normal(size=u_closed.shape))
            assert -float(minus_q) <= q_closed, (scale, -float(minus_q) - q_closed)

    size = abs(q_closed)  # BFGS on -Q / |Q|: a gradient tolerance that does not depend on N

    def fun(u):
        (value, _), grad = neg_q(u)
        return float(value) / size, np.asarray(grad, np.float64) / size

    opt = minimize(fun, u_closed + 0.3 * rng.normal(size=u_closed.shape), jac=True, method="BFGS",
                   options={"gtol": 1e-10, "maxiter": 5000})
    q_numeric = -opt.fun * size
    assert q_numeric <= q_closed + 1e-12 * size, (q_numeric, q_closed)
    assert q_numeric >= q_closed - 1e-8 * size, (q_numeric, q_closed, opt.message)  # BFGS got there
    (_, (numeric, *_)), _ = neg_q(opt.x)
    for a, b in zip(jax.tree.leaves(closed), jax.tree.leaves(numeric)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# -- fits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["ML", "MAP"])
def test_em_is_monotone(setup, variant):
    res = setup.results["fits"][variant]
    assert_monotone(res.trace)
    assert res.n_iter[0] == MAX_ITER
    assert res.trace[0, -1] - res.trace[0, 0] > 1.0  # real progress from the start
    # The objective is the log-likelihood (plus the log prior) at the final parameters.
    np.testing.assert_allclose(res.objective[0], setup.results["objectives"][variant], rtol=1e-12)


def test_weighted_chunked_fit_equals_the_one_pass_fit_to_repeated_rows(setup):
    """Sample weights are repetition counts and chunking the E-step changes nothing:
    the MAP fit to the data weighted by the counts, in chunks of ``CHUNK`` rows (two
    full chunks and a ragged remainder), equals the MAP fit to the rows repeated that
    often in one pass, from the same start: parameters 1e-10, trace and objective 1e-12
    (the tighter of the two properties' tolerances)."""
    fits = setup.results["fits"]
    assert setup.counts.sum() == N and setup.counts.max() > 1 and setup.counts.min() == 0
    assert N // CHUNK == 2 and N % CHUNK > 0
    # MAP: the prior must enter once, whatever the weights.
    weighted, repeated = fits["MAP weighted, chunked"], fits["MAP"]
    for a, b in zip(jax.tree.leaves(weighted.params), jax.tree.leaves(repeated.params)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weighted.trace, repeated.trace, rtol=1e-12)
    np.testing.assert_allclose(weighted.objective, repeated.objective, rtol=1e-12)


def test_float32_agrees_with_float64(setup):
    fits = setup.results["fits"]
    r32, r64 = fits["MAP float32"], fits["MAP"]
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves((r32.params, r32.objective, r32.trace)))
    ll32, ll64 = r32.objective[0].astype(np.float64) / N, r64.objective[0] / N
    assert abs(ll32 - ll64) <= 1e-4 * abs(ll64), (ll32, ll64)
    for a, b in zip(jax.tree.leaves(r32.params), jax.tree.leaves(r64.params)):
        np.testing.assert_allclose(a.astype(np.float64), b, rtol=1e-3, atol=1e-3)
