"""One table of bad inputs through every public entry point.

Each row calls emjax with one bad argument and names the exception expected and
a pattern its message must match (the argument or the problem). Every row also
checks that the error is emjax's own, raised before anything is compiled: the
exception is not a JAX error class, its message carries no JAX internals, the
frame that raised it is in the emjax package, no frame of the traceback is
inside JAX's tracing machinery (with JAX's traceback filtering off, so such
frames would show), and the compiled fit and host loop are never reached.

Rows with ``before="accepted"`` were silent acceptances before issue 10 (items
7-9): non-finite hyperparameters, bad labels and responsibilities, dates,
objects and numeric strings as data, a string flag that is truthy. Rows with
``before="internal"`` were refused only by JAX, NumPy or Python internals:
priors of the wrong size (a broadcasting error while tracing), a huge
``max_iter`` (an overflow while tracing), a ``.csv`` path read as ``.npy``
(NumPy's pickle message), strings as hyperparameters (a ufunc error).

The command line (:func:`emjax.cli.main`) returns its exit code rather than
exiting; its rows turn a non-zero code into ``SystemExit`` and match the
message against what was printed on stderr.
"""

from __future__ import annotations

import os
import re
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.sparse

import emjax
import emjax._runner
from emjax.cli import main as cli_main

KEY = jax.random.key(0)
RNG = np.random.default_rng(0)
#: The one data set of the table: N = 20 points, D = 2.
X = RNG.normal(size=(20, 2))
COUNTS = RNG.poisson(3.0, size=(20, 2)).astype(float)
CODES = RNG.integers(0, 3, size=(20, 3))
BINARY = (RNG.random((20, 3)) < 0.5).astype(float)

GAUSS = emjax.Mixture(emjax.Gaussian("full"), 2)
CAT = emjax.Mixture(emjax.Categorical(3), 2)
#: Valid parameters built by hand: predictions fail on the data, not on a fit.
PARAMS = emjax.MixtureParams(
    jnp.array([0.4, 0.6]),
    emjax.GaussianParams(jnp.array([[-1.0, 0.0], [1.0, 0.5]]), jnp.stack([jnp.eye(2), 2 * jnp.eye(2)])),
)
CAT_PARAMS = emjax.MixtureParams(
    jnp.array([0.5, 0.5]), emjax.CategoricalParams(jnp.array([[[0.2, 0.3, 0.5]] * 3, [[0.6, 0.3, 0.1]] * 3]))
)

#: Patterns that betray JAX or NumPy internals in a message meant for the user.
INTERNALS = re.compile(
    r"jax\._src|jaxlib|XlaRuntimeError|TracerBoolConversion|ConcretizationTypeError|UnexpectedTracer|"
    r"Traceback|broadcast|incompatible shapes|ufunc|inhomogeneous|pickle"
)
EMJAX_DIR = os.path.dirname(os.path.abspath(emjax.__file__)) + os.sep
TRACING_FRAMES = (os.sep.join(("jax", "_src", "interpreters")), os.sep.join(("jax", "_src", "pjit")))

#: Files for the rows that read paths, made once per module by the ``files`` fixture.
FILES: dict[str, object] = {}


class Case(NamedTuple):
    id: str
    call: Callable[[], object]
    error: type
    match: str
    #: How the input fared before issue 10's validation: "accepted" (silently, or to fail
    #: later inside the fit), "internal" (refused only by a JAX, NumPy or Python internal
    #: error that did not name the argument), "" (refused clearly already).
    before: str = ""


def case(id, call, error, match, before=""):
    return pytest.param(Case(id, call, error, match, before), id=id)


def fit(x=X, model=GAUSS, **kwargs):
    kwargs.setdefault("key", KEY)
    return emjax.fit(model, x, **kwargs)


def cli(*args):
    """The command line in-process; a non-zero exit code becomes ``SystemExit``."""
    code = cli_main([str(FILES.get(a, a)) for a in args])
    if code != 0:
        raise SystemExit(code)
    return code


def niw(m0=(0.0, 0.0), kappa0=0.1, nu0=4.0, S0=None):
    """A 2-D NormalInverseWishart with one hyperparameter changed."""
    return emjax.NormalInverseWishart(m0, kappa0, nu0, np.eye(2) if S0 is None else S0)


class NoPosterior:
    """A user model with only the two required kernels."""

    def e_step(self, params, x, weights=None):
        return jnp.sum(x, axis=0), jnp.zeros(())

    def m_step(self, stats, params):
        return stats


def gauss_params(**changes):
    comps = PARAMS.components
    weights = changes.pop("weights", PARAMS.weights)
    return emjax.MixtureParams(weights, emjax.GaussianParams(changes.get("means", comps.means),
                                                             changes.get("covariances", comps.covariances)))


