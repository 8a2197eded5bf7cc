"""Every public entry point that compiles does so once per shape, dtype and static
configuration, and repeated calls leave the process's memory where it was.

One subprocess (a fresh JAX, no x64) calls each entry point 50 times with new keys
and new data of one shape, counting the programs JAX lowers (its
``jaxpr_to_mlir_module`` monitoring event: every trace that reaches compilation,
persistent-cache hits included) and reading its resident set size. The chunk target
is lowered so that 600 rows run as several chunks: the chunk loops, which an eager
call traced anew every time, are exercised.

And the compiled programs of an in-memory fit hold temporaries much smaller than the
data: XLA's buffer assignment (``memory_analysis``) of the start's program and of
the fit's, at two sizes, grows by less than the data does.
"""

import json
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import numpy as np
import pytest

import emjax
from emjax import _runner
from emjax._chunks import default_chunk_size

CHILD = textwrap.dedent(
    """
    import json, os, sys, warnings
    import numpy as np
    import jax, jax.numpy as jnp
    from jax._src import monitoring
    import emjax, emjax.sklearn
    from emjax import _chunks

    _chunks._TARGET_ELEMENTS["cpu"] = 4096  # 600 rows in chunks of 256: the chunk loops run
    warnings.simplefilter("ignore")
    lowered = [0]

    def listen(event, secs, **kw):
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration":
            lowered[0] += 1

    monitoring.register_event_duration_secs_listener(listen)

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    N, D, K = 600, 3, 3

    def data(i):
        rng = np.random.default_rng(i)
        return (rng.normal(size=(N, D)) + 4.0 * (rng.integers(0, K, size=N)[:, None] == np.arange(D))).astype(np.float32)

    def binary(i):
        return (data(i) > 1.0).astype(np.float32)

    def holes(i):
        x = data(i)
        x[::7, 1] = np.nan
        return x

    key = jax.random.key
    gm = emjax.Mixture(emjax.Gaussian("full"), K)
    p = emjax.fit(gm, data(0), key=key(0)).params
    bern = emjax.Mixture(emjax.Bernoulli(), K)
    pb = emjax.fit(bern, binary(0), key=key(0)).params
    miss = emjax.Mixture(emjax.Gaussian("diag"), K, missing=True)
    pm = emjax.fit(miss, holes(0), key=key(0)).params
    km = emjax.KMeans(K)
    pk = emjax.fit(km, data(0), key=key(0)).params
    vb = emjax.VariationalGaussianMixture(K)
    pv = emjax.fit(vb, data(0), key=key(0)).params
    active = jnp.arange(K) < 2

    def resp(i):
        r = np.random.default_rng(i).random((N, K)).astype(np.float32)
        return r / r.sum(1, keepdims=True)

    calls = {
        "Mixture.init kmeans": lambda i: gm.init(key(i), data(i), "kmeans"),
        "Mixture.init kmeans++": lambda i: gm.init(key(i), data(i), "kmeans++"),
        "Mixture.init random": lambda i: gm.init(key(i), data(i), "random"),
        "Mixture.init random_resp": lambda i: gm.init(key(i), data(i), "random_resp"),
        "Mixture.init_active": lambda i: gm.init_active(key(i), data(i), active),
        "Mixture.init_from_labels": lambda i: gm.init_from_labels(data(i), np.arange(N) % K),
        "Mixture.init_from_resp": lambda i: gm.init_from_resp(data(i), resp(i)),
        "Mixture.reinitialize": lambda i: gm.reinitialize(key(i), p, data(i), active),
        "fit": lambda i: emjax.fit(gm, data(i), key=key(i), n_restarts=2).params,
        "fit k-means": lambda i: emjax.fit(km, data(i), key=key(i)).params,
        "fit variational": lambda i: emjax.fit(vb, data(i), key=key(i)).params,
        "Mixture.log_prob": lambda i: gm.log_prob(p, data(i)),
        "Mixture.predict": lambda i: gm.predict(p, data(i)),
        "Mixture.posterior": lambda i: gm.posterior(p, data(i)),
        "Mixture.score": lambda i: gm.score(p, data(i)),
        "Mixture.sample": lambda i: gm.sample(key(i), p, 100),
        "Mixture.outlier_scores": lambda i: gm.outlier_scores(p, data(i)),
        "Mixture.information_criteria": lambda i: gm.information_criteria(p, data(i))["bic"],
        "Mixture.impute": lambda i: miss.impute(pm, holes(i)),
        "Mixture.sample_missing": lambda i: miss.sample_missing(key(i), pm, holes(i)),
        "Bernoulli init and log_prob": lambda i: bern.log_prob(bern.init(key(i), binary(i)), binary(i)),
        "emjax.kmeans": lambda i: emjax.kmeans(key(i), data(i), K),
        "emjax.kmeans_plus_plus": lambda i: emjax.kmeans_plus_plus(key(i), data(i), K),
        "emjax.greedy_kmeans_plus_plus": lambda i: emjax.greedy_kmeans_plus_plus(key(i), data(i), K),
        "KMeans.init": lambda i: km.init(key(i), data(i)),
        "KMeans.predict": lambda i: km.predict(pk, data(i)),
        "KMeans.transform": lambda i: km.transform(pk, data(i)),
        "VariationalGaussianMixture.init": lambda i: vb.init(key(i), data(i)),
        "VariationalGaussianMixture.log_prob": lambda i: vb.log_prob(pv, data(i)),
        "VariationalGaussianMixture.predict": lambda i: vb.predict(pv, data(i)),
        "sklearn.GaussianMixture": lambda i: emjax.sklearn.GaussianMixture(K, random_state=i).fit(data(i)).predict_proba(data(i)),
        "sklearn.BayesianGaussianMixture": lambda i: emjax.sklearn.BayesianGaussianMixture(n_components=K, random_state=i, max_iter=20).fit(data(i)).predict(data(i)),
        "sklearn.KMeans": lambda i: emjax.sklearn.KMeans(K, random_state=i, n_init=1).fit(data(i)).predict(data(i)),
        "sklearn.StudentTMixture": lambda i: emjax.sklearn.StudentTMixture(K, random_state=i, max_iter=20).fit(data(i)).score(data(i)),
    }
    out = {}
    for name, call in calls.items():
        jax.block_until_ready(call(1))
        jax.block_until_ready(call(2))
        before, mb = lowered[0], rss_mb()
        for i in range(3, 51):
            jax.block_until_ready(call(i))
        out[name] = {"lowered": lowered[0] - before, "rss_mb": rss_mb() - mb}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def repeated_calls():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_fifty_calls_compile_once(repeated_calls):
    assert len(repeated_calls) == 34
    again = {name: r["lowered"] for name, r in repeated_calls.items() if r["lowered"]}
    assert not again, f"compiled again on calls 3..50 (programs lowered): {again}"


def test_fifty_calls_leave_memory_where_it_was(repeated_calls):
    # Before: each eager call of the seeding loops kept about 3 MB (150 MB over these 48).
    grown = {name: round(r["rss_mb"], 1) for name, r in repeated_calls.items() if r["rss_mb"] > 8.0}
    assert not grown, f"resident memory grew over 48 calls (MB): {grown}"
    assert sum(r["rss_mb"] for r in repeated_calls.values()) < 32.0


#: XLA's default optimisation (the suite compiles with cheaper settings, conftest.py): what users get.
DEFAULT_XLA = {"xla_backend_optimization_level": 2, "xla_llvm_disable_expensive_passes": False,
               "xla_cpu_use_fusion_emitters": True, "xla_cpu_copy_insertion_use_region_analysis": True}


def _temp_bytes(model, x):
    """XLA's temporaries (``memory_analysis``) of the start's and the fit's programs
    for ``fit(model, x)`` (k-means init), compiled at XLA's default optimisation."""
    seen = {name: getattr(_runner, name) for name in ("_start", "_fit_compiled")}
    calls = {}

    class Stop(Exception):
        pass

    def capture(name):
        # fit's arguments to each program, without compiling it at the suite's settings;
        # the start's output stands in for the fit's initial parameters.
        def spy(*args):
            calls[name] = (seen[name], args)
            if name == "_fit_compiled":
                raise Stop
            return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), eqx.filter_eval_shape(seen[name], *args))

        return spy

    for name in seen:
        setattr(_runner, name, capture(name))
    try:
        emjax.fit(model, x, key=jax.random.key(0), max_iter=2)
    except Stop:
        pass
    finally:
        for name, compiled in seen.items():
            setattr(_runner, name, compiled)
    out = {}
    for name, (compiled, args) in calls.items():
        program = compiled.lower(*args).compile(DEFAULT_XLA)
        stats = program.compiled.memory_analysis() if hasattr(program, "compiled") else program.memory_analysis()
        out[name] = stats.temp_size_in_bytes
    return out


