"""Faster perturbed forwards for handgrad's own layers, kept with the checker (the layers
know nothing of it). A perturbation of one weight element changes one output column of a
Linear layer, so its perturbed copies are formed as columns, without copying the weight.

Each shortcut assumes the layer computes what its type's ``forward`` computes, so it is used
only for a layer whose class keeps that ``forward`` (a subclass that changes only
``backward``, as a deliberately wrong one in a test, still qualifies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from handgrad.core.arrays import namespace
from handgrad.nn.functional import affine
from handgrad.nn.layers import Linear

__all__ = ["forward_columns", "perturbed_columns"]


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


def _linear_forward_columns(layer: Linear, x: Any, columns: Any, values: Any, y: Any = None) -> Any:
    """Outputs, (P, batch, out), for copies of ``x`` (batch, in) whose column
    ``columns[i]`` is replaced by ``values[i]`` (batch,). ``y`` is the output at ``x``, if
    known."""
    xp = namespace(x, layer.params["weight"])
    y = affine(x, layer.params["weight"], layer.params.get("bias")) if y is None else y
    # a new column j adds (v - x_j) W[:, j]^T: a rank-one change per copy
    delta = values - xp.take(x, columns, axis=1).mT  # P,B
    weight_columns = xp.take(layer.params["weight"], columns, axis=1).mT  # P,out
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
