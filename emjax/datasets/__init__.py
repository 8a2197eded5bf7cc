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
    """
    return _load_csv("old_faithful.csv")
