"""The ``emjax`` command: a demo on Old Faithful and Gaussian mixture fits of CSV files.

Exit codes follow argparse's conventions: 0 on success, 2 for a usage error
(bad arguments, an unreadable or non-numeric CSV, parameters emjax rejects),
1 when a fit itself fails.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import jax

import emjax
from ._svg import write_mixture_svg
from ..families import COVARIANCE_TYPES


class CLIError(Exception):
    """A user error: printed as ``emjax: error: <message>``, exit code 2."""


# -- argument parsing ------------------------------------------------------------------


def _number_at_least(convert, low, what: str, high=None):
    """An argparse type: ``convert(text)``, finite, at least ``low`` (and at most ``high``)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}") from None
        if not (math.isfinite(value) and value >= low and (high is None or value <= high)):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
        return value

    return parse


_positive_int = _number_at_least(int, 1, "a positive integer")
_nonnegative_float = _number_at_least(float, 0.0, "a finite number >= 0")
#: emjax.fit counts iterations in int32 (emjax._runner.MAX_ITER).
_max_iter = _number_at_least(int, 0, f"an integer from 0 to {2**31 - 2}", high=2**31 - 2)
#: jax.random.key takes a signed 64-bit seed; a larger one would end in an OverflowError.
_seed = _number_at_least(int, -(2**63), f"an integer from {-(2**63)} to {2**63 - 1}", high=2**63 - 1)


def build_parser() -> argparse.ArgumentParser:
    """The ``emjax`` argument parser with its ``demo`` and ``fit`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="emjax",
        description="Gaussian mixture models fitted by EM, on JAX.",
        epilog="Run 'emjax demo' for a first look, 'emjax fit --help' for fitting your own data.",
    )
    parser.add_argument("--version", action="version", version=f"emjax {emjax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="fit 2 Gaussians to the bundled Old Faithful data and plot them",
        description="Fit a 2-component full-covariance Gaussian mixture to the Old Faithful geyser data "
        "(272 points), print the EM iterations and the fitted parameters, and write an SVG plot.",
    )
    demo.add_argument(
        "--out", metavar="PATH", default="emjax-demo.svg", help="SVG file to write (default: %(default)s)"
    )
    demo.add_argument(
        "--seed", type=_seed, default=0, help="PRNG seed of the k-means initialisation (default: %(default)s)"
    )

    fit = sub.add_parser(
        "fit",
        help="fit a Gaussian mixture to a numeric CSV file",
        description="Fit a K-component Gaussian mixture to the rows of a numeric CSV file. Writes "
        "PREFIX.json (the fitted parameters and criteria) and, for 2 or more columns, PREFIX.svg "
        "(a plot of the first two columns).",
    )
    fit.add_argument(
        "csv", metavar="FILE.csv", help="comma-separated numbers, one point per row; an optional header row"
    )
    fit.add_argument(
        "-k", "--components", dest="k", type=_positive_int, required=True, help="number of components K"
    )
    fit.add_argument(
        "--covariance",
        choices=COVARIANCE_TYPES,
        default="full",
        help="covariance type (default: %(default)s)",
    )
    fit.add_argument(
        "--restarts", type=_positive_int, default=1, help="random restarts, run together (default: %(default)s)"
    )
    fit.add_argument(
        "--max-iter",
        type=_max_iter,
        default=100,
        help="most EM iterations per restart (default: %(default)s)",
    )
    fit.add_argument(
        "--tol",
        type=_nonnegative_float,
        default=1e-6,
        help="stop when the log-likelihood per point changes by at most this much (default: %(default)s)",
    )
    fit.add_argument("--seed", type=_seed, default=0, help="PRNG seed (default: %(default)s)")
    fit.add_argument(
        "--prior",
        action="store_true",
        help="MAP-EM with the Fraley-Raftery normal-inverse-Wishart prior, which keeps components from collapsing",
    )
    fit.add_argument(
        "--out",
        metavar="PREFIX",
        help="write PREFIX.json and PREFIX.svg (default: the CSV's name with '-emjax' appended, next to it)",
    )
    fit.add_argument("--no-header", action="store_true", help="the first row is data, not column names")
    return parser


# -- reading data ----------------------------------------------------------------------


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(path: Path, *, header: bool | None = None) -> tuple[np.ndarray, list[str]]:
    """Read a numeric CSV file into an ``(N, D)`` float64 array.

    Args:
        path: the file.
        header: ``True``: the first row holds column names; ``False``: it is data;
            ``None``: it is a header exactly when some field in it is not a number.

    Returns:
        ``(data, column_names)``; without a header the columns are named
        ``x1 .. xD``.

    Raises:
        CLIError: the file cannot be read, is empty, has rows of different
            lengths, or holds a field that is not a finite number.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            # Line numbers are kept so every error can point at the offending line.
            rows = [(i, [field.strip() for field in row]) for i, row in enumerate(csv.reader(f), start=1)]
    except FileNotFoundError:
        raise CLIError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CLIError(f"{path} is a directory, not a CSV file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CLIError(f"cannot read {path}: {e}") from None
    rows = [(i, row) for i, row in rows if any(row)]  # blank lines carry no data
    if not rows:
        raise CLIError(f"{path} is empty: no rows to fit")

    first_line, first = rows[0]
    if header is None:
        header = any(_parse_float(field) is None for field in first)
    if header:
        names = list(first)
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path} has a header row but no data rows")
    else:
        names = [f"x{j + 1}" for j in range(len(first))]

    d = len(names)
    data = np.empty((len(rows), d), dtype=np.float64)
    for r, (line, row) in enumerate(rows):
        if len(row) != d:
            raise CLIError(
                f"{path}, line {line}: {len(row)} field{'s' if len(row) != 1 else ''}, but the first row has {d}"
            )
        for j, field in enumerate(row):
            value = _parse_float(field)
            if value is None or not math.isfinite(value):
                what = "an empty field" if field == "" else f"{field!r} is not a finite number"
                raise CLIError(
                    f"{path}, line {line}, column {j + 1} ({names[j]!r}): {what}; "
                    f"emjax fit needs every field to be a number"
                    + (" (use --no-header only when the first row is data)" if line == first_line else "")
                )
            data[r, j] = value
    return data, names


