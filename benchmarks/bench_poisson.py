"""Poisson mixture EM: ms per iteration inside a compiled ``emjax.fit``, and float32 accuracy.

    python benchmarks/bench_poisson.py [--n 100000] [--d 16] [--k 16] [--rate 5]

One EM iteration is measured as ``[t(max_iter=11) - t(max_iter=1)] / 10`` (each
after a compiling call), from the same initial parameters, in float32; the
float32 log-likelihood of the result is compared with its float64 evaluation
(scipy). Uses the public API only, so any emjax commit can be timed with it.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--rate", type=float, default=5.0, help="mean count (1e5 for large counts)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import scipy.stats as st

    import emjax

    rng = np.random.default_rng(0)
    rates = args.rate * rng.uniform(0.2, 2.0, size=(args.k, args.d))
    z = rng.integers(0, args.k, size=args.n)
    x = rng.poisson(rates[z]).astype(np.float32)
    model = emjax.Mixture(emjax.Poisson(), args.k)
    p0 = emjax.MixtureParams(
        jnp.full((args.k,), 1.0 / args.k, jnp.float32),
        emjax.PoissonParams(jnp.asarray(x[rng.choice(args.n, args.k, replace=False)] + 0.5)),
    )

    def run(max_iter):
        res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=max_iter, tol=0.0)
        jax.block_until_ready(res.objective)
        return res

    run(1), run(11)  # compile
    per_iter = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        run(1)
        t1 = time.perf_counter()
        res = run(11)
        t2 = time.perf_counter()
        per_iter.append(((t2 - t1) - (t1 - t0)) / 10 * 1e3)
    w = np.asarray(res.params.weights, np.float64)
    lam = np.asarray(res.params.components.rates, np.float64)
    ref = np.logaddexp.reduce(
        np.stack([np.log(w[j]) + st.poisson.logpmf(x, lam[j]).sum(1) for j in range(args.k)], 1), axis=1
    ).sum()
    got = float(jnp.sum(model.log_prob(res.params, x)))
    print(f"emjax {emjax.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}, {platform.processor() or platform.machine()}")
    print(f"N={args.n} D={args.d} K={args.k} mean count {args.rate}, float32")
    print(f"ms per EM iteration inside fit: median {np.median(per_iter):.1f} (min {min(per_iter):.1f})")
    print(f"float32 log-likelihood vs float64 (scipy) at the fit: relative error {abs(got - ref) / abs(ref):.2e}")


if __name__ == "__main__":
    main()
