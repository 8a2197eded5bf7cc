"""Model selection: a sweep over the number of components (and component families)
with restarts, one compiled fit per family, scored by information criteria, by the
log-likelihood of validation data, or by K-fold cross-validation (the folds as 0/1
weight masks, one vmapped fit per family)."""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np
import jax
import jax.numpy as jnp
import equinox as eqx

from ._checks import as_sample_weights, check_int, check_key, float_dtype
from ._chunks import n_features
from ._result import FitResult, RESULTS, best_restart
from ._runner import fit
from .families._base import Family
from .models._mixture import Mixture, MixtureParams

CRITERIA = ("bic", "aic", "icl", "heldout")


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
        heldout: ``sum_m log p(v_m)`` over the validation rows ``v`` (higher is
            better), or ``None`` without validation data.
    """

    k: int
    structure: str
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    icl: float
    status: int
    heldout: float | None = None


class Selection(eqx.Module):
    """The outcome of :func:`emjax.select`.

    Attributes:
        table: one :class:`SelectionRow` per (family, K), in the order swept.
        criterion: the criterion that chose (``"bic"``, ``"aic"``, ``"icl"`` or ``"heldout"``).
        best: the chosen row (lowest criterion, or highest ``heldout``, among the
            fits that ended regularly).
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
        held = self.best.heldout is not None
        lines = [f"{'structure':<20} {'K':>3} {'log-lik':>12} {'params':>7} {'BIC':>12} {'AIC':>12} {'ICL':>12}"
                 + (f" {'held-out':>12}" if held else "") + "  status"]
        for r in self.table:
            mark = "  <- best" if r == self.best else ""
            lines.append(
                f"{r.structure:<20} {r.k:>3} {r.log_likelihood:>12.3f} {r.n_parameters:>7} {r.bic:>12.3f} "
                f"{r.aic:>12.3f} {r.icl:>12.3f}" + (f" {r.heldout:>12.3f}" if held else "")
                + f"  {RESULTS.message(r.status)}{mark}"
            )
        return "\n".join(lines)


def _name(family: Family) -> str:
    structure = getattr(family, "covariance_type", None)
    return f"{type(family).__name__}({structure})" if structure else type(family).__name__


def _take(model: Mixture, params: MixtureParams, k: int, axis: int = 0) -> MixtureParams:
    """The first ``k`` components of ``params`` (the others were dropped: weight 0), whose
    leaves have ``axis`` leading (restart, fold) axes; NumPy leaves stay on the host."""
    take = lambda p: MixtureParams(p.weights[:k], model.family.permute_components(p.components, np.arange(k)))  # noqa: E731
    for _ in range(axis):
        take = _over_leading(take)
    return take(params)


def _over_leading(fn):
    """``fn`` mapped over a leading axis of NumPy pytrees (results stacked)."""
    def mapped(tree):
        n = jax.tree.leaves(tree)[0].shape[0]
        outs = [fn(jax.tree.map(lambda a: a[i], tree)) for i in range(n)]
        return jax.tree.map(lambda *a: np.stack(a), *outs)
    return mapped


@eqx.filter_jit
def _criteria(model: Mixture, params, x, w, validation) -> dict:
    """:meth:`Mixture.information_criteria` (and the validation log-likelihood) of every
    K's parameters ``params`` (leading axis ``len(ks)``), in one program."""
    def one(p):
        c = model.information_criteria(p, x, w)
        if validation is not None:
            c["heldout"] = jnp.sum(model.log_prob(p, validation))
        return c

    return jax.vmap(one)(params)


def _initial_all(model: Mixture, keys, x, actives, method: str):
    """``(len(ks), R)`` initial parameters: restart keys ``(len(ks), R)``, masks ``(len(ks), K)``."""
    one = lambda key, active: model.init_active(key, x, active, method)  # noqa: E731
    return jax.vmap(lambda ks, active: jax.vmap(lambda k: one(k, active))(ks))(keys, actives)


@eqx.filter_jit
def _initial(model: Mixture, keys, x, actives, method: str):
    """``(len(ks), R)`` initial parameters, one program for every K."""
    return _initial_all(model, keys, x, actives, method)


@eqx.filter_jit
def _fold_initial(model: Mixture, keys, x, train_rows, actives, method: str):
    """``(F, len(ks), R)`` initial parameters, each fold's from its training rows ``x[train_rows[f]]``."""
    return jax.vmap(lambda kf, rows: _initial_all(model, kf, x[rows], actives, method))(keys, train_rows)


