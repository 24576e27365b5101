"""Gradient checking: hand-written gradients against finite differences.

Each element's numeric derivative is, by default, the central difference
``(L(p + eps) - L(p - eps)) / (2 eps)``, as in the seed notebook. It carries two errors:
truncation, about ``eps^2 / 6 * L'''``, and rounding, about ``machine_eps * |L| / eps``.
The rounding part is why a purely relative test fails correct networks: a true gradient of
2e-7 next to a loss of 2.3 is resolved to only ~1e-3 relative at eps = 1e-6. So an element
fails only when its difference exceeds *both*

* the relative tolerance: ``threshold * (|analytic| + |numeric|)``, and
* the noise floor: ``atol = NOISE_FACTOR * machine_eps * loss_scale / eps``,

where ``loss_scale`` is the size of the terms summed into the loss: ``max(|L|, 1)`` for a
model's loss (a loss of ~0 is still computed from terms of order one), and
``sum(|y * r|)`` for a layer driven by a random upstream gradient ``r``. Equivalently, the
relative difference is measured against ``max(|a| + |n|, atol / threshold)``; that is the
number reported. Checks always run in float64; other dtypes draw a warning.

Modes: ``"full"`` checks every element; ``"sample"`` a random ``samples`` elements of each
array; ``"fast"`` compares the directional derivative along ``directions`` random unit
vectors over all parameters at once and, if one disagrees, finds the guilty array and
element. Methods: ``"batched"`` evaluates many perturbed copies per pass (see
:mod:`handgrad.gradcheck.finite_differences`), ``"loop"`` one element at a time, ``"auto"`` the
batched one where the model allows it.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.errors import GradientCheckError, GradientCheckWarning, NonFiniteLossError
from handgrad.core.random import make_rng
from handgrad.core.validation import (
    check_array,
    check_choice,
    check_not_empty,
    check_positive_float,
    check_positive_int,
)
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck, compare
from handgrad.nn.module import slots
from handgrad.nn.protocol import chain, named_layers
from handgrad.nn.registry import LAYER_TYPES

__all__ = [
    "DEFAULT_DIRECTIONS",
    "DEFAULT_EPS",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_SAMPLES",
    "DEFAULT_THRESHOLD",
    "NOISE_FACTOR",
    "RELATIVE_FLOOR",
    "check_gradients",
    "check_layer",
    "numerical_gradient",
    "relative_difference",
]

DEFAULT_EPS = 1e-6
DEFAULT_THRESHOLD = 1e-6
DEFAULT_MAX_MEMORY = 256 * 2**20
DEFAULT_SAMPLES = 16
DEFAULT_DIRECTIONS = 4
NOISE_FACTOR = 16.0
RELATIVE_FLOOR = 1e-8
MODES = ("full", "sample", "fast")
METHODS = ("auto", "batched", "loop")
_FLOAT64_EPS = float(np.finfo(np.float64).eps)


def relative_difference(a: Any, b: Any, floor: float = RELATIVE_FLOOR) -> Any:
    """Elementwise ``|a - b| / max(|a| + |b|, floor)``; 0 against 0 counts as 0.

    The floor (default 1e-8) keeps numbers that are both almost zero from counting as a
    100% error: 1e-13 against 0 is a relative difference of 1e-5, not 1.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> a = np.array([1.0, 0.0, 1e-13])
    >>> b = np.array([1.1, 0.0, 0.0])
    >>> [f"{d:.3g}" for d in hg.relative_difference(a, b)]  # 0.1 / 2.1, 0, 1e-13 / 1e-8
    ['0.0476', '0', '1e-05']
    """
    if not floor >= 0:
        raise ValueError(f"floor must be a number >= 0, got {floor!r}")
    xp = namespace(a, b)
    diff = xp.abs(a - b)
    scale = xp.abs(a) + xp.abs(b)
    scale = xp.where(scale > floor, scale, xp.full_like(scale, floor))
    return diff / xp.where(scale > 0, scale, xp.ones_like(scale))  # diff is 0 where scale is 0


@dataclass(frozen=True)
class _Options:
    eps: float
    threshold: float
    mode: str
    samples: int
    directions: int
    stencil: fd.Stencil
    scaled_steps: bool
    method: str
    max_memory: int


def _options(
    eps: Any,
    threshold: Any,
    mode: Any,
    samples: Any,
    directions: Any,
    stencil: Any,
    richardson: Any,
    scaled_steps: Any,
    method: Any,
    max_memory: Any,
) -> _Options:
    return _Options(
        eps=check_positive_float(eps, "eps"),
        threshold=check_positive_float(threshold, "threshold"),
        mode=check_choice(mode, "mode", MODES),
        samples=check_positive_int(samples, "samples"),
        directions=check_positive_int(directions, "directions"),
        stencil=fd.make_stencil(stencil, richardson),
        scaled_steps=bool(scaled_steps),
        method=check_choice(method, "method", METHODS),
        max_memory=check_positive_int(max_memory, "max_memory"),
    )


def numerical_gradient(
    f: Callable[[Any], Any],
    x: Any,
    eps: float = DEFAULT_EPS,
    *,
    stencil: str = "central",
    richardson: int = 0,
) -> Any:
    """Finite-difference gradient of a scalar function ``f`` at ``x``, element by element.

    ``x`` is perturbed in place, one element at a time, and always restored, also when ``f``
    raises. The result has the shape, library and dtype of ``x``. Pass float64: in a
    coarser dtype the steps and the losses are rounded (float32 at ``eps=1e-6`` is off by
    percents, float16 loses the step), so other dtypes draw a :class:`GradientCheckWarning`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> x = np.array([1.0, 2.0, 3.0])
    >>> print(hg.numerical_gradient(lambda v: np.sum(v**2), x).round(6))  # 2 x
    [2. 4. 6.]
    >>> g = hg.numerical_gradient(lambda v: np.sum(np.sin(v)), x, 1e-3, stencil="4-point")
    >>> bool(np.allclose(g, np.cos(x), rtol=1e-10))
    True
    """
    check_array(x, "x")
    eps = check_positive_float(eps, "eps")
    if x.dtype != namespace(x).float64:
        warnings.warn(
            f"x is {x.dtype}, too coarse for finite differences: its steps and losses are "
            "rounded and the estimate is off; pass a float64 x",
            GradientCheckWarning,
            stacklevel=2,
        )
    target = _Target("x", x, None, "")
    flat = np.arange(math.prod(x.shape))
    loop = fd.LoopEvaluator(lambda: _scalar(f(x), "f(x)"), "x")
    values = np.asarray(to_numpy(x), dtype=np.float64).reshape(-1)
    grad = fd.estimate(
        lambda offset, d: _finite(loop(x, flat, d), target, flat, d),
        values,
        fd.steps(values, eps, False),
        fd.make_stencil(stencil, richardson),
    )
    return convert(
        grad.reshape(tuple(x.shape)), namespace(x), dtype=x.dtype, device=array_api_compat.device(x)
    )


def _scalar(value: Any, what: str) -> float:
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise ValueError(
            f"{what} must return a scalar (a 0-d array or a number), got shape {shape}"
        )
    return float(value)


@dataclass
class _Target:
    """One array to check: its report name, the live array, and where it sits."""

    name: str
    array: Any
    owner: int | None  # index in the chain of the layer that holds it; None for the input
    key: str
    batchable: bool = True  # False for an array tied across layers: the loop checks it


@dataclass
class _Problem:
    targets: list[_Target]
    analytic: dict[str, np.ndarray]
    loss_at: Callable[[], float]
    loss: float
    loss_scale: float
    layers: list[Any]
    x: Any
    head: Callable[[Any], Any]
    broadcasts: bool = False  # every layer and the loss take stacked copies (a leading axis)
    _batched: fd.BatchedEvaluator | None = None

    def batched(self, max_memory: int) -> fd.BatchedEvaluator:
        if self._batched is None:
            self._batched = fd.BatchedEvaluator(self.layers, self.x, self.head, max_memory)
        return self._batched


def _finite(losses: np.ndarray, target: _Target, flat: np.ndarray, d: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(losses))
    if bad.size:
        i = int(bad[0])
        where = list(map(int, np.unravel_index(int(flat[i]), tuple(target.array.shape))))
        raise NonFiniteLossError(
            f"the loss is {losses[i]} when {target.name}{where} moves by {float(d[i]):+g}; "
            "check the model there or use a smaller eps"
        )
    return losses


def _noise_floor(loss_scale: float, eps: float) -> float:
    """Absolute rounding noise of a central difference: NOISE_FACTOR * u * scale / eps."""
    return NOISE_FACTOR * _FLOAT64_EPS * max(loss_scale, _FLOAT64_EPS) / eps


def _warn_if_unresolved(values: np.ndarray, h: np.ndarray, name: str) -> None:
    resolution = np.spacing(np.abs(values))
    if np.any(h < 1024 * resolution):
        worst = int(np.argmax(resolution / h))
        warnings.warn(
            f"the step {h[worst]:g} for {name} is below what float64 resolves at "
            f"|p| = {abs(values[worst]):g} (spacing {resolution[worst]:.1e}): the step is lost in "
            "rounding; use a larger eps or scaled_steps=True",
            GradientCheckWarning,
            stacklevel=4,
        )


def _elementwise(
    problem: _Problem, target: _Target, opts: _Options, flat: np.ndarray, atol: float
) -> tuple[ParameterCheck, str]:
    """Check the elements ``flat`` of one array; return the row and the method used."""
    shape = tuple(target.array.shape)
    values = np.asarray(to_numpy(target.array), dtype=np.float64).reshape(-1)[flat]
    h = fd.steps(values, opts.eps, opts.scaled_steps)
    _warn_if_unresolved(values, h, target.name)
    method = opts.method
    if method == "auto":  # batch only what is known to take stacked copies
        method = "batched" if problem.broadcasts and target.batchable else "loop"
    numeric = None
    if method == "batched":
        if not target.batchable:
            raise ValueError(
                f"{target.name} is held by several layers (tied), which method='batched' "
                "cannot perturb at once; use method='loop' or 'auto'"
            )
        batched = problem.batched(opts.max_memory)
        numeric = fd.estimate(
            lambda offset, d: _finite(
                batched.losses(target.owner, target.key, target.array, flat, d), target, flat, d
            ),
            values,
            h,
            opts.stencil,
        )
    else:
        loop = fd.LoopEvaluator(problem.loss_at, target.name)
        numeric = fd.estimate(
            lambda offset, d: _finite(loop(target.array, flat, d), target, flat, d),
            values,
            h,
            opts.stencil,
        )
        method = "loop"
    analytic = problem.analytic[target.name].reshape(-1)[flat]
    return compare(target.name, shape, flat, analytic, numeric, opts.threshold, atol), method


def _direction(
    problem: _Problem,
    targets: list[_Target],
    rng: np.random.Generator,
    opts: _Options,
    atol: float,
    name: str,
) -> ParameterCheck:
    """Compare the change of the loss along a random unit direction over ``targets`` with
    the analytic gradient's prediction of it."""
    originals = [np.array(to_numpy(t.array), dtype=np.float64) for t in targets]
    vectors = [rng.standard_normal(o.shape) for o in originals]
    norm = math.sqrt(sum(float(np.sum(v * v)) for v in vectors))
    moves = []
    for sign in (1.0, -1.0):  # displacements as stored: fl(p + eps v) - p
        moves.append(
            [(o + sign * opts.eps * v / norm) - o for o, v in zip(originals, vectors, strict=True)]
        )
    losses = []
    try:
        for displacement in moves:
            for t, o, d in zip(targets, originals, displacement, strict=True):
                t.array[...] = _like(o + d, t.array)
            losses.append(problem.loss_at())
    finally:
        for t, o in zip(targets, originals, strict=True):
            t.array[...] = _like(o, t.array)
    if not all(math.isfinite(v) for v in losses):
        raise NonFiniteLossError(f"the loss is {losses} along {name}; use a smaller eps")
    step = [u - d for u, d in zip(*moves, strict=True)]
    predicted = sum(
        float(np.sum(problem.analytic[t.name] * s)) for t, s in zip(targets, step, strict=True)
    )
    # dL/dt along the direction: (L+ - L-) / (2 eps) against g . (d+ - d-) / (2 eps)
    numeric = (losses[0] - losses[1]) / (2 * opts.eps)
    analytic = predicted / (2 * opts.eps)
    return compare(
        name,
        (),
        np.zeros(1, dtype=np.int64),
        np.array([analytic]),
        np.array([numeric]),
        opts.threshold,
        atol,
    )


