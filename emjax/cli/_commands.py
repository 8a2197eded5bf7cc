"""The ``emjax fit``, ``emjax select`` and ``emjax predict`` commands."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np
import jax

import emjax
from . import _build
from ._progress import FitProgress, mode_of
from ._svg import write_criterion_svg, write_mixture_svg
from ._table import CLIError, Table, read_csv

# -- shared helpers --------------------------------------------------------------------


def check_writable(path: Path) -> None:
    """Fail before a fit, not after it, when an output cannot be written where asked."""
    parent = Path(path).parent
    if not parent.is_dir():
        raise CLIError(f"cannot write {path}: the directory {parent} does not exist")


def write(path, writer) -> Path:
    """Run ``writer(path)``, turning a failure to write into a user error."""
    path = Path(path)
    try:
        writer(path)
    except OSError as e:
        raise CLIError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _save(path: Path, model, value) -> Path:
    """``emjax.save(path, model, value)``, its failures as user errors."""
    save = getattr(emjax, "save", None)
    if save is None:
        raise CLIError("this emjax has no emjax.save: cannot write a model file")
    return write(path, lambda p: save(p, model, value))


def _format_vector(v) -> str:
    return "[" + "  ".join(f"{float(a):.6g}" for a in np.ravel(v)) + "]"


def _format_matrix(m, indent: int) -> str:
    """Rows of a matrix, numbers right-aligned in columns, continuation lines indented."""
    cells = [[f"{float(a):.6g}" for a in row] for row in np.asarray(m)]
    width = max(len(c) for row in cells for c in row)
    lines = ["[" + "  ".join(c.rjust(width) for c in row) + "]" for row in cells]
    return "[" + ("\n" + " " * (indent + 1)).join(lines) + "]"


def print_components(weights, means, covariances) -> None:
    """Print each component's weight, mean and (full) covariance matrix (``emjax demo``)."""
    for j in range(len(weights)):
        print(f"component {j + 1}: weight {float(weights[j]):.6f}")
        print(f"  mean        {_format_vector(means[j])}")
        print(f"  covariance  {_format_matrix(covariances[j], indent=14)}")


#: How each parameter field is printed, per family: ``field -> label`` (12 characters wide).
_FIELD_LABELS = {
    "Gaussian": {"means": "mean", "covariances": "covariance"},
    "StudentT": {"means": "location", "covariances": "scale", "dofs": "dof"},
    "Bernoulli": {"means": "P(x = 1)"},
    "Categorical": {"probs": "P(x = s)"},
    "Multinomial": {"probs": "probs"},
    "Binomial": {"probs": "P(success)"},
    "Poisson": {"rates": "rates"},
}


def component_arrays(model, params) -> dict:
    """``{field: (K, ...) float64 array}`` of the components' parameters, Gaussian and
    Student-t covariances as ``(K, D, D)`` matrices whatever the structure."""
    family = model.family
    out = {}
    for field in dataclasses.fields(params.components):
        out[field.name] = np.asarray(getattr(params.components, field.name), dtype=np.float64)
    if hasattr(family, "full_covariances"):
        out["covariances"] = np.asarray(family.full_covariances(params.components), dtype=np.float64)
    return out


def print_mixture(model, params) -> None:
    """Print each component's weight and parameters, as the family names them."""
    arrays = component_arrays(model, params)
    labels = _FIELD_LABELS.get(type(model.family).__name__, {})
    weights = np.asarray(params.weights, dtype=np.float64)
    for j in range(len(weights)):
        print(f"component {j + 1}: weight {weights[j]:.6f}")
        for field, value in arrays.items():
            label = labels.get(field, field)
            v = value[j]
            if v.ndim == 0:
                text = f"{float(v):.6g}"
            elif v.ndim == 1:
                text = _format_vector(v)
            else:
                text = _format_matrix(v, indent=14)
            print(f"  {label:<11} {text}")
    if isinstance(model.family, emjax.Categorical):
        print(f"(P(x = s): one row per feature, one column per category 0..{model.family.n_categories - 1})")


