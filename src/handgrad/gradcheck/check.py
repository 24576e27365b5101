"""Gradient checking: hand-written gradients against finite differences.

Each element's numeric derivative is, by default, the central difference
``(L(p + eps) - L(p - eps)) / (2 eps)``, as in the seed notebook. It carries two errors:
truncation, about ``eps^2 / 6 * L'''``, and rounding, about ``machine_eps * scale / eps``,
where ``scale`` is the size of the terms summed into the loss change. An element passes
at once when ``|a - n| <= threshold * (|a| + |n|)``; every other element gets a second
look (:mod:`handgrad.gradcheck.verdict`) at eps / 2 and, with the 4-point stencil, at a
step of 1e-3, where the rounding noise is a thousand times smaller: small gradients next to
large ones are resolved instead of passing under a noise floor, truncation is told from a
slip, and an element where the loss is not differentiable (ReLU at 0, a max-pool tie) is
named as a kink instead of failed.

``scale`` is ``max(|L|, 1)`` for a model's loss (``check_gradients``) and, for a layer
driven by a random upstream gradient ``r`` (``check_layer``), the sum of ``|y * r|`` over
the outputs that the perturbation moved: the loss change is summed from the changed
outputs alone, so an element that reaches a few outputs has a small noise floor.

Checks run in float64: lower precision is copied up, with a warning. A layer that still
computes in float32 on float64 input is checked in float32, with steps of 1e-2 (scaled)
and a threshold of 1e-3.

Modes: ``"full"`` checks every element; ``"sample"`` a random ``samples`` elements of each
array; ``"fast"`` compares the directional derivative along ``directions`` random unit
vectors over all arrays at once and, if one disagrees, finds the guilty array and element.
Methods (:mod:`handgrad.gradcheck.plan`): ``"batched"`` evaluates many perturbed copies per
call, ``"rows"`` many perturbed samples of the input per call (for a layer that treats
samples independently), ``"loop"`` one element at a time, ``"auto"`` the fastest that is
proven right on the real input first (with one more way for a parameter: ``"columns"``,
one element of each of its slices per evaluation where each slice moves one slice of the
output alone, see :mod:`handgrad.gradcheck.columns`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import convert, is_floating, namespace, to_numpy
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
from handgrad.gradcheck import probes
from handgrad.gradcheck.modes import Settings, run_mode, shape_mismatch
from handgrad.gradcheck.plan import Planner, declares_broadcasting, layer_planner, model_planner
from handgrad.gradcheck.precision import Precision, choose_precision
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck
from handgrad.gradcheck.routes import LayerProblem, as_float64, output_array
from handgrad.gradcheck.state import Snapshot, fresh, untracked
from handgrad.gradcheck.targets import Target, analytic_grads, input_gradient, param_targets
from handgrad.gradcheck.verdict import NOISE_FACTOR
from handgrad.nn.module import slots
from handgrad.nn.protocol import chain, named_layers

__all__ = [
    "DEFAULT_DIRECTIONS",
    "DEFAULT_EPS",
    "DEFAULT_MAX_MEMORY",
    "DEFAULT_SAMPLES",
    "DEFAULT_THRESHOLD",
    "METHODS",
    "MODES",
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
RELATIVE_FLOOR = 1e-8
MODES = ("full", "sample", "fast")
METHODS = ("auto", "batched", "rows", "loop")
_FLOAT64_EPS = float(np.finfo(np.float64).eps)
_UPSTREAM_STREAM = 0x5EED  # an int seed's upstream gradient comes from a stream of its own


def relative_difference(a: Any, b: Any, floor: float = RELATIVE_FLOOR) -> Any:
    """Elementwise ``|a - b| / max(|a| + |b|, floor)``; 0 against 0 counts as 0.

    The floor (default 1e-8) keeps numbers that are both almost zero from counting as a
    100% error: 1e-13 against 0 is a relative difference of 1e-5, not 1.

    Parameters
    ----------
    a, b : array
        The values compared, of one shape (or broadcastable).
    floor : float
        The smallest denominator (1e-8), at least 0.

    Returns
    -------
    array
        The relative differences, elementwise.

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