FIT = [
    # -- x ----------------------------------------------------------------------------
    case("fit-x-none", lambda: fit(None), TypeError, r"x must be an array; got None"),
    case("fit-x-scalar", lambda: fit(3.0), ValueError, r"x must be a 2-D array"),
    case("fit-x-1d", lambda: fit(X[:, 0]), ValueError, r"x must be a 2-D array.*reshape"),
    case("fit-x-3d", lambda: fit(X[:, :, None]), ValueError, r"x must be a 2-D array"),
    case("fit-x-no-rows", lambda: fit(np.zeros((0, 2))), ValueError, r"x must have at least one row"),
    case("fit-x-no-columns", lambda: fit(np.zeros((20, 0))), ValueError, r"at least one row and one column"),
    case("fit-x-nan", lambda: fit(np.where(np.arange(40).reshape(20, 2) == 7, np.nan, X)), ValueError,
         r"x contains 1 NaN or infinite value\(s\).*row 3, column 1"),
    case("fit-x-inf", lambda: fit(np.vstack([X, [[np.inf, 0.0]]])), ValueError, r"NaN or infinite.*row 20"),
    case("fit-x-complex", lambda: fit(X + 1j), TypeError, r"x must be real; got complex"),
    case("fit-x-strings", lambda: fit(X.astype(str)), TypeError, r"x must be numeric.*strings", before="accepted"),
    case("fit-x-object", lambda: fit(X.astype(object)), TypeError, r"x must be numeric; got dtype object", before="accepted"),
    case("fit-x-mixed-list", lambda: fit([[1.0, "a"], [2.0, 3.0]] * 10), TypeError, r"x must be numeric"),
    case("fit-x-datetime", lambda: fit(np.arange(40).astype("datetime64[s]").reshape(20, 2)), TypeError,
         r"x must be numeric.*datetime64.*dates", before="accepted"),
    case("fit-x-timedelta", lambda: fit(np.arange(40).astype("timedelta64[s]").reshape(20, 2)), TypeError,
         r"x must be numeric.*timedelta64"),
    case("fit-x-structured", lambda: fit(np.zeros((20, 2), dtype=[("a", "f8")])), TypeError, r"x must be numeric"),
    case("fit-x-ragged", lambda: fit([[1.0, 2.0], [3.0]]), ValueError, r"x is not a rectangular array", before="internal"),
    case("fit-x-dict", lambda: fit({"a": X}), TypeError, r"x must be numeric"),
    case("fit-x-sparse", lambda: fit(scipy.sparse.csr_matrix(X)), TypeError, r"x is a sparse matrix.*toarray"),
    case("fit-x-fewer-rows-than-k", lambda: fit(X[:1]), ValueError, r"n_components=2 is larger than.*N=1"),
    # -- model --------------------------------------------------------------------------
    case("fit-model-string", lambda: fit(model="gmm"), TypeError, r"e_step.*m_step"),
    case("fit-model-none", lambda: fit(model=None), TypeError, r"e_step.*m_step"),
    case("fit-model-family", lambda: fit(model=emjax.Gaussian()), TypeError, r"e_step.*m_step"),
    # -- key ----------------------------------------------------------------------------
    case("fit-key-none", lambda: fit(key=None), TypeError, r"explicit PRNG key"),
    case("fit-key-int", lambda: fit(key=0), TypeError, r"key must be a PRNG key"),
    case("fit-key-string", lambda: fit(key="0"), TypeError, r"key must be a PRNG key"),
    case("fit-key-batch", lambda: fit(key=jax.random.split(KEY, 2)), ValueError, r"key must be a single PRNG key"),
    case("fit-key-raw-batch", lambda: fit(key=jax.random.split(jax.random.PRNGKey(0), 2)), TypeError,
         r"key must be a PRNG key"),
    case("fit-key-float", lambda: fit(key=np.zeros(2, np.float32)), TypeError, r"key must be a PRNG key"),
    # -- algorithm ------------------------------------------------------------------------
    case("fit-algorithm-string", lambda: fit(algorithm="em"), TypeError, r"algorithm must be an emjax Algorithm"),
    case("fit-algorithm-class", lambda: fit(algorithm=emjax.BatchEM), TypeError, r"algorithm must be"),
    case("fit-algorithm-blocks", lambda: fit(algorithm=emjax.IncrementalEM(50)), ValueError,
         r"n_blocks \(50\) exceeds the number of rows \(20\)"),
    case("fit-algorithm-batch", lambda: fit(algorithm=emjax.StepwiseEM(batch_size=50)), ValueError,
         r"batch_size \(50\) exceeds"),
    case("fit-algorithm-gradient-batch", lambda: fit(algorithm=emjax.GradientAscent(optax.adam(0.1), batch_size=21)),
         ValueError, r"batch_size \(21\) exceeds"),
    case("fit-algorithm-shuffled-function-stream",
         lambda: fit(lambda: iter([X[:10], X[10:]]), algorithm=emjax.StepwiseEM(batch_size=5)), ValueError,
         r"shuffle=False"),
    # -- n_restarts -----------------------------------------------------------------------
    case("fit-restarts-zero", lambda: fit(n_restarts=0), ValueError, r"n_restarts must be a positive integer"),
    case("fit-restarts-negative", lambda: fit(n_restarts=-2), ValueError, r"n_restarts"),
    case("fit-restarts-float", lambda: fit(n_restarts=2.0), ValueError, r"n_restarts"),
    case("fit-restarts-string", lambda: fit(n_restarts="2"), ValueError, r"n_restarts"),
    case("fit-restarts-bool", lambda: fit(n_restarts=True), ValueError, r"n_restarts"),
    case("fit-restarts-explicit-params", lambda: fit(init=PARAMS, n_restarts=2), ValueError,
         r"explicit initial parameters make every restart identical"),
    # -- init ---------------------------------------------------------------------------
    case("fit-init-unknown", lambda: fit(init="kmedoids"), ValueError, r"unknown init method 'kmedoids'"),
    case("fit-init-empty-string", lambda: fit(init=""), ValueError, r"unknown init method ''"),
    case("fit-init-none", lambda: fit(init=None), TypeError, r"init must be a method name", before="internal"),
    case("fit-init-int", lambda: fit(init=5), TypeError, r"initial parameters.*MixtureParams"),
    case("fit-init-wrong-k", lambda: fit(init=emjax.MixtureParams(jnp.ones(3) / 3, PARAMS.components)), ValueError,
         r"initial parameters.*weights must have shape \(2,\)"),
    case("fit-init-weights-sum", lambda: fit(init=gauss_params(weights=jnp.array([0.5, 0.6]))), ValueError,
         r"initial parameters.*sum to 1"),
    case("fit-init-nan-means", lambda: fit(init=gauss_params(means=jnp.array([[np.nan, 0.0], [1.0, 0.0]]))),
         ValueError, r"initial parameters.*means contain NaN"),
    case("fit-init-wrong-width", lambda: fit(np.hstack([X, X]), init=PARAMS), ValueError,
         r"initial parameters.*means must have shape \(2, 4\)"),
    case("fit-init-not-pd", lambda: fit(init=gauss_params(covariances=jnp.stack([jnp.eye(2), -jnp.eye(2)]))),
         ValueError, r"initial parameters.*covariances\[1\] is not positive definite"),
    # -- max_iter -----------------------------------------------------------------------
    case("fit-max-iter-negative", lambda: fit(max_iter=-1), ValueError, r"max_iter must be an integer >= 0"),
    case("fit-max-iter-huge", lambda: fit(max_iter=10**12), ValueError, r"max_iter must be at most 2147483646", before="internal"),
    case("fit-max-iter-float", lambda: fit(max_iter=2.5), ValueError, r"max_iter"),
    case("fit-max-iter-string", lambda: fit(max_iter="10"), ValueError, r"max_iter"),
    case("fit-max-iter-none", lambda: fit(max_iter=None), ValueError, r"max_iter"),
    case("fit-max-iter-bool", lambda: fit(max_iter=True), ValueError, r"max_iter"),
    # -- tol ----------------------------------------------------------------------------
    case("fit-tol-none", lambda: fit(tol=None), TypeError, r"tol must be a number; got None"),
    case("fit-tol-string", lambda: fit(tol="1e-3"), TypeError, r"tol must be a number; got '1e-3'"),
    case("fit-tol-negative", lambda: fit(tol=-1.0), ValueError, r"tol must be a finite number >= 0"),
    case("fit-tol-nan", lambda: fit(tol=float("nan")), ValueError, r"tol must be a finite number"),
    case("fit-tol-inf", lambda: fit(tol=np.inf), ValueError, r"tol must be a finite number"),
    case("fit-tol-bool", lambda: fit(tol=True), TypeError, r"tol must be a number"),
    case("fit-tol-list", lambda: fit(tol=[1e-3]), TypeError, r"tol must be a number"),
    case("fit-tol-complex", lambda: fit(tol=1e-3j), TypeError, r"tol must be a number"),
    # -- stopping -----------------------------------------------------------------------
    case("fit-stopping-string", lambda: fit(stopping="abs"), TypeError, r"stopping must be an emjax StoppingRule"),
    case("fit-stopping-class", lambda: fit(stopping=emjax.RelativeChange), TypeError, r"stopping must be"),
    case("fit-stopping-needs-posterior", lambda: fit(model=NoPosterior(), stopping=emjax.ResponsibilityChange()),
         TypeError, r"ResponsibilityChange.*posterior"),
    # -- weights ------------------------------------------------------------------------
    case("fit-weights-negative", lambda: fit(weights=-np.ones(20)), ValueError, r"weights must be non-negative"),
    case("fit-weights-short", lambda: fit(weights=np.ones(19)), ValueError, r"weights must have shape \(20,\)"),
    case("fit-weights-2d", lambda: fit(weights=np.ones((20, 1))), ValueError, r"weights must have shape \(20,\)"),
    case("fit-weights-nan", lambda: fit(weights=np.r_[np.nan, np.ones(19)]), ValueError, r"weights contains NaN"),
    case("fit-weights-inf", lambda: fit(weights=np.r_[np.inf, np.ones(19)]), ValueError, r"weights contains NaN or inf"),
    case("fit-weights-zero", lambda: fit(weights=np.zeros(20)), ValueError, r"weights are all zero"),
    case("fit-weights-strings", lambda: fit(weights=np.full(20, "1")), TypeError, r"weights must be numeric"),
    case("fit-weights-complex", lambda: fit(weights=np.ones(20) + 0j), TypeError, r"weights must be numeric"),
    case("fit-weights-object", lambda: fit(weights=np.ones(20).astype(object)), TypeError, r"weights must be numeric"),
    case("fit-weights-with-stream", lambda: fit(emjax.Stream(X), weights=np.ones(20)), ValueError,
         r"x is a Stream: set its weights"),
    case("fit-weights-user-model", lambda: fit(model=type("M", (), {"e_step": lambda s, p, x: (x, 0.0),
                                                                   "m_step": lambda s, st, p: p})(),
                                               weights=np.ones(20), init=jnp.zeros(2)), TypeError,
         r"sample weights were given.*e_step takes no weights"),
    # -- chunk_size ---------------------------------------------------------------------
    case("fit-chunk-size-zero", lambda: fit(chunk_size=0), ValueError, r"chunk_size must be a positive integer"),
    case("fit-chunk-size-negative", lambda: fit(chunk_size=-5), ValueError, r"chunk_size"),
    case("fit-chunk-size-float", lambda: fit(chunk_size=2.5), ValueError, r"chunk_size"),
    case("fit-chunk-size-string", lambda: fit(chunk_size="8"), ValueError, r"chunk_size"),
    case("fit-chunk-size-with-stream", lambda: fit(emjax.Stream(X), chunk_size=8), ValueError,
         r"set its weights and chunk_size on the Stream"),
    # -- adjoint, print_every, flags ------------------------------------------------------
    case("fit-adjoint-string", lambda: fit(adjoint="forward"), TypeError, r"adjoint must be an emjax Adjoint"),
    case("fit-adjoint-class", lambda: fit(adjoint=emjax.ForwardAdjoint), TypeError, r"adjoint must be"),
    case("implicit-solver", lambda: emjax.ImplicitAdjoint(solver="cg"), ValueError, r"solver must be 'gmres' or"),
    case("implicit-rtol", lambda: emjax.ImplicitAdjoint(rtol=0.0), ValueError, r"rtol must be a number in \(0, 1\)"),
    case("implicit-max-steps", lambda: emjax.ImplicitAdjoint(max_steps=0), ValueError, r"max_steps must be an integer"),
    case("checkpoint-levels", lambda: emjax.RecursiveCheckpointAdjoint(levels=0), ValueError, r"levels must be"),
    case("fit-print-every-zero", lambda: fit(print_every=0), ValueError, r"print_every must be a positive integer"),
    case("fit-print-every-float", lambda: fit(print_every=1.5), ValueError, r"print_every"),
    case("fit-reinit-string", lambda: fit(reinit_collapsed="no"), TypeError, r"reinit_collapsed must be True or False", before="accepted"),
    case("fit-reinit-none", lambda: fit(reinit_collapsed=None), TypeError, r"reinit_collapsed must be True or False", before="accepted"),
    case("fit-reinit-user-model", lambda: fit(model=NoPosterior(), reinit_collapsed=True), TypeError,
         r"reinit_collapsed needs model.collapsed"),
    case("fit-verbose-string", lambda: fit(verbose="yes"), TypeError, r"verbose must be True or False", before="accepted"),
    case("fit-throw-string", lambda: fit(throw="no"), TypeError, r"throw must be True or False", before="accepted"),
]

