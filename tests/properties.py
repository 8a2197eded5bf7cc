"""Adversarial fit cases and the invariants every fit must keep.

A :class:`Case` names everything about one fit: the family (any case of the
family registry, :data:`tests.registry.CASES`), priors, the float dtype, sample
weights, the algorithm, the string init method, K, the kind of nasty data and
a seed. :func:`make_data` builds the data from it with numpy; :func:`run`
fits; :func:`check` asserts the invariants and returns the names of the
events it saw. ``tests/test_properties.py`` draws cases with hypothesis (a
small profile in CI, a thorough one on demand); ``python -m tests.properties``
runs a numbered sweep and counts the outcomes for ``RELIABILITY.md``.

Shapes are bucketed (a few ``N``, one ``D`` per family, ``max_iter`` fixed) so
that thousands of cases compile a few hundred programs.
"""

from __future__ import annotations

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import emjax
from tests.registry import CASES

#: The data families the sweep runs (every registry case with array data).
FAMILIES = [name for name, case in CASES.items() if not case.pair_data]
#: The location-scale cases (Gaussian and Student-t): the same nasty data, priors and covariance checks.
GAUSSIAN = ("full", "diag", "spherical", "tied", "student_t_full")
ALGORITHMS = ("batch", "incremental", "stepwise", "gradient")
INITS = ("kmeans", "kmeans++", "random", "random_resp")
N_ROWS = 48  # every kind but "k_close_to_n"
MAX_ITER = 25
N_RESTARTS = 2
STATUS_NAMES = {getattr(emjax.RESULTS, name): name for name in ("SUCCESS", "MAX_ITER", "NONFINITE", "COLLAPSED", "INIT_FAILED")}

#: ``sample_random``'s width argument per family: the widths the registry's priors are written for.
WIDTH_ARG = {"full": 3, "diag": 3, "spherical": 3, "tied": 3, "student_t_full": 3, "bernoulli": 5, "categorical": 0,
             "multinomial": 3, "binomial": 4, "poisson": 4}

#: Nasty data of each family kind (``plain`` is the registry's random mixture).
GAUSSIAN_KINDS = (
    "plain", "duplicates", "constant_column", "offset", "tiny_scale", "huge_scale",
    "heavy_tails", "outlier", "collinear", "k_close_to_n",
)
COUNT_KINDS = ("plain", "duplicates", "zero_feature", "large_counts", "k_close_to_n", "constant_column")
BINARY_KINDS = ("plain", "duplicates", "constant_column", "k_close_to_n")


def kinds(family: str) -> tuple[str, ...]:
    """The data kinds that make sense for ``family``."""
    if family in GAUSSIAN:
        return GAUSSIAN_KINDS
    if family in ("poisson", "binomial", "multinomial"):
        return COUNT_KINDS
    return BINARY_KINDS


@dataclasses.dataclass(frozen=True)
class Config:
    """What one compiled program fixes: everything but the data."""

    family: str
    algorithm: str = "batch"
    init: str = "kmeans"
    dtype: str = "float64"
    prior: bool = False
    weighted: bool = False
    k: int = 3
    close: bool = False  #: N = K + 1 rows (K close to N) instead of N_ROWS

    def __str__(self):
        flags = [self.dtype] + (["prior"] if self.prior else []) + (["weights"] if self.weighted else [])
        flags += ["N=K+1"] if self.close else []
        return f"{self.family}/{self.algorithm}/{self.init}/K={self.k}/{'+'.join(flags)}"


@dataclasses.dataclass(frozen=True)
class Case:
    """One fit: a configuration (its ``close`` is implied by ``kind``), a kind of data and a seed."""

    config: Config
    kind: str
    seed: int = 0

    def __getattr__(self, name):  # the configuration's fields: case.family, case.dtype, ...
        if name == "config":  # not yet set (copying): no recursion
            raise AttributeError(name)
        return getattr(self.config, name)

    def __str__(self):
        return f"{self.config}/{self.kind}/seed={self.seed}"


def cases(config: Config, seed: int, batch: int) -> list[Case]:
    """``batch`` cases of ``config``: the family's kinds in turn (only
    ``k_close_to_n`` when ``config.close``), seeds ``seed, seed + 1, ...``."""
    ks = ("k_close_to_n",) if config.close else tuple(k for k in kinds(config.family) if k != "k_close_to_n")
    return [Case(config, ks[(seed + i) % len(ks)], seed + i) for i in range(batch)]


