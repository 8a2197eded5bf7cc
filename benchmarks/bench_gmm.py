"""emjax vs scikit-learn: Gaussian mixture EM, side by side, from the same initial parameters.

Run from the repository root:

    python benchmarks/bench_gmm.py                       # N=100000, D=16, K=16, full, float32
    python benchmarks/bench_gmm.py --covariance all      # full, diag, spherical, tied
    python benchmarks/bench_gmm.py --dtype float64 --n 20000 --skip-fit
    python benchmarks/bench_gmm.py --quick               # the ratio table, all four types, ~2 minutes
    python benchmarks/bench_gmm.py --covariance all --skip-fit --skip-iter --restarts 1,8,64

What is timed (all wall clock, median and min over ``--repeats``):

* one EM iteration (one E-step over all N points + one M-step):
  - emjax, in a fit: ``emjax.fit(max_iter=11, tol=0)`` minus ``emjax.fit(max_iter=1, tol=0)``,
    divided by 10, both compiled beforehand; the extra 10 iterations run inside the
    fit's compiled ``lax.while_loop``, so this is the per-iteration cost of a real fit
    with every fixed cost (host checks, dispatch, the initial E-step) cancelled.
  - emjax, a jitted step: ``jax.jit(lambda state, data: BatchEM().step(model, state, data))``
    called on a device-resident state (one dispatch per call).
  - scikit-learn: ``gm._e_step(X)`` followed by ``gm._m_step(X, log_resp)`` on a
    ``GaussianMixture`` initialised (untimed) from the same parameters: exactly the
    two calls of one iteration of its ``fit`` loop.
  Each is measured from the shared initial parameters and, when the full fit runs, again
  from scikit-learn's fitted parameters (given to both): late in a fit most
  responsibilities are tiny, and what that costs differs between the libraries.
* a full fit of ``--iters`` iterations with ``tol=0`` (both run exactly that many),
  from the same initial parameters; for emjax the first call (which compiles) is
  reported separately. Both fits include the data checks and one more E-step than
  M-steps (emjax evaluates the initial parameters, scikit-learn ends with an E-step).

The data are a synthetic K-component Gaussian mixture (numpy, fixed seed). The initial
parameters are drawn once: equal weights, K distinct random data points as means, the
data covariance (in the covariance type's shape) for every component; scikit-learn gets
them as ``weights_init``/``means_init``/``precisions_init`` (so its own k-means
initialisation is skipped), emjax as explicit ``MixtureParams``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    format_pairs,
    format_table,
    machine_description,
    Timing,
    time_calls,
    timed_once,
)

COV_TYPES = ("full", "diag", "spherical", "tied")
REG_COVAR = 1e-6


# -- data and initial parameters ----------------------------------------------------


def make_data(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """``(n, d)`` float64 points from a random K-component Gaussian mixture.

    Means ~ N(0, 3^2 I); covariances Q diag(lambda) Q^T with a random rotation Q and
    eigenvalues uniform in [0.5, 2] (condition number <= 4); weights ~ Dirichlet(5).
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(k, 5.0))
    means = rng.normal(0.0, 3.0, size=(k, d))
    z = rng.choice(k, size=n, p=weights)
    x = np.empty((n, d))
    for j in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        chol = np.linalg.cholesky((q * rng.uniform(0.5, 2.0, size=d)) @ q.T)
        idx = np.flatnonzero(z == j)
        x[idx] = means[j] + rng.normal(size=(idx.size, d)) @ chol.T
    return x


def with_precisions(weights, means, covariances, cov_type: str):
    """``(weights, means, covariances, precisions)`` in float64, precisions (inverse
    covariances, symmetrised) in scikit-learn's shape for ``cov_type``."""
    c = np.asarray(covariances, np.float64)
    if cov_type in ("full", "tied"):
        c = 0.5 * (c + np.swapaxes(c, -1, -2))  # a float32 fit's covariances are symmetric only to rounding
        p = np.linalg.inv(c)
        p = 0.5 * (p + np.swapaxes(p, -1, -2))
    else:
        p = 1.0 / c
    return np.asarray(weights, np.float64), np.asarray(means, np.float64), c, p


