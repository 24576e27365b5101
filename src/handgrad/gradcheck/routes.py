"""The losses at perturbed points, four ways, for a layer (or model) checked as a whole.

A *route* is called with elements ``flat`` of one array and displacements ``disp`` (one row
per element, one column per stencil offset) and returns the change of the loss at each
displaced point, ``(m, k)``, and each element's noise scale, ``(m,)``: the size of the
terms that the change was computed from (the rounding noise of a difference is about
``machine_eps * scale``).

- :func:`loop_route`: one element and one offset per call of the model, in place, restored.
- :func:`rows_route`: for a layer that treats samples independently, the input's perturbed
  samples alone, many per call: the copy of sample ``i`` with element ``j`` moved, for
  many ``(i, j)`` and offsets at once.
- :func:`stacked_input_route`: copies of the whole input, stacked on a new leading axis.
- :func:`stacked_param_route`: copies of one parameter stacked on a new leading axis and
  put in its place for one call.

Which of them may be used for a user's layer is decided first, by :mod:`.probes`; every
array handed to the layer is the check's own copy, and every output is read (or copied)
before the next call.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.gradcheck.state import fresh

__all__ = [
    "LayerProblem",
    "ParamStack",
    "Route",
    "as_float64",
    "like",
    "loop_route",
    "output_array",
    "put_stacked",
    "rows_route",
    "stacked_input_route",
    "stacked_param_route",
]

Route = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
MAX_COPIES = 512  # copies per call: enough to amortise Python, small enough for the caches
CALL_FLOATS = 2**16  # numbers the copies of one call hold: arrays that stay in the caches


def as_float64(a: Any) -> np.ndarray:
    """A float64 NumPy copy of array ``a`` (any library).

    Examples
    --------
    >>> import torch
    >>> from handgrad.gradcheck.routes import as_float64
    >>> as_float64(torch.ones(2, dtype=torch.float32, requires_grad=True)).dtype.name
    'float64'
    """
    return np.array(to_numpy(a), dtype=np.float64)


def output_array(out: Any, layer: Any) -> Any:
    """What ``layer.forward`` returned, as an array: a number (``np.mean(...)``) becomes a
    0-d NumPy array; anything else that is not an array is refused.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import output_array
    >>> output_array(np.float64(2.5), None).shape
    ()
    >>> output_array([1.0], object())
    Traceback (most recent call last):
        ...
    TypeError: object.forward must return an array, got list
    """
    if isinstance(out, float | int | np.generic) and not isinstance(out, bool):
        return np.asarray(out)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(
            f"{type(layer).__name__}.forward must return an array, got {type(out).__name__}"
        )
    return out


@dataclass
class LayerProblem:
    """A layer at one input, driven by the upstream gradient ``r``: the loss is
    ``L = sum(layer.forward(x) * r)``, measured as a change from ``y0 = layer.forward(x)``,
    ``sum((y - y0) * r)``, so that outputs a perturbation does not move add no rounding.

    ``x`` is the check's own copy (perturbed in place by the loop, never handed to the
    layer: each call gets a fresh copy); ``y0`` and ``r`` are float64 NumPy arrays. The
    noise scale of a change is ``sum |y0 r|``, over every output (``scale``) or over one
    sample's (``sample_scales``): a move below an output's rounding is lost, not absent.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> class Square:
    ...     params, grads = {}, {}
    ...     def forward(self, x):
    ...         return x * x
    >>> x = np.array([[1.0, 2.0]])
    >>> problem = LayerProblem(Square(), x.copy(), x * x, np.ones((1, 2)))
    >>> problem.x[0, 1] += 0.5  # the loss change: 2.5^2 - 2^2
    >>> problem.current()
    (2.25, 5.0)
    """

    layer: Any
    x: Any
    y0: np.ndarray
    r: np.ndarray

    def __post_init__(self) -> None:
        terms = np.abs(self.y0 * self.r)
        self.scale = float(np.sum(terms))
        self.sample_scales = terms.reshape(terms.shape[0], -1).sum(axis=1) if terms.ndim else terms
        self.forward_seconds = math.inf  # the least time of a forward at x seen so far

    def output(self, x: Any, owned: bool = False) -> np.ndarray:
        """The layer's output at a copy of ``x`` (at ``x`` itself when ``owned``: an array
        made for this call alone) as float64 NumPy, a view of what it returned when that is
        float64 NumPy already: use it before the next call."""
        given = x if owned else fresh(x)
        return np.asarray(to_numpy(output_array(self.layer.forward(given), self.layer)), np.float64)

    def forward(self, x: Any, owned: bool = False) -> np.ndarray:
        """The layer's output at a copy of ``x`` (see :meth:`output`), as a float64 NumPy
        copy of its own; a call at ``x`` itself updates ``forward_seconds``."""
        start = time.perf_counter()
        out = np.array(self.output(x, owned))
        if x is self.x:
            self.forward_seconds = min(self.forward_seconds, time.perf_counter() - start)
        return out

    def changes(self, outputs: np.ndarray, base: Any = None, r: Any = None) -> np.ndarray:
        """Loss changes of ``outputs`` (copies on axis 0) from ``base`` and ``r`` (one per
        copy; ``y0`` and ``r`` when not given)."""
        moved = outputs.reshape(outputs.shape[0], -1) - (
            self.y0.reshape(1, -1) if base is None else base.reshape(outputs.shape[0], -1)
        )
        if r is None:
            return moved @ self.r.reshape(-1)
        return np.einsum("ij,ij->i", moved, r.reshape(outputs.shape[0], -1))

    def current(self) -> tuple[float, float]:
        """The loss change and noise scale at the present values of x and the parameters."""
        out = self.output(self.x)
        if out.shape != self.y0.shape:
            raise ValueError(
                f"{type(self.layer).__name__}.forward returned shape {out.shape} at a perturbed "
                f"point but {self.y0.shape} at x; the output's shape must not depend on values"
            )
        return float(np.sum((out - self.y0) * self.r)), self.scale


def loop_route(current: Callable[[], tuple[float, float]], array: Any) -> Route:
    """Move one element of ``array`` in place per evaluation of ``current()``; restore it.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import loop_route
    >>> p = np.array([1.0, 2.0])
    >>> route = loop_route(lambda: (float(np.sum(p**2)) - 5.0, 5.0), p)
    >>> changes, scales = route(np.array([1]), np.array([[0.5, -0.5]]))
    >>> changes.tolist(), p.tolist()  # 2.5^2 - 4 and 1.5^2 - 4; p put back
    ([[2.25, -1.75]], [1.0, 2.0])
    """

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        losses = np.empty(disp.shape)
        scales = np.zeros(flat.shape)
        shape = tuple(array.shape)
        for i, index in enumerate(flat):
            where = np.unravel_index(int(index), shape)
            value = float(array[where])
            try:
                for j, d in enumerate(disp[i]):
                    array[where] = value + float(d)
                    losses[i, j], scale = current()
                    scales[i] = max(scales[i], scale)
            finally:
                array[where] = value
        return losses, scales

    return route


def _per_call(problem: LayerProblem, elements_per_copy: int, k: int, max_memory: int) -> int:
    """Elements per call so that their copies (k per element) fit the memory budget and,
    with their outputs, about ``CALL_FLOATS`` numbers."""
    per_copy = max(elements_per_copy, 1)
    copies = min(MAX_COPIES, max_memory // (8 * 4 * per_copy), CALL_FLOATS // per_copy)
    return max(1, max(1, copies) // k)


def _in_chunks(n: int, size: int):
    return (slice(start, start + size) for start in range(0, n, size))


def like(values: np.ndarray, array: Any) -> Any:
    """``values`` (float64 NumPy, the check's own) as an array of ``array``'s library, dtype
    and device; themselves when that is float64 NumPy.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.gradcheck.routes import like
    >>> like(np.array([0.5]), torch.zeros(1, dtype=torch.float32))
    tensor([0.5000])
    """
    if type(array) is np.ndarray and array.dtype == values.dtype:
        return values
    return convert(
        values, namespace(array), dtype=array.dtype, device=array_api_compat.device(array)
    )


def rows_route(problem: LayerProblem, max_memory: int) -> Route:
    """Perturbed samples of the input alone, many per call (samples must be independent).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem, rows_route
    >>> class Square:
    ...     params, grads = {}, {}
    ...     def forward(self, x):
    ...         return x * x
    >>> x = np.array([[1.0, 2.0], [3.0, 4.0]])
    >>> route = rows_route(LayerProblem(Square(), x, x * x, np.ones((2, 2))), 2**20)
    >>> changes, scales = route(np.array([1, 2]), np.array([[0.5, -0.5], [0.5, -0.5]]))
    >>> changes.tolist(), scales.tolist()  # x[0, 1] and x[1, 0] moved, in one call
    ([[2.25, -1.75], [3.25, -2.75]], [5.0, 25.0])
    """
    x = problem.x
    batch = x.shape[0]
    samples = as_float64(x).reshape(batch, -1)  # N,S
    width = samples.shape[1]
    per_row = width + math.prod(problem.y0.shape[1:])

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        losses, scales = np.empty((m, k)), np.empty(m)
        for part in _in_chunks(m, _per_call(problem, per_row, k, max_memory)):
            sample, column = np.divmod(flat[part], width)
            rows = np.repeat(samples[sample], k, axis=0)  # P*k,S
            rows[np.arange(rows.shape[0]), np.repeat(column, k)] += disp[part].reshape(-1)
            out = problem.output(like(rows.reshape(-1, *x.shape[1:]), x), owned=True)
            owner = np.repeat(sample, k)
            expected = (owner.shape[0], *problem.y0.shape[1:])
            if out.shape != expected:
                raise ValueError(f"the perturbed samples gave shape {out.shape}, not {expected}")
            losses[part] = problem.changes(out, problem.y0[owner], problem.r[owner]).reshape(-1, k)
            scales[part] = problem.sample_scales[sample]
        return losses, scales

    return route


def _stack(values: np.ndarray, flat: np.ndarray, disp: np.ndarray) -> np.ndarray:
    """Copies of ``values`` (flat float64), copy ``(i, j)`` with element ``flat[i]`` moved
    by ``disp[i, j]``: shape (m * k, size)."""
    m, k = disp.shape
    copies = np.repeat(values.reshape(1, -1), m * k, axis=0)
    copies[np.arange(m * k), np.repeat(flat, k)] += disp.reshape(-1)
    return copies


def _copies_first(out: np.ndarray, axis: int, count: int, shape: tuple[int, ...]) -> np.ndarray:
    moved = np.moveaxis(out, axis, 0) if axis and out.ndim == len(shape) + 1 else out
    if moved.shape != (count, *shape):
        raise ValueError(f"the stacked copies gave shape {out.shape}, not {count} of {shape}")
    return moved


def stacked_input_route(problem: LayerProblem, axis: int, max_memory: int) -> Route:
    """Copies of the whole input on a new leading axis; the outputs hold them on ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem, stacked_input_route
    >>> class Square:
    ...     params, grads = {}, {}
    ...     def forward(self, x):
    ...         return x * x
    >>> x = np.array([[1.0, 2.0]])
    >>> route = stacked_input_route(LayerProblem(Square(), x, x * x, np.ones((1, 2))), 0, 2**20)
    >>> route(np.array([1]), np.array([[0.5, -0.5]]))[0].tolist()
    [[2.25, -1.75]]
    """
    x = problem.x
    values = as_float64(x).reshape(-1)
    size = values.size + problem.y0.size

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        losses = np.empty((m, k))
        for part in _in_chunks(m, _per_call(problem, size, k, max_memory)):
            copies = _stack(values, flat[part], disp[part]).reshape(-1, *x.shape)
            out = problem.output(like(copies, x))
            out = _copies_first(out, axis, copies.shape[0], problem.y0.shape)
            losses[part] = problem.changes(out).reshape(-1, k)
        return losses, np.full(m, problem.scale)

    return route


class ParamStack:
    """How copies of parameter ``p`` are stacked for one forward: ``(n, 1 x layout,
    *p.shape)`` in ``p``'s library. A float64 NumPy matrix's copies are each stored column
    by column (the last two axes swapped in memory: the same values and shape), so that a
    dot product over its rows, ``np.dot(x, W)`` on a stack, which NumPy computes one row
    of x and one column of W at a time, reads them contiguously. Copies are built flat in
    that storage order: ``values`` is ``p`` in it, ``stored[q]`` the element (in ``p``'s
    own order) stored at ``q`` and ``position[i]`` where element ``i`` is stored.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import ParamStack
    >>> stacking = ParamStack(np.arange(6.0).reshape(2, 3))
    >>> stacking.values.tolist(), stacking.position.tolist()
    ([0.0, 3.0, 1.0, 4.0, 2.0, 5.0], [0, 2, 4, 1, 3, 5])
    >>> stack = stacking.stack(np.stack([stacking.values, stacking.values + 10]), 1)
    >>> stack.shape, stack[1, 0].tolist()
    ((2, 1, 2, 3), [[10.0, 11.0, 12.0], [13.0, 14.0, 15.0]])
    """

    def __init__(self, p: Any) -> None:
        self.p, self.shape = p, tuple(p.shape)
        self.swapped = type(p) is np.ndarray and p.dtype == np.float64 and p.ndim >= 2
        order = np.arange(math.prod(self.shape)).reshape(self.shape)
        self.stored = (np.swapaxes(order, -1, -2) if self.swapped else order).reshape(-1)
        self.position = np.empty_like(self.stored)
        self.position[self.stored] = np.arange(self.stored.size)
        self.values = as_float64(p).reshape(-1)[self.stored]

    def stack(self, copies: np.ndarray, layout: int) -> Any:
        """The stack of ``copies`` (n, size), each flat in storage order, with ``layout``
        singleton axes after the copies axis."""
        n = copies.shape[0]
        if self.swapped:
            held = copies.reshape(n, *self.shape[:-2], self.shape[-1], self.shape[-2])
            stack = np.swapaxes(held, -1, -2)
        else:
            stack = like(copies.reshape(n, *self.shape), self.p)
        return stack[(slice(None),) + (None,) * layout]


def put_stacked(owner: dict, key: str, stack: Any, call: Callable[[], Any]) -> Any:
    """Run ``call()`` with ``owner[key]`` replaced by ``stack``; always put the array back.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import put_stacked
    >>> params = {"w": np.ones(2)}
    >>> put_stacked(params, "w", np.zeros((3, 2)), lambda: params["w"].shape), params["w"].shape
    ((3, 2), (2,))
    """
    original = owner[key]
    owner[key] = stack
    try:
        return call()
    finally:
        owner[key] = original


def stacked_param_route(
    problem: LayerProblem, owner: dict, key: str, layout: int, axis: int, max_memory: int
) -> Route:
    """Copies of parameter ``owner[key]`` stacked as (copies, 1 x layout, *shape) and put in
    its place for one call; the outputs hold the copies on ``axis``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem, stacked_param_route
    >>> class Scale:
    ...     def __init__(self):
    ...         self.params, self.grads = {"w": np.array([1.0, 2.0])}, {}
    ...     def forward(self, x):
    ...         return x * self.params["w"]  # copies (P, 1, 2) broadcast over the batch
    >>> layer, x = Scale(), np.ones((3, 2))
    >>> problem = LayerProblem(layer, x, layer.forward(x), np.ones((3, 2)))
    >>> route = stacked_param_route(problem, layer.params, "w", 1, 0, 2**20)
    >>> route(np.array([0, 1]), np.array([[0.5, -0.5], [0.5, -0.5]]))[0].tolist()  # 3 rows
    [[1.5, -1.5], [1.5, -1.5]]
    """
    stacking = ParamStack(owner[key])
    size = stacking.values.size + problem.y0.size

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        losses = np.empty((m, k))
        for part in _in_chunks(m, _per_call(problem, size, k, max_memory)):
            copies = _stack(stacking.values, stacking.position[flat[part]], disp[part])
            stack = stacking.stack(copies, layout)
            out = put_stacked(owner, key, stack, lambda: problem.output(problem.x))
            out = _copies_first(out, axis, copies.shape[0], problem.y0.shape)
            losses[part] = problem.changes(out).reshape(-1, k)
        return losses, np.full(m, problem.scale)

    return route
