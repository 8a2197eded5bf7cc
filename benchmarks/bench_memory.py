"""Peak memory of an in-memory fit, each case in a fresh subprocess.

    python benchmarks/bench_memory.py [--n 5000000] [--d 8] [--k 8] [--max-iter 20]

For each case a child process builds the data (float32, ``N x D``, NumPy), imports
the library, runs one small fit of another shape (so the runtime is loaded but the
fit's programs are not compiled), then records its resident set and resets the
kernel's high-water mark (``/proc/self/clear_refs``). It then fits twice: the first
fit compiles (what a user's first call costs), the second runs compiled programs.
The extra peak of each is ``VmHWM`` minus the resident set before it, reported in
MB and as a multiple of the data's size. scikit-learn's GaussianMixture (float64
internally, as it always computes) runs the same way for comparison. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

CASES = ("emjax-kmeans", "emjax-params", "emjax-kmeans-jax-array", "sklearn-kmeans")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field))
    return int(line.split()[1]) * 1024


def child(case: str, n: int, d: int, k: int, max_iter: int) -> dict:
    import gc

    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(k, d))
    x = (centres[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    if case.startswith("emjax"):
        import jax
        import emjax

        model = emjax.Mixture(emjax.Gaussian("full"), k)
        small = emjax.fit(model, x[:1000], key=jax.random.key(0), max_iter=2)
        if case == "emjax-kmeans-jax-array":
            x = jax.device_put(x)  # the data already in the device's memory: fit makes no copy
        init = small.params if case == "emjax-params" else "kmeans"

        def run():
            result = emjax.fit(model, x, key=jax.random.key(0), init=init, max_iter=max_iter, tol=0.0)
            return jax.block_until_ready(result.params)
    else:
        from sklearn.mixture import GaussianMixture

        GaussianMixture(k, max_iter=2).fit(x[:1000])

        def run():
            return GaussianMixture(k, max_iter=max_iter, tol=0.0, random_state=0).fit(x)

    out = {"case": case, "n": n, "d": d, "k": k, "data_mb": x.nbytes / 2**20}
    for label in ("cold", "warm"):
        gc.collect()
        base = _status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
        start = time.perf_counter()
        fitted = run()
        out[f"{label}_s"] = time.perf_counter() - start
        out[f"{label}_extra_mb"] = (_status("VmHWM") - base) / 2**20
        del fitted
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5_000_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.d, args.k, args.max_iter)))
        return
    print(f"| fit | data (MB) | first fit: extra peak (MB) | x data | second fit: extra peak (MB) | x data | first / second fit (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        cmd = [sys.executable, __file__, "--child", case, "--n", str(args.n), "--d", str(args.d), "--k", str(args.k),
               "--max-iter", str(args.max_iter)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if done.returncode != 0:
            print(f"| {case} | failed: {done.stderr.strip().splitlines()[-1]} |")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        data = r["data_mb"]
        print(f"| {case} | {data:.0f} | {r['cold_extra_mb']:.0f} | {r['cold_extra_mb'] / data:.2f} | "
              f"{r['warm_extra_mb']:.0f} | {r['warm_extra_mb'] / data:.2f} | {r['cold_s']:.1f} / {r['warm_s']:.1f} |",
              flush=True)


if __name__ == "__main__":
    main()
