"""Finite-difference estimates of gradients: stencils, steps, and two ways to evaluate the
loss at perturbed parameters.

- The *loop* perturbs one element in place, runs the whole model, and restores it: it works
  for anything, and is slow.
- The *batched* way evaluates many perturbed copies in one pass: a leading perturbation axis
  that the layers broadcast over. Only the perturbed layer and those after it run again, and
  a layer may form its perturbed outputs from its input directly (``perturbed_forward``,
  e.g. Linear's rank-one update), in chunks sized to a memory budget.

Both compute the same displacements (the step as stored in float64), so they agree up to
the rounding of the loss itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from handgrad.backend import convert, namespace, to_numpy

__all__ = ["BatchedEvaluator", "LoopEvaluator", "Stencil", "estimate", "make_stencil", "steps"]


@dataclass(frozen=True)
class Stencil:
    """``derivative ~= sum_k weights[k] * L(p + offsets[k] * h) / h``, error O(h^order)."""

    name: str
    offsets: tuple[float, ...]
    weights: tuple[float, ...]
    order: int


def make_stencil(stencil: str = "central", richardson: int = 0) -> Stencil:
    """The central difference (O(h^2)), the 4-point stencil (O(h^4)), or the central
    difference extrapolated by Richardson over h, h/2, ..., h/2^richardson."""
    if stencil not in ("central", "4-point"):
        raise ValueError(f"stencil must be 'central' or '4-point', got {stencil!r}")
    if isinstance(richardson, bool) or not isinstance(richardson, int) or richardson < 0:
        raise ValueError(f"richardson must be an integer >= 0, got {richardson!r}")
    if stencil == "4-point":
        if richardson:
            raise ValueError("richardson extrapolates the central stencil; use one or the other")
        return Stencil("4-point", (2.0, 1.0, -1.0, -2.0), (-1 / 12, 8 / 12, -8 / 12, 1 / 12), 4)
    # Richardson tableau: R_m(h) = (4^m R_{m-1}(h/2) - R_{m-1}(h)) / (4^m - 1), R_0 = central.
    coefficients = [1.0]  # weight of the central difference at h / 2^m
    for m in range(1, richardson + 1):
        shifted = [0.0, *coefficients]
        padded = [*coefficients, 0.0]
        coefficients = [(4**m * s - p) / (4**m - 1) for s, p in zip(shifted, padded, strict=True)]
    offsets, weights = [], []
    for m, c in enumerate(coefficients):
        h_m = 0.5**m  # central difference at h_m: (L(+h_m) - L(-h_m)) / (2 h_m)
        offsets += [h_m, -h_m]
        weights += [c / (2 * h_m), -c / (2 * h_m)]
    name = "central" if not richardson else f"central + Richardson x{richardson}"
    return Stencil(name, tuple(offsets), tuple(weights), 2 + 2 * richardson)


def steps(values: np.ndarray, eps: float, scaled: bool) -> np.ndarray:
    """The step per element: ``eps``, or ``eps * max(1, |p|)`` when ``scaled``."""
    return eps * np.maximum(1.0, np.abs(values)) if scaled else np.full(values.shape, eps)


def estimate(
    losses_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    values: np.ndarray,
    h: np.ndarray,
    stencil: Stencil,
) -> np.ndarray:
    """Derivative estimates for elements with float64 ``values`` and steps ``h``.

    ``losses_at(k, displacements)`` returns the losses with each element moved by its
    displacement (one stencil offset ``k`` at a time). Displacements are the steps as
    stored: ``fl(p + c h) - p``. The central stencil divides by the stored distance, as the
    seed notebook's loop does; the others by the nominal step.
    """
    total = np.zeros(values.shape, dtype=np.float64)
    stored = []
    for offset, weight in zip(stencil.offsets, stencil.weights, strict=True):
        displacement = (values + offset * h) - values
        stored.append(displacement)
        total += weight * losses_at(offset, displacement)
    if stencil.name == "central":
        up, down = stored
        return total * 2 / (up - down)
    return total / h


class LoopEvaluator:
    """Losses at perturbed points, one element at a time, in place; always restores."""

    def __init__(self, loss_at: Callable[[], float], name: str) -> None:
        self.loss_at = loss_at
        self.name = name

    def __call__(self, p: Any, flat: np.ndarray, displacement: np.ndarray) -> np.ndarray:
        losses = np.empty(flat.shape, dtype=np.float64)
        shape = tuple(p.shape)
        for i, (index, d) in enumerate(zip(flat, displacement, strict=True)):
            where = np.unravel_index(int(index), shape)
            value = float(p[where])
            try:
                p[where] = value + float(d)
                losses[i] = self.loss_at()
            finally:
                p[where] = value
            if not math.isfinite(losses[i]):
                raise ValueError(
                    f"the loss is {losses[i]} when {self.name}{list(map(int, where))} moves by "
                    f"{float(d):+g}; check the model there or use a smaller eps"
                )
        return losses


class BatchedEvaluator:
    """Losses of many perturbed copies at once, for a chain of layers and a loss ``head``.

    ``head(stack)`` maps the last layer's outputs, with a leading axis of copies, to one
    loss per copy. The layer inputs of the unperturbed forward pass are kept, so a
    perturbation in layer k re-runs only layers k, k+1, ...
    """

    def __init__(
        self,
        layers: Sequence[Any],
        x: Any,
        head: Callable[[Any], Any],
        max_memory: int,
    ) -> None:
        self.layers = list(layers)
        self.head = head
        self.inputs = [x]
        for layer in self.layers:
            self.inputs.append(layer.forward(self.inputs[-1]))
        self.xp = namespace(x)
        self.max_memory = max_memory

    def chunk_size(self, k: int) -> int:
        """Copies per pass so that the stacked activations of layers k.. fit the budget."""
        itemsize = 8
        per_copy = sum(math.prod(a.shape) for a in self.inputs[k:]) * itemsize * 4
        return max(1, int(self.max_memory // max(per_copy, 1)))

    def losses(self, k: int | None, name: str, p: Any, flat: np.ndarray, d: np.ndarray) -> Any:
        """Losses with element ``flat[i]`` of ``p`` moved by ``d[i]``, for each i.

        ``k`` is the index of the layer that owns ``p``, or None when ``p`` is the input.
        """
        xp = self.xp
        device = array_api_compat.device(self.inputs[0])
        out = np.empty(flat.shape, dtype=np.float64)
        size = self.chunk_size(0 if k is None else k)
        for start in range(0, flat.shape[0], size):
            part, moves = flat[start : start + size], d[start : start + size]
            if k is None:
                stack = _perturbed_stack(xp, self.inputs[0], part, moves, device)
                first = 0
            else:
                stack = self._perturbed_outputs(k, name, p, part, moves, device)
                first = k + 1
            for layer in self.layers[first:]:
                stack = layer.forward(stack)
            values = self.head(stack)
            if tuple(values.shape) != (part.shape[0],):
                raise ValueError(f"the loss of stacked copies has shape {tuple(values.shape)}")
            out[start : start + size] = np.asarray(to_numpy(values), dtype=np.float64)
        return out

    def _perturbed_outputs(
        self, k: int, name: str, p: Any, flat: np.ndarray, d: np.ndarray, device: Any
    ) -> Any:
        layer, x = self.layers[k], self.inputs[k]
        if hasattr(layer, "perturbed_forward"):
            index = convert(flat, self.xp, device=device)
            moves = convert(d, self.xp, dtype=p.dtype, device=device)
            return layer.perturbed_forward(x, name, index, moves)
        copies = []  # no shortcut: one forward of this layer per copy, in place and restored
        shape = tuple(p.shape)
        for index, move in zip(flat, d, strict=True):
            where = np.unravel_index(int(index), shape)
            value = float(p[where])
            try:
                p[where] = value + float(move)
                copies.append(layer.forward(x))
            finally:
                p[where] = value
        return self.xp.stack(copies)


def _perturbed_stack(xp: Any, x: Any, flat: Any, d: np.ndarray, device: Any) -> Any:
    """Copies of ``x``, copy i with element ``flat[i]`` moved by ``d[i]``."""
    size = math.prod(x.shape)
    onehot = np.zeros((flat.shape[0], size))
    onehot[np.arange(flat.shape[0]), flat] = d
    moves = convert(onehot.reshape((flat.shape[0], *x.shape)), xp, dtype=x.dtype, device=device)
    return x[None, ...] + moves
