"""Pooling layers, ``MaxPool2d`` and ``AvgPool2d``, as ``torch.nn``'s: the maximum or the
mean of each window of the last two axes. Windows may overlap (stride below the kernel
size); then an input element in several windows gets the sum of their gradients."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_array
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer
from handgrad.nn.windows import add_windows, as_tuple, gather_windows, output_size, pad

__all__ = ["AvgPool2d", "MaxPool2d"]


class _Pool2d(Module):
    """Windows over the last two axes, every leading axis (batch, channels, stacked copies)
    pooled on its own; subclasses reduce a window to one value."""

    broadcasts = True  # takes stacked copies, (..., channels, height, width), in one call
    pad_value = 0.0

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__()
        self.kernel_size = as_tuple(kernel_size, 2, "kernel_size")
        self.stride = self.kernel_size if stride is None else as_tuple(stride, 2, "stride")
        self.padding = as_tuple(padding, 2, "padding", low=0)
        self.dilation = (1, 1)
        self._y = None

    def _check_padding(self) -> None:
        """Padding of at most half the kernel on each side, as torch asks (for max
        pooling: half the kernel's size, whatever its dilation)."""
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"padding must be at most half the window on each side, got padding "
                f"{self.padding} for kernel_size {self.kernel_size}"
            )

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """None: pooling has no parameters (checks the config by building the layer)."""
        cls(**config)
        return {}

    def _geometry(self, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        """((top, bottom), (left, right)) padding and the output's (height, width)."""
        pads = tuple((p, p) for p in self.padding)
        out = tuple(
            output_size(size, k, s, p, d)
            for size, k, s, p, d in zip(
                shape[-2:], self.kernel_size, self.stride, pads, self.dilation, strict=True
            )
        )
        return (*pads, out)

    def forward(self, x: Any) -> Any:
        """Pool the last two axes of ``x`` (..., channels, height, width)."""
        check_array(x, "x", min_ndim=3, layout="([batch,] channels, height, width)")
        *_, out = self._geometry(tuple(x.shape))
        if min(out) < 1:
            raise ValueError(
                f"kernel_size {self.kernel_size} is larger than the padded input: x has "
                f"shape {tuple(x.shape)} and padding {self.padding}; use a smaller "
                "kernel_size, a larger input, or more padding"
            )
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        xp = namespace(x)
        top_bottom, left_right, out = self._geometry(tuple(x.shape))
        padded = pad(xp, x, (top_bottom, left_right), self.pad_value)
        cols = gather_windows(xp, padded, self.kernel_size, self.stride, self.dilation, out)
        self._x_shape, self._padded_shape = tuple(x.shape), tuple(padded.shape)
        self._y = self._reduce(xp, cols)  # ...,oh,ow
        return self._y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx from dL/dy."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        dcols = self._spread(xp, dy)  # ...,K,oh,ow: each window's share of dy
        dpadded = add_windows(
            xp, dcols, self._padded_shape, self.kernel_size, self.stride, self.dilation
        )
        (top, left), (height, width) = self.padding, self._x_shape[-2:]
        return dpadded[..., top : top + height, left : left + width]

    def _reduce(self, xp: Any, cols: Any) -> Any:
        raise NotImplementedError

    def _spread(self, xp: Any, dy: Any) -> Any:
        raise NotImplementedError


@register_layer
class MaxPool2d(_Pool2d):
    """The maximum of each window, as ``torch.nn.MaxPool2d``; the input is padded with
    -infinity, and a tie goes to the first element of the window (row by row), as torch.

    Parameters
    ----------
    kernel_size : int or (int, int)
        The window's size.
    stride : int or (int, int), optional
        The step between windows (default: ``kernel_size``, windows side by side).
    padding : int or (int, int)
        -infinity added on each side; at most half the window.
    dilation : int or (int, int)
        The spacing of the elements in a window.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> pool = hg.MaxPool2d(2)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool.forward(x).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0].tolist()  # dy goes to each maximum
    [[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]]
    """

    pad_value = -math.inf

    def __init__(
        self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1
    ) -> None:
        super().__init__(kernel_size, stride, padding)
        self.dilation = as_tuple(dilation, 2, "dilation")
        self._check_padding()

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
        }

    def __repr__(self) -> str:
        extra = f", padding={self.padding}" if any(self.padding) else ""
        extra += f", dilation={self.dilation}" if self.dilation != (1, 1) else ""
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride}{extra})"

    def _reduce(self, xp: Any, cols: Any) -> Any:
        self._argmax = xp.argmax(cols, axis=-3)  # ...,oh,ow: the winner's place in its window
        return xp.max(cols, axis=-3)

    def _spread(self, xp: Any, dy: Any) -> Any:
        # dL/dx = dy at each window's maximum, 0 elsewhere; summed over the windows
        k = math.prod(self.kernel_size)
        places = xp.arange(k, device=array_api_compat.device(dy))[:, None, None]
        winners = self._argmax[..., None, :, :] == places  # ...,K,oh,ow
        return xp.where(winners, dy[..., None, :, :], 0.0)


@register_layer
class AvgPool2d(_Pool2d):
    """The mean of each window, as ``torch.nn.AvgPool2d`` (zero padding counts toward the
    mean, torch's ``count_include_pad=True``).

    Parameters
    ----------
    kernel_size : int or (int, int)
        The window's size.
    stride : int or (int, int), optional
        The step between windows (default: ``kernel_size``).
    padding : int or (int, int)
        Zeros added on each side; at most half the window.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> pool = hg.AvgPool2d(2, stride=1)  # overlapping windows
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> pool.forward(x).tolist()
    [[[[2.0, 3.0], [5.0, 6.0]]]]
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0].tolist()  # the centre is in 4 windows
    [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5], [0.25, 0.5, 0.25]]
    """

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0) -> None:
        super().__init__(kernel_size, stride, padding)
        self._check_padding()

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
        }

    def __repr__(self) -> str:
        extra = f", padding={self.padding}" if any(self.padding) else ""
        return f"AvgPool2d(kernel_size={self.kernel_size}, stride={self.stride}{extra})"

    def _reduce(self, xp: Any, cols: Any) -> Any:
        return xp.mean(cols, axis=-3)

    def _spread(self, xp: Any, dy: Any) -> Any:
        # dL/dx = dy / (kh kw) for every element of each window; summed over the windows
        k = math.prod(self.kernel_size)
        shape = (*dy.shape[:-2], k, *dy.shape[-2:])
        return xp.broadcast_to((dy / k)[..., None, :, :], shape)
