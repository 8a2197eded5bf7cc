"""The ``emjax`` command: a demo, and fits, model selection and predictions on CSV files.

Commands:
    ``emjax demo``: two Gaussians fitted to the bundled Old Faithful data, with a plot.
    ``emjax fit FILE.csv -k K``: a mixture of any family fitted by any algorithm;
    writes the model (read back by ``emjax predict`` and :func:`emjax.load`), a JSON
    summary and an SVG plot.
    ``emjax select FILE.csv --kmax 9``: every K (and structure), the criteria table,
    an SVG plot of the criterion against K, and the chosen model saved.
    ``emjax predict MODEL FILE.csv``: each row's label, posterior probabilities and
    log density under a saved model, as CSV.

Plots are hand-written SVG (``emjax.cli._svg``): the command line depends on
nothing beyond emjax's own dependencies, so ``pip install emjax`` and ``emjax demo``
work without matplotlib.

Modules: ``_main`` (the parser, ``emjax demo``, :func:`main`), ``_commands`` (fit,
select, predict), ``_table`` (reading CSV; errors that name the file's line and
column), ``_build`` (``--family`` / ``--algorithm`` to emjax objects), ``_progress``
(the progress line), ``_svg`` (the plots).

Exit codes follow argparse's conventions: 0 on success, 2 for a usage error
(bad arguments, an unreadable or non-numeric CSV, data or parameters emjax
rejects, naming the file's line and column), 1 when a fit itself fails.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import jax

import emjax
from . import _build
from ._commands import check_writable as _check_writable
from ._commands import print_components, run_fit, run_predict, run_select
from ._commands import write as _write
from ._svg import write_mixture_svg
from ._table import CLIError, read_csv  # noqa: F401  (read_csv: the CSV reader, re-exported)


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
_nonnegative_int = _number_at_least(int, 0, "an integer >= 0")
_positive_float = _number_at_least(float, 1e-300, "a positive number")
_nonnegative_float = _number_at_least(float, 0.0, "a finite number >= 0")
#: emjax.fit counts iterations in int32 (emjax._runner.MAX_ITER).
_max_iter = _number_at_least(int, 0, f"an integer from 0 to {2**31 - 2}", high=2**31 - 2)
#: jax.random.key takes a signed 64-bit seed; a larger one would end in an OverflowError.
_seed = _number_at_least(int, -(2**63), f"an integer from {-(2**63)} to {2**63 - 1}", high=2**63 - 1)

_FAMILY_HELP = (
    "component family (default: %(default)s): gaussian and student (multivariate, any --covariance), "
    "bernoulli (0/1 items), categorical (integer codes 0..S-1), multinomial (counts per category), "
    "binomial (success counts out of --trials), poisson (counts)"
)


def _add_model_options(p: argparse.ArgumentParser, *, select: bool) -> None:
    """The options ``emjax fit`` and ``emjax select`` share: data, family, algorithm, fit, outputs."""
    p.add_argument("csv", metavar="FILE.csv", help="comma-separated numbers, one point per row; an optional header row")
    p.add_argument("--no-header", action="store_true", help="the first row is data, not column names")
    fam = p.add_argument_group("the model")
    if select:
        fam.add_argument("--kmax", metavar="K", type=_positive_int, default=9, help="largest K (default: %(default)s)")
        fam.add_argument("--kmin", metavar="K", type=_positive_int, default=1, help="smallest K (default: %(default)s)")
        fam.add_argument(
            "--criterion",
            choices=("bic", "aic", "icl"),
            default="bic",
            help="what chooses, lower is better (default: %(default)s)",
        )
    else:
        fam.add_argument(
            "-k", "--components", "--n-components", dest="k", metavar="K", type=_positive_int, required=True,
            help="number of components K",
        )
    fam.add_argument("--family", choices=tuple(_build.FAMILIES), default="gaussian", help=_FAMILY_HELP)
    if select:
        fam.add_argument(
            "--covariance",
            "--structure",
            metavar="STRUCTURE",
            action="append",
            help="covariance structure(s) to compare (gaussian, student), repeated or comma-separated: "
            f"{', '.join(_build.STRUCTURES)}; 'all' = full, diag, spherical, tied (the default), "
            "'mclust' = mclust's 14 models",
        )
    else:
        fam.add_argument(
            "--covariance",
            "--structure",
            metavar="STRUCTURE",
            choices=_build.STRUCTURES,
            help="covariance structure (gaussian, student; default: full): full, diag, spherical, tied, or one of "
            "mclust's models (EII VII EEI VEI EVI VVI EEE VEE EVE VVE EEV VEV EVV VVV; VVV=full, EEE=tied, "
            "VVI=diag, VII=spherical)",
        )
    fam.add_argument(
        "--trials", metavar="N", type=_positive_int, help="binomial: the number of trials behind every count (required)"
    )
    fam.add_argument(
        "--categories",
        metavar="S",
        type=_number_at_least(int, 2, "an integer >= 2"),
        help="categorical: the number of categories S, codes 0..S-1 (default: the largest code + 1)",
    )
    fam.add_argument("--dof", metavar="NU", type=_positive_float, help="student: fixed degrees of freedom (default: learned)")
    if not select:
        fam.add_argument(
            "--missing",
            action="store_true",
            help="read empty, NA and nan cells as missing at random (every family but multinomial); otherwise "
            "they are errors",
        )
        fam.add_argument(
            "--prior",
            action="store_true",
            help="gaussian, student: MAP-EM with the Fraley-Raftery normal-inverse-Wishart prior, which keeps "
            "components from collapsing",
        )
    alg = p.add_argument_group("the fit")
    alg.add_argument(
        "--algorithm",
        choices=tuple(_build.ALGORITHMS),
        default="batch",
        help="the EM variant (default: %(default)s): "
        + "; ".join(f"{k}: {v[1]}" for k, v in _build.ALGORITHMS.items()),
    )
    alg.add_argument("--blocks", metavar="B", type=_positive_int, help="incremental: number of blocks (default: 10)")
    alg.add_argument(
        "--batch-size", metavar="ROWS", type=_positive_int, help="stepwise: rows per mini-batch (default: N/10, at most 1000)"
    )
    alg.add_argument(
        "--restarts",
        metavar="R",
        type=_positive_int,
        default=4 if select else 1,
        help=f"random restarts{' per K' if select else ''}, run together (default: %(default)s)",
    )
    alg.add_argument(
        "--init",
        choices=("default", *emjax.Mixture.init_methods),
        default="default",
        help="how restarts start (default: k-means)",
    )
    alg.add_argument(
        "--max-iter", metavar="N", type=_max_iter, default=100, help="most iterations per restart (default: %(default)s)"
    )
    alg.add_argument(
        "--tol",
        type=_nonnegative_float,
        help="stop when the objective per point changes by at most this much (default: 1e-6; 0 for the "
        "sampled algorithms stochastic, montecarlo and saem, which then run --max-iter steps)",
    )
    alg.add_argument("--seed", metavar="SEED", type=_seed, default=0, help="PRNG seed (default: %(default)s)")
    shown = alg.add_mutually_exclusive_group()
    shown.add_argument(
        "--progress",
        action="store_true",
        help="report every iteration on stderr (a host callback per iteration: about a millisecond each on a "
        "CPU); without it a terminal shows the elapsed time of fits longer than 2 s, at no cost",
    )
    shown.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    out = p.add_argument_group("outputs")
    default_prefix = "-select" if select else "-emjax"
    out.add_argument(
        "--out",
        "--prefix",
        dest="out",
        metavar="PREFIX",
        help=f"write PREFIX.json, PREFIX.svg and PREFIX.emjax (default: the CSV's name with '{default_prefix}' "
        "appended, next to it)",
    )
    out.add_argument(
        "-o",
        "--output",
        metavar="MODEL",
        help=f"the {'chosen ' if select else ''}model file, for emjax predict and emjax.load (default: PREFIX.emjax)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``emjax`` argument parser with its ``demo``, ``fit``, ``select`` and ``predict`` subcommands."""
    parser = argparse.ArgumentParser(
        prog="emjax",
        description="Mixture models fitted by EM, on JAX.",
        epilog="Run 'emjax demo' for a first look, 'emjax COMMAND --help' for the rest.",
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
        help="fit a mixture to a numeric CSV file",
        description="Fit a K-component mixture to the rows of a numeric CSV file. Writes PREFIX.emjax (the model, "
        "for 'emjax predict' and emjax.load), PREFIX.json (the parameters and criteria) and, for 2 or more "
        "columns, PREFIX.svg (the first two columns, each component's mean and covariance ellipses).",
        epilog="Example: emjax fit counts.csv -k 3 --family poisson --algorithm incremental",
    )
    _add_model_options(fit, select=False)

    select = sub.add_parser(
        "select",
        help="choose the number of components (and the structure) by BIC, AIC or ICL",
        description="Fit every K from --kmin to --kmax (and every --covariance structure), print the table of "
        "log-likelihoods and criteria, and write PREFIX.svg (the criterion against K), PREFIX.json (the table) "
        "and PREFIX.emjax (the chosen model). Each structure is one compiled fit of all its K and restarts.",
        epilog="Example: emjax select data.csv --kmax 9 --covariance full,diag",
    )
    _add_model_options(select, select=True)

    predict = sub.add_parser(
        "predict",
        help="label the rows of a CSV file with a saved model",
        description="Read a model saved by 'emjax fit' or 'emjax select' (or emjax.save) and write, for every row "
        "of FILE.csv, its most probable component (label, from 0, as Mixture.predict), the posterior "
        "probability of each component (posterior_0 ..) and its log density under the mixture (log_density), "
        "as CSV. The CSV must have the model's columns, in order; empty, NA and nan cells are missing values "
        "when the model was fitted with --missing.",
    )
    predict.add_argument("model", metavar="MODEL", help="a model file (emjax fit's PREFIX.emjax)")
    predict.add_argument("csv", metavar="FILE.csv", help="comma-separated numbers, one point per row; an optional header row")
    predict.add_argument("--no-header", action="store_true", help="the first row is data, not column names")
    predict.add_argument("-o", "--output", metavar="PATH", help="CSV file to write (default: standard output)")
    return parser


# -- emjax demo ------------------------------------------------------------------------


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


# -- entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run the ``emjax`` command.

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` by default.

    Returns:
        The exit code: 0 on success, 2 for a usage error (bad data included), 1
        when a fit fails.
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
    command = {"demo": run_demo, "fit": run_fit, "select": run_select, "predict": run_predict}[args.command]
    with warnings.catch_warnings():
        # emjax's warnings (e.g. a mixture that is not identifiable) as one line each.
        warnings.showwarning = _show_warning
        try:
            return command(args)
        except CLIError as e:
            print(f"emjax: error: {e}", file=sys.stderr)
            return 2


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"emjax: warning: {message}", file=sys.stderr if file is None else file)
