"""Checkpoints: everything a training run needs to go on exactly where it stopped (weights,
optimizer state, scaler, the batch generator's state, the history) in one ``.npz`` file of
plain arrays and JSON, written atomically and read without unpickling."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.archives import read_archive, write_archive
from handgrad.core.arrays import to_numpy
from handgrad.core.errors import ModelFileError
from handgrad.data import Standardizer
from handgrad.nn.containers import Sequential
from handgrad.nn.module import slots_arrays
from handgrad.nn.registry import spec_shapes
from handgrad.training.history import COLUMNS, History, Progress
from handgrad.training.optim import Optimizer

__all__ = ["Checkpoint", "load_checkpoint", "save_checkpoint"]

KIND = "handgrad-checkpoint"
_OPTIMIZER_STATE = ("velocity", "m", "v")  # SGD's and Adam's, one array per parameter


@dataclass
class Checkpoint:
    """A saved training run: how it was started (``config``), where it stood, and the
    arrays to restore.

    Examples
    --------
    >>> import tempfile
    >>> import handgrad as hg
    >>> from handgrad.training.checkpoint import load_checkpoint, save_checkpoint
    >>> from handgrad.training.optim import Adam
    >>> from handgrad.training.history import Progress
    >>> model = hg.mlp([4, 3, 2], rng=0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_checkpoint(f"{folder}/run.npz", config={"epochs": 10}, model=model,
    ...         optimizer=Adam(model.params), standardizer=None, progress=Progress(epoch=4))
    ...     checkpoint = load_checkpoint(path)
    >>> checkpoint.config, checkpoint.progress.epoch, list(checkpoint.params)
    ({'epochs': 10}, 4, ['0.weight', '0.bias', '2.weight', '2.bias'])
    """

    config: dict[str, Any]
    progress: Progress
    params: dict[str, np.ndarray]
    optimizer_state: dict[str, Any]
    standardizer: Standardizer | None


def save_checkpoint(
    path: str | os.PathLike,
    *,
    config: dict[str, Any],
    model: Sequential,
    optimizer: Optimizer,
    standardizer: Standardizer | None,
    progress: Progress,
) -> Path:
    """Write a checkpoint of a run to ``path``, atomically.

    Examples
    --------
    >>> import tempfile
    >>> import handgrad as hg
    >>> from handgrad.training.checkpoint import load_checkpoint, save_checkpoint
    >>> from handgrad.training.optim import Adam
    >>> from handgrad.training.history import Progress
    >>> model = hg.mlp([4, 3, 2], rng=0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_checkpoint(f"{folder}/run.npz", config={"epochs": 10}, model=model,
    ...         optimizer=Adam(model.params), standardizer=None, progress=Progress(epoch=4))
    ...     print(path.name, path.is_file())
    run.npz True
    """
    arrays = {
        f"{prefix}{k}": np.array(to_numpy(v))
        for store, prefix in (("params", "param/"), ("buffers", "buffer/"))
        for k, v in slots_arrays(model, store).items()
    }
    state = optimizer.state_dict()
    arrays.update({f"optim/{k}": v for k, v in state.items() if k != "step"})
    for k, v in (progress.best_state or {}).items():
        arrays[f"best/{k}"] = np.array(to_numpy(v))
    if standardizer is not None:
        arrays.update(standardizer.to_arrays("scaler/"))
    history = progress.history
    meta = {
        "format": KIND,
        "version": 1,
        "architecture": model.config()["layers"],
        "config": config,
        "optimizer": {"kind": type(optimizer).__name__, "step": state["step"]},
        "progress": {
            "epoch": progress.epoch,
            "step": progress.step,
            "position": progress.position,
            "totals": list(progress.totals),
            "rng_state": progress.rng_state,
            "best_loss": None if math.isinf(progress.best_loss) else progress.best_loss,
            "waited": progress.waited,
            "history": {name: list(getattr(history, name)) for name in COLUMNS},
            "best_epoch": history.best_epoch,
            "stopped_early": history.stopped_early,
        },
    }
    return write_archive(path, arrays, meta)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Examples
    --------
    >>> import tempfile
    >>> import handgrad as hg
    >>> from handgrad.training.checkpoint import load_checkpoint, save_checkpoint
    >>> from handgrad.training.optim import Adam
    >>> from handgrad.training.history import Progress
    >>> model = hg.mlp([4, 3, 2], rng=0)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_checkpoint(f"{folder}/run.npz", config={"epochs": 10}, model=model,
    ...         optimizer=Adam(model.params), standardizer=None, progress=Progress(epoch=4))
    ...     checkpoint = load_checkpoint(path)
    >>> bool((checkpoint.params["0.weight"] == model.params["0.weight"]).all())  # as saved
    True
    """
    meta, arrays = read_archive(path, KIND, "checkpoint", limits=_limits)
    try:
        saved = meta["progress"]
        history = History(**{name: list(saved["history"][name]) for name in COLUMNS})
        history.best_epoch = saved["best_epoch"]
        history.stopped_early = bool(saved["stopped_early"])
        best = {k.removeprefix("best/"): v for k, v in arrays.items() if k.startswith("best/")}
        progress = Progress(
            history=history,
            epoch=int(saved["epoch"]),
            step=int(saved["step"]),
            position=int(saved["position"]),
            totals=(float(saved["totals"][0]), int(saved["totals"][1])),
            rng_state=saved["rng_state"],
            best_loss=math.inf if saved["best_loss"] is None else float(saved["best_loss"]),
            best_state=best or None,
            waited=int(saved["waited"]),
        )
        state = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
        state["step"] = int(meta["optimizer"]["step"])
        standardizer = Standardizer.from_archive(arrays, "scaler/")
        return Checkpoint(
            config=dict(meta["config"]),
            progress=progress,
            params={
                k.partition("/")[2]: v
                for k, v in arrays.items()
                if k.startswith(("param/", "buffer/"))
            },
            optimizer_state=state,
            standardizer=standardizer,
        )
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ModelFileError(f"{str(path)!r} is not a consistent checkpoint: {err}") from None


def _limits(meta: Mapping[str, Any]) -> dict[str, int]:
    """The most elements each array of a checkpoint may hold, from its metadata alone."""
    spec = meta["architecture"]
    if not isinstance(spec, list) or not all(isinstance(e, dict) for e in spec):
        raise ValueError("the architecture is not a list of layers")
    shapes = spec_shapes({"type": "Sequential", "layers": spec}, "the architecture")
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    prefixes = ("param/", "buffer/", "best/", *(f"optim/{kind}/" for kind in _OPTIMIZER_STATE))
    limits = {prefix + name: size for prefix in prefixes for name, size in sizes.items()}
    widest = max(sizes.values(), default=0)  # a scaler is no wider than the first weight
    return {**limits, "scaler/mean": widest, "scaler/scale": widest}
