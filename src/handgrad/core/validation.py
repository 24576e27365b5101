"""Argument checks shared by the public API: each error names the argument, what it got and
what it needs, and is raised before anything is changed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Iterable
from types import ModuleType
from typing import Any

import numpy as np

from handgrad.core.arrays import namespace

__all__ = [
    "BOOLEAN",
    "FLOAT_DTYPES",
    "FRACTION",
    "NON_NEGATIVE",
    "OPEN_FRACTION",
    "POSITIVE",
    "POSITIVE_INT",
    "AnyOf",
    "Constraint",
    "Interval",
    "Options",
    "Predicate",
    "check_array",
    "check_choice",
    "check_not_empty",
    "check_positive_float",
    "check_positive_int",
]


def check_array(
    x: Any,
    name: str,
    *,
    ndim: int | None = None,
    min_ndim: int | None = None,
    layout: str = "",
    floating: bool = True,
    finite: bool = True,
) -> ModuleType:
    """Check that ``x`` is an array fit for computing and return its namespace.

    Parameters
    ----------
    x : array
        The value to check.
    name : str
        The argument's name, used in the message.
    ndim : int, optional
        The number of dimensions ``x`` must have.
    min_ndim : int, optional
        The least number of dimensions ``x`` may have (leading axes are stacked copies).
    layout : str, optional
        How the dimensions are read, e.g. ``"(batch, features)"``, quoted in the message.
    floating : bool
        Require a real floating-point dtype.
    finite : bool
        Require every element to be finite (no NaN or infinity).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.validation import check_array
    >>> check_array(np.zeros((2, 3)), "X", ndim=2).__name__  # the array's namespace
    'array_api_compat.numpy'
    >>> check_array(np.array([1.0, np.nan]), "x")
    Traceback (most recent call last):
        ...
    ValueError: x contains NaN or infinity (1 of 2 elements); remove or impute those values first
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(
            f"{name} must be an array (NumPy, PyTorch, or another array-API library), "
            f"got {type(x).__name__}"
        )
    xp = namespace(x)
    if ndim is not None and x.ndim != ndim:
        where = f" {layout}" if layout else ""
        raise ValueError(f"{name} must be a {ndim}-D array{where}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        where = f" {layout}" if layout else ""
        raise ValueError(
            f"{name} must be an array of at least {min_ndim} dimensions{where}, "
            f"got shape {tuple(x.shape)}"
        )
    if floating and not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{name} must have a floating-point dtype (float64 or float32), got {x.dtype}; "
            "convert it first, e.g. x.astype('float64') or x.double()"
        )
    if finite and xp.isdtype(x.dtype, "real floating") and not bool(xp.all(xp.isfinite(x))):
        bad = int(xp.sum(xp.astype(xp.logical_not(xp.isfinite(x)), xp.int64)))
        raise ValueError(
            f"{name} contains NaN or infinity ({bad} of {_size(x)} elements); "
            "remove or impute those values first"
        )
    return xp


