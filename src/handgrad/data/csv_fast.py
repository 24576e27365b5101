"""The vectorised CSV reader: the first row and the separator from the file's head, then
every data row in one ``numpy.loadtxt`` pass into a record array that is compacted in place
into ``X``.

It reads the plain files that most data sets are: a number in every feature cell, no quotes
after the first row, labels short enough for a fixed-width field. It answers None, having
raised nothing, for anything else (a bad cell, a quote, a missing value, text it cannot
hold), and the caller then reads the file with the reference reader of ``csv_rows``, which
gives the same results and names the row, the column and the cell of any fault. So a fault
is found after the fast path fails, and the results of both readers are the same whenever
the fast one answers (``tests/test_csv_fast.py`` compares them on generated files).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from handgrad.data.csv_rows import choose_separator, memory_error

__all__ = ["Columns", "Head", "read_block", "read_columns", "read_head"]

_HEAD_BLOCK = 2**16  # bytes read at a time for the head
_HEAD_CHARS = 2**20  # the reference reader looks at the lines in these first characters
_HEAD_ROWS = 50  # as many lines as it looks at; these rows size the label field
_WIDEST_LABEL = 64  # bytes; a longer label sends the file to the reference reader
_BLOCK_ROWS = 8192  # rows compacted at a time
# numpy would decompress files with these suffixes (or fetch a URL): they go as open files
_UNPACKED = frozenset({".gz", ".bz2", ".xz", ".lzma", ".zip"})
_FAILURES = (ValueError, TypeError, OSError, csv.Error)  # of loadtxt, decoding and csv


@dataclass(frozen=True)
class Head:
    """The first non-blank row of a CSV file (cells stripped), how many lines it ends on,
    the separator and its lookalike (as ``csv_rows.Table`` has them), and the cells of the
    rows after it in the file's first MiB (not stripped: they size the label field).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_fast import read_head
    >>> path = Path(tempfile.mkdtemp()) / "head.csv"
    >>> _ = path.write_text("\\nx;y;kind\\n1;2;a\\n")
    >>> head = read_head(path, None)
    >>> head.first, head.lines, head.separator, head.rows
    (['x', 'y', 'kind'], 2, ';', [['1', '2', 'a']])
    """

    first: list[str]
    lines: int
    separator: str
    lookalike: str | None
    rows: list[list[str]]


@dataclass(frozen=True)
class Columns:
    """What :func:`read_columns` read: ``X`` (n, features) float64 and the labels as
    ``labels[codes]``: the distinct label cells as written (not stripped), ``codes`` (n,)
    int64 (empty without a label column).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.csv_fast import Columns
    >>> columns = Columns(np.zeros((3, 2)), ("a", "b"), np.array([0, 1, 0]))
    >>> [columns.labels[c] for c in columns.codes]
    ['a', 'b', 'a']
    """

    X: np.ndarray
    labels: tuple[str, ...]
    codes: np.ndarray


def read_head(path: str | os.PathLike, sep: str | None) -> Head | None:
    """The head of ``path`` as the reference reader sees it; None when the file cannot be
    read, is not UTF-8 in its head, has no row in its first 4 MiB, or breaks the CSV rules
    there (the reference reader then says what is wrong).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_fast import read_head
    >>> path = Path(tempfile.mkdtemp()) / "commas.csv"
    >>> _ = path.write_text("a,b,t\\n1,2,x\\n")
    >>> read_head(path, None).first, read_head(Path(path.parent, "none.csv"), None)
    (['a', 'b', 't'], None)
    """
    try:
        text, whole_file = _head_text(path)
        has_comma = "," in text or (not whole_file and _holds(path, b","))
        whole = whole_file and len(text) <= _HEAD_CHARS
        sep, lookalike = choose_separator(path, text[:_HEAD_CHARS], whole, has_comma, sep)
        if not whole_file:
            text = text[: text.rfind("\n") + 1]  # complete lines only
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)
        first, lines, rows = None, 0, []
        for cells in reader:
            if first is None and any(c.strip() for c in cells):
                first, lines = [c.strip() for c in cells], reader.line_num
            elif first is not None and len(rows) < _HEAD_ROWS:
                rows.append(cells)
            if len(rows) >= _HEAD_ROWS:
                break
    except (*_FAILURES, UnicodeError):
        return None
    return None if first is None else Head(first, lines, sep, lookalike, rows)


def _head_text(path: str | os.PathLike) -> tuple[str, bool]:
    """The file's first lines, decoded: enough for the separator and the label field (more
    than 50 non-blank lines), or its first 2**20 characters and one more, or all of it; and
    whether that is all of it."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    with open(path, "rb") as file:
        size, text = os.fstat(file.fileno()).st_size, ""
        while True:
            block = file.read(_HEAD_BLOCK)
            whole_file = not block or file.tell() >= size
            text += decoder.decode(block, final=whole_file)
            complete = text[:_HEAD_CHARS].splitlines()[:-1]
            enough = sum(1 for line in complete if line.strip()) > _HEAD_ROWS
            if whole_file or enough or len(text) > _HEAD_CHARS:
                return text, whole_file


