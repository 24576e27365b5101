"""Losses with hand-derived gradients: ``loss.forward(pred, target)`` returns a scalar
(a 0-d array of the input's library) and ``loss.backward()`` returns dL/dpred.

``pred`` may also carry leading axes, stacked copies of a batch against the same target;
the loss is then one value per copy (the batched gradient check evaluates many perturbed
copies of a model this way)."""

from __future__ import annotations

import math
from typing import Any

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_array, check_choice, check_not_empty
from handgrad.nn.functional import log_softmax

__all__ = ["CrossEntropyLoss", "MSELoss", "NLLLoss"]


class _Loss:
    broadcasts = True  # takes stacked copies of pred, one loss per copy

    def __init__(self, reduction: str = "mean") -> None:
        self.reduction = check_choice(reduction, "reduction", ("mean", "sum"))
        self._cache: tuple | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reduction={self.reduction!r})"

    def backward(self) -> Any:
        """Return dL/dpred for the last ``forward``."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._backward(*self._cache)

    def _backward(self, *cache: Any) -> Any:
        raise NotImplementedError


def _target_distribution(xp: Any, target: Any, pred: Any, pred_name: str) -> Any:
    """Targets as a (batch, classes) array of pred's dtype: class indices become one-hot rows."""
    check_not_empty(pred, pred_name, last=2, needs="at least one example and one class")
    batch, classes = pred.shape[-2:]
    check_array(target, "target", floating=False, finite=False)
    if namespace(target) is not xp:
        namespace(target, pred)  # raises the error that names both libraries
    if xp.isdtype(target.dtype, "integral"):
        if target.ndim != 1 or target.shape[0] != batch:
            raise ValueError(
                f"target of class indices must have shape ({batch},) to match {pred_name} "
                f"{tuple(pred.shape)}, got {tuple(target.shape)}"
            )
        low, high = int(xp.min(target)), int(xp.max(target))
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(
                f"target holds class index {bad} but {pred_name} has {classes} classes "
                f"(valid indices 0 to {classes - 1})"
            )
        columns = xp.arange(classes, dtype=target.dtype, device=target.device)
        return xp.astype(xp.reshape(target, (batch, 1)) == columns, pred.dtype)
    if not xp.isdtype(target.dtype, "real floating"):
        raise TypeError(
            f"target must hold integer class indices or floating-point class probabilities, "
            f"got dtype {target.dtype}"
        )
    check_array(target, "target", ndim=2, layout="(batch, classes)")
    if tuple(target.shape) != tuple(pred.shape[-2:]):
        raise ValueError(
            f"target of class probabilities must have the shape of {pred_name} "
            f"{tuple(pred.shape[-2:])}, got {tuple(target.shape)}"
        )
    return xp.astype(target, pred.dtype)


