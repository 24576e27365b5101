"""What a training run records: ``History``, a row per epoch, and ``Progress``, where a run
stands (enough to go on exactly as if it had never stopped)."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handgrad.core.files import atomic_write
from handgrad.gradcheck.check import GradientCheckReport

__all__ = ["COLUMNS", "History", "Progress"]


COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class History:
    """What happened in each epoch, and how training ended.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> history = fit(model, hg.CrossEntropyLoss(), SGD(model.params, lr=0.5), X, y, epochs=3)
    >>> history.epoch, [round(loss, 4) for loss in history.train_loss], history.val_loss
    ([1, 2, 3], [0.6231, 0.505, 0.4237], [])
    """

    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    gradient_check: GradientCheckReport | None = None

    def as_dict(self) -> dict[str, list[float]]:
        """The per-epoch columns; validation columns are empty without validation data."""
        return {name: list(getattr(self, name)) for name in COLUMNS}

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write one row per epoch to ``path``, atomically."""
        columns = [c for c, values in self.as_dict().items() if values]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for row in zip(*(getattr(self, c) for c in columns), strict=True):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
        with atomic_write(path, "w") as f:
            f.write(text.getvalue())
        return Path(path)


@dataclass
class Progress:
    """Where a run of :func:`fit` stands: enough, with the model's weights and the
    optimizer's state, to go on exactly as if it had never stopped.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> seen = []  # fit hands its Progress to checkpoint() every checkpoint_every epochs
    >>> history = fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=3,
    ...               checkpoint=lambda p: seen.append((p.epoch, p.step)), checkpoint_every=1)
    >>> seen
    [(1, 1), (2, 2), (3, 3)]
    """

    history: History = field(default_factory=History)
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed
    position: int = 0  # batches completed in the epoch under way
    totals: tuple[float, int] = (0.0, 0)  # its loss sum and rows classified right so far
    rng_state: dict[str, Any] | None = None  # the batch order's generator as that epoch began
    best_loss: float = math.inf
    best_state: dict[str, Any] | None = None
    waited: int = 0
