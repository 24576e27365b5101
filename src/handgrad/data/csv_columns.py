"""The columns of a CSV file for a data set or a model (is the first row a header, which
column is the target, their names), and the reference reader's checks of the rows: a ragged
row, a bad feature cell, a missing label, an unknown class, each named by row and column.
Row numbers count as a spreadsheet does: 1-based, header included."""

from __future__ import annotations

import csv
import io
import numbers
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from handgrad.core.errors import DataError
from handgrad.data.csv_fast import Head, read_block
from handgrad.data.csv_rows import Rows, Table, feature_value, is_missing, to_float
from handgrad.data.labels import class_key

__all__ = [
    "block_faults",
    "column_names",
    "data_rows",
    "feature_columns",
    "feature_plan",
    "find_column",
    "holds_the_names",
    "is_header",
    "listing",
    "locate_target",
    "lookup_classes",
    "read_features",
    "read_labels",
]


def feature_columns(
    table: Table,
    feature_names: tuple[str, ...],
    target: str | None,
    missing: frozenset[str] | None,
) -> tuple[np.ndarray, int | None, tuple[str, ...], Rows]:
    """X of a file for a model; the target's column, the column names and the data rows.

    Examples
    --------
    >>> from handgrad.data.csv_rows import Table
    >>> from handgrad.data.csv_columns import feature_columns
    >>> table = Table('f.csv', [(1, ['b', 'a']), (2, ['2', '1'])], ',', None)
    >>> X, tcol, names, data = feature_columns(table, ('a', 'b'), None, None)
    >>> X.tolist(), tcol, names
    ([[1.0, 2.0]], None, ('b', 'a'))
    """
    path, first = table.path, table.rows[0][1]
    cols, tcol, names, header = feature_plan(first, path, feature_names, target, missing)
    data = data_rows(table.rows, header, path)
    return read_features(data, cols, names, path, missing), tcol, names, data


def feature_plan(
    first: list[str],
    path: Any,
    feature_names: tuple[str, ...],
    target: str | None,
    missing: frozenset[str] | None,
) -> tuple[list[int], int | None, tuple[str, ...], bool]:
    """The feature columns of a file for a model, the target's column, the column names and
    whether the first row is a header.

    Examples
    --------
    >>> from handgrad.data.csv_columns import feature_plan
    >>> feature_plan(['b', 'kind', 'a'], 'f.csv', ('a', 'b'), 'kind', None)
    ([2, 0], 1, ('b', 'kind', 'a'), True)
    """
    width = len(feature_names) + (target is not None)  # columns of a header-less file
    named = holds_the_names(first, (*feature_names, *([] if target is None else [target])))
    tcol, header = None, named or is_header(first, None, missing)
    if target is not None:
        tcol, header = (
            (first.index(target), True)
            if named
            else locate_target(first, target, path, missing, default=width - 1)
        )
    names = column_names(first, header, path)
    if header:
        cols = [find_column(names, f, path) for f in feature_names]
    elif len(first) != width:
        what = "features, then the target" if target is not None else "features"
        raise DataError(
            f"{path} has no header row and {len(first)} columns, but {width} are needed "
            f"({len(feature_names)} {what}); add a header row naming the columns"
        )
    else:
        cols = [i for i in range(width) if i != tcol]
    return cols, tcol, names, header


def holds_the_names(first: list[str], names: tuple[str, ...]) -> bool:
    """Whether ``first`` names every column a model needs, so that it is a header; not when
    the names are column numbers (a model trained on a file without a header).

    Examples
    --------
    >>> from handgrad.data.csv_columns import holds_the_names
    >>> holds_the_names(['b', 'a', 'x'], ('a', 'b')), holds_the_names(['0', '1'], ('0', '1'))
    (True, False)
    """
    numbers = [int(n) if n.isascii() and n.isdigit() else -1 for n in names]
    as_written = [str(i) for i in numbers] == list(names)
    positional = as_written and all(0 <= i <= len(names) for i in numbers)
    return bool(names) and not positional and set(names) <= set(first)


def is_header(first: list[str], skip: int | None, missing: frozenset[str] | None) -> bool:
    """Whether a cell of ``first`` other than column ``skip`` is text (not a number, not
    missing).

    Examples
    --------
    >>> from handgrad.data.csv_columns import is_header
    >>> is_header(['1', 'NA', 'x'], 2, None), is_header(['1', 'NA', 'x'], None, None)
    (False, True)
    """
    return any(
        to_float(c) is None and not is_missing(c, missing) for i, c in enumerate(first) if i != skip
    )


