"""Faster perturbed forwards for handgrad's own layers and losses, kept with the checker
(the layers know nothing of it). A perturbation of one weight element changes one output
column of a Linear layer, so its perturbed copies are formed as columns, without copying the
weight; a changed input column changes a Linear layer's output by a rank-one term; and the
cross-entropy of logits changed by a rank-one term is computed from the softmax at the
unperturbed logits, without forming the copies.

Each shortcut assumes the layer computes what its type's ``forward`` computes, so it is used
only for a layer whose class keeps that ``forward`` (a subclass that changes only
``backward``, as a deliberately wrong one in a test, still qualifies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.core.arrays import namespace
from handgrad.nn.functional import affine, log_softmax
from handgrad.nn.layers import Linear
from handgrad.nn.losses import CrossEntropyLoss

__all__ = ["CrossEntropyChanges", "forward_columns", "perturbed_columns", "rank_one_columns"]

RANK_ONE_LIMIT = 1.0  # the largest |change of a logit| the cross-entropy shortcut takes


def _keeps_forward(layer: Any, cls: type) -> bool:
    kind = type(layer)
    return (
        isinstance(layer, cls)
        and kind.forward is cls.forward
        and kind.forward_unchecked is cls.forward_unchecked
    )


def _linear_perturbed_columns(
    layer: Linear, x: Any, name: str, index: Any, moves: Any, y: Any = None
) -> tuple[Any, Any]:
    """Outputs for ``x`` (batch, in) when element ``index[i]`` (flat) of ``params[name]``
    moves by ``moves[i]``, one copy per i: the changed column (output unit) of each copy and
    its values, (P,) and (P, batch). ``y`` is the unperturbed output, if known."""
    xp = namespace(x, layer.params["weight"])
    y = affine(x, layer.params["weight"], layer.params.get("bias")) if y is None else y
    if name == "weight":
        rows, cols = index // layer.in_features, index % layer.in_features
        # (W + s e_i e_j^T) x = W x + s x_j e_i: only unit i changes, by s x_j
        change = moves[:, None] * xp.take(x, cols, axis=1).mT  # P,B
    else:
        rows, change = index, moves[:, None]
    return rows, xp.take(y, rows, axis=1).mT + change


def _linear_rank_one(layer: Linear, x: Any, columns: Any, values: Any) -> tuple[Any, Any]:
    """The change of the output for copies of ``x`` (batch, in) whose column ``columns[i]``
    is replaced by ``values[i]`` (batch,): copy i's output is ``y + outer(delta[i],
    vectors[i])``, delta (P, batch) and vectors (P, out)."""
    xp = namespace(x, layer.params["weight"])
    # a new column j adds (v - x_j) W[:, j]^T: a rank-one change per copy
    delta = values - xp.take(x, columns, axis=1).mT  # P,B
    return delta, xp.take(layer.params["weight"], columns, axis=1).mT  # P,out


def _linear_forward_columns(layer: Linear, x: Any, columns: Any, values: Any, y: Any = None) -> Any:
    """Outputs, (P, batch, out), for copies of ``x`` (batch, in) whose column
    ``columns[i]`` is replaced by ``values[i]`` (batch,). ``y`` is the output at ``x``, if
    known."""
    y = affine(x, layer.params["weight"], layer.params.get("bias")) if y is None else y
    delta, weight_columns = _linear_rank_one(layer, x, columns, values)
    return y[None, ...] + delta[:, :, None] * weight_columns[:, None, :]


def perturbed_columns(layer: Any) -> Callable[..., tuple[Any, Any]] | None:
    """``f(x, name, index, moves, y=None) -> (columns, values)`` for ``layer``, or None."""
    if _keeps_forward(layer, Linear):
        return lambda *args, **kwargs: _linear_perturbed_columns(layer, *args, **kwargs)
    return None


def forward_columns(layer: Any) -> Callable[..., Any] | None:
    """``f(x, columns, values, y=None) -> (copies, batch, out)`` for ``layer``, or None."""
    if _keeps_forward(layer, Linear):
        return lambda *args, **kwargs: _linear_forward_columns(layer, *args, **kwargs)
    return None


def rank_one_columns(layer: Any) -> Callable[..., tuple[Any, Any]] | None:
    """``f(x, columns, values) -> (delta, vectors)`` for ``layer``, or None: copies of ``x``
    whose column ``columns[i]`` is replaced by ``values[i]`` give the outputs ``y +
    outer(delta[i], vectors[i])``."""
    if _keeps_forward(layer, Linear):
        return lambda *args: _linear_rank_one(layer, *args)
    return None


class CrossEntropyChanges:
    """Changes of a :class:`~handgrad.nn.losses.CrossEntropyLoss` for copies of its logits
    ``z`` changed by a rank-one term each, ``z + outer(delta[i], vectors[i])``, from the
    softmax ``s`` at ``z``; None where the loss is another one, the arrays are not float64
    NumPy, or a logit moves by more than ``RANK_ONE_LIMIT``. With targets ``t`` (one-hot
    rows for class indices), ``T_b = sum_c t_bc`` and the loss' scale ``k`` (1 / batch
    for the mean), a copy's change is::

        k sum_b [T_b log1p(sum_c s_bc expm1(delta_b w_c)) - delta_b (t_b . w)]

    since ``lse(z_b + delta_b w) - lse(z_b) = log(sum_c s_bc exp(delta_b w_c))`` and the
    softmax sums to 1. ``expm1`` and ``log1p`` keep the change to its own precision
    (the dense way rounds it as part of the whole loss), and the work per copy is a few
    passes over (batch, classes) instead of a dense log-softmax.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.shortcuts import CrossEntropyChanges
    >>> z, y = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]), np.array([0, 2])
    >>> loss = hg.CrossEntropyLoss()
    >>> changes = CrossEntropyChanges.of(loss, y, z)
    >>> delta, w = np.array([[1e-3, -2e-3]]), np.array([[1.0, 0.0, 2.0]])
    >>> dense = float(loss.forward(z + np.outer(delta[0], w[0]), y) - loss.forward(z, y))
    >>> bool(np.isclose(changes(delta, w)[0], dense, rtol=1e-9, atol=0))
    True
    """

    def __init__(
        self, softmax: np.ndarray, target: np.ndarray, scale: float, classes: Any = None
    ) -> None:
        self.softmax, self.target, self.scale = softmax, target, scale  # B,C; B,C
        self.classes = classes  # B: the class of each one-hot row, when targets are indices
        self.totals = target.sum(axis=1)  # B

    @classmethod
    def of(cls, loss: Any, target: Any, logits: Any) -> CrossEntropyChanges | None:
        """The shortcut for ``loss`` at ``logits`` (batch, classes) against ``target``, or
        None when it does not apply."""
        kind = type(loss)
        if not (
            isinstance(loss, CrossEntropyLoss)
            and kind.forward is CrossEntropyLoss.forward
            and kind.forward_unchecked is CrossEntropyLoss.forward_unchecked
        ):
            return None
        arrays = (logits, target)
        if not all(type(a) is np.ndarray for a in arrays) or logits.dtype != np.float64:
            return None
        if logits.ndim != 2 or not np.all(np.isfinite(logits)):
            return None
        batch, classes = logits.shape
        indices = None
        if np.issubdtype(target.dtype, np.integer) and target.shape == (batch,):
            indices = np.asarray(target, dtype=np.intp)
            t = np.zeros((batch, classes))
            t[np.arange(batch), indices] = 1.0
        elif np.issubdtype(target.dtype, np.floating) and target.shape == logits.shape:
            t = np.asarray(target, dtype=np.float64)
        else:
            return None
        softmax = np.exp(log_softmax(np, logits))
        return cls(softmax, t, 1.0 / batch if loss.reduction == "mean" else 1.0, indices)

    def __call__(self, delta: Any, vectors: Any) -> np.ndarray | None:
        """The loss changes, (P,), of the copies given by ``delta`` (P, B) and ``vectors``
        (P, C); None when they are not float64 NumPy or a logit moves too far."""
        if type(delta) is not np.ndarray or type(vectors) is not np.ndarray:
            return None
        reach = np.max(np.abs(delta), axis=1) * np.max(np.abs(vectors), axis=1)  # P
        if not np.all(reach <= RANK_ONE_LIMIT):  # NaN too: the dense way says what happened
            return None
        moves = delta[:, :, None] * vectors[:, None, :]  # P,B,C
        np.expm1(moves, out=moves)
        # lse(z + d w) - lse(z) = log1p(sum_c s_c expm1(d w_c)), per copy and sample
        shifted = np.log1p(np.einsum("pbc,bc->pb", moves, self.softmax))  # P,B
        if self.classes is not None:  # one-hot rows: t_b . w = w[class of b]
            linear = delta * vectors[:, self.classes]  # P,B
        else:
            linear = delta * np.einsum("pc,bc->pb", vectors, self.target)  # P,B: d (t . w)
        return self.scale * (np.einsum("pb,b->p", shifted, self.totals) - linear.sum(axis=1))
