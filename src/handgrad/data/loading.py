"""Loading data: scikit-learn's bundled sets and a user's CSV file.

Only NumPy is needed at import time; scikit-learn is imported by the functions that use it.
Row numbers in error messages count as a spreadsheet does: 1-based, header included.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from handgrad.core.errors import DataError
from handgrad.data.csv_columns import (
    block_faults,
    column_names,
    data_rows,
    feature_columns,
    feature_plan,
    listing,
    locate_target,
    lookup_classes,
    read_features,
    read_labels,
)
from handgrad.data.csv_fast import Columns, Head, read_columns, read_head
from handgrad.data.csv_faults import find_fault
from handgrad.data.csv_rows import (
    Table,
    check_missing,
    check_separator,
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
            f"unknown data set {name!r}; choose one of {listing(DATASETS)}, "
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
        col, header = locate_target(first, target, path, missing)
        names = column_names(first, header, path)
        data = data_rows(table.rows, header, path)
        features = [i for i in range(len(first)) if i != col]
        if not features:
            raise DataError(f"{path} has only the target column; add at least one feature column")
        X = read_features(data, features, names, path, missing)
        labels = read_labels(data, col, names[col], path, missing)
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
        col, header = locate_target(first, target, path, missing)
        names = column_names(first, header, path)
    except (DataError, TypeError):  # the reference reader may find a fault before this one
        return None
    features = [i for i in range(len(first)) if i != col]
    if not features:
        return None
    columns = read_columns(path, head, header=header, features=features, label=col)
    labels = _plain_labels(columns, missing)
    if labels is None:  # a fault, found block by block; else the reference reader
        where = {"head": head, "path": path, "cols": features, "col": col, "names": names}
        _raise_fault(path, head, header, where, missing)
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
        X, tcol, names, data = feature_columns(table, feature_names, target, missing)
        if tcol is None:
            return X, None
        labels = read_labels(data, tcol, names[tcol], path, missing)
        return X, lookup_classes(
            labels, data, tuple(class_names), names[tcol], path, numeric_labels
        )
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
        cols, tcol, names, header = feature_plan(head.first, path, feature_names, target, missing)
    except (DataError, TypeError):  # the reference reader may find a fault before this one
        return None
    if tcol in cols:  # a column both feature and label: the reference reader
        return None
    columns = read_columns(path, head, header=header, features=cols, label=tcol)
    if columns is not None and tcol is None:
        return columns.X, None
    labels = _plain_labels(columns, missing)
    index = {class_key(c, numeric): i for i, c in enumerate(class_names or ())}
    found = [index.get(class_key(label, numeric)) for label in labels or ()]
    if labels is None or None in found:  # a fault, found block by block
        where = {"head": head, "path": path, "cols": cols, "col": tcol, "names": names}
        _raise_fault(
            path, head, header, {**where, "classes": class_names, "numeric": numeric}, missing
        )
        return None
    return columns.X, np.array(found, dtype=np.int64)[columns.codes]


def _raise_fault(
    path: Any, head: Head, header: bool, where: dict[str, Any], missing: frozenset[str] | None
) -> None:
    """Raise the error that the reference reader would raise for the data rows of ``path``,
    found a block at a time (:mod:`handgrad.data.csv_faults`); return when there is none
    or when only the reference reader can tell."""
    check = functools.partial(block_faults, **where, missing=missing)
    fault = find_fault(path, head.lines if header else 0, check)
    if fault is not None:
        raise DataError(f"{fault}{Table(path, [], head.separator, head.lookalike).hint()}")
