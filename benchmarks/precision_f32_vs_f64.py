"""float32 against float64: the same EM iterations from the same start.

Runs ``--iters`` batch-EM iterations of a Gaussian mixture (``--covariance``:
full by default, or diag, spherical, tied, all) in float32 and in float64 from identical initial parameters and prints the
relative differences of the parameters and of the log-likelihood, and the time
of one iteration in each precision. The DESIGN notes measured raw second
moments going NaN in float32 at D=128; emjax accumulates scatter about the
component means, which this script checks at that size on a GPU:

    python benchmarks/precision_f32_vs_f64.py --n 200000 --d 128 --k 64

Offsets far from the origin (``--offset``) are where raw moments cancel. Each
precision runs through ``emjax.fit``, maximum likelihood and MAP (the
Fraley-Raftery prior): a component left with fewer than D points is singular
under maximum likelihood, which float32 cannot represent (its scatter has
rank < D); the runner then rejects the step and reports the collapse, and the
prior is the remedy.
"""

from __future__ import annotations

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import emjax  # noqa: E402


def make_data(n, d, k, offset, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(k, d)) + offset
    z = rng.integers(0, k, size=n)
    scales = rng.uniform(0.5, 2.0, size=(k, d))
    return means[z] + scales[z] * rng.normal(size=(n, d))


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run(x, model, p0, iters):
    """A real fit (the runner: NaN steps rejected, status reported); time without compilation."""
    kw = dict(key=jax.random.key(0), init=p0, max_iter=iters, tol=0.0)
    jax.block_until_ready(emjax.fit(model, x, **kw))
    t = time.perf_counter()
    res = jax.block_until_ready(emjax.fit(model, x, **kw))
    return res, (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--d", type=int, default=32)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--offset", type=float, default=100.0)
    ap.add_argument("--covariance", default="full", choices=("full", "diag", "spherical", "tied", "all"))
    ap.add_argument("--ml-only", action="store_true", help="maximum likelihood only (no MAP row)")
    args = ap.parse_args()
    cov_types = ("full", "diag", "spherical", "tied") if args.covariance == "all" else (args.covariance,)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    x64 = make_data(args.n, args.d, args.k, args.offset)
    print(f"N={args.n} D={args.d} K={args.k} offset={args.offset} iterations={args.iters}, same start (k-means)")
    header = f"{'model':14s} {'status f32':>12s} {'status f64':>12s} {'weights':>9s} {'means':>9s} {'covs':>9s} {'loglik':>9s} {'ms/it f32':>10s} {'ms/it f64':>10s}"
    print("relative difference float32 vs float64 after the same iterations")
    print(header)
    priors = {"ML": None, "MAP": emjax.NormalInverseWishart.fraley_raftery(x64, args.k)}
    if args.ml_only:
        del priors["MAP"]
    for ct, (name, prior) in [(ct, item) for ct in cov_types for item in priors.items()]:
        model = emjax.Mixture(emjax.Gaussian(ct, prior=prior), args.k)
        name = f"{ct} {name}"
        p64 = model.init(jax.random.key(0), jnp.asarray(x64), "kmeans")
        p32 = jax.tree.map(lambda a: a.astype(jnp.float32), p64)
        r64, t64 = run(x64, model, p64, args.iters)
        r32, t32 = run(x64.astype(np.float32), model, p32, args.iters)
        a, b = r32.params, r64.params
        st = lambda r: {0: "converged", 1: "max_iter", 2: "nonfinite", 3: "collapsed", 4: "init_fail"}[int(r.status[0])]  # noqa: E731
        ll = abs(float(r32.objective[0]) - float(r64.objective[0])) / abs(float(r64.objective[0]))
        print(
            f"{name:14s} {st(r32):>12s} {st(r64):>12s} {rel(a.weights, b.weights):9.2e} "
            f"{rel(a.components.means, b.components.means):9.2e} "
            f"{rel(a.components.covariances, b.components.covariances):9.2e} {ll:9.2e} "
            f"{t32 * 1e3:10.2f} {t64 * 1e3:10.2f}"
        )


if __name__ == "__main__":
    main()
