"""From command-line choices to emjax objects: the component families and the algorithms."""

from __future__ import annotations

import numpy as np

import emjax
from ..families import COVARIANCE_TYPES, MCLUST_MODELS
from ._table import CLIError

#: ``--family`` choices and the emjax family each names.
FAMILIES = {
    "gaussian": "Gaussian",
    "student": "StudentT",
    "bernoulli": "Bernoulli",
    "categorical": "Categorical",
    "multinomial": "Multinomial",
    "binomial": "Binomial",
    "poisson": "Poisson",
}

#: ``--covariance`` choices: the four types and mclust's 14 models (VVV, EEE, VVI and
#: VII are aliases of full, tied, diag and spherical).
STRUCTURES = tuple(COVARIANCE_TYPES) + tuple(m for m in MCLUST_MODELS)
#: ``--covariance`` shorthands of ``emjax select``.
STRUCTURE_GROUPS = {"all": tuple(COVARIANCE_TYPES), "mclust": tuple(MCLUST_MODELS)}

#: ``--algorithm`` choices: name -> (class name, one-line description).
ALGORITHMS = {
    "batch": ("BatchEM", "batch EM"),
    "incremental": ("IncrementalEM", "incremental EM"),
    "stepwise": ("StepwiseEM", "stepwise (online) EM"),
    "annealed": ("AnnealedEM", "deterministic annealing EM"),
    "overrelaxed": ("OverRelaxedEM", "adaptive over-relaxed EM"),
    "ecm": ("ECM", "ECM (conditional maximisations)"),
    "gem": ("GeneralizedEM", "generalized EM (L-BFGS M-steps)"),
    "hard": ("HardEM", "classification (hard) EM"),
    "stochastic": ("StochasticEM", "stochastic EM"),
    "montecarlo": ("MonteCarloEM", "Monte Carlo EM"),
    "saem": ("SAEM", "SAEM"),
    "gradient": ("GradientAscent", "gradient ascent (L-BFGS)"),
}
#: The algorithms whose objective is noisy: ``tol`` defaults to 0 (run ``--max-iter`` steps).
SAMPLED = ("stochastic", "montecarlo", "saem")

_GAUSSIAN_LIKE = ("gaussian", "student")


def family_label(name: str, covariance: str | None) -> str:
    """``"Gaussian mixture, full covariances"`` and the like, for printed headers and titles."""
    label = {"student": "Student-t", "gaussian": "Gaussian"}.get(name, FAMILIES[name])
    if name in _GAUSSIAN_LIKE:
        kind = "covariances" if name == "gaussian" else "scale matrices"
        return f"{label} mixture, {covariance} {kind}"
    return f"{label} mixture"


def check_family_options(args, *, structures=None) -> None:
    """Refuse options that do not apply to ``args.family`` (a usage error, before reading data)."""
    name = args.family
    if name not in _GAUSSIAN_LIKE:
        if structures:
            raise CLIError(f"--covariance applies to --family gaussian and student, not {name}")
        if getattr(args, "prior", False):
            raise CLIError(f"--prior applies to --family gaussian and student, not {name}")
    if name != "student" and getattr(args, "dof", None) is not None:
        raise CLIError(f"--dof applies to --family student, not {name}")
    if name != "binomial" and args.trials is not None:
        raise CLIError(f"--trials applies to --family binomial, not {name}")
    if name != "categorical" and args.categories is not None:
        raise CLIError(f"--categories applies to --family categorical, not {name}")
    if name == "binomial" and args.trials is None:
        raise CLIError("--family binomial needs --trials N, the number of trials behind every count")


def n_categories(args, x: np.ndarray) -> int:
    """``--categories``, or one more than the largest code in the data (at least 2)."""
    if args.categories is not None:
        return args.categories
    finite = x[np.isfinite(x)]
    top = float(finite.max()) if finite.size else 1.0
    # A negative or fractional code is named by the family's own validation later.
    return max(2, int(np.floor(top)) + 1) if top >= 0 else 2


def build_family(args, x: np.ndarray, n_components: int, covariance: str | None = None):
    """The :class:`emjax.families.Family` that ``args`` describe, for data ``x``.

    ``--prior`` (Gaussian and Student-t) is the Fraley-Raftery normal-inverse-Wishart
    prior of ``x`` and ``n_components``; under ``--missing`` it is measured on the data
    with each missing entry at its column's observed mean.

    Raises:
        CLIError: what emjax refuses in the family's configuration.
    """
    name = args.family
    try:
        if name in _GAUSSIAN_LIKE:
            prior = None
            if getattr(args, "prior", False):
                filled = x
                if np.isnan(x).any():
                    filled = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
                    filled = np.where(np.isnan(filled), 0.0, filled)
                prior = emjax.NormalInverseWishart.fraley_raftery(filled, n_components)
            if name == "gaussian":
                return emjax.Gaussian(covariance, prior=prior)
            return emjax.StudentT(covariance, prior=prior, dof=getattr(args, "dof", None))
        if name == "bernoulli":
            return emjax.Bernoulli()
        if name == "categorical":
            return emjax.Categorical(n_categories(args, x))
        if name == "multinomial":
            return emjax.Multinomial()
        if name == "binomial":
            return emjax.Binomial(args.trials)
        return emjax.Poisson()
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None


def build_algorithm(args, n_rows: int):
    """The algorithm ``--algorithm`` names, with defaults sized to ``n_rows``.

    Returns:
        ``(algorithm, description)``: the :class:`emjax.algorithms.Algorithm` and a
        phrase for the printed header (its size options included).
    """
    name = args.algorithm
    cls_name, label = ALGORITHMS[name]
    cls = getattr(emjax, cls_name)
    blocks, batch = getattr(args, "blocks", None), getattr(args, "batch_size", None)
    if blocks is not None and name != "incremental":
        raise CLIError("--blocks applies to --algorithm incremental")
    if batch is not None and name != "stepwise":
        raise CLIError("--batch-size applies to --algorithm stepwise")
    if name == "incremental":
        blocks = min(10, n_rows) if blocks is None else blocks
        if blocks > n_rows:
            raise CLIError(f"--blocks {blocks} is more than the {n_rows} data rows")
        return cls(n_blocks=blocks), f"{label}, {blocks} blocks"
    if name == "stepwise":
        batch = max(1, min(1000, n_rows // 10)) if batch is None else batch
        if batch > n_rows:
            raise CLIError(f"--batch-size {batch} is more than the {n_rows} data rows")
        return cls(batch_size=batch), f"{label}, mini-batches of {batch} rows"
    if name == "gradient":
        import optax

        return cls(optax.lbfgs()), label
    return cls(), label


def default_tol(args) -> float:
    """``--tol``, or its default: 0 for the sampled algorithms (their objective is noisy), else 1e-6."""
    if args.tol is not None:
        return args.tol
    return 0.0 if args.algorithm in SAMPLED else 1e-6
