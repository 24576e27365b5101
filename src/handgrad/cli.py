"""The ``handgrad`` command line: ``handgrad check`` gradient-checks the seed's network and a
model of your choosing against finite differences and PyTorch autograd."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

import numpy as np

from handgrad.backend import convert, get_namespace
from handgrad.gradcheck import (
    DEFAULT_EPS,
    DEFAULT_THRESHOLD,
    GradientCheckError,
    check_gradients,
)
from handgrad.losses import CrossEntropyLoss
from handgrad.presets import ACTIVATIONS, SimpleNN, mlp

__all__ = ["main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 0, got {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="handgrad",
        description="Neural networks with hand-written backward passes, proven right.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check",
        help="gradient-check the seed's network and an MLP (finite differences and autograd)",
        description="Gradient-check the seed notebook's SimpleNN and an MLP on a random batch "
        "against central finite differences and, when PyTorch is installed, autograd.",
    )
    check.add_argument("--inputs", type=_positive_int, default=30, help="input features (30)")
    check.add_argument(
        "--hidden",
        type=_positive_int,
        action="append",
        help="hidden layer width; repeat for more layers (20)",
    )
    check.add_argument("--classes", type=_positive_int, default=2, help="output classes (2)")
    check.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid")
    check.add_argument("--batch-size", type=_positive_int, default=16)
    check.add_argument("--backend", choices=["numpy", "torch"], default="numpy")
    check.add_argument("--eps", type=_positive_float, default=DEFAULT_EPS)
    check.add_argument("--threshold", type=_positive_float, default=DEFAULT_THRESHOLD)
    check.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


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


def _check_mlp(args: argparse.Namespace) -> bool:
    sizes = [args.inputs, *(args.hidden or [20]), args.classes]
    name = "-".join(map(str, sizes))
    print(
        f"\n== MLP {name} ({args.activation}) + CrossEntropyLoss, random batch of "
        f"{args.batch_size}, backend {args.backend} =="
    )
    rng = np.random.default_rng(args.seed)
    model = mlp(sizes, args.activation, rng=rng, backend=args.backend)
    xp = get_namespace(args.backend)
    x = convert(rng.standard_normal((args.batch_size, args.inputs)), xp)
    y = convert(rng.integers(0, args.classes, size=args.batch_size), xp)
    loss = CrossEntropyLoss()
    report = check_gradients(
        model, loss, x, y, eps=args.eps, threshold=args.threshold, raise_on_failure=False
    )
    print(report)
    if importlib.util.find_spec("torch") is None:
        print(
            "\nPyTorch is not installed, so the autograd comparison is skipped: "
            "pip install 'handgrad[torch]'"
        )
        return report.passed
    from handgrad.autograd import compare_with_autograd

    comparison = compare_with_autograd(model, loss, x, y)
    print(f"\n{comparison}")
    return report.passed and comparison.passed


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a check failed, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        passed = _check_seed_network(args)
        passed = _check_mlp(args) and passed
    except (ValueError, TypeError, ImportError) as err:
        print(f"handgrad: error: {err}", file=sys.stderr)
        return 2
    print("\nall checks passed" if passed else "\nSOME CHECKS FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