def _checked(family: Family, k_max: int, x, weights, validation=None):
    """``(model, x, weights, validation)`` for one family, checked by it (``N >= max(ks)``,
    the family's support; validation rows of the same width)."""
    model = Mixture(family, k_max)
    xv = model.validate_data(x)
    w = None if weights is None else as_sample_weights(weights, xv.shape[0], float_dtype(xv.dtype))
    held = None if validation is None else model.validate_rows(validation)
    if held is not None and n_features(held) != n_features(xv):
        raise ValueError(f"validation has {n_features(held)} features but x has {n_features(xv)}.")
    return model, xv, w, held


def _check_sweep(families, ks, n_restarts, key):
    """The families as a list, ``ks`` as a list of ints, ``n_restarts`` and ``key``, checked."""
    fams = [families] if isinstance(families, Family) else list(families)
    if not fams or not all(isinstance(f, Family) for f in fams):
        raise TypeError(f"families must be an emjax Family or a sequence of them, e.g. emjax.Gaussian('full'); got {families!r}.")
    if isinstance(ks, (int, np.integer)):
        ks = [ks]
    ks = [check_int("every K in ks", k) for k in ks]
    if not ks or len(set(ks)) != len(ks):
        raise ValueError(f"ks must be a non-empty sequence of distinct positive integers; got {ks}.")
    names = [_name(f) for f in fams]
    if len(set(names)) != len(names):
        raise ValueError(f"families must differ (their names key the table); got {names}.")
    return fams, ks, check_int("n_restarts", n_restarts), check_key(key)


def _flatten(params):
    """Merge the ``(len(ks), R)`` leading axes into one restart axis."""
    return jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), params)


