"""At what precision a check runs.

Finite differences need float64: a float32 difference at ``eps = 1e-6`` is off by percents.
A model or data in float32 or float16 is checked as a float64 copy (every floating array
it holds made float64, tied arrays kept tied) where the copy computes what the original
computes; a model that computes in float32 whatever it is given is checked at float32's
own noise instead: steps ``eps * max(1, |p|)`` of at least 1e-2 and a threshold of at
least 1e-3 (1e-1 and 1e-2 for float16). Either way a :class:`GradientCheckWarning` says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from handgrad.core.arrays import float_dtype_name, is_floating, namespace
from handgrad.core.errors import GradientCheckWarning
from handgrad.gradcheck.routes import as_float64
from handgrad.gradcheck.state import fresh, is_array, promoted_copy
from handgrad.nn.protocol import named_layers

__all__ = ["LOW_PRECISION", "SECOND_LOOK_EPS", "Precision", "choose_precision", "in_own_precision"]

SECOND_LOOK_EPS = 1e-3
# a model that computes in low precision whatever it is given: least eps (scaled), threshold
LOW_PRECISION = {"float32": (1e-2, 1e-3), "float16": (1e-1, 1e-2)}
_FLOAT64_EPS = float(np.finfo(np.float64).eps)


@dataclass
class Precision:
    """The model, loss and data the check runs on, and at what precision (see
    :func:`choose_precision`)."""

    model: Any
    loss: Any
    arrays: dict[str, Any]
    name: str = "float64"
    unit: float = _FLOAT64_EPS
    eps: float = 1e-6
    threshold: float = 1e-6
    big_eps: float = SECOND_LOOK_EPS
    scaled_steps: bool = False
    note: str = ""


def _low_precision_arrays(model: Any, arrays: dict[str, Any]) -> dict[str, str]:
    found = {
        f"parameter {prefix}{key}": value
        for prefix, layer in named_layers(model)
        for key, value in getattr(layer, "params", {}).items()
    }
    low = {}
    for name, value in {**arrays, **found}.items():
        if is_array(value) and is_floating(value) and value.dtype != namespace(value).float64:
            low[name] = float_dtype_name(value)
    return low


def in_own_precision(
    dtype: str, unit: float, reason: str, eps: float, threshold: float, what: str = "the model"
) -> dict[str, Any]:
    """The settings of a check run in ``dtype`` itself (``unit`` its roundoff), because
    ``reason``: steps and threshold at least ``dtype``'s (:data:`LOW_PRECISION`), scaled
    steps, a second look at 4 steps, and a note that says so. Shared by every checker.

    Examples
    --------
    >>> from handgrad.gradcheck.precision import in_own_precision
    >>> settings = in_own_precision("float32", 2.0**-23, "no float64 twin", 1e-6, 1e-6)
    >>> settings["eps"], settings["threshold"], settings["big_eps"]
    (0.01, 0.001, 0.04)
    """
    low_eps, low_threshold = LOW_PRECISION.get(dtype, LOW_PRECISION["float16"])
    eps, threshold = max(eps, low_eps), max(threshold, low_threshold)
    note = (
        f"{what} computes in {dtype} ({reason}): checked in {dtype}, with steps "
        f"eps * max(1, |p|), eps {eps:g}, threshold {threshold:g}"
    )
    return {
        "name": dtype,
        "unit": unit,
        "eps": eps,
        "threshold": threshold,
        "big_eps": 4 * eps,
        "scaled_steps": True,
        "note": note,
    }


def choose_precision(
    model: Any,
    loss: Any,
    arrays: dict[str, Any],
    eps: float,
    threshold: float,
    scaled_steps: bool,
    output: Callable[..., Any],
) -> Precision:
    """float64 copies of the model and data where the model computes in float64 then, else
    the originals at their own precision (``output(model, loss, arrays)`` is compared).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.precision import choose_precision
    >>> layer, x = hg.Tanh(), np.ones((2, 3), dtype=np.float32)
    >>> def output(model, loss, arrays):
    ...     return model.forward(arrays["x"])
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     chosen = choose_precision(layer, None, {"x": x}, 1e-6, 1e-6, False, output)
    >>> chosen.name, chosen.arrays["x"].dtype.name, chosen.model is layer
    ('float64', 'float64', False)
    """
    plain = Precision(
        model,
        loss,
        arrays,
        eps=eps,
        threshold=threshold,
        scaled_steps=scaled_steps,
    )
    low = _low_precision_arrays(model, arrays)
    if not low:
        out = output(model, loss, arrays)
        if not (is_array(out) and is_floating(out)) or out.dtype == namespace(out).float64:
            return plain
        dtype = float_dtype_name(out)
        reason = f"its output is {dtype} on float64 input"
    else:
        name, dtype = next(iter(low.items()))
        twin, twin_loss = promoted_copy(model), promoted_copy(loss)
        wide = {k: _as_float64(v) for k, v in arrays.items()}
        reason = _promotion_refused(output, (model, loss, arrays), (twin, twin_loss, wide), dtype)
        if not reason:
            warnings.warn(
                f"{name} is {dtype}, too coarse for finite differences: the check runs on a "
                "float64 copy of the model and data",
                GradientCheckWarning,
                stacklevel=4,
            )
            return replace(plain, model=twin, loss=twin_loss, arrays=wide)
    unit = float(np.finfo(np.dtype(dtype)).eps)
    settings = in_own_precision(dtype, unit, reason, eps, threshold)
    warnings.warn(settings["note"], GradientCheckWarning, stacklevel=4)
    return replace(plain, **settings)


def _promotion_refused(output: Callable[..., Any], low: tuple, wide: tuple, dtype: str) -> str:
    """Why the float64 copy ``wide`` does not compute what ``low`` computes, or ""."""
    try:
        got = output(*wide)
    except Exception as err:  # the probe's answer: it cannot run in float64
        return f"in float64 it raised {type(err).__name__}: {err}"
    if not is_array(got) or got.dtype != namespace(got).float64:
        return f"its output stays {getattr(got, 'dtype', type(got).__name__)} on a float64 copy"
    want = as_float64(output(*low))
    unit = float(np.finfo(np.dtype(dtype)).eps)
    gap = float(np.max(np.abs(as_float64(got) - want), initial=0.0))
    if not gap <= 1024 * unit * max(float(np.max(np.abs(want), initial=0.0)), 1e-30):
        return f"its float64 output differs from its {dtype} output by {gap:.2g}"
    return ""


def _as_float64(v: Any) -> Any:
    if not is_array(v):
        return v
    xp = namespace(v)
    return xp.astype(v, xp.float64) if xp.isdtype(v.dtype, "real floating") else fresh(v)
