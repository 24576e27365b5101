"""The point a JAX check runs at: the arguments flattened into named leaves (pytrees of
arrays), which of them are checked (floating point) and which are passed as they are
(integers: indices), and the precision the check runs in.

Finite differences need float64. JAX computes in float32 unless its x64 mode is on, so the
check turns x64 on for itself alone (``jax.enable_x64(True)``, a context: the global
``jax_enable_x64`` flag and the caller's arrays are left as they are) and runs on float64
copies of the arguments where the function computes the same there; a function that
computes in float32 whatever it is given is checked at float32's own noise, as
:mod:`handgrad.gradcheck.precision` does for a layer.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from handgrad.core.errors import GradientCheckWarning
from handgrad.gradcheck.precision import SECOND_LOOK_EPS, in_own_precision
from handgrad.interop.jax_evaluate import call, jax_modules, output_shapes

__all__ = ["Point", "Precision", "choose_precision", "make_point", "x64_mode"]


@dataclass(frozen=True)
class Point:
    """Flattened arguments: ``leaves`` (JAX arrays), ``treedef`` (rebuilds the argument
    tuple), a report name per leaf and whether each is checked.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_point import make_point
    >>> def f(x, params):
    ...     return x * params["w"]
    >>> point = make_point(f, (jnp.ones(2), {"w": jnp.ones(2), "n": jnp.arange(2)}))
    >>> point.names, point.checked
    (['x', "params['n']", "params['w']"], (True, False, True))
    """

    leaves: list[Any]
    treedef: Any
    names: list[str]
    checked: tuple[bool, ...]

    def args(self) -> tuple:
        """The argument tuple."""
        return self.treedef.unflatten(self.leaves)


def _parameter_names(f: Callable[..., Any], count: int) -> list[str]:
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):  # no signature to read (a builtin, a C function)
        parameters = []
    names = []
    for i in range(count):
        p = parameters[i] if i < len(parameters) else None
        positional = p is not None and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        names.append(p.name if positional else f"args[{i}]")
    return names


def make_point(f: Callable[..., Any], args: Any, prefix: str | None = None) -> Point:
    """The leaves of ``args`` (a tuple of arrays or pytrees of arrays), named after ``f``'s
    parameters (or ``prefix`` for a single-argument tree), checked where floating point.
    """
    jax, jnp = jax_modules()
    pairs, treedef = jax.tree_util.tree_flatten_with_path(tuple(args))
    tops = _parameter_names(f, len(args)) if prefix is None else [prefix]
    leaves, names, checked = [], [], []
    for path, leaf in pairs:
        name = (prefix if prefix is not None else tops[path[0].idx]) + jax.tree_util.keystr(
            path[1:]
        )
        value = leaf if isinstance(leaf, jax.Array) else np.asarray(leaf)
        kind = np.dtype(value.dtype).kind if value.dtype != jnp.bfloat16 else "f"
        if kind not in "fiub":
            raise TypeError(
                f"{name} must be an array of real numbers: floating point (checked) or "
                f"integers (indices, not checked), got {_described(leaf)}"
            )
        leaves.append(jnp.asarray(value))
        names.append(name)
        checked.append(kind == "f")
    return Point(leaves, treedef, names, tuple(checked))


def _described(leaf: Any) -> str:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and hasattr(leaf, "shape"):
        return f"{type(leaf).__name__} of {dtype}"
    return type(leaf).__name__


def x64_mode(float64: bool) -> contextlib.AbstractContextManager:
    """JAX's x64 mode for the check alone when ``float64`` asks for it (a context)."""
    jax, _ = jax_modules()
    return jax.enable_x64(True) if float64 else contextlib.nullcontext()


@dataclass(frozen=True)
class Precision:
    """The point the check runs at and its finite-difference settings."""

    point: Point
    name: str = "float64"
    unit: float = float(np.finfo(np.float64).eps)
    eps: float = 1e-6
    threshold: float = 1e-6
    big_eps: float = SECOND_LOOK_EPS
    scaled_steps: bool = False
    note: str = ""


