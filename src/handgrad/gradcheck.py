"""Gradient checking: hand-written gradients against central finite differences.

Each element's numeric derivative is ``(L(p + eps) - L(p - eps)) / (2 eps)``, as in the seed
notebook. It carries two errors: truncation, about ``eps^2 / 6 * L'''``, and rounding, about
``machine_eps * |L| / eps``. The rounding part is why a purely relative test fails correct
networks: a true gradient of 2e-7 next to a loss of 2.3 is resolved to only ~1e-3 relative
at eps = 1e-6. So an element fails only when its difference exceeds *both*

* the relative tolerance: ``threshold * (|analytic| + |numeric|)``, and
* the noise floor: ``atol = NOISE_FACTOR * machine_eps * loss_scale / eps``,

where ``loss_scale`` is the size of the terms summed into the loss: ``max(|L|, 1)`` for a
model's loss (a loss of ~0 is still computed from terms of order one), and
``sum(|y * r|)`` for a layer driven by a random upstream gradient ``r``. Equivalently, the
relative difference is measured against ``max(|a| + |n|, atol / threshold)``; that is the
number reported. Checks always run in float64; other dtypes draw a warning.
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

from handgrad.backend import convert, namespace, to_numpy
from handgrad.init import make_rng
from handgrad.model import named_layers
from handgrad.tables import format_table
from handgrad.validation import check_array, check_positive_float

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_THRESHOLD",
    "NOISE_FACTOR",
    "RELATIVE_FLOOR",
    "GradientCheckError",
    "GradientCheckReport",
    "GradientCheckWarning",
    "ParameterCheck",
    "check_gradients",
    "check_layer",
    "numerical_gradient",
    "relative_difference",
]

DEFAULT_EPS = 1e-6
DEFAULT_THRESHOLD = 1e-6
NOISE_FACTOR = 16.0
RELATIVE_FLOOR = 1e-8
_FLOAT64_EPS = float(np.finfo(np.float64).eps)


class GradientCheckWarning(UserWarning):
    """A gradient check was asked of data it cannot resolve well (e.g. float32)."""


def relative_difference(a: Any, b: Any, floor: float = RELATIVE_FLOOR) -> Any:
    """Elementwise ``|a - b| / max(|a| + |b|, floor)``; 0 against 0 counts as 0.

    The floor (default 1e-8) keeps numbers that are both almost zero from counting as a
    100% error: 1e-13 against 0 is a relative difference of 1e-5, not 1.
    """
    if not floor >= 0:
        raise ValueError(f"floor must be a number >= 0, got {floor!r}")
    xp = namespace(a, b)
    diff = xp.abs(a - b)
    scale = xp.abs(a) + xp.abs(b)
    scale = xp.where(scale > floor, scale, xp.full_like(scale, floor))
    return diff / xp.where(scale > 0, scale, xp.ones_like(scale))  # diff is 0 where scale is 0


def numerical_gradient(f: Callable[[Any], Any], x: Any, eps: float = DEFAULT_EPS) -> Any:
    """Central-difference gradient of a scalar function ``f`` at ``x``, element by element.

    ``x`` is perturbed in place, one element at a time, and always restored, also when ``f``
    raises. The result has the shape, library and dtype of ``x``.
    """
    check_array(x, "x")
    eps = check_positive_float(eps, "eps")
    grad = _central_differences(lambda: _scalar(f(x), "f(x)"), x, eps, "x")
    return convert(grad, namespace(x), dtype=x.dtype, device=array_api_compat.device(x))


def _central_differences(loss_at: Callable[[], float], p: Any, eps: float, name: str) -> np.ndarray:
    """Perturb each element of ``p`` in place by +-eps; return dL/dp as float64 NumPy."""
    grad = np.empty(tuple(p.shape), dtype=np.float64)
    for index in np.ndindex(*grad.shape):
        value = float(p[index])
        try:
            p[index] = value + eps
            up, loss_up = float(p[index]), loss_at()
            p[index] = value - eps
            down, loss_down = float(p[index]), loss_at()
        finally:
            p[index] = value
        for step, loss in ((eps, loss_up), (-eps, loss_down)):
            if not math.isfinite(loss):
                raise ValueError(
                    f"the loss is {loss} when {name}{list(index)} moves by {step:+g}; "
                    "check the model there or use a smaller eps"
                )
        # (L(p + eps) - L(p - eps)) / (2 eps), with the step actually stored in p
        grad[index] = (loss_up - loss_down) / (up - down)
    return grad


def _scalar(value: Any, what: str) -> float:
    shape = tuple(getattr(value, "shape", ()))
    if shape != ():
        raise ValueError(
            f"{what} must return a scalar (a 0-d array or a number), got shape {shape}"
        )
    return float(value)


@dataclass(frozen=True)
class ParameterCheck:
    """How one array's analytic gradient compares with its numeric estimate."""

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    max_rel_diff: float
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    n_failed: int
    analytic_shape: tuple[int, ...] | None = None

    @property
    def size(self) -> int:
        """Number of elements checked."""
        return math.prod(self.shape)

    @property
    def passed(self) -> bool:
        """True when no element is off."""
        return self.n_failed == 0

    def describe(self) -> str:
        """One sentence on this check: where it is worst, or why it failed."""
        if self.analytic_shape is not None:
            return (
                f"gradient check failed for {self.name!r}: the analytic gradient has shape "
                f"{self.analytic_shape} but the parameter has shape {self.shape}"
            )
        verdict = "passed" if self.passed else "failed"
        return (
            f"gradient check {verdict} for {self.name!r} (shape {self.shape}): "
            f"{self.n_failed} of {self.size} elements off; worst at index {self.worst_index}: "
            f"analytic {self.analytic:.6e}, numeric {self.numeric:.6e}, "
            f"relative difference {self.max_rel_diff:.2e}"
        )


