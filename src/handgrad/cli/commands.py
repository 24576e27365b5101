"""What each ``handgrad`` command does, given its parsed arguments (see :mod:`handgrad.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import importlib.util
import io
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
from handgrad.app.trainer import TrainConfig, describe_model, train_classifier
from handgrad.core.arrays import convert, get_namespace
from handgrad.core.errors import TrainingDivergedError, TrainingInterruptedError
from handgrad.core.files import atomic_write
from handgrad.data import load_csv, load_dataset, load_features, split
from handgrad.gradcheck.check import GradientCheckError, check_gradients, check_layer
from handgrad.models.mlp import mlp
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["check", "evaluate", "predict", "train"]


def _load(args: argparse.Namespace):
    if args.data is not None:
        if args.target is None:
            raise ValueError("--data needs --target COL, the column that holds the classes")
        return load_csv(args.data, args.target)
    if args.target is not None:
        raise ValueError("--target goes with --data FILE.csv; the bundled data sets know theirs")
    return load_dataset(args.dataset or "breast_cancer")


# the arguments of `handgrad train` that a checkpoint keeps, to resume the same run
_RUN_ARGS = (
    "dataset",
    "data",
    "target",
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


def _resumed(args: argparse.Namespace) -> tuple[argparse.Namespace, Any]:
    """The arguments and checkpoint of the run in ``--resume DIR``."""
    checkpoint = load_checkpoint(Path(args.resume) / "checkpoint.npz")
    saved = {"model": "mlp", **checkpoint.config.get("args", {})}  # before --model: an MLP
    missing = [name for name in _RUN_ARGS if name not in saved]
    if missing:
        raise ValueError(
            f"the checkpoint in {args.resume} lacks {', '.join(missing)}; "
            "it was not written by 'handgrad train'"
        )
    resumed = argparse.Namespace(**{**vars(args), **saved})
    resumed.out, resumed.check = args.resume, False
    return resumed, checkpoint


class _StopOnSigint:
    """While active, the first Ctrl-C asks training to stop at the end of its step (the
    fit loop then checkpoints); a second one stops at once."""

    def __init__(self) -> None:
        self.asked = False

    def __call__(self) -> bool:
        return self.asked

    def __enter__(self) -> _StopOnSigint:
        def handler(signum: int, frame: Any) -> None:
            if self.asked:
                raise KeyboardInterrupt
            self.asked = True

        self._previous = signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self._previous)


def train(args: argparse.Namespace) -> int:
    """Train, report test metrics, and write model.npz, history.csv and curves.png; with
    --checkpoint-every (and on Ctrl-C) checkpoint.npz too."""
    started = time.perf_counter()
    resume = None
    if args.resume is not None:
        args, resume = _resumed(args)
        print(
            f"resuming the run in {args.out} after epoch {resume.progress.epoch}, "
            f"step {resume.progress.step}"
        )
    if args.test_size + args.val_size >= 1 or args.test_size == 0:
        raise ValueError(
            f"--test-size ({args.test_size}) must be > 0 and with --val-size "
            f"({args.val_size}) leave some data to train on"
        )
    if args.data is not None:
        args.data = str(Path(args.data).resolve())
    dataset = _load(args)
    if args.seed is None:
        args.seed = secrets.randbelow(2**31)
        print(f"seed {args.seed} (drawn at random; pass --seed {args.seed} to repeat this run)")
    if args.model == "cnn" and (args.hidden or args.activation != TrainConfig.activation):
        raise ValueError("--hidden and --activation shape the mlp; --model cnn has its own layers")
    config = TrainConfig(
        model=args.model,
        hidden=tuple(args.hidden or (20,)),
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
        dataset.X, dataset.y, test_size=args.test_size, val_size=args.val_size, seed=args.seed
    )
    network = describe_model(config, dataset.X.shape[1], len(dataset.class_names))
    print(
        f"{dataset.name}: {dataset.X.shape[0]} examples, {dataset.X.shape[1]} features, "
        f"{len(dataset.class_names)} classes; train {parts.y_train.shape[0]}, validation "
        f"{parts.y_val.shape[0]}, test {parts.y_test.shape[0]} (seed {args.seed})"
    )
    print(
        f"model {network}, {args.optimizer}, "
        f"batch {args.batch_size}, up to {args.epochs} epochs, backend {args.backend} "
        f"{args.dtype}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = {"args": {name: getattr(args, name) for name in _RUN_ARGS}}

    def save(model: Any, optimizer: Any, scaler: Any, progress: Any) -> None:
        save_checkpoint(
            out / "checkpoint.npz",
            config=run,
            model=model,
            optimizer=optimizer,
            standardiser=scaler,
            progress=progress,
        )

    try:  # a loss that stops being finite is reported once, by fit, not by NumPy's warnings
        with _StopOnSigint() as interrupted, np.errstate(over="ignore", invalid="ignore"):
            classifier, history = train_classifier(
                parts.X_train,
                parts.y_train,
                dataset.class_names,
                config=config,
                validation=(parts.X_val, parts.y_val),
                feature_names=dataset.feature_names,
                target_name=dataset.target_name,
                resume=resume,
                checkpoint=save,
                checkpoint_every=args.checkpoint_every,
                interrupted=interrupted,
            )
    except TrainingInterruptedError as err:
        print(
            f"handgrad train: {err}; checkpoint saved to {out / 'checkpoint.npz'}; "
            f"go on with: handgrad train --resume {out}",
            file=sys.stderr,
        )
        return 130
    except TrainingDivergedError as err:
        kept = " (the last checkpoint is kept)" if (out / "checkpoint.npz").exists() else ""
        raise TrainingDivergedError(f"{err}{kept}", epoch=err.epoch, step=err.step) from None
    classifier.info["dataset"] = dataset.name
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
    X, _ = load_features(args.csv, classifier.feature_names)
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
    )
    metrics = classification_metrics(y, classifier.predict(X), classifier.class_names)
    print(metrics)
    return 0


def _check_options(args: argparse.Namespace) -> dict:
    return {
        "eps": args.eps,
        "threshold": args.threshold,
        "mode": args.mode,
        "samples": args.samples,
        "directions": args.directions,
        "stencil": args.stencil,
        "rng": args.seed,
        "raise_on_failure": False,
    }


def _import_layer(spec: str) -> Any:
    """The layer named ``module:attribute``: a class or factory called with no arguments,
    or a layer object."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"LAYER must look like module:Class, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any error while importing the user's code
        raise ImportError(f"cannot import {module_name!r}: {type(err).__name__}: {err}") from None
    if not hasattr(module, attribute):
        raise ValueError(f"module {module_name!r} has no {attribute!r}")
    made = getattr(module, attribute)
    if isinstance(made, type) or (callable(made) and not hasattr(made, "forward")):
        made = made()
    return made


def _check_own_layer(args: argparse.Namespace) -> int:
    layer = _import_layer(args.layer)
    shape = args.input_shape or (8, 10)
    x = np.random.default_rng(args.seed).standard_normal(shape)
    report = check_layer(layer, x, **_check_options(args))
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
    rng = np.random.default_rng(args.seed)
    model = mlp(sizes, args.activation, rng=rng, backend=args.backend)
    xp = get_namespace(args.backend)
    x = convert(rng.standard_normal((args.batch_size, args.inputs)), xp)
    y = convert(rng.integers(0, args.classes, size=args.batch_size), xp)
    loss = CrossEntropyLoss()
    report = check_gradients(model, loss, x, y, **_check_options(args))
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
    if args.layer is not None:
        return _check_own_layer(args)
    if args.input_shape is not None:
        raise ValueError("--input-shape goes with a LAYER (module:Class)")
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
