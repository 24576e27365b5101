"""Normalization layers, as ``torch.nn``'s: ``BatchNorm1d`` and ``BatchNorm2d`` (over the
batch, per channel, with running statistics), ``LayerNorm`` (over each example's last axes)
and ``GroupNorm`` (over groups of channels of each example).

Each subtracts a mean and divides by a standard deviation, ``xhat = (x - mu) / sqrt(var +
eps)`` (``var`` the biased variance), then scales and shifts per feature; they differ only in
the axes that ``mu`` and ``var`` run over, and so share the backward rule
:func:`normalised_backward`.
"""

from __future__ import annotations

import math
from typing import Any

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.validation import POSITIVE, Interval, check_array, check_positive_int
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm", "normalised_backward"]

MOMENTUM = Interval(float, 0, 1, "both")


def _normalise(xp: Any, x: Any, axes: tuple[int, ...], eps: float) -> tuple[Any, Any, Any, Any]:
    """``xhat = (x - mean) / sqrt(var + eps)`` over ``axes``; returns xhat, 1 / sqrt(var +
    eps), the mean and the biased variance (the last three with the axes kept)."""
    mean = xp.mean(x, axis=axes, keepdims=True)
    centered = x - mean
    var = xp.mean(centered * centered, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    return centered * inv_std, inv_std, mean, var


def normalised_backward(xp: Any, dxhat: Any, xhat: Any, inv_std: Any, axes: tuple[int, ...]) -> Any:
    """dL/dx of ``xhat = (x - mean) / sqrt(var + eps)`` with statistics over ``axes``, from
    ``dxhat`` = dL/dxhat: the simplified form of the batch-norm backward pass.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.layers.normalization import normalised_backward
    >>> xhat, inv_std = np.array([[-1.0], [1.0]]), np.ones((1, 1))  # x = -1, 1: var 1
    >>> normalised_backward(namespace(xhat), np.ones((2, 1)), xhat, inv_std, (0,)).tolist()
    [[0.0], [0.0]]
    """
    # dL/dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(var + eps)
    mean_dxhat = xp.mean(dxhat, axis=axes, keepdims=True)
    mean_dxhat_xhat = xp.mean(dxhat * xhat, axis=axes, keepdims=True)
    return inv_std * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)


class _Normalization(Module):
    """Scale and shift per feature after normalising; subclasses say over which axes."""

    def _affine_arrays(self, shape: tuple[int, ...], xp: Any, dtype: Any, device: Any) -> None:
        self.params["weight"] = xp.ones(shape, dtype=dtype, device=device)
        self.params["bias"] = xp.zeros(shape, dtype=dtype, device=device)

    def _check_like_params(self, x: Any) -> None:
        """``x`` from the library and of the dtype of the layer's arrays."""
        own = [*self.params.values(), *self.buffers.values()]
        floats = [a for a in own if namespace(a).isdtype(a.dtype, "real floating")]
        if floats:
            namespace(x, floats[0])  # refuses a mix of array libraries
            if x.dtype != floats[0].dtype:
                raise TypeError(
                    f"x has dtype {x.dtype} but the layer's arrays are {floats[0].dtype}; "
                    "convert x or move the model with model.to(dtype=...)"
                )

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite ``grads['weight']`` and ``grads['bias']`` (if any)."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def _affine_grads(self, xp: Any, dy: Any, axes: tuple[int, ...], shape: tuple[int, ...]) -> Any:
        """Fill the weight and bias gradients (sums over ``axes``) and return dL/dxhat."""
        if "weight" not in self.params:
            return dy
        # y = w xhat + b: dL/dw = sum of dy xhat, dL/db = sum of dy, dL/dxhat = dy w
        self.grads["weight"] = xp.reshape(xp.sum(dy * self._xhat, axis=axes), shape)
        self.grads["bias"] = xp.reshape(xp.sum(dy, axis=axes), shape)
        return dy * self._scale


