"""EM over chunks (emjax.fit_chunks): exactly batch EM, for every family, source and chunking.

Float64 throughout (tests/conftest.py enables x64). Compilation dominates: a host
stream's fit compiles one set of programs per stream shape (rows, chunk size, kind
of source), so the tests share N rows and ``CHUNK`` rows a chunk wherever the
chunking is not the point, and the Gaussian tests share the ``full`` case's data.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import emjax
from tests.conftest import fitting_loglik, make_blobs, random_start
from tests.registry import CASES
from emjax._result import best_restart
from emjax import fit_chunks, predict_chunks, score_chunks
from emjax.data._source import _Prefetcher

N = 1000
# Three full chunks and a ragged last one of one row.
CHUNK = 333
# Unequal chunks, with an empty one (skipped).
LIST_SPLITS = [250, 250, 583, 833]  # chunks 250, 0, 333, 250, 167

# A stream only reads rows and sums the E-step's statistics over chunks, the same for
# every family; that each family's statistics add up over chunks (an E-step in chunks
# with a ragged remainder is the one-pass fit, for every family in the registry) is
# tests/families/test_conformance.py's. Here: a Gaussian (whose regularisation scale
# is measured over the stream), integer codes, and counts (also as pytree chunks below).
FAMILIES = ["full", "categorical", "binomial"]


def family_case(name):
    """``(model, x, p0)``: N rows of the family ``name``'s planted mixture and a random start."""
    model, x = CASES[name].model(), CASES[name].sample(N, 1)[0]
    return model, x, random_start(model, model.validate_data(x), 1)


def assert_same_fit(a, b, rtol=1e-10):
    """Two FitResults agree: parameters, trace, objective, counters, status."""
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
        u, v = np.asarray(u), np.asarray(v)
        np.testing.assert_allclose(v, u, rtol=rtol, atol=rtol * max(np.max(np.abs(u)), 1e-300))
    np.testing.assert_allclose(b.trace, a.trace, rtol=rtol)
    np.testing.assert_allclose(b.objective, a.objective, rtol=rtol)
    np.testing.assert_array_equal(b.n_iter, a.n_iter)
    np.testing.assert_array_equal(b.n_passes, a.n_passes)
    np.testing.assert_array_equal(b.status, a.status)
    np.testing.assert_array_equal(b.converged, a.converged)
    np.testing.assert_array_equal(b.n_collapses, a.n_collapses)
    assert int(b.best) == int(a.best) and int(b.n_points) == int(a.n_points)


FIT = dict(key=jax.random.key(0), max_iter=20, tol=0.0)


@pytest.mark.parametrize("name", FAMILIES)
def test_chunked_em_equals_batch_em(name, tmp_path):
    model, x, p0 = family_case(name)
    kw = dict(FIT, init=p0)
    ref = emjax.fit(model, x, **kw)
    assert int(ref.n_iter[0]) == 20  # every step counted: a wrong accumulation would show

    # Every family through uneven list chunks (one of them empty) re-cut to CHUNK
    # rows, which leaves a ragged last chunk; the kinds of source, being
    # family-independent, for one family only, to keep CI's time.
    assert_same_fit(ref, fit_chunks(model, np.split(x, LIST_SPLITS), chunk_size=CHUNK, **kw))
    if name != "full":
        return
    # One chunk of all rows, and chunks that divide N.
    for size in (N, 250):
        assert_same_fit(ref, fit_chunks(model, x, chunk_size=size, **kw))

    # The same data from a .npy file (a path, and an explicit memmap). A function
    # source: tests/data/test_sources.py (every algorithm) and the pytree case below.
    path = tmp_path / "x.npy"
    np.save(path, x)
    assert_same_fit(ref, fit_chunks(model, str(path), chunk_size=250, **kw))
    assert_same_fit(ref, fit_chunks(model, np.load(path, mmap_mode="r"), chunk_size=CHUNK, **kw))


