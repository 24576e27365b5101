"""Classification metrics for a model's predictions: accuracy, per-class precision, recall,
F1 and support, and the confusion matrix, computed by scikit-learn."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.tables import format_table

__all__ = ["ClassificationMetrics", "classification_metrics"]


@dataclass(frozen=True)
class ClassificationMetrics:
    """Scores of predicted class indices against the true ones; per-class tuples are in class
    index order, and ``confusion[i][j]`` counts examples of true class i predicted as j.

    Examples
    --------
    >>> from handgrad.app.metrics import classification_metrics
    >>> metrics = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["cat", "dog"])
    >>> metrics.accuracy, metrics.recall, metrics.confusion
    (0.75, (0.5, 1.0), ((1, 1), (0, 2)))
    >>> print(str(metrics).splitlines()[0])  # then a table per class and the confusion matrix
    accuracy 0.7500 on 4 examples
    """

    accuracy: float
    class_names: tuple[str, ...]
    precision: tuple[float, ...]
    recall: tuple[float, ...]
    f1: tuple[float, ...]
    support: tuple[int, ...]
    confusion: tuple[tuple[int, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain lists, floats and ints, ready for ``json.dump``."""
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}
        return {**fields, "confusion": [list(row) for row in self.confusion]}

    def __str__(self) -> str:
        n = sum(self.support)
        scores = zip(
            self.class_names, self.precision, self.recall, self.f1, self.support, strict=True
        )
        rows = [[name, *(f"{s:.4f}" for s in (p, r, f)), str(k)] for name, p, r, f, k in scores]
        macro = [float(np.mean(s)) for s in (self.precision, self.recall, self.f1)]
        rows.append(["macro avg", *(f"{s:.4f}" for s in macro), str(n)])
        per_class = format_table(["class", "precision", "recall", "f1", "support"], rows)
        confusion = format_table(
            ["true \\ predicted", *self.class_names],
            [
                [name, *map(str, row)]
                for name, row in zip(self.class_names, self.confusion, strict=True)
            ],
        )
        return f"accuracy {self.accuracy:.4f} on {n} examples\n\n{per_class}\n\n{confusion}"


def classification_metrics(
    y_true: Any, y_pred: Any, class_names: Sequence[str]
) -> ClassificationMetrics:
    """Score predicted class indices ``y_pred`` against true ones ``y_true``.

    Parameters
    ----------
    y_true, y_pred : array-like of int, shape (n,)
        Class indices in ``0 .. len(class_names) - 1``, e.g. ``logits.argmax(axis=1)``.
    class_names : sequence of str
        One name per class, in index order. Every class gets a row, even one absent from
        ``y_true`` or ``y_pred``; a score whose denominator is zero is reported as 0.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.metrics import classification_metrics
    >>> y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    >>> metrics = classification_metrics(y_true, y_pred, ["cat", "dog", "fox"])  # no fox at all
    >>> metrics.accuracy, [round(p, 4) for p in metrics.precision], metrics.support
    (0.75, [1.0, 0.6667, 0.0], (2, 2, 0))
    """
    try:
        from sklearn.metrics import (
            accuracy_score,
            confusion_matrix,
            precision_recall_fscore_support,
        )
    except ImportError as err:
        raise ImportError(
            "classification_metrics needs scikit-learn: pip install 'handgrad[sklearn]'"
        ) from err
    if isinstance(class_names, str) or len(class_names) == 0:
        raise ValueError(f"class_names must be a non-empty list of names, got {class_names!r}")
    names = tuple(str(name) for name in class_names)
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct, got {list(names)}")
    y_true, y_pred = _indices(y_true, "y_true", len(names)), _indices(y_pred, "y_pred", len(names))
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}"
        )
    labels = list(range(len(names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return ClassificationMetrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        class_names=names,
        precision=tuple(map(float, precision)),
        recall=tuple(map(float, recall)),
        f1=tuple(map(float, f1)),
        support=tuple(map(int, support)),
        confusion=tuple(
            tuple(map(int, row)) for row in confusion_matrix(y_true, y_pred, labels=labels)
        ),
    )


def _indices(y: Any, name: str, n_classes: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices, got shape {y.shape}")
    if y.size == 0:
        raise ValueError(f"{name} is empty; metrics need at least one example")
    if y.dtype == bool or not np.issubdtype(y.dtype, np.integer):
        raise TypeError(
            f"{name} must hold integer class indices, got dtype {y.dtype}; "
            "use e.g. logits.argmax(axis=1) or y.astype(int)"
        )
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {int(y[i])} is not a class index: with {n_classes} class names "
            f"indices must be in 0..{n_classes - 1} ({bad.size} out of range in all)"
        )
    return y