def make_data(case: Case) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x, weights)`` for ``case``: numpy, in the case's dtype (weights ``None`` when unweighted)."""
    rng = np.random.default_rng(case.seed)
    fam, kind, k = case.family, case.kind, case.k
    n = k + 1 if kind == "k_close_to_n" else N_ROWS
    x = CASES[fam].sample_random(max(n, 8), case.seed, k, WIDTH_ARG[fam])[:n].astype(np.float64)
    if fam in GAUSSIAN:
        if kind == "duplicates":  # fewer distinct rows than K
            x = x[rng.integers(0, max(k - 1, 1), size=n)]
        elif kind == "constant_column":
            x[:, 1] = rng.normal() * 10.0
        elif kind == "offset":
            x = x + 10.0 ** rng.integers(4, 9)
        elif kind == "tiny_scale":
            x = x * 10.0 ** -rng.integers(3, 9)
        elif kind == "huge_scale":
            x = x * 10.0 ** rng.integers(3, 9)
        elif kind == "heavy_tails":
            x = rng.standard_cauchy(x.shape)
        elif kind == "outlier":
            x[rng.integers(0, n)] = 10.0 ** rng.integers(3, 7)
        elif kind == "collinear":
            x[:, 1] = 2.0 * x[:, 0]
    else:
        if kind == "duplicates":
            x = x[rng.integers(0, max(k - 1, 1), size=n)]
        elif kind == "zero_feature" and fam in ("poisson", "binomial"):
            x[:, 0] = 0.0
        elif kind == "zero_feature":  # multinomial: a category never drawn (the draws move to the next)
            x[:, 1] += x[:, 0]
            x[:, 0] = 0.0
        elif kind == "large_counts" and fam == "poisson":
            x = rng.poisson(10.0 ** rng.uniform(4, 6.5, size=(k, x.shape[1]))[rng.integers(0, k, n)]).astype(float)
        elif kind == "constant_column":
            x[:, 0] = x[0, 0]
    w = None
    if case.weighted:
        w = rng.choice([0.0, 0.5, 1.0, 3.0], size=n)
        w[rng.permutation(n)[: k + 1]] = 1.0  # at least K + 1 rows carry weight
    dtype = np.dtype(case.dtype)
    return x.astype(dtype), None if w is None else w.astype(dtype)


def model(case: Case, x=None) -> emjax.Mixture:
    """The case's mixture; a Gaussian prior is the data-dependent default of
    Fraley & Raftery built from ``x`` (a fixed prior far from data offset by 1e8
    is a misspecified model, not a robustness case)."""
    mix = CASES[case.family].model(case.k, prior=case.prior)
    if case.prior and case.family in GAUSSIAN and x is not None:
        prior = emjax.NormalInverseWishart.fraley_raftery(np.asarray(x, np.float64), case.k)
        mix = eqx.tree_at(lambda m: m.family.prior, mix, prior)
    return mix


@functools.cache
def algorithm(name: str, n: int):
    """The algorithm ``name`` for ``n`` rows: one object per argument, so that running a
    configuration again reuses its compiled program (an optax optimizer compares by identity)."""
    if name == "incremental":
        return emjax.IncrementalEM(n_blocks=min(4, n))
    if name == "stepwise":
        return emjax.StepwiseEM(batch_size=min(16, n))
    if name == "gradient":
        return emjax.GradientAscent(optax.adam(0.05))
    return emjax.BatchEM()


def run(batch: list[Case]):
    """Fit every case of ``batch`` (one configuration) as one program, a ``vmap``
    of :func:`emjax.fit` over the data sets: ``(result, xs)``, every leaf of
    ``result`` with a leading batch axis."""
    [(result, xs)] = run_many([batch])
    return result, xs


def run_many(batches: list[list[Case]]):
    """:func:`run` for several batches (of any configurations), all one program:
    ``[(result, xs), ...]`` in the order of ``batches``."""
    fits = []
    for batch in batches:
        data = [make_data(c) for c in batch]
        xs = jnp.asarray(np.stack([x for x, _ in data]))
        ws = None if data[0][1] is None else jnp.asarray(np.stack([w for _, w in data]))
        mixes = [model(c, x) for c, (x, _) in zip(batch, data)]
        mixes = jax.tree.map(lambda *a: jnp.stack(a), *mixes)  # one model per data set (their priors)
        keys = jnp.stack([jax.random.key(c.seed) for c in batch])
        fits.append((mixes, algorithm(batch[0].algorithm, xs.shape[1]), batch[0].init, xs, ws, keys))
    return [(result, np.asarray(f[3])) for result, f in zip(_fit_batches(fits), fits)]


@eqx.filter_jit
def _fit_batches(fits):
    def batch(mixes, algo, init, xs, ws, keys):
        def one(mix, x, w, key):
            return emjax.fit(mix, x, key=key, algorithm=algo, init=init, n_restarts=N_RESTARTS, max_iter=MAX_ITER,
                             weights=w, throw=False)

        return jax.vmap(one)(mixes, xs, ws, keys)

    return [batch(*f) for f in fits]


def select(result, b: int):
    """Data set ``b`` of a batched result."""
    return jax.tree.map(lambda a: a[b], result)


def _finite(tree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(a)))) for a in jax.tree.leaves(tree))


@eqx.filter_jit
def _full_covariances(family, components):
    return family.full_covariances(components)


