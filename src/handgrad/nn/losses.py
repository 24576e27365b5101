"""Losses with hand-derived gradients: ``loss.forward(pred, target)`` returns a scalar
(a 0-d array of the input's library) and ``loss.backward()`` returns dL/dpred.

``pred`` may also carry leading axes, stacked copies of a batch against the same target;
the loss is then one value per copy (the batched gradient check evaluates many perturbed
copies of a model this way)."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from handgrad.core.arrays import namespace, to_numpy
from handgrad.core.validation import (
    check_array,
    check_choice,
    check_not_empty,
    check_positive_float,
)
from handgrad.nn.functional import log_softmax, softplus

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "MSELoss",
    "NLLLoss",
    "PoissonNLLLoss",
    "SequenceCrossEntropyLoss",
]


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

    def forward_unchecked(
        self, logits: Any, t: Any, one_hot: bool = False, row_weight: Any = None
    ) -> Any:
        """:meth:`forward` from targets ``t`` already as (batch, classes) probabilities,
        without checks; ``one_hot=True`` promises rows that sum to 1. ``row_weight``
        (batch,) multiplies each example's loss before the reduction."""
        xp = namespace(logits)
        scale = 1.0 / logits.shape[-2] if self.reduction == "mean" else 1.0
        log_p = log_softmax(xp, logits)
        if row_weight is not None:
            t = t * row_weight[:, None]  # the loss is linear in t: weighted rows
        self._cache = (xp, log_p, t, scale, one_hot and row_weight is None)
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
        return self.forward_unchecked(pred, xp.astype(target, pred.dtype))

    def forward_unchecked(self, pred: Any, target: Any, row_weight: Any = None) -> Any:
        """:meth:`forward` without checks, for ``target`` of pred's dtype; ``row_weight``
        (batch,) multiplies each example's loss before the reduction."""
        xp = namespace(pred)
        scale = 1.0 / math.prod(target.shape) if self.reduction == "mean" else 1.0
        diff = pred - target
        weighted = diff if row_weight is None else diff * _rows(xp, row_weight, target.ndim)
        self._cache = (weighted, scale)
        axes = tuple(range(pred.ndim - target.ndim, pred.ndim))  # all but stacked copies
        return xp.sum(diff * weighted, axis=axes) * scale

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.MSELoss``. Needs PyTorch."""
        import torch

        return torch.nn.MSELoss(reduction=self.reduction)(output, target)

    def _backward(self, weighted: Any, scale: float) -> Any:
        # dL/dpred = 2 w (pred - target)
        return 2 * weighted * scale


def _rows(xp: Any, row_weight: Any, ndim: int) -> Any:
    """Row weights (batch,) shaped to multiply a (batch, ...) array of ``ndim`` axes."""
    return xp.reshape(row_weight, (-1,) + (1,) * (ndim - 1))


def _matching_target(xp: Any, pred: Any, target: Any, pred_name: str) -> Any:
    """``target`` checked to have the shape of ``pred`` (less any stacked copies), as
    pred's dtype."""
    check_not_empty(pred, pred_name)
    check_array(target, "target")
    namespace(pred, target)
    copies = pred.ndim - target.ndim
    if copies < 0 or tuple(pred.shape[copies:]) != tuple(target.shape):
        raise ValueError(
            f"target must have the shape of {pred_name} {tuple(pred.shape)}, "
            f"got {tuple(target.shape)}"
        )
    return xp.astype(target, pred.dtype)


def _reduce(xp: Any, elementwise: Any, target: Any, reduction: str) -> Any:
    """Sum (or mean) over the axes of ``target``: one value per stacked copy."""
    axes = tuple(range(elementwise.ndim - target.ndim, elementwise.ndim))
    total = xp.sum(elementwise, axis=axes)
    return total / math.prod(target.shape) if reduction == "mean" else total


