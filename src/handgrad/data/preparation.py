"""Preparing data for training: a stratified train/validation/test split, standardisation
and mini-batches."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from handgrad.core.deprecation import renamed
from handgrad.core.errors import DataError
from handgrad.core.validation import check_array, check_positive_int
from handgrad.data.loading import sklearn_module

__all__ = ["Split", "Standardizer", "batches", "split"]


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test parts of a data set (validation may be empty); ``note``
    says in one line how the parts differ from the sizes asked for, or is empty.

    Examples
    --------
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("wine")
    >>> parts = split(data.X, data.y, val_size=0, rng=0)  # no validation part
    >>> parts.X_train.shape, parts.X_val.shape, parts.X_test.shape, parts.y_test.shape
    ((133, 13), (0, 13), (45, 13), (45,))
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    note: str = ""


def split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    test_size: float = 0.25,
    val_size: float = 0.1,
    rng: int | None = None,
    class_names: Sequence[str] | None = None,
    seed: int | None = None,
) -> Split:
    """Split stratified into train, validation and test parts.

    ``test_size`` and ``val_size`` are fractions of the whole (rounded up); ``val_size=0``
    gives empty validation arrays. Each class is shared out in proportion, and keeps a row
    in each part where it can: a held-out part too small to hold a row of every class is
    made larger, and a class of 2 rows gives one to train on and one to test (none to
    validate); ``note`` says what was changed. A class of one row is refused. The same
    ``rng`` (an int seed; ``seed`` is its deprecated name) gives the same split, and where
    every part holds every class, the same as handgrad 0.1 drew (scikit-learn's
    ``train_test_split``, twice); ``class_names`` name the classes in messages.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("iris")
    >>> parts = split(data.X, data.y, test_size=0.2, val_size=0.1, rng=0)
    >>> len(parts.y_train), len(parts.y_val), len(parts.y_test), parts.note
    (105, 15, 30, '')
    >>> small = split(np.ones((8, 2)), np.array([0, 0, 0, 1, 1, 1, 2, 2]), rng=0)  # 25%: 2 rows
    >>> np.bincount(small.y_test).tolist(), np.bincount(small.y_val, minlength=3).tolist()
    ([1, 1, 1], [1, 1, 0])
    >>> test_note, validation_note = small.note.split("; ")
    >>> test_note
    'the test part holds 3 rows, not 2, for a row of each class'
    >>> validation_note.endswith("but class 2 (2 rows: one to train on, one to test)")
    True
    """
    if seed is not None:
        warnings.warn("split's seed is deprecated: pass rng", DeprecationWarning, stacklevel=2)
        rng = seed if rng is None else rng
    if rng is not None and (isinstance(rng, bool) or not isinstance(rng, numbers.Integral)):
        raise TypeError(f"rng must be an int seed or None, got {type(rng).__name__}")
    seed = None if rng is None else int(rng)
    if not (0 < test_size < 1 and val_size >= 0 and test_size + val_size < 1):
        raise ValueError(
            f"need 0 < test_size < 1, val_size >= 0 and test_size + val_size < 1, got "
            f"test_size={test_size!r} and val_size={val_size!r}"
        )
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
        raise ValueError(
            f"need X of shape (n, features) and y of shape (n,), got {X.shape}, {y.shape}"
        )
    classes, which, counts = np.unique(y, return_inverse=True, return_counts=True)
    names = [_class_name(c, class_names) for c in classes.tolist()]
    if counts.min() < 2:
        raise DataError(
            f"class {names[int(counts.argmin())]} has only 1 row, but a split needs 2 of each "
            "class (one to train on, one to test); add rows of that class or drop it"
        )
    n_test, n_val = math.ceil(test_size * len(y)), math.ceil(val_size * len(y))
    kept = _as_before(X, y, n_test, n_val, seed, len(classes))
    if kept is not None:
        return Split(*kept)
    spare = (counts >= 3) if val_size > 0 else np.zeros(len(counts), dtype=bool)
    test = _share(n_test, counts, counts - 1 - spare)
    notes = [_resized("the test part", int(test.sum()), n_test, [])]
    val = _share(n_val, counts, spare * (counts - test - 1))
    if val_size > 0 and not val.any():
        notes.append("no validation part: every class has 2 rows, one to train on and one to test")
    elif val_size > 0:
        lacking = [names[k] for k in np.flatnonzero(val == 0)]
        notes.append(_resized("the validation part", int(val.sum()), n_val, lacking))
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]  # train, validation, test
    for k in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(which == k))
        cut = (test[k], test[k] + val[k])
        parts[2].append(rows[: cut[0]])
        parts[1].append(rows[cut[0] : cut[1]])
        parts[0].append(rows[cut[1] :])
    train_rows, val_rows, test_rows = (rng.permutation(np.concatenate(p)) for p in parts)
    return Split(
        X[train_rows],
        y[train_rows],
        X[val_rows],
        y[val_rows],
        X[test_rows],
        y[test_rows],
        note="; ".join(note for note in notes if note),
    )


def _as_before(
    X: np.ndarray, y: np.ndarray, n_test: int, n_val: int, seed: int | None, classes: int
) -> list[np.ndarray] | None:
    """The split of handgrad 0.1 (scikit-learn's, drawn from one seed), so that a seed gives
    the same parts as it did; None when that split cannot keep a row of every class in
    every part."""
    rng = np.random.RandomState(seed)
    split_off = sklearn_module("model_selection").train_test_split
    try:
        X_rest, X_test, y_rest, y_test = split_off(
            X, y, test_size=n_test, stratify=y, random_state=rng
        )
        X_train, X_val, y_train, y_val = (
            split_off(X_rest, y_rest, test_size=n_val, stratify=y_rest, random_state=rng)
            if n_val
            else (X_rest, X[:0], y_rest, y[:0])
        )
    except ValueError:  # a class too small for it
        return None
    parts = (y_train, y_test, y_val) if n_val else (y_train, y_test)
    if any(len(np.unique(part)) < classes for part in parts):
        return None
    return [X_train, y_train, X_val, y_val, X_test, y_test]


def _class_name(value: object, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(value, int) and 0 <= value < len(class_names):
        return repr(class_names[value])
    return str(value)


def _share(size: int, counts: np.ndarray, most: np.ndarray) -> np.ndarray:
    """Rows of each class for a held-out part of about ``size`` rows: in proportion to
    ``counts`` (largest remainders), at most ``most``, and at least one of each class that
    can spare one (``most`` > 0), the part's size changed where that needs it."""
    least = (most > 0).astype(counts.dtype)
    ideal = size * counts / counts.sum()
    shares = np.clip(np.floor(ideal).astype(counts.dtype), least, most)
    target = int(np.clip(size, least.sum(), most.sum()))
    while shares.sum() != target:
        grow = shares.sum() < target
        room = shares < most if grow else shares > least
        gap = np.where(room, ideal - shares, -np.inf if grow else np.inf)
        step = int(min(abs(target - shares.sum()), room.sum()))
        shares[np.argsort(-gap if grow else gap, kind="stable")[:step]] += 1 if grow else -1
    return shares


def _resized(part: str, rows: int, asked: int, lacking: list[str]) -> str:
    """How a held-out part differs from what was asked, in words ("" when it does not)."""
    without = ""
    if lacking:
        s = "es" if len(lacking) > 1 else ""
        without = f"class{s} {', '.join(lacking)} (2 rows: one to train on, one to test)"
    if rows > asked:
        but = f" but {without}" if without else ""
        return f"{part} holds {rows} rows, not {asked}, for a row of each class{but}"
    if rows < asked:
        return f"{part} holds {rows} rows, not {asked}, to leave a row of each class to train on"
    return f"{part} holds no row of {without}" if without else ""


class Standardizer:
    """Standardise features, ``z = (X - mean_) / scale_``, with statistics from training data.

    Columns with no spread get ``scale_ = 1``, as in scikit-learn's ``StandardScaler``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data import Standardizer
    >>> scaler = Standardizer().fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> print(scaler.transform(np.array([[2.0, 5.0], [5.0, 6.0]])))
    [[0. 0.]
     [3. 1.]]
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, X: np.ndarray, feature_names: Sequence[str] | None = None) -> Standardizer:
        """Fit ``mean_`` and ``scale_`` to ``X`` of shape (n, features) with StandardScaler.

        A column whose mean or spread overflows float64 (values near 1e308, or squares
        beyond it) is refused as a :class:`DataError` naming it (by ``feature_names`` when
        given), before anything is changed.

        Examples
        --------
        >>> import numpy as np
        >>> from handgrad.data import Standardizer
        >>> try:
        ...     Standardizer().fit(np.array([[1.0, 1e200], [2.0, -1e200]]), ["a", "b"])
        ... except ValueError as err:
        ...     print(str(err).partition(":")[0])
        feature 'b' holds values as large as 1e+200, too large to standardise
        """
        X = np.asarray(X, dtype=np.float64)
        check_array(X, "X", ndim=2, layout="(samples, features)")
        with np.errstate(over="ignore", invalid="ignore"):
            mean = X.mean(axis=0)
            overflowed = ~np.isfinite(mean) | ~np.isfinite(((X - mean) ** 2).mean(axis=0))
        if overflowed.any():
            j = int(np.argmax(overflowed))
            name = repr(feature_names[j]) if feature_names is not None else str(j)
            what = "mean" if not np.isfinite(mean[j]) else "spread"
            raise DataError(
                f"feature {name} holds values as large as {np.max(np.abs(X[:, j])):g}, too large "
                f"to standardise: its {what} overflows float64; divide that column by a power "
                "of ten"
            )
        scaler = sklearn_module("preprocessing").StandardScaler().fit(X)
        self.mean_ = np.asarray(scaler.mean_, dtype=np.float64)
        self.scale_ = np.asarray(scaler.scale_, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return ``(X - mean_) / scale_`` as float64 (NumPy only)."""
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError(
                "this Standardizer is not fitted; call fit(X_train) or Standardizer.from_arrays"
            )
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.size:
            raise ValueError(
                f"X has shape {X.shape}, but the Standardizer was fitted on "
                f"{self.mean_.size} features; give X of shape (n, {self.mean_.size})"
            )
        return (X - self.mean_) / self.scale_

    @classmethod
    def from_arrays(cls, mean: np.ndarray, scale: np.ndarray) -> Standardizer:
        """Rebuild a fitted Standardizer from saved ``mean_`` and ``scale_`` arrays."""
        mean = np.array(mean, dtype=np.float64)
        scale = np.array(scale, dtype=np.float64)
        if mean.ndim != 1 or mean.shape != scale.shape:
            raise ValueError(
                f"mean and scale must be 1-D, of one shape: {mean.shape}, {scale.shape}"
            )
        bad = ~np.isfinite(mean) | ~np.isfinite(scale) | (scale <= 0)
        if bad.any():
            j = int(np.argmax(bad))
            raise ValueError(
                f"feature {j} has mean {mean[j]} and scale {scale[j]}, but the mean must be "
                "finite and the scale finite and greater than 0; is this the right model file?"
            )
        standardizer = cls()
        standardizer.mean_, standardizer.scale_ = mean, scale
        return standardizer

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """``{prefix + "mean": mean_, prefix + "scale": scale_}``, for an archive."""
        return {f"{prefix}mean": self.mean_, f"{prefix}scale": self.scale_}

    @classmethod
    def from_archive(cls, arrays: dict[str, np.ndarray], prefix: str) -> Standardizer | None:
        """The Standardizer that :meth:`to_arrays` wrote into ``arrays``, or None."""
        if f"{prefix}mean" not in arrays:
            return None
        return cls.from_arrays(arrays[f"{prefix}mean"], arrays.get(f"{prefix}scale"))


def batches(
    n: int, batch_size: int, rng: np.random.Generator, *, shuffle: bool = True
) -> Iterator[np.ndarray]:
    """Index arrays covering ``range(n)`` once, in a fresh permutation from ``rng`` when
    ``shuffle``; the last batch may be smaller. The permutation is drawn on the call.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data import batches
    >>> [b.tolist() for b in batches(5, 2, np.random.default_rng(0))]
    [[2, 4], [3, 0], [1]]
    >>> [b.tolist() for b in batches(5, 2, np.random.default_rng(0), shuffle=False)]
    [[0, 1], [2, 3], [4]]
    """
    n = check_positive_int(n, "n")
    batch_size = check_positive_int(batch_size, "batch_size")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    order = epoch_order(n, rng, shuffle)
    return (order[i : i + batch_size] for i in range(0, n, batch_size))


def epoch_order(n: int, rng: np.random.Generator, shuffle: bool = True) -> np.ndarray:
    """The rows of an epoch in the order :func:`batches` cuts them (a permutation drawn from
    ``rng`` when ``shuffle``), without its checks: for a loop that checked them once.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data.preparation import epoch_order
    >>> epoch_order(5, np.random.default_rng(0)).tolist()  # batches(5, 2, ...): [2, 4], [3, 0], [1]
    [2, 4, 3, 0, 1]
    """
    return rng.permutation(n) if shuffle else np.arange(n)


__getattr__ = renamed(
    "handgrad.data.preparation", {"Standardiser": "Standardizer"}, globals()
)  # the names of 0.1