def test_restarts_freeze_and_match_batch_em():
    # N <= init_size: the initialisation sample is the whole data, so the random
    # initialisation (and with it every restart) is emjax.fit's.
    x, _ = make_blobs(2, n=N, d=3, k=3, sep=1.5)
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    kw = dict(key=jax.random.key(3), n_restarts=3, init="random", max_iter=60, tol=1e-5)
    ref = emjax.fit(model, x, **kw)
    res = fit_chunks(model, x, chunk_size=CHUNK, **kw)
    assert res.trace.shape == (3, 61) and jax.tree.leaves(res.restart_params)[0].shape[0] == 3
    trace = np.asarray(res.trace)
    assert np.all(np.diff(trace, axis=1) >= -1e-9 * np.abs(trace[:, 1:]))
    assert int(res.best) == int(best_restart(res.status, res.objective))
    # Restarts stopped at different iterations; each froze at its own while the others went on.
    n_iter = np.asarray(res.n_iter)
    assert len(set(n_iter.tolist())) > 1 and np.any(np.asarray(res.converged))
    for r, n in enumerate(n_iter):
        np.testing.assert_array_equal(trace[r, n:], trace[r, n])
    assert_same_fit(ref, res, rtol=1e-9)


def test_random_sample_initialisation_of_an_array_larger_than_the_sample():
    # N > init_size: restarts start from k-means on random rows, and still converge:
    # to batch EM's optimum from the planted labels (the full case's program).
    x, labels = make_blobs(4, n=N, d=3, k=3, sep=6.0)
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    # (With key 0 the second restart's 300-row sample lets k-means merge two blobs, and EM
    # crawls from there for 100 iterations: a local optimum, not a defect.)
    res = fit_chunks(model, x, key=jax.random.key(1), n_restarts=2, init_size=300, chunk_size=CHUNK, max_iter=100)
    assert np.all(np.asarray(res.status) == emjax.RESULTS.SUCCESS)
    planted = jax.jit(model.init_from_resp)(jnp.asarray(x), jax.nn.one_hot(labels, 3))
    best = emjax.fit(model, x, init=planted, **FIT)
    np.testing.assert_allclose(float(res.objective[res.best]), float(best.objective[0]), rtol=1e-6)


def test_pytree_chunks_per_point_binomial():
    rng = np.random.default_rng(0)
    trials = rng.integers(5, 30, size=N)
    z = rng.integers(0, 2, size=N)
    probs = np.array([[0.2, 0.7, 0.5], [0.8, 0.3, 0.1]])
    successes = rng.binomial(trials[:, None], probs[z]).astype(np.float64)
    model = emjax.Mixture(emjax.Binomial(None), 2)
    p0 = random_start(model, model.validate_data((successes, trials)), 0)
    kw = dict(FIT, init=p0)
    ref = emjax.fit(model, (successes, trials), **kw)
    chunks = [(s, t) for s, t in zip(np.split(successes, LIST_SPLITS), np.split(trials, LIST_SPLITS))]
    assert_same_fit(ref, fit_chunks(model, chunks, chunk_size=CHUNK, **kw))
    assert_same_fit(ref, fit_chunks(model, lambda: iter(chunks), chunk_size=CHUNK, **kw))


# -- errors -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gaussian():
    """The ``full`` case: ``(model, x, p0)``."""
    return family_case("full")


def test_chunk_with_other_columns(gaussian):
    model, x, _ = gaussian
    with pytest.raises(ValueError, match=r"chunk 1 \(starting at row 500 of the data\).*same columns"):
        fit_chunks(model, [x[:500], x[500:, :2]], key=jax.random.key(0), init_size=400)
    with pytest.raises(ValueError, match=r"chunk 1 .*same columns"):
        fit_chunks(model, [x[:500], x[500:, :2]], key=jax.random.key(0))


def test_nan_in_a_chunk_names_the_chunk_and_row(gaussian):
    model, x, _ = gaussian
    bad = x.copy()
    bad[3 * 250 + 12, 1] = np.nan
    match = r"chunk 3 \(starting at row 750 of the data\): .*NaN.* at row 12, column 1"
    # Found while checking the initialisation sample (the whole array here).
    with pytest.raises(ValueError, match=match):
        fit_chunks(model, bad, key=jax.random.key(0), chunk_size=250)
    # Found by the prefetch thread during the first pass, raised here.
    chunks = np.split(bad, [250, 500, 750])
    with pytest.raises(ValueError, match=match):
        fit_chunks(model, chunks, key=jax.random.key(0), init_size=300)
    with pytest.raises(ValueError, match=match):
        fit_chunks(model, lambda: iter(chunks), key=jax.random.key(0), init_size=300)


