"""What each ``handgrad`` command does, given its parsed arguments (see :mod:`handgrad.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
import itertools
import json
import os
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.app.metrics import classification_metrics
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.app.seed_network import SimpleNN
from handgrad.app.trainer import TrainConfig, default_lr, describe_model, train_classifier
from handgrad.cli import runs
from handgrad.cli.torch_check import check_torch
from handgrad.core.arrays import convert, get_namespace
from handgrad.core.errors import DataError, TrainingDivergedError, TrainingInterruptedError
from handgrad.core.files import (
    atomic_write,
    format_size,
    locked_folder,
    remove_stale_temporaries,
)
from handgrad.data import (
    Dataset,
    Standardizer,
    load_csv,
    load_dataset,
    load_features,
    split,
)
from handgrad.gradcheck.check import METHODS, GradientCheckError, check_gradients, check_layer
from handgrad.models.mlp import mlp
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["check", "evaluate", "predict", "train"]


def _load(args: argparse.Namespace) -> Dataset:
    if args.data is not None:
        if args.target is None:
            raise ValueError("--data needs --target COL, the column that holds the classes")
        return load_csv(
            args.data,
            args.target,
            sep=args.sep,
            missing=args.missing,
            numeric_labels=args.numeric_labels,
        )
    if args.target is not None:
        raise ValueError("--target goes with --data FILE.csv; the bundled data sets know theirs")
    for name in ("sep", "missing", "numeric_labels"):
        if getattr(args, name):
            raise ValueError(f"--{name.replace('_', '-')} goes with --data FILE.csv")
    return load_dataset(args.dataset)


_ITEM_BYTES = {"float64": 8, "float32": 4, "float16": 2}
_OPTIMIZER_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}  # arrays of state per parameter


def _check_memory(sizes: list[int], args: argparse.Namespace) -> None:
    """Refuse, before anything is allocated, a model whose training needs more memory than
    the machine has (where the machine says how much)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): MemoryError tells
        return
    weights = sum((a + 1) * b for a, b in itertools.pairwise(sizes))
    copies = 4 + _OPTIMIZER_COPIES[args.optimizer]  # + gradients, best and checkpointed ones
    needed = weights * copies * _ITEM_BYTES[args.dtype]
    if needed > memory:
        raise MemoryError(
            f"the model {'-'.join(map(str, sizes))} has {weights:.3g} weights, whose training "
            f"needs about {format_size(needed)} (weights, gradients and optimizer state), more "
            f"than this machine's {format_size(memory)}; use smaller --hidden widths"
        )


def _check_inputs(classifier: Any, X: np.ndarray, path: str) -> None:
    """Refuse rows whose standardised features overflow float64 (the model would be given
    infinities)."""
    if classifier.standardizer is None:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        bad = ~np.isfinite(classifier.standardizer.transform(X))
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        raise DataError(
            f"data row {i + 1}, column {classifier.feature_names[j]!r} of {path} holds "
            f"{X[i, j]:g}, too large for this model: standardised it overflows float64"
        )


def train(args: argparse.Namespace, workers: Any = None) -> int:
    """Train, report test metrics, and write model.npz, history.csv, curves.png and
    run.json; with --checkpoint-every (and on Ctrl-C or SIGTERM) checkpoint.npz too. As one
    of several ``workers`` (a :class:`~handgrad.training.distributed.WorkerGroup`), only
    worker 0 holds the folder and writes."""
    started = time.perf_counter()
    if args.resume is not None:
        return _resume(args, started, workers)
    if args.test_size + args.val_size >= 1 or args.test_size == 0:
        raise ValueError(
            f"--test-size ({args.test_size}) must be > 0 and with --val-size "
            f"({args.val_size}) leave some data to train on"
        )
    if args.patience is not None and args.val_size == 0:
        raise ValueError("--patience watches the validation loss, so it needs --val-size > 0")
    if args.data is not None:
        args.data = str(Path(args.data).resolve())
    else:
        args.dataset = args.dataset or "breast_cancer"
    if args.model == "cnn" and (args.hidden or args.activation != TrainConfig.activation):
        raise ValueError("--hidden and --activation shape the mlp; --model cnn has its own layers")
    args.hidden = list(args.hidden or (20,))
    args.lr = default_lr(args.optimizer, args.model) if args.lr is None else args.lr
    dataset = _load(args)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
        if workers is not None:  # every worker takes worker 0's
            args.seed = workers.broadcast(args.seed)
        print(f"seed {args.seed} (drawn at random; pass --seed {args.seed} to repeat this run)")
    run = runs.new_run(args, dataset)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if workers is not None and workers.rank != 0:  # worker 0 holds the folder and writes
        return _run(args, dataset, run, None, started, workers)
    with locked_folder(out, _lock_note(run)) as previous:
        _took_over(out, previous)
        remove_stale_temporaries(out)
        runs.write_run_file(out, run)
        return _run(args, dataset, run, None, started, workers)


