"""A run of ``handgrad train``: its identity (an id, its options, a hash of its data), which
its folder, checkpoint and model record; the checks before a run is resumed; and the
signals that stop it.

A folder holds one run at a time: ``run.json`` names the run that last began there, and a
checkpoint is resumed only if it is of that run, on the same data, with the same options.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import uuid
from pathlib import Path
from typing import Any

from handgrad.app.model_files import load_classifier
from handgrad.core.errors import DataError
from handgrad.core.files import atomic_write
from handgrad.data import Dataset

__all__ = [
    "RUN_FILE",
    "RUN_OPTIONS",
    "StopSignals",
    "check_data",
    "check_folder",
    "describe",
    "new_run",
    "resumed_options",
    "run_of",
    "write_run_file",
]

RUN_FILE = "run.json"
# the options of `handgrad train` that make a run what it is: kept, and compared on --resume
RUN_OPTIONS = (
    "dataset",
    "data",
    "target",
    "sep",
    "missing",
    "numeric_labels",
    "model",
    "hidden",
    "activation",
    "optimizer",
    "lr",
    "epochs",
    "batch_size",
    "schedule",
    "patience",
    "alpha",
    "test_size",
    "val_size",
    "backend",
    "device",
    "dtype",
    "seed",
    "checkpoint_every",
)
# options that --resume may change: they do not change what the run computes
_CHANGEABLE = ("checkpoint_every", "quiet", "resume", "nproc", "worker_timeout")


def data_record(dataset: Dataset) -> dict[str, Any]:
    """What a run records of its data: its name, size and SHA-256 fingerprint.

    Examples
    --------
    >>> from handgrad.cli.runs import data_record
    >>> from handgrad.data import load_dataset
    >>> record = data_record(load_dataset("iris"))
    >>> record["name"], record["rows"], record["features"], len(record["sha256"])
    ('iris', 150, 4, 64)
    """
    n, features = dataset.X.shape
    return {"name": dataset.name, "rows": n, "features": features, "sha256": dataset.fingerprint()}


def new_run(args: argparse.Namespace, dataset: Dataset) -> dict[str, Any]:
    """The identity of a run that begins now with ``args`` on ``dataset``.

    Examples
    --------
    >>> import argparse
    >>> from handgrad.cli.runs import RUN_OPTIONS, new_run
    >>> from handgrad.data import load_dataset
    >>> args = argparse.Namespace(**{**dict.fromkeys(RUN_OPTIONS), "dataset": "iris"})
    >>> run = new_run(args, load_dataset("iris"))
    >>> len(run["id"]), run["options"]["dataset"], run["data"]["rows"]
    (32, 'iris', 150)
    """
    return {
        "id": uuid.uuid4().hex,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "options": {name: getattr(args, name) for name in RUN_OPTIONS},
        "data": data_record(dataset),
    }


def describe(run: dict[str, Any]) -> str:
    """A run in a few words.

    Examples
    --------
    >>> from handgrad.cli.runs import describe
    >>> describe({"id": "1a2b3c4d5e6f", "started": "2026-01-02T03:04:05+00:00"})
    'run 1a2b3c4d (begun 2026-01-02T03:04:05+00:00)'
    """
    return f"run {str(run.get('id'))[:8]} (begun {run.get('started')})"


def write_run_file(folder: Path, run: dict[str, Any]) -> None:
    """Name ``run`` as the folder's run, in ``run.json``.

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> from handgrad.cli.runs import write_run_file
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_run_file(Path(folder), {"id": "1a2b"})
    ...     print(json.loads((Path(folder) / "run.json").read_text()))
    {'id': '1a2b'}
    """
    with atomic_write(folder / RUN_FILE, "w") as f:
        f.write(json.dumps(run, indent=2) + "\n")


def _folder_run(folder: Path) -> dict[str, Any] | None:
    """The run that ``run.json`` names, or None when there is no readable one."""
    try:
        run = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) and isinstance(run.get("id"), str) else None


def run_of(checkpoint: Any, folder: Path) -> dict[str, Any]:
    """The run a checkpoint records; one without (from handgrad before 0.3) is refused.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from handgrad.cli.runs import run_of
    >>> run_of(SimpleNamespace(config={"run": {"id": "1a2b"}}), "runs/a")
    {'id': '1a2b'}
    >>> run_of(SimpleNamespace(config={"args": {}}), "runs/a")
    Traceback (most recent call last):
        ...
    ValueError: the checkpoint in runs/a records no run identity (an older handgrad wrote it), ...
    """
    run = checkpoint.config.get("run")
    if not isinstance(run, dict) or not isinstance(run.get("id"), str):
        raise ValueError(
            f"the checkpoint in {folder} records no run identity (an older handgrad wrote it), "
            "so it cannot be checked against the folder and its data; start the run again"
        )
    return run


def check_folder(folder: Path, run: dict[str, Any]) -> None:
    """Refuse to resume ``run`` in a folder that now holds another run (by its ``run.json``,
    or without one, by its ``model.npz``): its files would be replaced by the old run's.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from handgrad.cli.runs import check_folder, write_run_file
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     write_run_file(Path(folder), {"id": "new1", "started": "today"})
    ...     check_folder(Path(folder), {"id": "new1"})  # the folder's own run: fine
    ...     try:
    ...         check_folder(Path(folder), {"id": "old2", "started": "yesterday"})
    ...     except ValueError as err:
    ...         print(str(err).partition(";")[0].partition(" is of ")[2])
    run old2 (begun yesterday), but the folder now holds run new1 (begun today)
    """
    current = _folder_run(folder)
    if current is None and (folder / "model.npz").is_file():
        current = load_classifier(folder / "model.npz").info.get("run") or {"id": "unknown"}
    if current is not None and current.get("id") != run["id"]:
        raise ValueError(
            f"the checkpoint in {folder} is of {describe(run)}, but the folder now holds "
            f"{describe(current)}; resuming would replace that run's files with the old run's, "
            f"so it is refused: start a new run, or move {folder / 'checkpoint.npz'} to a folder "
            "of its own"
        )


def check_data(run: dict[str, Any], dataset: Dataset, folder: Path) -> None:
    """Refuse to resume ``run`` on data other than it began with.

    Examples
    --------
    >>> from pathlib import Path
    >>> from handgrad.cli.runs import check_data, data_record
    >>> from handgrad.data import load_dataset
    >>> run = {"options": {"dataset": "iris"}, "data": data_record(load_dataset("iris"))}
    >>> check_data(run, load_dataset("iris"), Path("runs/a"))  # the same data: fine
    >>> try:
    ...     check_data(run, load_dataset("wine"), Path("runs/a"))
    ... except ValueError as err:
    ...     print(str(err)[:62])
    the data of the run in runs/a changed: iris now holds 178 rows
    """
    then, now = run["data"], data_record(dataset)
    if now["sha256"] != then["sha256"]:
        source = run["options"].get("data") or run["options"].get("dataset")
        raise DataError(
            f"the data of the run in {folder} changed: {source} now holds {now['rows']} rows "
            f"of {now['features']} features (sha256 {now['sha256'][:12]}), the run began on "
            f"{then['rows']} rows of {then['features']} (sha256 {then['sha256'][:12]}); "
            "resume only on the data the run began with, or start a new run"
        )


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def resumed_options(
    args: argparse.Namespace, run: dict[str, Any], folder: Path
) -> argparse.Namespace:
    """The options of ``run`` to go on with. Options given with ``--resume`` must match the
    run's, except ``--checkpoint-every``, ``--quiet``, ``--nproc`` and ``--worker-timeout`` (the
    weights do not depend on them): a run cannot change on the way.

    Examples
    --------
    >>> import argparse
    >>> from pathlib import Path
    >>> from handgrad.cli.runs import resumed_options
    >>> run = {"options": {"epochs": 30, "lr": 0.01}}
    >>> args = argparse.Namespace(epochs=30, lr=0.5, quiet=True, given={"epochs", "lr", "quiet"})
    >>> try:
    ...     resumed_options(args, run, Path("runs/a"))
    ... except ValueError as err:
    ...     print(str(err).partition("cannot change ")[2])
    --lr 0.5 (the run has 0.01); leave it out, or start a new run with another --out
    >>> args.lr = 0.01  # the run's own values may be repeated
    >>> resumed_options(args, run, Path("runs/a")).epochs
    30
    """
    saved = run["options"]
    given = getattr(args, "given", set())
    refused = []
    for name in sorted(given - set(_CHANGEABLE)):
        value = getattr(args, name)
        if name == "data" and value is not None:
            value = str(Path(value).resolve())
        if name == "out":
            if Path(value).resolve() != folder.resolve():
                refused.append(f"--out {value} (the run writes {folder})")
        elif name == "check":
            refused.append("--check (the resumed run is past its first step)")
        elif value != saved.get(name):
            refused.append(f"{_option(name)} {value} (the run has {saved.get(name)})")
    if refused:
        raise ValueError(
            f"--resume goes on with the run in {folder} as it began, so it cannot change "
            f"{', '.join(refused)}; leave {'them' if len(refused) > 1 else 'it'} out, or start "
            "a new run with another --out"
        )
    resumed = argparse.Namespace(**{**vars(args), **saved})
    resumed.out, resumed.check = str(folder), False
    if "checkpoint_every" in given:
        resumed.checkpoint_every = args.checkpoint_every
    return resumed


class StopSignals:
    """While active, the first Ctrl-C (SIGINT) or SIGTERM asks training to stop at the end
    of its step, after which the fit loop checkpoints; a second one stops at once.
    ``received`` is the signal's number (0 before any).

    Examples
    --------
    >>> import signal
    >>> from handgrad.cli.runs import StopSignals
    >>> with StopSignals() as stop:
    ...     signal.raise_signal(signal.SIGTERM)  # as `kill` would send it
    ...     print(stop(), stop.received == signal.SIGTERM)
    True True
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received = 0

    def __call__(self) -> bool:
        return bool(self.received)

    def __enter__(self) -> StopSignals:
        def handler(signum: int, frame: Any) -> None:
            if self.received:
                raise KeyboardInterrupt
            self.received = signum

        self._previous = {s: signal.signal(s, handler) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
