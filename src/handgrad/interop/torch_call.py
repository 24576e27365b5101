"""A PyTorch function or ``nn.Module`` as the gradient checker sees it: the tensors to
check by name, the function of them, its differentiable outputs, the precision the check
runs at, and the vector-Jacobian product that autograd computes with the user's backward.

Inputs are named ``inputs[i]`` (those with ``requires_grad`` are checked) and a module's
parameters by their own names (``weight``, ``0.bias``); a module runs through
``torch.func.functional_call``, so a check never writes into it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from handgrad.gradcheck.precision import SECOND_LOOK_EPS, in_own_precision

__all__ = ["Precision", "Subject", "as_outputs", "vector_jacobian"]

Evaluate = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, ...]]
_FLOAT64_EPS = float(np.finfo(np.float64).eps)
_AGREE = 1024  # units of roundoff within which a float64 copy computes what the original does


def as_outputs(out: Any, label: str) -> tuple[torch.Tensor, ...]:
    """``fn``'s result as a tuple of tensors (one tensor, or a tuple or list of them).

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_call import as_outputs
    >>> len(as_outputs(torch.ones(2), "fn")), len(as_outputs((torch.ones(2), torch.ones(1)), "fn"))
    (1, 2)
    """
    outs = (out,) if isinstance(out, torch.Tensor) else out
    if not isinstance(outs, tuple | list) or not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError(
            f"{label} must return a tensor or a tuple of tensors, got {type(out).__name__}"
        )
    return tuple(outs)


def _label(fn: Any) -> str:
    owner = getattr(fn, "__self__", None)  # Function.apply: name the Function
    if isinstance(owner, type):
        return f"{owner.__name__}.apply"
    return getattr(fn, "__name__", type(fn).__name__)


@dataclass
class Precision:
    """The dtype the check computes in, its unit roundoff, and the first look's step,
    threshold and second-look step; ``note`` says why when it is not plain float64."""

    name: str = "float64"
    unit: float = _FLOAT64_EPS
    eps: float = 1e-6
    threshold: float = 1e-6
    big_eps: float = SECOND_LOOK_EPS
    scaled_steps: bool = False
    note: str = ""


class Subject:
    """``fn`` at ``inputs``: the tensors to check (own float64 copies where ``fn`` computes
    the same in float64) and ``evaluate(overrides)``, its differentiable outputs with some
    of them replaced.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_call import Subject
    >>> x = torch.ones(2, 3, dtype=torch.float32, requires_grad=True)
    >>> subject = Subject(torch.tanh, (x, ), eps=None, rtol=None)
    >>> subject.names, subject.values["inputs[0]"].dtype, subject.precision.name
    (['inputs[0]'], torch.float64, 'float64')
    """

    def __init__(self, fn: Any, inputs: Any, eps: float | None, rtol: float | None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be a function of tensors or an nn.Module, got {fn!r}")
        self.module = fn if isinstance(fn, torch.nn.Module) else None
        self.fn = fn
        self.label = type(fn).__name__ if self.module is not None else _label(fn)
        self.inputs = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
        self.names: list[str] = []
        state: dict[str, torch.Tensor] = {}
        for i, a in enumerate(self.inputs):
            if isinstance(a, torch.Tensor) and a.requires_grad:
                if not (a.is_floating_point() or a.is_complex()):
                    raise TypeError(f"inputs[{i}] requires grad but holds {a.dtype}")
                if a.is_complex():
                    raise TypeError(f"inputs[{i}] is {a.dtype}: complex inputs are not checked")
                self.names.append(f"inputs[{i}]")
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                state[f"inputs[{i}]"] = a
        if self.module is not None:
            for key, p in self.module.named_parameters():
                if p.requires_grad:
                    self.names.append(key)
            state.update(dict(self.module.named_parameters()))
            state.update(dict(self.module.named_buffers()))
        if not self.names:
            raise ValueError(
                "nothing to check: no input requires grad"
                + (" and the module has no parameter that does" if self.module else "")
                + "; pass inputs with requires_grad=True"
            )
        own = {k: v.detach().clone() for k, v in state.items()}
        self.values, self.precision = _choose_precision(self, own, eps, rtol)
        with torch.no_grad():
            outs = self.call(self.values)
        with torch.enable_grad():
            leaves = self.leaves()
            traced = self.call({**self.values, **leaves})
        self.selected = [i for i, o in enumerate(traced) if o.requires_grad]
        if not self.selected:
            raise ValueError(
                f"{self.label} returned no output that depends on the checked tensors "
                f"({', '.join(self.names)}): nothing to check"
            )
        self.y0 = tuple(outs[i] for i in self.selected)

    def call(self, values: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Every output of ``fn`` with the named tensors taken from ``values``."""
        args = [values.get(f"inputs[{i}]", a) for i, a in enumerate(self.inputs)]
        if self.module is None:
            return as_outputs(self.fn(*args), self.label)
        state = {k: v for k, v in values.items() if not k.startswith("inputs[")}
        return as_outputs(torch.func.functional_call(self.module, state, tuple(args)), self.label)

    def evaluate(self, overrides: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """The differentiable outputs with ``overrides`` in place of the check's copies."""
        outs = self.call({**self.values, **overrides})
        return tuple(outs[i] for i in self.selected)

    def leaves(self) -> dict[str, torch.Tensor]:
        """Fresh copies of the checked tensors that require grad."""
        return {n: self.values[n].detach().clone().requires_grad_(True) for n in self.names}


def _choose_precision(
    subject: Subject, own: dict[str, torch.Tensor], eps: float | None, rtol: float | None
) -> tuple[dict[str, torch.Tensor], Precision]:
    """float64 copies when ``fn`` computes the same on them, else the tensors as they are,
    checked at their own dtype's noise."""
    plain = Precision(eps=eps or 1e-6, threshold=rtol or 1e-6)
    low = {k: v for k, v in own.items() if v.dtype != torch.float64}
    if not low:
        with torch.no_grad():
            outs = subject.call(own)
        dtypes = {o.dtype for o in outs if o.is_floating_point() and o.dtype != torch.float64}
        if not dtypes:
            return own, plain
        dtype, reason = next(iter(dtypes)), "its output is lower precision on float64 input"
    else:
        dtype = next(iter(low.values())).dtype
        wide = {k: v.to(torch.float64) for k, v in own.items()}
        reason = _promotion_refused(subject, own, wide, dtype)
        if not reason:
            note = (
                f"{next(iter(low))} is {str(dtype).removeprefix('torch.')}: checked as a "
                "float64 copy, on which the function computes the same"
            )
            return wide, Precision(eps=plain.eps, threshold=plain.threshold, note=note)
    name, unit = str(dtype).removeprefix("torch."), float(torch.finfo(dtype).eps)
    settings = in_own_precision(name, unit, reason, eps or 0.0, rtol or 0.0, "the function")
    return own, Precision(**settings)


def _promotion_refused(
    subject: Subject, own: dict[str, torch.Tensor], wide: dict[str, torch.Tensor], dtype: Any
) -> str:
    """Why ``fn`` on the float64 copies does not compute what it computes on ``own``."""
    try:
        with torch.no_grad():
            got, want = subject.call(wide), subject.call(own)
    except Exception as err:  # the probe's answer: it cannot run in float64
        return f"in float64 it raised {type(err).__name__}: {err}"
    unit = float(torch.finfo(dtype).eps)
    for g, w in zip(got, want, strict=True):
        if not w.is_floating_point():
            continue
        if g.dtype != torch.float64:
            return f"its output stays {str(g.dtype).removeprefix('torch.')} on a float64 copy"
        gap = float((g - w.to(torch.float64)).abs().max()) if w.numel() else 0.0
        size = float(w.abs().max()) if w.numel() else 0.0
        if not gap <= _AGREE * unit * max(size, 1e-30):
            return f"its float64 output differs from its low-precision output by {gap:.2g}"
    return ""


def vector_jacobian(
    evaluate: Evaluate,
    leaves: dict[str, torch.Tensor],
    upstream: list[torch.Tensor | None],
    create_graph: bool = False,
) -> dict[str, torch.Tensor]:
    """``sum_o <v_o, d out_o / d leaf>`` for each leaf, by autograd (the user's backward);
    an output whose upstream gradient is None is left out, a leaf it does not reach gets 0.

    Examples
    --------
    >>> import torch
    >>> from handgrad.interop.torch_call import vector_jacobian
    >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    >>> g = vector_jacobian(lambda o: (o["x"] ** 2,), {"x": x}, [torch.ones(2).double()])
    >>> g["x"].tolist()
    [2.0, 4.0]
    """
    with torch.enable_grad():
        outs = evaluate(leaves)
        pairs = [
            (o, v) for o, v in zip(outs, upstream, strict=True) if v is not None and o.requires_grad
        ]
        names = list(leaves)
        if not pairs:
            return {n: torch.zeros_like(leaves[n]) for n in names}
        grads = torch.autograd.grad(
            [o for o, _ in pairs],
            [leaves[n] for n in names],
            grad_outputs=[v for _, v in pairs],
            allow_unused=True,
            create_graph=create_graph,
        )
    return {
        n: torch.zeros_like(leaves[n]) if g is None else g
        for n, g in zip(names, grads, strict=True)
    }
