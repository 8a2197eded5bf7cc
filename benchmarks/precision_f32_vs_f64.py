"""float32 against float64: the same EM iterations from the same start.

Runs ``--iters`` batch-EM iterations of a full-covariance Gaussian mixture in
float32 and in float64 from identical initial parameters and prints the
relative differences of the parameters and of the log-likelihood, and the time
of one iteration in each precision. The DESIGN notes measured raw second
moments going NaN in float32 at D=128; emjax accumulates scatter about the
component means, which this script checks at that size on a GPU:

    python benchmarks/precision_f32_vs_f64.py --n 200000 --d 128 --k 64

Offsets far from the origin (``--offset``) are where raw moments cancel.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import emjax  # noqa: E402
from emjax._data import Data  # noqa: E402
from emjax._chunks import default_chunk_size  # noqa: E402


def make_data(n, d, k, offset, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, d)) + offset
    z = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 2.0, size=(k, d))
    return means[z] + scales[z] * rng.normal(size=(n, d))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(x, model, p0, iters, chunk):
    data = Data(jnp.asarray(x), None, chunk)
    alg = emjax.BatchEM()
    init = jax.jit(lambda p: alg.init(model, p, data))
    step = jax.jit(lambda s: alg.step(model, s, data))
    state = init(p0)
    state = step(state)  # compile
    jax.block_until_ready(state)
    state = init(p0)
    t = time.perf_counter()
    for _ in range(iters):
        state = step(state)
    jax.block_until_ready(state)
    return state, (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--offset", type=float, default=100.0)
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    x64 = make_data(args.n, args.d, args.k, args.offset)
    model = emjax.Mixture(emjax.Gaussian("full"), args.k)
    p64 = model.init(jax.random.key(0), jnp.asarray(x64), "kmeans++")
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
    chunk = default_chunk_size(args.n, args.k * args.d)
    s64, t64 = run(x64, model, p64, args.iters, chunk)
    s32, t32 = run(x64.astype(np.float32), model, p32, args.iters, chunk)
    finite = all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(s32.params))
    print(f"N={args.n} D={args.d} K={args.k} offset={args.offset} iterations={args.iters} chunk={chunk}")
    print(f"{'quantity':24s} {'relative difference f32 vs f64':>32s}")
    print(f"{'weights':24s} {rel(s32.params.weights, s64.params.weights):32.3e}")
    print(f"{'means':24s} {rel(s32.params.components.means, s64.params.components.means):32.3e}")
    print(f"{'covariances':24s} {rel(s32.params.components.covariances, s64.params.components.covariances):32.3e}")
    print(f"{'log-likelihood':24s} {abs(float(s32.objective) - float(s64.objective)) / abs(float(s64.objective)):32.3e}")
    print(f"float32 parameters finite: {finite}")
    print(f"ms per iteration: float32 {t32 * 1e3:.2f}, float64 {t64 * 1e3:.2f} (ratio {t64 / t32:.2f})")


if __name__ == "__main__":
    main()