def initial_params(x: np.ndarray, k: int, cov_type: str, seed: int):
    """Equal weights, K distinct random data points as means, the data covariance
    (in ``cov_type``'s shape) for every component; with precisions (``with_precisions``)."""
    rng = np.random.default_rng(seed)
    n, d = x.shape
    w0 = np.full(k, 1.0 / k)
    m0 = x[rng.choice(n, size=k, replace=False)].copy()
    cov = np.cov(x, rowvar=False, bias=True) + REG_COVAR * np.eye(d)
    c0 = {
        "full": lambda: np.broadcast_to(cov, (k, d, d)).copy(),
        "tied": lambda: cov,
        "diag": lambda: np.broadcast_to(np.diag(cov), (k, d)).copy(),
        "spherical": lambda: np.full(k, np.mean(np.diag(cov))),
    }[cov_type]()
    return with_precisions(w0, m0, c0, cov_type)


def loglik_per_point_f64(x, weights, means, covariances, cov_type: str) -> float:
    """Mean log-likelihood in float64 numpy: one evaluator for both libraries' results."""
    from scipy.linalg import solve_triangular
    from scipy.special import logsumexp

    x = np.asarray(x, np.float64)
    w = np.asarray(weights, np.float64)
    mu = np.asarray(means, np.float64)
    c = np.asarray(covariances, np.float64)
    n, d = x.shape
    k = mu.shape[0]
    lj = np.empty((n, k))
    for j in range(k):
        diff = x - mu[j]
        if cov_type in ("full", "tied"):
            cj = c[j] if cov_type == "full" else c
            chol = np.linalg.cholesky(cj)
            y = solve_triangular(chol, diff.T, lower=True)
            maha = np.sum(y * y, axis=0)
            logdet = 2.0 * np.sum(np.log(np.diag(chol)))
        elif cov_type == "diag":
            maha = np.sum(diff * diff / c[j], axis=1)
            logdet = np.sum(np.log(c[j]))
        else:
            maha = np.sum(diff * diff, axis=1) / c[j]
            logdet = d * np.log(c[j])
        lj[:, j] = np.log(w[j]) - 0.5 * (d * np.log(2 * np.pi) + logdet + maha)
    return float(np.mean(logsumexp(lj, axis=1)))


# -- emjax ----------------------------------------------------------------------------


def _emjax_setup(x_np, params, cov_type, args, dtype):
    import jax
    import jax.numpy as jnp
    import emjax

    w, m, c, _ = params
    x = jax.device_put(jnp.asarray(x_np, dtype))
    model = emjax.Mixture(emjax.Gaussian(cov_type, reg_covar=REG_COVAR), n_components=args.k)
    p0 = emjax.MixtureParams(
        weights=jnp.asarray(w, dtype),
        components=emjax.GaussianParams(means=jnp.asarray(m, dtype), covariances=jnp.asarray(c, dtype)),
    )

    def fit(max_iter):
        res = emjax.fit(model, x, key=jax.random.key(0), init=p0, max_iter=max_iter, tol=0.0, chunk_size=args.chunk_size)
        return jax.block_until_ready(res)

    return x, model, p0, fit


def emjax_iteration(x_np, params, cov_type, args, dtype):
    """Compiled callables for one EM iteration from ``params``: ``fit(1)``, ``fit(11)``
    and a jitted ``BatchEM`` step (``None`` if the internals changed under us)."""
    import jax
    import emjax

    out = {}
    x, model, p0, fit = _emjax_setup(x_np, params, cov_type, args, dtype)
    fit(1)  # compile both programs first
    fit(11)
    out["fit1"], out["fit11"] = (lambda: fit(1)), (lambda: fit(11))
    out["step"] = None
    try:  # a directly jitted BatchEM step; the internals may change under us: report, don't die
        from emjax._chunks import default_chunk_size
        from emjax.data import ArrayData as Data

        n, d = x_np.shape
        chunk = args.chunk_size or default_chunk_size(n, args.k * d)
        data = Data(x, None, int(chunk))
        alg = emjax.BatchEM()
        init_fn = jax.jit(lambda p, data: alg.init(model, p, data))
        step_fn = jax.jit(lambda st, data: alg.step(model, st, data))
        st0 = jax.block_until_ready(init_fn(p0, data))
        jax.block_until_ready(step_fn(st0, data))
        out["step"] = lambda: jax.block_until_ready(step_fn(st0, data))
        out["chunk_size"] = chunk
    except Exception as e:
        out["step_error"] = f"{type(e).__name__}: {e}"
    return out