def locate_target(
    first: list[str],
    target: str | int,
    path: Any,
    missing: frozenset[str] | None,
    default: int | None = None,
) -> tuple[int, bool]:
    """Return the target's column index and whether the first row is a header.

    ``target`` is a name, or an index given as an int or as digits that name no column.
    Digits that are a cell of the first row name that column when the row is otherwise a
    header, or when no column has that index. A name not in a header-less file is an error,
    or column ``default`` when given.

    Examples
    --------
    >>> from handgrad.data.csv_columns import locate_target
    >>> locate_target(["a", "kind"], "kind", "f.csv", None)
    (1, True)
    >>> locate_target(["1", "0"], 1, "f.csv", None)  # digits in the first row: no header
    (1, False)
    """
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target must be a column name or index, got {target!r}")
    is_index = not isinstance(target, str) or (target.isascii() and target.isdigit())
    if isinstance(target, str) and target in first:
        col = first.index(target)
        if not is_index or is_header(first, col, missing) or int(target) >= len(first):
            return col, True
    if is_index:
        col = int(target)
        if not 0 <= col < len(first):
            raise DataError(
                f"target column index {col} is out of range for {path}, which has "
                f"{len(first)} columns; give an index from 0 to {len(first) - 1}"
            )
        return col, is_header(first, col, missing)
    if is_header(first, default, missing):
        raise DataError(f"{path} has no column {target!r}; use one of {listing(first)}")
    if default is None:
        raise DataError(
            f"{path} has no header row, so no column is named {target!r}; give the target as "
            f"a 0-based column index (0 to {len(first) - 1}) or add a header row"
        )
    return default, False


def column_names(first: list[str], header: bool, path: Any) -> tuple[str, ...]:
    """The names of the columns: the header's, or their indices as strings.

    Examples
    --------
    >>> from handgrad.data.csv_columns import column_names
    >>> column_names(['a', 'b'], True, 'f.csv'), column_names(['1', '2'], False, 'f.csv')
    (('a', 'b'), ('0', '1'))
    """
    if not header:
        return tuple(map(str, range(len(first))))
    twice = [name for name, count in Counter(first).items() if count > 1]
    if twice:
        raise DataError(f"column name {twice[0]!r} appears twice in {path}; rename one of them")
    return tuple(first)


def find_column(names: tuple[str, ...], name: str, path: Any) -> int:
    """The index of the column ``name``; an error listing the names when there is none.

    Examples
    --------
    >>> from handgrad.data.csv_columns import find_column
    >>> find_column(('a', 'b'), 'b', 'f.csv')
    1
    """
    if name not in names:
        raise DataError(f"{path} has no column {name!r}; use one of {listing(names)}")
    return names.index(name)


def data_rows(rows: Rows, header: bool, path: Any) -> Rows:
    """The rows after the header (all without one), each as wide as the first row.

    Examples
    --------
    >>> from handgrad.data.csv_columns import data_rows
    >>> data_rows([(1, ['a', 't']), (3, ['1', 'x'])], True, 'f.csv')
    [(3, ['1', 'x'])]
    """
    data = rows[1:] if header else rows
    if not data:
        raise DataError(f"{path} has a header row but no data rows; add rows of data below it")
    width = len(rows[0][1])
    for n, cells in data:
        if len(cells) != width:
            raise DataError(
                f"row {n} of {path} has {len(cells)} cells, expected {width} as in the first "
                "row; make every row have the same number of columns"
            )
    return data


def read_features(
    data: Rows, cols: list[int], names: tuple[str, ...], path: Any, missing: frozenset[str] | None
) -> np.ndarray:
    """X (rows, len(cols)) float64 from the cells of columns ``cols``, cell by cell: the
    reference reader, whose errors name the row, the column and the cell.

    Examples
    --------
    >>> from handgrad.data.csv_columns import read_features
    >>> read_features([(2, ['1.5', 'x', '2'])], [2, 0], ('a', 't', 'b'), 'f.csv', None).tolist()
    [[2.0, 1.5]]
    """
    X = np.empty((len(data), len(cols)), dtype=np.float64)  # n, features
    for i, (n, cells) in enumerate(data):
        X[i] = [
            feature_value(cells[c], f"row {n}, column {names[c]!r} of {path}", missing)
            for c in cols
        ]
    return X