def read_columns(
    path: str | os.PathLike,
    head: Head,
    *,
    header: bool,
    features: list[int],
    label: int | None,
) -> Columns | None:
    """Read columns ``features`` (in that order) as numbers and column ``label`` (or none)
    as text from every data row of ``path``; the other columns are read and dropped. None
    when the file needs the reference reader.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_fast import read_columns, read_head
    >>> path = Path(tempfile.mkdtemp()) / "three.csv"
    >>> _ = path.write_text("a,t,b\\n1,x,2\\n3,y,4\\n5,x,6\\n")
    >>> columns = read_columns(path, read_head(path, None), header=True, features=[2, 0],
    ...                        label=1)
    >>> columns.X.tolist(), columns.labels, columns.codes.tolist()
    ([[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]], ('x', 'y'), [0, 1, 0])
    """
    if label in features:  # a column both feature and label: the reference reader
        return None
    try:
        if label is not None and _holds(path, b"\x00"):  # a fixed-width field drops NULs
            return None
    except (OSError, ValueError):
        return None
    size = 8
    if label is not None:
        cells = [r[label] for r in head.rows if len(r) == len(head.first)]
        size = 8 * (max((len(c.encode("utf-8")) for c in cells), default=0) // 8 + 1)
    return _read(path, head, header, features, label, size)


def read_block(text: str, head: Head, features: list[int], label: int | None) -> Columns | None:
    """:func:`read_columns` of ``text``, data rows of a file (no header, no NUL): None when
    the reference reader must read them.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_fast import read_block, read_head
    >>> path = Path(tempfile.mkdtemp()) / "head.csv"
    >>> _ = path.write_text("a,t\\n1,x\\n")
    >>> head = read_head(path, None)
    >>> read_block("2,y\\n3,x\\n", head, [0], 1).X.tolist(), read_block("x,y\\n", head, [0], 1)
    ([[2.0], [3.0]], None)
    """
    if label in features:
        return None
    return _read(io.StringIO(text, newline=None), head, False, features, label, 8)


def _read(
    source: str | os.PathLike | io.StringIO,
    head: Head,
    header: bool,
    features: list[int],
    label: int | None,
    size: int,
) -> Columns | None:
    """Read the data rows of ``source`` (a path, or data rows as text) with the label
    field ``size`` bytes wide, widened while labels fill it."""
    while size <= _WIDEST_LABEL:
        try:
            records = _records(source, head, header, features, label, size)
        except MemoryError:
            if isinstance(source, io.StringIO):
                raise
            raise memory_error(source) from None
        except _FAILURES:
            return None
        if len(records) == 0:
            return None
        if label is None:
            return _compact(records, features, (), np.empty(0, dtype=np.int64))
        cells = np.ascontiguousarray(records[f"c{label}"])  # n, label bytes
        if not cells.view(np.uint8).reshape(len(cells), size)[:, -1].any():  # none cut short
            labels, codes = _distinct(cells)
            return _compact(records, features, labels, codes)
        del cells, records
        size *= 2
    return None


def _records(
    source: str | os.PathLike | io.StringIO,
    head: Head,
    header: bool,
    features: list[int],
    label: int | None,
    size: int,
) -> np.ndarray:
    """Every data row as a record: float64 features, the label in ``size`` bytes, the other
    columns in 8 bytes each (so that every field is a whole number of float64 slots)."""
    wanted = set(features)
    fields = [
        (f"c{c}", "f8" if c in wanted else f"S{size}" if c == label else "S8")
        for c in range(len(head.first))
    ]
    options = {
        "dtype": np.dtype(fields),
        "delimiter": head.separator,
        "skiprows": head.lines if header else 0,
        "comments": None,
        "quotechar": None,
        "ndmin": 1,
        "encoding": "utf-8-sig",
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "loadtxt: input contained no data")  # None then
        if isinstance(source, io.StringIO):  # data rows as text
            return np.loadtxt(source, **options)
        name = os.fspath(source)
        if isinstance(name, str) and "://" not in name and Path(name).suffix not in _UNPACKED:
            return np.loadtxt(name, **options)
        with open(source, encoding="utf-8-sig", newline=None) as file:
            return np.loadtxt(file, **options)


def _distinct(cells: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """The distinct label cells (decoded as numpy encoded them, Latin-1) and their codes."""
    flat = cells.view(np.uint64) if cells.dtype.itemsize == 8 else cells  # sorts faster
    distinct, codes = np.unique(flat, return_inverse=True)
    labels = distinct.view(cells.dtype)
    return tuple(b.decode("latin-1") for b in labels.tolist()), codes.astype(np.int64, copy=False)


def _compact(
    records: np.ndarray,
    features: list[int],
    labels: tuple[str, ...],
    codes: np.ndarray,
) -> Columns | None:
    """Move the features of each record to the front of the records' own memory, a block
    at a time, so that X needs no second copy; None when a feature is not finite."""
    n, slots = len(records), records.dtype.itemsize // 8
    offsets = records.dtype.fields
    where = [offsets[f"c{c}"][1] // 8 for c in features]  # float64 slot of each feature
    raw = records.view(np.float64).reshape(n, slots)
    out = raw.reshape(-1)[: n * len(features)].reshape(n, len(features))
    for start in range(0, n, _BLOCK_ROWS):
        block = raw[start : start + _BLOCK_ROWS][:, where]  # a copy: rows < start + block
        if not np.isfinite(block).all():  # are read before anything overwrites them
            return None
        out[start : start + _BLOCK_ROWS] = block
    del raw, out
    if records.flags.owndata:
        records.resize(-(-n * len(features) // slots), refcheck=False)  # frees the rest
    X = records.view(np.float64)[: n * len(features)].reshape(n, len(features))
    return Columns(X, labels, codes)


def _holds(path: str | os.PathLike, needle: bytes) -> bool:
    """Whether the file holds the byte ``needle`` anywhere (read a MiB at a time into one
    buffer: no copy of the file in memory, mapped or not)."""
    buffer = bytearray(2**20)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            if buffer.find(needle, 0, count) != -1:
                return True
    return False