def _like(values: np.ndarray, array: Any) -> Any:
    return convert(
        values, namespace(array), dtype=array.dtype, device=array_api_compat.device(array)
    )


def _fast(
    problem: _Problem, opts: _Options, rng: np.random.Generator, atol: float
) -> tuple[list[ParameterCheck], str]:
    """Random directions over everything; on a disagreement, find the array and element."""
    rows = [
        _direction(problem, problem.targets, rng, opts, atol, f"random direction {i + 1}")
        for i in range(opts.directions)
    ]
    if all(r.passed for r in rows):
        return rows, "directions"
    suspects = [
        t
        for t in problem.targets
        if not all(
            _direction(problem, [t], rng, opts, atol, t.name).passed for _ in range(opts.directions)
        )
    ]
    located = [_elementwise(problem, t, opts, _all(t), atol) for t in suspects]
    methods = {m for _, m in located}
    return [r for r, _ in located] + rows, "directions + " + "/".join(sorted(methods) or ["-"])


def _all(target: _Target) -> np.ndarray:
    return np.arange(math.prod(target.array.shape))


def _run(
    problem: _Problem, opts: _Options, rng: np.random.Generator, raise_on_failure: bool
) -> GradientCheckReport:
    atol = _noise_floor(problem.loss_scale, opts.eps)
    mismatched = [
        ParameterCheck(
            t.name,
            tuple(t.array.shape),
            math.nan,
            math.nan,
            (),
            math.nan,
            math.nan,
            math.prod(t.array.shape),
            analytic_shape=problem.analytic[t.name].shape,
        )
        for t in problem.targets
        if problem.analytic[t.name].shape != tuple(t.array.shape)
    ]
    bad = {c.name for c in mismatched}
    problem.targets = [t for t in problem.targets if t.name not in bad]
    if opts.mode == "fast" and not mismatched:
        rows, method = _fast(problem, opts, rng, atol)
    else:
        results = []
        for t in problem.targets:
            flat = _all(t)
            if opts.mode == "sample" and flat.size > opts.samples:
                flat = np.sort(rng.choice(flat.size, size=opts.samples, replace=False))
            results.append(_elementwise(problem, t, opts, flat, atol))
        rows = [r for r, _ in results]
        methods = {m for _, m in results}
        method = methods.pop() if len(methods) == 1 else "mixed" if methods else opts.method
    report = GradientCheckReport(
        tuple(mismatched + rows),
        eps=opts.eps,
        threshold=opts.threshold,
        atol=atol,
        loss=problem.loss,
        mode=opts.mode,
        method=method,
        stencil=opts.stencil.name,
    )
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _in_float64(model: Any, arrays: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Return ``model`` and ``arrays``, or float64 copies of both with a warning."""
    params = {
        f"parameter {prefix}{k}": v
        for prefix, layer in named_layers(model)
        for k, v in layer.params.items()
    }
    floats = {**arrays, **params}
    low = {
        name: str(v.dtype)
        for name, v in floats.items()
        if namespace(v).isdtype(v.dtype, "real floating") and v.dtype != namespace(v).float64
    }
    if not low:
        return model, arrays
    name, dtype = next(iter(low.items()))
    warnings.warn(
        f"{name} is {dtype}, too coarse for finite differences: the check runs on a "
        "float64 copy of the model and data",
        GradientCheckWarning,
        stacklevel=3,
    )
    model = copy.deepcopy(model)
    converted: dict[int, Any] = {}  # tied arrays stay tied
    for _, layer in named_layers(model):
        for store in (layer.params, layer.grads):
            for k, v in store.items():
                store[k] = converted.setdefault(id(v), _as_float64(v))
    return model, {k: _as_float64(v) for k, v in arrays.items()}


def _as_float64(v: Any) -> Any:
    xp = namespace(v)
    return xp.astype(v, xp.float64) if xp.isdtype(v.dtype, "real floating") else v


_FORWARD = ("forward", "forward_unchecked", "_forward")


def _declares_broadcasting(layer: Any) -> bool:
    """True when ``layer`` says it takes stacked copies (``broadcasts = True``) and no class
    below its handgrad layer type rewrote its forward pass, which the promise was about."""
    if not getattr(layer, "broadcasts", False):
        return False
    for cls in type(layer).__mro__:
        if LAYER_TYPES.get(cls.__name__) is cls:
            return True
        if any(name in vars(cls) for name in _FORWARD):
            return cls is type(layer) and "broadcasts" in vars(cls)
    return True


def _broadcasts(model: Any) -> bool:
    """True when every layer of the chain declares that it takes stacked copies."""
    return all(_declares_broadcasting(layer) for layer in chain(model))


def _analytic_grads(model: Any) -> dict[str, np.ndarray]:
    """Each parameter's gradient from the last backward, in float64 (a tied parameter's
    uses summed)."""
    grads = {}
    for name, places in slots(model).items():
        total = None
        for layer, key in places:
            if key not in layer.grads:
                raise ValueError(
                    f"{type(layer).__name__} has parameter {key!r} but no grads[{key!r}] after "
                    "backward: backward must write a gradient for every parameter"
                )
            grad = np.array(to_numpy(layer.grads[key]), dtype=np.float64)
            total = grad if total is None else total + grad
        grads[name] = total
    return grads


def _param_targets(model: Any) -> list[_Target]:
    """Every parameter, with the index of the chain element (see ``chain``) that holds it."""
    position = {
        id(leaf): i for i, element in enumerate(chain(model)) for _, leaf in named_layers(element)
    }
    return [
        _Target(
            name,
            places[0][0].params[places[0][1]],
            position[id(places[0][0])],
            places[0][1],
            batchable=len(places) == 1,
        )
        for name, places in slots(model).items()
    ]


_CHECK_OPTIONS = """
    eps : float
        The finite-difference step (1e-6).
    threshold : float
        Relative tolerance (1e-6), above the rounding-noise floor (see the module docs).
    mode : {"full", "sample", "fast"}
        Every element; ``samples`` random elements per array; or ``directions`` random
        directions over everything, then the guilty array and element if one disagrees.
    stencil : {"central", "4-point"}, richardson : int
        The difference formula: central (O(eps^2)), 4-point (O(eps^4)), or central with
        ``richardson`` levels of Richardson extrapolation.
    scaled_steps : bool
        Step ``eps * max(1, |p|)`` per element instead of ``eps``.
    method : {"auto", "batched", "loop"}
        Many perturbed copies per pass, or one element at a time; "auto" batches where the
        layers and loss broadcast over a leading axis, and falls back to the loop.
    max_memory : int
        Bytes the stacked copies may take per pass (256 MiB).
    rng : int or numpy.random.Generator
        Seeds the samples and directions.
    raise_on_failure : bool
        Raise :class:`GradientCheckError` on failure (default) or return the report.
