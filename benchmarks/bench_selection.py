"""Model selection and variational Bayes: emjax against scikit-learn, side by side.

Run from the repository root:

    python benchmarks/bench_selection.py                 # N=20000, D=4, K=1..9, 4 restarts, float32
    python benchmarks/bench_selection.py --quick         # N=5000, fewer K: about a minute

Three measurements on one synthetic Gaussian mixture (numpy, fixed seed, 5 planted components):

* **A K sweep with restarts.** ``emjax.select`` over the four covariance types and
  ``K = 1..kmax`` with ``R`` restarts (one compiled fit per type; every K and restart of a
  type run together) against the loop a scikit-learn user writes: ``GaussianMixture(K,
  covariance_type, n_init=R)`` for every (type, K), then ``bic``. Both stop when the mean
  log-likelihood changes by less than ``--tol`` per point (scikit-learn's ``tol`` has that
  meaning; so does emjax's), at most ``--max-iter`` iterations, each from its own k-means
  initialisation. emjax's first call (which compiles) and a second call (compiled) are
  reported; the chosen (type, K) and each cell's best log-likelihood are compared.
* **Variational Bayes.** ``emjax.VariationalGaussianMixture(kmax)`` against
  ``BayesianGaussianMixture(kmax)`` (full covariances, stick-breaking weights,
  scikit-learn's default priors), ``R`` restarts, the same stopping rule
  (scikit-learn compares its *total* lower bound with ``tol``, so emjax gets ``tol / N``
  per point): wall time, iterations and the number of components in use (weight above 1%).
* **The fourteen mclust structures.** One EM iteration inside a compiled ``emjax.fit``
  (``[t(max_iter=21) - t(max_iter=1)] / 20``, minima over the repeats, on 200,000 rows;
  50,000 with ``--quick``)
  for each structure at the planted K: the cost
  of the constrained M-steps (no Python peer implements them; mclust is R).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_pairs, format_table, machine_description, time_calls  # noqa: E402

COV_TYPES = ("full", "diag", "spherical", "tied")


def make_data(n: int, d: int, k: int, seed: int = 0, dtype=np.float32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 4.0, (k, d))
    z = rng.integers(0, k, n)
    chol = np.tril(rng.normal(0.0, 0.4, (k, d, d)), -1) + np.eye(d)[None] * rng.uniform(0.5, 1.5, (k, 1, 1))
    x = means[z] + np.einsum("nij,nj->ni", chol[z], rng.normal(size=(n, d)))
    return x.astype(dtype)


def bench_sweep(x, ks, restarts, max_iter, tol):
    import jax
    import emjax
    from sklearn.mixture import GaussianMixture

    families = [emjax.Gaussian(c) for c in COV_TYPES]

    def run(seed):
        sel = emjax.select(families, x, ks=ks, key=jax.random.key(seed), n_restarts=restarts, max_iter=max_iter, tol=tol)
        jax.block_until_ready(sel.result.params)
        return sel

    t0 = time.perf_counter()
    first = run(0)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    sel = run(1)
    t_second = time.perf_counter() - t0

    t0 = time.perf_counter()
    sk = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in COV_TYPES:
            for k in ks:
                gm = GaussianMixture(k, covariance_type=c, n_init=restarts, max_iter=max_iter, tol=tol,
                                     reg_covar=1e-6, random_state=0).fit(x)
                sk[c, k] = (gm.bic(x), gm.score(x) * len(x))
    t_sk = time.perf_counter() - t0
    sk_best = min(sk, key=lambda ck: sk[ck][0])
    ours = {(r.structure[len("Gaussian("):-1], r.k): r for r in sel.table}
    diffs = [(ours[ck].log_likelihood - sk[ck][1]) / len(x) for ck in sk]
    return {
        "first": t_first, "second": t_second, "sklearn": t_sk, "first_best": (first.best.structure, first.best.k),
        "best": (sel.best.structure, sel.best.k), "sk_best": sk_best, "fits": len(sk),
        "loglik_diff": (min(diffs), float(np.median(diffs)), max(diffs)),
    }


def bench_vb(x, k, restarts, max_iter, tol):
    import jax
    import emjax
    from sklearn.mixture import BayesianGaussianMixture

    model = emjax.VariationalGaussianMixture(k, "full")

    def run(seed):
        # scikit-learn's BayesianGaussianMixture compares its total lower bound (not per
        # point, as GaussianMixture does) with tol: emjax's tol is per point, so tol / N.
        r = emjax.fit(model, x, key=jax.random.key(seed), n_restarts=restarts, max_iter=max_iter, tol=tol / len(x))
        jax.block_until_ready(r.params)
        return r

    t0 = time.perf_counter()
    run(0)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = run(1)
    t_second = time.perf_counter() - t0
    w = np.asarray(model.weights(res.params))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bgm = BayesianGaussianMixture(n_components=k, n_init=restarts, max_iter=max_iter, tol=tol, random_state=0).fit(x)
    t_sk = time.perf_counter() - t0
    return {"first": t_first, "second": t_second, "sklearn": t_sk, "used": int((w > 0.01).sum()),
            "sk_used": int((bgm.weights_ > 0.01).sum()), "iters": int(res.n_iter[res.best]), "sk_iters": bgm.n_iter_}


def bench_structures(x, k, repeats):
    import jax
    import emjax

    rows = []
    for code in emjax.families.MCLUST_MODELS:
        model = emjax.Mixture(emjax.Gaussian(code), k)
        p0 = model.init(jax.random.key(0), x, "kmeans")

        def fit(n):
            return jax.block_until_ready(emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=n, tol=0.0).objective)

        fit(1), fit(21)  # compile both
        t1 = time_calls(lambda: fit(1), repeats)
        t21 = time_calls(lambda: fit(21), repeats)
        # The minima: the fixed costs (checks, the scale pass, the first E-step) vary more
        # than 20 iterations of a small fit take.
        rows.append((code, f"{(t21.min - t1.min) / 20 * 1e3:.2f}"))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=4)
    ap.add_argument("--kmax", type=int, default=9)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="N=5000, K=1..6, 3 repeats")
    args = ap.parse_args()
    if args.quick:
        args.n, args.kmax, args.repeats = 5_000, 6, 5

    print(format_pairs(machine_description()))
    x = make_data(args.n, args.d, 5)
    ks = range(1, args.kmax + 1)
    print(f"\ndata: N={args.n}, D={args.d}, 5 planted components, float32; K=1..{args.kmax}, "
          f"{args.restarts} restarts, tol={args.tol} per point, max_iter={args.max_iter}\n")

    s = bench_sweep(x, ks, args.restarts, args.max_iter, args.tol)
    print(f"K sweep over {', '.join(COV_TYPES)} ({s['fits']} models x {args.restarts} restarts):")
    print(format_table(["", "seconds", "chosen (BIC)"], [
        ["emjax.select, first call (compiles)", f"{s['first']:.1f}", f"{s['first_best']}"],
        ["emjax.select, compiled", f"{s['second']:.1f}", f"{s['best']}"],
        ["scikit-learn loop", f"{s['sklearn']:.1f}", f"{s['sk_best']}"],
    ]))
    lo, med, hi = s["loglik_diff"]
    print(f"speed-up (compiled): {s['sklearn'] / s['second']:.1f}x, with compilation {s['sklearn'] / s['first']:.1f}x")
    print(f"best log-likelihood per point, emjax - scikit-learn, over the models: min {lo:+.4f}, median {med:+.4f}, "
          f"max {hi:+.4f}\n")

    v = bench_vb(x, args.kmax, args.restarts, 500, args.tol)
    print(f"variational Bayes, K={args.kmax}, full, stick-breaking, {args.restarts} restarts:")
    print(format_table(["", "seconds", "components > 1%", "iterations (best)"], [
        ["emjax, first call (compiles)", f"{v['first']:.1f}", "", ""],
        ["emjax, compiled", f"{v['second']:.1f}", v["used"], v["iters"]],
        ["scikit-learn BayesianGaussianMixture", f"{v['sklearn']:.1f}", v["sk_used"], v["sk_iters"]],
    ]))
    print(f"speed-up (compiled): {v['sklearn'] / v['second']:.1f}x\n")

    n_struct = 50_000 if args.quick else 200_000
    print(f"one EM iteration inside emjax.fit, N={n_struct}, K=5 (ms, from minima of {args.repeats}):")
    print(format_table(["structure", "ms / iteration"], bench_structures(make_data(n_struct, args.d, 5), 5, args.repeats)))


if __name__ == "__main__":
    main()
