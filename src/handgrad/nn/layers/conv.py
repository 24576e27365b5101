"""Convolution layers, ``Conv1d`` and ``Conv2d``, as ``torch.nn``'s: the cross-correlation of
the input with each filter, computed as one matrix product over every window (im2col).

Both run on the same 2-D code: a 1-D input of length L is an image of height 1.
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.validation import check_positive_int
from handgrad.nn.init import Initializer, initialize
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_input, check_upstream
from handgrad.nn.registry import register_layer
from handgrad.nn.windows import (
    add_windows,
    add_windows_flat,
    as_tuple,
    gather_windows,
    output_size,
    pad,
)

__all__ = ["Conv1d", "Conv2d"]

_AXES = {1: "(batch, channels, length)", 2: "(batch, channels, height, width)"}


def _padding(padding: Any, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: Any) -> Any:
    """``padding`` as a tuple of ints per axis, or the string 'same' or 'valid'."""
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(
                f"padding must be 'same', 'valid', an integer >= 0 or a sequence of "
                f"{len(kernel)} of them, got {padding!r}"
            )
        if padding == "same" and any(s != 1 for s in stride):
            raise ValueError(
                f"padding='same' needs stride 1 (only then does the output keep the input's "
                f"size), got stride {stride}"
            )
        return padding
    return as_tuple(padding, len(kernel), "padding", low=0)


class _ConvNd(Module):
    """The convolution of ``dims`` spatial axes; subclasses set ``dims``."""

    dims = 2
    broadcasts = True  # takes stacked copies, (..., batch, channels, *spatial), in one call

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        init: str | Initializer = "he",
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias
        )
        n = self.dims
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = as_tuple(kernel_size, n, "kernel_size")
        self.stride = as_tuple(stride, n, "stride")
        self.dilation = as_tuple(dilation, n, "dilation")
        self.padding = _padding(padding, self.kernel_size, self.stride, self.dilation)
        self.groups = int(groups)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        fan_in = math.prod(shapes["weight"][1:])
        weight = initialize(init, (self.out_channels, fan_in), rng)
        weight = xp.asarray(weight, dtype=dtype, device=device)
        self.params["weight"] = xp.reshape(weight, shapes["weight"])
        if bias:
            self.params["bias"] = xp.zeros(shapes["bias"], dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        # the 2-D view of the geometry: a 1-D layer is one of height 1
        lift = (lambda t: t) if n == 2 else (lambda t: (1, *t))
        self._kernel2, self._stride2 = lift(self.kernel_size), lift(self.stride)
        self._dilation2 = lift(self.dilation)
        self._y = None

    @classmethod
    def array_shapes(
        cls,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
    ) -> dict[str, tuple[int, ...]]:
        """``weight`` (out_channels, in_channels / groups, *kernel_size) and ``bias``
        (out_channels,); checks every argument."""
        c_in = check_positive_int(in_channels, "in_channels")
        c_out = check_positive_int(out_channels, "out_channels")
        g = check_positive_int(groups, "groups")
        if c_in % g or c_out % g:
            raise ValueError(
                f"groups must divide in_channels and out_channels, got groups={g} for "
                f"in_channels={c_in}, out_channels={c_out}"
            )
        kernel = as_tuple(kernel_size, cls.dims, "kernel_size")
        strides = as_tuple(stride, cls.dims, "stride")
        _padding(padding, kernel, strides, as_tuple(dilation, cls.dims, "dilation"))
        return {"weight": (c_out, c_in // g, *kernel), **({"bias": (c_out,)} if bias else {})}

    def config(self) -> dict[str, Any]:
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
            "bias": "bias" in self.params,
        }

    def __repr__(self) -> str:
        text = (
            f"{type(self).__name__}({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}"
        )
        if self.padding != (0,) * self.dims:
            text += f", padding={self.padding!r}"
        if self.dilation != (1,) * self.dims:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if "bias" not in self.params:
            text += ", bias=False"
        return text + ")"

    def _pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """(before, after) padding of the height and width axes."""
        if self.padding == "valid":
            pairs = [(0, 0)] * self.dims
        elif self.padding == "same":  # as torch: any odd one out goes after
            spans = [d * (k - 1) for k, d in zip(self.kernel_size, self.dilation, strict=True)]
            pairs = [(s // 2, s - s // 2) for s in spans]
        else:
            pairs = [(p, p) for p in self.padding]
        return ((0, 0), *pairs) if self.dims == 1 else tuple(pairs)

    def forward(self, x: Any) -> Any:
        """The convolution of ``x`` (..., batch, in_channels, *spatial)."""
        dims = self.dims
        check_input(
            x,
            self.params["weight"],
            self,
            self.in_channels,
            -dims - 1,
            f"channels (axis {-dims - 1})",
            _AXES[dims],
        )
        pads = self._pads()[-dims:]
        for axis, (size, k, d, (before, after)) in enumerate(
            zip(x.shape[-dims:], self.kernel_size, self.dilation, pads, strict=True)
        ):
            span = d * (k - 1) + 1
            if size + before + after < span:
                dilated = f" (dilation {self.dilation})" if self.dilation != (1,) * dims else ""
                raise ValueError(
                    f"kernel_size {self.kernel_size}{dilated} spans {span} along axis "
                    f"{x.ndim - dims + axis} of x, more than its padded length "
                    f"{size + before + after} ({size} + padding {before + after}); x has shape "
                    f"{tuple(x.shape)}: use a smaller kernel_size or dilation, a larger input, "
                    "or more padding"
                )
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        xp = namespace(x)
        c, g = self.in_channels, self.groups
        lead, spatial = tuple(x.shape[: -self.dims - 1]), tuple(x.shape[-self.dims :])
        images = xp.reshape(x, (-1, c, *((1,) * (2 - self.dims)), *spatial))  # N,C,H,W
        pads = self._pads()
        padded = pad(xp, images, pads)  # N,C,Hp,Wp
        out = tuple(
            output_size(size, k, s, p, d)
            for size, k, s, p, d in zip(
                images.shape[-2:], self._kernel2, self._stride2, pads, self._dilation2, strict=True
            )
        )
        cols = gather_windows(xp, padded, self._kernel2, self._stride2, self._dilation2, out)
        n, k = images.shape[0], math.prod(self._kernel2)
        cols = xp.reshape(cols, (n, g, c // g * k, out[0] * out[1]))  # N,G,C/G*K,L
        weight = xp.reshape(self.params["weight"], (g, self.out_channels // g, -1))  # G,O/G,C/G*K
        y = xp.reshape(weight @ cols, (n, self.out_channels, *out))  # N,O,oh,ow
        if "bias" in self.params:
            y += xp.reshape(self.params["bias"], (-1, 1, 1))  # y is new: add in place
        self._cols, self._images, self._padded = cols, tuple(images.shape), tuple(padded.shape)
        self._y = xp.reshape(y, (*lead, self.out_channels, *out[2 - self.dims :]))
        return self._y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite ``grads['weight']`` (and ``grads['bias']``)."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``; with ``input_grad=False`` dL/dx is not
        computed (the first layer of a model needs none) and None is returned."""
        xp = namespace(dy)
        cols, (n, c, height, width), (_, _, hp, wp) = self._cols, self._images, self._padded
        g, o = self.groups, self.out_channels
        oh, ow = self._y.shape[-2] if self.dims == 2 else 1, self._y.shape[-1]
        rows = xp.reshape(dy, (n, g, o // g, oh * ow))  # N,G,O/G,L
        weight = self.params["weight"]
        # y = W cols + b for every window, so dL/dW = sum over windows of dy cols^T,
        # dL/db = sum of dy, and dL/dcols = W^T dy, added back into x where each came from
        self.grads["weight"] = xp.reshape(xp.sum(rows @ cols.mT, axis=0), weight.shape)
        if "bias" in self.params:
            self.grads["bias"] = xp.reshape(xp.sum(rows, axis=(0, 3)), (o,))
        if not input_grad:
            return None
        k = math.prod(self._kernel2)
        w_t = xp.reshape(weight, (g, o // g, -1)).mT  # G,C/G*K,O/G
        if self._stride2 == (1, 1):  # rows of the padded width: one contiguous add per offset
            if ow != wp:
                wide = xp.zeros(
                    (n, g, o // g, oh, wp), dtype=dy.dtype, device=array_api_compat.device(dy)
                )
                wide[..., :ow] = xp.reshape(rows, (n, g, o // g, oh, ow))
                rows = xp.reshape(wide, (n, g, o // g, oh * wp))
            dcols = xp.reshape(w_t @ rows, (n, c, k, oh * wp))  # N,C,K,oh*Wp
            dpadded = add_windows_flat(xp, dcols, (hp, wp), self._kernel2, self._dilation2)
        else:
            dcols = xp.reshape(w_t @ rows, (n, c, k, oh, ow))  # N,C,K,oh,ow
            dpadded = add_windows(
                xp, dcols, (n, c, hp, wp), self._kernel2, self._stride2, self._dilation2
            )
        (top, _), (left, _) = self._pads()
        dx = dpadded[..., top : top + height, left : left + width]  # N,C,H,W
        return xp.reshape(dx, tuple(dy.shape[: -self.dims - 1]) + self._input_tail())

    def _input_tail(self) -> tuple[int, ...]:
        """The input's shape after its leading axes: (channels, *spatial)."""
        _, c, height, width = self._images
        return (c, width) if self.dims == 1 else (c, height, width)


@register_layer
class Conv1d(_ConvNd):
    """1-D convolution over (batch, in_channels, length), as ``torch.nn.Conv1d``.

    ``y[b, o, t] = bias[o] + sum over c, i of weight[o, c, i] x[b, g c, t s + i d]`` (the
    cross-correlation, in torch's convention), with ``padding`` zeros at both ends.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output; ``groups`` must divide both.
    kernel_size, stride, dilation : int or (int,)
        The filter's length, the step between windows, the spacing of the filter's taps.
    padding : int, (int,), 'valid' or 'same'
        Zeros added at each end; 'valid' is 0; 'same' keeps the length (stride 1 only).
    groups : int
        Split the channels into this many groups, each convolved with its own filters.
    bias : bool
        Add a learnable bias per output channel (initialised to zero).
    init, rng, backend, dtype, device
        As :class:`~handgrad.Linear`; ``init`` defaults to 'he' (fan-in
        ``in_channels / groups * kernel_size``).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> conv = hg.Conv1d(2, 4, 3, padding=1, rng=0)
    >>> conv.params["weight"].shape  # (out_channels, in_channels / groups, kernel_size)
    (4, 2, 3)
    >>> x = np.random.default_rng(0).standard_normal((5, 2, 10))
    >>> conv.forward(x).shape, conv.backward(np.ones((5, 4, 10))).shape
    ((5, 4, 10), (5, 2, 10))
    """

    dims = 1


@register_layer
class Conv2d(_ConvNd):
    """2-D convolution over (batch, in_channels, height, width), as ``torch.nn.Conv2d``.

    ``y[b, o, p, q] = bias[o] + sum over c, i, j of weight[o, c, i, j]
    x[b, c', p s_h + i d_h, q s_w + j d_w]`` over the zero-padded input, ``c'`` running
    over the channels of output channel o's group. Computed as one matrix product of the
    weight, (groups, out / groups, in / groups * kh * kw), with every window of the input
    gathered into columns.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input and the output; ``groups`` must divide both.
    kernel_size, stride, dilation : int or (int, int)
        The filter's size, the step between windows, the spacing of the filter's taps.
    padding : int, (int, int), 'valid' or 'same'
        Zeros added on each side; 'valid' is 0; 'same' keeps the size (stride 1 only; an odd
        total goes to the bottom and right, as torch does).
    groups : int
        Split the channels into this many groups, each convolved with its own filters
        (``groups = in_channels``: a depthwise convolution).
    bias : bool
        Add a learnable bias per output channel (initialised to zero).
    init, rng, backend, dtype, device
        As :class:`~handgrad.Linear`; ``init`` defaults to 'he' (fan-in
        ``in_channels / groups * kh * kw``).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> conv = hg.Conv2d(1, 8, 3, padding="same", rng=0)
    >>> conv
    Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding='same')
    >>> x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))  # N, C, H, W
    >>> conv.forward(x).shape
    (4, 8, 8, 8)
    >>> dx = conv.backward(np.ones((4, 8, 8, 8)))  # returns dL/dx, fills the grads
    >>> dx.shape, conv.grads["weight"].shape, conv.grads["bias"].tolist()[:2]
    ((4, 1, 8, 8), (8, 1, 3, 3), [256.0, 256.0])
    """

    dims = 2
