"""Deciding, before the check runs, how a user's layer may be evaluated: each fast route is
tried on the real input and compared with plain evaluation, copy by copy.

- :func:`check_deterministic`: two forwards on the same input agree, or the layer is random
  and cannot be checked (:class:`~handgrad.core.errors.RandomLayerError`).
- :func:`probe_rows`: the layer treats samples independently, whatever the batch: samples
  run in another order, in smaller batches (down to two), and twice in one batch give the
  same outputs.
- :func:`probe_stacking`: a call takes copies stacked on a new leading axis: a few
  perturbed copies in one call equal the same copies one by one.
- :func:`probe_stacked_param`: the layer takes copies of one parameter stacked on a new
  leading axis (or with singleton axes after it, for broadcasting).

A probe that raises counts as a "no", with the reason kept for the report; a bug in the
layer still shows, in the plain evaluation that every route is compared with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.errors import RandomLayerError
from handgrad.gradcheck.routes import LayerProblem, ParamStack, as_float64, like, put_stacked
from handgrad.gradcheck.state import fresh

__all__ = [
    "Finding",
    "check_deterministic",
    "check_deterministic_loss",
    "probe_rows",
    "probe_stacked_param",
    "probe_stacking",
]

AGREEMENT = 256  # outputs agree when they differ by at most this many units of roundoff
LAYOUTS = (0, 1, 2)  # singleton axes tried after the copies axis of a stacked parameter
_TINY = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class Finding:
    """The answer of a probe: ``ok``, and why not (or which layout and output axis, the
    parameter's axis that maps to it slice for slice, and what the proven call cost per
    copy, and of how many).

    Examples
    --------
    >>> from handgrad.gradcheck.probes import Finding
    >>> Finding(False, "samples are not independent").ok
    False
    """

    ok: bool
    reason: str = ""
    axis: int = 0
    layout: int = 0
    param_axis: int = 0
    seconds: float = math.inf  # time per copy (or sample) of the proven call, if timed
    copies: int = 0  # how many copies that call held


def _agree(a: np.ndarray, b: np.ndarray, unit: float) -> bool:
    if a.shape != b.shape:
        return False
    gap = float(np.max(np.abs(a - b), initial=0.0))
    size = float(np.max(np.abs(b), initial=0.0))
    if not (math.isfinite(gap) and math.isfinite(size)):  # an inf or NaN in a or b
        return bool(np.array_equal(a, b, equal_nan=True))
    return gap <= AGREEMENT * unit * max(size, _TINY)


def _raised(err: Exception, what: str) -> Finding:
    text = str(err).splitlines()[0] if str(err) else ""
    return Finding(
        False, f"forward raised {type(err).__name__}{': ' + text if text else ''} {what}"
    )


def check_deterministic(problem: LayerProblem, unit: float) -> None:
    """Raise :class:`RandomLayerError` unless a second forward at x reproduces ``y0``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> class Square:
    ...     params, grads = {}, {}
    ...     def forward(self, x):
    ...         return x * x
    >>> from handgrad.gradcheck.probes import check_deterministic
    >>> x = np.ones((2, 2))
    >>> check_deterministic(LayerProblem(Square(), x, x * x, x), 2.0**-52)  # returns None
    """
    again = problem.forward(problem.x)
    if again.shape == problem.y0.shape and _agree(again, problem.y0, unit):
        return
    name = type(problem.layer).__name__
    if again.shape != problem.y0.shape:
        seen = f"shape {problem.y0.shape}, then {again.shape}"
    else:
        where = np.unravel_index(int(np.argmax(np.abs(again - problem.y0))), again.shape)
        index = ", ".join(map(str, where))
        seen = f"output[{index}]: {problem.y0[where]:.6g}, then {again[where]:.6g}"
    raise RandomLayerError(
        f"{name} is random: two forwards on the same input gave different outputs ({seen}); "
        "fix its mask or seed (draw a dropout mask once, or seed it) or put it in eval "
        "mode, then check it"
    )


def check_deterministic_loss(
    model: Any, loss_at: Callable[[], float], value: float, x: Any, unit: float
) -> None:
    """Raise :class:`RandomLayerError` unless a second evaluation of the loss gives
    ``value`` again, naming the first layer of the chain whose output changed.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.probes import check_deterministic_loss
    >>> model, x = hg.mlp([2, 2], rng=0), np.ones((1, 2))
    >>> def loss_at():
    ...     return float(np.sum(model.forward(x)))
    >>> check_deterministic_loss(model, loss_at, loss_at(), x, 2.0**-52)  # returns None
    """
    again = loss_at()
    if abs(again - value) <= AGREEMENT * unit * max(abs(value), 1e-300):
        return
    culprit = type(model).__name__
    layers = getattr(model, "layers", None)
    if isinstance(layers, list):
        first, second = as_float64(x), as_float64(x)
        state = [x, x]
        for i, layer in enumerate(layers):
            state = [layer.forward(fresh(a)) for a in state]
            first, second = as_float64(state[0]), as_float64(state[1])
            if first.shape != second.shape or not _agree(first, second, unit):
                culprit = f"layer {i} ({type(layer).__name__})"
                break
        else:
            culprit = "the loss"
    raise RandomLayerError(
        f"{culprit} is random: two evaluations of the loss on the same batch gave {value:.6g}, "
        f"then {again:.6g}; fix its mask or seed (draw a dropout mask once, or seed it) or "
        "put it in eval mode, then check it"
    )


def probe_rows(problem: LayerProblem, unit: float, rng: np.random.Generator) -> Finding:
    """Whether each output sample depends on its input sample alone, at any batch size.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> class Square:
    ...     params, grads = {}, {}
    ...     def forward(self, x):
    ...         return x * x
    >>> from handgrad.gradcheck.probes import probe_rows
    >>> class Centre(Square):
    ...     def forward(self, x):
    ...         return x - x.mean(axis=0)
    >>> x, rng = np.random.default_rng(0).standard_normal((4, 3)), np.random.default_rng(0)
    >>> probe_rows(LayerProblem(Square(), x, x * x, x), 2.0**-52, rng).ok
    True
    >>> probe_rows(LayerProblem(Centre(), x, x - x.mean(axis=0), x), 2.0**-52, rng).reason[:28]
    'samples are not independent:'
    """
    x, y0 = problem.x, problem.y0
    if x.ndim < 1 or y0.ndim < 1 or y0.shape[0] != x.shape[0]:
        return Finding(False, "the output has no batch axis matching the input's")
    batch = x.shape[0]
    order = rng.permutation(batch)
    batches = [  # another order, one sample twice, smaller batches (down to the route's 2)
        np.concatenate([order, order[:1]]),
        order[: batch // 2],
        order[batch // 2 :],
        order[[0, 0]],
    ]
    values = as_float64(x)
    seconds = []
    for rows in (b for b in batches if b.size):
        start = time.perf_counter()
        try:
            out = problem.forward(like(values[rows], x), owned=True)
        except Exception as err:  # the probe's answer: no
            return _raised(err, f"on a batch of {rows.size} samples")
        seconds.append((time.perf_counter() - start) / rows.size)
        if not _agree(out, y0[rows], unit):
            return Finding(
                False,
                f"samples are not independent: {rows.size} of them in another order "
                "and batch size give other outputs (batch statistics?)",
            )
    return Finding(True, "samples are independent", seconds=seconds[0])


def _copies_count(*shapes: tuple[int, ...]) -> int:
    """The least count >= 3 that is no size in ``shapes``, so the copies axis is unique."""
    sizes = {size for shape in shapes for size in shape}
    return next(k for k in range(3, 64) if k not in sizes)


def _copies_axis(out: np.ndarray, expected: np.ndarray, unit: float) -> int | None:
    """The axis of ``out`` that holds the copies ``expected`` (copies first), if any."""
    for axis in range(out.ndim):
        if out.shape[axis] == expected.shape[0] and _agree(
            np.moveaxis(out, axis, 0), expected, unit
        ):
            return axis
    return None


def _perturbations(rng: np.random.Generator, values: np.ndarray, count: int, unit: float):
    """``count`` dense random displacements of ``values``, large enough to tell apart."""
    size = 1e-3 if unit < 1e-10 else 1e-2
    scale = size * (float(np.sqrt(np.mean(values * values))) + size)
    return rng.standard_normal((count, *values.shape)) * scale


def probe_stacking(
    call: Callable[[Any], np.ndarray], x: Any, unit: float, rng: np.random.Generator
) -> Finding:
    """Whether ``call`` (an array -> float64 output) takes copies of ``x`` stacked on a new
    leading axis: a few perturbed copies in one call equal the copies one by one.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.probes import probe_stacking
    >>> x, rng = np.random.default_rng(0).standard_normal((4, 3)), np.random.default_rng(0)
    >>> probe_stacking(lambda a: np.tanh(a), x, 2.0**-52, rng).ok
    True
    >>> probe_stacking(lambda a: a - a.mean(axis=0), x, 2.0**-52, rng).reason
    '5 stacked copies gave other values, not what they give one by one'
    """
    values = as_float64(x)
    try:
        first = call(x)
        count = _copies_count(tuple(x.shape), first.shape)
        copies = values[None] + _perturbations(rng, values, count, unit)
        copies = as_float64(like(copies, x))  # as the call will see them, rounded
        expected = np.stack([call(like(c, x)) for c in copies])
    except Exception as err:  # the probe's answer: no
        return _raised(err, "on a perturbed copy")
    try:
        out = call(like(copies, x))
    except Exception as err:  # the probe's answer: no
        return _raised(err, f"on {count} stacked copies")
    axis = _copies_axis(out, expected, unit)
    if axis is None:
        seen = f"shape {out.shape}" if out.shape != expected.shape else "other values"
        return Finding(False, f"{count} stacked copies gave {seen}, not what they give one by one")
    return Finding(True, "takes stacked copies", axis=axis)


def probe_stacked_param(
    problem: LayerProblem, owner: dict, key: str, unit: float, rng: np.random.Generator
) -> Finding:
    """Whether the layer takes copies of ``owner[key]`` stacked on a new leading axis, put in
    the parameter's place: their outputs equal the copies set one by one.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> from handgrad.gradcheck.probes import probe_stacked_param
    >>> class Scale:
    ...     def __init__(self):
    ...         self.params, self.grads = {"w": np.array([1.0, 2.0])}, {}
    ...     def forward(self, x):
    ...         return x * self.params["w"]
    >>> layer, x = Scale(), np.ones((3, 2))
    >>> problem = LayerProblem(layer, x, layer.forward(x), x)
    >>> found = probe_stacked_param(problem, layer.params, "w", 2.0**-52, np.random.default_rng(0))
    >>> found.ok, found.layout, found.axis  # copies as (P, 1, 2), outputs (P, 3, 2)
    (True, 1, 0)
    """
    p = owner[key]
    values = as_float64(p)
    count = _copies_count(tuple(p.shape), problem.y0.shape, tuple(problem.x.shape))
    copies = as_float64(like(values[None] + _perturbations(rng, values, count, unit), p))
    expected = []
    try:
        for copy in copies:
            p[...] = like(copy, p)
            expected.append(problem.forward(problem.x))
    except Exception as err:  # the probe's answer: no
        return _raised(err, "with a perturbed parameter")
    finally:
        p[...] = like(values, p)
    reasons = {}
    stacking = ParamStack(p)
    stored = copies.reshape(count, -1)[:, stacking.stored]
    preferred = problem.y0.ndim - p.ndim  # singleton axes that line p up with the output
    for layout in sorted(LAYOUTS, key=lambda layout: layout != preferred):
        stack = stacking.stack(stored, layout)
        start = time.perf_counter()
        try:
            out = put_stacked(owner, key, stack, lambda: problem.forward(problem.x))
        except Exception as err:  # the probe's answer: no, for this layout
            reasons[layout] = _raised(err, "with stacked parameter copies").reason
            continue
        seconds = (time.perf_counter() - start) / count
        axis = _copies_axis(out, np.stack(expected), unit)
        if axis is not None:
            found = "takes stacked parameter copies"
            return Finding(True, found, axis=axis, layout=layout, seconds=seconds, copies=count)
        reasons[layout] = "stacked parameter copies gave other outputs"
    return Finding(False, reasons[LAYOUTS[0]])