PRIORS_AT_FIT = [
    # Item 7: priors checked against the data's width (and K) before compiling.
    case("fit-niw-dimension", lambda: fit(model=emjax.Mixture(emjax.Gaussian(prior=emjax.NormalInverseWishart(
        np.zeros(3), 0.1, 5.0, np.eye(3))), 2)), ValueError,
         r"NormalInverseWishart\) describes 3 features, but x has 2 features", before="internal"),
    case("fit-niw-dimension-diag", lambda: fit(model=emjax.Mixture(emjax.Gaussian("diag", prior=emjax.NormalInverseWishart(
        np.zeros(1), 0.1, 5.0, np.eye(1))), 2)), ValueError, r"describes 1 features, but x has 2", before="internal"),
    case("fit-niw-dimension-explicit-init", lambda: fit(model=emjax.Mixture(emjax.Gaussian(
        prior=emjax.NormalInverseWishart(np.zeros(3), 0.1, 5.0, np.eye(3))), 2), init=PARAMS), ValueError,
         r"describes 3 features, but x has 2", before="internal"),
    case("fit-beta-length-bernoulli", lambda: fit(BINARY, model=emjax.Mixture(emjax.Bernoulli(
        prior=emjax.BetaPrior(np.full(2, 2.0), 2.0)), 2)), ValueError, r"BetaPrior has 2 per-feature.*D=3"),
    case("fit-beta-length-binomial", lambda: fit(COUNTS, model=emjax.Mixture(emjax.Binomial(
        10, prior=emjax.BetaPrior(np.full(3, 2.0), 2.0)), 2)), ValueError,
         r"BetaPrior\) describes 3 features, but x has 2", before="internal"),
    case("fit-gamma-length-poisson", lambda: fit(COUNTS, model=emjax.Mixture(emjax.Poisson(
        prior=emjax.GammaPrior(np.full(3, 2.0), 1.0)), 2)), ValueError,
         r"GammaPrior\) describes 3 features, but x has 2", before="internal"),
    case("fit-categorical-alpha-rows", lambda: fit(CODES, model=emjax.Mixture(emjax.Categorical(
        3, prior=np.full((4, 3), 2.0)), 2)), ValueError, r"Dirichlet alpha has shape \(4, 3\) but x has D=3 features"),
    case("fit-multinomial-alpha-length", lambda: fit(COUNTS, model=emjax.Mixture(emjax.Multinomial(
        prior=emjax.Dirichlet(np.full(3, 2.0))), 2)), ValueError, r"Dirichlet alpha has 3 entries but the data have 2"),
    case("fit-categorical-codes", lambda: fit(CODES + 1, model=CAT), ValueError,
         r"codes in 0\.\.2.*out of range, the first is 3"),
    case("fit-bernoulli-values", lambda: fit(BINARY * 2, model=emjax.Mixture(emjax.Bernoulli(), 2)), ValueError,
         r"Bernoulli data must be binary"),
    case("fit-poisson-negative", lambda: fit(-COUNTS - 1, model=emjax.Mixture(emjax.Poisson(), 2)), ValueError,
         r"non-negative counts"),
    case("fit-binomial-above-trials", lambda: fit(COUNTS + 20, model=emjax.Mixture(emjax.Binomial(5), 2)),
         ValueError, r"success counts in 0\.\.n_trials=5"),
]

