"""Loading data: scikit-learn's bundled sets and a user's CSV file.

Only NumPy is needed at import time; scikit-learn is imported by the functions that use it.
Row numbers in error messages count as a spreadsheet does: 1-based, header included.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
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

__all__ = ["DATASETS", "Dataset", "load_csv", "load_dataset", "load_features"]

DATASETS = ("breast_cancer", "digits", "iris", "wine")
_MISSING = frozenset({"", "na", "n/a", "nan"})  # compared in lower case

Rows = list[tuple[int, list[str]]]  # (spreadsheet row number, stripped cells)


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


def load_csv(path: str | os.PathLike, target: str | int) -> Dataset:
    """Load a comma-separated file whose ``target`` column holds the class labels.

    The first row is a header when one of its feature cells is not a number. ``target`` is
    a column name, or a 0-based column index (an int, or a string of digits naming no
    column). Every other column is a feature and must hold finite numbers. The distinct
    labels, sorted (numerically when all are numbers), become classes 0..C-1.

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
    rows = _read_rows(path)
    first = rows[0][1]
    col, header = _locate_target(first, target, path)
    names = _column_names(first, header, path)
    data = _data_rows(rows, header, path)
    features = [i for i in range(len(first)) if i != col]
    if not features:
        raise DataError(f"{path} has only the target column; add at least one feature column")
    X = _features(data, features, names, path)
    y, class_names = _encode(_labels(data, col, names[col], path), names[col], path)
    return Dataset(
        X=X,
        y=y,
        feature_names=tuple(names[i] for i in features),
        class_names=class_names,
        target_name=names[col],
        name=Path(path).name,
    )


def load_features(
    path: str | os.PathLike,
    feature_names: Sequence[str],
    *,
    target: str | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Load ``X`` (n, len(feature_names)) for a trained model, and ``y`` (class indices,
    looked up in ``class_names``) when ``target`` is given, else None.

    With a header the columns are picked by name (any order, extra columns ignored).
    Without one the file holds exactly the features in order and, if ``target`` is given,
    the target: at that index when ``target`` is digits (as ``load_csv`` names the target
    of a header-less file), else last.

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
    rows = _read_rows(path)
    first = rows[0][1]
    width = len(feature_names) + (target is not None)  # columns of a header-less file
    tcol, header = None, _is_header(first, None)
    if target is not None:
        tcol, header = _locate_target(first, target, path, default=width - 1)
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
    data = _data_rows(rows, header, path)
    X = _features(data, cols, names, path)
    if tcol is None:
        return X, None
    labels = _labels(data, tcol, names[tcol], path)
    return X, _lookup(labels, data, tuple(class_names), names[tcol], path)


def _read_rows(path: str | os.PathLike) -> Rows:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"no file at {path}; check the path and the working directory") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory; give the path of a CSV file in it") from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}); check its permissions") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataError(
            f"line {line} of {path} is not UTF-8 text (byte {raw[err.start]:#04x} at offset "
            f"{err.start}); save the file again as UTF-8 CSV"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = [(n, [c.strip() for c in cells]) for n, cells in enumerate(reader, start=1)]
    except csv.Error as err:
        raise DataError(
            f"line {reader.line_num} of {path} is not valid CSV ({err}); fix that line"
        ) from None
    rows = [(n, cells) for n, cells in rows if any(cells)]  # skip blank lines
    if not rows:
        raise DataError(f"{path} is empty; give a CSV file with a row per sample")
    return rows


def _to_float(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _is_header(first: list[str], skip: int | None) -> bool:
    """Whether a cell of ``first`` other than column ``skip`` is text (not a number, not NA)."""
    return any(
        _to_float(c) is None and c.lower() not in _MISSING for i, c in enumerate(first) if i != skip
    )


def _locate_target(
    first: list[str], target: str | int, path: Any, default: int | None = None
) -> tuple[int, bool]:
    """Return the target's column index and whether the first row is a header.

    ``target`` is a name, or an index given as an int or as digits that name no column.
    A name not in a header-less file is an error, or column ``default`` when given.
    """
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target must be a column name or index, got {target!r}")
    is_index = not isinstance(target, str) or (target.isascii() and target.isdigit())
    if isinstance(target, str) and target in first:
        col = first.index(target)
        if not is_index or _is_header(first, col):
            return col, True
    if is_index:
        col = int(target)
        if not 0 <= col < len(first):
            raise DataError(
                f"target column index {col} is out of range for {path}, which has "
                f"{len(first)} columns; give an index from 0 to {len(first) - 1}"
            )
        return col, _is_header(first, col)
    if _is_header(first, default):
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


def _features(data: Rows, cols: list[int], names: tuple[str, ...], path: Any) -> np.ndarray:
    X = np.empty((len(data), len(cols)), dtype=np.float64)  # n, features
    for i, (n, cells) in enumerate(data):
        X[i] = [_feature_value(cells[c], f"row {n}, column {names[c]!r} of {path}") for c in cols]
    return X


def _feature_value(cell: str, where: str) -> float:
    if cell.lower() in _MISSING:
        shown = repr(cell) if cell else "an empty cell"
        raise DataError(f"{where} is missing ({shown}); impute a value or drop that row")
    value = _to_float(cell)
    if value is None:
        raise DataError(f"{where} holds {cell!r}, which is not a number; fix or remove that value")
    if not math.isfinite(value):
        raise DataError(f"{where} holds {cell!r}, which is not finite; replace it or drop the row")
    return value


def _labels(data: Rows, col: int, name: str, path: Any) -> list[str]:
    for n, cells in data:
        if cells[col].lower() in _MISSING:
            raise DataError(
                f"row {n}, column {name!r} of {path} has no label ({cells[col]!r}); "
                "fill in the class or drop that row"
            )
    return [cells[col] for _, cells in data]


def _label_text(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def _encode(labels: list[str], name: str, path: Any) -> tuple[np.ndarray, tuple[str, ...]]:
    values = [_to_float(s) for s in labels]
    numeric = all(v is not None and math.isfinite(v) for v in values)
    keys: list[Any] = values if numeric else labels
    classes = sorted(set(keys))
    class_names = tuple(_label_text(c) for c in classes) if numeric else tuple(classes)
    if len(classes) < 2:
        raise DataError(
            f"target column {name!r} of {path} holds one class only ({class_names[0]!r}); "
            "a classifier needs two or more, so choose another target or add other classes"
        )
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[k] for k in keys], dtype=np.int64), class_names


def _lookup(
    labels: list[str], data: Rows, class_names: tuple[str, ...], name: str, path: Any
) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    y = np.empty(len(labels), dtype=np.int64)
    for i, (label, (n, _)) in enumerate(zip(labels, data, strict=True)):
        value = _to_float(label)
        alias = _label_text(value) if value is not None and math.isfinite(value) else label
        found = index.get(label, index.get(alias))
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