def test_empty_sources(gaussian):
    model, x, _ = gaussian
    for source in ([], lambda: iter([]), x[:0], [x[:0], x[:0]]):
        with pytest.raises(ValueError, match="no rows"):
            fit_chunks(model, source, key=jax.random.key(0))
    with pytest.raises(ValueError, match="no rows"):
        score_chunks(model, None, [])


def test_non_array_sources_and_chunks(gaussian):
    model, x, _ = gaussian
    with pytest.raises(TypeError, match=r"chunk 1 is a str, not an array"):
        fit_chunks(model, [x[:500], "x.csv"], key=jax.random.key(0))
    with pytest.raises(TypeError, match=r"chunk 0 is a dict"):
        fit_chunks(model, lambda: iter([{}]), key=jax.random.key(0))
    with pytest.raises(TypeError, match="fresh iterable"):
        fit_chunks(model, (c for c in np.split(x, 4)), key=jax.random.key(0))
    with pytest.raises(TypeError, match="data source must be"):
        fit_chunks(model, 3.0, key=jax.random.key(0))
    with pytest.raises(FileNotFoundError):
        fit_chunks(model, "/nonexistent/x.npy", key=jax.random.key(0))
    # A function source is read in order: shuffled mini-batches are refused before compiling.
    with pytest.raises(ValueError, match="shuffle=False"):
        emjax.fit(model, lambda: iter([x]), key=jax.random.key(0), algorithm=emjax.StepwiseEM(batch_size=100))
    with pytest.raises(ValueError, match="set its weights and chunk_size on the Stream"):
        emjax.fit(model, emjax.Stream(x), key=jax.random.key(0), chunk_size=100)


def test_prefetch_thread_propagates_errors_and_stops_early():
    closed = threading.Event()

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.set()

    with _Prefetcher(endless) as items:
        got = [i for i, _ in zip(items, range(5))]
    assert got == [0, 1, 2, 3, 4]
    assert closed.is_set() and not items._thread.is_alive()

    def broken():
        yield 0
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"), _Prefetcher(broken) as items:
        list(items)


# -- evaluation and progress --------------------------------------------------------------


def test_score_and_predict_over_chunks(gaussian):
    model, x, params = gaussian
    total = score_chunks(model, params, x, chunk_size=CHUNK)
    np.testing.assert_allclose(float(total), float(jnp.sum(model.log_prob(params, x))), rtol=1e-12)
    np.testing.assert_allclose(float(total) / N, float(model.score(params, x)), rtol=1e-12)
    labels = predict_chunks(model, params, np.split(x, LIST_SPLITS))
    assert isinstance(labels, np.ndarray) and labels.shape == (N,)
    np.testing.assert_array_equal(labels, model.predict(params, x))
    # A one-shot iterator is enough for a single pass.
    resp = predict_chunks(model, params, iter(np.split(x, 4)), posterior=True)
    np.testing.assert_allclose(resp, model.posterior(params, x), rtol=1e-12, atol=1e-300)


def test_progress_line(gaussian, capsys):
    model, x, p0 = gaussian
    kw = dict(FIT, init=p0, chunk_size=CHUNK)  # the programs of test_chunked_em_equals_batch_em[full]
    fit_chunks(model, x, progress=True, **kw)
    err = capsys.readouterr().err
    assert "checking the data: 4/4 chunks, 1,000 rows" in err and "pass 3: 4/4 chunks" in err and "rows/s" in err
    fit_chunks(model, x, progress=False, **kw)
    score_chunks(model, p0, x, chunk_size=CHUNK)  # short: silent
    assert capsys.readouterr().err == ""


# -- stepwise EM over chunks --------------------------------------------------------------


