"""The discrete and count families against a hand-written NumPy EM, and their restart cost.

    python benchmarks/bench_families.py                  # N=100000, D=16, K=16, float32, all five
    python benchmarks/bench_families.py --family poisson --n 20000

For each family (Bernoulli, Categorical, Multinomial, Binomial, Poisson) on one
synthetic K-component mixture (numpy, fixed seed), from the same initial parameters:

* emjax, one EM iteration inside a compiled ``emjax.fit``:
  ``[t(max_iter=11) - t(max_iter=1)] / 10``, both compiled beforehand; with one
  restart, and per restart with R restarts (``--restarts``, default 8) run as emjax
  chooses (one after another on a CPU) and as one ``vmap`` (``restart_batch_size=R``):
  a restart should cost no more than a fit alone.
* NumPy, one iteration of a vectorised EM written here (log densities as matmuls,
  logsumexp, the closed-form M-step), in float32 like emjax, median of the repeats.
* agreement: the log-likelihood per point after 10 iterations from the same start,
  emjax (float32) against the NumPy EM run in float64.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_pairs, format_table, machine_description, time_calls  # noqa: E402

FAMILIES = ("bernoulli", "categorical", "multinomial", "binomial", "poisson")
N_CATEGORIES = 4
N_TRIALS = 20
N_DRAWS = 50


# -- data and initial parameters ------------------------------------------------------


def make_problem(family: str, n: int, d: int, k: int, seed: int):
    """``(x, theta0, w0)``: data drawn from a random K-component mixture of ``family``
    and initial component parameters (a perturbed random draw) with equal weights."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, k, size=n)
    w0 = np.full(k, 1.0 / k)
    if family == "bernoulli":
        theta = rng.uniform(0.05, 0.95, size=(k, d))
        x = (rng.random((n, d)) < theta[z]).astype(np.float64)
        theta0 = rng.uniform(0.3, 0.7, size=(k, d))
    elif family == "categorical":
        theta = rng.dirichlet(np.ones(N_CATEGORIES), size=(k, d))
        cum = np.cumsum(theta[z], axis=-1)
        x = (rng.random((n, d, 1)) > cum).sum(-1).clip(0, N_CATEGORIES - 1).astype(np.float64)
        theta0 = rng.dirichlet(np.full(N_CATEGORIES, 5.0), size=(k, d))
    elif family == "multinomial":
        theta = rng.dirichlet(np.ones(d), size=k)
        x = np.stack([rng.multinomial(N_DRAWS, theta[j]) for j in z]).astype(np.float64)
        theta0 = rng.dirichlet(np.full(d, 5.0), size=k)
    elif family == "binomial":
        theta = rng.uniform(0.05, 0.95, size=(k, d))
        x = rng.binomial(N_TRIALS, theta[z]).astype(np.float64)
        theta0 = rng.uniform(0.3, 0.7, size=(k, d))
    elif family == "poisson":
        theta = rng.uniform(1.0, 10.0, size=(k, d))
        x = rng.poisson(theta[z]).astype(np.float64)
        theta0 = x[rng.choice(n, k, replace=False)] + 0.5
    else:
        raise ValueError(family)
    return x, theta0, w0


# -- the NumPy EM -----------------------------------------------------------------------


def numpy_em(family: str, x: np.ndarray, dtype):
    """``(const, step)``: the per-point constant of the log density and one EM step
    ``(w, theta) -> (w, theta, loglik at the input)`` for ``family``, in ``dtype``."""
    from scipy.special import gammaln, logsumexp

    x = x.astype(dtype)
    n, d = x.shape
    if family == "categorical":
        onehot = np.zeros((n, d * N_CATEGORIES), dtype)
        onehot[np.arange(n)[:, None], np.arange(d) * N_CATEGORIES + x.astype(int)] = 1
    if family == "multinomial":
        const = (gammaln(x.sum(1) + 1) - gammaln(x + 1).sum(1)).astype(dtype)
    elif family == "binomial":
        const = (gammaln(N_TRIALS + 1) - gammaln(x + 1) - gammaln(N_TRIALS - x + 1)).sum(1).astype(dtype)
    elif family == "poisson":
        const = (-gammaln(x + 1).sum(1)).astype(dtype)
    else:
        const = np.zeros(n, dtype)

    def log_density(theta):
        if family == "bernoulli":
            return x @ np.log(theta).T + (1 - x) @ np.log1p(-theta).T
        if family == "categorical":
            return onehot @ np.log(theta).reshape(theta.shape[0], -1).T
        if family == "multinomial":
            return x @ np.log(theta).T
        if family == "binomial":
            return x @ np.log(theta).T + (N_TRIALS - x) @ np.log1p(-theta).T
        return x @ np.log(theta).T - theta.sum(1)

    def step(w, theta):
        lj = log_density(theta) + const[:, None] + np.log(w)
        ll = logsumexp(lj, axis=1)
        r = np.exp(lj - ll[:, None])
        nk = r.sum(0)
        if family == "categorical":
            new = (r.T @ onehot).reshape(theta.shape) / nk[:, None, None]
        elif family == "multinomial":
            s = r.T @ x
            new = s / s.sum(1, keepdims=True)
        elif family == "binomial":
            new = (r.T @ x) / (N_TRIALS * nk[:, None])
        else:
            new = (r.T @ x) / nk[:, None]
        return nk / n, new.astype(dtype), float(ll.sum())

    return step


