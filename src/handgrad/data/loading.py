"""Loading data: scikit-learn's bundled sets and a user's CSV file.

Only NumPy is needed at import time; scikit-learn is imported by the functions that use it.
Row numbers in error messages count as a spreadsheet does: 1-based, header included.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import numbers
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from handgrad.core.errors import DataError
from handgrad.data.csv_fast import Columns, read_columns, read_head
from handgrad.data.csv_rows import (
    Rows,
    Table,
    check_missing,
    check_separator,
    feature_value,
    is_missing,
    read_table,
    to_float,
)
from handgrad.data.labels import class_key, encode_distinct, encode_labels

__all__ = ["DATASETS", "Dataset", "load_csv", "load_dataset", "load_features"]

DATASETS = ("breast_cancer", "digits", "iris", "wine")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification data set: ``X`` (n, features) float64, ``y`` (n,) int64 class indices,
    ``class_names[i]`` the label of index ``i``, ``target_name`` "target" for bundled sets or
    the CSV column's name (its index as a string without a header), ``name`` the set's or
    the file's name.

    Examples
    --------
    >>> from handgrad.data import load_dataset
    >>> data = load_dataset("wine")
    >>> data.name, data.X.shape, data.X.dtype.name, data.y.dtype.name, data.class_names[0]
    ('wine', (178, 13), 'float64', 'int64', 'class_0')
    """

    X: np.ndarray
    y: np.ndarray
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    target_name: str
    name: str

    def fingerprint(self) -> str:
        """A SHA-256 of the data as read: the features, the labels and the names (a run
        records it, to tell on resuming whether its data changed).

        Examples
        --------
        >>> from handgrad.data import load_dataset
        >>> data = load_dataset("iris")
        >>> len(data.fingerprint()), data.fingerprint() == load_dataset("iris").fingerprint()
        (64, True)
        """
        digest = hashlib.sha256()
        names = [self.feature_names, self.class_names, self.target_name, self.X.shape]
        digest.update(json.dumps(names).encode("utf-8"))
        digest.update(np.ascontiguousarray(self.X, dtype="<f8"))
        digest.update(np.ascontiguousarray(self.y, dtype="<i8"))
        return digest.hexdigest()


def sklearn_module(module: str) -> ModuleType:
    try:
        return importlib.import_module(f"sklearn.{module}")
    except ImportError:
        raise ImportError(
            "this needs scikit-learn; install it with pip install 'handgrad[sklearn]'"
        ) from None


def load_dataset(name: str) -> Dataset:
    """Load ``name``, one of ``DATASETS``, from scikit-learn's bundled files (no download).

    Examples
    --------
    >>> from handgrad.data import load_dataset
    >>> data = load_dataset("breast_cancer")
    >>> data.X.shape, data.y.shape, data.class_names
    ((569, 30), (569,), ('malignant', 'benign'))
    """
    if name not in DATASETS:
        raise DataError(
            f"unknown data set {name!r}; choose one of {_listing(DATASETS)}, "
            "or use your own file with --data FILE.csv --target COL"
        )
    bunch = getattr(sklearn_module("datasets"), f"load_{name}")()
    return Dataset(
        X=np.ascontiguousarray(bunch.data, dtype=np.float64),
        y=np.asarray(bunch.target, dtype=np.int64),
        feature_names=tuple(map(str, bunch.feature_names)),
        class_names=tuple(map(str, bunch.target_names)),
        target_name="target",
        name=name,
    )


