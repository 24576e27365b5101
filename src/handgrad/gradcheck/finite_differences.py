"""Finite-difference estimates of gradients: stencils, steps, and two ways to evaluate the
loss at perturbed parameters.

- The *loop* perturbs one element in place, runs the whole model, and restores it: it works
  for anything, and is slow.
- The *batched* way evaluates many perturbed copies in one pass: a leading perturbation axis
  that the layers broadcast over. Only the perturbed layer and those after it run again, and
  a layer may form its perturbed outputs from its input directly (``perturbed_forward``,
  e.g. Linear's rank-one update), in chunks sized to a memory budget by what the copies
  really hold (one column per copy while they stay sparse, not a whole dense output).

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

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.gradcheck import shortcuts

__all__ = [
    "STENCILS",
    "BatchedEvaluator",
    "Columns",
    "LoopEvaluator",
    "RankOne",
    "Stencil",
    "estimate",
    "make_stencil",
    "steps",
]


STENCILS = ("central", "4-point")
CHUNK_FLOATS = 2**19  # numbers a pass of the batched evaluator holds per array: cache-sized


@dataclass(frozen=True)
class Stencil:
    """``derivative ~= sum_k weights[k] * L(p + offsets[k] * h) / h``, error O(h^order).

    Examples
    --------
    >>> from handgrad.gradcheck.finite_differences import make_stencil
    >>> s = make_stencil("central")
    >>> s.offsets, s.weights, s.order
    ((1.0, -1.0), (0.5, -0.5), 2)
    >>> h = 1e-3  # d/dp p^2 at p = 1:
    >>> round(sum(w * (1 + o * h) ** 2 for o, w in zip(s.offsets, s.weights)) / h, 6)
    2.0
    """

    name: str
    offsets: tuple[float, ...]
    weights: tuple[float, ...]
    order: int


def make_stencil(stencil: str = "central", richardson: int = 0) -> Stencil:
    """The central difference (O(h^2)), the 4-point stencil (O(h^4)), or the central
    difference extrapolated by Richardson over h, h/2, ..., h/2^richardson.

    Examples
    --------
    >>> from handgrad.gradcheck.finite_differences import make_stencil
    >>> make_stencil("4-point").offsets, make_stencil("4-point").order
    ((2.0, 1.0, -1.0, -2.0), 4)
    >>> richardson = make_stencil("central", richardson=2)
    >>> richardson.name, richardson.order, len(richardson.offsets)
    ('central + Richardson x2', 6, 6)
    """
    if stencil not in STENCILS:
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
    """The step per element: ``eps``, or ``eps * max(1, |p|)`` when ``scaled``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import steps
    >>> values = np.array([0.5, -3.0, 200.0])
    >>> print(steps(values, 1e-6, scaled=False), steps(values, 1e-6, scaled=True))
    [1.e-06 1.e-06 1.e-06] [1.e-06 3.e-06 2.e-04]
    """
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

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import estimate, make_stencil, steps
    >>> values = np.array([1.0, 2.0])
    >>> def losses_at(offset, d):  # L = sum(p^3) with element i moved by d[i]; dL/dp = 3 p^2
    ...     return np.sum(values**3) - values**3 + (values + d) ** 3
    >>> print(estimate(losses_at, values, steps(values, 1e-4, False), make_stencil()).round(6))
    [ 3. 12.]
    """
    total = np.zeros(values.shape, dtype=np.float64)
    stored = []
    for offset, weight in zip(stencil.offsets, stencil.weights, strict=True):
        displacement = (values + offset * h) - values
        stored.append(displacement)
        total += weight * losses_at(offset, displacement)
    if stencil.name == "central":
        up, down = stored
        with np.errstate(divide="ignore", invalid="ignore"):  # a step lost in rounding: NaN
            return total * 2 / (up - down)
    return total / h


class LoopEvaluator:
    """Losses at perturbed points, one element at a time, in place; always restores.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import LoopEvaluator
    >>> p = np.array([1.0, 2.0])
    >>> loop = LoopEvaluator(lambda: float(np.sum(p**2)), "p")
    >>> print(loop(p, np.array([0, 1]), np.array([0.5, -1.0])), p)  # 1.5^2 + 2^2, 1^2 + 1^2
    [6.25 2.  ] [1. 2.]
    """

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
        return losses


@dataclass
class Columns:
    """Copies of a (batch, width) array ``base`` that differ from it in one column each:
    copy i has column ``columns[i]`` replaced by ``values[i]`` (batch,).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import Columns
    >>> copies = Columns(np.zeros((2, 3)), np.array([0, 2]), np.array([[1.0, 2.0], [5.0, 6.0]]))
    >>> copies.dense().shape
    (2, 2, 3)
    >>> print(copies.dense()[1])  # copy 1: column 2 replaced by [5, 6]
    [[0. 0. 5.]
     [0. 0. 6.]]
    """

    base: Any
    columns: Any
    values: Any

    def dense(self) -> Any:
        """The copies as one (copies, batch, width) array."""
        return self.rank_one().dense()

    def rank_one(self) -> RankOne:
        """The same copies as rank-one changes of ``base``: ``delta`` is the change of the
        column, ``vectors`` its one-hot."""
        xp = namespace(self.base)
        delta = self.values - xp.take(self.base, self.columns, axis=1).mT  # P,B
        width = xp.arange(self.base.shape[1], device=array_api_compat.device(self.base))
        onehot = xp.astype(self.columns[:, None] == width[None, :], self.base.dtype)  # P,W
        return RankOne(self.base, delta, onehot)