@dataclass(frozen=True)
class GradientCheckReport:
    """The outcome of a gradient check, one :class:`ParameterCheck` per array checked."""

    checks: tuple[ParameterCheck, ...]
    eps: float
    threshold: float
    atol: float
    loss: float

    @property
    def passed(self) -> bool:
        """True when every array passed."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[ParameterCheck, ...]:
        """The checks that failed, in model order."""
        return tuple(c for c in self.checks if not c.passed)

    def __getitem__(self, name: str) -> ParameterCheck:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def __str__(self) -> str:
        header = (
            f"gradient check (float64, central differences): eps={self.eps:g}, "
            f"threshold={self.threshold:g}, noise floor={self.atol:.1e}, loss={self.loss:.6g}"
        )
        rows = [
            [
                c.name,
                "x".join(map(str, c.shape)) or "scalar",
                str(c.size),
                f"{c.max_abs_diff:.2e}",
                f"{c.max_rel_diff:.2e}",
                str(c.worst_index),
                f"{c.analytic:.6e}",
                f"{c.numeric:.6e}",
                str(c.n_failed),
                "ok" if c.passed else "FAIL",
            ]
            for c in self.checks
        ]
        table = format_table(
            [
                "array",
                "shape",
                "size",
                "max abs diff",
                "max rel diff",
                "worst index",
                "analytic",
                "numeric",
                "off",
                "",
            ],
            rows,
        )
        passed = sum(c.passed for c in self.checks)
        return f"{header}\n{table}\n{passed} of {len(self.checks)} arrays passed"


class GradientCheckError(ValueError):
    """A gradient check failed; ``report`` holds every array's result.

    A ``ValueError``, so the seed notebook's ``except ValueError`` still catches it.
    """

    def __init__(self, report: GradientCheckReport) -> None:
        self.report = report
        self.failure = report.failures[0]
        others = len(report.failures) - 1
        more = f" ({others} more array{'s' if others > 1 else ''} failed too)" if others else ""
        super().__init__(
            f"{self.failure.describe()}; threshold {report.threshold:g}, eps {report.eps:g}{more}"
        )


def _compare(
    name: str, analytic: Any, numeric: np.ndarray, threshold: float, atol: float
) -> ParameterCheck:
    a = np.asarray(to_numpy(analytic), dtype=np.float64)
    shape = tuple(numeric.shape)
    if a.shape != shape:
        nan = float("nan")
        return ParameterCheck(name, shape, nan, nan, (), nan, nan, math.prod(shape), a.shape)
    if a.size == 0:
        return ParameterCheck(name, shape, 0.0, 0.0, (), 0.0, 0.0, 0)
    diff = np.abs(a - numeric)
    rel = to_numpy(relative_difference(a, numeric, floor=atol / threshold))
    rel = np.where(np.isnan(rel), np.inf, rel)  # a NaN analytic gradient is never close
    worst = np.unravel_index(int(np.argmax(rel)), shape)
    return ParameterCheck(
        name=name,
        shape=shape,
        max_abs_diff=float(np.max(diff)),
        max_rel_diff=float(rel[worst]),
        worst_index=tuple(int(i) for i in worst),
        analytic=float(a[worst]),
        numeric=float(numeric[worst]),
        n_failed=int(np.count_nonzero(rel > threshold)),
    )


def _noise_floor(loss_scale: float, eps: float) -> float:
    """Absolute rounding noise of a central difference: NOISE_FACTOR * u * scale / eps."""
    return NOISE_FACTOR * _FLOAT64_EPS * max(loss_scale, _FLOAT64_EPS) / eps


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
        f"{name} is {dtype}, too coarse for central differences: the check runs on a "
        "float64 copy of the model and data",
        GradientCheckWarning,
        stacklevel=3,
    )
    model = copy.deepcopy(model)
    for _, layer in named_layers(model):
        for store in (layer.params, layer.grads):
            for k, v in store.items():
                store[k] = _as_float64(v)
    return model, {k: _as_float64(v) for k, v in arrays.items()}


def _as_float64(v: Any) -> Any:
    xp = namespace(v)
    return xp.astype(v, xp.float64) if xp.isdtype(v.dtype, "real floating") else v


def _analytic_grads(model: Any) -> dict[str, Any]:
    grads = {}
    for prefix, layer in named_layers(model):
        for k in layer.params:
            if k not in layer.grads:
                raise ValueError(
                    f"{type(layer).__name__} has parameter {k!r} but no grads[{k!r}] after "
                    "backward: backward must write a gradient for every parameter"
                )
            g = layer.grads[k]
            grads[prefix + k] = namespace(g).asarray(g, copy=True)
    return grads


def _finish(
    named_arrays: list[tuple[str, Any]],
    analytic: dict[str, Any],
    loss_at: Callable[[], float],
    *,
    loss: float,
    loss_scale: float,
    eps: float,
    threshold: float,
    raise_on_failure: bool,
) -> GradientCheckReport:
    atol = _noise_floor(loss_scale, eps)
    checks = tuple(
        _compare(name, analytic[name], _central_differences(loss_at, p, eps, name), threshold, atol)
        for name, p in named_arrays
    )
    report = GradientCheckReport(checks, eps=eps, threshold=threshold, atol=atol, loss=loss)
    if raise_on_failure and not report.passed:
        raise GradientCheckError(report)
    return report


def _model_params(model: Any) -> list[tuple[str, Any]]:
    return [(p + k, v) for p, layer in named_layers(model) for k, v in layer.params.items()]


def check_gradients(
    model: Any,
    loss: Any,
    x: Any,
    y: Any,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
    raise_on_failure: bool = True,
) -> GradientCheckReport:
    """Check every parameter gradient of ``model`` under ``loss`` on one batch ``(x, y)``.

    ``model`` is a :class:`~handgrad.model.Sequential` or any single layer that follows the
    protocol. Parameters are perturbed in place and restored exactly; afterwards ``grads``
    hold the analytic gradients of this batch.

    Raises
    ------
    GradientCheckError
        If an element is off by more than the tolerance (see the module docstring), unless
        ``raise_on_failure`` is False.
    """
    named_layers(model)
    check_array(x, "x")
    check_array(y, "y", floating=False)
    eps = check_positive_float(eps, "eps")
    threshold = check_positive_float(threshold, "threshold")
    model, data = _in_float64(model, {"x": x, "y": y})
    x, y = data["x"], data["y"]

    def loss_at() -> float:
        return _scalar(loss.forward(model.forward(x), y), "loss.forward")

    value = loss_at()
    model.backward(loss.backward())
    analytic = _analytic_grads(model)
    try:
        return _finish(
            _model_params(model),
            analytic,
            loss_at,
            loss=value,
            loss_scale=max(abs(value), 1.0),
            eps=eps,
            threshold=threshold,
            raise_on_failure=raise_on_failure,
        )
    finally:
        model.forward(x)  # leave the caches at the unperturbed point


def check_layer(
    layer: Any,
    x: Any,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
    rng: Any = None,
    raise_on_failure: bool = True,
) -> GradientCheckReport:
    """Check a layer's input gradient and every parameter gradient at input ``x``.

    The layer is driven by a random upstream gradient ``r`` (seeded by ``rng``), that is
    by the loss ``L = sum(layer.forward(x) * r)``, so that every output element counts with
    its own weight. The input gradient is reported as the array ``"x"``; ``x`` itself is
    not modified.
    """
    named_layers(layer)
    check_array(x, "x")
    eps = check_positive_float(eps, "eps")
    threshold = check_positive_float(threshold, "threshold")
    layer, data = _in_float64(layer, {"x": x})
    xp = namespace(data["x"])
    x = xp.asarray(data["x"], copy=True)
    y = layer.forward(x)
    r = convert(
        make_rng(rng).standard_normal(tuple(y.shape)),
        xp,
        dtype=y.dtype,
        device=array_api_compat.device(y),
    )

    def loss_at() -> float:
        return _scalar(xp.sum(layer.forward(x) * r), "sum(layer.forward(x) * r)")

    terms = y * r
    dx = layer.backward(r)
    analytic = {"x": namespace(dx).asarray(dx, copy=True), **_analytic_grads(layer)}
    try:
        return _finish(
            [("x", x), *_model_params(layer)],
            analytic,
            loss_at,
            loss=float(xp.sum(terms)),
            loss_scale=float(xp.sum(xp.abs(terms))),
            eps=eps,
            threshold=threshold,
            raise_on_failure=raise_on_failure,
        )
    finally:
        layer.forward(x)  # leave the caches at the unperturbed point