def check(case: Case, result: emjax.FitResult, x: np.ndarray) -> list[str]:
    """Assert the invariants of ``result``; return the events seen (status names)."""
    status = np.asarray(result.status)
    codes = emjax.RESULTS
    # Every string init starts on valid data.
    assert np.all(status != codes.INIT_FAILED), f"{case}: a restart failed to start: {status}"
    # No NaN or inf anywhere.
    assert _finite(result.restart_params), f"{case}: non-finite parameters"
    assert _finite(result.objective) and _finite(result.trace), f"{case}: non-finite objective or trace"
    for r in range(status.shape[0]):
        p = jax.tree.map(lambda a: np.asarray(a[r], np.float64), result.restart_params)
        w = p.weights
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-4, f"{case}: weights off the simplex: {w}"
        comps = p.components
        if case.family in GAUSSIAN:
            full = np.asarray(_full_covariances(model(case).family, comps), np.float64)
            assert np.allclose(full, np.swapaxes(full, -1, -2), rtol=1e-5, atol=0), f"{case}: covariance not symmetric"
            for c in np.reshape(full, (-1,) + full.shape[-2:]):
                # Positive definite in the fit's own precision, as the next E-step needs it.
                try:
                    chol = np.linalg.cholesky(c.astype(case.dtype))
                except np.linalg.LinAlgError:
                    chol = np.zeros(1)
                assert np.all(np.diag(chol) > 0), f"{case}: covariance not positive definite: {np.linalg.eigvalsh(c)}"
        else:
            for leaf in jax.tree.leaves(comps):
                assert np.all(leaf >= 0), f"{case}: negative component parameters"
                if case.family != "poisson":
                    assert np.all(leaf <= 1), f"{case}: probabilities above 1"
    # Status codes agree with the parameters: a collapsed component is reported.
    collapsed = None if result.collapsed is None else np.asarray(result.collapsed)
    if collapsed is not None:
        reported = status == codes.COLLAPSED
        assert np.array_equal(reported, collapsed.any(axis=1)), f"{case}: status {status} vs collapsed {collapsed}"
    # Batch EM at default settings: the objective never decreases (float64).
    if case.algorithm == "batch" and case.dtype == "float64":
        trace = np.asarray(result.trace)
        steps = np.diff(trace, axis=1)
        floor = -1e-9 * np.maximum(np.abs(trace[:, 1:]), 1.0)
        assert np.all(steps >= floor), f"{case}: batch EM objective fell by {steps.min():.3g}"
    return [STATUS_NAMES[int(s)] for s in status]


def random_config(rng: np.random.Generator) -> Config:
    """One configuration drawn uniformly over the dimensions (N = K + 1 one time in ten)."""
    return Config(
        family=FAMILIES[rng.integers(len(FAMILIES))],
        algorithm=ALGORITHMS[rng.integers(len(ALGORITHMS))],
        init=INITS[rng.integers(len(INITS))],
        dtype=("float32", "float64")[rng.integers(2)],
        prior=bool(rng.integers(2)),
        weighted=bool(rng.integers(2)),
        k=int(rng.integers(1, 5)),
        close=bool(rng.random() < 0.1),
    )


def check_batch(batch: list[Case]) -> list[str]:
    """Run a batch, check every case and that an identical call gives identical results."""
    return check_batches([batch])


def check_batches(batches: list[list[Case]]) -> list[str]:
    """:func:`check_batch` for several batches, run as one program."""
    first, again = run_many(batches), run_many(batches)
    events = []
    for batch, (result, xs), (repeat, _) in zip(batches, first, again):
        for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(repeat)):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{batch[0]}: not deterministic")
        for b, case in enumerate(batch):
            events += check(case, select(result, b), xs[b])
    return events


def main(argv=None):
    """``python -m tests.properties [n_configs] [batch] [first_seed]``: the thorough
    profile (by default 860 configurations of 12 data sets: 10,320 fits), with counts."""
    import collections
    import sys
    import time

    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 860
    size = int(args[1]) if len(args) > 1 else 12
    first = int(args[2]) if len(args) > 2 else 0
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(first)
    outcomes, failures, n_cases = collections.Counter(), [], 0
    t0 = time.time()
    for i in range(n):
        config = random_config(rng)
        batch = cases(config, first * 100_000 + i * size, size)
        n_cases += size
        try:
            for event in check_batch(batch):
                outcomes[event] += 1
        except Exception as e:  # noqa: BLE001 - the sweep counts every failure
            failures.append(f"{config}: {type(e).__name__}: {str(e)[:400]}")
            print("FAIL", failures[-1], flush=True)
        if (i + 1) % 20 == 0:
            jax.clear_caches()  # thousands of programs would exhaust LLVM's code memory
            print(f"{i + 1} configurations, {n_cases} cases, {len(failures)} failures, {time.time() - t0:.0f} s",
                  flush=True)
    print(f"DONE {n} configurations, {n_cases} cases in {time.time() - t0:.0f} s; restarts by status: "
          f"{dict(outcomes)}; failing configurations: {len(failures)}")
    return failures


if __name__ == "__main__":
    main()