"""


def check_gradients(
    model: Any,
    loss: Any,
    x: Any,
    y: Any,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
    mode: str = "full",
    samples: int = DEFAULT_SAMPLES,
    directions: int = DEFAULT_DIRECTIONS,
    stencil: str = "central",
    richardson: int = 0,
    scaled_steps: bool = False,
    method: str = "auto",
    max_memory: int = DEFAULT_MAX_MEMORY,
    rng: Any = None,
    raise_on_failure: bool = True,
) -> GradientCheckReport:
    """Check every parameter gradient of ``model`` under ``loss`` on one batch ``(x, y)``.

    ``model`` is a :class:`~handgrad.Sequential` or any single layer that follows the
    protocol. Parameters are perturbed in place and restored exactly; afterwards ``grads``
    hold the analytic gradients of this batch.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> rng = np.random.default_rng(0)
    >>> model = hg.mlp([4, 5, 3], rng=rng)
    >>> x, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    >>> report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    >>> report.passed, [check.name for check in report.checks]
    (True, ['0.weight', '0.bias', '2.weight', '2.bias'])
    >>> report["0.weight"].n_checked, report["0.weight"].n_failed
    (20, 0)
    """
    named_layers(model)
    check_array(x, "x")
    check_not_empty(x, "x", needs="at least one element to check")
    check_array(y, "y", floating=False)
    opts = _options(
        eps,
        threshold,
        mode,
        samples,
        directions,
        stencil,
        richardson,
        scaled_steps,
        method,
        max_memory,
    )
    model, data = _in_float64(model, {"x": x, "y": y})
    x, y = data["x"], data["y"]

    def loss_at() -> float:
        return _scalar(loss.forward(model.forward(x), y), "loss.forward")

    value = loss_at()
    model.backward(loss.backward())
    problem = _Problem(
        targets=_param_targets(model),
        analytic=_analytic_grads(model),
        loss_at=loss_at,
        loss=value,
        loss_scale=max(abs(value), 1.0),
        layers=chain(model),
        x=x,
        head=lambda stack: loss.forward(stack, y),
        broadcasts=_broadcasts(model) and getattr(loss, "broadcasts", False),
    )
    try:
        return _run(problem, opts, make_rng(rng), raise_on_failure)
    finally:
        model.forward(x)  # leave the caches at the unperturbed point


def check_layer(
    layer: Any,
    x: Any,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
    mode: str = "full",
    samples: int = DEFAULT_SAMPLES,
    directions: int = DEFAULT_DIRECTIONS,
    stencil: str = "central",
    richardson: int = 0,
    scaled_steps: bool = False,
    method: str = "auto",
    max_memory: int = DEFAULT_MAX_MEMORY,
    rng: Any = None,
    raise_on_failure: bool = True,
) -> GradientCheckReport:
    """Check a layer's input gradient and every parameter gradient at input ``x``.

    The layer is driven by a random upstream gradient ``r`` (seeded by ``rng``), that is
    by the loss ``L = sum(layer.forward(x) * r)``, so that every output element counts with
    its own weight. The input gradient is reported as the array ``"x"``; ``x`` itself is
    not modified.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> x = np.random.default_rng(0).standard_normal((4, 3))
    >>> hg.check_layer(hg.Linear(3, 2, rng=0), x).passed
    True
    >>> class Square:  # y = x^2, with a slip: dL/dx should be 2 x dy
    ...     def __init__(self):
    ...         self.params, self.grads = {}, {}
    ...     def forward(self, x):
    ...         self.x = x
    ...         return x * x
    ...     def backward(self, dy):
    ...         return self.x * dy
    >>> report = hg.check_layer(Square(), x, raise_on_failure=False)
    >>> report.passed, report["x"].n_failed, report["x"].n_checked
    (False, 12, 12)
    """
    named_layers(layer)
    check_array(x, "x")
    check_not_empty(x, "x", needs="at least one element to check")
    opts = _options(
        eps,
        threshold,
        mode,
        samples,
        directions,
        stencil,
        richardson,
        scaled_steps,
        method,
        max_memory,
    )
    layer, data = _in_float64(layer, {"x": x})
    xp = namespace(data["x"])
    x = xp.asarray(data["x"], copy=True)
    generator = make_rng(rng)
    y = layer.forward(x)
    r = convert(
        generator.standard_normal(tuple(y.shape)),
        xp,
        dtype=y.dtype,
        device=array_api_compat.device(y),
    )

    def loss_at() -> float:
        return _scalar(xp.sum(layer.forward(x) * r), "sum(layer.forward(x) * r)")

    terms = y * r
    dx = layer.backward(r)
    problem = _Problem(
        targets=[_Target("x", x, None, ""), *_param_targets(layer)],
        analytic={"x": np.array(to_numpy(dx), dtype=np.float64), **_analytic_grads(layer)},
        loss_at=loss_at,
        loss=float(xp.sum(terms)),
        loss_scale=float(xp.sum(xp.abs(terms))),
        layers=chain(layer),
        x=x,
        broadcasts=_broadcasts(layer),
        head=lambda stack: xp.sum(stack * r, axis=tuple(range(1, stack.ndim))),
    )
    try:
        return _run(problem, opts, generator, raise_on_failure)
    finally:
        layer.forward(x)  # leave the caches at the unperturbed point


for _checker in (check_gradients, check_layer):
    if _checker.__doc__ is not None:  # None under python -OO, which strips docstrings
        _checker.__doc__ += "\n    Parameters\n    ----------" + _CHECK_OPTIONS
