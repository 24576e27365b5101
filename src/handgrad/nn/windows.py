"""Sliding windows over the last two axes, for convolution and pooling: the output size,
padding, gathering every window position into one array (im2col) and adding window
gradients back where they came from (col2im).

Gathering loops over the kernel's offsets, never over pixels: offset ``(i, j)`` of every
window at once is one strided slice of the padded input. So the cost in Python calls is
``kh * kw`` slices, and the work is NumPy's (or the array library's).
"""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat

__all__ = [
    "add_windows",
    "add_windows_flat",
    "as_tuple",
    "gather_windows",
    "output_size",
    "pad",
]


def as_tuple(value: Any, n: int, name: str, low: int = 1) -> tuple[int, ...]:
    """``value`` (an int, or a sequence of ``n`` ints) as a tuple of ``n`` ints, each at
    least ``low``; ValueError naming ``name`` otherwise.

    Examples
    --------
    >>> from handgrad.nn.windows import as_tuple
    >>> as_tuple(3, 2, "kernel_size"), as_tuple([1, 2], 2, "stride")
    ((3, 3), (1, 2))
    >>> as_tuple((2, 0), 2, "stride")
    Traceback (most recent call last):
        ...
    ValueError: stride must be an integer >= 1 or a sequence of 2 of them, got (2, 0)
    """
    items = [value] * n if isinstance(value, numbers.Integral) else value
    try:
        good = len(items) == n and all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low for v in items
        )
    except TypeError:
        good = False
    if not good:
        raise ValueError(
            f"{name} must be an integer >= {low} or a sequence of {n} of them, got {value!r}"
        )
    return tuple(int(v) for v in items)


def output_size(
    size: int, kernel: int, stride: int, padding: tuple[int, int], dilation: int
) -> int:
    """Window positions along an axis of ``size`` with ``padding`` (before, after): the
    floor of ``(size + before + after - dilation (kernel - 1) - 1) / stride + 1``.

    Examples
    --------
    >>> from handgrad.nn.windows import output_size
    >>> output_size(8, 3, 1, (1, 1), 1)  # 3 x 3, padding 1: the size kept
    8
    >>> output_size(8, 2, 2, (0, 0), 1), output_size(7, 3, 2, (0, 0), 2)
    (4, 2)
    """
    span = dilation * (kernel - 1) + 1
    return (size + padding[0] + padding[1] - span) // stride + 1


def pad(
    xp: Any, x: Any, padding: tuple[tuple[int, int], tuple[int, int]], value: float = 0.0
) -> Any:
    """``x`` (..., H, W) with ``padding`` ((top, bottom), (left, right)) of ``value`` around
    its last two axes; ``x`` itself when there is none.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.windows import pad
    >>> x = np.ones((1, 2, 2))
    >>> pad(namespace(x), x, ((1, 0), (0, 1))).tolist()
    [[[0.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 0.0]]]
    """
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return x
    height, width = x.shape[-2:]
    shape = (*x.shape[:-2], height + top + bottom, width + left + right)
    out = xp.full(shape, value, dtype=x.dtype, device=array_api_compat.device(x))
    out[..., top : top + height, left : left + width] = x
    return out


def _offsets(kernel: tuple[int, int], dilation: tuple[int, int]) -> list[tuple[int, int]]:
    """Where each kernel element sits in a window, row by row (torch's weight order)."""
    return [(i * dilation[0], j * dilation[1]) for i in range(kernel[0]) for j in range(kernel[1])]


def _slices(
    top: int, left: int, stride: tuple[int, int], out: tuple[int, int]
) -> tuple[Any, slice, slice]:
    """The positions, in the padded input, of one kernel element over every window."""
    return (
        ...,
        slice(top, top + stride[0] * (out[0] - 1) + 1, stride[0]),
        slice(left, left + stride[1] * (out[1] - 1) + 1, stride[1]),
    )


def gather_windows(
    xp: Any,
    padded: Any,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    out: tuple[int, int],
) -> Any:
    """Every window of ``padded`` (..., Hp, Wp) as ``(..., kh * kw, oh, ow)``: element
    ``[..., k, p, q]`` is kernel element k (row-major) of the window at output (p, q).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.windows import gather_windows
    >>> x = np.arange(9.0).reshape(3, 3)
    >>> cols = gather_windows(namespace(x), x, (2, 2), (1, 1), (1, 1), (2, 2))
    >>> cols.shape, cols[:, 0, 0].tolist()  # the top-left window, row by row
    ((4, 2, 2), [0.0, 1.0, 3.0, 4.0])
    """
    parts = [padded[_slices(i, j, stride, out)] for i, j in _offsets(kernel, dilation)]
    return xp.stack(parts, axis=-3)  # ...,K,oh,ow


def add_windows(
    xp: Any,
    cols: Any,
    padded_shape: tuple[int, ...],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
) -> Any:
    """The adjoint of :func:`gather_windows`: an array of ``padded_shape`` in which every
    element of ``cols`` (..., kh * kw, oh, ow) is *added* at the place it was gathered
    from, so that an input element shared by overlapping windows gets the sum.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.windows import add_windows
    >>> ones = np.ones((4, 2, 2))  # 2 x 2 windows, stride 1, over a 3 x 3 input
    >>> add_windows(namespace(ones), ones, (3, 3), (2, 2), (1, 1), (1, 1)).tolist()
    [[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]
    """
    out = tuple(cols.shape[-2:])
    total = xp.zeros(padded_shape, dtype=cols.dtype, device=array_api_compat.device(cols))
    for k, (i, j) in enumerate(_offsets(kernel, dilation)):
        where = _slices(i, j, stride, out)
        total[where] += cols[..., k, :, :]  # overlapping windows add up
    return total


def add_windows_flat(
    xp: Any,
    cols: Any,
    padded_hw: tuple[int, int],
    kernel: tuple[int, int],
    dilation: tuple[int, int],
) -> Any:
    """:func:`add_windows` for stride 1, with ``cols`` (..., kh * kw, oh * Wp) laid out
    on rows of the padded width ``Wp`` (columns ``ow`` to ``Wp - 1`` of each row zero).

    With stride 1, kernel element (i, j) of the window at (p, q) is padded element
    (p + i, q + j), that is flat element ``p Wp + q + i Wp + j`` of the padded image read
    row after row: one contiguous shift per kernel element, which adds much faster than a
    strided 2-D slice. Returns the padded gradient, (..., Hp, Wp).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.windows import add_windows_flat
    >>> cols = np.array([[1.0, 1.0, 0.0]] * 4).reshape(4, 1 * 3)  # oh=1, ow=2 on Wp=3
    >>> add_windows_flat(namespace(cols), cols, (2, 3), (2, 2), (1, 1)).tolist()
    [[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]]
    """
    height, width = padded_hw
    length = cols.shape[-1]
    lead = tuple(cols.shape[:-2])
    spill = (kernel[1] - 1) * dilation[1]  # the last row's shifts run past Hp * Wp
    flat = xp.zeros(
        (*lead, height * width + spill), dtype=cols.dtype, device=array_api_compat.device(cols)
    )
    for k, (i, j) in enumerate(_offsets(kernel, dilation)):
        start = i * width + j
        flat[..., start : start + length] += cols[..., k, :]
    return xp.reshape(flat[..., : height * width], (*lead, height, width))
