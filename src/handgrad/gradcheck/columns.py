"""The columns route: for a parameter whose slices along one axis each move their own slice
of the output alone (column ``j`` of ``W`` in ``x @ W + b`` moves output column ``j``, and
nothing else), one element of every slice is moved in the same evaluation, and each
element's loss change is read from its own output slice, ``sum(r_j * (y_j - y0_j))``: a
``(20, 10)`` weight takes 20 evaluations per stencil offset instead of 200.

- :func:`probe_columns`: finds such a pair of axes (the parameter's, the output's) and
  proves it on the real input, as :func:`~handgrad.gradcheck.probes.probe_rows` proves
  independent samples: a random perturbation of the slices on one side of a split moves
  the output slices of that side alone, and perturbing the other side's slices too leaves
  them as they were. The splits are by the bits of the slice index, so every two slices
  lie on different sides of one of them (``ceil(log2 n) + 2`` forwards, the first of them
  with one element moved, which rules out a parameter that moves everything).
- :func:`columns_route`: the route, by plain forwards, or in stacked calls where
  :func:`~handgrad.gradcheck.probes.probe_stacked_param` proved that the layer takes stacked
  copies of the parameter.

The noise scale of each change is the whole loss's, as for the loop and the stacked route.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from handgrad.gradcheck.probes import Finding, _agree, _perturbations, _raised
from handgrad.gradcheck.routes import (
    LayerProblem,
    ParamStack,
    Route,
    _copies_first,
    _in_chunks,
    _per_call,
    as_float64,
    like,
    put_stacked,
)

__all__ = ["columns_route", "probe_columns", "worth_probing"]

COPIES_PER_FORWARD = 32  # a stacked copy is taken to cost at most 1/32 of a forward


def _index(n: int, axis: int, ndim: int) -> np.ndarray:
    """0..n-1 along ``axis`` of an ``ndim``-dimensional array, broadcastable."""
    return np.arange(n).reshape([-1 if i == axis else 1 for i in range(ndim)])


def _leak(
    moved: Any, delta: np.ndarray, whole: np.ndarray, y0: np.ndarray, a: int, b: int, unit: float
) -> str | None:
    """Why parameter axis ``a`` does not map slice for slice to output axis ``b`` (None
    when it does): ``moved(change)`` is the output at the parameter moved by ``change``,
    ``whole`` the output with every slice moved by ``delta``. Per split, the slices of one
    side moved alone must leave the other side's output slices as they were, and moving
    the other side's slices too (``whole``) must leave this side's as they were: each
    slice's influence on every other slice is tested, one way or the other."""
    n = y0.shape[b]
    mine_p, mine_y = _index(n, a, delta.ndim), _index(n, b, y0.ndim)
    for bit in range((n - 1).bit_length()):
        out = moved(delta * ((mine_p >> bit) & 1 == 0))
        if out.shape != y0.shape:
            return f"a perturbed parameter gave shape {out.shape}, not {y0.shape}"
        own = (mine_y >> bit) & 1 == 0
        if not _agree(np.where(own, whole, out), np.where(own, out, y0), unit):
            return f"its slices on axis {a} move other slices of the output's axis {b}"
    return None


def _first_sieve(
    moved: Any,
    delta: np.ndarray,
    y0: np.ndarray,
    pairs: list[tuple[int, int]],
    rng: np.random.Generator,
    unit: float,
) -> list[tuple[int, int]]:
    """The ``pairs`` still possible after one forward with one random element moved: it
    lies in one slice of each parameter axis, and may move that slice of the output
    alone (a cheap no for a parameter that moves everything)."""
    i = int(rng.integers(delta.size))
    change = np.zeros(delta.size)
    change[i] = delta.reshape(-1)[i]
    out = moved(change.reshape(delta.shape))
    if out.shape != y0.shape:
        return []
    where = np.unravel_index(i, delta.shape)
    return [
        (a, b)
        for a, b in pairs
        if _agree(np.where(_index(y0.shape[b], b, y0.ndim) == where[a], y0, out), y0, unit)
    ]


