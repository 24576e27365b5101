"""The ``handgrad`` command line.

- ``handgrad train``: train a classifier (default: the seed's 30-20-2 sigmoid network on
  breast cancer), print its test metrics, write ``model.npz``, ``history.csv`` and
  ``curves.png``.
- ``handgrad predict`` and ``handgrad evaluate``: use a saved model on a CSV file.
- ``handgrad check``: gradient-check the seed's network and an MLP against finite
  differences and PyTorch autograd.
- ``handgrad gpt train`` and ``handgrad gpt sample``: a character-level GPT (see
  :mod:`handgrad.cli.gpt`).

Bad input ends with exit status 2 and one line on stderr (``--debug`` shows the traceback),
and so does a lack of memory. ``handgrad train`` stopped by Ctrl-C exits with 130, by
SIGTERM with 143, after saving a checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from handgrad.app.trainer import CONSTRAINTS, TrainConfig
from handgrad.cli import commands, gpt, workers
from handgrad.cli.torch_check import TORCH_METHODS
from handgrad.core.arrays import BACKENDS
from handgrad.core.validation import FRACTION, POSITIVE, POSITIVE_INT, Constraint
from handgrad.gradcheck.check import DEFAULT_EPS, DEFAULT_THRESHOLD, METHODS, MODES
from handgrad.gradcheck.finite_differences import STENCILS
from handgrad.nn.registry import activation_names

__all__ = ["main"]

_DEFAULT = TrainConfig()


def _typed(constraint: Constraint) -> Callable[[str], Any]:
    """An argparse ``type`` from a library constraint: the same rule, the same words."""

    def parse(text: str) -> Any:
        try:
            return constraint.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


_POSITIVE_INT = _typed(POSITIVE_INT)
_POSITIVE = _typed(POSITIVE)
_FRACTION = _typed(FRACTION)


def _add_train(commands_: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = commands_.add_parser(
        "train",
        help="train a classifier and report its test metrics",
        description="Train a classifier on a bundled data set or your CSV file. With no "
        "options: the seed notebook's network (30 inputs, 20 sigmoid units, softmax over 2 "
        "classes) on scikit-learn's breast-cancer data.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", default=None, help="breast_cancer (default), digits, iris or wine"
    )
    source.add_argument("--data", metavar="FILE.csv", help="your own CSV file (needs --target)")
    p.add_argument("--target", metavar="COL", help="the CSV's class column: name or 0-based index")
    _add_csv_options(p, missing=True)
    p.add_argument(
        "--numeric-labels",
        action="store_true",
        help="labels that are numbers are one class per value (1, 1.0 and 01 are one class); "
        "by default labels are compared as written",
    )
    p.add_argument(
        "--model",
        choices=CONSTRAINTS["model"].values,
        default=_DEFAULT.model,
        help="mlp (default: --hidden, --activation) or cnn (rows of pixels of square images, "
        "e.g. digits' 8x8: conv, relu, max pool, conv, relu, dropout, dense)",
    )
    p.add_argument(
        "--hidden",
        type=_POSITIVE_INT,
        action="append",
        metavar="N",
        help="hidden layer width; repeat for more layers (default: one layer of 20)",
    )
    p.add_argument(
        "--activation", choices=CONSTRAINTS["activation"].values, default=_DEFAULT.activation
    )
    p.add_argument(
        "--optimizer", choices=CONSTRAINTS["optimizer"].values, default=_DEFAULT.optimizer
    )
    p.add_argument(
        "--lr",
        type=_POSITIVE,
        default=None,
        help="learning rate (default 0.01 for adam, 0.1 for sgd and momentum; a tenth of "
        "that for --model cnn)",
    )
    p.add_argument("--epochs", type=_POSITIVE_INT, default=_DEFAULT.epochs)
    p.add_argument("--batch-size", type=_POSITIVE_INT, default=_DEFAULT.batch_size)
    p.add_argument(
        "--schedule",
        choices=CONSTRAINTS["schedule"].values,
        default=_DEFAULT.schedule,
        help="learning-rate schedule over the epochs",
    )
    p.add_argument(
        "--patience",
        type=_POSITIVE_INT,
        default=None,
        help="early stopping: stop after this many epochs without a better validation loss "
        "and restore the best weights (off by default)",
    )
    p.add_argument(
        "--alpha",
        type=_typed(CONSTRAINTS["alpha"]),
        default=_DEFAULT.alpha,
        help=f"L2 penalty on weights ({_DEFAULT.alpha:g})",
    )
    p.add_argument("--test-size", type=_FRACTION, default=0.25)
    p.add_argument("--val-size", type=_FRACTION, default=0.1)
    p.add_argument("--backend", choices=CONSTRAINTS["backend"].values, default=_DEFAULT.backend)
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch backend)")
    p.add_argument("--dtype", choices=CONSTRAINTS["dtype"].values, default=_DEFAULT.dtype)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed of the split, the weights and the batches (default: drawn "
        "at random, printed and saved with the model)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_POSITIVE_INT,
        default=None,
        metavar="N",
        help="save OUT/checkpoint.npz every N epochs (Ctrl-C always saves one)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="go on with the run whose checkpoint is in DIR, on the same data and with its "
        "options (only --checkpoint-every and --quiet may change)",
    )
    p.add_argument(
        "--out",
        default="handgrad-out",
        metavar="DIR",
        help="folder for model.npz, history.csv and curves.png (handgrad-out)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="gradient-check the model on the first batch before training",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_workers(p)
    return p


def _separator(text: str) -> str:
    """A cell separator: one character, or ``tab``."""
    separator = {"tab": "\t", "\\t": "\t"}.get(text, text)
    if len(separator) != 1 or separator in '"\r\n':
        raise argparse.ArgumentTypeError(
            f"must be one character, such as ';', or tab, got {text!r}"
        )
    return separator


def _strings(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _add_csv_options(p: argparse.ArgumentParser, *, missing: bool) -> None:
    p.add_argument(
        "--sep",
        type=_separator,
        default=None,
        metavar="CHAR",
        help="the CSV's separator, one character or tab (default: the comma, or the one a file "
        "without commas plainly uses)",
    )
    if missing:
        p.add_argument(
            "--missing",
            type=_strings,
            default=None,
            metavar="LIST",
            help="the strings that mark a missing value, comma-separated (e.g. NA,?); by "
            "default an empty cell, and in feature columns NA, n/a and nan too",
        )


def _add_workers(p: argparse.ArgumentParser) -> None:
    """The options of data-parallel training (see handgrad.cli.workers)."""
    p.add_argument(
        "--nproc",
        type=_POSITIVE_INT,
        default=1,
        metavar="N",
        help="train as N worker processes on this machine, each on its share of every "
        "batch (torch.distributed; the weights are those of one process); under torchrun, "
        "leave it out",
    )
    p.add_argument(
        "--worker-timeout",
        type=_POSITIVE,
        default=60.0,
        metavar="S",
        help="with several workers: seconds to wait for the others before the run stops (60)",
    )


def _add_predict_and_evaluate(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser(
        "predict",
        help="predict the classes of a CSV file's rows",
        description="Write each row's predicted class and class probabilities as CSV.",
    )
    p.add_argument("--model", required=True, metavar="MODEL.npz")
    p.add_argument("csv", metavar="FILE.csv")
    p.add_argument("--output", metavar="OUT.csv", help="write here instead of to stdout")
    _add_csv_options(p, missing=False)
    p = commands_.add_parser("evaluate", help="print a saved model's metrics on a labelled CSV")
    p.add_argument("--model", required=True, metavar="MODEL.npz")
    p.add_argument("csv", metavar="FILE.csv")
    _add_csv_options(p, missing=True)
    p.add_argument(
        "--target",
        metavar="COL",
        help="the class column (default: the one the model was trained on)",
    )


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be sizes like 8,10, got {text!r}") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be at least two positive sizes, got {text!r}")
    return shape


def _add_check(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser(
        "check",
        help="gradient-check a layer of your own, or the seed's network and an MLP",
        description="Gradient-check a layer of your own (LAYER, as module:Class), or the "
        "seed notebook's SimpleNN and an MLP on a random batch, against finite differences "
        "and, when PyTorch is installed, autograd.",
    )
    p.add_argument(
        "layer",
        nargs="?",
        metavar="LAYER",
        help="your layer as module:Class (or module:factory), built with no "
        "arguments; the current folder is importable",
    )
    p.add_argument(
        "--torch",
        metavar="MODULE:FUNCTION",
        help="check a PyTorch function, autograd.Function or nn.Module of your own "
        "(handgrad.torch.gradcheck) on random inputs, one per --input-shape",
    )
    p.add_argument(
        "--input-shape",
        type=_shape,
        action="append",
        default=None,
        metavar="B,F",
        help="shape of the random input for LAYER (default 8,10); with --torch, repeat it "
        "for each input",
    )
    p.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=1,
        help="with --torch: 1 checks the backward (gradcheck), 2 its derivative (gradgradcheck)",
    )
    p.add_argument(
        "--dtype",
        choices=("float64", "float32"),
        default="float64",
        help="with --torch: the inputs' dtype (float64)",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="full",
        help="every element, a sample per array, or random directions (full)",
    )
    p.add_argument(
        "--method",
        choices=sorted(set(METHODS) | set(TORCH_METHODS), key=[*METHODS, *TORCH_METHODS].index),
        default="auto",
        help="many perturbed copies per call (batched), many perturbed samples per call "
        "(rows), one element at a time (loop), or the fastest that is proven right (auto); "
        "with --torch also vmap and stacked (torch.func.vmap, or copies on a new axis)",
    )
    p.add_argument("--samples", type=_POSITIVE_INT, default=16, help="for --mode sample")
    p.add_argument("--directions", type=_POSITIVE_INT, default=4, help="for --mode fast")
    p.add_argument("--stencil", choices=STENCILS, default="central")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")
    p.add_argument(
        "--plot", metavar="FILE.png", help="write a histogram of relative differences per array"
    )
    p.add_argument("--inputs", type=_POSITIVE_INT, default=30, help="MLP input features (30)")
    p.add_argument(
        "--hidden",
        type=_POSITIVE_INT,
        action="append",
        help="MLP hidden layer width; repeat for more layers (20)",
    )
    p.add_argument("--classes", type=_POSITIVE_INT, default=2, help="MLP output classes (2)")
    p.add_argument("--activation", choices=activation_names(), default="sigmoid")
    p.add_argument("--batch-size", type=_POSITIVE_INT, default=16)
    p.add_argument("--backend", choices=BACKENDS, default="numpy")
    p.add_argument("--eps", type=_POSITIVE, default=DEFAULT_EPS)
    p.add_argument("--threshold", type=_POSITIVE, default=DEFAULT_THRESHOLD)
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a refused option reported as one line on stderr, as every other
    error of the command line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser(given_only: bool = False) -> argparse.ArgumentParser:
    """The parser; with ``given_only``, ``train`` leaves out the options not given."""
    parser = _Parser(
        prog="handgrad",
        description="Neural networks with hand-written backward passes, proven right.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands_ = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = _add_train(commands_)
    if given_only:
        for action in train._actions:
            action.default = argparse.SUPPRESS
    _add_predict_and_evaluate(commands_)
    _add_check(commands_)
    gpt.add_gpt_parser(commands_)
    return parser


class _QuietPipe:
    """``sys.stdout`` that, once its reader has gone (``| head -1``), drops what is left
    quietly instead of failing: a run goes on and writes its files."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.gone = stream, False

    def write(self, text: str) -> int:
        self._quietly(self.stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._quietly(self.stream.flush)

    def _quietly(self, call: Callable[..., Any], *args: Any) -> None:
        if self.gone:
            return
        try:
            call(*args)
        except BrokenPipeError:
            self.gone = True
            try:  # what is still buffered goes nowhere, instead of failing at exit
                fd = self.stream.fileno()
            except (OSError, ValueError, AttributeError):
                return
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _memory_message(err: MemoryError) -> str:
    said = str(err) or "Python could not allocate what it asked for"
    return f"not enough memory: {said[0].lower()}{said[1:]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a check failed, 2 bad input,
    130 stopped by Ctrl-C, 143 by SIGTERM)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.command == "train":
        given = _parser(given_only=True).parse_args(argv)
        args.given = set(vars(given)) - {"debug", "command"}
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for workers (--nproc)
    run = {
        "train": workers.train,
        "predict": commands.predict,
        "evaluate": commands.evaluate,
        "check": commands.check,
        "gpt": gpt.run,
    }[args.command]
    stdout = sys.stdout = _QuietPipe(sys.stdout)
    try:
        return run(args)
    except (ValueError, TypeError, ImportError, OSError, KeyError, RuntimeError) as err:
        if args.debug:
            traceback.print_exc()
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        command = args.command + (f" {args.gpt_command}" if args.command == "gpt" else "")
        print(f"handgrad {command}: error: {message}", file=sys.stderr)
        return 2
    except MemoryError as err:
        if args.debug:
            traceback.print_exc()
        print(f"handgrad {args.command}: error: {_memory_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handgrad {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        stdout.flush()
        sys.stdout = stdout.stream


if __name__ == "__main__":
    sys.exit(main())
