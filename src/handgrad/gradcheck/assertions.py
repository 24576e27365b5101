"""Assertions for a test suite: check a layer's or a function's hand-written gradient and
fail with a message that points at the wrong element.

Example, in a pytest file::

    from handgrad.testing import assert_layer_gradients

    def test_my_layer():
        assert_layer_gradients(MyLayer(), np.random.default_rng(0).standard_normal((8, 10)))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from handgrad.core.arrays import to_numpy
from handgrad.core.validation import check_array
from handgrad.gradcheck.check import (
    DEFAULT_EPS,
    DEFAULT_THRESHOLD,
    GradientCheckError,
    GradientCheckReport,
    _noise_floor,
    check_layer,
    numerical_gradient,
)
from handgrad.gradcheck.report import compare

__all__ = ["assert_gradients", "assert_layer_gradients"]


def assert_layer_gradients(layer: Any, x: Any, **options: Any) -> GradientCheckReport:
    """Assert that ``layer``'s input and parameter gradients match finite differences.

    ``options`` go to :func:`handgrad.check_layer` (``eps``, ``threshold``, ``mode``,
    ``rng``, ...). Returns the report when the check passes.

    Parameters
    ----------
    layer : layer
        Any object with ``params``, ``grads``, ``forward`` and ``backward``.
    x : array
        The input the gradients are checked at.
    **options
        Passed to :func:`handgrad.check_layer`.

    Returns
    -------
    GradientCheckReport
        The report of the check, which passed.

    Raises
    ------
    AssertionError
        Naming the first wrong array, its worst element and both values, followed by the
        table of every array.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.testing import assert_layer_gradients
    >>> x = np.random.default_rng(0).standard_normal((4, 3))
    >>> assert_layer_gradients(hg.Tanh(), x).passed
    True
    >>> class Doubled(hg.Tanh):  # a slip: dL/dx twice too large
    ...     def backward(self, dy):
    ...         return 2 * super().backward(dy)
    >>> assert_layer_gradients(Doubled(), x)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: gradient check failed for 'x' (shape (4, 3)): 12 of 12 elements off; ...
    """
    try:
        return check_layer(layer, x, **options)
    except GradientCheckError as err:
        raise AssertionError(f"{err}\n\n{err.report}") from None


def assert_gradients(
    f: Callable[[Any], Any],
    x: Any,
    grad: Any,
    *,
    eps: float = DEFAULT_EPS,
    threshold: float = DEFAULT_THRESHOLD,
) -> None:
    """Assert that ``grad`` is the gradient of the scalar function ``f`` at ``x``.

    The numeric gradient is the central difference of :func:`handgrad.numerical_gradient`;
    the tolerance is handgrad's (relative ``threshold`` above the rounding-noise floor).

    Parameters
    ----------
    f : callable
        A function of ``x`` that returns a scalar.
    x : array
        The point.
    grad : array
        The gradient to check, shaped like ``x``.
    eps : float
        The finite-difference step (1e-6).
    threshold : float
        The relative tolerance (1e-6).

    Raises
    ------
    AssertionError
        Naming the worst element, both values and how many elements are off.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.testing import assert_gradients
    >>> x = np.array([0.5, -1.0, 2.0])
    >>> assert_gradients(lambda v: np.sum(np.sin(v)), x, np.cos(x))  # passes: returns None
    >>> assert_gradients(lambda v: np.sum(np.sin(v)), x, -np.cos(x))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    AssertionError: gradient check failed for 'grad' (shape (3,)): 3 of 3 elements off; ...
    """
    check_array(x, "x")
    check_array(grad, "grad", finite=False)
    if tuple(grad.shape) != tuple(x.shape):
        raise AssertionError(f"grad has shape {tuple(grad.shape)} but x has {tuple(x.shape)}")
    value = float(f(x))
    numeric = np.asarray(to_numpy(numerical_gradient(f, x, eps)), dtype=np.float64).reshape(-1)
    analytic = np.asarray(to_numpy(grad), dtype=np.float64).reshape(-1)
    atol = _noise_floor(max(abs(value), 1.0), eps)
    check = compare(
        "grad", tuple(x.shape), np.arange(numeric.size), analytic, numeric, threshold, atol
    )
    if not check.passed:
        raise AssertionError(f"{check.describe()}; threshold {threshold:g}, eps {eps:g}")
