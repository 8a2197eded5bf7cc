"""Sharded data: EM over 8 CPU devices equals single-device EM (float64).

JAX fixes its device count when it starts, so the sharded runs happen in one
subprocess started with ``--xla_force_host_platform_device_count=8``; it runs
every case (one process is far cheaper than one per case: compilation
dominates) and prints one JSON line that the tests below read.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    r'''
    import json, sys, time
    import numpy as np
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[1] + "/tests")
    import emjax
    import emjax._runner
    from conftest import make_blobs

    assert jax.device_count() == 8, jax.devices()
    out = {"timings": {}}
    mesh = jax.make_mesh((8,), ("data",))  # Explicit axes: JAX's default
    rows = NamedSharding(mesh, P("data"))

    # Record the Data that fit() hands to the compiled program and, when asked,
    # the program itself (compiled ahead of time once, then called).
    seen, capture = [], {"next_sharded": False, "hlo": ""}
    compiled = emjax._runner._fit_compiled

    def recording(problem, *args):
        data = problem.data
        seen.append(data)
        if not (capture["next_sharded"] and getattr(data, "mesh", None) is not None):
            return compiled(problem, *args)
        capture["next_sharded"] = False
        program = compiled.lower(problem, *args).compile()
        capture["hlo"] = program.compiled.as_text()
        return program(problem, *args)

    emjax._runner._fit_compiled = recording

    def host_reads_refused(fn, *args):
        """``fn(*args)`` with any read of a multi-device array to the host refused
        (under jax.distributed no process could read all of it)."""
        impl = type(jnp.zeros(()))  # the concrete jax.Array class
        read = impl.__array__

        def refuse(a, *rest, **kw):
            if len(a.sharding.device_set) > 1:
                raise AssertionError("a sharded array was read to the host")
            return read(a, *rest, **kw)

        impl.__array__ = refuse
        try:
            return fn(*args)
        finally:
            impl.__array__ = read

    def rel(a, b):
        """Largest difference over all leaves, relative to each leaf's scale."""
        worst = 0.0
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
            u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
            worst = max(worst, float(np.max(np.abs(u - v)) / max(np.max(np.abs(v)), 1e-300)))
        return worst

    def compare(name, sharded, single):
        return {
            "params": rel(sharded.params, single.params),
            "trace": rel(sharded.trace, single.trace),
            "objective": rel(sharded.objective, single.objective),
            "n_iter": int(sharded.n_iter[0]), "single_n_iter": int(single.n_iter[0]),
        }

    x, _ = make_blobs(0, n=800, d=3, k=3)  # 100 rows per device
    rng = np.random.default_rng(1)
    w = rng.uniform(0.2, 2.0, size=800)
    w[::7] = 0.0
    rates = np.array([[1.0, 6.0, 2.0, 9.0], [7.0, 1.5, 5.0, 0.5]])
    counts = rng.poisson(rates[rng.integers(0, 2, size=800)]).astype(np.float64)
    z = rng.integers(0, 2, size=800)
    codes = np.stack([rng.choice(3, size=800, p=p) for p in ([0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4])], axis=1)
    codes = np.where(z[:, None] == 1, 2 - codes, codes)  # integer codes (N, 4) in 0..2
    holes = x.copy()  # 25% of the entries missing (never a whole row)
    gone = rng.uniform(size=x.shape) < 0.25
    gone[:, 0] &= ~gone[:, 1:].all(axis=1)
    holes[gone] = np.nan
    trials = rng.integers(1, 20, size=800)  # integer trials, one per point
    successes = rng.binomial(trials[:, None], np.array([[0.2, 0.7, 0.4], [0.8, 0.3, 0.5]])[z]).astype(np.float64)

    # (name, model, data, weights): the covariance types, missing entries (the
    # masked-Cholesky E-step on each device), the discrete families (Binomial
    # with per-point trials: a (successes, trials) pair), with and without
    # weights. Spherical and Bernoulli, whose statistics are diag's and
    # categorical's kind, are left out for CI's time. chunk_size 30 on 100 local rows: three full chunks and
    # a ragged one of 10 on every device.
    # The full covariance type runs as the k-means restarts below (in chunks too).
    cases = [
        ("diag+w", emjax.Mixture(emjax.Gaussian("diag"), 3), x, w),
        ("missing-full", emjax.Mixture(emjax.Gaussian("full"), 3, missing=True), holes, None),
        ("tied+w", emjax.Mixture(emjax.Gaussian("tied"), 3), x, w),
        ("poisson+w", emjax.Mixture(emjax.Poisson(), 2), counts, w),
        ("categorical+w", emjax.Mixture(emjax.Categorical(3), 2), codes, w),
        ("binomial-pair", emjax.Mixture(emjax.Binomial(None), 2), (successes, trials), None),
        # Statistics that merge themselves: centred cross-products (Chan's update) and
        # experts' residual moments about the E-step's coefficients.
        ("bayesian-regression+w", emjax.BayesianLinearRegression(), (x[:, :2], x[:, 2]), w),
        ("experts", emjax.MixtureOfExperts(emjax.LinearExpert(), 2), (x[:, :2], x[:, 2]), None),
    ]
    # The sharded fits run in chunks of 30 rows on each device's 100 (three full
    # chunks and a ragged one of 10); the single-device references in one pass, a
    # smaller program (that chunks change nothing but rounding is
    # tests/families/test_conformance.py's).
    CHUNK = {"single": None, "sharded": 30}
    out["cases"] = {}
    for name, model, data, weights in cases:
        p0 = model.init(jax.random.key(3), model.validate_data(data), "random" if "random" in model.init_methods else model.init_methods[0])
        runs = {}
        capture["next_sharded"] = name == "diag+w"  # keep the compiled sharded fit's HLO
        for where, xi, wi in (("single", data, weights), ("sharded", jax.device_put(data, rows),
                                None if weights is None else jax.device_put(weights, rows))):
            t = time.perf_counter()
            runs[where] = emjax.fit(model, xi, key=jax.random.key(0), init=p0, weights=wi,
                                    max_iter=20, tol=0.0, chunk_size=CHUNK[where])
            runs[where].objective.block_until_ready()
            out["timings"][f"{name} {where}"] = round(time.perf_counter() - t, 2)
        out["cases"][name] = compare(name, runs["sharded"], runs["single"])
        # The sharded run took the per-device path: every leaf of its data split over rows.
        out["cases"][name]["sharded_path"] = (
            getattr(seen[-2], "mesh", None) is None and getattr(seen[-1], "mesh", None) is not None
        )
        # Validation runs on the devices (no leaf read to the host) and keeps every leaf's sharding.
        checked = host_reads_refused(model.validate_data, jax.device_put(data, rows))
        out["cases"][name]["checked_specs"] = sorted({str(a.sharding.spec[0]) for a in jax.tree.leaves(checked)})

        if name == "diag+w":
            # What the sharded fit ran: its Data records the mesh, and its E-step
            # is a shard_map over local rows with an all-gather of the statistics.
            single_data, data_s = seen[-2], seen[-1]
            jaxpr = str(jax.make_jaxpr(lambda p: data_s.e_step(model, p))(p0))
            out["layout"] = {
                "single_mesh": getattr(single_data, "mesh", None) is None,
                "mesh_shape": dict(data_s.mesh.shape),
                "row_axes": list(data_s.row_axes),
                "x_spec": str(data_s.x.sharding.spec),
                "w_spec": str(data_s.weights.sharding.spec),
                "x_shards": sorted({s.data.shape[0] for s in data_s.x.addressable_shards}),
                "shard_map": "shard_map" in jaxpr,
                "all_gather": "all_gather" in jaxpr,
                "local_rows": "f64[100,3]" in jaxpr,
                "psum": "psum" in jaxpr,
                # The whole compiled fit: per-device blocks of x, never all of it.
                "hlo_all_gather": "all-gather" in capture["hlo"],
                "hlo_local_x": "f64[100,3]" in capture["hlo"],
                "hlo_full_x": "f64[800,3]" in capture["hlo"],
            }
            # The mixture API on sharded data (through the compiler's sharding propagation).
            xs = jax.device_put(x, rows)
            params = runs["single"].params
            out["api"] = {
                f: rel(getattr(model, f)(params, xs), getattr(model, f)(params, x))
                for f in ("log_prob", "posterior", "score", "bic")
            }
            out["api"]["predict_equal"] = bool(np.array_equal(model.predict(params, xs), model.predict(params, x)))

    # Every algorithm over sharded rows: blocks and mini-batches are read through
    # the data's rows/take, and a mini-batch that divides over the devices stays split.
    import optax
    model = emjax.Mixture(emjax.Gaussian("diag"), 3)
    p0 = model.init(jax.random.key(3), jnp.asarray(x), "random")
    out["algorithms"] = {}
    for name, algorithm in (
        ("incremental", emjax.IncrementalEM(n_blocks=3)),
        ("stepwise", emjax.StepwiseEM(batch_size=80, kappa=0.7)),
        ("gradient", emjax.GradientAscent(optax.adam(0.05))),
        ("minibatch-gradient", emjax.GradientAscent(optax.adam(0.05), batch_size=80)),
    ):
        runs = {}
        for where, xi, wi in (("single", x, w), ("sharded", jax.device_put(x, rows), jax.device_put(w, rows))):
            runs[where] = emjax.fit(model, xi, key=jax.random.key(0), init=p0, weights=wi, algorithm=algorithm,
                                    max_iter=4, tol=0.0, chunk_size=CHUNK[where])
        out["algorithms"][name] = compare(name, runs["sharded"], runs["single"])
    # A sampling E-step: every device draws with a key of its own (folded by its
    # position), so the draws differ from a single device's but the fit is as good.
    saem = {}
    for where, xi in (("single", x), ("sharded", jax.device_put(x, rows))):
        saem[where] = emjax.fit(model, xi, key=jax.random.key(0), init=p0, algorithm=emjax.SAEM(burn_in=2),
                                max_iter=8, tol=0.0, chunk_size=CHUNK[where])
    out["algorithms"]["saem"] = {
        "finite": bool(np.all(np.isfinite(np.asarray(saem["sharded"].trace)))),
        "ll_gap": abs(float(saem["sharded"].objective[0]) - float(saem["single"].objective[0])) / len(x),
        "differs": not np.array_equal(np.asarray(saem["sharded"].trace), np.asarray(saem["single"].trace)),
    }
    data_s = emjax.data.make_data(model, jax.device_put(x, rows))
    batch = data_s.take(jnp.arange(80))
    out["algorithms"]["batch_sharded"] = str(jax.jit(lambda b: b.x)(batch).sharding.spec)

    # Random restarts: k-means seeding (vmap over 3 keys of a program with shard_map
    # inside), in chunks: also the "full" case of test_sharded_em_equals_single_device.
    model = emjax.Mixture(emjax.Gaussian("full"), 3)
    runs = {}
    for where, xi in (("single", x), ("sharded", jax.device_put(x, rows))):
        t = time.perf_counter()
        runs[where] = emjax.fit(model, xi, key=jax.random.key(7), n_restarts=3, init="kmeans", max_iter=20, tol=0.0,
                                chunk_size=CHUNK[where])
        runs[where].objective.block_until_ready()
        out["timings"][f"full, kmeans x3 {where}"] = round(time.perf_counter() - t, 2)
    out["restarts"] = compare("restarts", runs["sharded"], runs["single"])
    out["restarts"]["restart_params"] = rel(runs["sharded"].restart_params, runs["single"].restart_params)
    out["restarts"]["best_equal"] = int(runs["sharded"].best) == int(runs["single"].best)
    out["cases"]["full"] = dict(out["restarts"], sharded_path=(
        getattr(seen[-2], "mesh", None) is None and getattr(seen[-1], "mesh", None) is not None))
    checked = host_reads_refused(model.validate_data, jax.device_put(x, rows))
    out["cases"]["full"]["checked_specs"] = sorted({str(a.sharding.spec[0]) for a in jax.tree.leaves(checked)})

    # Validation runs on the devices and says what is wrong as for host data.
    def error(data, model):
        try:
            emjax.fit(model, data, key=jax.random.key(0), max_iter=1)
        except (ValueError, TypeError) as e:
            return str(e)
        return None

    bad = x.copy()
    bad[437, 2] = np.nan
    bad[611, 0] = np.inf
    gauss = emjax.Mixture(emjax.Gaussian("diag"), 3)
    bad_counts = counts.copy()
    bad_counts[250, 1] = -2.0
    bad_counts[300, 3] = 0.5
    bad_successes = successes.copy()
    bad_successes[250, 1] = -2.0
    over = successes.copy()
    over[613, 2] = trials[613] + 1.0
    bad_codes = codes.copy()
    bad_codes[333, 3] = 3
    pair = emjax.Mixture(emjax.Binomial(None), 2)
    out["errors"] = {
        "binomial": [error((jax.device_put(bad_successes, rows), jax.device_put(trials, rows)), pair),
                     error((bad_successes, trials), pair)],
        "binomial_over": [error((jax.device_put(over, rows), jax.device_put(trials, rows)), pair),
                          error((over, trials), pair)],
        "categorical": [error(jax.device_put(bad_codes, rows), emjax.Mixture(emjax.Categorical(3), 2)),
                        error(bad_codes, emjax.Mixture(emjax.Categorical(3), 2))],
        "nan": [error(jax.device_put(bad, rows), gauss), error(bad, gauss)],
        "counts": [error(jax.device_put(bad_counts, rows), emjax.Mixture(emjax.Poisson(), 2)),
                   error(bad_counts, emjax.Mixture(emjax.Poisson(), 2))],
        "columns": [error(jax.device_put(np.ones((800, 4)), NamedSharding(jax.make_mesh((4, 2), ("a", "b")),
                                                                         P("a", "b"))), gauss)],
    }
    print("RESULT " + json.dumps(out))
    '''
)


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    script = tmp_path_factory.mktemp("sharded") / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ)
    # The suite's cheaper code generation (set by conftest.py) cuts compile time,
    # most of this test's time; both runs of every comparison use it.
    env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=8 " + os.environ.get("XLA_FLAGS", "")).strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["JAX_ENABLE_X64"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    print("\nseconds per fit (compile included):", json.dumps(out["timings"], indent=1))
    print("largest relative differences, sharded vs single device:", json.dumps(out["cases"], indent=1))
    print("restarts:", json.dumps(out["restarts"]))
    return out


CASES = [
    "full", "diag+w", "missing-full", "tied+w", "poisson+w", "categorical+w", "binomial-pair", "bayesian-regression+w",
    "experts",
]


@pytest.mark.parametrize("case", CASES)
def test_sharded_em_equals_single_device(sharded_run, case):
    got = sharded_run["cases"][case]
    assert got["sharded_path"], got
    assert got["checked_specs"] == ["data"], got
    assert got["n_iter"] == got["single_n_iter"] == 20
    assert got["params"] < 1e-10, got
    assert got["trace"] < 1e-10, got
    assert got["objective"] < 1e-10, got


def test_estep_runs_on_each_device(sharded_run):
    layout = sharded_run["layout"]
    assert layout["single_mesh"], "unsharded data must take the plain path"
    assert layout["mesh_shape"] == {"data": 8}
    assert layout["row_axes"] == ["data"]
    assert "data" in layout["x_spec"] and "data" in layout["w_spec"], layout
    assert layout["x_shards"] == [100], "each device must keep its own 100 rows"
    # shard_map over 100 local rows, statistics gathered and folded (not psum-ed leafwise).
    assert layout["shard_map"] and layout["all_gather"] and layout["local_rows"], layout
    assert not layout["psum"], layout
    # With explicit initial parameters the compiled fit holds only per-device
    # blocks of x: no device ever sees all 800 rows.
    assert layout["hlo_all_gather"] and layout["hlo_local_x"] and not layout["hlo_full_x"], layout


@pytest.mark.parametrize("algorithm", ["incremental", "stepwise", "gradient", "minibatch-gradient"])
def test_every_algorithm_over_sharded_rows(sharded_run, algorithm):
    got = sharded_run["algorithms"][algorithm]
    assert got["n_iter"] == got["single_n_iter"] == 4
    assert got["params"] < 1e-10, got
    assert got["trace"] < 1e-10, got


def test_sampling_e_step_over_sharded_rows(sharded_run):
    got = sharded_run["algorithms"]["saem"]
    assert got["finite"] and got["differs"], got
    assert got["ll_gap"] < 0.05, got


def test_minibatches_stay_split_over_devices(sharded_run):
    assert "data" in sharded_run["algorithms"]["batch_sharded"]


def test_restarts_with_kmeans_on_sharded_data(sharded_run):
    got = sharded_run["restarts"]
    # k-means seeding is a function of the key only, and every reduction over the
    # sharded rows lands within rounding of the single-device one.
    assert got["best_equal"]
    assert got["restart_params"] < 1e-10, got
    assert got["trace"] < 1e-10, got
    assert got["objective"] < 1e-10, got


def test_mixture_api_on_sharded_data(sharded_run):
    api = sharded_run["api"]
    assert api.pop("predict_equal")
    assert max(api.values()) < 1e-12, api


def test_validation_on_device_says_what_is_wrong(sharded_run):
    errors = sharded_run["errors"]
    sharded, host = errors["nan"]
    assert sharded == host, (sharded, host)
    assert "2 NaN or infinite" in sharded and "row 437, column 2" in sharded
    sharded, host = errors["counts"]
    assert sharded == host, (sharded, host)
    assert "row 250, column 1" in sharded
    assert "shard the rows only" in errors["columns"][0]
    # Binomial with per-point trials: a negative success, and a success above its trials.
    sharded, host = errors["binomial"]
    assert sharded == host, (sharded, host)
    assert "1 negative value(s)" in sharded and "row 250, column 1" in sharded
    sharded, host = errors["binomial_over"]
    assert sharded == host, (sharded, host)
    assert "must not exceed trials" in sharded and "row 613, column 2" in sharded
    sharded, host = errors["categorical"]
    assert sharded == host, (sharded, host)
    assert "the first is 3 at row 333, column 3" in sharded