def load_csv(
    path: str | os.PathLike,
    target: str | int,
    *,
    sep: str | None = None,
    missing: Sequence[str] | None = None,
    numeric_labels: bool = False,
) -> Dataset:
    """Load a CSV file whose ``target`` column holds the class labels.

    ``target`` is a column name, or a 0-based column index (an int, or a string of digits
    naming no column). The first row is a header when one of its feature cells is not a
    number, or when it holds ``target`` as a name. Every other column is a feature and must
    hold finite numbers.

    Labels are strings compared as written, so ``01`` and ``1`` are two classes; they are
    sorted by value when all are numbers, else as text, and become classes 0..C-1. With
    ``numeric_labels`` numbers are compared by their exact value (``1``, ``1.0`` and ``01``
    are one class, ``1``). A label cell is missing when it is empty or one of ``missing``;
    a feature cell when it is empty, one of ``missing``, or (without ``missing``) ``NA``,
    ``n/a`` or ``nan``. ``sep`` is the separator (default: the comma, or the one the file
    plainly uses when it has no comma).

    A plain file (numbers in every feature cell, no quotes after the first row) is read in
    one ``numpy.loadtxt`` pass; any other, and any file with a fault, by a reader that
    names the row, the column and the cell at fault (the same results either way).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data import load_csv
    >>> path = Path(tempfile.mkdtemp()) / "flowers.csv"
    >>> _ = path.write_text("length,width,kind\\n1.0,0.5,small\\n3.0,1.5,large\\n1.2,0.4,small\\n")
    >>> data = load_csv(path, target="kind")
    >>> data.X.shape, data.feature_names, data.class_names, data.y.tolist()
    ((3, 2), ('length', 'width'), ('large', 'small'), [1, 0, 1])
    """
    missing = check_missing(missing)
    fast = _load_csv_fast(path, target, check_separator(sep), missing, numeric_labels)
    if fast is not None:
        return fast
    table = read_table(path, sep)
    try:
        first = table.rows[0][1]
        col, header = _locate_target(first, target, path, missing)
        names = _column_names(first, header, path)
        data = _data_rows(table.rows, header, path)
        features = [i for i in range(len(first)) if i != col]
        if not features:
            raise DataError(f"{path} has only the target column; add at least one feature column")
        X = _features(data, features, names, path, missing)
        labels = _labels(data, col, names[col], path, missing)
    except DataError as err:
        raise DataError(f"{err}{table.hint()}") from None
    y, class_names = encode_labels(labels, numeric_labels)
    if len(class_names) < 2:
        raise DataError(
            f"target column {names[col]!r} of {path} holds one class only ({class_names[0]!r}); "
            "a classifier needs two or more, so choose another target or add other classes"
        )
    return Dataset(
        X=X,
        y=y,
        feature_names=tuple(names[i] for i in features),
        class_names=class_names,
        target_name=names[col],
        name=Path(path).name,
    )


def _load_csv_fast(
    path: str | os.PathLike,
    target: str | int,
    sep: str | None,
    missing: frozenset[str] | None,
    numeric_labels: bool,
) -> Dataset | None:
    """``load_csv`` of a plain file by the vectorised reader; None for any other file."""
    head = _plain_head(path, sep, missing)
    if head is None:
        return None
    first = head.first
    try:
        col, header = _locate_target(first, target, path, missing)
        names = _column_names(first, header, path)
    except (DataError, TypeError):  # the reference reader may find a fault before this one
        return None
    features = [i for i in range(len(first)) if i != col]
    columns = read_columns(path, head, header=header, features=features, label=col)
    labels = _plain_labels(columns, missing)
    if not features or labels is None:
        return None
    y, class_names = encode_distinct(labels, columns.codes, numeric_labels)
    if len(class_names) < 2:
        return None
    return Dataset(
        X=columns.X,
        y=y,
        feature_names=tuple(names[i] for i in features),
        class_names=class_names,
        target_name=names[col],
        name=Path(path).name,
    )


def _plain_head(path: Any, sep: str | None, missing: frozenset[str] | None) -> Any:
    """The head of a file for the vectorised reader, or None when ``missing`` names a
    number (``loadtxt`` would read it as one)."""
    if missing is not None and any(to_float(m) is not None for m in missing):
        return None
    return read_head(path, sep)


def _plain_labels(columns: Columns | None, missing: frozenset[str] | None) -> list[str] | None:
    """The distinct labels, stripped, or None when one is missing or holds a quote."""
    if columns is None:
        return None
    labels = [label.strip() for label in columns.labels]
    if any(is_missing(label, missing, label=True) or '"' in label for label in labels):
        return None
    return labels


