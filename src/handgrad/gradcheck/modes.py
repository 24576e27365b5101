"""The three modes of a check, once its arrays, analytic gradients and routes are known:
every element ("full"), a random sample of each array ("sample"), or random directions
over everything first ("fast"), each element or direction decided by :mod:`.verdict`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.arrays import namespace
from handgrad.core.errors import GradientCheckWarning, NonFiniteLossError
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck.plan import Planner
from handgrad.gradcheck.report import Kink, ParameterCheck, summarize
from handgrad.gradcheck.routes import Route, as_float64, like
from handgrad.gradcheck.targets import Target
from handgrad.gradcheck.verdict import Lines, decide

__all__ = ["Settings", "run_mode", "shape_mismatch"]


@dataclass(frozen=True)
class Settings:
    """How the finite differences are taken: the mode and its sizes, the first look's step
    and stencil, the second look's step, the tolerance and the precision's roundoff.

    Examples
    --------
    >>> from handgrad.gradcheck.finite_differences import make_stencil
    >>> from handgrad.gradcheck.modes import Settings
    >>> Settings("full", 16, 4, 1e-6, 1e-3, make_stencil(), False, 1e-6, 2.0**-52).big_eps
    0.001
    """

    mode: str
    samples: int
    directions: int
    eps: float
    big_eps: float
    stencil: fd.Stencil
    scaled_steps: bool
    threshold: float
    unit: float


def _rounded(values: np.ndarray, dtype: Any) -> np.ndarray:
    """``values`` (float64) rounded to ``dtype`` as the array will store them."""
    return values if dtype == np.float64 else values.astype(dtype).astype(np.float64)


def _numpy_dtype(array: Any) -> Any:
    if type(array) is np.ndarray and array.dtype.kind == "f":
        return array.dtype
    xp = namespace(array)
    for name in ("float64", "float32", "float16"):
        if array.dtype == getattr(xp, name):
            return np.dtype(name)
    return np.dtype(np.float64)


def _where(target: Target, index: int) -> str:
    where = np.unravel_index(index, tuple(target.array.shape))
    return f"{target.name}[{', '.join(map(str, where))}]"


def _element_lines(
    target: Target, flat: np.ndarray, analytic: np.ndarray, route: Route, s: Settings
) -> Lines:
    dtype = _numpy_dtype(target.array)
    values = as_float64(target.array).reshape(-1)[flat]
    big = (s.big_eps * np.maximum(1.0, np.abs(values))) if s.scaled_steps else s.big_eps
    h = fd.steps(values, s.eps, s.scaled_steps)

    def evaluate(rows: np.ndarray, nominal: np.ndarray, strict: bool):
        p = values[rows, None]
        stored = _rounded(p + nominal, dtype) - p
        losses, scales = route(flat[rows], stored)
        if strict and not np.all(np.isfinite(losses)):
            i, j = np.argwhere(~np.isfinite(losses))[0]
            raise NonFiniteLossError(
                f"the loss is {losses[i, j]} when {_where(target, int(flat[rows[i]]))} moves "
                f"by {stored[i, j]:+g}; check the model there or use a smaller eps"
            )
        return losses, scales, stored, analytic[rows, None] * stored

    return Lines(evaluate, h, np.maximum(h, big))


def _warn_if_unresolved(values: np.ndarray, h: np.ndarray, name: str, dtype: Any) -> None:
    magnitude = np.abs(values)
    if dtype == np.float64 and 1024 * 2**-52 * float(np.max(magnitude, initial=0.0)) < h.min():
        return  # spacing(|p|) <= 2^-52 |p| in float64: every step is resolved
    resolution = np.spacing(magnitude.astype(dtype)).astype(np.float64)
    if np.any(h < 1024 * resolution):
        worst = int(np.argmax(resolution / h))
        warnings.warn(
            f"the step {h[worst]:g} for {name} is below what {dtype.name} resolves at "
            f"|p| = {abs(values[worst]):g} (spacing {resolution[worst]:.1e}): the step is lost "
            "in rounding; use a larger eps or scaled_steps=True",
            GradientCheckWarning,
            stacklevel=7,
        )


def _elementwise(
    target: Target, flat: np.ndarray, analytic: np.ndarray, planner: Planner, s: Settings
) -> ParameterCheck:
    values = as_float64(target.array).reshape(-1)[flat]
    _warn_if_unresolved(
        values, fd.steps(values, s.eps, s.scaled_steps), target.name, _numpy_dtype(target.array)
    )
    way = planner.way(target, flat.size)
    wanted = analytic.reshape(-1)[flat]
    lines = _element_lines(target, flat, wanted, way.evaluate, s)
    decision = decide(lines, s.stencil, s.unit, s.threshold)
    shape = tuple(target.array.shape)
    kinks = tuple(
        Kink(
            tuple(int(i) for i in np.unravel_index(int(flat[i]), shape)),
            float(decision.analytic[i]),
            float(decision.slopes[i, 0]),
            float(decision.slopes[i, 1]),
        )
        for i in np.flatnonzero(decision.kink)
    )
    return summarize(
        target.name,
        shape,
        flat,
        decision.analytic,
        decision.numeric,
        decision.rel,
        decision.failed,
        kinks=kinks,
        method=way.method,
        ignored=decision.kink,
        second_looks=decision.second_looks,
    )


def _direction_lines(
    targets: list[Target],
    analytic: dict[str, np.ndarray],
    vectors: list[list[np.ndarray]],
    current: Callable[[], tuple[float, float]],
    s: Settings,
) -> Lines:
    """Lines ``t -> L(p + t v)`` along unit vectors ``v`` (one list of arrays per line)."""
    originals = [as_float64(t.array) for t in targets]
    dtypes = [_numpy_dtype(t.array) for t in targets]

    def evaluate(rows: np.ndarray, nominal: np.ndarray, strict: bool):
        losses, scales = np.empty(nominal.shape), np.zeros(rows.shape)
        changes = np.empty(nominal.shape)
        try:
            for i, row in enumerate(rows):
                for j, t in enumerate(nominal[i]):
                    change = 0.0
                    for target, o, v, dtype in zip(
                        targets, originals, vectors[row], dtypes, strict=True
                    ):
                        moved = _rounded(o + t * v, dtype)
                        change += float(np.sum(analytic[target.name] * (moved - o)))
                        target.array[...] = like(moved, target.array)
                    losses[i, j], scale = current()
                    scales[i], changes[i, j] = max(scales[i], scale), change
        finally:
            for target, o in zip(targets, originals, strict=True):
                target.array[...] = like(o, target.array)
        if strict and not np.all(np.isfinite(losses)):
            raise NonFiniteLossError(
                f"the loss is {losses.ravel().tolist()} along a random direction; use a smaller eps"
            )
        return losses, scales, nominal, changes

    n = len(vectors)
    return Lines(evaluate, np.full(n, s.eps), np.full(n, max(s.eps, s.big_eps)))


def _directions_check(
    targets: list[Target],
    analytic: dict[str, np.ndarray],
    current: Callable[[], tuple[float, float]],
    rng: np.random.Generator,
    s: Settings,
    names: list[str],
) -> list[ParameterCheck]:
    vectors = []
    for _ in names:
        draws = [rng.standard_normal(tuple(t.array.shape)) for t in targets]
        norm = math.sqrt(sum(float(np.sum(v * v)) for v in draws))
        vectors.append([v / norm for v in draws])
    lines = _direction_lines(targets, analytic, vectors, current, s)
    decision = decide(lines, s.stencil, s.unit, s.threshold)
    rows = []
    for i, name in enumerate(names):
        kinks = (
            (Kink((), float(decision.analytic[i]), *map(float, decision.slopes[i])),)
            if decision.kink[i]
            else ()
        )
        rows.append(
            summarize(
                name,
                (),
                np.zeros(1, dtype=np.int64),
                decision.analytic[i : i + 1],
                decision.numeric[i : i + 1],
                decision.rel[i : i + 1],
                decision.failed[i : i + 1],
                kinks=kinks,
                method="directions",
                ignored=decision.kink[i : i + 1],
            )
        )
    return rows


def run_mode(
    targets: list[Target],
    analytic: dict[str, np.ndarray],
    planner: Planner,
    current: Callable[[], tuple[float, float]],
    rng: np.random.Generator,
    s: Settings,
) -> tuple[list[ParameterCheck], str]:
    """The rows of the check in mode ``s.mode``, and the method(s) used.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.finite_differences import make_stencil
    >>> from handgrad.gradcheck.modes import Settings, run_mode
    >>> from handgrad.gradcheck.plan import layer_planner
    >>> from handgrad.gradcheck.routes import LayerProblem
    >>> from handgrad.gradcheck.targets import analytic_grads, param_targets
    >>> layer, x, r = hg.Linear(3, 2, rng=0), np.ones((4, 3)), np.ones((4, 2))
    >>> problem = LayerProblem(layer, x, layer.forward(x), r)
    >>> _ = layer.backward(r)
    >>> planner = layer_planner(problem, "auto", 2**20, 2.0**-52, [layer])
    >>> s = Settings("full", 16, 4, 1e-6, 1e-3, make_stencil(), False, 1e-6, 2.0**-52)
    >>> rows, method = run_mode(
    ...     param_targets(layer), analytic_grads(layer), planner, problem.current, None, s
    ... )
    >>> [(row.name, row.passed) for row in rows], method
    ([('weight', True), ('bias', True)], 'batched')
    """
    if s.mode == "fast" and targets:
        names = [f"random direction {i + 1}" for i in range(s.directions)]
        rows = _directions_check(targets, analytic, current, rng, s, names)
        if all(r.passed for r in rows):
            return rows, "directions"
        suspects = [
            t
            for t in targets
            if not all(
                r.passed
                for r in _directions_check([t], analytic, current, rng, s, [t.name] * s.directions)
            )
        ]
        located = [_elementwise(t, _all(t), analytic[t.name], planner, s) for t in suspects]
        methods = sorted({r.method for r in located if r.method})
        return located + rows, "directions + " + ("/".join(methods) or "-")
    checks = []
    for t in targets:
        flat = _all(t)
        if s.mode == "sample" and flat.size > s.samples:
            flat = np.sort(rng.choice(flat.size, size=s.samples, replace=False))
        checks.append(_elementwise(t, flat, analytic[t.name], planner, s))
    methods = {r.method for r in checks if r.method}
    return checks, methods.pop() if len(methods) == 1 else "mixed" if methods else "loop"


def _all(target: Target) -> np.ndarray:
    return np.arange(math.prod(tuple(target.array.shape)))


def shape_mismatch(
    target: Target, analytic: np.ndarray, planner: Planner, s: Settings
) -> ParameterCheck:
    """The row for a gradient shaped unlike its array: failed, and saying whether its
    values are right once transposed or reshaped (checked on up to 256 elements).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> layer = hg.Linear(3, 2, rng=0)
    >>> class KeptDims(hg.Linear):
    ...     def backward(self, dy):
    ...         dx = super().backward(dy)
    ...         self.grads["bias"] = self.grads["bias"][None, :]  # (1, 2) for (2,)
    ...         return dx
    >>> report = hg.check_layer(KeptDims(3, 2, rng=0), np.ones((4, 3)), raise_on_failure=False)
    >>> report["bias"].analytic_shape, report["bias"].values_right
    ((1, 2), 'reshaped')
    """
    shape = tuple(target.array.shape)
    size = math.prod(shape)
    candidates = []
    if analytic.ndim == 2 and len(shape) == 2 and analytic.shape == shape[::-1]:
        candidates.append(("transposed", analytic.T))
    if analytic.size == size:
        candidates.append(("reshaped", analytic.reshape(shape)))
    flat = np.unique(np.linspace(0, size - 1, min(size, 256)).astype(np.int64))
    values_right = next(
        (
            how
            for how, values in candidates
            if _elementwise(target, flat, values, planner, s).passed
        ),
        None,
    )
    return ParameterCheck(
        target.name,
        shape,
        math.nan,
        math.nan,
        (),
        math.nan,
        math.nan,
        size,
        analytic_shape=tuple(analytic.shape),
        values_right=values_right,
    )
