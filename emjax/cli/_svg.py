"""The command line's plots, as dependency-free SVG: a fitted mixture in two
dimensions (points coloured by component, each component's sigma ellipses) and
a model-selection criterion against the number of components.

Only numpy and the standard library: emjax does not depend on matplotlib (``pip
install emjax`` installs none), and a plot written by the command line must not
need it either. :mod:`emjax.plot` draws with matplotlib for Python users.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import escape

import numpy as np

#: Categorical colours (matplotlib's "tab10"), cycled when K > 10.
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)

#: Stroke dash pattern of the 1-, 2- and 3-sigma ellipses.
_DASHES = {1: None, 2: "6 4", 3: "2 3"}

_WIDTH, _HEIGHT = 780, 540
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 560, 62, 470  # the plot area, in pixels
_FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def _nice_step(span: float, target: int = 8) -> float:
    """A tick spacing of 1, 2 or 5 times a power of ten giving about ``target`` ticks."""
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    for mult in (1.0, 2.0, 5.0, 10.0):
        if raw <= mult * power:
            return mult * power
    return 10.0 * power


def _axes(out: list, px, py, xticks, yticks) -> None:
    """Grid lines, tick marks, the frame and the tick labels of a plot's axes;
    ``xticks``/``yticks`` are ``(value, label)`` pairs, ``px``/``py`` map values to pixels."""
    out.append('<g class="axes" stroke="#000" stroke-width="1">')
    for t, _ in xticks:
        p = px(t)
        out.append(f'<line x1="{p:.2f}" y1="{_TOP}" x2="{p:.2f}" y2="{_BOTTOM}" stroke="#e6e6e6"/>')
        out.append(f'<line x1="{p:.2f}" y1="{_BOTTOM}" x2="{p:.2f}" y2="{_BOTTOM + 5}"/>')
    for t, _ in yticks:
        p = py(t)
        out.append(f'<line x1="{_LEFT}" y1="{p:.2f}" x2="{_RIGHT}" y2="{p:.2f}" stroke="#e6e6e6"/>')
        out.append(f'<line x1="{_LEFT - 5}" y1="{p:.2f}" x2="{_LEFT}" y2="{p:.2f}"/>')
    # The frame after the grid lines, so they do not paint over it.
    out.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{_RIGHT - _LEFT}" height="{_BOTTOM - _TOP}" fill="none"/>')
    out.append("</g>")
    out.append('<g class="tick-labels" fill="#000">')
    for t, label in xticks:
        out.append(f'<text x="{px(t):.2f}" y="{_BOTTOM + 19}" text-anchor="middle">{label}</text>')
    for t, label in yticks:
        out.append(f'<text x="{_LEFT - 8}" y="{py(t) + 4:.2f}" text-anchor="end">{label}</text>')
    out.append("</g>")


def _ticks(lo: float, hi: float) -> tuple[np.ndarray, int]:
    """Tick positions inside ``[lo, hi]`` and the number of decimals that shows them exactly."""
    step = _nice_step(hi - lo)
    first = math.ceil(lo / step - 1e-9)
    last = math.floor(hi / step + 1e-9)
    ticks = np.arange(first, last + 1) * step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return ticks, decimals


def _axis_range(values: np.ndarray, extents: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """The shown range of one axis: the data and the outer ellipses, padded by 4%.

    The ellipses may widen the range by at most half the data's span on each side,
    so one very broad component cannot shrink the data to a dot; what still does
    not fit is clipped.
    """
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    for e_lo, e_hi in extents:
        lo = min(lo, max(e_lo, float(values.min()) - 0.5 * span))
        hi = max(hi, min(e_hi, float(values.max()) + 0.5 * span))
    if hi <= lo:
        lo, hi = lo - 0.5 * span, hi + 0.5 * span
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def mixture_svg(
    x,
    labels,
    weights,
    means,
    covariances,
    *,
    feature_names: Sequence[str] | None = None,
    title: str = "Gaussian mixture",
    sigmas: Sequence[int] = (1, 2),
    max_points: int = 20000,
) -> str:
    """An SVG document: the points coloured by component, with each component's sigma ellipses.

    Only the first two features are drawn. For ``D > 2`` the ellipses are those of
    the marginal distribution of features 1 and 2, whose covariance is the
    leading 2x2 block.

    Args:
        x: data ``(N, D)``, ``D >= 2``.
        labels: ``(N,)`` component of each point (e.g. ``model.predict``).
        weights: ``(K,)`` mixing weights, shown in the legend.
        means: ``(K, D)``.
        covariances: ``(K, D, D)`` full matrices (``family.full_covariances``).
        feature_names: axis labels; by default ``x1``, ``x2``.
        title: the plot's title.
        sigmas: which of the 1-, 2- and 3-sigma ellipses to draw.
        max_points: at most this many points are drawn (a fixed random subset),
            which keeps the file small for large data.

    Returns:
        The SVG document as a string.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels).astype(int).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"a 2-D plot needs data with at least 2 features; got shape {x.shape}.")
    n, d = x.shape
    k = weights.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {labels.shape}.")
    if means.shape != (k, d) or covariances.shape != (k, d, d):
        raise ValueError(
            f"means and covariances must have shapes ({k}, {d}) and ({k}, {d}, {d}); "
            f"got {means.shape} and {covariances.shape}."
        )
    bad = [s for s in sigmas if s not in _DASHES]
    if bad:
        raise ValueError(f"sigmas must be among {tuple(_DASHES)}; got {bad}.")
    names = list(feature_names) if feature_names is not None else [f"x{j + 1}" for j in range(d)]
    xy, mu, cov = x[:, :2], means[:, :2], covariances[:, :2, :2]

    shown = np.arange(n)
    if n > max_points:
        shown = np.sort(np.random.default_rng(0).choice(n, max_points, replace=False))

    reach = max(sigmas, default=0) * np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
    finite = np.all(np.isfinite(reach), axis=1) & np.all(np.isfinite(mu), axis=1)
    xlo, xhi = _axis_range(xy[:, 0], [(m - r, m + r) for m, r in zip(mu[finite, 0], reach[finite, 0])])
    ylo, yhi = _axis_range(xy[:, 1], [(m - r, m + r) for m, r in zip(mu[finite, 1], reach[finite, 1])])
    sx = (_RIGHT - _LEFT) / (xhi - xlo)
    sy = (_BOTTOM - _TOP) / (yhi - ylo)

    def px(v):
        return _LEFT + (v - xlo) * sx

    def py(v):
        return _BOTTOM - (v - ylo) * sy

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" {_FONT} font-size="12">',
        f"<title>{escape(title)}</title>",
        "<defs>",
        f'<clipPath id="plot-area"><rect x="{_LEFT}" y="{_TOP}" width="{_RIGHT - _LEFT}" '
        f'height="{_BOTTOM - _TOP}"/></clipPath>',
        "</defs>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_WIDTH / 2:.1f}" y="28" text-anchor="middle" font-size="16" '
        f'font-weight="bold">{escape(title)}</text>',
    ]
    notes = []
    if d > 2:
        notes.append(f"features 1 and 2 of {d} (marginal ellipses)")
    if len(shown) < n:
        notes.append(f"{len(shown)} of {n} points shown")
    if notes:
        out.append(
            f'<text x="{_WIDTH / 2:.1f}" y="46" text-anchor="middle" fill="#555">'
            f"{escape('; '.join(notes))}</text>"
        )

    # Axes: ticks, grid lines and labels.
    xticks, xdec = _ticks(xlo, xhi)
    yticks, ydec = _ticks(ylo, yhi)
    _axes(out, px, py, [(t, f"{t:.{xdec}f}") for t in xticks], [(t, f"{t:.{ydec}f}") for t in yticks])
    out.append(
        f'<text class="xlabel" x="{(_LEFT + _RIGHT) / 2:.1f}" y="{_BOTTOM + 44}" text-anchor="middle" '
        f'font-size="14">{escape(names[0])}</text>'
    )
    ycenter = (_TOP + _BOTTOM) / 2
    out.append(
        f'<text class="ylabel" x="{_LEFT - 52}" y="{ycenter:.1f}" text-anchor="middle" font-size="14" '
        f'transform="rotate(-90 {_LEFT - 52} {ycenter:.1f})">{escape(names[1])}</text>'
    )

    # Points, then ellipses and means on top of them, all clipped to the plot area.
    out.append('<g class="points" clip-path="url(#plot-area)" fill-opacity="0.65" stroke="none">')
    for i in shown:
        colour = PALETTE[labels[i] % len(PALETTE)]
        out.append(f'<circle cx="{px(xy[i, 0]):.2f}" cy="{py(xy[i, 1]):.2f}" r="2.6" fill="{colour}"/>')
    out.append("</g>")
    for j in range(k):
        colour = PALETTE[j % len(PALETTE)]
        out.append(
            f'<g class="ellipses" data-component="{j}" clip-path="url(#plot-area)" fill="none" '
            f'stroke="{colour}" stroke-width="2">'
        )
        ellipse = _pixel_ellipse(mu[j], cov[j], sx, sy)
        if ellipse is not None:
            (cx, cy), (rx, ry), angle = (px(mu[j, 0]), py(mu[j, 1])), ellipse[0], ellipse[1]
            for s in sorted(sigmas):
                dash = f' stroke-dasharray="{_DASHES[s]}"' if _DASHES[s] else ""
                out.append(
                    f'<ellipse data-sigma="{s}" cx="{cx:.2f}" cy="{cy:.2f}" rx="{s * rx:.2f}" '
                    f'ry="{s * ry:.2f}" transform="rotate({angle:.3f} {cx:.2f} {cy:.2f})"{dash}/>'
                )
        if np.all(np.isfinite(mu[j])):
            cx, cy = px(mu[j, 0]), py(mu[j, 1])
            out.append(
                f'<path class="mean" d="M{cx - 6:.2f},{cy - 6:.2f}L{cx + 6:.2f},{cy + 6:.2f}'
                f'M{cx - 6:.2f},{cy + 6:.2f}L{cx + 6:.2f},{cy - 6:.2f}" stroke="#000" stroke-width="4"/>'
            )
            out.append(
                f'<path class="mean" d="M{cx - 6:.2f},{cy - 6:.2f}L{cx + 6:.2f},{cy + 6:.2f}'
                f'M{cx - 6:.2f},{cy + 6:.2f}L{cx + 6:.2f},{cy - 6:.2f}" stroke-width="2"/>'
            )
        out.append("</g>")

    out.extend(_legend(weights, sigmas))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _pixel_ellipse(mean, cov, sx: float, sy: float):
    """Semi-axes ``(rx, ry)`` in pixels and rotation in degrees of the 1-sigma ellipse.

    The axes scale x and y differently (and flip y), so the ellipse is computed from
    the covariance in pixel units, ``S C S`` with ``S = diag(sx, -sy)``: its
    eigenvectors give the drawn ellipse's orientation and the square roots of its
    eigenvalues its semi-axes. Returns ``None`` for a non-finite covariance.
    """
    if not (np.all(np.isfinite(cov)) and np.all(np.isfinite(mean))):
        return None
    scale = np.diag([sx, -sy])
    vals, vecs = np.linalg.eigh(scale @ (0.5 * (cov + cov.T)) @ scale)
    # A covariance that lost definiteness to rounding draws as a flat ellipse.
    vals = np.clip(vals, 0.0, None)
    major = vecs[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    return (math.sqrt(vals[1]), math.sqrt(vals[0])), angle


def _legend(weights: np.ndarray, sigmas: Sequence[int]) -> list[str]:
    x0, y = _RIGHT + 22, _TOP + 8
    out = ['<g class="legend" font-size="13">', f'<text x="{x0}" y="{y}" font-weight="bold">component (weight)</text>']
    for j, w in enumerate(weights):
        y += 22
        colour = PALETTE[j % len(PALETTE)]
        out.append(f'<circle cx="{x0 + 7}" cy="{y - 4}" r="6" fill="{colour}"/>')
        out.append(f'<text x="{x0 + 20}" y="{y}">{j + 1}  ({_fmt_weight(w)})</text>')
    y += 30
    for s in sorted(sigmas):
        dash = f' stroke-dasharray="{_DASHES[s]}"' if _DASHES[s] else ""
        out.append(f'<line x1="{x0}" y1="{y - 4}" x2="{x0 + 28}" y2="{y - 4}" stroke="#333" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x0 + 36}" y="{y}">{s}\u03c3 ellipse</text>')
        y += 20
    out.append(
        f'<path d="M{x0 + 8},{y - 10}L{x0 + 20},{y + 2}M{x0 + 8},{y + 2}L{x0 + 20},{y - 10}" '
        f'stroke="#000" stroke-width="2.5"/>'
    )
    out.append(f'<text x="{x0 + 36}" y="{y}">mean</text>')
    out.append("</g>")
    return out


def _fmt_weight(w: float) -> str:
    return f"{w:.3f}" if np.isfinite(w) else "nan"


def write_mixture_svg(path, *args, **kwargs) -> Path:
    """Write :func:`mixture_svg` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(mixture_svg(*args, **kwargs), encoding="utf-8")
    return path


def _header(title: str) -> list[str]:
    return [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" {_FONT} font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{_WIDTH}" height="{_HEIGHT}" fill="white"/>',
        f'<text x="{_WIDTH / 2:.1f}" y="28" text-anchor="middle" font-size="16" '
        f'font-weight="bold">{escape(title)}</text>',
    ]


def criterion_svg(
    ks: Sequence[int],
    values: dict,
    *,
    criterion: str = "BIC",
    best: tuple[str, int] | None = None,
    irregular: dict | None = None,
    title: str = "Model selection",
) -> str:
    """An SVG line plot of a model-selection criterion against the number of components.

    One line (``<polyline class="criterion">``) per structure, one marker
    (``<circle class="point">``) per finite value; the chosen model is ringed
    (``<circle class="best">``). Values that are not finite are left out (the line
    breaks there).

    Args:
        ks: the numbers of components swept, the x axis.
        values: ``{structure: (len(ks),) criterion values}``, in legend order.
        criterion: the y axis label (``"BIC"``; lower is better is said under the title).
        best: ``(structure, k)`` of the chosen model, ringed.
        irregular: ``{structure: (len(ks),) bools}``: fits that did not end regularly
            (collapsed, not finite), drawn as hollow markers.
        title: the plot's title.

    Returns:
        The SVG document as a string.
    """
    ks = [int(k) for k in ks]
    if not ks:
        raise ValueError("ks must not be empty.")
    series = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in values.items()}
    for name, v in series.items():
        if v.shape != (len(ks),):
            raise ValueError(f"values[{name!r}] must have {len(ks)} entries (one per K); got {v.shape}.")
    finite = np.concatenate([v[np.isfinite(v)] for v in series.values()] + [np.zeros(0)])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
    else:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else max(abs(lo), 1.0)
    ylo, yhi = lo - 0.06 * span, hi + 0.06 * span
    kmin, kmax = min(ks), max(ks)
    xlo, xhi = kmin - 0.5, kmax + 0.5
    sx = (_RIGHT - _LEFT) / (xhi - xlo)
    sy = (_BOTTOM - _TOP) / (yhi - ylo)

    def px(v):
        return _LEFT + (v - xlo) * sx

    def py(v):
        return _BOTTOM - (v - ylo) * sy

    out = _header(title)
    out.append(
        f'<text x="{_WIDTH / 2:.1f}" y="46" text-anchor="middle" fill="#555">'
        f"{escape(criterion)}: lower is better</text>"
    )
    step = max(1, int(_nice_step(kmax - kmin + 1, target=12))) if kmax > kmin else 1
    xticks = [k for k in range(kmin, kmax + 1) if (k - kmin) % step == 0]
    yticks, ydec = _ticks(ylo, yhi)
    _axes(out, px, py, [(t, f"{t}") for t in xticks], [(t, f"{t:.{ydec}f}") for t in yticks])
    out.append(
        f'<text class="xlabel" x="{(_LEFT + _RIGHT) / 2:.1f}" y="{_BOTTOM + 44}" text-anchor="middle" '
        f'font-size="14">number of components K</text>'
    )
    ycenter = (_TOP + _BOTTOM) / 2
    out.append(
        f'<text class="ylabel" x="{_LEFT - 62}" y="{ycenter:.1f}" text-anchor="middle" font-size="14" '
        f'transform="rotate(-90 {_LEFT - 62} {ycenter:.1f})">{escape(criterion)}</text>'
    )

    legend = ['<g class="legend" font-size="13">', f'<text x="{_RIGHT + 22}" y="{_TOP + 8}" font-weight="bold">structure</text>']
    for j, (name, v) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        hollow = np.zeros(len(ks), bool)
        if irregular is not None and name in irregular:
            hollow = np.asarray(irregular[name], dtype=bool).reshape(-1)
        out.append(f'<g class="series" data-structure="{escape(name)}">')
        # Consecutive finite values form one polyline each (a break where a value is missing).
        runs, run = [], []
        for k, value in zip(ks, v):
            if np.isfinite(value):
                run.append(f"{px(k):.2f},{py(value):.2f}")
            elif run:
                runs.append(run)
                run = []
        if run:
            runs.append(run)
        for run in runs:
            out.append(f'<polyline class="criterion" points="{" ".join(run)}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, (k, value) in enumerate(zip(ks, v)):
            if not np.isfinite(value):
                continue
            fill = "white" if hollow[i] else colour
            out.append(
                f'<circle class="point" data-k="{k}" cx="{px(k):.2f}" cy="{py(value):.2f}" r="4" fill="{fill}" '
                f'stroke="{colour}" stroke-width="1.5"/>'
            )
            if best is not None and (name, k) == tuple(best):
                out.append(
                    f'<circle class="best" cx="{px(k):.2f}" cy="{py(value):.2f}" r="9" fill="none" stroke="#000" '
                    f'stroke-width="2"/>'
                )
        out.append("</g>")
        y = _TOP + 8 + 22 * (j + 1)
        legend.append(
            f'<line x1="{_RIGHT + 22}" y1="{y - 4}" x2="{_RIGHT + 46}" y2="{y - 4}" stroke="{colour}" stroke-width="2"/>'
        )
        legend.append(f'<text x="{_RIGHT + 54}" y="{y}">{escape(name)}</text>')
    y = _TOP + 8 + 22 * (len(series) + 1) + 10
    if best is not None:
        legend.append(f'<circle cx="{_RIGHT + 34}" cy="{y - 4}" r="9" fill="none" stroke="#000" stroke-width="2"/>')
        legend.append(f'<text x="{_RIGHT + 54}" y="{y}">chosen (K = {int(best[1])})</text>')
        y += 24
    if irregular is not None and any(np.any(a) for a in irregular.values()):
        legend.append(f'<circle cx="{_RIGHT + 34}" cy="{y - 4}" r="4" fill="white" stroke="#333" stroke-width="1.5"/>')
        legend.append(f'<text x="{_RIGHT + 54}" y="{y}">fit did not end regularly</text>')
    legend.append("</g>")
    out.extend(legend)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_criterion_svg(path, *args, **kwargs) -> Path:
    """Write :func:`criterion_svg` to ``path`` (UTF-8) and return the path."""
    path = Path(path)
    path.write_text(criterion_svg(*args, **kwargs), encoding="utf-8")
    return path
