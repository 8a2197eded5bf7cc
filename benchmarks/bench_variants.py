"""The EM variants side by side: what each buys, from the same starts.

Run from the repository root:

    python benchmarks/bench_variants.py                 # both parts, about 2 minutes on 2 CPU cores
    python benchmarks/bench_variants.py --restarts 64 --part annealing

Part 1, annealing: a mixture with many poor local optima (well-separated spherical clusters of
unequal sizes, K=5, D=2), ``--restarts`` random starts (``init="random"``, the same keys for both),
fitted by batch EM and by ``AnnealedEM``; prints the distribution of the final log-likelihood per
point and the share of restarts that reach the best one found.

Part 3, k-means on 100,000 points: Lloyd's algorithm against mini-batch and MacQueen's online
k-means (StepwiseEM on ``emjax.KMeans``), inertia and passes (scikit-learn's KMeans and
MiniBatchKMeans from the same centres for reference).

Part 2, convergence speed: an overlapping mixture (the slow case for EM), one start, fitted to
``tol=1e-10`` (relative change per point) by batch EM, ``OverRelaxedEM``, ``ECM`` (covariances,
then weights and means), ``GeneralizedEM`` (L-BFGS), ``SAEM``, ``MonteCarloEM`` and
``StochasticEM``; prints iterations, passes over the data, seconds (the second, compiled call) and
the final log-likelihood per point against batch EM's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_pairs, format_table, machine_description  # noqa: E402


def clusters(seed: int):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0], [4.0, 16.0]])
    sizes = [4000, 2000, 1000, 600, 400]
    return np.concatenate([rng.normal(scale=0.7, size=(s, 2)) + c for s, c in zip(sizes, centres)])


def overlapping(seed: int, n_per: int):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.5, 0.0], [1.0, 1.0, 2.0]])
    return np.concatenate([rng.normal(size=(n_per, 3)) + c for c in centres])


def timed(fn):
    fn()  # compile
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def part_annealing(args):
    import jax
    import emjax

    x = clusters(args.seed).astype(np.float32)
    model = emjax.Mixture(emjax.Gaussian(args.covariance), 5)
    kw = dict(key=jax.random.key(args.seed), n_restarts=args.restarts, init="random", max_iter=1000, tol=1e-7)
    algos = {
        "batch EM": emjax.BatchEM(),
        "AnnealedEM(T0=2, 0.9, 10/T)": emjax.AnnealedEM(initial_temperature=2.0, cooling=0.9, steps_per_temperature=10),
        "AnnealedEM(T0=5, 0.9, 10/T)": emjax.AnnealedEM(initial_temperature=5.0, cooling=0.9, steps_per_temperature=10),
        "AnnealedEM(T0=50, 0.8, 8/T)": emjax.AnnealedEM(initial_temperature=50.0, cooling=0.8, steps_per_temperature=8),
    }
    res = {}
    for name, algo in algos.items():
        secs, r = timed(lambda: jax.block_until_ready(emjax.fit(model, x, algorithm=algo, **kw)))
        res[name] = (secs, r)
    best = max(float(np.max(r.objective)) for _, r in res.values())
    rows = []
    for name, (secs, r) in res.items():
        ll = np.asarray(r.objective, np.float64) / len(x)
        hit = np.mean(np.asarray(r.objective) >= best - 1e-4 * abs(best))
        q = np.quantile(ll, [0.0, 0.25, 0.5, 0.75, 1.0])
        rows.append([name, f"{hit:.0%}"] + [f"{v:.4f}" for v in q] + [f"{np.mean(np.asarray(r.n_iter)):.0f}",
                                                                         f"{secs:.2f}"])
    print(f"Part 1: {len(x)} points, K=5 {args.covariance}, {args.restarts} random restarts (same keys), float32")
    print(format_table(["algorithm", "reach best", "min", "q25", "median", "q75", "max", "mean iters", "s"], rows))
    print()


def part_speed(args):
    import jax
    import emjax

    jax.config.update("jax_enable_x64", True)
    x = overlapping(args.seed, args.n_per)
    model = emjax.Mixture(emjax.Gaussian("full"), 4)
    p0 = model.init(jax.random.key(args.seed), x, "random")
    kw = dict(key=jax.random.key(1), init=p0, max_iter=5000, tol=1e-10, stopping=emjax.RelativeChange())
    algos = {
        "batch EM": (emjax.BatchEM(), {}),
        "OverRelaxedEM": (emjax.OverRelaxedEM(), {}),
        "ECM (cov | weights, means)": (emjax.ECM(groups=(("covariances",), ("weights", "means"))), {}),
        "ECM, E-step per group": (emjax.ECM(groups=(("covariances",), ("weights", "means")), e_step="group"), {}),
        "GeneralizedEM (L-BFGS, 10)": (emjax.GeneralizedEM(), {}),
        "SAEM (burn-in 20, 0.75), 300 it": (emjax.SAEM(burn_in=20, kappa=0.75), dict(max_iter=300, tol=0.0)),
        "MonteCarloEM (x1.05), 300 it": (emjax.MonteCarloEM(growth=1.05, max_samples=10000), dict(max_iter=300, tol=0.0)),
        "StochasticEM, 300 it": (emjax.StochasticEM(), dict(max_iter=300, tol=0.0)),
    }
    rows, ref = [], None
    for name, (algo, extra) in algos.items():
        secs, r = timed(lambda: jax.block_until_ready(emjax.fit(model, x, algorithm=algo, **{**kw, **extra})))
        ll = float(r.objective[0]) / len(x)
        ref = ll if ref is None else ref
        rows.append([name, int(r.n_iter[0]), f"{float(r.n_passes[0]):.0f}", f"{secs:.2f}", f"{ll:.8f}",
                     f"{ll - ref:+.1e}", emjax.RESULTS.message(int(r.status[0]))])
    print(f"Part 2: {len(x)} points, 4 overlapping full-covariance Gaussians in 3-D, one random start, float64,")
    print("tol=1e-10 relative (RelativeChange); the sampling variants run a fixed number of iterations")
    print(format_table(["algorithm", "iters", "passes", "s", "ll/pt", "vs EM", "status"], rows))
    print()


def part_kmeans(args):
    import jax
    import emjax

    x, _ = emjax.datasets.gaussian_mixture_sample(args.seed, 100_000, 4, 8, 2.0)
    x = np.asarray(x, np.float32)
    model = emjax.KMeans(8)
    p0 = model.init(jax.random.key(args.seed), x, "random")
    kw = dict(key=jax.random.key(1), init=p0)
    runs = {
        "Lloyd (batch EM), tol=1e-4": dict(tol=1e-4, max_iter=300),
        "mini-batch (StepwiseEM 1000, kappa=0.7), 3 epochs": dict(
            algorithm=emjax.StepwiseEM(batch_size=1000, kappa=0.7), max_iter=3, tol=0.0),
        "mini-batch (StepwiseEM 100, kappa=0.7), 1 epoch": dict(
            algorithm=emjax.StepwiseEM(batch_size=100, kappa=0.7), max_iter=1, tol=0.0),
        "MacQueen (StepwiseEM 1, kappa=1), 0.3 epoch": dict(
            algorithm=emjax.StepwiseEM(batch_size=1, kappa=1.0, updates_per_step=30_000), max_iter=1, tol=0.0),
    }
    rows, ref = [], None
    for name, extra in runs.items():
        secs, r = timed(lambda: jax.block_until_ready(emjax.fit(model, x, **kw, **extra)))
        inertia = -float(r.objective[0])
        ref = inertia if ref is None else ref
        rows.append([name, f"{inertia:.1f}", f"{inertia / ref - 1:+.2%}", f"{float(r.n_passes[0]):.1f}", f"{secs:.2f}"])
    try:
        from sklearn.cluster import KMeans as SK, MiniBatchKMeans as SKMB

        t0 = time.perf_counter()
        sk = SK(8, init=np.asarray(p0.centers), n_init=1, algorithm="lloyd", tol=1e-4).fit(x)
        rows.append(["scikit-learn KMeans (lloyd), same start", f"{sk.inertia_:.1f}", f"{sk.inertia_ / ref - 1:+.2%}",
                     f"{sk.n_iter_}", f"{time.perf_counter() - t0:.2f}"])
        t0 = time.perf_counter()
        mb = SKMB(8, init=np.asarray(p0.centers), n_init=1, batch_size=1000, max_iter=3, random_state=0).fit(x)
        rows.append(["scikit-learn MiniBatchKMeans 1000, 3 epochs", f"{mb.inertia_:.1f}",
                     f"{mb.inertia_ / ref - 1:+.2%}", "3", f"{time.perf_counter() - t0:.2f}"])
    except ImportError:
        pass
    print("Part 3: k-means on 100000 points (D=4, K=8, float32), one random start; passes include the initial one")
    print(format_table(["algorithm", "inertia", "vs Lloyd", "passes", "s"], rows))
    print()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=("all", "annealing", "speed", "kmeans"), default="all")
    p.add_argument("--restarts", type=int, default=64)
    p.add_argument("--n-per", type=int, default=2500, help="points per component in part 2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--covariance", default="spherical", help="part 1's covariance structure")
    args = p.parse_args(argv)
    print("emjax EM variants")
    print(format_pairs(machine_description()))
    print()
    if args.part in ("all", "annealing"):
        part_annealing(args)
    if args.part in ("all", "kmeans"):
        part_kmeans(args)
    if args.part in ("all", "speed"):
        part_speed(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
