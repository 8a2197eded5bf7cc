"""emjax.sklearn's estimators against scikit-learn's, side by side, as users call them.

Run from the repository root:

    python benchmarks/bench_sklearn_estimators.py                # N=100000, D=8, K=8, n_init=4, float64
    python benchmarks/bench_sklearn_estimators.py --n 20000 --repeats 3

What is timed (wall clock; median of ``--repeats`` after one untimed call that compiles):

* ``fit`` of ``GaussianMixture(K, n_init=R, tol=1e-3)`` (each library's k-means start),
  ``BayesianGaussianMixture(K, n_init=R)`` and ``KMeans(K, n_init=R)``: the whole estimator call,
  with its input checks and restarts (emjax: all ``R`` restarts one compiled program; scikit-learn:
  one after another), to each library's own convergence;
* ``predict_proba`` and ``score_samples`` on the training data.

The iteration counts differ (each library's starts and rule; see the README), so the table
also gives each fit's ``n_iter_`` and final mean log-likelihood (``score``) for the fits to be
compared by what they reached as well as by time. The first emjax call (tracing and XLA
compilation) is reported separately: it is paid once per shape and configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_description  # noqa: E402


def data(n: int, d: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, (k, d))  # overlapping: EM takes tens of iterations
    z = rng.integers(0, k, n)
    return centres[z] + rng.normal(size=(n, d)) @ np.diag(rng.uniform(0.5, 1.5, d))


def timed(call, repeats: int):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = call()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=8)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    from sklearn import cluster, mixture

    import emjax.sklearn as es

    x = data(args.n, args.d, args.k)
    for key, value in machine_description():
        print(f"{key}: {value}")
    print(f"jax {jax.__version__}, devices {jax.devices()}, N={args.n} D={args.d} K={args.k} n_init={args.n_init}, float64\n")
    pairs = [
        ("GaussianMixture", lambda m: m.GaussianMixture(args.k, n_init=args.n_init, random_state=0), mixture, es),
        ("BayesianGaussianMixture",
         lambda m: m.BayesianGaussianMixture(n_components=args.k, n_init=args.n_init, random_state=0), mixture, es),
        ("KMeans", lambda m: m.KMeans(args.k, n_init=args.n_init, random_state=0), cluster, es),
    ]
    rows = []
    for name, make, sk_module, em_module in pairs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            make(em_module).fit(x)
            first = time.perf_counter() - t0
            t_em, em = timed(lambda: make(em_module).fit(x), args.repeats)
            t_sk, sk = timed(lambda: make(sk_module).fit(x), args.repeats)
        row = [name, f"{first:.2f}", f"{t_em:.3f}", f"{t_sk:.3f}", f"{t_sk / t_em:.1f}x",
               str(em.n_iter_), str(sk.n_iter_)]
        if hasattr(em, "score_samples"):
            em.predict_proba(x)  # compile
            t_pe, _ = timed(lambda: em.predict_proba(x), args.repeats)
            t_ps, _ = timed(lambda: sk.predict_proba(x), args.repeats)
            row += [f"{em.score(x):.4f}", f"{sk.score(x):.4f}", f"{t_pe * 1e3:.1f}", f"{t_ps * 1e3:.1f}"]
        else:
            row += [f"{em.inertia_:.6g}", f"{sk.inertia_:.6g}", "", ""]
        rows.append(row)
        print(" | ".join(row), flush=True)
    header = ["estimator", "emjax first call (s)", "emjax fit (s)", "sklearn fit (s)", "speed-up",
              "emjax n_iter_", "sklearn n_iter_", "emjax score / inertia", "sklearn score / inertia",
              "emjax predict_proba (ms)", "sklearn predict_proba (ms)"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