# -- emjax ------------------------------------------------------------------------------


def emjax_model(family: str, k: int):
    import emjax

    comp = {
        "bernoulli": lambda: emjax.Bernoulli(),
        "categorical": lambda: emjax.Categorical(N_CATEGORIES),
        "multinomial": lambda: emjax.Multinomial(),
        "binomial": lambda: emjax.Binomial(N_TRIALS),
        "poisson": lambda: emjax.Poisson(),
    }[family]()
    return emjax.Mixture(comp, n_components=k)


def emjax_params(family: str, theta0, w0):
    import jax.numpy as jnp
    import emjax

    t = jnp.asarray(theta0, jnp.float32)
    comp = {
        "bernoulli": lambda: emjax.BernoulliParams(t),
        "categorical": lambda: emjax.CategoricalParams(t),
        "multinomial": lambda: emjax.MultinomialParams(t),
        "binomial": lambda: emjax.BinomialParams(t),
        "poisson": lambda: emjax.PoissonParams(t),
    }[family]()
    return emjax.MixtureParams(jnp.asarray(w0, jnp.float32), comp)


def emjax_iteration(model, x, p0, repeats: int, n_restarts: int = 1, batch=None) -> float:
    """Seconds per EM iteration inside a compiled fit (per restart when ``n_restarts`` > 1)."""
    import jax
    import emjax

    init = p0 if n_restarts == 1 else (lambda key, sample: p0)

    def fit(max_iter):
        res = emjax.fit(model, x, key=jax.random.key(0), init=init, n_restarts=n_restarts, max_iter=max_iter,
                        tol=0.0, restart_batch_size=batch)
        return jax.block_until_ready(res)

    fit(1), fit(11)
    t1 = time_calls(lambda: fit(1), repeats)
    t11 = time_calls(lambda: fit(11), repeats)
    return (t11.median - t1.median) / 10 / n_restarts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--family", default="all", choices=FAMILIES + ("all",))
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=16)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--restarts", type=int, default=8, help="R for the per-restart cost (default 8; 1 skips it)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import emjax

    print("emjax discrete and count families vs a NumPy EM")
    print(format_pairs(machine_description()))
    print("  command              : python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print()
    rows = []
    for family in FAMILIES if args.family == "all" else (args.family,):
        x, theta0, w0 = make_problem(family, args.n, args.d, args.k, args.seed)
        model = emjax_model(family, args.k)
        p0 = emjax_params(family, theta0, w0)
        xj = jnp.asarray(x, jnp.float32)
        one = emjax_iteration(model, xj, p0, args.repeats)
        if args.restarts > 1:
            seq = emjax_iteration(model, xj, p0, args.repeats, args.restarts)
            vm = emjax_iteration(model, xj, p0, args.repeats, args.restarts, batch=args.restarts)
        step32 = numpy_em(family, x, np.float32)
        w, th = w0.astype(np.float32), theta0.astype(np.float32)
        step32(w, th)
        t_np = time_calls(lambda: step32(w, th), args.repeats).median
        # Agreement after 10 iterations from the same start: emjax float32, NumPy float64.
        res = emjax.fit(model, xj, key=jax.random.key(0), init=p0, max_iter=10, tol=0.0)
        step64 = numpy_em(family, x, np.float64)
        w64, th64 = w0.astype(np.float64), theta0.astype(np.float64)
        for _ in range(10):
            w64, th64, _ = step64(w64, th64)
        _, _, ll64 = step64(w64, th64)
        ll_e = float(res.objective[0]) / args.n
        rows.append([
            family, str(args.n), str(args.d), str(args.k),
            f"{one * 1e3:.1f}",
            f"{seq * 1e3:.1f}" if args.restarts > 1 else "-",
            f"{vm * 1e3:.1f}" if args.restarts > 1 else "-",
            f"{t_np * 1e3:.1f}",
            f"{t_np / one:.1f}x",
            f"{ll_e:.6f}", f"{ll64 / args.n:.6f}", f"{abs(ll_e - ll64 / args.n):.1e}",
        ])
        print(f"[{family}] emjax {one * 1e3:.1f} ms/iter, numpy {t_np * 1e3:.1f} ms/iter", flush=True)
    print()
    r = args.restarts
    print(f"One EM iteration, ms (median of {args.repeats}); float32; per restart with R={r} as emjax runs them "
          f"and as one vmap; ll/pt after 10 iterations (emjax float32, NumPy float64)")
    print(format_table(
        ["family", "N", "D", "K", "emjax R=1", f"per restart R={r}", f"per restart vmap R={r}", "numpy",
         "speed-up", "emjax ll/pt", "numpy f64 ll/pt", "|diff|"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