def _actives(ks, k_max: int):
    """``(len(ks), K_max)``: the first K components of each K in ``ks``."""
    return jnp.arange(k_max)[None, :] < jnp.asarray(ks)[:, None]


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
    validation=None,
    max_iter: int = 100,
    tol: float = 1e-6,
    **fit_options: Any,
) -> Selection:
    """Fit a mixture for every number of components in ``ks`` (and every family given),
    with restarts, and choose by an information criterion or held-out data.

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
        criterion: ``"bic"`` (default), ``"aic"`` or ``"icl"`` (lower is better;
            emjax's convention: ``-2 log L + penalty``; mclust reports the
            negative, see :meth:`Selection.mclust_bic`), or ``"heldout"``: the
            highest log-likelihood of ``validation``.
        init: ``"kmeans"``, ``"kmeans++"``, ``"random"`` or ``"random_resp"``.
        weights: optional ``(N,)`` sample weights (repetition counts).
        validation: optional held-out data ``(M, D)``: each row's ``heldout`` is
            ``sum_m log p(v_m)`` under its fitted model (see also
            :func:`cross_validate`).
        max_iter, tol: as :func:`emjax.fit`.
        **fit_options: passed to :func:`emjax.fit` (``algorithm``, ``stopping``, ...).

    Returns:
        A :class:`Selection`: the table, the chosen row, its model and fit.

    Raises:
        TypeError / ValueError: a family that is not one, bad ``ks``, an unknown
            criterion, ``"heldout"`` without ``validation``, or anything
            :func:`emjax.fit` refuses; before compiling.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> families = [emjax.Gaussian("full"), emjax.Gaussian("diag")]
        >>> sel = emjax.select(families, x, ks=range(1, 4), key=jax.random.key(0), n_restarts=2)
        >>> print(sel)                      # the table
        structure              K      log-lik  params          BIC          AIC          ICL  status
        Gaussian(full)         1    -1289.797       5     2607.623     2589.593     2607.623  converged
        Gaussian(full)         2    -1130.264      11     2322.192     2282.528     2322.703  converged  <- best
        Gaussian(full)         3    -1119.216      17     2333.730     2272.432     2366.268  converged
        Gaussian(diag)         1    -1516.706       4     3055.835     3041.412     3055.835  converged
        Gaussian(diag)         2    -1147.806       9     2346.065     2313.613     2346.161  converged
        Gaussian(diag)         3    -1127.008      14     2332.497     2282.016     2345.770  converged
        >>> sel.best.k, sel.best.structure  # the chosen model
        (2, 'Gaussian(full)')
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}; got {criterion!r}.")
    if criterion == "heldout" and validation is None:
        raise ValueError("criterion='heldout' needs validation data: select(..., validation=x_val).")
    fams, ks, n_restarts, key = _check_sweep(families, ks, n_restarts, key)
    k_max = max(ks)
    table, fits, inits = [], {}, {}
    checked = [_checked(family, k_max, x, weights, validation) for family in fams]  # all before any fit
    for family, (model, xv, w, held), family_key in zip(fams, checked, jax.random.split(key, len(fams))):
        init_key, fit_key = jax.random.split(family_key)
        keys = jax.random.split(init_key, len(ks) * n_restarts).reshape(len(ks), n_restarts)
        params0 = _initial(model, keys, xv, _actives(ks, k_max), init)
        result = fit(model, xv, key=fit_key, init=_starts(_flatten(params0)), weights=w, max_iter=max_iter, tol=tol,
                     **fit_options)
        # Per K: its restarts' best, scored as the max(ks)-component mixture it is (the
        # dropped components have weight 0 and are not counted): one program for every K.
        status = np.asarray(result.status).reshape(len(ks), n_restarts)
        objective = np.asarray(result.objective).reshape(len(ks), n_restarts)
        best = np.asarray(jax.vmap(best_restart)(status, objective))
        # Sliced on the host below: an eager slice per K would compile a program per K.
        host = jax.tree.map(np.asarray, result)
        restarts = jax.tree.map(lambda a: a.reshape((len(ks), n_restarts) + a.shape[1:]), host.restart_params)
        padded = jax.tree.map(lambda a: a[np.arange(len(ks)), best], restarts)
        crit = jax.tree.map(np.asarray, _criteria(model, padded, xv, w, held))
        name = _name(family)
        for i, k in enumerate(ks):
            rows = slice(i * n_restarts, (i + 1) * n_restarts)
            b = int(best[i])
            model_k = Mixture(family, k)
            restart_params = _take(model_k, jax.tree.map(lambda a: a[i], restarts), k, axis=1)
            fits[(name, k)] = jax.tree.map(jnp.asarray, FitResult(
                params=jax.tree.map(lambda a: a[b], restart_params), restart_params=restart_params,
                objective=objective[i], trace=host.trace[rows], n_iter=host.n_iter[rows],
                n_passes=host.n_passes[rows], converged=host.converged[rows], status=status[i],
                collapsed=None if host.collapsed is None else host.collapsed[rows][:, :k],
                n_collapses=host.n_collapses[rows], best=np.asarray(b), n_points=host.n_points,
            ))
            inits[(name, k)] = jax.tree.map(jnp.asarray, _take(model_k, jax.tree.map(lambda a: np.asarray(a[i]), params0),
                                                             k, axis=1))
            table.append(SelectionRow(
                k, name, float(crit["log_likelihood"][i]), int(crit["n_parameters"][i]), float(crit["bic"][i]),
                float(crit["aic"][i]), float(crit["icl"][i]), int(status[i, b]),
                None if validation is None else float(crit["heldout"][i]),
            ))
    regular = [r for r in table if r.status in (RESULTS.SUCCESS, RESULTS.MAX_ITER)] or table
    if criterion == "heldout":
        best = max(regular, key=lambda r: r.heldout)
    else:
        best = min(regular, key=lambda r: getattr(r, criterion))
    model = Mixture(next(f for f in fams if _name(f) == best.structure), best.k)
    return Selection(table, criterion, best, model, fits[(best.structure, best.k)], fits, inits)


def _starts(params) -> FitResult:
    """Per-restart initial parameters ``params`` (leading axis R) in the form
    :func:`emjax.fit` continues restarts from: a FitResult's ``restart_params``."""
    r = jax.tree.leaves(params)[0].shape[0]
    zeros = np.zeros((r,), np.int32)  # host constants: no program compiled for them
    return FitResult(
        params=jax.tree.map(lambda a: a[0], params), restart_params=params, objective=np.zeros((r,)),
        trace=np.zeros((r, 1)), n_iter=zeros, n_passes=zeros, converged=zeros.astype(bool), status=zeros,
        collapsed=None, n_collapses=zeros, best=np.asarray(0), n_points=np.asarray(0.0),
    )


# -- K-fold cross-validation ---------------------------------------------------------------


class CVRow(NamedTuple):
    """One (family, K) of a cross-validation.

    Attributes:
        k: the number of components.
        structure: the family's name.
        heldout: ``sum_n w_n log p(x_n | fit without x_n's fold)`` over every row
            (each row is scored once, by the fit of the folds it is not in; higher is
            better).
        per_point: ``heldout / sum_n w_n``.
        std_error: the standard error of ``per_point`` across folds: the standard
            deviation of the folds' per-point held-out log-likelihoods over
            ``sqrt(F)``.
        folds: ``(F,)`` each fold's held-out log-likelihood (summed over its rows).
        status: ``(F,)`` each fold's best restart's :class:`emjax.RESULTS` code.
    """

    k: int
    structure: str
    heldout: float
    per_point: float
    std_error: float
    folds: tuple
    status: tuple