def _pairs(shape: tuple[int, ...], out_shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Parameter and output axes of one size (at least 2): an output axis other than the
    batch axis first, the last first."""
    return sorted(
        (
            (a, b)
            for a in range(len(shape))
            for b in range(len(out_shape))
            if shape[a] == out_shape[b] >= 2
        ),
        key=lambda pair: (pair[1] == 0 and len(out_shape) > 1, -pair[1], -pair[0]),
    )


def worth_probing(
    shape: tuple[int, ...], out_shape: tuple[int, ...], count: int, copy_cost: float = 1.0
) -> bool:
    """Whether the columns route would save more than its probe costs on ``count`` elements
    of a parameter shaped ``shape``, at two evaluations per element, each costing
    ``copy_cost`` forwards (1 for the loop; for stacked copies what one adds to a call, at
    most ``1 / COPIES_PER_FORWARD``).

    Examples
    --------
    >>> from handgrad.gradcheck.columns import worth_probing
    >>> worth_probing((20, 10), (10, 10), 200, 0.5), worth_probing((10,), (10, 10), 10, 0.5)
    (True, False)
    """
    sizes = [shape[a] for a, _ in _pairs(shape, out_shape)]
    if not sizes:
        return False
    n = max(sizes)
    cost = copy_cost if copy_cost >= 1.0 else min(copy_cost, 1 / COPIES_PER_FORWARD)
    return 2 * (count - -(-count // n)) * cost > (n - 1).bit_length() + 1


def probe_columns(
    problem: LayerProblem, owner: dict, key: str, unit: float, rng: np.random.Generator
) -> Finding:
    """Whether slice ``j`` of ``owner[key]`` along some axis (``param_axis``) moves slice
    ``j`` of the output along some axis (``axis``) and nothing else, on the real input;
    ``seconds`` is a forward's time per slice.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> from handgrad.gradcheck.columns import probe_columns
    >>> class Dot:
    ...     def __init__(self, rng):
    ...         self.params, self.grads = {"W": rng.standard_normal((3, 4))}, {}
    ...     def forward(self, x):
    ...         return np.dot(x, self.params["W"])
    >>> class Softmax(Dot):
    ...     def forward(self, x):
    ...         z = np.exp(np.dot(x, self.params["W"]))
    ...         return z / z.sum(axis=1, keepdims=True)
    >>> rng = np.random.default_rng(0)
    >>> x, r = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    >>> layer = Dot(rng)
    >>> found = probe_columns(LayerProblem(layer, x, layer.forward(x), r), layer.params, "W",
    ...                       2.0**-52, rng)
    >>> found.ok, found.param_axis, found.axis
    (True, 1, 1)
    >>> layer = Softmax(rng)
    >>> probe_columns(LayerProblem(layer, x, layer.forward(x), r), layer.params, "W",
    ...               2.0**-52, rng).reason
    'its elements move other slices of the output on every axis of their size'
    """
    p, y0 = owner[key], problem.y0
    shape = tuple(p.shape)
    pairs = _pairs(shape, y0.shape)
    if not pairs:
        return Finding(False, "no axis of it has the size of an axis of the output")
    values = as_float64(p)
    delta = as_float64(like(values + _perturbations(rng, values, 1, unit)[0], p)) - values

    def moved(change: np.ndarray) -> np.ndarray:
        p[...] = like(values + change, p)
        try:
            return problem.forward(problem.x)
        finally:
            p[...] = like(values, p)

    reasons = []
    try:
        start = time.perf_counter()
        pairs = _first_sieve(moved, delta, y0, pairs, rng, unit)
        seconds = time.perf_counter() - start
        if not pairs:
            reason = "its elements move other slices of the output on every axis of their size"
            return Finding(False, reason)
        whole = moved(delta)
        for a, b in pairs:
            reason = _leak(moved, delta, whole, y0, a, b, unit)
            if reason is None:
                found = f"its axis {a} moves the output's axis {b} slice for slice"
                return Finding(True, found, axis=b, param_axis=a, seconds=seconds / shape[a])
            reasons.append(reason)
    except Exception as err:  # the probe's answer: no
        return _raised(err, "with a perturbed parameter")
    return Finding(False, reasons[0])


def columns_route(
    problem: LayerProblem,
    owner: dict,
    key: str,
    columns: Finding,
    stacked: Finding | None,
    max_memory: int,
) -> Route:
    """Moves one element of every slice of ``owner[key]`` (along ``columns.param_axis``) per
    evaluation, each change read from its output slice (along ``columns.axis``); in stacked
    calls laid out as ``stacked`` found, when given.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> from handgrad.gradcheck.columns import columns_route, probe_columns
    >>> class Scale:
    ...     def __init__(self):
    ...         self.params, self.grads = {"w": np.array([1.0, 2.0])}, {}
    ...     def forward(self, x):
    ...         return x * self.params["w"]
    >>> layer, x = Scale(), np.ones((3, 2))
    >>> problem = LayerProblem(layer, x, layer.forward(x), np.ones((3, 2)))
    >>> found = probe_columns(problem, layer.params, "w", 2.0**-52, np.random.default_rng(0))
    >>> route = columns_route(problem, layer.params, "w", found, None, 2**20)
    >>> route(np.array([0, 1]), np.array([[0.5, -0.5], [0.5, -0.5]]))[0].tolist()  # 2 calls
    [[1.5, -1.5], [1.5, -1.5]]
    """
    p, y0, b = owner[key], problem.y0, columns.axis
    shape = tuple(p.shape)
    n = shape[columns.param_axis]
    slice_of = np.unravel_index(np.arange(math.prod(shape)), shape)[columns.param_axis]
    base = np.moveaxis(y0, b, 0).reshape(n, -1)  # n,rest
    weights = np.moveaxis(problem.r, b, 0).reshape(n, -1)  # n,rest
    stacking = ParamStack(p) if stacked is not None else None
    values = as_float64(p).reshape(-1) if stacking is None else stacking.values
    position = np.arange(values.size) if stacking is None else stacking.position

    def plain(copies: np.ndarray) -> np.ndarray:
        outs = np.empty((copies.shape[0], *y0.shape))
        try:
            for c, copy in enumerate(copies):
                p[...] = like(copy.reshape(shape), p)
                out = problem.output(problem.x)
                if out.shape != y0.shape:
                    raise ValueError(
                        f"{type(problem.layer).__name__}.forward returned shape {out.shape} "
                        f"at a perturbed point but {y0.shape} at x"
                    )
                outs[c] = out
        finally:
            p[...] = like(values.reshape(shape), p)
        return outs

    def evaluate(copies: np.ndarray) -> np.ndarray:
        if stacking is None:
            return plain(copies)
        stack = stacking.stack(copies, stacked.layout)
        out = put_stacked(owner, key, stack, lambda: problem.output(problem.x))
        return _copies_first(out, stacked.axis, copies.shape[0], y0.shape)

    def route(flat: np.ndarray, disp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m, k = disp.shape
        losses = np.empty((m, k))
        slices = slice_of[flat]
        counts = np.bincount(slices, minlength=n)
        order = np.argsort(slices, kind="stable")
        rank = np.empty(m, dtype=np.int64)  # the evaluation (round) that moves each element
        rank[order] = np.arange(m) - (np.cumsum(counts) - counts)[slices[order]]
        per_call = max(1, _per_call(problem, values.size + y0.size, 1, max_memory) // k)
        for part in _in_chunks(int(counts.max()), per_call):
            chosen = np.flatnonzero((rank >= part.start) & (rank < part.stop))
            rounds = int(rank[chosen].max()) - part.start + 1
            copies = np.repeat(values.reshape(1, -1), rounds * k, axis=0)  # C,size
            copy = ((rank[chosen] - part.start)[:, None] * k + np.arange(k)).reshape(-1)
            copies[copy, np.repeat(position[flat[chosen]], k)] += disp[chosen].reshape(-1)
            out = np.moveaxis(evaluate(copies), b + 1, 1).reshape(copies.shape[0], n, -1)
            changes = np.einsum("cnq,nq->cn", out - base, weights)  # C,n
            losses[chosen] = changes[copy, np.repeat(slices[chosen], k)].reshape(-1, k)
        return losses, np.full(m, problem.scale)

    return route
