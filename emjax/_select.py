"""Model selection: a sweep over the number of components (and component families)
with restarts, one compiled fit per family, scored by information criteria."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx

from ._checks import as_sample_weights, check_int, check_key, float_dtype
from ._result import FitResult, RESULTS, best_restart
from ._runner import fit
from .families._base import Family
from .models._mixture import Mixture, MixtureParams

CRITERIA = ("bic", "aic", "icl")


class SelectionRow(NamedTuple):
    """One fitted model of a sweep (the best of its restarts).

    Attributes:
        k: the number of components.
        structure: the family's name (``"Gaussian(full)"``, ``"Poisson"``, ...).
        log_likelihood: ``sum_n w_n log p(x_n)`` at the fitted parameters.
        n_parameters: free parameters of the model.
        bic: ``-2 log L + p log N`` (lower is better; mclust reports ``-bic``).
        aic: ``-2 log L + 2 p``.
        icl: ``bic - 2 sum_n w_n log max_k p(k | x_n)``.
        status: the best restart's :class:`emjax.RESULTS` code.
    """

    k: int
    structure: str
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    icl: float
    status: int


class Selection(eqx.Module):
    """The outcome of :func:`emjax.select`.

    Attributes:
        table: one :class:`SelectionRow` per (family, K), in the order swept.
        criterion: the criterion that chose (``"bic"``, ``"aic"`` or ``"icl"``).
        best: the chosen row (lowest criterion among the fits that ended regularly).
        model: the chosen :class:`emjax.Mixture`.
        result: its :class:`emjax.FitResult` (its restarts; parameters of ``best.k`` components).
        fits: every row's :class:`emjax.FitResult`, keyed by ``(structure, k)``.
        initial_params: every row's initial parameters (leading restart axis), keyed alike.
    """

    table: list
    criterion: str
    best: SelectionRow
    model: Mixture
    result: FitResult
    fits: dict
    initial_params: dict

    def mclust_bic(self) -> np.ndarray:
        """The table's BIC in mclust's convention, ``2 log L - p log N`` (higher is better)."""
        return -np.array([row.bic for row in self.table])

    def __str__(self) -> str:
        lines = [f"{'structure':<20} {'K':>3} {'log-lik':>12} {'params':>7} {'BIC':>12} {'AIC':>12} {'ICL':>12}  status"]
        for r in self.table:
            mark = "  <- best" if r == self.best else ""
            lines.append(
                f"{r.structure:<20} {r.k:>3} {r.log_likelihood:>12.3f} {r.n_parameters:>7} {r.bic:>12.3f} "
                f"{r.aic:>12.3f} {r.icl:>12.3f}  {RESULTS.message(r.status)}{mark}"
            )
        return "\n".join(lines)


def _name(family: Family) -> str:
    structure = getattr(family, "covariance_type", None)
    return f"{type(family).__name__}({structure})" if structure else type(family).__name__


def _take(model: Mixture, params: MixtureParams, k: int) -> MixtureParams:
    """The first ``k`` components of ``params`` (the others were dropped: weight 0)."""
    return MixtureParams(params.weights[:k], model.family.permute_components(params.components, jnp.arange(k)))


@eqx.filter_jit
def _initial(model: Mixture, keys, x, actives, method: str):
    """``(len(ks), R)`` initial parameters, one program for every K."""
    one = lambda key, active: model.init_active(key, x, active, method)  # noqa: E731
    return jax.vmap(lambda ks, active: jax.vmap(lambda k: one(k, active))(ks))(keys, actives)


def select(
    families: Family | Sequence[Family],
    x,
    ks=range(1, 10),
    *,
    key,
    n_restarts: int = 4,
    criterion: str = "bic",
    init: str = "kmeans",
    weights=None,
    max_iter: int = 100,
    tol: float = 1e-6,
    **fit_options: Any,
) -> Selection:
    """Fit a mixture for every number of components in ``ks`` (and every family given),
    with restarts, and choose by an information criterion.

    Every K of one family runs in ONE compiled program: a mixture of ``max(ks)``
    components whose components beyond K have weight exactly 0 (dropped: they take
    no point and keep their parameters), the (K, restart) pairs as its restarts. Such
    a fit is the K-component fit, step for step (tested to rounding).

    Args:
        families: a :class:`emjax.Family` (e.g. ``Gaussian("full")``) or a sequence of
            them (e.g. the four covariance structures).
        x: data ``(N, D)`` (an in-memory array).
        ks: the numbers of components, positive integers ``<= N``.
        key: PRNG key.
        n_restarts: restarts per (family, K).
        criterion: ``"bic"`` (default), ``"aic"`` or ``"icl"``; lower is better
            (emjax's convention: ``-2 log L + penalty``; mclust reports the
            negative, see :meth:`Selection.mclust_bic`).
        init: ``"kmeans"``, ``"kmeans++"``, ``"random"`` or ``"random_resp"``.
        weights: optional ``(N,)`` sample weights (repetition counts).
        max_iter, tol: as :func:`emjax.fit`.
        **fit_options: passed to :func:`emjax.fit` (``algorithm``, ``stopping``, ...).

    Returns:
        A :class:`Selection`: the table, the chosen row, its model and fit.

    Raises:
        TypeError / ValueError: a family that is not one, bad ``ks``, an unknown
            criterion, or anything :func:`emjax.fit` refuses; before compiling.

    Example:
        >>> families = [emjax.Gaussian(c) for c in ("full", "diag", "spherical", "tied")]
        >>> sel = emjax.select(families, x, ks=range(1, 7), key=jax.random.key(0))
        >>> print(sel)                      # the table
        >>> sel.best.k, sel.best.structure  # the chosen model
    """
    fams = [families] if isinstance(families, Family) else list(families)
    if not fams or not all(isinstance(f, Family) for f in fams):
        raise TypeError(f"families must be an emjax Family or a sequence of them, e.g. emjax.Gaussian('full'); got {families!r}.")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}; got {criterion!r}.")
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    ks = [check_int("every K in ks", k) for k in ks]
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be a non-empty sequence of distinct positive integers; got {ks}.")
    n_restarts = check_int("n_restarts", n_restarts)
    key = check_key(key)
    k_max = max(ks)
    table, fits, inits = [], {}, {}
    for family, family_key in zip(fams, jax.random.split(key, len(fams))):
        model = Mixture(family, k_max)
        xv = model.validate_data(x)  # N >= max(ks), the family's checks
        w = None if weights is None else as_sample_weights(weights, xv.shape[0], float_dtype(xv.dtype))
        init_key, fit_key = jax.random.split(family_key)
        keys = jax.random.split(init_key, len(ks) * n_restarts).reshape(len(ks), n_restarts)
        actives = jnp.arange(k_max)[None, :] < jnp.asarray(ks)[:, None]
        params0 = _initial(model, keys, xv, actives, init)
        flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), params0)
        result = fit(model, xv, key=fit_key, init=_starts(flat), weights=w, max_iter=max_iter, tol=tol, **fit_options)
        name = _name(family)
        for i, k in enumerate(ks):
            rows = slice(i * n_restarts, (i + 1) * n_restarts)
            sub = jax.tree.map(lambda a: a[rows], result.restart_params)
            status, objective = result.status[rows], result.objective[rows]
            best = int(best_restart(status, objective))
            model_k = Mixture(family, k)
            restart_params = jax.vmap(lambda p: _take(model_k, p, k))(sub)
            params = jax.tree.map(lambda a: a[best], restart_params)
            collapsed = None if result.collapsed is None else result.collapsed[rows][:, :k]
            fits[(name, k)] = FitResult(
                params=params, restart_params=restart_params, objective=objective, trace=result.trace[rows],
                n_iter=result.n_iter[rows], n_passes=result.n_passes[rows], converged=result.converged[rows],
                status=status, collapsed=collapsed, n_collapses=result.n_collapses[rows], best=jnp.asarray(best),
                n_points=result.n_points,
            )
            inits[(name, k)] = jax.vmap(lambda p: _take(model_k, p, k))(jax.tree.map(lambda a: a[i], params0))
            table.append(_row(model_k, params, xv, w, k, name, int(status[best])))
    regular = [r for r in table if r.status in (RESULTS.SUCCESS, RESULTS.MAX_ITER)] or table
    best = min(regular, key=lambda r: getattr(r, criterion))
    model = Mixture(next(f for f in fams if _name(f) == best.structure), best.k)
    return Selection(table, criterion, best, model, fits[(best.structure, best.k)], fits, inits)


def _starts(params) -> FitResult:
    """Per-restart initial parameters ``params`` (leading axis R) in the form
    :func:`emjax.fit` continues restarts from: a FitResult's ``restart_params``."""
    r = jax.tree.leaves(params)[0].shape[0]
    zeros = jnp.zeros((r,), jnp.int32)
    return FitResult(
        params=jax.tree.map(lambda a: a[0], params), restart_params=params, objective=jnp.zeros((r,)),
        trace=jnp.zeros((r, 1)), n_iter=zeros, n_passes=zeros, converged=zeros.astype(bool), status=zeros,
        collapsed=None, n_collapses=zeros, best=jnp.asarray(0), n_points=jnp.asarray(0.0),
    )


def _row(model: Mixture, params: MixtureParams, x, w, k: int, name: str, status: int) -> SelectionRow:
    c = model.information_criteria(params, x, w)
    return SelectionRow(k, name, float(c["log_likelihood"]), int(c["n_parameters"]), float(c["bic"]),
                        float(c["aic"]), float(c["icl"]), status)