def _lock_note(run: dict[str, Any]) -> dict[str, Any]:
    return {"run": run["id"][:8], "started": run["started"], "command": "handgrad train"}


def _took_over(out: Path, previous: dict[str, Any]) -> None:
    if previous:
        print(
            f"{out} was locked by run {previous.get('run')} (pid {previous.get('pid')}), which "
            "ended without releasing it; taking it over"
        )


def _resume(args: argparse.Namespace, started: float, workers: Any = None) -> int:
    """Go on with the run in ``--resume DIR``, if it is the folder's run, on its data."""
    folder = Path(args.resume)
    if not folder.is_dir():
        raise ValueError(f"--resume {folder}: there is no such folder")
    checkpoint = load_checkpoint(folder / "checkpoint.npz")
    run = runs.run_of(checkpoint, folder)
    args = runs.resumed_options(args, run, folder)
    if workers is not None and workers.rank != 0:  # worker 0 holds the folder and writes
        dataset = _load(args)
        runs.check_data(run, dataset, folder)
        return _run(args, dataset, run, checkpoint, started, workers)
    with locked_folder(folder, _lock_note(run)) as previous:
        _took_over(folder, previous)
        remove_stale_temporaries(folder)
        runs.check_folder(folder, run)
        dataset = _load(args)
        runs.check_data(run, dataset, folder)
        runs.write_run_file(folder, run)
        print(
            f"resuming the run in {folder} after epoch {checkpoint.progress.epoch}, "
            f"step {checkpoint.progress.step}"
        )
        return _run(args, dataset, run, checkpoint, started, workers)