class CrossValidation(eqx.Module):
    """The outcome of :func:`cross_validate`.

    Attributes:
        table: one :class:`CVRow` per (family, K), in the order swept.
        best: the row of highest ``heldout`` among those whose every fold ended regularly.
        fold_of: ``(N,)`` the fold each row is held out in.
        params: every row's best parameters per fold (leading axis F), keyed by ``(structure, k)``.
        initial_params: every row's initial parameters, ``(F, R)`` leading axes, keyed alike.
    """

    table: list
    best: CVRow
    fold_of: np.ndarray
    params: dict
    initial_params: dict

    def __str__(self) -> str:
        lines = [f"{'structure':<20} {'K':>3} {'held-out':>12} {'per point':>10} {'std err':>8}  folds regular"]
        for r in self.table:
            mark = "  <- best" if r == self.best else ""
            ok = sum(s in (RESULTS.SUCCESS, RESULTS.MAX_ITER) for s in r.status)
            lines.append(f"{r.structure:<20} {r.k:>3} {r.heldout:>12.3f} {r.per_point:>10.4f} {r.std_error:>8.4f}"
                         f"  {ok}/{len(r.status)}{mark}")
        return "\n".join(lines)


@eqx.filter_jit
def _heldout(model: Mixture, params, x, test_rows, test_w):
    """``(F, len(ks))`` held-out log-likelihoods: ``params`` with leading ``(F, len(ks))``
    axes; ``test_rows`` ``(F, M)`` each fold's held-out rows (padded to the largest fold)
    and ``test_w`` ``(F, M)`` their weights (0 on the padding): each row is scored once,
    by its own fold's fits."""
    def one(p, rows, held):
        return jnp.sum(jnp.where(held > 0, held * model.log_prob(p, x[rows]), 0.0))  # padding's value unused

    return jax.vmap(lambda pf, rows, held: jax.vmap(lambda p: one(p, rows, held))(pf))(params, test_rows, test_w)