def check_not_empty(
    x: Any, name: str, *, last: int | None = None, needs: str = "at least one element"
) -> None:
    """Refuse ``x`` if an axis (one of its ``last`` axes, when given) has length 0: a
    maximum over it has no value and a mean over it divides by zero. ``needs`` says what
    it must hold, in the message.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.validation import check_not_empty
    >>> check_not_empty(np.zeros((2, 3)), "X")  # fine: returns None
    >>> check_not_empty(np.zeros((0, 3)), "X", needs="at least one row")
    Traceback (most recent call last):
        ...
    ValueError: X must hold at least one row, got shape (0, 3)
    """
    shape = tuple(int(n) for n in x.shape)
    if 0 in (shape if last is None else shape[len(shape) - last :]):
        raise ValueError(f"{name} must hold {needs}, got shape {shape}")


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an int if it is a positive integer (bools are refused).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.validation import check_positive_int
    >>> check_positive_int(np.int64(32), "batch_size")
    32
    >>> check_positive_int(True, "batch_size")
    Traceback (most recent call last):
        ...
    ValueError: batch_size must be a positive integer, got True
    """
    return POSITIVE_INT.check(value, name)


def check_positive_float(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number greater than zero.

    Examples
    --------
    >>> from handgrad.core.validation import check_positive_float
    >>> check_positive_float(1e-6, "eps")
    1e-06
    >>> check_positive_float(0, "eps")
    Traceback (most recent call last):
        ...
    ValueError: eps must be a finite number greater than 0, got 0
    """
    return POSITIVE.check(value, name)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Examples
    --------
    >>> from handgrad.core.validation import check_choice
    >>> check_choice("adam", "optimizer", ("sgd", "adam"))
    'adam'
    >>> check_choice("rmsprop", "optimizer", ("sgd", "adam"))
    Traceback (most recent call last):
        ...
    ValueError: optimizer must be one of 'sgd', 'adam', got 'rmsprop'
    """
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


class Constraint:
    """What a hyperparameter may be, declared once and used by the library, the command line
    and the estimator: ``check`` raises the one message that names the argument, and
    ``parse`` reads the value from text (a command-line option)."""

    description = ""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def check(self, value: Any, name: str) -> Any:
        """Return ``value`` (as int or float where it is a number) if it is allowed."""
        if not self.accepts(value):
            raise ValueError(f"{name} must be {self.description}, got {value!r}")
        return self.convert(value)

    def convert(self, value: Any) -> Any:
        return value

    def parse(self, text: str) -> Any:
        """The value written as ``text``; ValueError (with the description) if not allowed."""
        return self.check(text, "the value")


class Interval(Constraint):
    """Numbers of ``kind`` (int or float) between ``low`` and ``high`` (None: unbounded),
    each end included when ``closed`` says so; never bools, NaN or infinity.

    Examples
    --------
    >>> from handgrad.core.validation import NON_NEGATIVE, FRACTION
    >>> NON_NEGATIVE.check(0.5, "alpha"), NON_NEGATIVE.description
    (0.5, 'a finite number >= 0')
    >>> FRACTION.check(1.0, "momentum")
    Traceback (most recent call last):
        ...
    ValueError: momentum must be a number in [0, 1), got 1.0
    >>> FRACTION.parse("0.9")
    0.9
    """

    def __init__(
        self,
        kind: type,
        low: float | None,
        high: float | None,
        closed: str = "left",
        description: str = "",
    ) -> None:
        self.kind, self.low, self.high = kind, low, high
        self.closed_low = closed in ("left", "both")
        self.closed_high = closed in ("right", "both")
        noun = "an integer" if kind is int else "a finite number" if high is None else "a number"
        if low is not None and high is not None:
            left, right = "[" if self.closed_low else "(", "]" if self.closed_high else ")"
            self.description = f"{noun} in {left}{low:g}, {high:g}{right}"
        elif low is not None:
            self.description = f"{noun} {'>=' if self.closed_low else '>'} {low:g}"
        else:
            self.description = noun
        self.description = description or self.description

    def accepts(self, value: Any) -> bool:
        base = numbers.Integral if self.kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, base) or not math.isfinite(value):
            return False
        if self.low is not None and not (
            value >= self.low if self.closed_low else value > self.low
        ):
            return False
        return self.high is None or (value <= self.high if self.closed_high else value < self.high)

    def convert(self, value: Any) -> Any:
        return self.kind(value)

    def parse(self, text: str) -> Any:
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            raise ValueError(f"must be {self.description}, got {text!r}") from None
        if not self.accepts(value):
            raise ValueError(f"must be {self.description}, got {text}")
        return self.convert(value)


class Options(Constraint):
    """One of a fixed set of values.

    Examples
    --------
    >>> from handgrad.core.validation import Options
    >>> Options(("sgd", "adam")).check("rmsprop", "optimizer")
    Traceback (most recent call last):
        ...
    ValueError: optimizer must be one of 'sgd', 'adam', got 'rmsprop'
    """

    def __init__(self, values: Iterable[Any]) -> None:
        self.values = tuple(values)
        self.description = f"one of {', '.join(map(repr, self.values))}"

    def accepts(self, value: Any) -> bool:
        return isinstance(value, Hashable) and value in self.values

    def parse(self, text: str) -> Any:
        if text not in self.values:
            raise ValueError(f"must be {self.description}, got {text!r}")
        return text


class Predicate(Constraint):
    """Values for which ``test(value)`` is true, described in words.

    Examples
    --------
    >>> from handgrad.core.validation import BOOLEAN
    >>> BOOLEAN.check("yes", "shuffle")
    Traceback (most recent call last):
        ...
    ValueError: shuffle must be True or False, got 'yes'
    """

    def __init__(self, test: Any, description: str) -> None:
        self.test, self.description = test, description

    def accepts(self, value: Any) -> bool:
        return bool(self.test(value))


class AnyOf(Constraint):
    """Values that any of ``constraints`` allows (the first that does converts it).

    Examples
    --------
    >>> from handgrad.core.validation import POSITIVE_INT, AnyOf, Options
    >>> batch_size = AnyOf(Options(["auto"]), POSITIVE_INT)
    >>> batch_size.check(32, "batch_size"), batch_size.description
    (32, "one of 'auto' or a positive integer")
    """

    def __init__(self, *constraints: Constraint) -> None:
        self.constraints = constraints
        self.description = " or ".join(c.description for c in constraints)

    def accepts(self, value: Any) -> bool:
        return any(c.accepts(value) for c in self.constraints)

    def convert(self, value: Any) -> Any:
        return next(c for c in self.constraints if c.accepts(value)).convert(value)


POSITIVE = Interval(float, 0, None, "neither", "a finite number greater than 0")
NON_NEGATIVE = Interval(float, 0, None, "left")
FRACTION = Interval(float, 0, 1, "left")
OPEN_FRACTION = Interval(float, 0, 1, "neither")
POSITIVE_INT = Interval(int, 1, None, "left", "a positive integer")
FLOAT_DTYPES = Options(("float64", "float32"))
BOOLEAN = Predicate(lambda v: isinstance(v, bool | np.bool_), "True or False")


def _size(x: Any) -> int:
    size = 1
    for n in x.shape:
        size *= int(n)
    return size