def interleaved_iteration(emjax_calls, sklearn_calls, repeats: int) -> dict:
    """One EM iteration of both libraries, timed in turn within each repeat.

    Each repeat times emjax's ``fit(1)`` and ``fit(11)`` (their difference over 10 is
    that repeat's per-iteration sample), its jitted step, then scikit-learn's
    iteration, so a slow spell of the machine lands on both sides of the ratio
    rather than on whichever library happened to be running.
    """
    fit, step, sk = [], [], []
    for _ in range(repeats):
        t1 = time_calls(emjax_calls["fit1"], 1).median
        t11 = time_calls(emjax_calls["fit11"], 1).median
        fit.append((t11 - t1) / 10)
        if emjax_calls["step"] is not None:
            step.append(time_calls(emjax_calls["step"], 1).median)
        sk.append(time_calls(sklearn_calls["one_iteration"], 1, setup=sklearn_calls["reset"]).median)
    return {"fit": Timing(fit), "step": Timing(step) if step else None, "sklearn": Timing(sk)}


def emjax_fit(x_np, params, cov_type, args, dtype):
    """The full fit: first call (compiles), then timed repeats, and the result."""
    import emjax

    out = {}
    _, _, _, fit = _emjax_setup(x_np, params, cov_type, args, dtype)
    out["first"], _ = timed_once(lambda: fit(args.iters))
    out["time"] = time_calls(lambda: fit(args.iters), args.fit_repeats)
    res = fit(args.iters)
    out["ll"] = float(res.objective[0]) / float(res.n_points)
    out["n_iter"] = int(res.n_iter[0])
    out["status"] = emjax.RESULTS.message(int(res.status[0]))
    out["ok"] = int(res.status[0]) in (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    p = res.params
    out["params"] = (
        np.asarray(p.weights, np.float64),
        np.asarray(p.components.means, np.float64),
        np.asarray(p.components.covariances, np.float64),
    )
    return out


def emjax_restarts(x_np, cov_type, args, dtype, n_restarts: int) -> float:
    """Seconds per iteration of a fit with ``n_restarts`` random restarts
    (``init="random"``): ``[t(max_iter=6) - t(max_iter=1)] / 5``, both compiled first."""
    import jax
    import jax.numpy as jnp
    import emjax

    x = jax.device_put(jnp.asarray(x_np, dtype))
    model = emjax.Mixture(emjax.Gaussian(cov_type, reg_covar=REG_COVAR), n_components=args.k)

    def fit(max_iter):
        res = emjax.fit(model, x, key=jax.random.key(0), init="random", n_restarts=n_restarts, max_iter=max_iter,
                        tol=0.0, chunk_size=args.chunk_size)
        return jax.block_until_ready(res)

    fit(1), fit(6)
    t1 = time_calls(lambda: fit(1), args.repeats)
    t6 = time_calls(lambda: fit(6), args.repeats)
    return (t6.median - t1.median) / 5


# -- scikit-learn ---------------------------------------------------------------------


def _sklearn_model(params, cov_type, args, dtype_np, max_iter):
    from sklearn.mixture import GaussianMixture

    w, m, _, p = (np.asarray(a, dtype_np) for a in params)
    return GaussianMixture(
        n_components=args.k,
        covariance_type=cov_type,
        reg_covar=REG_COVAR,
        tol=0.0,
        max_iter=max_iter,
        n_init=1,
        weights_init=w,
        means_init=m,
        precisions_init=p,  # all three given: scikit-learn skips its k-means initialisation
        random_state=0,
    )


def sklearn_iteration(x_np, params, cov_type, args, dtype_np):
    """One EM iteration from ``params``: ``_e_step`` + ``_m_step`` as ``one_iteration``,
    with ``reset`` (untimed) restoring the parameters before each."""
    out = {}
    X = np.ascontiguousarray(x_np, dtype=dtype_np)
    gm = _sklearn_model(params, cov_type, args, dtype_np, 1)
    try:  # scikit-learn >= 1.8 takes the array namespace
        from sklearn.utils._array_api import get_namespace

        gm._check_parameters(X, xp=get_namespace(X)[0])
    except (ImportError, TypeError):
        gm._check_parameters(X)
    rs = np.random.RandomState(0)

    def reset():
        gm._initialize_parameters(X, rs)

    def one_iteration():
        _, log_resp = gm._e_step(X)
        gm._m_step(X, log_resp)

    reset()
    one_iteration()  # warm-up
    out["reset"], out["one_iteration"] = reset, one_iteration
    reset()
    _, log_resp = gm._e_step(X)
    out["dtype"] = f"{X.dtype}/{log_resp.dtype}"
    return out


def sklearn_fit(x_np, params, cov_type, args, dtype_np):
    out = {}
    X = np.ascontiguousarray(x_np, dtype=dtype_np)
    gm = _sklearn_model(params, cov_type, args, dtype_np, args.iters)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: tol=0 never "converges"
        out["time"] = time_calls(lambda: gm.fit(X), args.fit_repeats)
    out["ll"] = float(gm.score(X))
    out["n_iter"] = int(gm.n_iter_)
    out["params"] = (
        np.asarray(gm.weights_, np.float64),
        np.asarray(gm.means_, np.float64),
        np.asarray(gm.covariances_, np.float64),
    )
    return out


# -- optional third parties (never installed by this script) -----------------------


def bench_others(x_np, init, cov_type, args, dtype_np):
    """Best-effort timings of gmmx and pomegranate when they are importable.

    Their APIs are not pinned by emjax; any failure is reported as text.
    """
    lines = []
    w0, m0, c0, _ = (np.asarray(a, dtype_np) for a in init)
    try:
        import gmmx  # noqa: F401
    except ImportError:
        lines.append("gmmx: not installed")
    else:
        if cov_type not in ("full", "diag"):
            lines.append(f"gmmx: {cov_type} covariances not supported by gmmx, skipped")
        else:
            try:
                import jax
                from gmmx import EMFitter, GaussianMixtureModelJax

                x = jax.device_put(x_np.astype(dtype_np))
                gmm0 = GaussianMixtureModelJax.from_squeezed(
                    means=m0, covariances=c0, weights=w0, covariance_type=cov_type
                )
                fitter = EMFitter(tol=0.0, max_iter=args.iters, reg_covar=REG_COVAR)
                run = lambda: jax.block_until_ready(fitter.fit(x=x, gmm=gmm0))  # noqa: E731
                first, _ = timed_once(run)
                t = time_calls(run, args.fit_repeats)
                lines.append(
                    f"gmmx {getattr(gmmx, '__version__', '?')}: {args.iters}-iteration fit "
                    f"{t.s()} s median (min), first call {first:.2f} s"
                )
            except Exception as e:
                lines.append(f"gmmx: failed ({type(e).__name__}: {e})")
    try:
        import pomegranate  # noqa: F401
    except ImportError:
        lines.append("pomegranate: not installed")
    else:
        try:
            import torch
            from pomegranate.distributions import Normal
            from pomegranate.gmm import GeneralMixtureModel

            pct = {"full": "full", "diag": "diag", "spherical": "sphere"}.get(cov_type)
            if pct is None:
                raise NotImplementedError(f"{cov_type} covariances")
            X = torch.from_numpy(np.ascontiguousarray(x_np, dtype_np))

            def run():
                dists = [
                    Normal(means=torch.from_numpy(m0[j].copy()), covs=torch.from_numpy(np.asarray(c0[j]).copy()),
                           covariance_type=pct)
                    for j in range(args.k)
                ]
                gm = GeneralMixtureModel(dists, priors=torch.from_numpy(w0.copy()), max_iter=args.iters, tol=0.0)
                return gm.fit(X)

            t = time_calls(run, args.fit_repeats)
            lines.append(f"pomegranate {getattr(pomegranate, '__version__', '?')}: {args.iters}-iteration fit {t.s()} s")
        except Exception as e:
            lines.append(f"pomegranate: failed ({type(e).__name__}: {e})")
    return lines


# -- main -----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="points (default 100000)")
    p.add_argument("--d", type=int, default=16, help="features (default 16)")
    p.add_argument("--k", type=int, default=16, help="components (default 16)")
    p.add_argument("--covariance", default="full", choices=COV_TYPES + ("all",), help="covariance type, or all")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--iters", type=int, default=100, help="EM iterations of the full fit (tol=0; default 100)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5; 7 with --quick)")
    p.add_argument("--fit-repeats", type=int, default=None, help="timed repeats of the full fit (default: --repeats)")
    p.add_argument("--skip-fit", action="store_true", help="only time one EM iteration")
    p.add_argument("--skip-iter", action="store_true", help="only time the full fit")
    p.add_argument("--chunk-size", type=int, default=None, help="emjax E-step chunk rows (default: emjax's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restarts", default=None,
                   help="comma-separated R (e.g. 1,8,64): also time one iteration of a fit with R random restarts")
    p.add_argument("--quick", action="store_true",
                   help="the ratio table only: all four covariance types, one iteration, 7 repeats (about 2 minutes)")
    args = p.parse_args(argv)
    if args.quick:
        args.covariance, args.skip_fit = "all", True
    if args.repeats is None:
        args.repeats = 7 if args.quick else 5
    args.restarts = [int(r) for r in args.restarts.split(",")] if args.restarts else []
    if args.fit_repeats is None:
        args.fit_repeats = args.repeats
    if args.repeats < 1 or args.fit_repeats < 1 or args.iters < 1:
        p.error("--repeats, --fit-repeats and --iters must be >= 1")
    if args.k > args.n:
        p.error("--k must be <= --n")
    return args