def _plot_moments(model, params, d: int):
    """Per-component means ``(K, D)`` and covariances ``(K, D, D)`` in the data's
    coordinates, for the plot; ``None`` where the family has none."""
    family = model.family
    if isinstance(family, emjax.Categorical):
        probs = np.asarray(params.components.probs, dtype=np.float64)  # (K, D, S)
        codes = np.arange(probs.shape[-1], dtype=np.float64)
        mean = probs @ codes
        var = probs @ codes**2 - mean**2
        return mean, np.stack([np.diag(v) for v in var])
    try:
        mean, cov = family.moments(params.components)
    except (NotImplementedError, AttributeError, TypeError):
        return None
    mean, cov = np.asarray(mean, dtype=np.float64), np.asarray(cov, dtype=np.float64)
    if mean.shape[-1] != d or cov.shape[-2:] != (d, d):
        return None
    return mean, cov


def _mixture_plot(path: Path, table: Table, model, params, labels, title: str) -> str | None:
    """Write the mixture's SVG of the first two columns; the reason when there is none."""
    x = table.data
    if x.shape[1] < 2:
        return "no plot: the data have a single column"
    moments = _plot_moments(model, params, x.shape[1])
    if moments is None:
        return "no plot: this family has no component covariances to draw"
    shown = np.all(np.isfinite(x[:, :2]), axis=1)
    if not shown.any():
        return "no plot: no row has both of the first two columns observed"
    means, covariances = moments
    write(
        path,
        lambda p: write_mixture_svg(
            p,
            np.where(np.isfinite(x[shown]), x[shown], 0.0),
            np.asarray(labels)[shown],
            np.asarray(params.weights, dtype=np.float64),
            np.nan_to_num(means),
            covariances,
            feature_names=table.names,
            title=title,
        ),
    )
    return None


def _validated(table: Table, model, check):
    """``check(x)`` (an emjax validation), its errors naming the file's line and column."""
    try:
        return check(table.data)
    except (ValueError, TypeError) as e:
        raise table.locate(e) from None


def _prefix(args, path: Path, suffix: str) -> Path:
    return Path(args.out) if args.out is not None else path.with_name(path.stem + suffix)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _data_line(table: Table) -> str:
    n, d = table.data.shape
    line = f"{table.path}: {_plural(n, 'point')}, {_plural(d, 'feature')} ({', '.join(table.names)})"
    missing = table.n_missing
    if missing:
        rows = int(np.count_nonzero(np.isnan(table.data).any(axis=1)))
        line += f"; {missing} missing entr{'y' if missing == 1 else 'ies'} in {_plural(rows, 'row')}"
    return line


# -- emjax fit -------------------------------------------------------------------------