STREAMS = [
    case("fit-chunks-csv", lambda: emjax.fit_chunks(GAUSS, FILES["csv"], key=KEY), ValueError,
         r"is not a \.npy file.*np\.loadtxt", before="internal"),
    case("fit-csv-path", lambda: fit(FILES["csv"]), ValueError, r"only NumPy's \.npy format", before="internal"),
    case("fit-chunks-txt", lambda: emjax.fit_chunks(GAUSS, FILES["txt"], key=KEY), ValueError,
         r"not a \.npy file", before="internal"),
    case("fit-chunks-directory", lambda: emjax.fit_chunks(GAUSS, FILES["dir"], key=KEY), ValueError,
         r"is a directory"),
    case("fit-chunks-missing", lambda: emjax.fit_chunks(GAUSS, FILES["dir"] + "/nope.npy", key=KEY),
         FileNotFoundError, r"no such data file"),
    case("fit-chunks-npz", lambda: emjax.fit_chunks(GAUSS, FILES["npz"], key=KEY), TypeError,
         r"not a single \.npy array"),
    case("fit-chunks-strings-npy", lambda: emjax.fit_chunks(GAUSS, FILES["strings"], key=KEY), TypeError,
         r"chunk 0.*x must be numeric"),
    case("fit-chunks-chunk-size", lambda: emjax.fit_chunks(GAUSS, X, key=KEY, chunk_size=0), ValueError,
         r"chunk_size must be a positive integer"),
    case("fit-chunks-init-size", lambda: emjax.fit_chunks(GAUSS, X, key=KEY, init_size=0), ValueError,
         r"init_size must be a positive integer"),
    case("fit-chunks-bad-width", lambda: emjax.fit_chunks(GAUSS, [X[:10], np.hstack([X[10:], X[10:]])], key=KEY),
         ValueError, r"chunk 1 .*has shape \(rows, 4\), but the data have shape \(rows, 2\)"),
    case("fit-chunks-nan-chunk", lambda: emjax.fit_chunks(GAUSS, [X[:10], np.full((10, 2), np.nan)], key=KEY),
         ValueError, r"chunk 1 \(starting at row 10.*NaN"),
    case("fit-chunks-1d-chunk", lambda: emjax.fit_chunks(GAUSS, [X[:10], X[10:, 0]], key=KEY), ValueError,
         r"chunk 1.*2-D"),
    case("fit-chunks-weights-negative", lambda: emjax.fit_chunks(GAUSS, X, key=KEY, weights=-np.ones(20)),
         ValueError, r"weights chunk 0.*non-negative"),
    case("fit-chunks-weights-length", lambda: emjax.fit_chunks(GAUSS, X, key=KEY, weights=np.ones(7)), ValueError,
         r"the weights have 7 rows but the data have 20"),
    case("fit-chunks-source-int", lambda: emjax.fit_chunks(GAUSS, 5, key=KEY), TypeError,
         r"data source must be an \(N, D\) array"),
    case("fit-chunks-init-unknown", lambda: emjax.fit_chunks(GAUSS, [X], key=KEY, init="kmedoids"), ValueError,
         r"unknown init method 'kmedoids'"),
    case("fit-chunks-max-iter", lambda: emjax.fit_chunks(GAUSS, [X], key=KEY, max_iter=-3), ValueError, r"max_iter"),
    case("stream-csv", lambda: emjax.Stream(FILES["csv"]), ValueError, r"not a \.npy file", before="internal"),
    case("stream-source-int", lambda: emjax.Stream(5), TypeError, r"data source must be"),
    case("stream-iterator", lambda: emjax.Stream(iter([X])), TypeError, r"can be read only once"),
    case("stream-of-stream", lambda: emjax.Stream(emjax.Stream(X)), TypeError, r"source is already a Stream"),
    case("stream-init-size", lambda: emjax.Stream(X, init_size=0), ValueError, r"init_size"),
    case("stream-chunk-size", lambda: emjax.Stream(X, chunk_size=-1), ValueError, r"chunk_size"),
    case("stream-chunk-size-zero", lambda: emjax.Stream([X], chunk_size=0), ValueError, r"chunk_size"),
    case("stream-0d", lambda: emjax.Stream(np.array(3.0)), ValueError, r"0-d array"),
    case("stream-chunk-not-array", lambda: fit(emjax.Stream([X, "rows"])), TypeError, r"chunk 1 is a str"),
    case("score-chunks-width", lambda: emjax.score_chunks(GAUSS, PARAMS, [np.zeros((3, 3))]), ValueError,
         r"chunk 0.*x has 3 features but the mixture's components have 2", before="internal"),
    case("score-chunks-nan", lambda: emjax.score_chunks(GAUSS, PARAMS, [X, np.full((2, 2), np.nan)]), ValueError,
         r"chunk 1.*NaN"),
    case("score-chunks-source", lambda: emjax.score_chunks(GAUSS, PARAMS, 5), TypeError, r"data source must be"),
    case("score-chunks-chunk-size-list", lambda: emjax.score_chunks(GAUSS, PARAMS, [X], chunk_size=5), ValueError,
         r"chunk_size applies to array and \.npy sources"),
    case("score-chunks-csv", lambda: emjax.score_chunks(GAUSS, PARAMS, FILES["csv"]), ValueError, r"not a \.npy file", before="internal"),
    case("score-chunks-fit-result", lambda: emjax.score_chunks(GAUSS, FILES["result"], [X]), TypeError,
         r"this is a FitResult: pass result\.params", before="internal"),
    case("predict-chunks-width", lambda: emjax.predict_chunks(GAUSS, PARAMS, [np.zeros((3, 3))]), ValueError,
         r"chunk 0.*x has 3 features"),
    case("predict-chunks-codes", lambda: emjax.predict_chunks(CAT, CAT_PARAMS, [CODES, CODES + 5]), ValueError,
         r"chunk 1.*codes in 0\.\.2.*out of range, the first is \d+ at row 0"),
    case("predict-chunks-ragged", lambda: emjax.predict_chunks(GAUSS, PARAMS, [X, X[:, :1]]), ValueError,
         r"chunk 1 .*x has 1 features|chunk 1 .*shape"),
    case("predict-chunks-chunk-size", lambda: emjax.predict_chunks(GAUSS, PARAMS, X, chunk_size=0), ValueError,
         r"chunk_size"),
]

FAMILIES = [
    case("gaussian-covariance-unknown", lambda: emjax.Gaussian("banana"), ValueError, r"covariance_type must be one of"),
    case("gaussian-covariance-int", lambda: emjax.Gaussian(5), ValueError, r"covariance_type"),
    case("gaussian-covariance-none", lambda: emjax.Gaussian(None), ValueError, r"covariance_type"),
    case("gaussian-reg-negative", lambda: emjax.Gaussian(reg_covar=-1e-6), ValueError, r"reg_covar must be"),
    case("gaussian-reg-nan", lambda: emjax.Gaussian(reg_covar=np.nan), ValueError, r"reg_covar must be a finite"),
    case("gaussian-reg-string", lambda: emjax.Gaussian(reg_covar="1e-6"), TypeError, r"reg_covar must be a real number", before="internal"),
    case("gaussian-reg-scale-string", lambda: emjax.Gaussian(reg_scale="big"), TypeError, r"reg_scale must be a number"),
    case("gaussian-reg-scale-negative", lambda: emjax.Gaussian(reg_scale=-1.0), ValueError, r"reg_scale must be None, a positive"),
    case("fit-reg-scale-width", lambda: fit(model=emjax.Mixture(emjax.Gaussian(reg_scale=[1.0, 2.0, 3.0]), 2)),
         ValueError, r"reg_scale has 3 entries but x has 2 features"),
    case("gaussian-collapse-nan", lambda: emjax.Gaussian(collapse_tol=np.nan), ValueError,
         r"collapse_tol must be a finite number >= 0", before="accepted"),
    case("gaussian-collapse-negative", lambda: emjax.Gaussian(collapse_tol=-1e-5), ValueError, r"collapse_tol", before="accepted"),
    case("gaussian-collapse-inf", lambda: emjax.Gaussian(collapse_tol=np.inf), ValueError, r"collapse_tol", before="accepted"),
    case("gaussian-collapse-string", lambda: emjax.Gaussian(collapse_tol="small"), TypeError,
         r"collapse_tol must be a real number", before="internal"),
    case("gaussian-prior-dirichlet", lambda: emjax.Gaussian(prior=emjax.Dirichlet(2.0)), TypeError,
         r"prior must be a NormalInverseWishart or None"),
    case("gaussian-prior-string", lambda: emjax.Gaussian(prior="fraley_raftery"), TypeError, r"prior must be"),
    case("bernoulli-prior-number", lambda: emjax.Bernoulli(prior=2.0), TypeError, r"prior must be a BetaPrior"),
    case("bernoulli-eps-zero", lambda: emjax.Bernoulli(eps=0.0), ValueError, r"eps must be a number in \(0, 0\.5\)"),
    case("bernoulli-eps-large", lambda: emjax.Bernoulli(eps=0.7), ValueError, r"eps must be"),
    case("bernoulli-eps-string", lambda: emjax.Bernoulli(eps="tiny"), TypeError, r"eps must be a real number", before="internal"),
    case("bernoulli-eps-nan", lambda: emjax.Bernoulli(eps=np.nan), ValueError, r"eps must be a finite number"),
    case("categorical-one-category", lambda: emjax.Categorical(1), ValueError, r"n_categories must be an integer >= 2"),
    case("categorical-string", lambda: emjax.Categorical("3"), ValueError, r"n_categories"),
    case("categorical-float", lambda: emjax.Categorical(2.5), ValueError, r"n_categories"),
    case("categorical-bool", lambda: emjax.Categorical(True), ValueError, r"n_categories"),
    case("categorical-prior-small", lambda: emjax.Categorical(3, prior=0.5), ValueError, r"prior.*>= 1"),
    case("categorical-prior-string", lambda: emjax.Categorical(3, prior="flat"), TypeError,
         r"prior must be a Dirichlet.*Dirichlet alpha must be a number"),
    case("categorical-prior-shape", lambda: emjax.Categorical(3, prior=np.full(4, 2.0)), ValueError,
         r"Dirichlet alpha of a Categorical with S=3 categories"),
    case("categorical-eps", lambda: emjax.Categorical(3, eps=-1.0), ValueError, r"eps must be"),
    case("multinomial-prior-beta", lambda: emjax.Multinomial(prior=emjax.BetaPrior(2.0, 2.0)), TypeError,
         r"prior must be an emjax\.Dirichlet"),
    case("multinomial-prior-2d", lambda: emjax.Multinomial(prior=emjax.Dirichlet(np.full((2, 2), 2.0))), ValueError,
         r"Dirichlet alpha must be a scalar or \(D,\)"),
    case("multinomial-draws-zero", lambda: emjax.Multinomial(n_draws=0), ValueError, r"n_draws must be a positive int"),
    case("multinomial-draws-string", lambda: emjax.Multinomial(n_draws="5"), ValueError, r"n_draws"),
    case("binomial-trials-zero", lambda: emjax.Binomial(0), ValueError, r"n_trials must be a positive int"),
    case("binomial-trials-float", lambda: emjax.Binomial(2.5), TypeError, r"n_trials"),
    case("binomial-trials-bool", lambda: emjax.Binomial(True), TypeError, r"n_trials"),
    case("binomial-trials-string", lambda: emjax.Binomial("5"), TypeError, r"n_trials"),
    case("binomial-prior-dirichlet", lambda: emjax.Binomial(5, prior=emjax.Dirichlet(2.0)), TypeError,
         r"prior must be a BetaPrior"),
    case("poisson-prior-number", lambda: emjax.Poisson(prior=2.0), TypeError, r"prior must be a GammaPrior"),
    case("poisson-prior-beta", lambda: emjax.Poisson(prior=emjax.BetaPrior(2.0, 2.0)), TypeError, r"GammaPrior"),
]

