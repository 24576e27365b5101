"""Class labels: strings, compared as written ("01" and "1" are two classes, and so are
9007199254740992 and 9007199254740993), or, on request, numbers compared by exact value."""

from __future__ import annotations

import decimal
from collections.abc import Sequence

import numpy as np

__all__ = ["class_key", "encode_distinct", "encode_labels", "numeric_value"]


def numeric_value(label: str) -> decimal.Decimal | None:
    """The label's exact value when it is a finite number, else None.

    Examples
    --------
    >>> from handgrad.data.labels import numeric_value
    >>> numeric_value("9007199254740993"), numeric_value("1e3"), numeric_value("nan")
    (Decimal('9007199254740993'), Decimal('1E+3'), None)
    """
    try:
        value = decimal.Decimal(label)
    except (decimal.InvalidOperation, ValueError):
        return None
    return value if value.is_finite() else None


def class_key(label: str, numeric: bool) -> str:
    """The name of the class of ``label``: the label itself; with ``numeric``, a number in
    one form for all its spellings (``1``, ``1.0`` and ``01`` are ``1``).

    Examples
    --------
    >>> from handgrad.data.labels import class_key
    >>> class_key("01", False), class_key("01", True), class_key("2.50", True), class_key("x", True)
    ('01', '1', '2.5', 'x')
    """
    value = numeric_value(label) if numeric else None
    if value is None:
        return label
    if not -30 < value.adjusted() < 30:  # far from 1: in scientific notation, kept short
        return str(value.normalize())
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def encode_labels(
    labels: Sequence[str], numeric: bool = False
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class indices (n,) int64 and the class names: the distinct labels (see
    :func:`class_key`), sorted by value when all are numbers, else as text.

    Examples
    --------
    >>> from handgrad.data.labels import encode_labels
    >>> y, names = encode_labels(["10", "9", "01", "1", "9007199254740993", "9007199254740992"])
    >>> names
    ('01', '1', '9', '10', '9007199254740992', '9007199254740993')
    >>> y.tolist()
    [3, 2, 0, 1, 5, 4]
    >>> encode_labels(["1.0", "1", "2"], numeric=True)[1]
    ('1', '2')
    """
    distinct = {label: i for i, label in enumerate(dict.fromkeys(labels))}
    codes = np.array([distinct[label] for label in labels], dtype=np.int64)
    return encode_distinct(tuple(distinct), codes, numeric)


def encode_distinct(
    labels: Sequence[str], codes: np.ndarray, numeric: bool = False
) -> tuple[np.ndarray, tuple[str, ...]]:
    """:func:`encode_labels` of the labels ``labels[codes]``, working on the distinct
    labels only (``codes`` (n,) int, indices into ``labels``).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.labels import encode_distinct
    >>> y, names = encode_distinct(["b", "a", "b "], np.array([0, 1, 1, 2]))
    >>> names, y.tolist()
    (('a', 'b', 'b '), [1, 0, 0, 2])
    """
    keys = [class_key(label, numeric) for label in labels]
    values = {key: numeric_value(key) for key in set(keys)}
    if all(value is not None for value in values.values()):
        names = tuple(sorted(values, key=lambda key: (values[key], key)))
    else:
        names = tuple(sorted(values))
    index = {name: i for i, name in enumerate(names)}
    return np.array([index[key] for key in keys], dtype=np.int64)[codes], names
