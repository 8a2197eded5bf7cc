"""Batch EM over a host stream against the same fit in memory, side by side.

The stream (a memory-mapped ``.npy`` file read in chunks through device
callbacks, with the next chunk read in a background thread) and the in-memory
array run the same compiled algorithm; this prints seconds per EM iteration for
both, so the cost of streaming shows directly, and checks the fits agree.

    python benchmarks/bench_stream.py                      # N=2,000,000, D=8, K=8, diag, float32
    python benchmarks/bench_stream.py --n 500000 --covariance full
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import jax

import emjax


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2_000_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--covariance", default="diag")
    parser.add_argument("--chunk-size", type=int, default=250_000)
    parser.add_argument("--iters", type=int, default=10)
    args = parser.parse_args()

    x, _ = emjax.datasets.gaussian_mixture_sample(0, args.n, args.d, args.k, 3.0)
    x = np.asarray(x, np.float32)
    model = emjax.Mixture(emjax.Gaussian(args.covariance), args.k)
    p0 = model.init(jax.random.key(0), x[:100_000], "kmeans++")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__} "
          f"on {jax.default_backend()}; N={args.n}, D={args.d}, K={args.k}, {args.covariance}, float32, "
          f"{x.nbytes / 2**20:.0f} MiB, stream chunks of {args.chunk_size} rows")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.npy")
        np.save(path, x)
        rows = []
        for label, data in (("in memory", x), ("stream (.npy memmap)", emjax.Stream(path, chunk_size=args.chunk_size))):
            per_iter = {}
            for iters in (1, 1 + args.iters):  # the first of each compiles; time the second call
                for _ in range(2):
                    t = time.perf_counter()
                    res = emjax.fit(model, data, key=jax.random.key(0), init=p0, max_iter=iters, tol=0.0)
                    res.objective.block_until_ready()
                    per_iter[iters] = time.perf_counter() - t
            rows.append((label, (per_iter[1 + args.iters] - per_iter[1]) / args.iters, float(res.objective[0]) / args.n))
    print(f"{'data':24s} {'s / EM iteration':>18s} {'log-lik per point':>18s}")
    for label, sec, ll in rows:
        print(f"{label:24s} {sec:18.4f} {ll:18.8f}")
    print(f"stream / in memory: {rows[1][1] / rows[0][1]:.2f}x; fits agree to {abs(rows[1][2] - rows[0][2]):.1e} per point")


if __name__ == "__main__":
    main()