def cross_validate(
    families: Family | Sequence[Family],
    x,
    ks=range(1, 10),
    *,
    key,
    n_folds: int = 5,
    n_restarts: int = 4,
    init: str = "kmeans",
    weights=None,
    max_iter: int = 100,
    tol: float = 1e-6,
    **fit_options: Any,
) -> CrossValidation:
    """K-fold cross-validation of the number of components (and the family): the
    held-out log-likelihood of every K, each row scored by the fit that did not see it.

    The folds are 0/1 weight masks over the same data, not copies: every fold, K and
    restart of one family runs in ONE compiled program, :func:`emjax.fit` ``vmap``-ped
    over the folds' training weights (a zero weight is the row's absence, exactly),
    each K as in :func:`select` (components beyond K dropped). Each fold's restarts
    start from its training rows only (no held-out row reaches its initialisation);
    the best restart per fold and K is the one of highest training objective.

    Args:
        families: a :class:`emjax.Family` or a sequence of them.
        x: data ``(N, D)`` (an in-memory array).
        ks: the numbers of components, each at most the training rows of a fold.
        key: PRNG key (the folds' random split, the starts and the fits).
        n_folds: F, at least 2 and at most N; rows are split at random into folds
            whose sizes differ by at most one.
        n_restarts: restarts per (family, K, fold).
        init: as :func:`select`.
        weights: optional ``(N,)`` sample weights (repetition counts): they weight
            the training fits and the held-out sums.
        max_iter, tol, **fit_options: as :func:`emjax.fit`.

    Returns:
        A :class:`CrossValidation`: the table and the chosen row.

    Raises:
        TypeError / ValueError: as :func:`select`, or a bad ``n_folds``; before compiling.

    Example:
        >>> x, _ = emjax.datasets.old_faithful()
        >>> cv = emjax.cross_validate(emjax.Gaussian("full"), x, ks=range(1, 4), key=jax.random.key(0),
        ...                           n_folds=3, n_restarts=2)
        >>> print(cv)
        structure              K     held-out  per point  std err  folds regular
        Gaussian(full)         1    -1293.254    -4.7546   0.0253  3/3
        Gaussian(full)         2    -1144.839    -4.2090   0.1134  3/3  <- best
        Gaussian(full)         3    -1148.692    -4.2231   0.1477  3/3
        >>> cv.best.k
        2
    """
    fams, ks, n_restarts, key = _check_sweep(families, ks, n_restarts, key)
    k_max = max(ks)
    table, fold_params, inits, fold_of = [], {}, {}, None
    split_key, key = jax.random.split(key)
    checked = [_checked(family, k_max, x, weights) for family in fams]  # all before any fit
    for family, (model, xv, user_w, _), family_key in zip(fams, checked, jax.random.split(key, len(fams))):
        n = xv.shape[0]
        if fold_of is None:
            n_folds = check_int("n_folds", n_folds, 2, n)
            # Row -> fold: a random permutation dealt round-robin (fold sizes differ by at most one).
            order = np.asarray(jax.random.permutation(split_key, n))
            fold_of = np.empty(n, np.int32)
            fold_of[order] = np.arange(n) % n_folds
            n_train = n - int(np.max(np.bincount(fold_of)))
            if n_train < k_max:
                raise ValueError(f"a fold trains on {n_train} rows, fewer than max(ks) = {k_max} components; "
                                 "use fewer folds or smaller ks.")
            test = fold_of[None, :] == np.arange(n_folds)[:, None]
            # Each fold's first n_train training rows (in row order): its restarts' starts see only these.
            train_rows = np.stack([np.flatnonzero(~t)[:n_train] for t in test])
            # Each fold's held-out rows, padded by repeating its first ones (weight 0) to the largest fold.
            n_test = n - n_train
            test_rows = np.stack([np.resize(np.flatnonzero(t), n_test) for t in test])
            test_pad = np.arange(n_test)[None, :] < test.sum(axis=1)[:, None]
        dtype = float_dtype(xv.dtype)
        w = jnp.ones((n,), dtype) if user_w is None else user_w
        test_w = jnp.asarray(test, dtype)
        empty = np.flatnonzero(np.asarray(test_w @ w) <= 0)
        if empty.size:
            raise ValueError(f"fold {int(empty[0])} holds out rows whose weights are all 0: nothing to score it on; "
                             "use fewer folds or give those rows weight.")
        init_key, fit_key = jax.random.split(family_key)
        keys = jax.random.split(init_key, n_folds * len(ks) * n_restarts).reshape(n_folds, len(ks), n_restarts)
        params0 = _fold_initial(model, keys, xv, jnp.asarray(train_rows), _actives(ks, k_max), init)

        def fit_fold(train_w, p0):
            return fit(model, xv, key=fit_key, init=_starts(_flatten(p0)), weights=train_w, max_iter=max_iter,
                       tol=tol, **fit_options)

        result = jax.vmap(fit_fold)(w * (1 - test_w), params0)
        status = np.asarray(result.status).reshape(n_folds, len(ks), n_restarts)
        objective = np.asarray(result.objective).reshape(n_folds, len(ks), n_restarts)
        best = np.asarray(jax.vmap(jax.vmap(best_restart))(status, objective))  # (F, len(ks))
        # Each (fold, K)'s best restart, on the host (an eager slice per K would compile a program per K).
        restarts = jax.tree.map(lambda a: np.asarray(a).reshape((n_folds, len(ks), n_restarts) + a.shape[2:]),
                                result.restart_params)
        f_idx, k_idx = np.meshgrid(np.arange(n_folds), np.arange(len(ks)), indexing="ij")
        chosen = jax.tree.map(lambda a: a[f_idx, k_idx, best], restarts)
        held_w = jnp.where(jnp.asarray(test_pad), w[test_rows], 0.0)
        heldout = np.asarray(_heldout(model, chosen, xv, jnp.asarray(test_rows), held_w))  # (F, len(ks))
        best_status = status[f_idx, k_idx, best]
        fold_weight = np.asarray(test_w @ w)
        starts = jax.tree.map(np.asarray, params0)
        name = _name(family)
        for i, k in enumerate(ks):
            model_k = Mixture(family, k)
            per_fold = heldout[:, i] / fold_weight
            fold_params[(name, k)] = jax.tree.map(jnp.asarray, _take(model_k, jax.tree.map(lambda a: a[:, i], chosen),
                                                                     k, axis=1))
            inits[(name, k)] = jax.tree.map(jnp.asarray, _take(model_k, jax.tree.map(lambda a: a[:, i], starts),
                                                               k, axis=2))
            total = float(np.sum(heldout[:, i]))
            table.append(CVRow(k, name, total, total / float(np.sum(fold_weight)),
                               float(np.std(per_fold, ddof=1) / np.sqrt(n_folds)),
                               tuple(float(v) for v in heldout[:, i]), tuple(int(s) for s in best_status[:, i])))
    regular = [r for r in table if all(s in (RESULTS.SUCCESS, RESULTS.MAX_ITER) for s in r.status)] or table
    best_row = max(regular, key=lambda r: r.heldout)
    return CrossValidation(table, best_row, fold_of, fold_params, inits)
