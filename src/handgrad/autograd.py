"""PyTorch autograd as the oracle: the same weights through ``torch.nn`` and ``torch.autograd``,
compared with handgrad's hand-written gradients. Needs the ``torch`` extra."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.backend import float_dtype_name, to_numpy
from handgrad.layers import Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.losses import CrossEntropyLoss, MSELoss, NLLLoss
from handgrad.model import named_layers
from handgrad.tables import format_table
from handgrad.validation import check_array

__all__ = ["AutogradComparison", "compare_with_autograd", "to_torch_module"]

_TOLERANCE = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2}


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "compare_with_autograd needs PyTorch: pip install 'handgrad[torch]'"
        ) from err
    return torch


def to_torch_module(model: Any) -> Any:
    """The ``torch.nn.Sequential`` that computes what ``model`` computes, with its weights.

    ``model`` is a Sequential of handgrad's own layers (subclasses included: a subclass
    is matched to its base, so a subclass with a slipped backward shows as a disagreement),
    or one such layer.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.autograd import to_torch_module
    >>> to_torch_module(hg.mlp([4, 3, 2], rng=0))
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
      (1): Sigmoid()
      (2): Linear(in_features=3, out_features=2, bias=True)
    )
    """
    torch = _torch()
    nn = torch.nn
    activations = ((Sigmoid, nn.Sigmoid), (Tanh, nn.Tanh), (ReLU, nn.ReLU))
    modules = []
    for prefix, layer in named_layers(model):
        if isinstance(layer, Linear):
            module = nn.Linear(layer.in_features, layer.out_features, bias="bias" in layer.params)
        elif isinstance(layer, Softmax | LogSoftmax):
            module = (nn.Softmax if isinstance(layer, Softmax) else nn.LogSoftmax)(dim=-1)
        elif isinstance(layer, Sigmoid | Tanh | ReLU):
            module = next(m for c, m in activations if isinstance(layer, c))()
        else:
            raise TypeError(
                f"layer {prefix.rstrip('.') or 0} ({type(layer).__name__}) has no PyTorch "
                "counterpart here; check your own layers with handgrad.check_layer"
            )
        weights = {k: torch.from_numpy(np.array(to_numpy(v))) for k, v in layer.params.items()}
        if weights:
            dtype = weights["weight"].dtype
            module = module.to(dtype)
            module.load_state_dict(weights)
        modules.append(module)
    return nn.Sequential(*modules)


def _torch_loss(loss: Any, output: Any, target: Any) -> Any:
    """The same loss in PyTorch's own terms, from ``torch.nn`` where it has one."""
    torch = _torch()
    soft = torch.is_floating_point(target)
    if isinstance(loss, CrossEntropyLoss):
        return torch.nn.CrossEntropyLoss(reduction=loss.reduction)(output, target)
    if isinstance(loss, NLLLoss):
        if not soft:
            return torch.nn.NLLLoss(reduction=loss.reduction)(output, target)
        total = -(target * output).sum()  # torch.nn.NLLLoss takes no soft targets
        return total / output.shape[0] if loss.reduction == "mean" else total
    return torch.nn.MSELoss(reduction=loss.reduction)(output, target)


def _check_loss(loss: Any) -> None:
    if not isinstance(loss, CrossEntropyLoss | NLLLoss | MSELoss):
        raise TypeError(
            f"loss must be a CrossEntropyLoss, NLLLoss or MSELoss to compare with autograd, "
            f"got {type(loss).__name__}"
        )


