"""The cost of a derivative through a whole fit: the backward pass against the forward fit.

Run from the repository root:

    python benchmarks/bench_adjoint.py            # N=100000, D=16, K=16, full covariances, float32
    python benchmarks/bench_adjoint.py --quick    # N=20000: a minute or two

One synthetic Gaussian mixture (numpy, fixed seed, K planted components), one start
near it (the planted means moved by N(0, 1) per coordinate, identity covariances), and
a scalar loss of the fitted mixture: the mean
log-likelihood of 10,000 held-out rows. Timed, each compiled once before timing:

* **forward**: ``emjax.fit`` to convergence and the loss (no derivative);
* **implicit**: ``jax.value_and_grad`` of the loss with respect to the training data
  ``x`` (``N x D``) through ``emjax.ImplicitAdjoint()`` (GMRES, and the Neumann series);
  the backward pass is the difference from the forward fit;
* **unrolled**: the same through ``emjax.RecursiveCheckpointAdjoint()``, which runs and
  differentiates every one of ``max_iter`` steps (here ``max_iter`` = the forward fit's
  iteration count, so it is the same fit).

The fit stops when the objective changes by less than ``--tol`` per point. The gradient
of the implicit adjoint is compared with the unrolled one (the same fit, so they agree to
the fit's convergence).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import format_pairs, format_table, machine_description, time_calls, timed_once  # noqa: E402


def make_data(n: int, d: int, k: int, seed: int = 0):
    """``(x, (weights, means, covariances))``: rows of a planted mixture and the mixture."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 3.0, (k, d))
    z = rng.integers(0, k, n)
    chol = np.tril(rng.normal(0.0, 0.3, (k, d, d)), -1) + np.eye(d)[None] * rng.uniform(0.5, 1.5, (k, 1, 1))
    x = means[z] + np.einsum("nij,nj->ni", chol[z], rng.normal(size=(n, d)))
    return x.astype(np.float32), (np.full(k, 1.0 / k), means, chol @ np.swapaxes(chol, 1, 2))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--d", type=int, default=16)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--max-iter", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.repeats = 20_000, 2

    import jax
    import jax.numpy as jnp
    import emjax

    x_all, (w, m, c) = make_data(args.n + 10_000, args.d, args.k)
    x, x_test = jnp.asarray(x_all[: args.n]), jnp.asarray(x_all[args.n:])
    model = emjax.Mixture(emjax.Gaussian("full"), args.k)
    # A start near the planted mixture (means moved by N(0, 1) in every coordinate,
    # identity covariances): EM takes tens of steps to the maximum near it. (A k-means
    # start here splits some planted clusters and merges others; EM then crawls for
    # hundreds of steps toward a maximum where the likelihood is nearly flat, whose
    # derivative is ill-conditioned.)
    moved = m + np.random.default_rng(1).normal(size=m.shape)
    p0 = emjax.MixtureParams(jnp.asarray(w, jnp.float32),
                             emjax.GaussianParams(jnp.asarray(moved, jnp.float32),
                                                  jnp.broadcast_to(jnp.eye(args.d, dtype=jnp.float32), c.shape)))
    key = jax.random.key(1)

    def loss(x, adjoint, max_iter=args.max_iter):
        result = emjax.fit(model, x, key=key, init=p0, max_iter=max_iter, tol=args.tol, adjoint=adjoint)
        return jnp.mean(model.log_prob(result.params, x_test)), result.n_iter[0]

    forward = jax.jit(lambda x: loss(x, None))
    compile_s, (value, n_iter) = timed_once(lambda: jax.block_until_ready(forward(x)))
    n_iter = int(n_iter)
    rows = []
    t_forward = time_calls(lambda: jax.block_until_ready(forward(x)), args.repeats)
    per_step = t_forward.median / max(n_iter, 1)
    rows.append(["forward fit + loss", f"{compile_s:.1f}", t_forward.s(2), "1.00", "-", "-"])

    grads = {}
    variants = {
        "implicit (GMRES)": lambda x: loss(x, emjax.ImplicitAdjoint()),
        "implicit (Neumann)": lambda x: loss(x, emjax.ImplicitAdjoint(solver="neumann")),
        f"unrolled, checkpointed ({n_iter} steps)": lambda x: loss(x, emjax.RecursiveCheckpointAdjoint(), n_iter),
    }
    for name, fn in variants.items():
        value_and_grad = jax.jit(jax.value_and_grad(fn, has_aux=True))
        compile_s, ((_, _), g) = timed_once(lambda: jax.block_until_ready(value_and_grad(x)))
        t = time_calls(lambda: jax.block_until_ready(value_and_grad(x)), args.repeats)
        grads[name] = np.asarray(g)
        backward = t.median - t_forward.median
        rows.append([name, f"{compile_s:.1f}", t.s(2), f"{t.median / t_forward.median:.2f}",
                     f"{backward:.2f} ({backward / t_forward.median:.2f}x)", f"{backward / per_step:.0f}"])

    reference = grads[f"unrolled, checkpointed ({n_iter} steps)"]
    scale = np.max(np.abs(reference))
    print(format_pairs(machine_description()))
    print(f"N={args.n}, D={args.d}, K={args.k}, full covariances, float32, tol={args.tol}: "
          f"the fit took {n_iter} iterations; loss {float(value):.6f}\n")
    print(format_table(["", "compile s", "run s (median)", "x forward", "backward s (x forward)",
                        "backward in EM steps"], rows))
    for name in ("implicit (GMRES)", "implicit (Neumann)"):
        err = np.max(np.abs(grads[name] - reference)) / scale
        print(f"\nmax |{name} - unrolled| / max |unrolled| = {err:.2e}", end="")
    print()


if __name__ == "__main__":
    main()