PRIORS = [
    case("niw-m0-nan", lambda: niw(m0=(np.nan, 0.0)), ValueError, r"m0 must be finite", before="accepted"),
    case("niw-m0-inf", lambda: niw(m0=(np.inf, 0.0)), ValueError, r"m0 must be finite", before="accepted"),
    case("niw-m0-2d", lambda: niw(m0=np.zeros((2, 1))), ValueError, r"m0 must have shape \(D,\)"),
    case("niw-m0-string", lambda: niw(m0="origin"), TypeError, r"m0 must be a number or an array", before="internal"),
    case("niw-m0-empty", lambda: emjax.NormalInverseWishart(np.zeros(0), 0.1, 1.0, np.eye(0)), ValueError,
         r"m0 must not be empty", before="accepted"),
    case("niw-kappa-negative", lambda: niw(kappa0=-1.0), ValueError, r"kappa0 must be a finite number >= 0"),
    case("niw-kappa-inf", lambda: niw(kappa0=np.inf), ValueError, r"kappa0 must be a finite", before="accepted"),
    case("niw-kappa-string", lambda: niw(kappa0="0.1"), TypeError, r"kappa0 must be a real number", before="internal"),
    case("niw-kappa-array", lambda: niw(kappa0=[1.0, 2.0]), TypeError, r"kappa0 must be a real number", before="internal"),
    case("niw-nu-small", lambda: niw(nu0=0.5), ValueError, r"nu0 must be > D - 1 = 1"),
    case("niw-nu-inf", lambda: niw(nu0=np.inf), ValueError, r"nu0 must be a finite number", before="accepted"),
    case("niw-nu-nan", lambda: niw(nu0=np.nan), ValueError, r"nu0 must be a finite number"),
    case("niw-s0-inf", lambda: niw(S0=np.diag([np.inf, 1.0])), ValueError, r"S0 must be finite", before="accepted"),
    case("niw-s0-nan", lambda: niw(S0=np.full((2, 2), np.nan)), ValueError, r"S0 must be finite"),
    case("niw-s0-shape", lambda: niw(S0=np.eye(3)), ValueError, r"S0 must have shape \(2, 2\) to match m0"),
    case("niw-s0-asymmetric", lambda: niw(S0=np.array([[1.0, 5.0], [0.0, 1.0]])), ValueError,
         r"S0 must be symmetric positive definite.*not symmetric", before="accepted"),
    case("niw-s0-indefinite", lambda: niw(S0=np.diag([1.0, -1.0])), ValueError, r"S0.*not positive definite"),
    case("fraley-raftery-nan", lambda: emjax.NormalInverseWishart.fraley_raftery(np.full((5, 2), np.nan), 2),
         ValueError, r"x contains 10 NaN"),
    case("fraley-raftery-1d", lambda: emjax.NormalInverseWishart.fraley_raftery(X[:, 0], 2), ValueError,
         r"x must be a 2-D array"),
    case("fraley-raftery-k-zero", lambda: emjax.NormalInverseWishart.fraley_raftery(X, 0), ValueError,
         r"n_components must be at least 1"),
    case("fraley-raftery-k-float", lambda: emjax.NormalInverseWishart.fraley_raftery(X, 2.0), TypeError,
         r"n_components must be an int"),
    case("fraley-raftery-kappa", lambda: emjax.NormalInverseWishart.fraley_raftery(X, 2, kappa0=-1.0), ValueError,
         r"kappa0 must be a finite number >= 0"),
    case("fraley-raftery-strings", lambda: emjax.NormalInverseWishart.fraley_raftery(X.astype(str), 2), TypeError,
         r"x must be numeric"),
    case("dirichlet-zero", lambda: emjax.Dirichlet(0.0), ValueError, r"Dirichlet alpha must be finite and > 0"),
    case("dirichlet-sparse-multinomial", lambda: emjax.Multinomial(prior=emjax.Dirichlet(0.5)), ValueError,
         r"Multinomial's Dirichlet prior needs alpha >= 1"),
    case("dirichlet-sparse-categorical", lambda: emjax.Categorical(3, prior=0.5), ValueError,
         r"Categorical's Dirichlet prior needs alpha >= 1"),
    case("dirichlet-negative", lambda: emjax.Dirichlet([2.0, -1.0]), ValueError, r"Dirichlet alpha"),
    case("dirichlet-nan", lambda: emjax.Dirichlet(np.nan), ValueError, r"Dirichlet alpha must be finite"),
    case("dirichlet-inf", lambda: emjax.Dirichlet(np.inf), ValueError, r"Dirichlet alpha must be finite"),
    case("dirichlet-string", lambda: emjax.Dirichlet("flat"), TypeError, r"Dirichlet alpha must be a number", before="internal"),
    case("dirichlet-none", lambda: emjax.Dirichlet(None), TypeError, r"Dirichlet alpha must be a number"),
    case("dirichlet-empty", lambda: emjax.Dirichlet([]), ValueError, r"Dirichlet alpha must not be empty", before="accepted"),
    case("dirichlet-complex", lambda: emjax.Dirichlet(2 + 1j), TypeError, r"Dirichlet alpha must be real", before="internal"),
    case("beta-a-small", lambda: emjax.BetaPrior(0.5, 2.0), ValueError, r"BetaPrior a must be finite and >= 1"),
    case("beta-b-nan", lambda: emjax.BetaPrior(2.0, np.nan), ValueError, r"BetaPrior b must be finite"),
    case("beta-a-string", lambda: emjax.BetaPrior("a", 2.0), TypeError, r"BetaPrior a must be a number", before="internal"),
    case("beta-b-none", lambda: emjax.BetaPrior(2.0, None), TypeError, r"BetaPrior b must be a number"),
    case("beta-a-2d", lambda: emjax.BetaPrior(np.full((2, 2), 2.0), 2.0), ValueError,
         r"BetaPrior a must be a scalar or a \(D,\) array"),
    case("beta-lengths", lambda: emjax.BetaPrior(np.full(2, 2.0), np.full(3, 2.0)), ValueError,
         r"BetaPrior a and b must have the same length"),
    case("gamma-shape-small", lambda: emjax.GammaPrior(0.5, 1.0), ValueError, r"Gamma shape a must be finite and >= 1"),
    case("gamma-rate-zero", lambda: emjax.GammaPrior(2.0, 0.0), ValueError, r"Gamma rate b must be finite and > 0"),
    case("gamma-rate-inf", lambda: emjax.GammaPrior(2.0, np.inf), ValueError, r"Gamma rate"),
    case("gamma-shape-string", lambda: emjax.GammaPrior("2", 1.0), TypeError, r"GammaPrior shape must be a number", before="internal"),
    case("gamma-2d", lambda: emjax.GammaPrior(np.full((2, 2), 2.0), 1.0), ValueError,
         r"Gamma shape and rate must be scalars or \(D,\)"),
    case("gamma-lengths", lambda: emjax.GammaPrior(np.full(3, 2.0), np.ones(2)), ValueError,
         r"GammaPrior shape and rate must have the same length", before="accepted"),
]