def read_labels(
    data: Rows, col: int, name: str, path: Any, missing: frozenset[str] | None
) -> list[str]:
    """The label cells of column ``col``; an error naming the first row without one.

    Examples
    --------
    >>> from handgrad.data.csv_columns import read_labels
    >>> read_labels([(2, ['1', 'x']), (3, ['2', 'y'])], 1, 't', 'f.csv', None)
    ['x', 'y']
    """
    for n, cells in data:
        if is_missing(cells[col], missing, label=True):
            raise DataError(
                f"row {n}, column {name!r} of {path} has no label ({cells[col]!r}); "
                "fill in the class or drop that row"
            )
    return [cells[col] for _, cells in data]


def lookup_classes(
    labels: list[str],
    data: Rows,
    class_names: tuple[str, ...],
    name: str,
    path: Any,
    numeric: bool,
) -> np.ndarray:
    """Class indices (rows,) int64 of ``labels`` in ``class_names``; an error naming the
    first row whose class the model does not know.

    Examples
    --------
    >>> from handgrad.data.csv_columns import lookup_classes
    >>> lookup_classes(['y', 'x'], [(2, []), (3, [])], ('x', 'y'), 't', 'f.csv', False).tolist()
    [1, 0]
    """
    index = {class_key(c, numeric): i for i, c in enumerate(class_names)}
    y = np.empty(len(labels), dtype=np.int64)
    for i, (label, (n, _)) in enumerate(zip(labels, data, strict=True)):
        found = index.get(class_key(label, numeric))
        if found is None:
            raise DataError(
                f"row {n}, column {name!r} of {path} holds class {label!r}, which the model "
                f"does not know; its classes are {listing(class_names)}"
            )
        y[i] = found
    return y


def listing(names: Sequence[str], limit: int = 20) -> str:
    """``names`` quoted and joined by commas, the first ``limit`` of them.

    Examples
    --------
    >>> from handgrad.data.csv_columns import listing
    >>> listing(['a', 'b', 'c'], limit=2)
    "'a', 'b', ... (3 in all)"
    """
    shown = ", ".join(map(repr, names[:limit]))
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"


def block_faults(
    text: str,
    first_row: int,
    *,
    head: Head,
    path: Any,
    cols: list[int],
    col: int | None,
    names: tuple[str, ...],
    missing: frozenset[str] | None,
    classes: Sequence[str] | None = None,
    numeric: bool = False,
) -> dict[int, str] | None:
    """The faults of ``text``, data rows of ``path`` from row ``first_row`` on (no quotes),
    by rank, as the reference reader would report them: 0 the first ragged row, 1 the
    first bad feature cell, 2 the first missing label, 3 the first class not in
    ``classes``. Rows that ``numpy.loadtxt`` reads (finite, labels present and known) have
    none; only the others are checked cell by cell. None when only the reference reader
    can tell (a field larger than the csv module's limit).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data.csv_columns import block_faults
    >>> from handgrad.data.csv_fast import read_head
    >>> path = Path(tempfile.mkdtemp()) / "f.csv"
    >>> _ = path.write_text("a,t\\n1,x\\n")
    >>> where = {"head": read_head(path, None), "path": "f.csv", "cols": [0], "col": 1,
    ...          "names": ("a", "t"), "missing": None}
    >>> block_faults("2,y\\n", 3, **where)
    {}
    >>> block_faults("oops,\\n3,y,z\\n", 3, **where)[0][:40]  # a ragged row outranks the rest
    'row 4 of f.csv has 3 cells, expected 2 a'
    >>> block_faults("oops,\\n", 3, **where)[1]
    "row 3, column 'a' of f.csv holds 'oops', which is not a number; fix or remove that value"
    """
    columns = read_block(text, head, cols, col)
    if columns is not None:
        labels = [label.strip() for label in columns.labels]
        known = None if classes is None else {class_key(c, numeric) for c in classes}
        if not any(is_missing(label, missing, label=True) for label in labels) and (
            known is None or all(class_key(label, numeric) in known for label in labels)
        ):
            return {}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=head.separator, strict=True)
    try:
        rows = [(n, [c.strip() for c in cells]) for n, cells in enumerate(reader, first_row)]
    except csv.Error:
        return None
    rows = [(n, cells) for n, cells in rows if any(cells)]  # blank lines are no rows
    if not rows:
        return {}
    try:
        data_rows([(0, head.first), *rows], True, path)
    except DataError as err:
        return {0: str(err)}
    faults = {}
    try:
        read_features(rows, cols, names, path, missing)
    except DataError as err:
        faults[1] = str(err)
    if col is not None:
        try:
            labels = read_labels(rows, col, names[col], path, missing)
        except DataError as err:
            faults[2] = str(err)
        else:
            try:
                if classes is not None:
                    lookup_classes(labels, rows, tuple(classes), names[col], path, numeric)
            except DataError as err:
                faults[3] = str(err)
    return faults
