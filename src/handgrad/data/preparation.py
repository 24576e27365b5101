"""Preparing data for training: a stratified train/validation/test split, standardisation
and mini-batches."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from handgrad.core.errors import DataError
from handgrad.core.validation import check_array, check_positive_int
from handgrad.data.loading import sklearn_module

__all__ = ["Split", "Standardiser", "batches", "split"]

DATASETS = ("breast_cancer", "digits", "iris", "wine")
_MISSING = frozenset({"", "na", "n/a", "nan"})  # compared in lower case

Rows = list[tuple[int, list[str]]]  # (spreadsheet row number, stripped cells)


@dataclass(frozen=True, eq=False)
class Split:
    """Train, validation and test parts of a data set (validation may be empty).

    Examples
    --------
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("wine")
    >>> parts = split(data.X, data.y, val_size=0, seed=0)  # no validation part
    >>> parts.X_train.shape, parts.X_val.shape, parts.X_test.shape, parts.y_test.shape
    ((133, 13), (0, 13), (45, 13), (45,))
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    test_size: float = 0.25,
    val_size: float = 0.1,
    seed: int | None = None,
) -> Split:
    """Split stratified into train, validation and test parts.

    ``test_size`` of the whole is held out first, then ``val_size`` of the whole is taken
    from the rest; ``val_size=0`` gives empty validation arrays. The same ``seed`` gives
    the same split.

    Examples
    --------
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("iris")
    >>> parts = split(data.X, data.y, test_size=0.2, val_size=0.1, seed=0)
    >>> len(parts.y_train), len(parts.y_val), len(parts.y_test)
    (105, 15, 30)
    """
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
    classes, counts = np.unique(y, return_counts=True)
    needed = 3 if val_size > 0 else 2  # one for each part
    if counts.min() < needed:
        raise DataError(
            f"class {classes[counts.argmin()]} has only {counts.min()} sample(s), but a stratified "
            f"split needs {needed} of each class; add samples of that class or drop it"
        )
    rng = np.random.RandomState(seed)  # sklearn draws from it in turn: one seed, both splits
    X_rest, X_test, y_rest, y_test = _stratified(X, y, math.ceil(test_size * len(y)), rng)
    if val_size == 0:
        return Split(X_rest, y_rest, X[:0], y[:0], X_test, y_test)
    X_train, X_val, y_train, y_val = _stratified(X_rest, y_rest, math.ceil(val_size * len(y)), rng)
    return Split(X_train, y_train, X_val, y_val, X_test, y_test)


def _stratified(X: np.ndarray, y: np.ndarray, n_out: int, rng: np.random.RandomState) -> list:
    try:
        return sklearn_module("model_selection").train_test_split(
            X, y, test_size=n_out, stratify=y, random_state=rng
        )
    except ValueError as err:
        raise DataError(
            f"cannot split {len(y)} samples stratified ({err}); change test_size or val_size"
        ) from None


class Standardiser:
    """Standardise features, ``z = (X - mean_) / scale_``, with statistics from training data.

    Columns with no spread get ``scale_ = 1``, as in scikit-learn's ``StandardScaler``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.data import Standardiser
    >>> scaler = Standardiser().fit(np.array([[1.0, 5.0], [3.0, 5.0]]))
    >>> print(scaler.transform(np.array([[2.0, 5.0], [5.0, 6.0]])))
    [[0. 0.]
     [3. 1.]]
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Standardiser:
        """Fit ``mean_`` and ``scale_`` to ``X`` of shape (n, features) with StandardScaler."""
        X = np.asarray(X, dtype=np.float64)
        check_array(X, "X", ndim=2, layout="(samples, features)")
        scaler = sklearn_module("preprocessing").StandardScaler().fit(X)
        self.mean_ = np.asarray(scaler.mean_, dtype=np.float64)
        self.scale_ = np.asarray(scaler.scale_, dtype=np.float64)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Return ``(X - mean_) / scale_`` as float64 (NumPy only)."""
        if self.mean_ is None or self.scale_ is None:
            raise RuntimeError(
                "this Standardiser is not fitted; call fit(X_train) or Standardiser.from_arrays"
            )
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.mean_.size:
            raise ValueError(
                f"X has shape {X.shape}, but the Standardiser was fitted on "
                f"{self.mean_.size} features; give X of shape (n, {self.mean_.size})"
            )
        return (X - self.mean_) / self.scale_

    @classmethod
    def from_arrays(cls, mean: np.ndarray, scale: np.ndarray) -> Standardiser:
        """Rebuild a fitted Standardiser from saved ``mean_`` and ``scale_`` arrays."""
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
        standardiser = cls()
        standardiser.mean_, standardiser.scale_ = mean, scale
        return standardiser

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """``{prefix + "mean": mean_, prefix + "scale": scale_}``, for an archive."""
        return {f"{prefix}mean": self.mean_, f"{prefix}scale": self.scale_}

    @classmethod
    def from_archive(cls, arrays: dict[str, np.ndarray], prefix: str) -> Standardiser | None:
        """The Standardiser that :meth:`to_arrays` wrote into ``arrays``, or None."""
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
    order = rng.permutation(n) if shuffle else np.arange(n)
    return (order[i : i + batch_size] for i in range(0, n, batch_size))