MIXTURE = [
    case("mixture-family-string", lambda: emjax.Mixture("gaussian", 2), TypeError, r"family must be an emjax Family"),
    case("mixture-family-class", lambda: emjax.Mixture(emjax.Gaussian, 2), TypeError, r"family must be"),
    case("mixture-k-zero", lambda: emjax.Mixture(emjax.Gaussian(), 0), ValueError, r"n_components must be at least 1"),
    case("mixture-k-negative", lambda: emjax.Mixture(emjax.Gaussian(), -3), ValueError, r"n_components"),
    case("mixture-k-float", lambda: emjax.Mixture(emjax.Gaussian(), 2.0), TypeError, r"n_components must be an int"),
    case("mixture-k-string", lambda: emjax.Mixture(emjax.Gaussian(), "2"), TypeError, r"n_components"),
    case("mixture-k-bool", lambda: emjax.Mixture(emjax.Gaussian(), True), TypeError, r"n_components"),
    case("mixture-weights-prior-number", lambda: emjax.Mixture(emjax.Gaussian(), 2, weights_prior=2.0), TypeError,
         r"weights_prior must be a Dirichlet"),
    case("mixture-weights-prior-length", lambda: emjax.Mixture(emjax.Gaussian(), 2,
                                                                weights_prior=emjax.Dirichlet(np.full(3, 2.0))),
         ValueError, r"weights prior's alpha must be a scalar or have one entry per component \(n_components=2\)", before="internal"),
    case("mixture-weights-prior-2d", lambda: emjax.Mixture(emjax.Gaussian(), 2,
                                                            weights_prior=emjax.Dirichlet(np.full((2, 2), 2.0))),
         ValueError, r"weights prior's alpha.*shape \(2, 2\)", before="internal"),
    case("mixture-gating-prior-length", lambda: emjax.Mixture(emjax.Gaussian(), 2,
                                                               gating=emjax.ConstantGating(emjax.Dirichlet([2.0] * 4))),
         ValueError, r"n_components=2", before="internal"),
    case("mixture-gating-string", lambda: emjax.Mixture(emjax.Gaussian(), 2, gating="constant"), TypeError,
         r"gating must be an emjax Gating"),
    case("mixture-gating-and-prior", lambda: emjax.Mixture(emjax.Gaussian(), 2, gating=emjax.ConstantGating(),
                                                            weights_prior=emjax.Dirichlet(2.0)), ValueError,
         r"give either gating= or weights_prior="),
    case("mixture-frozen-unknown", lambda: emjax.Mixture(emjax.Gaussian(), 2, frozen="precisions"), ValueError,
         r"cannot freeze \['precisions'\]"),
    case("mixture-frozen-int", lambda: emjax.Mixture(emjax.Gaussian(), 2, frozen=5), TypeError,
         r"frozen must be a group name", before="internal"),
    case("mixture-collapse-count-negative", lambda: emjax.Mixture(emjax.Gaussian(), 2, collapse_count=-1.0),
         ValueError, r"collapse_count must be a finite number >= 0"),
    case("mixture-collapse-count-nan", lambda: emjax.Mixture(emjax.Gaussian(), 2, collapse_count=np.nan),
         ValueError, r"collapse_count"),
    case("mixture-collapse-count-string", lambda: emjax.Mixture(emjax.Gaussian(), 2, collapse_count="5"), TypeError,
         r"collapse_count must be a real number", before="internal"),
]

PREDICTION = [
    case("log-prob-width", lambda: GAUSS.log_prob(PARAMS, np.zeros((3, 3))), ValueError,
         r"x has 3 features but the mixture's components have 2"),
    case("log-prob-1d", lambda: GAUSS.log_prob(PARAMS, X[:, 0]), ValueError, r"x must be a 2-D array"),
    case("log-prob-3d", lambda: GAUSS.log_prob(PARAMS, X[:, :, None]), ValueError, r"x must be a 2-D array"),
    case("log-prob-nan", lambda: GAUSS.log_prob(PARAMS, np.array([[0.0, np.nan]])), ValueError,
         r"NaN or infinite.*row 0, column 1"),
    case("log-prob-strings", lambda: GAUSS.log_prob(PARAMS, X.astype(str)), TypeError, r"x must be numeric"),
    case("log-prob-complex", lambda: GAUSS.log_prob(PARAMS, X + 0j), TypeError, r"x must be real"),
    case("log-prob-object", lambda: GAUSS.log_prob(PARAMS, X.astype(object)), TypeError, r"x must be numeric", before="accepted"),
    case("log-prob-fit-result", lambda: GAUSS.log_prob(FILES["result"], X), TypeError,
         r"params must be a MixtureParams \(this is a FitResult: pass result\.params\)", before="internal"),
    case("log-prob-params-none", lambda: GAUSS.log_prob(None, X), TypeError, r"params must be a MixtureParams", before="internal"),
    case("log-prob-restart-params", lambda: GAUSS.log_prob(jax.tree.map(lambda a: jnp.stack([a, a, a]), PARAMS), X),
         ValueError, r"params must describe n_components=2.*result\.params", before="internal"),
    case("log-prob-wrong-k", lambda: emjax.Mixture(emjax.Gaussian(), 3).log_prob(PARAMS, X), ValueError,
         r"n_components=3", before="accepted"),
    case("posterior-width", lambda: GAUSS.posterior(PARAMS, np.zeros((3, 1))), ValueError, r"x has 1 features"),
    case("posterior-datetime", lambda: GAUSS.posterior(PARAMS, np.zeros((3, 2), "datetime64[D]")), TypeError,
         r"x must be numeric.*dates", before="accepted"),
    case("predict-rank", lambda: GAUSS.predict(PARAMS, np.zeros(2)), ValueError, r"x must be a 2-D array"),
    case("predict-sparse", lambda: GAUSS.predict(PARAMS, scipy.sparse.csr_matrix(X)), TypeError, r"sparse"),
    case("predict-empty", lambda: GAUSS.predict(PARAMS, np.zeros((0, 2))), ValueError, r"at least one row"),
    case("score-weights-shape", lambda: GAUSS.score(PARAMS, X, weights=np.ones(3)), ValueError,
         r"weights must have shape \(20,\)"),
    case("score-weights-negative", lambda: GAUSS.score(PARAMS, X, weights=-np.ones(20)), ValueError,
         r"weights must be non-negative"),
    case("score-width", lambda: GAUSS.score(PARAMS, np.zeros((4, 5))), ValueError, r"x has 5 features"),
    case("bic-width", lambda: GAUSS.bic(PARAMS, np.zeros((4, 3))), ValueError, r"x has 3 features"),
    case("bic-nan", lambda: GAUSS.bic(PARAMS, np.full((4, 2), np.nan)), ValueError, r"NaN"),
    case("aic-rank", lambda: GAUSS.aic(PARAMS, np.zeros((2, 2, 2))), ValueError, r"x must be a 2-D array"),
    case("aic-fit-result", lambda: GAUSS.aic(FILES["result"], X), TypeError, r"pass result\.params", before="internal"),
    case("categorical-log-prob-code", lambda: CAT.log_prob(CAT_PARAMS, np.array([[5, 0, 1]])), ValueError,
         r"codes in 0\.\.2.*the first is 5 at row 0, column 0"),
    case("categorical-posterior-negative", lambda: CAT.posterior(CAT_PARAMS, np.array([[0, -1, 1]])), ValueError,
         r"out of range, the first is -1 at row 0, column 1"),
    case("categorical-predict-fraction", lambda: CAT.predict(CAT_PARAMS, np.array([[0.0, 1.5, 1.0]])), ValueError,
         r"integer category codes.*1\.5"),
    case("categorical-score-width", lambda: CAT.score(CAT_PARAMS, np.zeros((2, 4), int)), ValueError,
         r"x has 4 features but the mixture's components have 3"),
    case("sample-n-zero", lambda: GAUSS.sample(KEY, PARAMS, 0), ValueError, r"n, the number of points to sample"),
    case("sample-n-float", lambda: GAUSS.sample(KEY, PARAMS, 2.5), ValueError, r"n, the number of points"),
    case("sample-key-string", lambda: GAUSS.sample("key", PARAMS, 3), TypeError, r"key must be a PRNG key", before="internal"),
    case("sample-key-none", lambda: GAUSS.sample(None, PARAMS, 3), TypeError, r"key must be an explicit PRNG key", before="internal"),
    case("sample-fit-result", lambda: GAUSS.sample(KEY, FILES["result"], 3), TypeError, r"pass result\.params", before="internal"),
]