class _BatchNorm(_Normalization):
    """Statistics over the batch and every axis after the channels, one per channel."""

    ranks: tuple[int, ...] = ()
    layout = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(num_features, eps, momentum, affine, track_running_stats)
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        if affine:
            self._affine_arrays(shapes["weight"], xp, dtype, device)
        if track_running_stats:
            self.buffers["running_mean"] = xp.zeros(
                shapes["running_mean"], dtype=dtype, device=device
            )
            self.buffers["running_var"] = xp.ones(shapes["running_var"], dtype=dtype, device=device)
            self.buffers["num_batches_tracked"] = xp.zeros((), dtype=xp.int64, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._y = None

    @classmethod
    def array_shapes(
        cls,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> dict[str, tuple[int, ...]]:
        """``weight`` and ``bias`` (num_features,) if affine; ``running_mean``,
        ``running_var`` (num_features,) and ``num_batches_tracked`` () if tracking."""
        n = check_positive_int(num_features, "num_features")
        POSITIVE.check(eps, "eps")
        if momentum is not None:
            MOMENTUM.check(momentum, "momentum")
        shapes: dict[str, tuple[int, ...]] = {}
        if affine:
            shapes.update(weight=(n,), bias=(n,))
        if track_running_stats:
            shapes.update(running_mean=(n,), running_var=(n,), num_batches_tracked=())
        return shapes

    def config(self) -> dict[str, Any]:
        return {
            "num_features": self.num_features,
            "eps": self.eps,
            "momentum": self.momentum,
            "affine": self.affine,
            "track_running_stats": self.track_running_stats,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.num_features}, eps={self.eps:g}, momentum="
            f"{self.momentum if self.momentum is None else format(self.momentum, 'g')}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats})"
        )

    def _uses_batch(self) -> bool:
        """Batch statistics in training mode, and always when none are tracked."""
        return self.training or not self.track_running_stats

    def forward(self, x: Any) -> Any:
        """Normalise ``x`` per channel (axis 1): with the batch's statistics in training
        mode (updating the running ones), with the running statistics in evaluation mode."""
        check_array(x, "x")
        if x.ndim not in self.ranks:
            ranks = " or ".join(f"{n}-D" for n in self.ranks)
            raise ValueError(f"x must be a {ranks} array {self.layout}, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"x must have {self.num_features} channels (axis 1) for {self!r}, got shape "
                f"{tuple(x.shape)}"
            )
        self._check_like_params(x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``, but for a batch too small for statistics
        (a training loop's last batch may be that one)."""
        xp = namespace(x)
        axes = (0, *range(2, x.ndim))
        per_channel = (1, self.num_features, *((1,) * (x.ndim - 2)))
        if self._uses_batch() and math.prod(x.shape) // self.num_features < 2:
            raise ValueError(
                f"x must hold more than one value per channel to normalise over the batch, "
                f"got shape {tuple(x.shape)}; use a larger batch, or eval() to use the running "
                "statistics"
            )
        if self._uses_batch():
            xhat, inv_std, mean, var = _normalise(xp, x, axes, self.eps)
            if self.training and self.track_running_stats:
                self._update_running_stats(xp, mean, var, math.prod(x.shape) // self.num_features)
        else:
            mean = xp.reshape(self.buffers["running_mean"], per_channel)
            inv_std = 1.0 / xp.sqrt(xp.reshape(self.buffers["running_var"], per_channel) + self.eps)
            xhat = (x - mean) * inv_std
        self._xhat, self._inv_std, self._batch_stats = xhat, inv_std, self._uses_batch()
        y = xhat
        if self.affine:
            self._scale = xp.reshape(self.params["weight"], per_channel)
            y = xhat * self._scale + xp.reshape(self.params["bias"], per_channel)
        self._y = y
        return y

    def _update_running_stats(self, xp: Any, mean: Any, var: Any, n: int) -> None:
        """As torch: an exponential average with weight ``momentum`` (or, with momentum
        None, the plain average of all batches), of the *unbiased* variance."""
        count = self.buffers["num_batches_tracked"]
        count[...] = count + 1
        factor = self.momentum if self.momentum is not None else 1.0 / int(count)
        running_mean, running_var = self.buffers["running_mean"], self.buffers["running_var"]
        unbiased = var * (n / (n - 1))  # the variance of the batch's n values, over n - 1
        c = self.num_features
        running_mean[...] = (1 - factor) * running_mean + factor * xp.reshape(mean, (c,))
        running_var[...] = (1 - factor) * running_var + factor * xp.reshape(unbiased, (c,))

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        axes = (0, *range(2, dy.ndim))
        dxhat = self._affine_grads(xp, dy, axes, (self.num_features,))
        if not input_grad:
            return None
        if self._batch_stats:  # mu and var depend on x too
            return normalised_backward(xp, dxhat, self._xhat, self._inv_std, axes)
        return dxhat * self._inv_std  # constants: dL/dx = dL/dxhat / sqrt(running var + eps)


@register_layer
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (batch, features) or (batch, channels, length), as
    ``torch.nn.BatchNorm1d``: ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per
    channel.

    In training mode the mean and (biased) variance are the batch's, over the batch and
    length axes, and the running statistics are updated in place:
    ``running = (1 - momentum) running + momentum batch`` (the *unbiased* variance for
    ``running_var``; with ``momentum=None``, the plain average over all batches) and
    ``num_batches_tracked += 1``. In evaluation mode (``eval()``) the running statistics are
    used instead. ``track_running_stats=False`` keeps none and always uses the batch's.

    Parameters
    ----------
    num_features : int
        Channels: axis 1 of the input.
    eps : float
        Added to the variance before the square root.
    momentum : float in [0, 1] or None
        Weight of the new batch in the running statistics; None for a plain average.
    affine : bool
        Learn a ``weight`` (ones at first) and ``bias`` (zeros) per channel.
    track_running_stats : bool
        Keep ``running_mean``, ``running_var`` and ``num_batches_tracked`` (in ``buffers``
        and ``state_dict``).
    backend, dtype, device
        Where the arrays live, as for :class:`~handgrad.Linear`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> bn = hg.BatchNorm1d(3)
    >>> x = np.random.default_rng(0).standard_normal((8, 3)) * 2 + 5
    >>> y = bn.forward(x)  # training mode: the batch's statistics
    >>> np.allclose(y.mean(axis=0), 0), np.allclose(y.std(axis=0), 1, atol=1e-4)
    (True, True)
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    >>> int(bn.buffers["num_batches_tracked"]), bn.eval().training
    (1, False)
    """

    ranks = (2, 3)
    layout = "(batch, features) or (batch, channels, length)"


@register_layer
class BatchNorm2d(_BatchNorm):
    """Batch normalisation of images (batch, channels, height, width), per channel, as
    ``torch.nn.BatchNorm2d`` (the spatial batch norm): the statistics run over the batch,
    height and width. Everything else as :class:`BatchNorm1d`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> bn = hg.BatchNorm2d(4, momentum=0.5)
    >>> x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)) + 10
    >>> bn.forward(x).shape
    (2, 4, 3, 3)
    >>> bool(np.all(np.abs(bn.buffers["running_mean"] - 5) < 1))  # halfway from 0 to ~10
    True
    """

    ranks = (4,)
    layout = "(batch, channels, height, width)"


@register_layer
class LayerNorm(_Normalization):
    """Normalisation of each example over its last axes, as ``torch.nn.LayerNorm``: the
    mean and (biased) variance run over the trailing ``normalized_shape`` axes, and the
    weight and bias have that shape. No running statistics: training and evaluation agree.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The shape of the trailing axes to normalise over.
    eps : float
        Added to the variance before the square root.
    elementwise_affine : bool
        Learn a ``weight`` (ones at first) of ``normalized_shape``.
    bias : bool
        With ``elementwise_affine``, also learn a ``bias`` (zeros at first).
    backend, dtype, device
        Where the arrays live, as for :class:`~handgrad.Linear`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> norm = hg.LayerNorm(4)
    >>> y = norm.forward(np.array([[1.0, 2.0, 3.0, 4.0]]))
    >>> y.round(4).tolist()
    [[-1.3416, -0.4472, 0.4472, 1.3416]]
    >>> norm.backward(np.ones((1, 4))).round(12).tolist()  # a shift changes nothing
    [[0.0, 0.0, 0.0, 0.0]]
    """

    broadcasts = True  # each example on its own: stacked copies are more examples

    def __init__(
        self,
        normalized_shape: Any,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(normalized_shape, eps, elementwise_affine, bias)
        self.normalized_shape = _shape(normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine, self.use_bias = bool(elementwise_affine), bool(bias)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        for name, shape in shapes.items():
            fill = xp.ones if name == "weight" else xp.zeros
            self.params[name] = fill(shape, dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._y = None

    @classmethod
    def array_shapes(
        cls,
        normalized_shape: Any,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> dict[str, tuple[int, ...]]:
        """``weight`` and ``bias`` of ``normalized_shape``, as far as they are learnt."""
        shape = _shape(normalized_shape)
        POSITIVE.check(eps, "eps")
        if not elementwise_affine:
            return {}
        return {"weight": shape, **({"bias": shape} if bias else {})}

    def config(self) -> dict[str, Any]:
        return {
            "normalized_shape": list(self.normalized_shape),
            "eps": self.eps,
            "elementwise_affine": self.elementwise_affine,
            "bias": self.use_bias,
        }

    def __repr__(self) -> str:
        return (
            f"LayerNorm({self.normalized_shape}, eps={self.eps:g}, "
            f"elementwise_affine={self.elementwise_affine})"
        )

    def _axes(self) -> tuple[int, ...]:
        return tuple(range(-len(self.normalized_shape), 0))

    def forward(self, x: Any) -> Any:
        """Normalise each example of ``x`` (..., batch, *normalized_shape)."""
        n = len(self.normalized_shape)
        check_array(x, "x", min_ndim=n + 1, layout=f"(batch, *{self.normalized_shape})")
        if tuple(x.shape[-n:]) != self.normalized_shape:
            raise ValueError(
                f"x must end in the axes {self.normalized_shape} for {self!r}, got shape "
                f"{tuple(x.shape)}"
            )
        self._check_like_params(x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        xp = namespace(x)
        self._xhat, self._inv_std, _, _ = _normalise(xp, x, self._axes(), self.eps)
        y = self._xhat
        if "weight" in self.params:
            self._scale = self.params["weight"]
            y = y * self._scale
        if "bias" in self.params:
            y = y + self.params["bias"]
        self._y = y
        return y

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        leading = tuple(range(dy.ndim - len(self.normalized_shape)))
        dxhat = dy
        if "weight" in self.params:
            # y = w xhat + b: dL/dw = sum of dy xhat, dL/db = sum of dy, dL/dxhat = dy w
            self.grads["weight"] = xp.sum(dy * self._xhat, axis=leading)
            dxhat = dy * self._scale
        if "bias" in self.params:
            self.grads["bias"] = xp.sum(dy, axis=leading)
        if not input_grad:
            return None
        return normalised_backward(xp, dxhat, self._xhat, self._inv_std, self._axes())


@register_layer
class GroupNorm(_Normalization):
    """Normalisation over groups of channels of each example, as ``torch.nn.GroupNorm``:
    the channels (axis 1) are split into ``num_groups`` groups, and each example's group is
    normalised over its channels and every axis after them; then a weight and a bias per
    channel. ``num_groups=1`` is a layer norm over (channels, ...); ``num_groups =
    num_channels`` an instance norm.

    Parameters
    ----------
    num_groups : int
        Groups of channels; must divide ``num_channels``.
    num_channels : int
        Channels: axis 1 of the input.
    eps : float
        Added to the variance before the square root.
    affine : bool
        Learn a ``weight`` (ones at first) and ``bias`` (zeros) per channel.
    backend, dtype, device
        Where the arrays live, as for :class:`~handgrad.Linear`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> norm = hg.GroupNorm(2, 4)
    >>> x = np.random.default_rng(0).standard_normal((3, 4, 5))
    >>> y = norm.forward(x)
    >>> bool(np.allclose(y[:, :2].mean(axis=(1, 2)), 0)), norm.params["weight"].shape
    (True, (4,))
    """

    def __init__(
        self,
        num_groups: int,
        num_channels: int,
        eps: float = 1e-5,
        affine: bool = True,
        *,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(num_groups, num_channels, eps, affine)
        self.num_groups, self.num_channels = int(num_groups), int(num_channels)
        self.eps, self.affine = float(eps), bool(affine)
        xp = get_namespace(backend)
        if affine:
            self._affine_arrays(shapes["weight"], xp, resolve_dtype(xp, dtype), device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._y = None

    @classmethod
    def array_shapes(
        cls, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True
    ) -> dict[str, tuple[int, ...]]:
        """``weight`` and ``bias`` (num_channels,) if affine."""
        groups = check_positive_int(num_groups, "num_groups")
        channels = check_positive_int(num_channels, "num_channels")
        if channels % groups:
            raise ValueError(
                f"num_groups must divide num_channels, got num_groups={groups} for "
                f"num_channels={channels}"
            )
        POSITIVE.check(eps, "eps")
        return {"weight": (channels,), "bias": (channels,)} if affine else {}

    def config(self) -> dict[str, Any]:
        return {
            "num_groups": self.num_groups,
            "num_channels": self.num_channels,
            "eps": self.eps,
            "affine": self.affine,
        }

    def __repr__(self) -> str:
        return (
            f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps:g}, "
            f"affine={self.affine})"
        )

    def forward(self, x: Any) -> Any:
        """Normalise each example's groups of channels of ``x`` (batch, channels, ...)."""
        check_array(x, "x", min_ndim=2, layout="(batch, channels, ...)")
        if x.shape[1] != self.num_channels:
            raise ValueError(
                f"x must have {self.num_channels} channels (axis 1) for {self!r}, got shape "
                f"{tuple(x.shape)}"
            )
        self._check_like_params(x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        xp = namespace(x)
        per_group = math.prod(x.shape[1:]) // self.num_groups  # no -1: a batch may be empty
        groups = xp.reshape(x, (x.shape[0], self.num_groups, per_group))  # N,G,C/G*...
        xhat, self._inv_std, _, _ = _normalise(xp, groups, (2,), self.eps)
        self._xhat = xp.reshape(xhat, x.shape)
        y = self._xhat
        if self.affine:
            per_channel = (1, self.num_channels, *((1,) * (x.ndim - 2)))
            self._scale = xp.reshape(self.params["weight"], per_channel)
            y = y * self._scale + xp.reshape(self.params["bias"], per_channel)
        self._y = y
        return y

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        axes = (0, *range(2, dy.ndim))
        dxhat = self._affine_grads(xp, dy, axes, (self.num_channels,))
        if not input_grad:
            return None
        shape = (dy.shape[0], self.num_groups, math.prod(dy.shape[1:]) // self.num_groups)
        xhat = xp.reshape(self._xhat, shape)
        dx = normalised_backward(xp, xp.reshape(dxhat, shape), xhat, self._inv_std, (2,))
        return xp.reshape(dx, dy.shape)


def _shape(normalized_shape: Any) -> tuple[int, ...]:
    """``normalized_shape`` as a non-empty tuple of positive ints."""
    if isinstance(normalized_shape, int) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        shape = ()
    if not shape or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape
    ):
        raise ValueError(
            f"normalized_shape must be a positive integer or a non-empty sequence of them, "
            f"got {normalized_shape!r}"
        )
    return shape