def run_fit(args: argparse.Namespace) -> int:
    """``emjax fit``: a mixture of one family fitted to a CSV file; saves the model
    (``emjax.load`` reads it), a JSON summary and an SVG plot."""
    _build.check_family_options(args, structures=args.covariance is not None)
    covariance = args.covariance or "full"
    path = Path(args.csv)
    table = read_csv(path, header=False if args.no_header else None, missing=args.missing, command="emjax fit")
    x = table.data
    n, d = x.shape
    prefix = _prefix(args, path, "-emjax")
    json_path, svg_path = Path(str(prefix) + ".json"), Path(str(prefix) + ".svg")
    model_path = Path(args.output) if args.output is not None else Path(str(prefix) + ".emjax")
    for p in (json_path, model_path):
        check_writable(p)

    family = _build.build_family(args, x, args.k, covariance)
    algorithm, algorithm_label = _build.build_algorithm(args, n)
    tol = _build.default_tol(args)
    try:
        model = emjax.Mixture(family, n_components=args.k, missing=args.missing)
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    # emjax validates its inputs (K against N, the family's support) with ValueError or
    # TypeError; here those are the user's errors, named by line and column.
    _validated(table, model, model.validate_data)

    how = "MAP-EM with the Fraley-Raftery prior" if getattr(args, "prior", False) else "maximum likelihood"
    print(_data_line(table))
    extra = ""
    if isinstance(family, emjax.Categorical):
        extra = f", {family.n_categories} categories" + ("" if args.categories else " (from the data; --categories to set)")
    elif isinstance(family, emjax.Binomial):
        extra = f", {family.n_trials} trials"
    if args.missing:
        extra += ", missing entries at random"
    print(
        f"{args.k}-component {_build.family_label(args.family, covariance)}{extra}, {how}, {algorithm_label}, "
        f"{_plural(args.restarts, 'restart')}\n"
    )
    progress = FitProgress("emjax fit", mode_of(args), args.max_iter)
    try:
        with progress:
            result = emjax.fit(
                model,
                x,
                key=jax.random.key(args.seed),
                algorithm=algorithm,
                n_restarts=args.restarts,
                init=args.init,
                max_iter=args.max_iter,
                tol=tol,
                **progress.fit_options,
            )
            jax.block_until_ready(result)
    except (ValueError, TypeError) as e:
        raise table.locate(e) from None
    except RuntimeError as e:
        print(f"emjax: fit failed: {e}", file=sys.stderr)
        return 1

    best = int(result.best)
    params = result.params
    # The objective may include a prior or a regularisation penalty: report the plain log-likelihood.
    loglik = float(np.sum(np.asarray(model.log_prob(params, x), dtype=np.float64)))
    bic, aic = float(model.bic(params, x)), float(model.aic(params, x))
    status = emjax.RESULTS.message(int(result.status[best]))
    print(result.summary())
    print()
    print(f"best restart: {best}, {status} after {int(result.n_iter[best])} iterations")
    print(f"log-likelihood: {loglik:.4f} ({loglik / n:.6f} per point)")
    print(f"BIC: {bic:.4f}")
    print(f"AIC: {aic:.4f}\n")
    print_mixture(model, params)
    print()

    arrays = component_arrays(model, params)
    record = {
        "emjax_version": emjax.__version__,
        "data": str(path),
        "columns": table.names,
        "n_points": n,
        "n_features": d,
        "n_missing": table.n_missing,
        "family": args.family,
        "n_components": args.k,
        "covariance_type": covariance if args.family in ("gaussian", "student") else None,
        "algorithm": args.algorithm,
        "prior": "fraley_raftery" if getattr(args, "prior", False) else None,
        "seed": args.seed,
        "restarts": args.restarts,
        "best_restart": best,
        "weights": np.asarray(params.weights, dtype=np.float64).tolist(),
    }
    for field in arrays:
        record[field] = np.asarray(getattr(params.components, field), dtype=np.float64).tolist()
    if "covariances" in arrays:
        # In the structure's own shape above (as GaussianParams store them), and as (K, D, D) matrices.
        record["full_covariances"] = arrays["covariances"].tolist()
    if isinstance(family, emjax.Categorical):
        record["n_categories"] = family.n_categories
    if isinstance(family, emjax.Binomial):
        record["n_trials"] = family.n_trials
    record.update(
        log_likelihood=loglik,
        bic=bic,
        aic=aic,
        n_iter=int(result.n_iter[best]),
        converged=bool(result.converged[best]),
        status=int(result.status[best]),
        status_message=status,
        model_file=str(model_path),
    )
    print(f"wrote {_save(model_path, model, result)}")
    write(json_path, lambda p: p.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    print(f"wrote {json_path}")
    labels = np.asarray(model.predict(params, x))
    what = _build.family_label(args.family, covariance)
    reason = _mixture_plot(svg_path, table, model, params, labels, f"{path.name}: {args.k}-component {what}")
    print(reason if reason else f"wrote {svg_path}")
    return 0


# -- emjax select ----------------------------------------------------------------------


def _structures(args) -> list:
    """The ``--covariance`` values of ``emjax select`` (repeated or comma-separated), shorthands expanded."""
    if args.family not in ("gaussian", "student"):
        return [None]
    chosen = []
    for item in args.covariance or ["all"]:
        for name in (s.strip() for s in item.split(",")):
            if not name:
                continue
            names = _build.STRUCTURE_GROUPS.get(name, (name,))
            for s in names:
                if s not in _build.STRUCTURES:
                    raise CLIError(
                        f"--covariance {s!r} is not a covariance structure: choose from "
                        f"{', '.join(_build.STRUCTURES)}, or 'all' (the four types) or 'mclust' (the 14 models)"
                    )
                if s not in chosen:
                    chosen.append(s)
    return chosen


def run_select(args: argparse.Namespace) -> int:
    """``emjax select``: every K from ``--kmin`` to ``--kmax`` (and every structure),
    the criteria table, a plot of the criterion against K, and the chosen model saved."""
    _build.check_family_options(args, structures=bool(args.covariance))
    if args.kmin > args.kmax:
        raise CLIError(f"--kmin {args.kmin} is larger than --kmax {args.kmax}")
    structures = _structures(args)
    path = Path(args.csv)
    table = read_csv(
        path,
        header=False if args.no_header else None,
        command="emjax select",
        missing_hint="or use emjax fit --missing for each K (emjax select has no missing-data mode)",
    )
    x = table.data
    n, d = x.shape
    prefix = _prefix(args, path, "-select")
    json_path, svg_path = Path(str(prefix) + ".json"), Path(str(prefix) + ".svg")
    model_path = Path(args.output) if args.output is not None else Path(str(prefix) + ".emjax")
    for p in (json_path, svg_path, model_path):
        check_writable(p)
    ks = list(range(args.kmin, args.kmax + 1))
    if args.kmax > n:
        raise CLIError(f"--kmax {args.kmax} is larger than the number of data points N={n}")
    families = [_build.build_family(args, x, args.kmax, s) for s in structures]
    algorithm, algorithm_label = _build.build_algorithm(args, n)
    tol = _build.default_tol(args)
    check_model = emjax.Mixture(families[0], args.kmax)
    _validated(table, check_model, check_model.validate_data)

    print(_data_line(table))
    kinds = ", ".join(s for s in structures if s) if structures[0] else ""
    what = {"gaussian": "Gaussian", "student": "Student-t"}.get(args.family, _build.FAMILIES[args.family])
    print(
        f"{what} mixtures{' (' + kinds + ')' if kinds else ''}, K = {args.kmin}..{args.kmax}, {algorithm_label}, "
        f"{_plural(args.restarts, 'restart')} per K, chosen by {args.criterion.upper()}\n"
    )
    progress = FitProgress("emjax select", mode_of(args), args.max_iter, n_fits=len(families), show_objective=False)
    try:
        with progress:
            selection = emjax.select(
                families,
                x,
                ks,
                key=jax.random.key(args.seed),
                n_restarts=args.restarts,
                criterion=args.criterion,
                init=args.init if args.init != "default" else "kmeans",
                max_iter=args.max_iter,
                tol=tol,
                algorithm=algorithm,
                **progress.fit_options,
            )
    except (ValueError, TypeError) as e:
        raise table.locate(e) from None
    except RuntimeError as e:
        print(f"emjax: fit failed: {e}", file=sys.stderr)
        return 1

    print(selection)
    best = selection.best
    value = getattr(best, args.criterion)
    print(f"\nchosen: {best.structure}, K = {best.k} ({args.criterion.upper()} {value:.4f})\n")

    names = list(dict.fromkeys(row.structure for row in selection.table))
    values = {name: [getattr(r, args.criterion) for r in selection.table if r.structure == name] for name in names}
    regular = (emjax.RESULTS.SUCCESS, emjax.RESULTS.MAX_ITER)
    irregular = {name: [r.status not in regular for r in selection.table if r.structure == name] for name in names}
    record = {
        "emjax_version": emjax.__version__,
        "data": str(path),
        "columns": table.names,
        "n_points": n,
        "family": args.family,
        "criterion": args.criterion,
        "ks": ks,
        "table": [
            dict(row._asdict(), status_message=emjax.RESULTS.message(row.status)) for row in selection.table
        ],
        "best": {"structure": best.structure, "k": best.k, args.criterion: value},
        "model_file": str(model_path),
    }
    print(f"wrote {_save(model_path, selection.model, selection.result)}")
    write(json_path, lambda p: p.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    print(f"wrote {json_path}")
    write(
        svg_path,
        lambda p: write_criterion_svg(
            p,
            ks,
            values,
            criterion=args.criterion.upper(),
            best=(best.structure, best.k),
            irregular=irregular,
            title=f"{path.name}: {args.criterion.upper()} against K",
        ),
    )
    print(f"wrote {svg_path}")
    return 0


# -- emjax predict ---------------------------------------------------------------------


def _load(path: Path):
    load = getattr(emjax, "load", None)
    if load is None:
        raise CLIError("this emjax has no emjax.load: cannot read a model file")
    if not path.exists():
        raise CLIError(f"{path}: no such file")
    try:
        model, value = load(path)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise CLIError(f"cannot read the model file {path}: {e}") from None
    params = getattr(value, "params", value)  # a FitResult or parameters
    return model, params


def run_predict(args: argparse.Namespace) -> int:
    """``emjax predict``: labels, posterior probabilities and log densities of a CSV's rows
    under a saved model, as CSV."""
    model_path = Path(args.model)
    if args.output is not None:
        check_writable(Path(args.output))
    model, params = _load(model_path)
    missing = bool(getattr(model, "missing", False))
    table = read_csv(
        args.csv,
        header=False if args.no_header else None,
        missing=missing,
        command="emjax predict",
        missing_hint="since the model was fitted without --missing",
    )
    x = table.data
    width = None
    family = getattr(model, "family", None)
    if family is not None and hasattr(params, "components"):
        width = family.n_features(params.components)
    if width is not None and x.shape[1] != width:
        line = table.header_line if table.header_line is not None else int(table.lines[0])
        if x.shape[1] > width:
            raise CLIError(
                f"{table.path}, line {line}, column {width + 1} ({table.names[width]!r}): "
                f"{x.shape[1]} columns, but the model in {model_path} has {width} features; "
                "give the columns it was fitted on"
            )
        raise CLIError(
            f"{table.path}, line {line}: {x.shape[1]} column{'s' if x.shape[1] != 1 else ''}, but the model in "
            f"{model_path} has {width} features; column {x.shape[1] + 1} is missing"
        )
    if hasattr(model, "validate_prediction"):
        _validated(table, model, lambda a: model.validate_prediction(params, a))
    try:
        labels = np.asarray(model.predict(params, x))
        posterior = np.asarray(model.posterior(params, x), dtype=np.float64) if hasattr(model, "posterior") else None
        log_density = np.asarray(model.log_prob(params, x), dtype=np.float64) if hasattr(model, "log_prob") else None
    except (ValueError, TypeError) as e:
        raise table.locate(e) from None

    header = ["label"]
    if posterior is not None:
        header += [f"posterior_{j}" for j in range(posterior.shape[1])]
    if log_density is not None:
        header.append("log_density")
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(header)
    for i in range(len(labels)):
        row = [str(int(labels[i]))]
        if posterior is not None:
            row += [f"{p:.8g}" for p in posterior[i]]
        if log_density is not None:
            row.append(f"{log_density[i]:.8g}")
        out.writerow(row)
    if args.output is None:
        sys.stdout.write(buffer.getvalue())
        sys.stdout.flush()
    else:
        write(Path(args.output), lambda p: p.write_text(buffer.getvalue(), encoding="utf-8"))
        counts = np.bincount(labels.astype(int), minlength=getattr(model, "n_components", 0))
        print(f"{table.path}: {len(labels)} rows; points per component: {' '.join(map(str, counts))}")
        print(f"wrote {args.output}")
    return 0