def _run(
    args: argparse.Namespace,
    dataset: Dataset,
    run: dict[str, Any],
    resume: Any,
    started: float,
    workers: Any = None,
) -> int:
    """Train on ``dataset`` in the locked folder ``args.out`` and write what the run made."""
    lead = workers is None or workers.rank == 0
    config = TrainConfig(
        model=args.model,
        hidden=tuple(args.hidden),
        activation=args.activation,
        optimizer=args.optimizer,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        schedule=args.schedule,
        patience=args.patience,
        alpha=args.alpha,
        backend=args.backend,
        dtype=args.dtype,
        device=args.device if args.backend == "torch" else None,
        seed=args.seed,
        check=args.check,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    parts = split(
        dataset.X,
        dataset.y,
        test_size=args.test_size,
        val_size=args.val_size,
        rng=args.seed,
        class_names=dataset.class_names,
    )
    if args.model == "mlp":
        _check_memory([dataset.X.shape[1], *config.hidden, len(dataset.class_names)], args)
    network = describe_model(config, dataset.X.shape[1], len(dataset.class_names))
    Standardizer().fit(parts.X_train, dataset.feature_names)  # names a column that overflows
    print(
        f"{dataset.name}: {dataset.X.shape[0]} examples, {dataset.X.shape[1]} features, "
        f"{len(dataset.class_names)} classes; train {parts.y_train.shape[0]}, validation "
        f"{parts.y_val.shape[0]}, test {parts.y_test.shape[0]} (seed {args.seed})"
    )
    if parts.note:
        off = "; --patience is off without one" if args.patience and not len(parts.y_val) else ""
        print(f"small data: {parts.note}{off}")
    print(
        f"model {network}, {args.optimizer}, "
        f"batch {args.batch_size}, up to {args.epochs} epochs, backend {args.backend} "
        f"{args.dtype}"
    )
    out = Path(args.out)

    def save(model: Any, optimizer: Any, scaler: Any, progress: Any) -> None:
        save_checkpoint(
            out / "checkpoint.npz",
            config={"run": run},
            model=model,
            optimizer=optimizer,
            standardizer=scaler,
            progress=progress,
        )

    stop = runs.StopSignals()
    try:  # a loss that stops being finite is reported once, by fit, not by NumPy's warnings
        with stop, np.errstate(over="ignore", invalid="ignore"):
            classifier, history = train_classifier(
                parts.X_train,
                parts.y_train,
                dataset.class_names,
                config=config,
                validation=(parts.X_val, parts.y_val),
                feature_names=dataset.feature_names,
                target_name=dataset.target_name,
                resume=resume,
                checkpoint=save if lead else None,
                checkpoint_every=args.checkpoint_every,
                interrupted=stop,
                parallel=workers,
            )
    except TrainingInterruptedError as err:
        if not lead:
            return 128 + stop.received
        by = " by SIGTERM" if stop.received == signal.SIGTERM else ""
        print(
            f"handgrad train: {err}{by}; checkpoint saved to {out / 'checkpoint.npz'}; "
            f"go on with: handgrad train --resume {out}",
            file=sys.stderr,
        )
        return 128 + stop.received
    except KeyboardInterrupt:  # a second signal: stopped at once
        if stop.received != signal.SIGTERM:
            raise
        print("handgrad train: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except TrainingDivergedError as err:
        kept = " (the last checkpoint is kept)" if (out / "checkpoint.npz").exists() else ""
        raise TrainingDivergedError(f"{err}{kept}", epoch=err.epoch, step=err.step) from None
    if not lead:
        return 0  # worker 0 reports and writes
    classifier.info.update(dataset=dataset.name, run=run)
    if args.numeric_labels:
        classifier.info["numeric_labels"] = True
    if args.missing is not None:  # evaluate reads labels as training did
        classifier.info["missing"] = args.missing
    if history.gradient_check is not None:
        print(f"\n{history.gradient_check}\n")
    metrics = classification_metrics(
        parts.y_test, classifier.predict(parts.X_test), dataset.class_names
    )
    ended = "stopped early after" if history.stopped_early else "trained for"
    best = f", lowest validation loss at epoch {history.best_epoch}" if history.best_epoch else ""
    print(
        f"{ended} {len(history.epoch)} epochs{best}; "
        f"final training loss {history.train_loss[-1]:.4f}\n"
    )
    print(f"test set: {metrics}\n")
    written = [save_classifier(out / "model.npz", classifier), history.to_csv(out / "history.csv")]
    if importlib.util.find_spec("matplotlib") is not None:
        from handgrad.app.plots import plot_curves

        title = f"{dataset.name}: {network}, {args.optimizer}"
        written.append(plot_curves(history.as_dict(), out / "curves.png", title=title))
    else:
        print("matplotlib is not installed, so no curves.png: pip install 'handgrad[plots]'")
    print("wrote " + ", ".join(map(str, written)))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def predict(args: argparse.Namespace) -> int:
    """Write the predicted class and the class probabilities of each row as CSV."""
    classifier = load_classifier(args.model)
    X, _ = load_features(args.csv, classifier.feature_names, sep=args.sep)
    _check_inputs(classifier, X, args.csv)
    probabilities = classifier.predict_proba(X)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["prediction", *(f"p_{name}" for name in classifier.class_names)])
    for row in probabilities:
        writer.writerow([classifier.class_names[int(np.argmax(row))], *(f"{p:.6g}" for p in row)])
    if args.output is None:
        sys.stdout.write(text.getvalue())
    else:
        with atomic_write(args.output, "w") as f:
            f.write(text.getvalue())
        print(f"wrote {probabilities.shape[0]} predictions to {args.output}", file=sys.stderr)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    """Print a saved model's metrics on a labelled CSV file."""
    classifier = load_classifier(args.model)
    X, y = load_features(
        args.csv,
        classifier.feature_names,
        target=args.target or classifier.target_name,
        class_names=classifier.class_names,
        sep=args.sep,
        missing=classifier.info.get("missing") if args.missing is None else args.missing,
        numeric_labels=bool(classifier.info.get("numeric_labels")),
    )
    _check_inputs(classifier, X, args.csv)
    metrics = classification_metrics(y, classifier.predict(X), classifier.class_names)
    print(metrics)
    return 0


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Two independent generators from one seed: the data's and the check's (the upstream
    gradient, samples, directions), so that the upstream gradient is never the input."""
    data, check = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(data), np.random.default_rng(check)


def _check_options(args: argparse.Namespace, rng: np.random.Generator) -> dict:
    return {
        "eps": args.eps,
        "threshold": args.threshold,
        "mode": args.mode,
        "method": args.method,
        "samples": args.samples,
        "directions": args.directions,
        "stencil": args.stencil,
        "rng": rng,
        "raise_on_failure": False,
    }


def _import_layer(spec: str) -> Any:
    """The layer named ``module:attribute``: a class or factory called with no arguments,
    or a layer object."""
    made = _import_attribute(spec, "LAYER")
    if isinstance(made, type) or (callable(made) and not hasattr(made, "forward")):
        made = made()
    return made


def _import_attribute(spec: str, what: str) -> Any:
    """The object named ``module:attribute``, the current folder importable."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{what} must look like module:Class, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any error while importing the user's code
        raise ImportError(f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    if not hasattr(module, attribute):
        raise ValueError(f"module {module_name!r} has no {attribute!r}")
    return getattr(module, attribute)


def _check_own_layer(args: argparse.Namespace) -> int:
    layer = _import_layer(args.layer)
    if args.input_shape and len(args.input_shape) > 1:
        raise ValueError("a LAYER takes one --input-shape; several go with --torch")
    if args.method not in METHODS:
        raise ValueError(
            f"--method {args.method} goes with --torch; a LAYER takes {', '.join(METHODS)}"
        )
    shape = args.input_shape[0] if args.input_shape else (8, 10)
    data, check = _streams(args.seed)
    x = data.standard_normal(shape)
    report = check_layer(layer, x, **_check_options(args, check))
    if args.plot:
        report.plot(args.plot)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": report.passed,
                    "layer": args.layer,
                    "input_shape": list(shape),
                    "report": report.to_dict(),
                },
                indent=2,
            )
        )
    else:
        print(f"== {args.layer} ({type(layer).__name__}) on a random input of shape {shape} ==")
        print(report)
        if not report.passed:
            print(f"\nFAILED: {report.failures[0].describe()}")
    return 0 if report.passed else 1