@dataclass(frozen=True)
class AutogradComparison:
    """Largest differences between handgrad's and autograd's gradients: the input ``"x"``
    first, then each parameter.

    The relative difference of a parameter is its largest absolute difference divided by
    the largest magnitude of autograd's gradient for it, so elements that cancel to almost
    zero do not count as 100% errors.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> rng = np.random.default_rng(0)
    >>> model, x, y = hg.mlp([3, 4, 2], rng=rng), rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    >>> result = hg.compare_with_autograd(model, hg.CrossEntropyLoss(), x, y)
    >>> result.passed, result.rtol, result.max_relative_difference < 1e-12, sorted(result.to_dict())
    (True, 1e-12, True, ['arrays', 'loss', 'passed', 'rtol'])
    """

    names: tuple[str, ...]
    max_abs_diff: tuple[float, ...]
    max_rel_diff: tuple[float, ...]
    loss_handgrad: float
    loss_autograd: float
    rtol: float

    @property
    def max_relative_difference(self) -> float:
        """The largest relative difference over the loss and all parameters."""
        return max((self.loss_rel_diff, *self.max_rel_diff))

    @property
    def loss_rel_diff(self) -> float:
        """Relative difference of the two loss values."""
        diff = abs(self.loss_handgrad - self.loss_autograd)
        return diff / abs(self.loss_autograd) if self.loss_autograd else diff

    @property
    def passed(self) -> bool:
        """True when every relative difference is within ``rtol``."""
        return self.max_relative_difference <= self.rtol

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "passed": self.passed,
            "rtol": self.rtol,
            "loss": {
                "handgrad": self.loss_handgrad,
                "autograd": self.loss_autograd,
                "rel_diff": self.loss_rel_diff,
            },
            "arrays": [
                {"name": n, "max_abs_diff": a, "max_rel_diff": r}
                for n, a, r in zip(self.names, self.max_abs_diff, self.max_rel_diff, strict=True)
            ],
        }

    def __str__(self) -> str:
        rows = [
            [
                "loss",
                f"{abs(self.loss_handgrad - self.loss_autograd):.2e}",
                f"{self.loss_rel_diff:.2e}",
            ]
        ]
        rows += [
            [n, f"{a:.2e}", f"{r:.2e}"]
            for n, a, r in zip(self.names, self.max_abs_diff, self.max_rel_diff, strict=True)
        ]
        verdict = "agree" if self.passed else "DISAGREE"
        return (
            f"handgrad vs PyTorch autograd: {verdict} (largest relative difference "
            f"{self.max_relative_difference:.2e}, tolerance {self.rtol:g})\n"
            + format_table(["", "max abs diff", "max rel diff"], rows)
        )


def compare_with_autograd(
    model: Any, loss: Any, x: Any, y: Any, *, rtol: float | None = None
) -> AutogradComparison:
    """Run the same weights and batch through ``torch.nn`` and autograd; compare gradients.

    ``model`` holds handgrad layers (see :func:`to_torch_module`); it computes in its own
    dtype, and autograd in the same one. ``rtol`` defaults to 1e-12 in float64 and 1e-5
    in float32; it only sets ``passed``. After the call the model's ``grads`` hold the
    gradients of this batch.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> rng = np.random.default_rng(0)
    >>> model = hg.mlp([4, 5, 3], rng=rng)
    >>> x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    >>> result = hg.compare_with_autograd(model, hg.CrossEntropyLoss(), x, y)
    >>> result.passed, result.names
    (True, ('x', '0.weight', '0.bias', '2.weight', '2.bias'))
    """
    torch = _torch()
    check_array(x, "x")
    check_array(y, "y", floating=False)
    _check_loss(loss)
    module = to_torch_module(model)
    dtype = float_dtype_name(x)
    rtol = _TOLERANCE[dtype] if rtol is None else rtol
    value = float(loss.forward(model.forward(x), y))
    ours = {"x": to_numpy(model.backward(loss.backward()))}
    ours.update(
        (p + k, to_numpy(layer.grads[k])) for p, layer in named_layers(model) for k in layer.params
    )

    x_t = torch.from_numpy(np.array(to_numpy(x))).requires_grad_(True)
    y_t = torch.from_numpy(np.array(to_numpy(y)))
    if not torch.is_floating_point(y_t):
        y_t = y_t.to(torch.int64)
    reference = _torch_loss(loss, module(x_t), y_t)
    reference.backward()
    theirs = {"x": x_t.grad, **{k: p.grad for k, p in module.named_parameters()}}

    abs_diffs, rel_diffs = [], []
    for name, grad in ours.items():
        g = theirs[name].numpy().astype(np.float64)
        diff = float(np.max(np.abs(np.asarray(grad, dtype=np.float64) - g), initial=0.0))
        scale = float(np.max(np.abs(g), initial=0.0))
        abs_diffs.append(diff)
        rel_diffs.append(diff / scale if scale else (0.0 if diff == 0 else math.inf))
    return AutogradComparison(
        names=tuple(ours),
        max_abs_diff=tuple(abs_diffs),
        max_rel_diff=tuple(rel_diffs),
        loss_handgrad=value,
        loss_autograd=float(reference.detach()),
        rtol=rtol,
    )