INIT_FROM = [
    case("labels-too-large", lambda: GAUSS.init_from_labels(X, np.full(20, 2)), ValueError,
         r"labels must be integer component indices in 0\.\.1.*the first is 2", before="accepted"),
    case("labels-negative", lambda: GAUSS.init_from_labels(X, np.r_[np.zeros(19, int), -1]), ValueError,
         r"labels.*out of range, the first is -1 at row 19", before="accepted"),
    case("labels-fraction", lambda: GAUSS.init_from_labels(X, np.full(20, 0.5)), ValueError,
         r"labels.*non-integer", before="accepted"),
    case("labels-nan", lambda: GAUSS.init_from_labels(X, np.r_[np.nan, np.zeros(19)]), ValueError,
         r"labels.*NaN", before="accepted"),
    case("labels-length", lambda: GAUSS.init_from_labels(X, np.zeros(19, int)), ValueError,
         r"labels must have shape \(20,\)"),
    case("labels-2d", lambda: GAUSS.init_from_labels(X, np.zeros((20, 1), int)), ValueError,
         r"labels must have shape \(20,\)"),
    case("labels-strings", lambda: GAUSS.init_from_labels(X, np.full(20, "a")), TypeError, r"labels must be numeric"),
    case("labels-bad-x", lambda: GAUSS.init_from_labels(np.full((20, 2), np.nan), np.zeros(20, int)), ValueError,
         r"x contains 40 NaN"),
    case("resp-negative", lambda: GAUSS.init_from_resp(X, np.c_[np.full(20, 1.5), np.full(20, -0.5)]), ValueError,
         r"resp must hold non-negative.*negative value", before="accepted"),
    case("resp-nan", lambda: GAUSS.init_from_resp(X, np.full((20, 2), np.nan)), ValueError, r"resp.*NaN", before="accepted"),
    case("resp-inf", lambda: GAUSS.init_from_resp(X, np.c_[np.full(20, np.inf), np.ones(20)]), ValueError,
         r"resp.*infinite", before="accepted"),
    case("resp-zero-row", lambda: GAUSS.init_from_resp(X, np.r_[np.zeros((1, 2)), np.ones((19, 2))]), ValueError,
         r"every row of resp must give its point some weight.*at row 0", before="accepted"),
    case("resp-shape", lambda: GAUSS.init_from_resp(X, np.ones((20, 3))), ValueError, r"resp must have shape \(20, 2\)"),
    case("resp-transposed", lambda: GAUSS.init_from_resp(X, np.ones((2, 20))), ValueError,
         r"resp must have shape \(20, 2\)"),
    case("resp-strings", lambda: GAUSS.init_from_resp(X, np.full((20, 2), "x")), TypeError, r"resp must be numeric"),
]

ALGORITHMS = [
    case("incremental-blocks-zero", lambda: emjax.IncrementalEM(0), ValueError, r"n_blocks must be a positive integer"),
    case("incremental-blocks-string", lambda: emjax.IncrementalEM("4"), ValueError, r"n_blocks"),
    case("incremental-blocks-per-step", lambda: emjax.IncrementalEM(2, blocks_per_step=0), ValueError,
         r"blocks_per_step"),
    case("stepwise-batch-zero", lambda: emjax.StepwiseEM(batch_size=0), ValueError, r"batch_size must be a positive"),
    case("stepwise-kappa-small", lambda: emjax.StepwiseEM(kappa=0.4), ValueError, r"kappa must be a finite number > 0\.5"),
    case("stepwise-kappa-large", lambda: emjax.StepwiseEM(kappa=1.5), ValueError, r"kappa"),
    case("stepwise-kappa-nan", lambda: emjax.StepwiseEM(kappa=np.nan), ValueError, r"kappa"),
    case("stepwise-updates", lambda: emjax.StepwiseEM(updates_per_step=0), ValueError, r"updates_per_step"),
    case("gradient-optimizer-string", lambda: emjax.GradientAscent("adam"), TypeError,
         r"optimizer must be an optax GradientTransformation"),
    case("gradient-optimizer-none", lambda: emjax.GradientAscent(None), TypeError, r"optimizer"),
    case("gradient-batch-zero", lambda: emjax.GradientAscent(optax.adam(0.1), batch_size=0), ValueError,
         r"batch_size must be a positive integer"),
    case("gradient-updates-negative", lambda: emjax.GradientAscent(optax.adam(0.1), updates_per_step=-1), ValueError,
         r"updates_per_step"),
    # Accepted silently before: a bool as a block count, a truthy string as a flag; a raw comparison error.
    case("incremental-blocks-bool", lambda: emjax.IncrementalEM(True), ValueError, r"n_blocks must be a positive"),
    case("stepwise-kappa-string", lambda: emjax.StepwiseEM(kappa="a"), TypeError, r"kappa must be a real number"),
    case("stepwise-shuffle-string", lambda: emjax.StepwiseEM(shuffle="no"), TypeError, r"shuffle must be True or False"),
    case("gradient-shuffle-string", lambda: emjax.GradientAscent(optax.adam(0.1), shuffle="no"), TypeError,
         r"shuffle must be True or False"),
]