METHOD = """\
Method: same data, same initial parameters, reg_covar=1e-6, tol=0.
  emjax (fit)  = [t(emjax.fit, max_iter=11) - t(emjax.fit, max_iter=1)] / 10, both compiled beforehand
                 and timed back to back: one M-step + one E-step inside the compiled while_loop of a
                 real fit.
  emjax (step) = one call of jax.jit(lambda s, data: BatchEM().step(model, s, data)) (M-step + E-step).
  sklearn      = gm._e_step(X) then gm._m_step(X, log_resp): the body of GaussianMixture.fit's loop,
                 the parameters reset (untimed) before each repeat.
  The three are timed in turn within each repeat (interleaved), so the machine's slow spells fall on
  both sides of the speed-up.
  'at' = the parameters the iteration starts from: 'init' = the shared initial parameters; 'fitted'
  = scikit-learn's parameters after the full fit (given to both), i.e. an iteration late in a fit.
  Full fit = wall time of fit() with max_iter=iters, tol=0 (both run exactly iters iterations, and both
  include their input checks and one more E-step than M-steps); 'first call' includes emjax's
  compilation. ll/pt = final log-likelihood per point as each library reports it (emjax
  objective / N, sklearn score(X)); 'f64' re-evaluates both final parameters with one float64
  numpy evaluator, and 'err' = |reported - own f64 re-evaluation|. Times: median (min) of the repeats."""


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    dtype_np = np.float64 if args.dtype == "float64" else np.float32
    cov_types = COV_TYPES if args.covariance == "all" else (args.covariance,)

    print("emjax vs scikit-learn GaussianMixture")
    print(format_pairs(machine_description()))
    print("  command              : python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]))
    print()
    print(METHOD)
    print()

    t0 = time.perf_counter()
    x = make_data(args.n, args.d, args.k, args.seed)
    print(f"data: {args.n} x {args.d} points from a {args.k}-component mixture ({time.perf_counter() - t0:.1f} s to draw)")

    iter_rows, fit_rows, agree_rows, restart_rows, notes = [], [], [], [], []
    shape = [str(args.n), str(args.d), str(args.k), args.dtype]

    def iteration_row(ct, at, params):
        e = emjax_iteration(x, params, ct, args, dtype)
        s = sklearn_iteration(x, params, ct, args, dtype_np)
        t = interleaved_iteration(e, s, args.repeats)
        if "step_error" in e:
            notes.append(f"[{ct}] emjax jitted step not timed: {e['step_error']}")
        fit, step, sk = t["fit"], t["step"], t["sklearn"]
        iter_rows.append(
            [ct] + shape + [
                at,
                fit.ms(),
                step.ms() if step else "n/a",
                sk.ms(),
                f"{sk.median / fit.median:.2f}x",
                f"{sk.median / step.median:.2f}x" if step else "n/a",
            ]
        )
        print(
            f"[{ct}] one iteration at {at}: emjax {fit.median * 1e3:.1f} ms (fit), "
            f"{step.median * 1e3 if step else float('nan'):.1f} ms (step); sklearn {sk.median * 1e3:.1f} ms",
            flush=True,
        )
        return e, s

    for ct in cov_types:
        init = initial_params(x, args.k, ct, args.seed + 1)
        if not args.skip_iter:
            e, s = iteration_row(ct, "init", init)
            notes.append(f"[{ct}] scikit-learn X/log_resp dtype: {s['dtype']}; emjax chunk_size: {e.get('chunk_size', '?')}")

        if not args.skip_fit:
            print(f"[{ct}] full fits ...", flush=True)
            e = emjax_fit(x, init, ct, args, dtype)
            s = sklearn_fit(x, init, ct, args, dtype_np)
            ll_e64 = loglik_per_point_f64(x, *e["params"], ct)
            ll_s64 = loglik_per_point_f64(x, *s["params"], ct)
            fit_rows.append(
                [ct] + shape + [
                    str(args.iters),
                    f"{e['first']:.2f}",
                    e["time"].s(),
                    s["time"].s(),
                    f"{s['time'].median / e['time'].median:.2f}x",
                    f"{e['time'].median / args.iters * 1e3:.1f}",
                    f"{s['time'].median / args.iters * 1e3:.1f}",
                ]
            )
            (we, me, ce), (ws, ms, cs) = e["params"], s["params"]
            agree_rows.append(
                [ct] + shape + [
                    f"{e['n_iter']}/{s['n_iter']}",
                    f"{e['ll']:.6f}",
                    f"{s['ll']:.6f}",
                    f"{abs(e['ll'] - s['ll']):.1e}",
                    f"{abs(ll_e64 - ll_s64):.1e}",
                    f"{abs(e['ll'] - ll_e64):.1e}",
                    f"{abs(s['ll'] - ll_s64):.1e}",
                    f"{np.max(np.abs(we - ws)):.1e}",
                    f"{np.max(np.abs(me - ms)):.1e}",
                    f"{np.max(np.abs(ce - cs)):.1e}",
                ]
            )
            if not e["ok"]:
                notes.append(f"[{ct}] emjax fit status: {e['status']}")
            print(
                f"[{ct}] fit: emjax {e['time'].median:.2f} s (first {e['first']:.2f} s), "
                f"sklearn {s['time'].median:.2f} s; ll/pt {e['ll']:.6f} vs {s['ll']:.6f}",
                flush=True,
            )
            if not args.skip_iter:
                iteration_row(ct, "fitted", with_precisions(*s["params"], ct))

        if args.restarts:
            times = {r: emjax_restarts(x, ct, args, dtype, r) for r in args.restarts}
            restart_rows.append(
                [ct] + shape + [f"{times[r] * 1e3:.1f} ({times[r] / r * 1e3:.1f})" for r in args.restarts]
            )
            print(f"[{ct}] restarts: " + ", ".join(f"R={r} {times[r] * 1e3:.1f} ms" for r in args.restarts), flush=True)

        if args.quick:
            continue
        others = bench_others(x, init, ct, args, dtype_np)
        for ln in others:
            if ln.endswith("not installed"):
                if ln not in notes:
                    notes.insert(0, ln)
            else:
                notes.append(f"[{ct}] {ln}")

    print()
    head = ["covariance", "N", "D", "K", "dtype"]
    if iter_rows:
        print(f"One EM iteration (E-step + M-step), ms: median (min) of {args.repeats}")
        print(
            format_table(
                head + ["at", "emjax (fit)", "emjax (step)", "sklearn", "speed-up (fit)", "speed-up (step)"], iter_rows
            )
        )
        print("speed-up = sklearn median / emjax median")
        print()
    if fit_rows:
        print(f"Full fit, {args.iters} iterations, tol=0, from the same initial parameters: s, median (min) of {args.fit_repeats}")
        print(
            format_table(
                head + ["iters", "emjax 1st call", "emjax", "sklearn", "speed-up", "emjax ms/it", "sklearn ms/it"],
                fit_rows,
            )
        )
        print()
        print("Agreement of the fits: n_iter (emjax/sklearn); final ll/pt as reported; |diff| reported; |diff| f64;")
        print("err = |reported - own f64 re-evaluation|; max |diff| of weights, means, covariances")
        print(
            format_table(
                head + ["n_iter", "emjax ll/pt", "sklearn ll/pt", "|diff|", "|diff| f64", "emjax err", "sklearn err",
                        "weights", "means", "covs"],
                agree_rows,
            )
        )
        print()
    if restart_rows:
        print(f"Fits with R random restarts (init='random'): ms per iteration, (per restart); median of {args.repeats}")
        print(format_table(head + [f"R={r}" for r in args.restarts], restart_rows))
        print()
    if notes:
        print("Notes:")
        for ln in notes:
            print("  " + ln)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