class BCEWithLogitsLoss(_Loss):
    """Sigmoid and binary cross-entropy fused, from logits, as ``torch.nn.BCEWithLogitsLoss``.

    Each element is ``-w [p t log s(z) + (1 - t) log(1 - s(z))]`` with ``s`` the sigmoid,
    ``t`` the target in [0, 1] of the logits' shape, ``w`` the optional ``weight`` and ``p``
    the optional ``pos_weight`` (broadcast against the logits); computed as
    ``w [(1 - t) z + (1 + (p - 1) t) softplus(-z)]``, which never overflows.
    ``reduction='mean'`` divides by the number of elements.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> loss = hg.BCEWithLogitsLoss()
    >>> logits, target = np.array([[0.0, 2.0]]), np.array([[1.0, 0.0]])
    >>> round(float(loss.forward(logits, target)), 4)  # (log 2 + softplus(2)) / 2
    1.41
    >>> print(loss.backward().round(4))  # (sigmoid(z) - t) / 2 elements
    [[-0.25    0.4404]]
    """

    def __init__(self, weight: Any = None, reduction: str = "mean", pos_weight: Any = None) -> None:
        super().__init__(reduction)
        for name, value in (("weight", weight), ("pos_weight", pos_weight)):
            if value is not None:
                check_array(value, name)
        self.weight, self.pos_weight = weight, pos_weight

    def forward(self, logits: Any, target: Any) -> Any:
        """Return the loss of ``logits`` against ``target`` (probabilities, same shape)."""
        xp = check_array(logits, "logits")
        t = _matching_target(xp, logits, target, "logits")
        for extra in (self.weight, self.pos_weight):
            if extra is not None:
                namespace(logits, extra)
        return self.forward_unchecked(logits, t)

    def forward_unchecked(self, logits: Any, t: Any, row_weight: Any = None) -> Any:
        """:meth:`forward` without checks, for ``t`` of the logits' dtype; ``row_weight``
        (batch,) multiplies each example's loss before the reduction."""
        xp = namespace(logits)
        w = self.weight
        if row_weight is not None:
            rows = _rows(xp, row_weight, t.ndim)
            w = rows if w is None else w * rows
        # coefficient of softplus(-z): 1 + (p - 1) t, which is 1 without pos_weight
        c = 1.0 if self.pos_weight is None else 1 + (self.pos_weight - 1) * t
        elementwise = (1 - t) * logits + c * softplus(xp, -logits)
        if w is not None:
            elementwise = elementwise * w
        self._cache = (xp, logits, t, c, w)
        return _reduce(xp, elementwise, t, self.reduction)

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.BCEWithLogitsLoss``. Needs PyTorch."""
        import torch

        extras = {
            name: torch.as_tensor(to_numpy(value), dtype=output.dtype)
            for name, value in (("weight", self.weight), ("pos_weight", self.pos_weight))
            if value is not None
        }
        return torch.nn.BCEWithLogitsLoss(reduction=self.reduction, **extras)(output, target)

    def _backward(self, xp: Any, z: Any, t: Any, c: Any, w: Any) -> Any:
        # dL/dz = w [(1 - t) - c sigmoid(-z)]  (= w (sigmoid(z) - t) without pos_weight)
        grad = (1 - t) - c * _sigmoid(xp, -z)
        if w is not None:
            grad = grad * w
        return grad / math.prod(t.shape) if self.reduction == "mean" else grad


class PoissonNLLLoss(_Loss):
    """Negative log-likelihood of a Poisson target, as ``torch.nn.PoissonNLLLoss``
    (``full=False``): ``exp(z) - t z`` from log-rates ``z`` (``log_input=True``, the
    default) or ``x - t log(x + eps)`` from rates ``x``. ``reduction='mean'`` divides by
    the number of elements.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> loss = hg.PoissonNLLLoss()
    >>> float(loss.forward(np.array([[0.0, 1.0]]), np.array([[1.0, 2.0]])))  # (1 + e - 2) / 2
    0.8591409142295225
    >>> print(loss.backward().round(4))  # (exp(z) - t) / 2 elements
    [[0.     0.3591]]
    """

    def __init__(self, log_input: bool = True, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if not isinstance(log_input, bool):
            raise TypeError(f"log_input must be True or False, got {log_input!r}")
        self.log_input = log_input
        self.eps = check_positive_float(eps, "eps")

    def forward(self, pred: Any, target: Any) -> Any:
        """Return the loss of ``pred`` (log-rates or rates) against counts ``target``."""
        xp = check_array(pred, "pred")
        return self.forward_unchecked(pred, _matching_target(xp, pred, target, "pred"))

    def forward_unchecked(self, pred: Any, t: Any, row_weight: Any = None) -> Any:
        """:meth:`forward` without checks, for ``t`` of pred's dtype; ``row_weight``
        (batch,) multiplies each example's loss before the reduction."""
        xp = namespace(pred)
        if self.log_input:
            rate = xp.exp(pred)
            elementwise = rate - t * pred
        else:
            rate = pred
            elementwise = pred - t * xp.log(pred + self.eps)
        w = None if row_weight is None else _rows(xp, row_weight, t.ndim)
        if w is not None:
            elementwise = elementwise * w
        self._cache = (pred, rate, t, w)
        return _reduce(xp, elementwise, t, self.reduction)

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.PoissonNLLLoss``. Needs PyTorch."""
        import torch

        return torch.nn.PoissonNLLLoss(
            log_input=self.log_input, full=False, eps=self.eps, reduction=self.reduction
        )(output, target)

    def _backward(self, pred: Any, rate: Any, t: Any, w: Any) -> Any:
        # dL/dz = exp(z) - t from log-rates;  dL/dx = 1 - t / (x + eps) from rates
        grad = rate - t if self.log_input else 1 - t / (pred + self.eps)
        if w is not None:
            grad = grad * w
        return grad / math.prod(t.shape) if self.reduction == "mean" else grad


def _sigmoid(xp: Any, x: Any) -> Any:
    e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
    return xp.where(x >= 0, 1.0, e) / (1 + e)


class SequenceCrossEntropyLoss(_Loss):
    """Cross-entropy from logits over a sequence: ``logits`` (batch, time, classes) against
    integer ``target`` (batch, time), positions with ``target == ignore_index`` (or
    ``mask`` False) left out. 'mean' divides by the positions counted, as
    ``torch.nn.CrossEntropyLoss(ignore_index=...)`` on the flattened positions does.

    Targets may have any shape S, the logits then S + (classes,); leading axes beyond
    those are stacked copies, one loss each.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.nn.losses import SequenceCrossEntropyLoss
    >>> loss = SequenceCrossEntropyLoss()
    >>> logits = np.zeros((1, 3, 4))  # (batch, time, classes): uniform predictions
    >>> round(float(loss.forward(logits, np.array([[2, 0, -100]]))), 4)  # log 4, 2 positions
    1.3863
    >>> print(loss.backward()[0].round(3))  # (softmax - one_hot) / 2; the ignored row is 0
    [[ 0.125  0.125 -0.375  0.125]
     [-0.375  0.125  0.125  0.125]
     [ 0.     0.     0.     0.   ]]
    """

    def __init__(self, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
            raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
        self.ignore_index = ignore_index

    def __repr__(self) -> str:
        return (
            f"SequenceCrossEntropyLoss(ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r})"
        )

    def forward(self, logits: Any, target: Any, mask: Any = None) -> Any:
        """Return the loss of ``logits`` (..., batch, time, classes) against ``target``
        (batch, time) of class indices; ``mask`` (batch, time), if given, is True where a
        position counts."""
        xp = check_array(logits, "logits", min_ndim=2, layout="(batch, time, classes)")
        check_array(target, "target", floating=False, finite=False)
        namespace(logits, target)
        if not xp.isdtype(target.dtype, "integral"):
            raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
        shape, classes = tuple(target.shape), logits.shape[-1]
        if target.ndim == 0 or tuple(logits.shape[-1 - target.ndim : -1]) != shape:
            raise ValueError(
                f"logits must have shape (..., {', '.join(map(str, shape))}, classes) for "
                f"target of shape {shape}, got {tuple(logits.shape)}"
            )
        check_not_empty(logits, "logits", last=1, needs="at least one class")
        valid = target != self.ignore_index
        if mask is not None:
            check_array(mask, "mask", floating=False, finite=False)
            if mask.dtype != xp.bool or tuple(mask.shape) != shape:
                raise ValueError(
                    f"mask must be a boolean array of the target's shape {shape}, got "
                    f"{mask.dtype} of shape {tuple(mask.shape)}"
                )
            valid = valid & mask
        counted = int(xp.sum(xp.astype(valid, xp.int64)))
        if counted == 0:
            raise ValueError(
                f"no position counts: every target is ignore_index ({self.ignore_index}) or "
                "masked out, so the mean is undefined"
            )
        picked = target[valid]
        low, high = int(xp.min(picked)), int(xp.max(picked))
        if low < 0 or high >= classes:
            raise ValueError(
                f"target holds class index {low if low < 0 else high} but logits have "
                f"{classes} classes (valid indices 0 to {classes - 1}, or ignore_index "
                f"{self.ignore_index})"
            )
        return self.forward_unchecked(logits, target, valid, counted)

    def forward_unchecked(self, logits: Any, target: Any, valid: Any, counted: int) -> Any:
        """:meth:`forward` from the positions that count (``valid``, boolean, and their
        number), without checks."""
        xp = namespace(logits)
        classes = xp.arange(
            logits.shape[-1], dtype=target.dtype, device=array_api_compat.device(target)
        )
        weight = xp.astype(valid, logits.dtype)[..., None]  # B,T,1
        t = xp.astype(target[..., None] == classes, logits.dtype) * weight  # one-hot rows
        scale = 1.0 / counted if self.reduction == "mean" else 1.0
        log_p = log_softmax(xp, logits)
        self._cache = (xp, log_p, t, weight, scale)
        axes = tuple(range(logits.ndim - target.ndim - 1, logits.ndim))
        return -xp.sum(t * log_p, axis=axes) * scale

    def torch_loss(self, output: Any, target: Any, mask: Any = None) -> Any:
        """The same loss by ``torch.nn.functional.cross_entropy`` on the flattened positions
        (masked positions given ``ignore_index``). Needs PyTorch."""
        import torch

        if mask is not None:
            target = torch.where(mask, target, self.ignore_index)
        return torch.nn.functional.cross_entropy(
            output.reshape(-1, output.shape[-1]),
            target.reshape(-1),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def _backward(self, xp: Any, log_p: Any, t: Any, weight: Any, scale: float) -> Any:
        # dL/dz = (softmax(z) - one_hot) at each counted position, 0 at the others
        return (xp.exp(log_p) * weight - t) * scale


class HuberLoss(_Loss):
    """Huber loss, as ``torch.nn.HuberLoss``: ``d^2 / 2`` where ``|d| <= delta`` and
    ``delta (|d| - delta / 2)`` beyond, for ``d = pred - target``, summed or averaged over
    every element.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.nn.losses import HuberLoss
    >>> loss = HuberLoss(delta=1.0, reduction="sum")
    >>> float(loss.forward(np.array([[0.5, 3.0]]), np.zeros((1, 2))))  # 0.125 + 2.5
    2.625
    >>> print(loss.backward())  # d clipped to [-delta, delta]
    [[0.5 1. ]]
    """

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction)
        self.delta = check_positive_float(delta, "delta")

    def __repr__(self) -> str:
        return f"HuberLoss(reduction={self.reduction!r}, delta={self.delta})"

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
        d = pred - xp.astype(target, pred.dtype)
        size = xp.abs(d)
        inside = size <= self.delta
        terms = xp.where(inside, 0.5 * d * d, self.delta * (size - 0.5 * self.delta))
        self._cache = (xp, d, scale)
        return xp.sum(terms, axis=tuple(range(copies, pred.ndim))) * scale

    def torch_loss(self, output: Any, target: Any) -> Any:
        """The same loss computed by ``torch.nn.HuberLoss``. Needs PyTorch."""
        import torch

        return torch.nn.HuberLoss(reduction=self.reduction, delta=self.delta)(output, target)

    def _backward(self, xp: Any, d: Any, scale: float) -> Any:
        # dL/dpred = d where |d| <= delta, delta sign(d) beyond: d clipped to [-delta, delta]
        return xp.clip(d, -self.delta, self.delta) * scale