def test_an_in_memory_fit_holds_temporaries_smaller_than_the_data(monkeypatch):
    """From 4 to 12 chunks of 8 float32 features (K = 8, full; the same ragged remainder),
    the start's temporaries grow by at most 0.6 of the data's growth (k-means++'s
    distances and their running sum, the labels: (N,) vectors, 0.5) and the fit's by
    at most 0.05 (only the chunks' fixed-size intermediates): no (N, D) or (N, K)
    copy. The peak of the whole process at 5,000,000 rows is measured by
    ``benchmarks/bench_memory.py`` (RESULTS.md)."""
    monkeypatch.setattr(_runner, "SEPARATE_START_BYTES", 0)  # large data's path, at small sizes
    model = emjax.Mixture(emjax.Gaussian("full"), 8)
    chunk = default_chunk_size(10**9, model.row_width(np.zeros((1, 8), np.float32)))
    sizes = (4 * chunk + 100, 12 * chunk + 100)
    temps = [_temp_bytes(model, np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)) for n in sizes]
    grown_data = (sizes[1] - sizes[0]) * 8 * 4
    assert temps[1]["_start"] - temps[0]["_start"] <= 0.6 * grown_data, (sizes, temps)
    assert temps[1]["_fit_compiled"] - temps[0]["_fit_compiled"] <= 0.05 * grown_data, (sizes, temps)