def _dtype_name(a: Any) -> str:
    return np.dtype(a.dtype).name if a.dtype.name != "bfloat16" else "bfloat16"


def _is_float64(a: Any) -> bool:
    return _dtype_name(a) == "float64"


def choose_precision(
    f: Callable[..., Any],
    point: Point,
    float64: bool,
    eps: float,
    threshold: float,
    scaled_steps: bool,
) -> Precision:
    """float64 copies where ``f`` computes the same in float64 (and ``float64`` allows),
    else the arguments at their own precision with float32's noise handling.

    Examples
    --------
    >>> import warnings
    >>> import jax
    >>> import jax.numpy as jnp
    >>> from handgrad.interop.jax_point import choose_precision, make_point, x64_mode
    >>> with x64_mode(True), warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     point = make_point(jnp.tanh, (jnp.ones(3, dtype=jnp.float32),))
    ...     chosen = choose_precision(jnp.tanh, point, True, 1e-6, 1e-6, False)
    ...     chosen.name, chosen.point.leaves[0].dtype.name
    ('float64', 'float64')
    """
    jax, jnp = jax_modules()
    plain = Precision(point, eps=eps, threshold=threshold, scaled_steps=scaled_steps)
    low = {
        n: _dtype_name(a)
        for n, a, c in zip(point.names, point.leaves, point.checked, strict=True)
        if c and not _is_float64(a)
    }
    if not low:
        shapes = jax.tree.leaves(output_shapes(f, point.treedef, point.leaves))
        narrow = [o for o in shapes if _floating(o) and not _is_float64(o)]
        if not narrow:
            return plain
        dtype = _dtype_name(narrow[0])
        reason = f"its output is {dtype} on float64 input"
    else:
        name, dtype = next(iter(low.items()))
        reason = _promotion_refused(f, point, dtype) if float64 else "float64=False"
        if not reason:
            warnings.warn(
                f"{name} is {dtype}, too coarse for finite differences: the check runs on "
                "float64 copies (JAX's x64 mode on for the check alone)",
                GradientCheckWarning,
                stacklevel=4,
            )
            return replace(plain, point=_promoted(point))
    unit = float(jnp.finfo(dtype).eps)
    settings = in_own_precision(dtype, unit, reason, eps, threshold, "the function")
    warnings.warn(settings["note"], GradientCheckWarning, stacklevel=4)
    return Precision(point, **settings)


def _floating(a: Any) -> bool:
    return hasattr(a, "dtype") and (np.dtype(a.dtype).kind == "f" or a.dtype.name == "bfloat16")


def _promoted(point: Point) -> Point:
    _, jnp = jax_modules()
    leaves = [
        a.astype(jnp.float64) if c else a for a, c in zip(point.leaves, point.checked, strict=True)
    ]
    return replace(point, leaves=leaves)


def _promotion_refused(f: Callable[..., Any], point: Point, dtype: str) -> str:
    """Why ``f`` on float64 copies does not compute what it computes on ``point``, or ""."""
    jax, jnp = jax_modules()
    if not jax.config.jax_enable_x64:
        return "JAX's x64 mode is off"
    low_out = jax.tree.leaves(call(f, point.treedef, point.leaves))
    try:
        promoted = _promoted(point)
        wide = jax.tree.leaves(call(f, promoted.treedef, promoted.leaves))
    except Exception as err:  # the probe's answer: it cannot run in float64
        return f"in float64 it raised {type(err).__name__}: {err}"
    kept = [w for w in wide if _floating(w) and not _is_float64(w)]
    if kept:
        return f"its output stays {_dtype_name(kept[0])} on float64 copies"
    unit = float(jnp.finfo(dtype).eps)
    for w, o in zip(wide, low_out, strict=True):
        want = np.asarray(o, np.float64)
        gap = float(np.max(np.abs(np.asarray(w, np.float64) - want), initial=0.0))
        if not gap <= 1024 * unit * max(float(np.max(np.abs(want), initial=0.0)), 1e-30):
            return f"its float64 output differs from its {dtype} output by {gap:.2g}"
    return ""