@dataclass
class RankOne:
    """Copies of a (batch, width) array ``base`` that differ from it by a rank-one change
    each: copy i is ``base + outer(delta[i], vectors[i])``, ``delta`` (copies, batch) and
    ``vectors`` (copies, width). A Linear layer turns copies that differ in one input
    column into these, and a loss with a shortcut takes them without densifying.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.finite_differences import RankOne
    >>> copies = RankOne(np.zeros((2, 3)), np.array([[1.0, 2.0]]), np.array([[1.0, 0.0, -1.0]]))
    >>> print(copies.dense()[0])
    [[ 1.  0. -1.]
     [ 2.  0. -2.]]
    """

    base: Any
    delta: Any
    vectors: Any

    def dense(self) -> Any:
        """The copies as one (copies, batch, width) array."""
        return self.base[None, ...] + self.delta[:, :, None] * self.vectors[:, None, :]


class BatchedEvaluator:
    """Losses of many perturbed copies at once, for a chain of layers and a loss ``head``.

    ``head(stack)`` maps the last layer's outputs, with a leading axis of copies, to one
    loss per copy. The inputs of each layer in the unperturbed pass are kept (computed once
    per evaluator, that is per check), so a perturbation in layer k re-runs only layers k,
    k+1, ... A perturbation of one element stays sparse as long as the layers allow: copies
    that differ in one column (:class:`Columns`) pass through ``elementwise`` layers column
    by column, and the shortcuts of :mod:`handgrad.gradcheck.shortcuts` turn them into
    rank-one changes of a Linear layer's output (:class:`RankOne`) without copying any
    weight. ``fused(copies)``, if given, takes such rank-one copies of the last output and
    returns what ``head`` would (None where it does not apply): a loss's shortcut, which
    never forms the dense copies. Other layers get dense stacks (a layer that broadcasts
    over a leading axis), and a perturbed layer without a shortcut runs once per copy.

    Copies are evaluated in chunks sized by what each copy holds on its way to the loss (a
    column while sparse, a whole output once dense), within ``max_memory`` and within
    ``CHUNK_FLOATS`` numbers per array, so that a chunk's arrays stay in the caches.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.finite_differences import BatchedEvaluator, LoopEvaluator
    >>> layer, x = hg.Linear(3, 2, rng=0), np.random.default_rng(0).standard_normal((4, 3))
    >>> batched = BatchedEvaluator([layer], x, lambda y: (y**2).sum(axis=(-2, -1)), 2**20)
    >>> loop = LoopEvaluator(lambda: float((layer.forward(x) ** 2).sum()), "weight")
    >>> w, flat, moves = layer.params["weight"], np.arange(6), np.full(6, 1e-3)
    >>> bool(np.allclose(batched.losses(0, "weight", w, flat, moves), loop(w, flat, moves)))
    True
    """

    def __init__(
        self,
        layers: Sequence[Any],
        x: Any,
        head: Callable[[Any], Any],
        max_memory: int,
        forward: Callable[[int, Any], Any] | None = None,
        fused: Callable[[RankOne], Any] | None = None,
    ) -> None:
        self.layers = list(layers)
        self.head = head
        self.fused = fused
        self.forward = forward or (lambda i, a: self.layers[i].forward(a))
        self.inputs = [x]
        for i in range(len(self.layers)):
            self.inputs.append(self.forward(i, self.inputs[-1]))
        self.xp = namespace(x)
        self.device = array_api_compat.device(x)
        self.max_memory = max_memory

    def chunk_size(self, k: int | None) -> int:
        """Copies per pass so that what they hold after a perturbation in layer k (None:
        the input) fits the memory budget, with room for temporaries."""
        first = 0 if k is None else k + 1
        x = self.inputs[0]
        batch = x.shape[0] if x.ndim == 2 else 1
        if k is None:
            sparse = x.ndim == 2
        else:
            sparse = self.inputs[k].ndim == 2 and (
                shortcuts.perturbed_columns(self.layers[k]) is not None
            )
        state = "columns" if sparse else "dense"
        floats = batch if sparse else math.prod(self.inputs[first].shape)
        for layer, out in zip(self.layers[first:], self.inputs[first + 1 :], strict=True):
            if state == "columns" and getattr(layer, "elementwise", False):
                floats += batch
            elif state == "columns" and shortcuts.rank_one_columns(layer) is not None:
                state, floats = "rank one", floats + batch + out.shape[-1]
            else:
                state, floats = "dense", floats + math.prod(out.shape)
        floats += math.prod(self.inputs[-1].shape)  # the loss's work on each copy
        budget = min(self.max_memory // (8 * 4), CHUNK_FLOATS)
        return max(1, int(budget // floats))

    def losses(self, k: int | None, name: str, p: Any, flat: np.ndarray, d: np.ndarray) -> Any:
        """Losses with element ``flat[i]`` of ``p`` moved by ``d[i]``, for each i.

        ``k`` is the index of the layer that owns ``p``, or None when ``p`` is the input.
        """
        values, _ = self.evaluate(k, name, p, flat, np.asarray(d, dtype=np.float64)[:, None])
        return values[:, 0]

    def evaluate(
        self, k: int | None, name: str, p: Any, flat: np.ndarray, disp: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """What ``head`` gives for each element ``flat[i]`` moved by each ``disp[i, j]``,
        (m, k); and the noise scales, (m,), when ``head`` returns (values, scales). The
        copies of one element share a pass."""
        m, offsets = disp.shape
        values, scales = np.empty((m, offsets)), None
        per_pass = max(1, self.chunk_size(k) // offsets)
        for start in range(0, m, per_pass):
            part = slice(start, start + per_pass)
            elements, moves = np.repeat(flat[part], offsets), disp[part].reshape(-1)
            state = self._perturbed(k, name, p, elements, moves)
            for i in range(0 if k is None else k + 1, len(self.layers)):
                state = self._through(i, state)
            out = self._head(state)
            got, scale = out if isinstance(out, tuple) else (out, None)
            if tuple(got.shape) != (elements.shape[0],):
                raise ValueError(f"the loss of stacked copies has shape {tuple(got.shape)}")
            values[part] = np.asarray(to_numpy(got), dtype=np.float64).reshape(-1, offsets)
            if scale is not None:
                scales = np.zeros(m) if scales is None else scales
                scales[part] = np.asarray(scale, dtype=np.float64).reshape(-1, offsets).max(axis=1)
        return values, scales

    def _head(self, state: Any) -> Any:
        """``head`` of the copies, or ``fused`` where it takes them as they are."""
        if self.fused is not None and isinstance(state, Columns | RankOne):
            got = self.fused(state.rank_one() if isinstance(state, Columns) else state)
            if got is not None:
                return got
        return self.head(state.dense() if isinstance(state, Columns | RankOne) else state)

    def _through(self, i: int, state: Any) -> Any:
        """Run layer i on the copies, keeping them sparse where the layer allows."""
        layer = self.layers[i]
        if isinstance(state, RankOne):
            state = state.dense()
        if isinstance(state, Columns):
            if getattr(layer, "elementwise", False):
                return Columns(self.inputs[i + 1], state.columns, self.forward(i, state.values))
            rank_one = shortcuts.rank_one_columns(layer)
            if rank_one is not None:
                delta, vectors = rank_one(self.inputs[i], state.columns, state.values)
                return RankOne(self.inputs[i + 1], delta, vectors)
            state = state.dense()
        return self.forward(i, state)

    def _perturbed(self, k: int | None, name: str, p: Any, flat: np.ndarray, d: np.ndarray) -> Any:
        """The perturbed copies right after the perturbation: Columns or a dense stack."""
        xp, device = self.xp, self.device
        moves = convert(d, xp, dtype=p.dtype, device=device)
        if k is None:
            x = self.inputs[0]
            if x.ndim != 2:
                return _perturbed_stack(xp, x, flat, d, device)
            rows, cols = (convert(i, xp, device=device) for i in np.divmod(flat, x.shape[1]))
            batch = xp.arange(x.shape[0], device=device)
            onehot = xp.astype(rows[:, None] == batch[None, :], x.dtype)  # P,B
            return Columns(x, cols, xp.take(x, cols, axis=1).mT + moves[:, None] * onehot)
        layer, x = self.layers[k], self.inputs[k]
        shortcut = shortcuts.perturbed_columns(layer)
        if shortcut is not None and x.ndim == 2:  # the shortcut takes (B, in)
            index = convert(flat, xp, device=device)
            columns, values = shortcut(x, name, index, moves, y=self.inputs[k + 1])
            return Columns(self.inputs[k + 1], columns, values)
        copies = []  # no shortcut: one forward of this layer per copy, in place and restored
        shape = tuple(p.shape)
        for index, move in zip(flat, d, strict=True):
            where = np.unravel_index(int(index), shape)
            value = float(p[where])
            try:
                p[where] = value + float(move)
                copies.append(self.forward(k, x))
            finally:
                p[where] = value
        return xp.stack(copies)


def _perturbed_stack(xp: Any, x: Any, flat: Any, d: np.ndarray, device: Any) -> Any:
    """Copies of ``x``, copy i with element ``flat[i]`` moved by ``d[i]``."""
    size = math.prod(x.shape)
    onehot = np.zeros((flat.shape[0], size))
    onehot[np.arange(flat.shape[0]), flat] = d
    moves = convert(onehot.reshape((flat.shape[0], *x.shape)), xp, dtype=x.dtype, device=device)
    return x[None, ...] + moves