# -- printing --------------------------------------------------------------------------


def _format_vector(v) -> str:
    return "[" + "  ".join(f"{float(a):.6g}" for a in np.ravel(v)) + "]"


def _format_matrix(m, indent: int) -> str:
    """Rows of a matrix, numbers right-aligned in columns, continuation lines indented."""
    cells = [[f"{float(a):.6g}" for a in row] for row in np.asarray(m)]
    width = max(len(c) for row in cells for c in row)
    lines = ["[" + "  ".join(c.rjust(width) for c in row) + "]" for row in cells]
    return "[" + ("\n" + " " * (indent + 1)).join(lines) + "]"


def print_components(weights, means, covariances) -> None:
    """Print each component's weight, mean and (full) covariance matrix."""
    for j in range(len(weights)):
        print(f"component {j + 1}: weight {float(weights[j]):.6f}")
        print(f"  mean        {_format_vector(means[j])}")
        print(f"  covariance  {_format_matrix(covariances[j], indent=14)}")


# -- commands --------------------------------------------------------------------------


def run_demo(args: argparse.Namespace) -> int:
    """``emjax demo``: two full-covariance Gaussians fitted to Old Faithful."""
    _check_writable(Path(args.out))
    x, columns = emjax.datasets.old_faithful()
    n, d = x.shape
    model = emjax.Mixture(emjax.Gaussian("full"), n_components=2)
    print(f"Old Faithful: {n} eruptions, {d} features ({', '.join(columns)})")
    print(f"Fitting a 2-component full-covariance Gaussian mixture by EM (k-means init, seed {args.seed})\n")
    result = emjax.fit(model, x, key=jax.random.key(args.seed))

    best = int(result.best)
    n_iter = int(result.n_iter[best])
    trace = np.asarray(result.trace[best])
    print(f"{'iteration':>9}  {'log-likelihood':>15}  {'per point':>10}")
    for i in range(n_iter + 1):
        print(f"{i:9d}  {trace[i]:15.4f}  {trace[i] / n:10.6f}")
    print()

    params = result.params
    covariances = np.asarray(model.family.full_covariances(params.components))
    print_components(np.asarray(params.weights), np.asarray(params.components.means), covariances)
    print()
    print(f"status: {emjax.RESULTS.message(int(result.status[best]))} after {n_iter} iterations")
    print(f"log-likelihood: {float(result.objective[best]):.4f} ({float(result.objective[best]) / n:.6f} per point)")

    labels = np.asarray(model.predict(params, x))
    out = _write(
        args.out,
        lambda path: write_mixture_svg(
            path,
            x,
            labels,
            params.weights,
            params.components.means,
            covariances,
            feature_names=[f"{columns[0]} (min)", f"{columns[1]} (min)"],
            title="Old Faithful: 2-component Gaussian mixture (full covariances)",
            sigmas=(1, 2, 3),
        ),
    )
    print(f"wrote {out}")
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """``emjax fit``: a Gaussian mixture fitted to a CSV file, saved as JSON and SVG."""
    path = Path(args.csv)
    x, columns = read_csv(path, header=False if args.no_header else None)
    n, d = x.shape
    prefix = Path(args.out) if args.out is not None else path.with_name(path.stem + "-emjax")
    _check_writable(Path(str(prefix) + ".json"))

    # emjax validates its inputs (K against N, the data, the prior) with ValueError or
    # TypeError; here those are the user's errors and are reported without a traceback.
    try:
        prior = emjax.NormalInverseWishart.fraley_raftery(x, args.k) if args.prior else None
        model = emjax.Mixture(emjax.Gaussian(args.covariance, prior=prior), n_components=args.k)
        result = emjax.fit(
            model,
            x,
            key=jax.random.key(args.seed),
            n_restarts=args.restarts,
            max_iter=args.max_iter,
            tol=args.tol,
        )
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    except RuntimeError as e:
        print(f"emjax: fit failed: {e}", file=sys.stderr)
        return 1

    best = int(result.best)
    params = result.params
    weights = np.asarray(params.weights, dtype=np.float64)
    means = np.asarray(params.components.means, dtype=np.float64)
    covariances = np.asarray(params.components.covariances, dtype=np.float64)
    full_covariances = np.asarray(model.family.full_covariances(params.components), dtype=np.float64)
    # With --prior the EM objective includes the log prior; report the plain log-likelihood.
    loglik = float(np.sum(np.asarray(model.log_prob(params, x), dtype=np.float64)))
    bic, aic = float(model.bic(params, x)), float(model.aic(params, x))
    status = emjax.RESULTS.message(int(result.status[best]))

    how = "MAP-EM with the Fraley-Raftery prior" if args.prior else "maximum likelihood"
    print(f"{path}: {n} points, {d} feature{'s' if d != 1 else ''} ({', '.join(columns)})")
    print(f"{args.k}-component Gaussian mixture, {args.covariance} covariances, {how}, {args.restarts} restart(s)\n")
    print(result.summary())
    print()
    print(f"best restart: {best}, {status} after {int(result.n_iter[best])} iterations")
    print(f"log-likelihood: {loglik:.4f} ({loglik / n:.6f} per point)")
    print(f"BIC: {bic:.4f}")
    print(f"AIC: {aic:.4f}\n")
    print_components(weights, means, full_covariances)
    print()

    record = {
        "emjax_version": emjax.__version__,
        "data": str(path),
        "columns": columns,
        "n_points": n,
        "n_features": d,
        "n_components": args.k,
        "covariance_type": args.covariance,
        "prior": "fraley_raftery" if args.prior else None,
        "seed": args.seed,
        "restarts": args.restarts,
        "best_restart": best,
        "weights": weights.tolist(),
        "means": means.tolist(),
        # In the covariance type's own shape, as GaussianParams and scikit-learn store them ...
        "covariances": covariances.tolist(),
        # ... and as (K, D, D) matrices whatever the type, for readers that want matrices.
        "full_covariances": full_covariances.tolist(),
        "log_likelihood": loglik,
        "bic": bic,
        "aic": aic,
        "n_iter": int(result.n_iter[best]),
        "converged": bool(result.converged[best]),
        "status": int(result.status[best]),
        "status_message": status,
    }
    json_path = _write(
        Path(str(prefix) + ".json"),
        lambda p: p.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"),
    )
    print(f"wrote {json_path}")
    if d >= 2:
        labels = np.asarray(model.predict(params, x))
        svg_path = _write(
            Path(str(prefix) + ".svg"),
            lambda p: write_mixture_svg(
                p,
                x,
                labels,
                weights,
                means,
                full_covariances,
                feature_names=columns,
                title=f"{path.name}: {args.k}-component Gaussian mixture ({args.covariance} covariances)",
            ),
        )
        print(f"wrote {svg_path}")
    else:
        print("no plot: the data have a single column")
    return 0


def _check_writable(path: Path) -> None:
    """Fail before a fit, not after it, when an output cannot be written where asked."""
    parent = path.parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {path}: the directory {parent} does not exist")


def _write(path, writer) -> Path:
    """Run ``writer(path)``, turning a failure to write into a user error."""
    path = Path(path)
    try:
        writer(path)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None
    return path


# -- entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``emjax`` command.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit code: 0 on success, 2 for a usage error, 1 when a fit fails.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        # argparse exits on --help, --version and bad arguments; main returns instead.
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "demo":
            return run_demo(args)
        return run_fit(args)
    except CLIError as e:
        print(f"emjax: error: {e}", file=sys.stderr)
        return 2