def load_features(
    path: str | os.PathLike,
    feature_names: Sequence[str],
    *,
    target: str | None = None,
    class_names: Sequence[str] | None = None,
    sep: str | None = None,
    missing: Sequence[str] | None = None,
    numeric_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``X`` (n, len(feature_names)) for a trained model, and ``y`` (class indices,
    looked up in ``class_names``) when ``target`` is given, else None.

    The first row is a header when it holds every feature name (and the target's), unless
    the names are the column numbers of a file that had none; or when one of its cells is
    text. With a header the columns are picked by name (any order, extra columns ignored).
    Without one the file holds exactly the features in order and, if ``target`` is given,
    the target: at that index when ``target`` is digits (as ``load_csv`` names the target
    of a header-less file), else last. ``sep``, ``missing`` and ``numeric_labels`` are as
    in :func:`load_csv`.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.data import load_features
    >>> with tempfile.TemporaryDirectory() as folder:  # columns in another order, one extra
    ...     path = Path(folder) / "new.csv"
    ...     _ = path.write_text("width,kind,id,length\\n0.5,small,a,1.0\\n1.5,large,b,3.0\\n")
    ...     X, y = load_features(path, ["length", "width"], target="kind",
    ...                          class_names=["large", "small"])
    >>> X.tolist(), y.tolist()
    ([[1.0, 0.5], [3.0, 1.5]], [1, 0])
    """
    feature_names = tuple(feature_names)
    if target is not None and class_names is None:
        raise ValueError("class_names is needed to turn the target column into class indices")
    missing = check_missing(missing)
    fast = _load_features_fast(
        path, feature_names, target, class_names, check_separator(sep), missing, numeric_labels
    )
    if fast is not None:
        return fast
    table = read_table(path, sep)
    try:
        X, tcol, names, data = _feature_columns(table, feature_names, target, missing)
        if tcol is None:
            return X, None
        labels = _labels(data, tcol, names[tcol], path, missing)
        return X, _lookup(labels, data, tuple(class_names), names[tcol], path, numeric_labels)
    except DataError as err:
        raise DataError(f"{err}{table.hint()}") from None


def _load_features_fast(
    path: str | os.PathLike,
    feature_names: tuple[str, ...],
    target: str | None,
    class_names: Sequence[str] | None,
    sep: str | None,
    missing: frozenset[str] | None,
    numeric: bool,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``load_features`` of a plain file by the vectorised reader; None for any other."""
    head = _plain_head(path, sep, missing)
    if head is None:
        return None
    try:
        cols, tcol, _, header = _feature_plan(head.first, path, feature_names, target, missing)
    except (DataError, TypeError):  # the reference reader may find a fault before this one
        return None
    columns = read_columns(path, head, header=header, features=cols, label=tcol)
    if columns is None or tcol is None:
        return None if columns is None else (columns.X, None)
    labels = _plain_labels(columns, missing)
    if labels is None:
        return None
    index = {class_key(c, numeric): i for i, c in enumerate(class_names)}
    found = [index.get(class_key(label, numeric)) for label in labels]
    if None in found:  # the reference reader names the row
        return None
    return columns.X, np.array(found, dtype=np.int64)[columns.codes]


def _feature_columns(
    table: Table,
    feature_names: tuple[str, ...],
    target: str | None,
    missing: frozenset[str] | None,
) -> tuple[np.ndarray, int | None, tuple[str, ...], Rows]:
    """X of a file for a model; the target's column, the column names and the data rows."""
    path, first = table.path, table.rows[0][1]
    cols, tcol, names, header = _feature_plan(first, path, feature_names, target, missing)
    data = _data_rows(table.rows, header, path)
    return _features(data, cols, names, path, missing), tcol, names, data


def _feature_plan(
    first: list[str],
    path: Any,
    feature_names: tuple[str, ...],
    target: str | None,
    missing: frozenset[str] | None,
) -> tuple[list[int], int | None, tuple[str, ...], bool]:
    """The feature columns of a file for a model, the target's column, the column names and
    whether the first row is a header."""
    width = len(feature_names) + (target is not None)  # columns of a header-less file
    named = _holds_the_names(first, (*feature_names, *([] if target is None else [target])))
    tcol, header = None, named or _is_header(first, None, missing)
    if target is not None:
        tcol, header = (
            (first.index(target), True)
            if named
            else _locate_target(first, target, path, missing, default=width - 1)
        )
    names = _column_names(first, header, path)
    if header:
        cols = [_find_column(names, f, path) for f in feature_names]
    elif len(first) != width:
        what = "features, then the target" if target is not None else "features"
        raise DataError(
            f"{path} has no header row and {len(first)} columns, but {width} are needed "
            f"({len(feature_names)} {what}); add a header row naming the columns"
        )
    else:
        cols = [i for i in range(width) if i != tcol]
    return cols, tcol, names, header


def _holds_the_names(first: list[str], names: tuple[str, ...]) -> bool:
    """Whether ``first`` names every column a model needs, so that it is a header; not when
    the names are column numbers (a model trained on a file without a header)."""
    numbers = [int(n) if n.isascii() and n.isdigit() else -1 for n in names]
    as_written = [str(i) for i in numbers] == list(names)
    positional = as_written and all(0 <= i <= len(names) for i in numbers)
    return bool(names) and not positional and set(names) <= set(first)


def _is_header(first: list[str], skip: int | None, missing: frozenset[str] | None) -> bool:
    """Whether a cell of ``first`` other than column ``skip`` is text (not a number, not
    missing)."""
    return any(
        to_float(c) is None and not is_missing(c, missing) for i, c in enumerate(first) if i != skip
    )


def _locate_target(
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
    """
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target must be a column name or index, got {target!r}")
    is_index = not isinstance(target, str) or (target.isascii() and target.isdigit())
    if isinstance(target, str) and target in first:
        col = first.index(target)
        if not is_index or _is_header(first, col, missing) or int(target) >= len(first):
            return col, True
    if is_index:
        col = int(target)
        if not 0 <= col < len(first):
            raise DataError(
                f"target column index {col} is out of range for {path}, which has "
                f"{len(first)} columns; give an index from 0 to {len(first) - 1}"
            )
        return col, _is_header(first, col, missing)
    if _is_header(first, default, missing):
        raise DataError(f"{path} has no column {target!r}; use one of {_listing(first)}")
    if default is None:
        raise DataError(
            f"{path} has no header row, so no column is named {target!r}; give the target as "
            f"a 0-based column index (0 to {len(first) - 1}) or add a header row"
        )
    return default, False


def _column_names(first: list[str], header: bool, path: Any) -> tuple[str, ...]:
    if not header:
        return tuple(map(str, range(len(first))))
    twice = [name for name, count in Counter(first).items() if count > 1]
    if twice:
        raise DataError(f"column name {twice[0]!r} appears twice in {path}; rename one of them")
    return tuple(first)


def _find_column(names: tuple[str, ...], name: str, path: Any) -> int:
    if name not in names:
        raise DataError(f"{path} has no column {name!r}; use one of {_listing(names)}")
    return names.index(name)


def _data_rows(rows: Rows, header: bool, path: Any) -> Rows:
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


def _features(
    data: Rows, cols: list[int], names: tuple[str, ...], path: Any, missing: frozenset[str] | None
) -> np.ndarray:
    X = np.empty((len(data), len(cols)), dtype=np.float64)  # n, features
    for i, (n, cells) in enumerate(data):
        X[i] = [
            feature_value(cells[c], f"row {n}, column {names[c]!r} of {path}", missing)
            for c in cols
        ]
    return X


def _labels(
    data: Rows, col: int, name: str, path: Any, missing: frozenset[str] | None
) -> list[str]:
    for n, cells in data:
        if is_missing(cells[col], missing, label=True):
            raise DataError(
                f"row {n}, column {name!r} of {path} has no label ({cells[col]!r}); "
                "fill in the class or drop that row"
            )
    return [cells[col] for _, cells in data]


def _lookup(
    labels: list[str],
    data: Rows,
    class_names: tuple[str, ...],
    name: str,
    path: Any,
    numeric: bool,
) -> np.ndarray:
    index = {class_key(c, numeric): i for i, c in enumerate(class_names)}
    y = np.empty(len(labels), dtype=np.int64)
    for i, (label, (n, _)) in enumerate(zip(labels, data, strict=True)):
        found = index.get(class_key(label, numeric))
        if found is None:
            raise DataError(
                f"row {n}, column {name!r} of {path} holds class {label!r}, which the model "
                f"does not know; its classes are {_listing(class_names)}"
            )
        y[i] = found
    return y


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(map(repr, names[:limit]))
    return shown if len(names) <= limit else f"{shown}, ... ({len(names)} in all)"
