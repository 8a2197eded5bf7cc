"""Reading a numeric CSV file, and naming a bad cell as a person reading the file would.

Every error the command line reports about the data names the file, the line (as an
editor counts it: the header is line 1, blank lines count) and the column (its
number from 1 and its name). Two kinds of error reach it: cells :func:`read_csv`
cannot read as numbers, and values emjax's own validation refuses (a negative
count, a code out of range, ...), which name the array's row and column index
(``emjax._checks.raise_first``); :meth:`Table.locate` maps those to the file.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import re
from pathlib import Path

import numpy as np


class CLIError(Exception):
    """A user error: printed as ``emjax: error: <message>``, exit code 2."""


#: Cells read as a missing value under ``--missing`` (case-insensitive, after stripping).
MISSING_MARKS = ("", "nan", "na", "n/a", "null", "?")


@dataclasses.dataclass(frozen=True)
class Table:
    """A CSV file's numbers and what is needed to point back into the file.

    Attributes:
        path: the file.
        data: ``(N, D)`` float64 values; NaN marks a missing cell (``--missing`` only).
        names: the ``D`` column names (``x1 .. xD`` without a header row).
        lines: ``(N,)`` the file line of each data row (1-based, header and blank
            lines counted).
        header_line: the header's line, or ``None`` without one.
    """

    path: Path
    data: np.ndarray
    names: list
    lines: np.ndarray
    header_line: int | None

    @property
    def n_missing(self) -> int:
        """The number of missing (NaN) cells."""
        return int(np.count_nonzero(np.isnan(self.data)))

    def where(self, row: int, col: int | None = None) -> str:
        """``"FILE, line L, column j ('name')"`` for the array's ``(row, col)`` (0-based)."""
        text = f"{self.path}, line {int(self.lines[row])}"
        if col is not None:
            text += f", column {col + 1} ({self.names[col]!r})"
        return text

    def locate(self, error: Exception) -> CLIError:
        """A :class:`CLIError` for emjax's message ``error``, with the row and column
        index it names (``at row R, column C`` or ``x row R``) turned into the file's
        line and column name. Messages that name no row pass unchanged."""
        message = str(error)
        match = _AT_ROW.search(message) or _X_ROW.search(message)
        if match is None or int(match.group("row")) >= len(self.lines):
            return CLIError(message)
        row = int(match.group("row"))
        col = match.groupdict().get("col")
        col = int(col) if col else None
        if col is not None and col >= len(self.names):
            col = None
        if match.re is _AT_ROW:
            message = message[: match.start()] + message[match.end():]
        else:
            message = message[: match.start()] + "this row" + message[match.end():]
        message = re.sub(r"\bx contains\b", "the data contain", message)
        message = re.sub(r"\bx must\b", "the data must", message)
        return CLIError(f"{self.where(row, col)}: {message}")


#: ``raise_first``'s "at row R, column C" (emjax._checks), and the missing-data "x row R".
_AT_ROW = re.compile(r" at row (?P<row>\d+)(?:, column (?P<col>\d+))?")
_X_ROW = re.compile(r"\bx row (?P<row>\d+)")


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def read_csv(
    path,
    *,
    header: bool | None = None,
    missing: bool = False,
    command: str = "emjax",
    missing_hint: str = "or --missing to treat empty, NA and nan fields as missing at random",
) -> Table:
    """Read a numeric CSV file.

    Args:
        path: the file.
        header: ``True``: the first row holds column names; ``False``: it is data;
            ``None``: it is a header exactly when some field in it is not a number.
        missing: read the cells of :data:`MISSING_MARKS` (an empty cell, ``NA``,
            ``nan``, ...) as NaN, a missing value; otherwise they are errors.
        command: the command named in error messages (``"emjax fit"``).
        missing_hint: what the message about a missing value suggests.

    Returns:
        A :class:`Table`; without a header the columns are named ``x1 .. xD``.

    Raises:
        CLIError: the file cannot be read, is empty, has rows of different
            lengths, or holds a field that is not a finite number (naming its
            line and column).
    """
    path = Path(path)
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
        raise CLIError(f"{path} is empty: no rows to read")

    first_line, first = rows[0]
    if header is None:
        header = any(_parse_float(field) is None and not (missing and _is_missing(field)) for field in first)
    header_line = None
    if header:
        names = list(first)
        header_line = first_line
        rows = rows[1:]
        if not rows:
            raise CLIError(f"{path} has a header row but no data rows")
    else:
        names = [f"x{j + 1}" for j in range(len(first))]

    d = len(names)
    data = np.empty((len(rows), d), dtype=np.float64)
    lines = np.empty(len(rows), dtype=np.int64)
    for r, (line, row) in enumerate(rows):
        lines[r] = line
        if len(row) != d:
            first_kind = "the header has" if header else "the first row has"
            raise CLIError(f"{path}, line {line}: {len(row)} field{'s' if len(row) != 1 else ''}, but {first_kind} {d}")
        for j, field in enumerate(row):
            if missing and _is_missing(field):
                data[r, j] = np.nan
                continue
            value = _parse_float(field)
            if value is None or not math.isfinite(value):
                if field == "" or (value is not None and math.isnan(value)):
                    what = ("an empty field" if field == "" else f"{field!r}") + (
                        f" (a missing value); {command} needs every field to be a number, {missing_hint}"
                    )
                else:
                    what = f"{field!r} is not a finite number; {command} needs every field to be a finite number"
                    if value is None and line == first_line:
                        what += " (use --no-header only when the first row is data)"
                raise CLIError(f"{path}, line {line}, column {j + 1} ({names[j]!r}): {what}")
            data[r, j] = value
    return Table(path, data, names, lines, header_line)


def _is_missing(field: str) -> bool:
    return field.lower() in MISSING_MARKS
