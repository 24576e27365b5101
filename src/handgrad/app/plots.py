"""Training curves as a PNG: loss and accuracy per epoch, train beside validation."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from handgrad.core.files import atomic_write

__all__ = ["plot_curves", "plot_loss_by_step"]

_PANELS = (("loss", "Loss"), ("accuracy", "Accuracy"))
_SPLITS = (("train", "train", "-"), ("val", "validation", "--"))


def plot_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike,
    *,
    title: str = "Training curves",
) -> Path:
    """Draw loss and accuracy per epoch and write them to ``path`` as a PNG, atomically.

    Parameters
    ----------
    history : mapping of str to sequence of float
        ``"epoch"`` and any of ``"train_loss"``, ``"val_loss"``, ``"train_accuracy"``,
        ``"val_accuracy"``, all of one length; a missing or empty series is skipped, and a
        panel with no series is left out. The epoch of lowest ``val_loss`` is marked.
    path : str or os.PathLike
        Where to write the PNG; its folder must exist. An existing file is replaced only
        once the new one is complete.
    title : str
        The figure's title.

    Returns
    -------
    Path
        ``path``.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.app.plots import plot_curves
    >>> history = {"epoch": [1, 2, 3], "train_loss": [0.9, 0.5, 0.4], "val_loss": [1.0, 0.6, 0.7]}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = plot_curves(history, Path(folder) / "curves.png")  # one panel: loss
    ...     print(path.name, path.read_bytes()[1:4] == b"PNG")
    curves.png True
    """
    epochs, series = _check(history)
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError("plot_curves needs matplotlib: pip install 'handgrad[plots]'") from err

    panels = [(m, label) for m, label in _PANELS if any(k.endswith(m) for k in series)]
    fig = Figure(figsize=(5.5 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(fig)  # a canvas of its own: no pyplot, no global state
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    best = _best_epoch(epochs, series.get("val_loss"))
    marker = "o" if len(epochs) <= 25 else None
    for ax, (metric, label) in zip(axes, panels, strict=True):
        for split, split_label, style in _SPLITS:
            if f"{split}_{metric}" in series:
                y = series[f"{split}_{metric}"]
                ax.plot(epochs, y, style, marker=marker, markersize=3, label=split_label)
        if best is not None:
            ax.axvline(best, color="grey", linestyle=":", label=f"best epoch {best:g}")
        ax.set(xlabel="epoch", ylabel=label.lower(), title=f"{label} per epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # otherwise the axis spans ±0.05 with fractional ticks
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best")
    fig.suptitle(title)
    with atomic_write(target, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    return target


def _check(history: Any) -> tuple[list[float], dict[str, list[float]]]:
    if not isinstance(history, Mapping) or not history:
        raise ValueError(f"history must be a non-empty mapping of str to lists, got {history!r}")
    if len(history.get("epoch", ())) == 0:
        raise ValueError(f"history needs a non-empty 'epoch' list, got keys {sorted(history)}")
    epochs = [float(e) for e in history["epoch"]]
    names = [f"{s}_{m}" for m, _ in _PANELS for s, _, _ in _SPLITS]
    series = {k: [float(v) for v in history[k]] for k in names if len(history.get(k, ()))}
    if not series:
        raise ValueError(f"history has nothing to plot: it needs one of {names} beside 'epoch'")
    for key, values in series.items():
        if len(values) != len(epochs):
            raise ValueError(
                f"history[{key!r}] has {len(values)} values but history['epoch'] has "
                f"{len(epochs)}; every list needs one value per epoch"
            )
    return epochs, series


def _best_epoch(epochs: list[float], val_loss: list[float] | None) -> float | None:
    if val_loss is None:
        return None
    finite = [(loss, e) for e, loss in zip(epochs, val_loss, strict=True) if math.isfinite(loss)]
    return min(finite)[1] if finite else None


def plot_loss_by_step(
    train_loss: Sequence[float],
    val_steps: Sequence[int],
    val_loss: Sequence[float],
    path: str | os.PathLike,
    *,
    baseline: float | None = None,
    title: str = "Training loss",
) -> Path:
    """Draw the training loss of every step (faint, with its running mean over 20 steps),
    the validation loss at its steps and a ``baseline`` level, and write them to ``path``
    as a PNG, atomically.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.app.plots import plot_loss_by_step
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = plot_loss_by_step([3.0, 2.5, 2.2, 2.0], [2, 4], [2.6, 2.1],
    ...         Path(folder) / "loss.png", baseline=3.1)
    ...     print(path.name, path.read_bytes()[1:4] == b"PNG")
    loss.png True
    """
    train = [float(v) for v in train_loss]
    if not train:
        raise ValueError("train_loss must hold the loss of at least one step, got none")
    if len(val_steps) != len(val_loss):
        raise ValueError(
            f"val_steps has {len(val_steps)} values but val_loss has {len(val_loss)}; give one "
            "step per validation loss"
        )
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: folder {target.parent} does not exist")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            "plot_loss_by_step needs matplotlib: pip install 'handgrad[plots]'"
        ) from err

    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps = range(1, len(train) + 1)
    ax.plot(steps, train, color="tab:blue", alpha=0.25, linewidth=0.8)
    window = min(20, len(train))
    running = [
        sum(train[max(0, i - window + 1) : i + 1]) / min(i + 1, window) for i in range(len(train))
    ]
    ax.plot(steps, running, color="tab:blue", label=f"train (mean of {window} steps)")
    if val_steps:
        ax.plot(
            list(val_steps),
            [float(v) for v in val_loss],
            "o-",
            color="tab:orange",
            label="validation",
        )
    if baseline is not None:
        ax.axhline(baseline, color="grey", linestyle=":", label=f"unigram baseline {baseline:.3f}")
    ax.set(xlabel="step", ylabel="cross-entropy (nats per token)", title=title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    with atomic_write(target, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    return target
