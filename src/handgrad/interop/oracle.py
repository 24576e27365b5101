"""PyTorch autograd as the oracle: the same weights through ``torch.nn`` and ``torch.autograd``,
compared with handgrad's hand-written gradients. Needs the ``torch`` extra."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.arrays import float_dtype_name, to_numpy
from handgrad.core.tables import format_table
from handgrad.core.validation import check_array
from handgrad.nn.module import slots_arrays
from handgrad.nn.registry import torch_counterpart

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

    Parameters
    ----------
    model : Sequential or layer
        handgrad layers, each with a PyTorch counterpart.

    Returns
    -------
    torch.nn.Sequential
        The same layers in ``torch.nn``, holding copies of the weights.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.interop.oracle import to_torch_module
    >>> to_torch_module(hg.mlp([4, 3, 2], rng=0))
    Sequential(
      (0): Linear(in_features=4, out_features=3, bias=True)
      (1): Sigmoid()
      (2): Linear(in_features=3, out_features=2, bias=True)
    )
    """
    torch = _torch()
    module = torch_counterpart(model)
    state = {
        **slots_arrays(model, "params"),
        **(slots_arrays(model, "buffers") if hasattr(model, "buffers") else {}),
    }
    weights = {k: torch.from_numpy(np.array(to_numpy(v))) for k, v in state.items()}
    dtypes = {w.dtype for w in weights.values() if w.is_floating_point()}
    if dtypes:
        module = module.to(dtypes.pop())
    module.load_state_dict(weights, strict=True)
    if getattr(model, "training", True) is False:
        module.eval()
    return module


def _check_loss(loss: Any) -> None:
    if not hasattr(loss, "torch_loss"):
        raise TypeError(
            f"loss must be one of handgrad's losses (CrossEntropyLoss, NLLLoss, MSELoss, ...) "
            f"to compare with autograd, got {type(loss).__name__}"
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
    >>> result.passed, result.threshold, result.max_relative_difference < 1e-12
    (True, 1e-12, True)
    >>> sorted(result.to_dict())
    ['arrays', 'loss', 'passed', 'threshold']
    """

    names: tuple[str, ...]
    max_abs_diff: tuple[float, ...]
    max_rel_diff: tuple[float, ...]
    loss_handgrad: float
    loss_autograd: float
    threshold: float

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
        """True when every relative difference is within ``threshold``."""
        return self.max_relative_difference <= self.threshold

    @property
    def rtol(self) -> float:
        """The old name of :attr:`threshold`."""
        return self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "passed": self.passed,
            "threshold": self.threshold,
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
            f"{self.max_relative_difference:.2e}, tolerance {self.threshold:g})\n"
            + format_table(["", "max abs diff", "max rel diff"], rows)
        )


def compare_with_autograd(
    model: Any,
    loss: Any,
    x: Any,
    y: Any,
    *,
    threshold: float | None = None,
    rtol: float | None = None,
) -> AutogradComparison:
    """Run the same weights and batch through ``torch.nn`` and autograd; compare gradients.

    ``model`` holds handgrad layers (see :func:`to_torch_module`); it computes in its own
    dtype, and autograd in the same one. ``threshold`` (the relative tolerance, the word the
    gradient check uses too; ``rtol`` is its deprecated name) defaults to 1e-12 in float64 and 1e-5
    in float32; it only sets ``passed``. After the call the model's ``grads`` hold the
    gradients of this batch.

    Parameters
    ----------
    model : Sequential or layer
        handgrad layers, each with a PyTorch counterpart.
    loss : loss
        A handgrad loss with a PyTorch counterpart, such as
        :class:`~handgrad.CrossEntropyLoss`.
    x : array
        The batch's input.
    y : array
        The batch's targets.
    threshold : float, optional
        The relative tolerance that sets ``passed`` (1e-12 in float64, 1e-5 in float32).
    rtol : float, optional
        Deprecated name of ``threshold``.

    Returns
    -------
    AutogradComparison
        The largest absolute and relative difference per array, ``"x"`` first.

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
    if rtol is not None:
        warnings.warn(
            "compare_with_autograd's rtol is deprecated: pass threshold",
            DeprecationWarning,
            stacklevel=2,
        )
        threshold = rtol if threshold is None else threshold
    threshold = _TOLERANCE[dtype] if threshold is None else threshold
    value = float(loss.forward(model.forward(x), y))
    ours = {"x": to_numpy(model.backward(loss.backward()))}
    ours.update((name, to_numpy(grad)) for name, grad in model.grads.items())

    x_t = torch.from_numpy(np.array(to_numpy(x))).requires_grad_(True)
    y_t = torch.from_numpy(np.array(to_numpy(y)))
    if not torch.is_floating_point(y_t):
        y_t = y_t.to(torch.int64)
    reference = loss.torch_loss(module(x_t), y_t)
    reference.backward()
    theirs = {"x": x_t.grad, **{k: p.grad for k, p in module.named_parameters()}}
    missing = sorted(set(ours) - set(theirs))
    if missing:
        raise KeyError(f"the torch counterpart has no parameters named {missing}")

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
        threshold=threshold,
    )
