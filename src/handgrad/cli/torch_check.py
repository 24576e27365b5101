"""``handgrad check --torch module:function``: a PyTorch function, custom
``autograd.Function`` or ``nn.Module`` of your own, checked on random inputs by
:func:`handgrad.torch.gradcheck` (``--order 2``: ``gradgradcheck``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

__all__ = ["TORCH_METHODS", "check_torch", "torch_callable"]

TORCH_METHODS = ("auto", "rows", "vmap", "stacked", "loop")


def torch_callable(made: Any) -> Any:
    """What ``--torch`` names, as a function of tensors: an ``autograd.Function`` class
    by its ``apply``, an ``nn.Module`` class built with no arguments, anything else callable
    as it is.

    Examples
    --------
    >>> import torch
    >>> from handgrad.cli.torch_check import torch_callable
    >>> torch_callable(torch.nn.Tanh).__class__.__name__, torch_callable(torch.sin) is torch.sin
    ('Tanh', True)
    """
    import torch

    if isinstance(made, type) and issubclass(made, torch.autograd.Function):
        return made.apply
    if isinstance(made, type) and issubclass(made, torch.nn.Module):
        return made()
    if not callable(made):
        raise TypeError(f"--torch must name a function, a Function or a Module, got {made!r}")
    return made


def check_torch(args: argparse.Namespace, made: Any) -> int:
    """Check ``made`` (the object ``--torch`` names) on random inputs; 0 if it passes."""
    try:
        import torch
    except ImportError as err:
        raise ImportError("--torch needs PyTorch: pip install 'handgrad[torch]'") from err
    from handgrad.interop.torch_check import check_report

    if args.method not in TORCH_METHODS:
        raise ValueError(
            f"--method {args.method} goes with a LAYER; with --torch use one of "
            f"{', '.join(TORCH_METHODS)}"
        )
    fn = torch_callable(made)
    shapes = args.input_shape or [(8, 10)]
    data = np.random.default_rng(np.random.SeedSequence(args.seed).spawn(2)[0])
    dtype = getattr(torch, args.dtype)
    inputs = tuple(
        torch.as_tensor(data.standard_normal(shape), dtype=dtype).requires_grad_(True)
        for shape in shapes
    )
    if isinstance(fn, torch.nn.Module):
        fn = fn.to(dtype)
    report = check_report(
        fn,
        inputs,
        order=args.order,
        eps=args.eps,
        rtol=args.threshold,
        method=args.method,
        seed=args.seed,
    )
    what = "gradgradcheck" if args.order == 2 else "gradcheck"
    if args.plot:
        report.plot(args.plot)
    if args.json:
        print(
            json.dumps(
                {
                    "passed": report.passed,
                    "torch": args.torch,
                    "order": args.order,
                    "input_shapes": [list(s) for s in shapes],
                    "dtype": args.dtype,
                    "report": report.to_dict(),
                },
                indent=2,
            )
        )
    else:
        sizes = ", ".join("x".join(map(str, s)) for s in shapes)
        print(f"== {what} of {args.torch} on random {args.dtype} inputs of shape {sizes} ==")
        print(report)
        if not report.passed:
            print(f"\nFAILED: {report.failures[0].describe()}")
    return 0 if report.passed else 1
