"""Weight initialisers: each takes a shape ``(fan_out, fan_in)`` and a NumPy random generator
and returns a float64 NumPy array, which a layer then moves to its backend."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.core.deprecation import renamed
from handgrad.core.random import make_rng
from handgrad.core.validation import check_positive_float

__all__ = [
    "Initializer",
    "get_initializer",
    "glorot_uniform",
    "he_normal",
    "scaled_normal",
]

Initializer = Callable[[tuple[int, int], np.random.Generator], np.ndarray]


def scaled_normal(
    shape: tuple[int, int], rng: np.random.Generator, scale: float = 0.01
) -> np.ndarray:
    """The seed notebook's ``randn(out, in) * 0.01``: small normal weights.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.init import scaled_normal
    >>> w = scaled_normal((20, 30), np.random.default_rng(0))
    >>> w.shape, round(float(w.std()), 3)
    ((20, 30), 0.01)
    """
    return rng.standard_normal(shape) * check_positive_float(scale, "scale")


def glorot_uniform(
    shape: tuple[int, int], rng: np.random.Generator, factor: float = 6.0
) -> np.ndarray:
    """Uniform in +-sqrt(factor / (fan_in + fan_out)).

    ``factor=6`` is Glorot and Bengio's; scikit-learn's MLP uses 2 before a sigmoid.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.init import glorot_uniform
    >>> w = glorot_uniform((20, 30), np.random.default_rng(0))
    >>> w.shape, bool(np.all(np.abs(w) <= np.sqrt(6 / (30 + 20))))
    ((20, 30), True)
    """
    fan_out, fan_in = shape
    bound = np.sqrt(check_positive_float(factor, "factor") / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def he_normal(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Normal with standard deviation sqrt(2 / fan_in), for ReLU layers (He et al.).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.init import he_normal
    >>> w = he_normal((500, 200), np.random.default_rng(0))
    >>> w.shape, round(float(w.std()), 2)  # sqrt(2 / 200) = 0.1
    ((500, 200), 0.1)
    """
    return rng.standard_normal(shape) * np.sqrt(2.0 / shape[1])


_NAMED: dict[str, Initializer] = {
    "small_normal": scaled_normal,
    "glorot": glorot_uniform,
    "glorot_sigmoid": functools.partial(glorot_uniform, factor=2.0),
    "he": he_normal,
}


def get_initializer(init: str | Initializer) -> Initializer:
    """Return the initialiser named ``init`` ('small_normal', 'glorot', 'glorot_sigmoid',
    'he'),
    or ``init`` itself if it is callable.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.init import get_initializer, he_normal
    >>> get_initializer("he") is he_normal
    True
    >>> get_initializer("glorot_sigmoid")((3, 4), np.random.default_rng(0)).shape
    (3, 4)
    """
    if callable(init):
        return init
    if init == "seed":
        warnings.warn(
            "init='seed' is deprecated: the seed notebook's randn * 0.01 is 'small_normal'",
            DeprecationWarning,
            stacklevel=3,
        )
        init = "small_normal"
    if init not in _NAMED:
        raise ValueError(
            f"init must be one of {', '.join(map(repr, _NAMED))} or a callable, got {init!r}"
        )
    return _NAMED[init]


def initialize(init: str | Initializer, shape: tuple[int, int], rng: Any) -> np.ndarray:
    """Draw a weight of ``shape`` with ``init``, checking what a custom initialiser returns."""
    weight = np.asarray(get_initializer(init)(shape, make_rng(rng)), dtype=np.float64)
    if weight.shape != shape:
        raise ValueError(f"init returned shape {weight.shape}, the layer needs {shape}")
    return weight


__getattr__ = renamed(
    "handgrad.nn.init",
    {
        "Initialiser": "Initializer",
        "get_initialiser": "get_initializer",
        "initialise": "initialize",
    },
    globals(),
)  # the names of 0.1