CLI = [
    case("cli-k-zero", lambda: cli("fit", "csv", "-k", "0"), SystemExit, r"-k/--components/--n-components: expected a positive integer; got '0'"),
    case("cli-k-word", lambda: cli("fit", "csv", "-k", "two"), SystemExit, r"-k/--components.*'two'"),
    case("cli-k-missing", lambda: cli("fit", "csv"), SystemExit, r"required: -k/--components"),
    case("cli-k-too-many", lambda: cli("fit", "csv", "-k", "500"), SystemExit,
         r"n_components=500 is larger than the number of data points"),
    case("cli-covariance", lambda: cli("fit", "csv", "-k", "2", "--covariance", "banana"), SystemExit,
         r"--covariance/--structure: invalid choice: 'banana'"),
    case("cli-restarts", lambda: cli("fit", "csv", "-k", "2", "--restarts", "0"), SystemExit, r"--restarts"),
    case("cli-restarts-float", lambda: cli("fit", "csv", "-k", "2", "--restarts", "1.5"), SystemExit, r"--restarts"),
    case("cli-max-iter-negative", lambda: cli("fit", "csv", "-k", "2", "--max-iter", "-1"), SystemExit, r"--max-iter"),
    case("cli-max-iter-huge", lambda: cli("fit", "csv", "-k", "2", "--max-iter", str(10**12)), SystemExit,
         r"--max-iter: expected an integer from 0 to 2147483646"),
    case("cli-tol-nan", lambda: cli("fit", "csv", "-k", "2", "--tol", "nan"), SystemExit, r"--tol"),
    case("cli-tol-negative", lambda: cli("fit", "csv", "-k", "2", "--tol", "-1"), SystemExit, r"--tol"),
    case("cli-seed-word", lambda: cli("fit", "csv", "-k", "2", "--seed", "abc"), SystemExit, r"--seed"),
    case("cli-seed-huge", lambda: cli("fit", "csv", "-k", "2", "--seed", str(10**30)), SystemExit,
         r"--seed: expected an integer from", before="internal"),
    case("cli-missing-file", lambda: cli("fit", "missing", "-k", "2"), SystemExit, r"no such file"),
    case("cli-directory", lambda: cli("fit", "dir", "-k", "2"), SystemExit, r"is a directory, not a CSV file"),
    case("cli-empty-file", lambda: cli("fit", "empty", "-k", "2"), SystemExit, r"empty.csv is empty: no rows to read"),
    case("cli-header-only", lambda: cli("fit", "header", "-k", "2"), SystemExit, r"has a header row but no data rows"),
    case("cli-ragged", lambda: cli("fit", "ragged", "-k", "2"), SystemExit, r"ragged.csv, line 3: 1 field, but the header has 2"),
    case("cli-words", lambda: cli("fit", "words", "-k", "2"), SystemExit, r"line 2, column 2.*not a finite number"),
    case("cli-nan-field", lambda: cli("fit", "nanfield", "-k", "2"), SystemExit, r"nanfield.csv, line 2, column 2 \('x2'\): 'nan' \(a missing value\).*or --missing"),
    case("cli-out-directory", lambda: cli("fit", "csv", "-k", "2", "--out", "missing_dir_out"), SystemExit,
         r"cannot write .*does not exist"),
    case("cli-unknown-option", lambda: cli("fit", "csv", "-k", "2", "--bogus"), SystemExit,
         r"unrecognized arguments: --bogus"),
    case("cli-unknown-command", lambda: cli("train"), SystemExit, r"invalid choice: 'train'"),
    case("cli-no-command", lambda: cli(), SystemExit, r"usage: emjax"),
    case("cli-demo-out", lambda: cli("demo", "--out", "missing_dir_svg"), SystemExit, r"cannot write .*does not exist"),
    case("cli-demo-seed", lambda: cli("demo", "--seed", "x"), SystemExit, r"--seed"),
]

TABLE = FIT + PRIORS_AT_FIT + STREAMS + FAMILIES + PRIORS + MIXTURE + PREDICTION + INIT_FROM + ALGORITHMS + CLI


@pytest.fixture(scope="module", autouse=True)
def files(tmp_path_factory):
    """The files that path rows read, and a FitResult for the rows that pass one instead of its params."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "dir").mkdir()
    np.savetxt(root / "data.csv", X, delimiter=",", header="a,b", comments="")
    np.savetxt(root / "data.txt", X)
    np.savez(root / "data.npz", x=X)
    np.save(root / "strings.npy", X.astype(str))
    (root / "empty.csv").write_text("")
    (root / "header.csv").write_text("a,b\n")
    (root / "ragged.csv").write_text("a,b\n1,2\n3\n")
    (root / "words.csv").write_text("a,b\n1,x\n")
    (root / "nanfield.csv").write_text("1,2\n3,nan\n")
    FILES.update(
        csv=str(root / "data.csv"), txt=str(root / "data.txt"), npz=str(root / "data.npz"),
        strings=str(root / "strings.npy"), dir=str(root / "dir"), missing=str(root / "missing.csv"),
        empty=str(root / "empty.csv"), header=str(root / "header.csv"), ragged=str(root / "ragged.csv"),
        words=str(root / "words.csv"), nanfield=str(root / "nanfield.csv"),
        missing_dir_out=str(root / "no" / "such" / "prefix"), missing_dir_svg=str(root / "no" / "plot.svg"),
        # Not fitted: only its type matters to the rows that pass it.
        result=emjax.FitResult.__new__(emjax.FitResult),
    )
    yield FILES
    FILES.clear()


@pytest.fixture
def nothing_compiles(monkeypatch):
    """Fail a row that reaches the compiled fit, the host loop or a jitted initialisation:
    every bad input must be refused before."""

    def reached(*args, **kwargs):
        raise AssertionError("the bad input reached the compiled fit")

    for name in ("_fit_compiled", "_initial_params", "run_host", "run_compiled"):
        monkeypatch.setattr(emjax._runner, name, reached)


@pytest.fixture
def unfiltered_tracebacks():
    """JAX drops its own frames from tracebacks by default; keep them, so a row raised
    while tracing would show ``jax/_src/interpreters`` or ``jax/_src/pjit`` frames."""
    old = jax.config.jax_traceback_filtering
    jax.config.update("jax_traceback_filtering", "off")
    yield
    jax.config.update("jax_traceback_filtering", old)


def assert_raised_by_emjax(excinfo) -> None:
    """The exception is emjax's: no JAX error class, raised in an emjax file, not while tracing."""
    err = excinfo.value
    assert not type(err).__module__.startswith(("jax", "jaxlib")), type(err)
    assert not isinstance(err, (jax.errors.JAXTypeError, jax.errors.JAXIndexError)), type(err)
    assert err.__cause__ is None or not type(err.__cause__).__module__.startswith(("jax", "jaxlib"))
    frames = [str(entry.path) for entry in excinfo.traceback]
    assert frames[-1].startswith(EMJAX_DIR), f"raised outside emjax, in {frames[-1]}"
    tracing = [f for f in frames if any(part in f for part in TRACING_FRAMES)]
    assert not tracing, f"raised while tracing: {tracing}"


def test_the_table_is_large_and_ids_are_unique():
    ids = [p.values[0].id for p in TABLE]
    assert len(ids) >= 150
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("row", TABLE)
def test_bad_input_is_refused_clearly(row: Case, capsys, nothing_compiles, unfiltered_tracebacks):
    with pytest.raises(row.error) as excinfo:
        row.call()
    if row.error is SystemExit:
        # The command line: a non-zero code, the message on stderr, no traceback.
        assert excinfo.value.code not in (0, None)
        err = capsys.readouterr().err
        assert re.search(row.match, err), err
        assert "Traceback" not in err and not INTERNALS.search(err), err
        return
    message = str(excinfo.value)
    assert re.search(row.match, message), message
    assert not INTERNALS.search(message), message
    assert_raised_by_emjax(excinfo)


# -- float16 and bfloat16 data are run in float32 (item 9) -------------------------------


@pytest.mark.parametrize("dtype", [np.float16, jnp.bfloat16])
def test_half_precision_data_run_in_float32(dtype):
    x = jnp.asarray(X, dtype)
    assert GAUSS.validate_data(x).dtype == jnp.float32
    assert GAUSS.validate_data(np.asarray(x)).dtype == jnp.float32
    lp = GAUSS.log_prob(jax.tree.map(lambda a: a.astype(jnp.float32), PARAMS), x)
    assert lp.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(lp)))
    # The fit itself: XLA has no float16 Cholesky on CPU, so this failed inside XLA before.
    result = emjax.fit(GAUSS, x, key=KEY, max_iter=2)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(result.params))
    assert bool(jnp.all(jnp.isfinite(result.objective)))