class CrossEntropyLoss(_Loss):
    """Softmax and negative log-likelihood fused, from logits.

    ``target`` is either integer class indices of shape (batch,) or class probabilities
    (one-hot or soft) of shape (batch, classes). ``reduction='mean'`` divides by the batch.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> loss = hg.CrossEntropyLoss()
    >>> logits = np.array([[2.0, 0.0], [0.0, 1.0]])
    >>> round(float(loss.forward(logits, np.array([0, 1]))), 4)  # class indices
    0.2201
    >>> print(loss.backward().round(4))  # (softmax(logits) - one_hot) / batch
    [[-0.0596  0.0596]
     [ 0.1345 -0.1345]]
    >>> round(float(loss.forward(logits, np.eye(2))), 4)  # the same targets as probabilities
    0.2201
    """

    def forward(self, logits: Any, target: Any) -> Any:
        """Return the loss of ``logits`` (batch, classes) against ``target``."""
        xp = check_array(logits, "logits", min_ndim=2, layout="(batch, classes)")
        return self.forward_unchecked(logits, _target_distribution(xp, target, logits, "logits"))

    def forward_unchecked(self, logits: Any, t: Any, one_hot: bool = False) -> Any:
        """:meth:`forward` from targets ``t`` already as (batch, classes) probabilities,
        without checks; ``one_hot=True`` promises rows that sum to 1."""
        xp = namespace(logits)
        scale = 1.0 / logits.shape[-2] if self.reduction == "mean" else 1.0
        log_p = log_softmax(xp, logits)
        self._cache = (xp, log_p, t, scale, one_hot)
        return -xp.sum(t * log_p, axis=(-2, -1)) * scale

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.CrossEntropyLoss``. Needs PyTorch."""
        import torch

        return torch.nn.CrossEntropyLoss(reduction=self.reduction)(output, target)

    def _backward(self, xp: Any, log_p: Any, t: Any, scale: float, one_hot: bool) -> Any:
        # dL/dz = p * sum_j t_j - t  (= p - t for one-hot or normalised targets)
        if one_hot:
            return (xp.exp(log_p) - t) * scale
        return (xp.exp(log_p) * xp.sum(t, axis=-1, keepdims=True) - t) * scale


class NLLLoss(_Loss):
    """Negative log-likelihood of log-probabilities (the output of ``LogSoftmax``).

    ``target`` is integer class indices of shape (batch,) or class probabilities of shape
    (batch, classes): the loss is ``-sum(t * log_p)``, divided by the batch for 'mean'.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> log_p = np.log(np.array([[0.5, 0.5], [0.2, 0.8]]))
    >>> loss = hg.NLLLoss(reduction="sum")
    >>> round(float(loss.forward(log_p, np.array([0, 1]))), 4)  # -(log 0.5 + log 0.8)
    0.9163
    >>> np.array_equal(loss.backward(), -np.eye(2))  # dL/dlog_p = -one_hot
    True
    """

    def forward(self, log_probs: Any, target: Any) -> Any:
        """Return the loss of ``log_probs`` (batch, classes) against ``target``."""
        xp = check_array(log_probs, "log_probs", min_ndim=2, layout="(batch, classes)")
        t = _target_distribution(xp, target, log_probs, "log_probs")
        scale = 1.0 / log_probs.shape[-2] if self.reduction == "mean" else 1.0
        self._cache = (xp, t, scale, tuple(log_probs.shape))
        return -xp.sum(t * log_probs, axis=(-2, -1)) * scale

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss in PyTorch: ``torch.nn.NLLLoss`` for class indices, the sum
        ``-(target * output)`` for probabilities (which NLLLoss does not take)."""
        import torch

        if not torch.is_floating_point(target):
            return torch.nn.NLLLoss(reduction=self.reduction)(output, target)
        total = -(target * output).sum()
        return total / output.shape[0] if self.reduction == "mean" else total

    def _backward(self, xp: Any, t: Any, scale: float, shape: tuple[int, ...]) -> Any:
        # dL/dlog_p = -t, for each stacked copy of the batch
        grad = -t * scale
        if tuple(grad.shape) != shape:
            grad = xp.asarray(xp.broadcast_to(grad, shape), copy=True)
        return grad


class MSELoss(_Loss):
    """Squared error, summed or averaged over every element (as ``torch.nn.MSELoss``).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> loss = hg.MSELoss()
    >>> float(loss.forward(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]])))  # (1 + 4) / 2
    2.5
    >>> print(loss.backward())  # 2 (pred - target) / 2 elements
    [[1. 2.]]
    """

    def forward(self, pred: Any, target: Any) -> Any:
        """Return the loss of ``pred`` against a ``target`` of the same shape."""
        xp = check_array(pred, "pred")
        check_not_empty(pred, "pred")
        check_array(target, "target")
        namespace(pred, target)
        copies = pred.ndim - target.ndim  # leading axes of stacked copies
        if copies < 0 or tuple(pred.shape[copies:]) != tuple(target.shape):
            raise ValueError(
                f"target must have the shape of pred {tuple(pred.shape)}, got {tuple(target.shape)}"
            )
        scale = 1.0 / math.prod(target.shape) if self.reduction == "mean" else 1.0
        diff = pred - xp.astype(target, pred.dtype)
        self._cache = (diff, scale)
        return xp.sum(diff * diff, axis=tuple(range(copies, pred.ndim))) * scale

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.MSELoss``. Needs PyTorch."""
        import torch

        return torch.nn.MSELoss(reduction=self.reduction)(output, target)

    def _backward(self, diff: Any, scale: float) -> Any:
        # dL/dpred = 2 (pred - target)
        return 2 * diff * scale
