"""Small public data sets bundled with emjax."""

from __future__ import annotations

import csv
from importlib import resources

import numpy as np


def _load_csv(name: str) -> tuple[np.ndarray, list[str]]:
    with resources.files(__name__).joinpath(name).open("r", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return np.asarray(rows[1:], dtype=np.float64), rows[0]


def old_faithful() -> tuple[np.ndarray, list[str]]:
    """Old Faithful geyser eruptions (Härdle 1991; R's ``faithful``): 272 rows.

    Returns:
        ``(data (272, 2), ["eruptions", "waiting"])``: eruption time and waiting
        time to the next eruption, both in minutes.

    Example:
        >>> x, names = old_faithful()
        >>> x.shape, names
        ((272, 2), ['eruptions', 'waiting'])
    """
    return _load_csv("old_faithful.csv")


def bankruptcy() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Altman's bankruptcy data: 66 US firms, 33 that went bankrupt and 33 solvent.

    Two financial ratios in percent: retained earnings over total assets (RE)
    and earnings before interest and taxes over total assets (EBIT). A few
    bankrupt firms lie very far out (ratios down to -309 and -280), the classic
    case for Student-t rather than Gaussian mixtures (McLachlan & Peel 2000;
    Murphy's PMTK ``mixStudentBankruptcyDemo``).

    Returns:
        ``(x (66, 2), labels (66,) int, ["RE", "EBIT"])``; ``labels`` is 0 for a
        bankrupt firm, 1 for a solvent one.

    Example:
        >>> x, y, names = bankruptcy()
        >>> x.shape, np.bincount(y), names
        ((66, 2), array([33, 33]), ['RE', 'EBIT'])
    """
    data, header = _load_csv("bankruptcy.csv")
    return data[:, 1:], data[:, 0].astype(np.int64), header[1:]


def gaussian_mixture_sample(seed: int, n: int, d: int, k: int, separation: float) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic sample from a K-component Gaussian mixture with random full covariances.

    Means are drawn ``N(0, separation^2 I)``, covariances ``A A^T / 4 + I / 2``
    with ``A`` standard normal, labels uniformly: the larger ``separation``, the
    better separated the components. Used by the tests and the benchmarks.

    Args:
        seed: NumPy random seed.
        n: points. d: features. k: components.
        separation: scale of the component means.

    Returns:
        ``(x (n, d) float64, labels (n,))``.

    Example:
        >>> x, z = gaussian_mixture_sample(0, n=1000, d=2, k=3, separation=4.0)
        >>> x.shape, x.dtype, z.shape
        ((1000, 2), dtype('float64'), (1000,))
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=separation, size=(k, d))
    z = rng.integers(0, k, size=n)
    a = rng.normal(size=(k, d, d)) * 0.5
    covs = a @ np.swapaxes(a, 1, 2) + 0.5 * np.eye(d)
    chol = np.linalg.cholesky(covs)
    return means[z] + np.einsum("nde,ne->nd", chol[z], rng.normal(size=(n, d))), z
