"""Reading a CSV file into rows of cells (the encoding, the separator, quoting, blank lines)
and reading its cells: a number, a missing value, or text.

The separator is the comma, or the one given; a file without a single comma whose lines all
hold as many semicolons (or tabs, or bars) is read with that separator instead. When a file
read with commas turns out wrong and another separator fits its lines, the error says so.

This is the reference reader: ``csv_fast`` reads plain files faster with the same results,
and leaves every other file, and every fault, to this one.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from handgrad.core.errors import DataError
from handgrad.core.files import format_size

__all__ = [
    "Table",
    "check_missing",
    "check_separator",
    "choose_separator",
    "feature_value",
    "is_missing",
    "memory_error",
    "read_table",
    "separator_name",
    "to_float",
]

Rows = list[tuple[int, list[str]]]  # (spreadsheet row number, stripped cells)
OTHER_SEPARATORS = (";", "\t", "|")
_MISSING_FEATURES = frozenset({"", "na", "n/a", "nan"})  # in feature cells, in lower case
_QUOTED = re.compile(r'"[^"]*"')
_DECIMAL_COMMA = re.compile(r"[-+]?\d*,\d+")
_LINES_LOOKED_AT = 50  # the first lines, within the first MiB, tell the separator
_BYTES_LOOKED_AT = 2**20


@dataclass(frozen=True)
class Table:
    """The non-blank rows of a CSV file, the separator they were split on and, for hints,
    another separator that all the file's lines agree on (or None).

    Examples
    --------
    >>> from handgrad.data.csv_rows import Table
    >>> table = Table("data.csv", [(1, ["1,5;2,5;x"])], ",", ";")
    >>> table.hint()
    " (data.csv looks separated by ';': give sep=';', or --sep ';' on the command line)"
    """

    path: str | os.PathLike
    rows: Rows
    separator: str
    lookalike: str | None

    def hint(self) -> str:
        """Words to add to an error when the file may be separated by another character."""
        if self.lookalike is None:
            return ""
        return (
            f" ({self.path} looks separated by {self.lookalike!r}: give sep={self.lookalike!r}, "
            f"or --sep {separator_name(self.lookalike)} on the command line)"
        )


def separator_name(separator: str) -> str:
    """The separator as one writes it on a command line: ``tab`` for a tab.

    Examples
    --------
    >>> from handgrad.data.csv_rows import separator_name
    >>> separator_name(";"), separator_name(chr(9))  # a tab
    ("';'", 'tab')
    """
    return "tab" if separator == "\t" else repr(separator)


def check_separator(sep: str | None) -> str | None:
    """``sep`` if it is one character that can separate cells (None: find out).

    Examples
    --------
    >>> from handgrad.data.csv_rows import check_separator
    >>> check_separator(";"), check_separator(None)
    (';', None)
    """
    if sep is not None and (not isinstance(sep, str) or len(sep) != 1 or sep in '"\r\n'):
        raise ValueError(
            f"sep must be one character that separates cells, such as ',' or ';', got {sep!r}"
        )
    return sep


def check_missing(missing: Sequence[str] | None) -> frozenset[str] | None:
    """The strings that mark a missing value, as given (None: the defaults).

    Examples
    --------
    >>> from handgrad.data.csv_rows import check_missing
    >>> sorted(check_missing(["NA", " ? "])), check_missing(None)
    (['?', 'NA'], None)
    """
    if missing is None:
        return None
    if isinstance(missing, str) or not all(isinstance(m, str) for m in missing):
        raise TypeError(f"missing must be a list of strings such as ['NA', '?'], got {missing!r}")
    return frozenset(m.strip() for m in missing)


def _agreeing(lines: list[str], separator: str) -> bool:
    """Whether every line holds the separator, as many times, outside quotes."""
    counts = {_QUOTED.sub("", line).count(separator) for line in lines}
    return len(counts) == 1 and counts.pop() > 0


def read_table(path: str | os.PathLike, sep: str | None = None) -> Table:
    """Read ``path`` as UTF-8 CSV with ``sep`` as separator (None: the comma, or another
    separator when the file has no comma and its lines agree on one); blank lines are
    skipped and cells stripped.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_rows import read_table
    >>> path = Path(tempfile.mkdtemp()) / "semicolons.csv"
    >>> _ = path.write_text("a;b;kind\\n1.5;2;x\\n\\n3;4;y\\n")
    >>> table = read_table(path)
    >>> table.separator, table.rows
    (';', [(1, ['a', 'b', 'kind']), (2, ['1.5', '2', 'x']), (4, ['3', '4', 'y'])])
    """
    sep = check_separator(sep)
    try:
        return _read_table(path, sep)
    except MemoryError:
        raise memory_error(path) from None


def choose_separator(
    path: str | os.PathLike, head: str, whole: bool, has_comma: bool, sep: str | None
) -> tuple[str, str | None]:
    """The separator to split on and another one the lines agree on (or None), from
    ``head`` (the text's first ``2**20`` characters; ``whole``: all of it) and whether the
    text holds a comma anywhere.

    Examples
    --------
    >>> from handgrad.data.csv_rows import choose_separator
    >>> choose_separator("a.csv", "a;b\\n1;2\\n", True, False, None)
    (';', None)
    """
    head_lines = head.splitlines()[: None if whole else -1]
    lines = [line for line in head_lines if line.strip()][:_LINES_LOOKED_AT]  # whole lines
    lookalike = next((s for s in OTHER_SEPARATORS if s != sep and _agreeing(lines, s)), None)
    if sep is None:
        sep = ","
        if lookalike is not None and not has_comma:
            sep, lookalike = lookalike, None
        elif lookalike is not None and not _agreeing(lines, ","):
            raise DataError(
                f"{path} looks separated by {lookalike!r}, not by commas: every line holds as "
                f"many; give sep={lookalike!r}, or --sep {separator_name(lookalike)} on the "
                "command line"
            )
    return sep, lookalike


def memory_error(path: str | os.PathLike) -> MemoryError:
    """The error for a file too large for the memory that is free, naming its size.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_rows import memory_error
    >>> path = Path(tempfile.mkdtemp()) / "big.csv"
    >>> _ = path.write_text("x" * 2048)
    >>> str(memory_error(path)).endswith("(2.0 KiB) needs more memory than is free")
    True
    """
    return MemoryError(
        f"reading {path} ({format_size(Path(path).stat().st_size)}) needs more memory than is free"
    )


def _read_table(path: str | os.PathLike, sep: str | None) -> Table:
    text = _text(path)
    head, whole = text[:_BYTES_LOOKED_AT], len(text) <= _BYTES_LOOKED_AT
    sep, lookalike = choose_separator(path, head, whole, "," in text, sep)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
    try:
        rows = [(n, [c.strip() for c in cells]) for n, cells in enumerate(reader, start=1)]
    except csv.Error as err:
        raise DataError(
            f"line {reader.line_num} of {path} is not valid CSV ({err}); fix that line"
        ) from None
    rows = [(n, cells) for n, cells in rows if any(cells)]  # skip blank lines
    if not rows:
        raise DataError(f"{path} is empty; give a CSV file with a row per sample")
    return Table(path, rows, sep, lookalike)


def _text(path: str | os.PathLike) -> str:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"no file at {path}; check the path and the working directory") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give the path of a CSV file in it") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}); check its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"line {line} of {path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset "
            f"{err.start}); save the file again as UTF-8 CSV"
        ) from None


def to_float(cell: str) -> float | None:
    """The cell's number, or None when it is not one.

    Examples
    --------
    >>> from handgrad.data.csv_rows import to_float
    >>> to_float("1e3"), to_float("1,5")
    (1000.0, None)
    """
    try:
        return float(cell)
    except ValueError:
        return None


def is_missing(cell: str, missing: frozenset[str] | None, *, label: bool = False) -> bool:
    """Whether ``cell`` marks a missing value: an empty cell, or one of ``missing``; without
    ``missing``, a feature cell ``NA``, ``n/a`` or ``nan`` too (a label never is).

    Examples
    --------
    >>> from handgrad.data.csv_rows import is_missing
    >>> is_missing("NA", None), is_missing("NA", None, label=True), is_missing("?", {"?"})
    (True, False, True)
    """
    if missing is not None:
        return cell == "" or cell in missing
    return cell == "" if label else cell.lower() in _MISSING_FEATURES


def feature_value(cell: str, where: str, missing: frozenset[str] | None) -> float:
    """The number in a feature cell; ``where`` (row, column, file) names it in errors.

    Examples
    --------
    >>> from handgrad.data.csv_rows import feature_value
    >>> feature_value("2.5", "row 2, column 'a'", None)
    2.5
    >>> feature_value("2,5", "row 2", None)
    Traceback (most recent call last):
        ...
    handgrad.core.errors.DataError: row 2 holds '2,5', which is not a number; write it 2.5
    """
    if is_missing(cell, missing):
        shown = repr(cell) if cell else "an empty cell"
        raise DataError(f"{where} is missing ({shown}); impute a value or drop that row")
    value = to_float(cell)
    if value is None:
        comma = _DECIMAL_COMMA.fullmatch(cell)
        fix = f"write it {cell.replace(',', '.')}" if comma else "fix or remove that value"
        raise DataError(f"{where} holds {cell!r}, which is not a number; {fix}")
    if not math.isfinite(value):
        raise DataError(f"{where} holds {cell!r}, which is not finite; replace it or drop the row")
    return value
