"""Batch, incremental and stepwise EM side by side: log-likelihood against passes and wall time.

Run from the repository root:

    python benchmarks/bench_algorithms.py                  # both data sets, N=200000, float32
    python benchmarks/bench_algorithms.py --data moderate --n 1000000
    python benchmarks/bench_algorithms.py --kappa 0.6 0.7 0.9 --batch-size 1000

Every algorithm starts from the same initial parameters (K random data points as
means, the data covariance, equal weights) and fits a full-covariance Gaussian
mixture:

* batch EM (``emjax.BatchEM``) until the objective changes by less than ``--tol``
  per point; its final log-likelihood is the target the others are measured against;
* incremental EM (``emjax.IncrementalEM(n_blocks=--blocks)``): one trace entry per
  sweep over the blocks. Its traced objective is the free energy, a lower bound on
  the log-likelihood, so "reached" is conservative;
* stepwise EM (``emjax.StepwiseEM(batch_size=--batch-size, kappa=...)``) for each
  ``--kappa``: one trace entry per epoch, the full-data log-likelihood evaluated at
  the end of it;
* scikit-learn's ``GaussianMixture`` (batch EM on the CPU) from the same initial
  parameters with the same ``--tol``, for reference.

"Passes" count the data read by the updates (an initial evaluation pass included
for every method); stepwise EM's once-per-epoch evaluations are monitoring and are
not counted as passes, but they are in its wall time. Times are for a compiled fit
(the first, compiling call is run and discarded); the time to reach a level is the
fit's time per trace entry times the entries needed (every entry does the same work).
The data: a K-component Gaussian mixture with random full covariances (numpy, fixed
seed); "moderate" has well-separated components (batch EM needs ~40 iterations),
"hard" overlapping ones (batch EM needs ~300).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import format_table, machine_description  # noqa: E402

DATASETS = {  # name: (seed, D, K, separation)
    "moderate": (12, 5, 5, 2.5),
    "hard": (11, 3, 4, 1.6),
}
MARKS = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200)


def first_at(values, target, tol):
    hit = np.nonzero(values >= target - tol)[0]
    return None if hit.size == 0 else int(hit[0])


def run_emjax(model, x, p0, algorithm, max_iter, tol):
    import jax
    import emjax

    fit = lambda: emjax.fit(model, x, key=jax.random.key(0), init=p0, algorithm=algorithm, max_iter=max_iter, tol=tol)  # noqa: E731
    jax.block_until_ready(fit())  # compile
    t0 = time.perf_counter()
    res = jax.block_until_ready(fit())
    seconds = time.perf_counter() - t0
    n_iter = int(res.n_iter[0])
    trace = np.asarray(res.trace[0][: n_iter + 1], np.float64)
    return trace, seconds, n_iter


def run_sklearn(x, p0, tol, max_iter):
    from sklearn.mixture import GaussianMixture

    means = np.asarray(p0.components.means, np.float64)
    covs = np.asarray(p0.components.covariances, np.float64)
    precisions = np.linalg.inv(covs)
    w = np.asarray(p0.weights, np.float64)
    gm = GaussianMixture(
        means.shape[0], covariance_type="full", tol=tol, max_iter=max_iter, reg_covar=1e-6,
        weights_init=w / w.sum(), means_init=means, precisions_init=precisions,
    )
    t0 = time.perf_counter()
    gm.fit(x)
    seconds = time.perf_counter() - t0
    return gm.score(x), seconds, gm.n_iter_


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--kappa", type=float, nargs="+", default=[0.6, 0.7, 0.9])
    parser.add_argument("--epochs", type=int, default=30, help="stepwise epochs and incremental sweeps")
    parser.add_argument("--tol", type=float, default=1e-7, help="batch EM stopping rule, per point")
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import emjax

    print("machine:")
    for label, value in machine_description():
        print(f"  {label:22s} {value}")
    print(f"N={args.n}, {args.dtype}, full covariances; stepwise batch size {args.batch_size}, "
          f"incremental blocks {args.blocks}, batch EM tol {args.tol}/point\n")

    for name in args.data:
        seed, d, k, sep = DATASETS[name]
        x = emjax.datasets.gaussian_mixture_sample(seed, args.n, d, k, sep)[0].astype(args.dtype)
        n = x.shape[0]
        model = emjax.Mixture(emjax.Gaussian("full"), k)
        p0 = model.init(jax.random.key(5), jnp.asarray(x), "random")

        runs = {}  # label: (trace per point, passes per entry, seconds, entries)
        trace, sec, it = run_emjax(model, x, p0, emjax.BatchEM(), 2000, args.tol)
        runs["batch EM"] = (trace / n, 1.0 + np.arange(trace.size), sec, it)
        trace, sec, it = run_emjax(model, x, p0, emjax.IncrementalEM(n_blocks=args.blocks), args.epochs, 0.0)
        runs[f"incremental EM, B={args.blocks}"] = (trace / n, 1.0 + np.arange(trace.size), sec, it)
        per_epoch = (n // args.batch_size) * args.batch_size / n
        for kappa in args.kappa:
            algo = emjax.StepwiseEM(batch_size=args.batch_size, kappa=kappa)
            trace, sec, it = run_emjax(model, x, p0, algo, args.epochs, 0.0)
            runs[f"stepwise EM, kappa={kappa}"] = (trace / n, 1.0 + per_epoch * np.arange(trace.size), sec, it)
        target = runs["batch EM"][0][-1]

        print(f"== {name}: D={d}, K={k}, separation {sep}; batch EM's final log-likelihood {target:.6f} per point")
        marks = [m for m in MARKS if m <= max(r[1][-1] for r in runs.values())]
        rows = []
        for label, (tr, passes, _, _) in runs.items():
            cells = []
            for m in marks:
                j = np.searchsorted(passes, m + 1e-9, side="right") - 1
                cells.append(f"{tr[j] - target:+.4f}" if passes[-1] >= m - 1e-9 else "")
            rows.append([label] + cells)
        print("log-likelihood per point minus batch EM's final, after p passes:")
        print(format_table(["algorithm"] + [f"p={m}" for m in marks], rows))

        rows = []
        for label, (tr, passes, sec, it) in runs.items():
            per_entry = sec / max(it, 1)
            cells = [label]
            for tol in (1e-2, 1e-3):
                j = first_at(tr, target, tol)
                cells += ["-" if j is None else f"{passes[j]:.1f}", "-" if j is None else f"{j * per_entry:.2f}"]
            cells += [f"{tr[-1] - target:+.2e}", f"{passes[-1]:.1f}", f"{sec:.2f}", f"{sec / max(passes[-1] - 1, 1e-9):.3f}"]
            rows.append(cells)
        if not args.skip_sklearn:
            ll, sec, it = run_sklearn(x.astype(np.float64), p0, args.tol, 2000)
            rows.append(["scikit-learn batch EM", "", "", "", "", f"{ll - target:+.2e}", f"{it + 1}", f"{sec:.2f}", f"{sec / it:.3f}"])
        print("\nto within 1e-2 and 1e-3 per point of batch EM's final log-likelihood:")
        print(format_table(
            ["algorithm", "passes 1e-2", "s 1e-2", "passes 1e-3", "s 1e-3", "final - target", "passes", "fit s", "s/pass"],
            rows,
        ))
        print()


if __name__ == "__main__":
    main()