def test_stepwise_over_chunks_nears_batch_em():
    x, _ = make_blobs(11, n=100_000, d=3, k=3, sep=3.0)
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    batch = emjax.fit(model, x, key=jax.random.key(0), max_iter=500, tol=1e-10)
    assert batch.status[0] == emjax.RESULTS.SUCCESS
    algo = emjax.algorithms.StepwiseEM(kappa=0.7)
    res = fit_chunks(model, x, key=jax.random.key(1), algorithm=algo, chunk_size=1000, max_iter=2, tol=0.0)
    assert res.trace.shape == (1, 3) and int(res.n_iter[0]) == 2
    np.testing.assert_array_equal(res.n_passes, [3.0])  # the initial pass and two of updates; evaluations not counted
    per_point = float(res.objective[0]) / x.shape[0]
    assert abs(per_point - float(batch.objective[0]) / x.shape[0]) < 1e-2
    # The trace is the full-data objective at the parameters after each pass.
    # The objective is the fitting log-likelihood (reg_covar's penalty at the data's scale) at the final parameters.
    np.testing.assert_allclose(float(res.objective[0]), float(fitting_loglik(model, res.params, jnp.asarray(x))), rtol=1e-12)


# -- a file larger than the working memory -------------------------------------------------

ROWS, COLS, BLOCK = 4_000_000, 8, 1_000_000

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, jax, emjax

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    path, small = sys.argv[1], sys.argv[2]
    model = emjax.Mixture(emjax.Gaussian("diag"), 3)
    # Baseline: the libraries loaded and the same fit's programs compiled once, on a small file.
    emjax.fit_chunks(model, small, key=jax.random.key(0), max_iter=1, chunk_size=1000)
    base = peak_mb()
    t = time.perf_counter()
    # tol above float32's rounding of a sum over 2e7 points (about 1e-7 per point).
    result = emjax.fit_chunks(model, path, key=jax.random.key(0), max_iter=3, tol=1e-5, chunk_size=125_000)
    weights = np.sort(np.asarray(result.params.weights))
    print(json.dumps(dict(base_mb=base, peak_mb=peak_mb(), fit_s=time.perf_counter() - t,
                          weights=weights.tolist(), status=int(result.status[0]),
                          n_iter=int(result.n_iter[0]), per_point=float(result.objective[0]) / float(result.n_points))))
    """
)


def write_npy_blocks(path, rows, cols, seed):
    """A 3-component float64 mixture (NumPy's default dtype) written block by block
    through a plain file handle, so no page of the file stays mapped in this process."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=6.0, size=(3, cols))
    # Two noise blocks reused with fresh labels: a mixture all the same, generated in a second.
    noise = [rng.standard_normal((min(BLOCK, rows), cols)) for _ in range(2)]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float64)), "fortran_order": False, "shape": (rows, cols)}
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for b, start in enumerate(range(0, rows, BLOCK)):
            m = min(BLOCK, rows - start)
            z = rng.integers(0, 3, size=m)
            (noise[b % 2][:m] + means[z]).tofile(f)


@pytest.mark.slow
def test_memory_mapped_file_larger_than_memory_budget(tmp_path):
    size = ROWS * COLS * 8
    if shutil.disk_usage(tmp_path).free < 3 * size:
        pytest.skip(f"needs {3 * size / 1e9:.1f} GB of free disk in {tmp_path}")
    path, small = tmp_path / "big.npy", tmp_path / "small.npy"
    write_npy_blocks(path, ROWS, COLS, seed=0)
    write_npy_blocks(small, 4000, COLS, seed=1)
    assert os.path.getsize(path) > size
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(small)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    grown = fig["peak_mb"] - fig["base_mb"]
    print(
        f"\n{ROWS:,} x {COLS} float64 file: {size / 2**20:.0f} MiB; peak RSS {fig['peak_mb']:.0f} MiB, "
        f"baseline {fig['base_mb']:.0f} MiB, grown {grown:.0f} MiB; fit {fig['fit_s']:.1f} s, "
        f"{fig['n_iter']} iterations, weights {np.round(fig['weights'], 3).tolist()}"
    )
    # What the fit adds to the process (chunks in flight, XLA's buffers) is bounded by the
    # chunk size, not the file: a quarter of the file here, less for larger files.
    assert grown < size / 4 / 2**20
    # The fit is meaningful: three equal components found.
    np.testing.assert_allclose(fig["weights"], [1 / 3] * 3, atol=0.01)
    assert fig["status"] in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
