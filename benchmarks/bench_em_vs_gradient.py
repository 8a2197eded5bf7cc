"""EM against gradient ascent (optax) on the same objective, from the same initial parameters.

Run from the repository root:

    python benchmarks/bench_em_vs_gradient.py                 # all three problems
    python benchmarks/bench_em_vs_gradient.py --problem faithful --restarts 100

For each problem every method starts from the same initial parameters and runs
``--iters`` iterations (``tol=0``), as one compiled ``emjax.fit``:

* EM (``emjax.BatchEM``): no step size;
* Adam, "untuned": optax's customary default learning rate 1e-3;
* Adam, "tuned": the best final objective over the learning rates in ``--lrs``;
* L-BFGS (``optax.lbfgs()``, with its zoom line search).

Gradient ascent maximises the per-point objective over the unconstrained
parametrisation (log-softmax weights, Cholesky factors with a log diagonal,
logits), so the parameters are valid at every step. One iteration of any method
reads the data once (EM: E-step; Adam: value and gradient; L-BFGS: value and
gradient plus its line-search evaluations, which is why its iterations cost more).

Reported: the log-likelihood per point against iterations and wall time (the time
of a compiled fit divided by its iterations), the final value, and over
``--restarts`` random starts (K random data points as means, the data covariance)
how often each method ends at a singular solution (``--restart-iters`` iterations each): a restart whose component
collapsed (``FitResult.n_collapses > 0``, a variance below 1e-5 of the data's) or
that produced non-finite values.

Problems: Old Faithful (272 x 2, K=2, full covariances); a synthetic D=10 mixture of
4 overlapping, elongated Gaussians (N=5000, full covariances, condition numbers ~100);
a Bernoulli mixture (N=5000, D=64, K=5, binary features).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import format_table, machine_description  # noqa: E402

MARKS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


def elongated(n=5000, d=10, k=4, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=1.5, size=(k, d))
    z = rng.integers(0, k, size=n)
    chols = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        scales = np.geomspace(3.0, 0.3, d)  # condition number 100
        chols.append(q * scales)
    chols = np.stack(chols)
    return means[z] + np.einsum("nde,ne->nd", chols[z], rng.normal(size=(n, d)))


def bernoulli_data(n=5000, d=64, k=5, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.beta(0.5, 0.5, size=(k, d))
    z = rng.integers(0, k, size=n)
    return (rng.random((n, d)) < p[z]).astype(np.float64)


def problems(names):
    import emjax

    out = {}
    if "faithful" in names:
        x = np.asarray(emjax.datasets.old_faithful()[0], np.float64)
        out["faithful"] = (x, emjax.Mixture(emjax.Gaussian("full"), 2))
    if "elongated" in names:
        out["elongated"] = (elongated(), emjax.Mixture(emjax.Gaussian("full"), 4))
    if "bernoulli" in names:
        out["bernoulli"] = (bernoulli_data(), emjax.Mixture(emjax.Bernoulli(), 5))
    return out


def timed_fit(model, x, init, algorithm, iters, n_restarts=1):
    import jax
    import emjax

    def fit():
        return emjax.fit(model, x, key=jax.random.key(1), init=init, algorithm=algorithm, max_iter=iters, tol=0.0,
                         n_restarts=n_restarts, throw=False)

    jax.block_until_ready(fit())  # compile
    t0 = time.perf_counter()
    res = jax.block_until_ready(fit())
    return res, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problem", nargs="+", default=["faithful", "elongated", "bernoulli"],
                        choices=["faithful", "elongated", "bernoulli"])
    parser.add_argument("--iters", type=int, default=500)
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.3, 0.1, 0.03, 0.01])
    parser.add_argument("--restarts", type=int, default=100)
    parser.add_argument("--restart-iters", type=int, default=200, help="iterations per method in the restarts table")
    args = parser.parse_args()

    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import optax
    import emjax

    print("machine:")
    for label, value in machine_description():
        print(f"  {label:22s} {value}")
    print(f"float64, {args.iters} iterations per method, tol=0\n")

    for name, (x, model) in problems(args.problem).items():
        n = x.shape[0]
        p0 = model.init(jax.random.key(7), jnp.asarray(x), "random")
        methods = {"EM": emjax.BatchEM(), "Adam lr=1e-3 (untuned)": emjax.GradientAscent(optax.adam(1e-3))}
        best_lr, best = None, -np.inf
        for lr in args.lrs:
            res, _ = timed_fit(model, x, p0, emjax.GradientAscent(optax.adam(lr)), args.iters)
            if float(res.objective[0]) > best:
                best_lr, best = lr, float(res.objective[0])
        methods[f"Adam lr={best_lr} (tuned)"] = emjax.GradientAscent(optax.adam(best_lr))
        methods["L-BFGS"] = emjax.GradientAscent(optax.lbfgs())

        results = {}
        for label, algo in methods.items():
            res, sec = timed_fit(model, x, p0, algo, args.iters)
            results[label] = (np.asarray(res.trace[0]) / n, sec / max(int(res.n_iter[0]), 1), res)
        em_final = results["EM"][0][-1]

        print(f"== {name}: N={n}, D={x.shape[1]}, K={model.n_components}; EM's final log-likelihood {em_final:.6f} per point")
        marks = [m for m in MARKS if m <= args.iters]
        rows = [[label] + [f"{tr[m] - em_final:+.2e}" for m in marks] for label, (tr, _, _) in results.items()]
        print("log-likelihood per point minus EM's final, after i iterations:")
        print(format_table(["method"] + [f"i={m}" for m in marks], rows))
        rows = []
        for label, (tr, per_iter, res) in results.items():
            hit = np.nonzero(tr >= em_final - 1e-3)[0]
            first = "-" if hit.size == 0 else str(hit[0])
            secs = "-" if hit.size == 0 else f"{hit[0] * per_iter * 1e3:.1f}"
            rows.append([label, f"{tr[-1]:.6f}", f"{tr[-1] - em_final:+.2e}", first, secs, f"{per_iter * 1e3:.2f}",
                         emjax.RESULTS.message(int(res.status[0])).split(";")[0]])
        print("\nfinal, and iterations / milliseconds to within 1e-3 per point of EM's final:")
        print(format_table(["method", "final ll/pt", "final - EM", "iters 1e-3", "ms 1e-3", "ms/iter", "status"], rows))

        rows = []
        for label, algo in methods.items():
            res, sec = timed_fit(model, x, "random", algo, args.restart_iters, n_restarts=args.restarts)
            status = np.asarray(res.status)
            singular = (np.asarray(res.n_collapses) > 0) | (status == emjax.RESULTS.NONFINITE)
            finals = np.asarray(res.objective) / n
            ok = ~singular & np.isfinite(finals)
            rows.append([label, f"{int(singular.sum())}/{args.restarts}", f"{np.max(finals[ok]) if ok.any() else float('nan'):.6f}",
                         f"{np.median(finals[ok]) if ok.any() else float('nan'):.6f}", f"{sec:.2f}"])
        print(f"\nover {args.restarts} random restarts of {args.restart_iters} iterations (K random points as means, the data covariance):")
        print(format_table(["method", "singular", "best regular ll/pt", "median regular ll/pt", "fit s (all restarts)"], rows))
        print()


if __name__ == "__main__":
    main()