def _check_seed_network(args: argparse.Namespace) -> bool:
    print("== The seed notebook's SimpleNN(10, 20, 3): x = arange(10), label = [0, 0, 1] ==")
    net = SimpleNN(10, 20, 3, backend=args.backend, rng=args.seed)
    x = np.arange(10, dtype=np.float64).reshape(10, 1)
    label = np.array([0, 0, 1.0]).reshape(3, 1)
    try:
        net.gradient_check(x, label, epsilon=args.eps, threshold=args.threshold)
    except GradientCheckError as err:
        print(f"FAILED: {err}")
        return False
    return True


def _check_mlp(args: argparse.Namespace) -> dict:
    sizes = [args.inputs, *(args.hidden or [20]), args.classes]
    print(
        f"\n== MLP {'-'.join(map(str, sizes))} ({args.activation}) + CrossEntropyLoss, "
        f"random batch of {args.batch_size}, backend {args.backend} =="
    )
    rng, check = _streams(args.seed)
    model = mlp(sizes, args.activation, rng=rng, backend=args.backend)
    xp = get_namespace(args.backend)
    x = convert(rng.standard_normal((args.batch_size, args.inputs)), xp)
    y = convert(rng.integers(0, args.classes, size=args.batch_size), xp)
    loss = CrossEntropyLoss()
    report = check_gradients(model, loss, x, y, **_check_options(args, check))
    print(report)
    if args.plot:
        report.plot(args.plot)
    result = {"passed": report.passed, "model": report.to_dict(), "autograd": None}
    if importlib.util.find_spec("torch") is None:
        print(
            "\nPyTorch is not installed, so the autograd comparison is skipped: "
            "pip install 'handgrad[torch]'"
        )
        return result
    from handgrad.interop.oracle import compare_with_autograd

    comparison = compare_with_autograd(model, loss, x, y)
    print(f"\n{comparison}")
    result["autograd"] = comparison.to_dict()
    result["passed"] = report.passed and comparison.passed
    return result


def check(args: argparse.Namespace) -> int:
    """Gradient-check a user's layer, or the seed's network and an MLP; 0 if all pass, 1 if
    any fails."""
    if args.torch is not None:
        if args.layer is not None:
            raise ValueError("give a LAYER or --torch, not both")
        return check_torch(args, _import_attribute(args.torch, "--torch"))
    if args.layer is not None:
        return _check_own_layer(args)
    if args.input_shape is not None:
        raise ValueError("--input-shape goes with a LAYER (module:Class) or --torch")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed if args.json else sys.stdout):
        seed_passed = _check_seed_network(args)
        result = _check_mlp(args)
    passed = seed_passed and result["passed"]
    if args.json:
        print(
            json.dumps(
                {
                    "passed": passed,
                    "seed_network": {"passed": seed_passed},
                    **{k: v for k, v in result.items() if k != "passed"},
                },
                indent=2,
            )
        )
    else:
        print("\nall checks passed" if passed else "\nSOME CHECKS FAILED")
    return 0 if passed else 1
