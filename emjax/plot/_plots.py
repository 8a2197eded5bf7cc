"""The figures of :mod:`emjax.plot` (matplotlib; everything is read back to NumPy on the host first)."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import matplotlib
from matplotlib import colors as mcolors
from matplotlib.patches import Ellipse
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory

from .._result import FitResult, RESULTS
from .._select import CRITERIA, CrossValidation, Selection
from ..families._bernoulli import Bernoulli
from ..families._binomial import Binomial
from ..families._categorical import Categorical
from ..families._gaussian import Gaussian
from ..families._multinomial import Multinomial
from ..families._poisson import Poisson
from ..models._gating import ConstantGating
from ..models._mixture import Mixture, MixtureParams
from ..models._variational import VariationalGaussianMixture, VariationalGaussianParams

# -- shared helpers ------------------------------------------------------------------------


def _new_axes(ax, figsize=None):
    """``ax``, or the Axes of a new figure (pyplot's, so a notebook shows it)."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=figsize)[1]


def _new_figure(fig, figsize):
    if fig is not None:
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


def _colours(k: int) -> np.ndarray:
    """``(k, 4)`` RGBA: one colour per component (tab10, tab20, then a continuous map)."""
    if k <= 20:
        return mcolors.to_rgba_array(matplotlib.colormaps["tab10" if k <= 10 else "tab20"].colors[:k])
    return matplotlib.colormaps["turbo"](np.linspace(0.0, 1.0, k))


def _check_params(params, kind):
    if isinstance(params, FitResult):
        raise TypeError(f"params must be a {kind.__name__}; got a FitResult: pass result.params.")
    if not isinstance(params, kind):
        raise TypeError(f"params must be a {kind.__name__}; got {type(params).__name__}.")


def _constant_weights(model: Mixture, params: MixtureParams):
    """``(K,)`` weights of a mixture with constant weights, else ``None`` (they depend on covariates)."""
    return np.asarray(params.weights) if isinstance(model.gating, ConstantGating) else None


def _gaussian_components(model, params):
    """``(weights or None, means (K, D), covariances (K, D, D))`` as NumPy, of a mixture of
    Gaussian or Student-t components (their scale matrices) or a variational Gaussian mixture."""
    if isinstance(model, VariationalGaussianMixture):
        _check_params(params, VariationalGaussianParams)
        means = np.asarray(params.means)
        if means.ndim != 2:
            raise ValueError(f"params must be one set of parameters (means (K, D)); got means of shape {means.shape}: "
                             "pass result.params, not result.restart_params.")
        k, d = means.shape
        covariances = np.asarray(model.structure.full_matrices(params.covariances, k, d))
        return np.asarray(model.weights(params)), means, covariances
    if isinstance(model, Mixture) and isinstance(model.family, Gaussian):
        _check_params(params, MixtureParams)
        means = np.asarray(params.components.means)
        if means.ndim != 2:
            raise ValueError(f"params must be one set of parameters (means (K, D)); got means of shape {means.shape}: "
                             "pass result.params, not result.restart_params.")
        return _constant_weights(model, params), means, np.asarray(model.family.full_covariances(params.components))
    family = getattr(model, "family", None)
    what = type(model).__name__ + (f" of {type(family).__name__} components" if family is not None else "")
    raise TypeError(
        f"ellipses need Gaussian or Student-t components (an emjax.Mixture of emjax.Gaussian or emjax.StudentT, "
        f"or an emjax.VariationalGaussianMixture); got a {what}, which has no covariances."
    )


def _is_pair(x) -> bool:
    """Whether ``x`` is a pair ``(X, y)`` of covariates and outputs (experts' data)."""
    return isinstance(x, tuple) and len(x) == 2 and np.ndim(x[0]) == 2


def _data(x, d: int, name: str = "x") -> np.ndarray:
    if _is_pair(x):
        raise TypeError(f"{name} must be an (N, D) array of points; got a pair (covariates and outputs).")
    a = np.asarray(x, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) array; got shape {a.shape}.")
    if a.shape[1] != d:
        raise ValueError(f"{name} has {a.shape[1]} features but the components have {d}.")
    return a


def _dims(dims, d: int, fn: str) -> tuple[int, int]:
    if dims is None:
        if d != 2:
            raise ValueError(
                f"{fn} draws 2-D data but the components have D = {d} features: pass dims=(i, j) to draw the "
                "projection on features i and j, or use emjax.plot.pairs for every pair."
            )
        return 0, 1
    try:
        i, j = (int(v) for v in dims)
    except (TypeError, ValueError):
        raise ValueError(f"dims must be a pair of feature indices (i, j); got {dims!r}.") from None
    if not (0 <= i < d and 0 <= j < d) or i == j:
        raise ValueError(f"dims must be two different feature indices in [0, {d}); got {dims!r}.")
    return i, j


def _radii(n_std) -> list[float]:
    values = [n_std] if np.isscalar(n_std) else list(n_std)
    if not values or not all(np.isscalar(v) and np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"n_std must be a positive number or a sequence of them; got {n_std!r}.")
    return [float(v) for v in values]


def _ellipse_geometry(cov2: np.ndarray) -> tuple[float, float, float]:
    """``(major, minor, angle in degrees)`` of the unit-Mahalanobis ellipse of a 2x2 covariance:
    the square roots of its eigenvalues, the angle of the major axis' eigenvector."""
    vals, vecs = np.linalg.eigh(cov2)
    vals = np.maximum(vals, 0.0)
    return math.sqrt(vals[1]), math.sqrt(vals[0]), math.degrees(math.atan2(vecs[1, 1], vecs[0, 1]))


def _draw_components(ax, pts, labels, weights, means, covariances, dims, radii, colours, size):
    """Points (coloured by ``labels``) and each kept component's ellipses, projected on ``dims``."""
    i, j = dims
    if pts is not None:
        ax.scatter(pts[:, i], pts[:, j], c=colours[labels], s=size, alpha=0.6, linewidths=0)
    idx = np.array([i, j])
    for k, (mean, cov) in enumerate(zip(means, covariances)):
        if weights is not None and weights[k] == 0:  # a dropped component: no points, parameters left as they were
            continue
        major, minor, angle = _ellipse_geometry(cov[np.ix_(idx, idx)])
        for n, r in enumerate(radii):
            label = (f"component {k}" + ("" if weights is None else f" (weight {weights[k]:.3f})")) if n == 0 else None
            ax.add_patch(Ellipse(mean[idx], 2 * r * major, 2 * r * minor, angle=angle, fill=False,
                                 edgecolor=colours[k], linewidth=1.5, label=label))
        ax.plot(*mean[idx], marker="+", color="black", markersize=9, markeredgewidth=1.5, linestyle="none")
    ax.autoscale_view()


# -- ellipses and pairs ----------------------------------------------------------------------


def ellipses(model, params, x=None, *, n_std=2.0, dims=None, names=None, size=10.0, ax=None):
    """Data coloured by their most probable component and each component's ellipses.

    Each ellipse is a contour of a component's density: the points at Mahalanobis
    distance ``n_std`` from its mean, ``(y - mu)^T Sigma^-1 (y - mu) = n_std^2``, so its
    axes are ``2 n_std sqrt(lambda)`` for the eigenvalues ``lambda`` of ``Sigma`` and the
    major axis points along the largest one's eigenvector. ``Sigma`` is the covariance
    of a Gaussian component (every structure: full, tied, diag, spherical and mclust's
    parsimonious models, as ``(K, D, D)`` matrices) and the scale matrix of a Student-t
    one (its contours; its covariance is ``nu / (nu - 2)`` times that). With
    ``dims=(i, j)`` the data and ellipses are projected on features ``i`` and ``j``:
    the projected ellipse is the marginal's, drawn from the ``(i, j)`` block of
    ``Sigma``. Components whose weight is exactly 0 (dropped) are not drawn.

    Args:
        model: an :class:`emjax.Mixture` of :class:`emjax.Gaussian` or
            :class:`emjax.StudentT` components, or an :class:`emjax.VariationalGaussianMixture`.
        params: its parameters (``result.params``).
        x: optional ``(N, D)`` data, drawn coloured by ``model.predict``.
        n_std: the Mahalanobis radius of the ellipse, or a sequence of radii (one
            ellipse each, e.g. ``(1, 2)``).
        dims: the two features to draw, required when ``D != 2``.
        names: optional feature names for the axis labels (all ``D`` of them).
        size: marker area of the points.
        ax: the Axes to draw on; a new figure's when ``None``.

    Returns:
        The Axes. Its patches are the ellipses (``K`` times ``len(n_std)``, each
        component's labelled for ``ax.legend()``).

    Raises:
        TypeError: a model without Gaussian or Student-t components.
        ValueError: ``D != 2`` without ``dims``, data of another width, a bad ``n_std``.

    Example:
        >>> import emjax.plot
        >>> x, names = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=4)
        >>> ax = emjax.plot.ellipses(model, result.params, x, n_std=(1, 2), names=names)
        >>> len(ax.patches)   # two ellipses per component
        4
    """
    weights, means, covariances = _gaussian_components(model, params)
    k, d = means.shape
    i, j = _dims(dims, d, "ellipses")
    radii = _radii(n_std)
    pts = labels = None
    if x is not None:
        pts = _data(x, d)
        labels = np.asarray(model.predict(params, x))
    ax = _new_axes(ax)
    _draw_components(ax, pts, labels, weights, means, covariances, (i, j), radii, _colours(k), size)
    if names is not None:
        ax.set_xlabel(str(names[i]))
        ax.set_ylabel(str(names[j]))
    return ax


def pairs(model, params, x, *, dims=None, n_std=2.0, names=None, bins=20, size=6.0, fig=None):
    """A grid of every pairwise projection of the data with each component's ellipses (for ``D > 2``).

    Panel ``(r, c)`` off the diagonal is :func:`ellipses` on features ``(c, r)`` (the
    marginal's ellipse, from the covariance's 2x2 block); the diagonal holds the
    histogram of each feature, stacked by most probable component.

    Args:
        model, params, n_std: as :func:`ellipses`.
        x: ``(N, D)`` data.
        dims: the features to show (default all ``D``); at least two.
        names: optional names of all ``D`` features.
        bins: histogram bins on the diagonal.
        size: marker area of the points.
        fig: the Figure to draw on; a new one when ``None``.

    Returns:
        The Figure; ``fig.axes`` holds the ``len(dims) ** 2`` panels row by row.

    Raises:
        TypeError / ValueError: as :func:`ellipses`; fewer than two ``dims``.

    Example:
        >>> import emjax.plot
        >>> model = emjax.Mixture(emjax.Gaussian("diag"), 2)
        >>> params = emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.GaussianParams(
        ...     jnp.array([[0.0, 0.0, 0.0], [3.0, 3.0, 0.0]]), jnp.array([[1.0, 0.5, 1.0], [0.5, 1.0, 2.0]])))
        >>> x = np.random.default_rng(0).normal(size=(50, 3))
        >>> fig = emjax.plot.pairs(model, params, x, names=["a", "b", "c"])
        >>> len(fig.axes)
        9
    """
    weights, means, covariances = _gaussian_components(model, params)
    k, d = means.shape
    pts = _data(x, d)
    cols = list(range(d)) if dims is None else [int(v) for v in dims]
    if len(cols) < 2 or len(set(cols)) != len(cols) or not all(0 <= v < d for v in cols):
        raise ValueError(f"dims must be at least two different feature indices in [0, {d}); got {dims!r}.")
    radii = _radii(n_std)
    labels = np.asarray(model.predict(params, x))
    colours = _colours(k)
    m = len(cols)
    fig = _new_figure(fig, (2.4 * m, 2.4 * m))
    axes = fig.subplots(m, m, squeeze=False, sharex="col")
    for r, a in enumerate(cols):
        for c, b in enumerate(cols):
            ax = axes[r, c]
            if r == c:
                column = pts[:, a]
                edges = np.histogram_bin_edges(column[np.isfinite(column)], bins=bins)
                ax.hist([column[labels == q] for q in range(k)], bins=edges, stacked=True, color=colours[:k])
            else:
                _draw_components(ax, pts, labels, weights, means, covariances, (b, a), radii, colours, size)
            if names is not None:
                if r == m - 1:
                    ax.set_xlabel(str(names[b]))
                if c == 0:
                    ax.set_ylabel(str(names[a]))
    return fig


# -- the objective against iterations, passes, seconds ------------------------------------------------


def _named(results, what: str) -> dict:
    if isinstance(results, FitResult):
        return {None: results}
    if isinstance(results, Mapping) and results and all(isinstance(r, FitResult) for r in results.values()):
        return dict(results)
    raise TypeError(f"{what} takes an emjax.FitResult or a non-empty dict of them (name -> FitResult); "
                    f"got {type(results).__name__}.")


def _restart_rows(restarts, result: FitResult) -> list[int]:
    n = int(np.shape(result.objective)[0])
    if isinstance(restarts, str):
        if restarts == "best":
            return [int(result.best)]
        if restarts == "all":
            return list(range(n))
        raise ValueError(f"restarts must be 'best', 'all', or restart indices; got {restarts!r}.")
    rows = [int(restarts)] if np.isscalar(restarts) else [int(r) for r in restarts]
    if not rows or not all(0 <= r < n for r in rows):
        raise ValueError(f"restarts must be indices in [0, {n}); got {restarts!r}.")
    return rows


def _per_name_seconds(seconds, named: dict) -> dict:
    if seconds is None:
        raise ValueError("x='seconds' needs the measured wall time: seconds=<float> for one FitResult, or a dict "
                         "name -> seconds with the same names as the results.")
    if isinstance(seconds, Mapping):
        missing = [n for n in named if n not in seconds]
        if missing:
            raise ValueError(f"seconds has no wall time for {missing}; it must have one per result.")
        values = {n: seconds[n] for n in named}
    elif None in named:
        values = {None: seconds}
    else:
        raise ValueError("with a dict of results, seconds must be a dict name -> seconds (one wall time per fit).")
    for n, s in values.items():
        if not (np.isscalar(s) and np.isfinite(s) and s >= 0):
            where = "" if n is None else f" for {n!r}"
            raise ValueError(f"seconds must be non-negative numbers; got {s!r}{where}.")
    return {n: float(s) for n, s in values.items()}


def trace(results, *, x="iteration", seconds=None, restarts="best", per_point=True, reference=None, ax=None):
    """The objective of one fit or several (algorithms compared on one axis) against
    iterations, passes over the data, or seconds.

    A :class:`emjax.FitResult` records, per restart, the objective at the start and
    after each of its ``n_iter`` steps (``trace``), the total passes over the data
    (``n_passes``) and no timings; the other axes are derived from those, as follows.

    - ``x="iteration"``: step ``t = 0 .. n_iter``, exactly.
    - ``x="passes"``: step ``t`` at ``1 + t (n_passes - 1) / n_iter``. Every emjax
      algorithm counts one pass for the initial evaluation and its steps' reads after
      that: one per batch-EM step (plus ECME's refining passes), ``updates * m / N``
      per stepwise-EM step, the rows of the blocks visited per incremental-EM step,
      the mini-batches of a stochastic gradient step. Those are the same for every
      step, so the axis is exact for them (up to incremental EM's unequal blocks
      when ``N`` is not a multiple of ``n_blocks``); it spreads the total evenly
      where steps differ: over-relaxed EM's rejected steps (a second E-step), line
      searches, a re-initialisation after a collapse (its initial pass).
    - ``x="seconds"``: the wall time measured by the caller (``seconds``), spread
      evenly over the loop's steps: step ``t`` at ``t * seconds / max(n_iter)``
      (the compiled loop runs until its last restart stops, and every step of it
      costs the same when the restarts are vectorised, the default on a CPU for
      small data; run one at a time, later steps with fewer restarts left cost less,
      so time fits of one restart for a comparison). Measure a compiled fit (call it once first) and block on its
      result (``jax.block_until_ready``), or the time includes compilation.

    Args:
        results: an :class:`emjax.FitResult`, or a dict name -> FitResult (one line
            each, labelled, e.g. one per algorithm).
        x: ``"iteration"``, ``"passes"`` or ``"seconds"``.
        seconds: the measured wall time of the fit (a number), or a dict name ->
            seconds for a dict of results; required for ``x="seconds"``.
        restarts: ``"best"`` (the best restart of each fit), ``"all"``, or restart indices.
        per_point: divide the objective by the data's total weight (``n_points``).
        reference: ``None`` draws the objective; a number draws ``reference - objective``
            on a log axis (the gap to a known optimum, in the same units: per point
            when ``per_point``), and ``"best"`` takes the highest final objective
            drawn. A gap of 0 or below is not drawn (log axis); the line data hold it.
        ax: the Axes to draw on; a new figure's when ``None``.

    Returns:
        The Axes: one line per (result, restart) drawn, in order, whose data are the
        ``n_iter + 1`` points described, labelled (a legend when ``results`` is a dict).

    Raises:
        TypeError / ValueError: results that are not FitResults, an unknown ``x``,
            ``x="seconds"`` without the wall times, bad restart indices.

    Example:
        >>> import emjax.plot
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> em = emjax.fit(model, x, key=jax.random.key(0), n_restarts=4)
        >>> stepwise = emjax.fit(model, x, key=jax.random.key(0), init=em.params, max_iter=10,
        ...                      algorithm=emjax.StepwiseEM(batch_size=68, updates_per_step=2))
        >>> ax = emjax.plot.trace({"EM": em, "stepwise EM": stepwise}, x="passes", reference="best")
        >>> [float(p) for p in ax.lines[1].get_xdata()[:3]]   # half a pass per stepwise step
        [1.0, 1.5, 2.0]
    """
    named = _named(results, "trace")
    if x not in ("iteration", "passes", "seconds"):
        raise ValueError(f"x must be 'iteration', 'passes' or 'seconds'; got {x!r}.")
    if seconds is not None and x != "seconds":
        raise ValueError("seconds is only used with x='seconds'.")
    per_step_seconds = {}
    if x == "seconds":
        for name, s in _per_name_seconds(seconds, named).items():
            per_step_seconds[name] = s / max(int(np.max(np.asarray(named[name].n_iter))), 1)
    curves = []
    for name, result in named.items():
        host = {f: np.asarray(getattr(result, f)) for f in ("trace", "n_iter", "n_passes", "n_points")}
        scale = float(host["n_points"]) if per_point else 1.0
        rows = _restart_rows(restarts, result)
        for r in rows:
            n = int(host["n_iter"][r])
            steps = np.arange(n + 1)
            if x == "iteration":
                xs = steps.astype(float)
            elif x == "passes":
                xs = 1.0 + steps * ((float(host["n_passes"][r]) - 1.0) / n if n else 0.0)
            else:
                xs = steps * per_step_seconds[name]
            ys = host["trace"][r, : n + 1] / scale
            label = name if len(rows) == 1 else (f"restart {r}" if name is None else f"{name}, restart {r}")
            curves.append((name, label, xs, ys))
    if isinstance(reference, str):
        if reference != "best":
            raise ValueError(f"reference must be None, a number or 'best'; got {reference!r}.")
        finals = [ys[-1] for *_, ys in curves if np.isfinite(ys[-1])]
        reference = max(finals) if finals else 0.0
    elif reference is not None and not (np.isscalar(reference) and np.isfinite(reference)):
        raise ValueError(f"reference must be None, a finite number or 'best'; got {reference!r}.")
    ax = _new_axes(ax)
    names = list(named)
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    several = len(names) > 1
    for n, (name, label, xs, ys) in enumerate(curves):
        colour = cycle[names.index(name) % len(cycle)] if several else cycle[n % len(cycle)]
        values = ys if reference is None else reference - ys
        ax.plot(xs, values, color=colour, label=label, alpha=0.9 if several or len(curves) == 1 else 0.7)
    if reference is not None:
        ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel({"iteration": "iteration", "passes": "passes over the data",
                   "seconds": "seconds (measured wall time spread evenly over the steps)"}[x])
    unit = " per point" if per_point else ""
    ax.set_ylabel(f"objective{unit}" if reference is None else f"{float(reference):.6g} - objective{unit}")
    if None not in named:  # several fits: name them (one fit's restarts stay unlabelled on the figure)
        ax.legend(fontsize=8)
    return ax


# -- model selection -----------------------------------------------------------------------


def selection(sel, *, criteria=None, mclust_sign=False, ax=None):
    """Information criteria (or a held-out score) against the number of components, one
    line per family.

    For an :class:`emjax.Selection`: each criterion of its table (``bic``, ``aic``,
    ``icl``, ``heldout``) against K, one colour per family and one line style per
    criterion; the chosen model is starred (and K marked) when its criterion is drawn.
    For an :class:`emjax.CrossValidation`: the held-out log-likelihood per point
    against K with its standard error across folds, the best row starred.

    Args:
        sel: an :class:`emjax.Selection` or :class:`emjax.CrossValidation`.
        criteria: the criteria to draw, e.g. ``("bic", "icl")``; default the one that
            chose (``sel.criterion``). Not for a CrossValidation.
        mclust_sign: draw ``-bic``, ``-aic``, ``-icl`` (mclust's sign: higher is better).
        ax: the Axes to draw on; a new figure's when ``None``.

    Returns:
        The Axes: one line per (criterion, family) in that order, whose data are
        ``(k, criterion)`` of the family's rows in the table's order.

    Raises:
        TypeError: ``sel`` is neither.
        ValueError: an unknown criterion, ``"heldout"`` for a selection without
            validation data.

    Example:
        >>> import emjax.plot
        >>> x, _ = emjax.datasets.old_faithful()
        >>> families = [emjax.Gaussian("full"), emjax.Gaussian("diag")]
        >>> sel = emjax.select(families, x, ks=range(1, 4), key=jax.random.key(0), n_restarts=2)
        >>> ax = emjax.plot.selection(sel, criteria=("bic", "icl"))
        >>> [line.get_label() for line in ax.lines[:2]]
        ['Gaussian(full) BIC', 'Gaussian(diag) BIC']
    """
    if isinstance(sel, CrossValidation):
        if criteria is not None or mclust_sign:
            raise ValueError("criteria and mclust_sign apply to a Selection; a CrossValidation has one score.")
        return _cross_validation(sel, ax)
    if not isinstance(sel, Selection):
        raise TypeError(f"sel must be an emjax.Selection or emjax.CrossValidation; got {type(sel).__name__}.")
    criteria = (sel.criterion,) if criteria is None else ((criteria,) if isinstance(criteria, str) else tuple(criteria))
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown or not criteria:
        raise ValueError(f"criteria must be among {CRITERIA}; got {criteria!r}.")
    if "heldout" in criteria and sel.table[0].heldout is None:
        raise ValueError("this selection has no held-out scores: emjax.select(..., validation=x_val) records them.")
    structures = list(dict.fromkeys(r.structure for r in sel.table))
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    styles = {"bic": "-", "aic": "--", "icl": ":", "heldout": "-."}
    ax = _new_axes(ax)

    def value(row, c):
        v = getattr(row, c)
        return -v if mclust_sign and c != "heldout" else v

    for c in criteria:
        for s, structure in enumerate(structures):
            rows = [r for r in sel.table if r.structure == structure]
            label = structure if len(criteria) == 1 else f"{structure} {c.upper()}"
            ax.plot([r.k for r in rows], [value(r, c) for r in rows], color=colours[s % len(colours)],
                    linestyle=styles[c], marker="o", markersize=4, label=label)
    if sel.criterion in criteria:
        ax.plot([sel.best.k], [value(sel.best, sel.criterion)], marker="*", markersize=16, color="black",
                linestyle="none", label=f"chosen: {sel.best.structure}, K = {sel.best.k}", zorder=3)
        ax.axvline(sel.best.k, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("number of components K")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    higher = all(c == "heldout" or mclust_sign for c in criteria)
    lower = all(c != "heldout" and not mclust_sign for c in criteria)
    better = " (higher is better)" if higher else " (lower is better)" if lower else ""
    sign = "-" if mclust_sign else ""
    ax.set_ylabel(", ".join(c if c == "heldout" else sign + c.upper() for c in criteria) + better)
    ax.legend(fontsize=8, ncol=2 if len(structures) * len(criteria) > 6 else 1)
    return ax


def _cross_validation(cv: CrossValidation, ax):
    ax = _new_axes(ax)
    structures = list(dict.fromkeys(r.structure for r in cv.table))
    for structure in structures:
        rows = [r for r in cv.table if r.structure == structure]
        ax.errorbar([r.k for r in rows], [r.per_point for r in rows], yerr=[r.std_error for r in rows], marker="o",
                    markersize=4, capsize=3, label=structure)
    ax.plot([cv.best.k], [cv.best.per_point], marker="*", markersize=16, color="black", linestyle="none",
            label=f"best: {cv.best.structure}, K = {cv.best.k}", zorder=3)
    ax.set_xlabel("number of components K")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(f"held-out log-likelihood per point ({len(cv.table[0].folds)} folds, +- standard error)")
    ax.legend(fontsize=8)
    return ax


# -- responsibilities and uncertainty ------------------------------------------------------------------


def responsibilities(model, params, x, *, kind=None, dims=None, size=6.0, ax=None):
    """Each point's posterior over the components and its uncertainty ``1 - max_k r_nk``
    (mclust's uncertainty plot).

    ``kind="scatter"``: the points on two features, coloured by their most probable
    component, the marker's area ``size + 200 u`` growing with the uncertainty ``u``
    (0 for a certain point, at most ``1 - 1/K``). ``kind="bars"``: for any data (any
    width, covariate/output pairs, discrete data), the points ordered by most probable
    component and then by certainty, their responsibilities stacked (one colour per
    component, summing to 1) and the uncertainty as a black line.

    Args:
        model: a model with ``posterior(params, x) -> (N, K)`` (an :class:`emjax.Mixture`,
            :class:`emjax.MixtureOfExperts`, :class:`emjax.VariationalGaussianMixture`).
        params: its parameters (``result.params``).
        x: the data, as the model takes them.
        kind: ``"scatter"`` or ``"bars"``; default scatter for 2-D data (or with
            ``dims``), bars otherwise.
        dims: the two features of the scatter (required when ``D != 2``).
        size: the marker area of a certain point (scatter).
        ax: the Axes to draw on; a new figure's when ``None``.

    Returns:
        The Axes. Scatter: one collection, its sizes ``size + 200 u``. Bars: one filled
        band per component and the uncertainty line (``ax.lines[-1]``, its data
        ``(rank, u)`` of the ordered points).

    Raises:
        TypeError / ValueError: a model without ``posterior``, an unknown ``kind``,
            scatter of data that are not an ``(N, D)`` array.

    Example:
        >>> import emjax.plot
        >>> model = emjax.Mixture(emjax.Gaussian("spherical"), 2)
        >>> params = emjax.MixtureParams(jnp.array([0.5, 0.5]), emjax.GaussianParams(
        ...     jnp.array([[0.0, 0.0], [2.0, 2.0]]), jnp.array([1.0, 0.5])))
        >>> x = np.random.default_rng(0).normal(size=(100, 2)) * 1.2 + 1.0
        >>> ax = emjax.plot.responsibilities(model, params, x)
        >>> ax = emjax.plot.ellipses(model, params, ax=ax)   # the components on top
    """
    if not callable(getattr(model, "posterior", None)):
        raise TypeError(f"responsibilities need a model with posterior(params, x); got {type(model).__name__}.")
    if kind is None:
        array = not _is_pair(x) and np.ndim(x) == 2
        kind = "scatter" if array and (dims is not None or np.shape(x)[1] == 2) else "bars"
    if kind not in ("scatter", "bars"):
        raise ValueError(f"kind must be 'scatter' or 'bars'; got {kind!r}.")
    if kind == "scatter":
        if _is_pair(x) or np.ndim(x) != 2:
            raise ValueError("kind='scatter' needs an (N, D) array of points; use kind='bars' for other data.")
        pts = np.asarray(x, dtype=float)
        i, j = _dims(dims, pts.shape[1], "responsibilities(kind='scatter')")
    post = np.asarray(model.posterior(params, x))
    n, k = post.shape
    labels = post.argmax(axis=1)
    uncertainty = 1.0 - post.max(axis=1)
    colours = _colours(k)
    ax = _new_axes(ax)
    if kind == "scatter":
        ax.scatter(pts[:, i], pts[:, j], c=colours[labels], s=size + 200.0 * uncertainty, alpha=0.7, linewidths=0)
        ax.set_title("marker area: uncertainty 1 - max_k p(k | x)", fontsize=9)
        return ax
    order = np.lexsort((uncertainty, labels))  # by component, then most certain first
    ranks = np.arange(n)
    cumulative = np.concatenate([np.zeros((n, 1)), np.cumsum(post[order], axis=1)], axis=1)
    for q in range(k):
        ax.fill_between(ranks, cumulative[:, q], cumulative[:, q + 1], step="mid", color=colours[q], linewidth=0,
                        label=f"component {q}")
    ax.plot(ranks, uncertainty[order], color="black", linewidth=1.0, label="uncertainty")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("point (ordered by most probable component, then certainty)")
    ax.set_ylabel("p(k | x)")
    return ax


# -- component images --------------------------------------------------------------------------


def _component_images(model, params):
    """``(values (K, C, D), (vmin, vmax) or None, channel names or None)``."""
    family = getattr(model, "family", None)
    if not isinstance(model, Mixture):
        raise TypeError(f"images need an emjax.Mixture; got {type(model).__name__}.")
    _check_params(params, MixtureParams)
    c = params.components
    if isinstance(family, Categorical):
        probs = np.asarray(c.probs)  # (K, D, S)
        if probs.ndim != 3:
            raise ValueError(f"params must be one set of parameters (probs (K, D, S)); got shape {probs.shape}.")
        return np.moveaxis(probs, 2, 1), (0.0, 1.0), [f"x = {s}" for s in range(probs.shape[2])]
    if isinstance(family, Bernoulli):
        values, limits = c.means, (0.0, 1.0)
    elif isinstance(family, Binomial):
        values, limits = c.probs, (0.0, 1.0)
    elif isinstance(family, Multinomial):
        values, limits = c.probs, None
    elif isinstance(family, Poisson):
        values, limits = c.rates, None
    elif isinstance(family, Gaussian):
        values, limits = c.means, None
    else:
        raise TypeError(f"images draw per-feature component parameters (Bernoulli, Binomial, Multinomial, Poisson, "
                        f"Gaussian or Student-t means, Categorical probabilities); got {type(family).__name__}.")
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError(f"params must be one set of parameters ((K, D)); got shape {values.shape}.")
    return values[:, None, :], limits, None


def images(model, params, shape, *, order="weight", category=None, ncols=None, cmap="gray_r", fig=None):
    """Each component's per-feature parameters as an image: Bernoulli means, Binomial and
    Multinomial probabilities, Poisson rates, Gaussian or Student-t means; for a
    Categorical family the probability of each category, one row per category.

    Probabilities (Bernoulli, Binomial, Categorical) share the colour scale ``[0, 1]``;
    the others the range of all the components' values. One colour bar.

    Args:
        model: an :class:`emjax.Mixture` of one of those families.
        params: its parameters (``result.params``).
        shape: the image shape, e.g. ``(8, 8)``; its product is the number of features ``D``.
        order: ``"weight"`` (heaviest component first) or ``"index"``.
        category: for a Categorical family, one category to draw (one row); default all.
        ncols: panels per row (default up to 5; a Categorical's grid has one column
            per component and one row per category).
        cmap: the colour map.
        fig: the Figure to draw on; a new one when ``None``.

    Returns:
        The Figure; its first ``K`` (times the categories) Axes hold the images
        (``ax.images[0].get_array()`` the values, shaped ``shape``), titled by
        component and weight.

    Raises:
        TypeError: another model or family.
        ValueError: ``shape`` whose product is not ``D``, a bad ``order`` or ``category``.

    Example:
        >>> import emjax.plot
        >>> model = emjax.Mixture(emjax.Bernoulli(), 3)
        >>> means = np.random.default_rng(0).uniform(size=(3, 64))   # e.g. a fit's result.params
        >>> params = emjax.MixtureParams(jnp.array([0.2, 0.5, 0.3]), emjax.BernoulliParams(jnp.asarray(means)))
        >>> fig = emjax.plot.images(model, params, (8, 8))
        >>> [ax.get_title() for ax in fig.axes[:3]]   # heaviest first
        ['1: weight 0.500', '2: weight 0.300', '0: weight 0.200']
    """
    values, limits, channels = _component_images(model, params)
    k, n_channels, d = values.shape
    shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
    if not 1 <= len(shape) <= 2 or math.prod(shape) != d:
        raise ValueError(f"shape must be one or two sizes whose product is the number of features {d}; got {shape}.")
    if len(shape) == 1:
        shape = (1,) + shape
    if category is not None:
        if channels is None:
            raise ValueError("category applies to a Categorical family only.")
        if not 0 <= int(category) < n_channels:
            raise ValueError(f"category must be in [0, {n_channels}); got {category!r}.")
        values, channels = values[:, [int(category)]], [channels[int(category)]]
        n_channels = 1
    weights = _constant_weights(model, params)
    if order == "weight":
        ranking = np.argsort(-weights, kind="stable") if weights is not None else np.arange(k)
    elif order == "index":
        ranking = np.arange(k)
    else:
        raise ValueError(f"order must be 'weight' or 'index'; got {order!r}.")
    if limits is None:
        finite = values[np.isfinite(values)]
        limits = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if n_channels == 1:
        cols = min(k, 5) if ncols is None else int(ncols)
        rows = -(-k // cols)
    else:
        cols, rows = k, n_channels
    aspect = shape[0] / shape[1]
    fig = _new_figure(fig, (min(1.6 * cols, 16), min(1.6 * rows * aspect + 0.6, 16)))
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    drawn = []
    for p, comp in enumerate(ranking):
        title = f"{comp}" + ("" if weights is None else f": weight {weights[comp]:.3f}")
        for ch in range(n_channels):
            ax = axes[ch, p] if n_channels > 1 else axes.ravel()[p]
            im = ax.imshow(values[comp, ch].reshape(shape), cmap=cmap, vmin=limits[0], vmax=limits[1])
            ax.set_frame_on(True)
            drawn.append(ax)
            if ch == 0:
                ax.set_title(title, fontsize=8)
            if n_channels > 1 and p == 0:
                ax.set_ylabel(channels[ch], fontsize=8)
    fig.colorbar(im, ax=drawn, shrink=0.8)
    return fig


# -- the restarts -----------------------------------------------------------------------------

_STATUS_STYLE = {
    RESULTS.SUCCESS: ("tab:blue", "converged"),
    RESULTS.MAX_ITER: ("tab:orange", "max_iter"),
    RESULTS.NONFINITE: ("tab:red", "non-finite step"),
    RESULTS.COLLAPSED: ("tab:purple", "collapsed"),
    RESULTS.INIT_FAILED: ("tab:gray", "initialisation failed"),
}


def _singular(result) -> np.ndarray:
    """``(R,)`` restarts that met a singularity: a collapsed component (re-initialised or
    at the end) or a non-finite step."""
    status = np.asarray(result.status)
    return (np.asarray(result.n_collapses) > 0) | (status == RESULTS.COLLAPSED) | (status == RESULTS.NONFINITE)


def restarts(results, *, per_point=True, ax=None):
    """How every restart ended: its final objective, coloured by its status code
    (:class:`emjax.RESULTS`), singular restarts (a collapsed component, re-initialised or
    at the end, or a non-finite step) drawn as large crosses, the best ringed.

    One fit: x is the restart index. A dict of fits (e.g. one per algorithm): one column
    each, its restarts spread across it, the tick naming it and its count of singular
    restarts. A non-finite final objective (a failed initialisation) is drawn at the
    bottom edge as a triangle.

    Args:
        results: an :class:`emjax.FitResult` or a dict name -> FitResult.
        per_point: divide the objective by the data's total weight.
        ax: the Axes to draw on; a new figure's when ``None``.

    Returns:
        The Axes. Its first collection holds every restart with a finite objective,
        fit after fit, in restart order (``get_offsets()`` the ``(x, objective)``).

    Raises:
        TypeError: results that are not FitResults.

    Example:
        >>> import emjax.plot
        >>> x, _ = emjax.datasets.old_faithful()
        >>> model = emjax.Mixture(emjax.Gaussian("full"), 2)
        >>> result = emjax.fit(model, x, key=jax.random.key(0), n_restarts=4)
        >>> ax = emjax.plot.restarts(result)
        >>> ax.get_xlabel()
        'restart (0/4 singular)'
    """
    named = _named(results, "restarts")
    ax = _new_axes(ax)
    xs, ys, colours, singular_all, best_pts, bottom, ticks = [], [], [], [], [], [], []
    for g, (name, result) in enumerate(named.items()):
        objective = np.asarray(result.objective, dtype=float) / (float(result.n_points) if per_point else 1.0)
        status = np.asarray(result.status)
        singular = _singular(result)
        r = objective.shape[0]
        pos = np.arange(r, dtype=float) if name is None else g + (np.linspace(-0.3, 0.3, r) if r > 1 else np.zeros(1))
        for i in range(r):
            colour = _STATUS_STYLE.get(int(status[i]), ("black", ""))[0]
            if np.isfinite(objective[i]):
                xs.append(pos[i])
                ys.append(objective[i])
                colours.append(colour)
                singular_all.append(bool(singular[i]))
                if i == int(result.best):
                    best_pts.append((pos[i], objective[i]))
            else:
                bottom.append((pos[i], colour))
        ticks.append(f"{name}\n{int(singular.sum())}/{r} singular")
    xs, ys, singular_all = np.asarray(xs), np.asarray(ys), np.asarray(singular_all, bool)
    colours = np.asarray([mcolors.to_rgba(c) for c in colours]).reshape(-1, 4)
    ax.scatter(xs, ys, c=colours, s=np.where(singular_all, 90.0, 30.0),
               marker="o", linewidths=0, alpha=0.85, zorder=2)
    if singular_all.any():
        ax.scatter(xs[singular_all], ys[singular_all], c=colours[singular_all], s=110.0, marker="x", linewidths=2.0,
                   zorder=3)
    if best_pts:
        ax.scatter(*np.asarray(best_pts).T, s=180.0, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
    if bottom:
        transform = blended_transform_factory(ax.transData, ax.transAxes)
        for position, colour in bottom:
            ax.plot([position], [0.02], marker="v", color=colour, markersize=9, transform=transform, clip_on=False)
    if None in named:
        n_sing = int(_singular(named[None]).sum())
        ax.set_xlabel(f"restart ({n_sing}/{len(np.asarray(named[None].status))} singular)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        ax.set_xticks(range(len(named)), ticks, fontsize=8)
        ax.set_xlim(-0.6, len(named) - 0.4)
    ax.set_ylabel("final objective" + (" per point" if per_point else ""))
    present = sorted({int(s) for res in named.values() for s in np.asarray(res.status)})
    handles = [Line2D([], [], marker="o", linestyle="none", color=_STATUS_STYLE.get(s, ("black", ""))[0],
                      label=_STATUS_STYLE.get(s, ("", f"status {s}"))[1]) for s in present]
    handles.append(Line2D([], [], marker="x", linestyle="none", color="black", markeredgewidth=2,
                          label="singular (collapsed or non-finite)"))
    handles.append(Line2D([], [], marker="o", linestyle="none", markerfacecolor="none", markeredgecolor="black",
                          markersize=10, label="best"))
    ax.legend(handles=handles, fontsize=8)
    return ax