def _options(**given: Any) -> _Options:
    return _Options(
        eps=check_positive_float(given["eps"], "eps"),
        threshold=check_positive_float(given["threshold"], "threshold"),
        mode=check_choice(given["mode"], "mode", MODES),
        samples=check_positive_int(given["samples"], "samples"),
        directions=check_positive_int(given["directions"], "directions"),
        stencil=fd.make_stencil(given["stencil"], given["richardson"]),
        scaled_steps=bool(given["scaled_steps"]),
        method=check_choice(given["method"], "method", METHODS),
        max_memory=check_positive_int(given["max_memory"], "max_memory"),
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

    Parameters
    ----------
    f : callable
        A function of ``x`` that returns a scalar.
    x : array
        The point, perturbed in place and restored.
    eps : float
        The step (1e-6).
    stencil : {"central", "4-point"}
        The difference formula: central (O(eps^2)) or 4-point (O(eps^4)).
    richardson : int
        Levels of Richardson extrapolation over the central difference (0).

    Returns
    -------
    array
        The estimated gradient, shaped like ``x``.

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
    shape = tuple(x.shape)
    flat = np.arange(math.prod(shape))
    loop = fd.LoopEvaluator(lambda: _scalar(f(x), "f(x)"), "x")

    def losses_at(offset: float, d: np.ndarray) -> np.ndarray:
        losses = loop(x, flat, d)
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            where = ", ".join(map(str, np.unravel_index(int(bad[0]), shape)))
            raise NonFiniteLossError(
                f"the loss is {losses[bad[0]]} when x[{where}] moves by {float(d[bad[0]]):+g}; "
                "check the model there or use a smaller eps"
            )
        return losses

    values = np.asarray(to_numpy(x), dtype=np.float64).reshape(-1)
    grad = fd.estimate(
        losses_at, values, fd.steps(values, eps, False), fd.make_stencil(stencil, richardson)
    )
    return convert(
        grad.reshape(shape), namespace(x), dtype=x.dtype, device=array_api_compat.device(x)
    )


def _scalar(value: Any, what: str) -> float:
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise ValueError(
            f"{what} must return a scalar (a 0-d array or a number), got shape {shape}"
        )
    return float(value)


def _noise_floor(loss_scale: float, eps: float) -> float:
    """Absolute rounding noise of a central difference: NOISE_FACTOR * u * scale / eps."""
    return NOISE_FACTOR * _FLOAT64_EPS * max(loss_scale, _FLOAT64_EPS) / eps


def _upstream_rng(rng: Any) -> np.random.Generator:
    """The generator of the upstream gradient (and samples, directions): an int seed gets a
    stream of its own, so that ``x`` drawn from the same seed is not ``r``."""
    if isinstance(rng, int) and rng >= 0:
        return np.random.default_rng([rng, _UPSTREAM_STREAM])
    return make_rng(rng)  # refuses what is not a seed, a generator or None


def _check_input(x: Any) -> None:
    xp = check_array(x, "x", floating=False)
    check_not_empty(x, "x", needs="at least one element to check")
    if not (xp.isdtype(x.dtype, "real floating") or xp.isdtype(x.dtype, "integral")):
        raise TypeError(
            f"x must hold real numbers: floating point (checked) or integers (indices, not "
            f"checked), got {x.dtype}"
        )


def _rows(
    targets: list[Target],
    analytic: dict[str, np.ndarray],
    planner: Planner,
    current: Callable[[], tuple[float, float]],
    rng: np.random.Generator,
    settings: Settings,
) -> tuple[list[ParameterCheck], str]:
    """The report's rows: shape mismatches first, then the mode's checks."""
    wrong = [t for t in targets if analytic[t.name].shape != tuple(t.array.shape)]
    right = [t for t in targets if t not in wrong]
    mismatched = [shape_mismatch(t, analytic[t.name], planner, settings) for t in wrong]
    if settings.mode == "fast" and wrong:
        settings = replace(settings, mode="full")
    rows, method = run_mode(right, analytic, planner, current, rng, settings)
    return mismatched + rows, method


def _settings(opts: _Options, precision: Precision) -> Settings:
    return Settings(
        mode=opts.mode,
        samples=opts.samples,
        directions=opts.directions,
        eps=precision.eps,
        big_eps=precision.big_eps,
        stencil=opts.stencil,
        scaled_steps=precision.scaled_steps,
        threshold=precision.threshold,
        unit=precision.unit,
    )


_CHECK_OPTIONS = """
    eps : float
        The finite-difference step (1e-6).
    threshold : float
        Relative tolerance (1e-6), above the rounding noise (see the module docs).
    mode : {"full", "sample", "fast"}
        Every element; ``samples`` random elements per array; or ``directions`` random
        directions over everything, then the guilty array and element if one disagrees.
    samples : int
        Elements checked per array in ``mode="sample"`` (16).
    directions : int
        Random directions in ``mode="fast"`` (4).
    stencil : {"central", "4-point"}
        The first look's difference formula: central (O(eps^2)) or 4-point (O(eps^4)).
    richardson : int
        Levels of Richardson extrapolation over the central difference (0).
    scaled_steps : bool
        Step ``eps * max(1, |p|)`` per element instead of ``eps``.
    method : {"auto", "batched", "rows", "loop"}
        Many perturbed copies per call; many perturbed samples of the input per call (a
        layer that treats samples independently); or one element at a time. "auto" takes
        the fastest that a probe on the real input proves right (for a parameter also
        "columns": one element of each of its slices per evaluation); "batched" and
        "rows" refuse, with the reason, a model they do not fit. The report says which
        was used per array.
    max_memory : int
        Bytes the stacked copies may take per call (256 MiB).
    rng : int or numpy.random.Generator
        Seeds the upstream gradient (``check_layer``), the samples and the directions.
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
    protocol. A model without parameters has its input gradient checked instead (``x`` of
    integers, such as indices, is never perturbed). Afterwards the model is as it was
    (parameters bit for bit, buffers, mode, every attribute), except that ``grads`` hold
    the analytic gradients of this batch (a float32 model checked as a float64 copy keeps
    its own).

    Parameters
    ----------
    model : Sequential or layer
        The model whose parameter gradients are checked.
    loss : loss
        A handgrad loss (``forward(logits, y)``, ``backward()``), such as
        :class:`~handgrad.CrossEntropyLoss`.
    x : array
        The batch's input.
    y : array
        The batch's targets, as ``loss`` takes them.

    Returns
    -------
    GradientCheckReport
        One row per array, worst first; ``report.passed`` says whether every one passed.

    Raises
    ------
    GradientCheckError
        When an element fails and ``raise_on_failure`` is true; its ``report`` holds the
        table.

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
    _check_input(x)
    check_array(y, "y", floating=False)
    if not slots(model) and not is_floating(x):
        raise ValueError("nothing to check: the model has no parameters and x holds integers")
    opts = _options(
        eps=eps,
        threshold=threshold,
        mode=mode,
        samples=samples,
        directions=directions,
        stencil=stencil,
        richardson=richardson,
        scaled_steps=scaled_steps,
        method=method,
        max_memory=max_memory,
    )
    snapshot = Snapshot(model)
    try:
        with untracked():
            report = _check_model(model, loss, x, y, opts, make_rng(rng))
    finally:
        snapshot.restore()
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _model_loss(model: Any, loss: Any, arrays: dict[str, Any]) -> Any:
    return loss.forward(model.forward(fresh(arrays["x"])), arrays["y"])


def _check_model(
    model: Any, loss: Any, x: Any, y: Any, opts: _Options, generator: np.random.Generator
) -> GradientCheckReport:
    precision = choose_precision(
        model, loss, {"x": x, "y": y}, opts.eps, opts.threshold, opts.scaled_steps, _model_loss
    )
    model, loss = precision.model, precision.loss
    xm, ym = fresh(precision.arrays["x"]), fresh(precision.arrays["y"])

    def loss_at() -> float:
        return _scalar(loss.forward(model.forward(fresh(xm)), ym), "loss.forward")

    value = loss_at()
    dx = model.backward(loss.backward())
    targets = param_targets(model)
    analytic = analytic_grads(model)
    notes = [precision.note] if precision.note else []
    if not targets:
        analytic["x"] = input_gradient(dx, model, xm)
        targets = [Target("x", xm, None, "", None)]
        notes.append("the model has no parameters: its input gradient is checked")
    probes.check_deterministic_loss(model, loss_at, value, xm, precision.unit)
    scale = max(abs(value), 1.0)
    planner = model_planner(
        chain(model),
        loss,
        xm,
        ym,
        loss_at,
        value,
        scale,
        opts.method,
        opts.max_memory,
        precision.unit,
    )
    settings = _settings(opts, precision)
    try:
        rows, method = _rows(targets, analytic, planner, planner.current, generator, settings)
    finally:
        notes += planner.notes
    return GradientCheckReport(
        tuple(rows),
        eps=settings.eps,
        threshold=settings.threshold,
        atol=NOISE_FACTOR * precision.unit * scale / settings.eps,
        loss=value,
        mode=opts.mode,
        method=method,
        stencil=opts.stencil.name,
        precision=precision.name,
        notes=tuple(notes),
    )


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

    The layer is driven by a random upstream gradient ``r`` (seeded by ``rng``, from a
    stream of its own), that is by the loss ``L = sum(layer.forward(x) * r)``, so that
    every output element counts with its own weight. The input gradient is reported as the
    array ``"x"``; an ``x`` of integers (indices, as for an embedding) is not perturbed and
    only the parameters are checked. The layer gets its own copies of ``x`` and ``r`` at
    every call, and afterwards it is as it was (parameters bit for bit, buffers, mode,
    every attribute), except that ``grads`` hold the analytic gradients at ``x`` (a
    float32 layer checked as a float64 copy keeps its own). A layer
    whose forward gives different outputs on the same input raises
    :class:`~handgrad.core.errors.RandomLayerError`.

    Parameters
    ----------
    layer : layer
        Any object with ``params``, ``grads``, ``forward`` and ``backward``.
    x : array
        The input the gradients are checked at, (batch, ...).

    Returns
    -------
    GradientCheckReport
        One row per array (``"x"`` and each parameter), worst first; ``report.passed``
        says whether every one passed.

    Raises
    ------
    GradientCheckError
        When an element fails and ``raise_on_failure`` is true; its ``report`` holds the
        table.

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
    >>> report.passed, report["x"].n_failed, report["x"].n_checked, report["x"].method
    (False, 12, 12, 'rows')
    """
    named_layers(layer)
    _check_input(x)
    opts = _options(
        eps=eps,
        threshold=threshold,
        mode=mode,
        samples=samples,
        directions=directions,
        stencil=stencil,
        richardson=richardson,
        scaled_steps=scaled_steps,
        method=method,
        max_memory=max_memory,
    )
    generator = _upstream_rng(rng)
    snapshot = Snapshot(layer)
    try:
        with untracked():
            report = _check_layer(layer, x, opts, generator)
    finally:
        snapshot.restore()
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _check_layer(
    layer: Any, x: Any, opts: _Options, generator: np.random.Generator
) -> GradientCheckReport:
    last: dict[int, Any] = {}  # the last output of each model, by id

    def output(model: Any, loss: Any, arrays: dict[str, Any]) -> Any:
        last[id(model)] = output_array(model.forward(fresh(arrays["x"])), model)
        return last[id(model)]

    precision = choose_precision(
        layer, None, {"x": x}, opts.eps, opts.threshold, opts.scaled_steps, output
    )
    xm = fresh(precision.arrays["x"])
    if precision.model is layer and id(layer) in last:
        y = last[id(layer)]  # its forward at x, the last call: backward may follow it
    else:
        layer = precision.model
        y = output_array(layer.forward(fresh(xm)), layer)
    y0 = as_float64(y)
    if not np.all(np.isfinite(y0)):
        raise NonFiniteLossError(
            f"{type(layer).__name__}.forward(x) holds NaN or infinity "
            f"({int(np.sum(~np.isfinite(y0)))} of {y0.size} outputs); the check needs a "
            "finite output at x"
        )
    r = convert(
        generator.standard_normal(y0.shape),
        namespace(y),
        dtype=y.dtype,
        device=array_api_compat.device(y),
    )
    r64 = as_float64(r)
    dx = layer.backward(fresh(r))  # backward gets its own copy: it may write into it
    floating = is_floating(xm)
    targets = ([Target("x", xm, None, "", None)] if floating else []) + param_targets(layer)
    analytic = {"x": input_gradient(dx, layer, xm)} if floating else {}
    analytic.update(analytic_grads(layer))
    problem = LayerProblem(layer, xm, y0, r64)
    probes.check_deterministic(problem, precision.unit)
    notes = [precision.note] if precision.note else []
    if not floating:
        notes.append(f"x holds {xm.dtype} values (indices): its gradient is not checked")
    if not targets:
        raise ValueError("nothing to check: x holds integers and the layer has no parameters")
    layers = chain(layer)
    declared = all(declares_broadcasting(element) for element in layers)
    planner = layer_planner(
        problem, opts.method, opts.max_memory, precision.unit, layers if declared else None
    )
    settings = _settings(opts, precision)
    try:
        rows, method = _rows(targets, analytic, planner, problem.current, generator, settings)
    finally:
        notes += planner.notes
    scale = float(np.sum(np.abs(y0 * r64)))
    return GradientCheckReport(
        tuple(rows),
        eps=settings.eps,
        threshold=settings.threshold,
        atol=NOISE_FACTOR * precision.unit * max(scale, _FLOAT64_EPS) / settings.eps,
        loss=float(np.sum(y0 * r64)),
        mode=opts.mode,
        method=method,
        stencil=opts.stencil.name,
        precision=precision.name,
        notes=tuple(notes),
    )


for _checker in (check_gradients, check_layer):
    if _checker.__doc__ is not None:  # None under python -OO, which strips docstrings
        _checker.__doc__ += "\n    Parameters\n    ----------" + _CHECK_OPTIONS
