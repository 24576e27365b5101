"""Layers that only reshape: ``Flatten`` (images to rows, before a Linear) and ``Unflatten``
(rows of features to images, before a convolution), as ``torch.nn``'s. The backward pass
reshapes the gradient back."""

from __future__ import annotations

import math
from typing import Any

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_array
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["Flatten", "Unflatten"]


def _axis(dim: Any, name: str) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise ValueError(f"{name} must be an integer axis, got {dim!r}")
    return dim


class _Reshape(Module):
    """A reshape forward, the reverse reshape backward."""

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """None: a reshape has no parameters (checks the config by building the layer)."""
        cls(**config)
        return {}

    def forward(self, x: Any) -> Any:
        """``x`` reshaped (see the class)."""
        check_array(x, "x")
        self._check(x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        self._x_shape = tuple(x.shape)
        self._y = namespace(x).reshape(x, self._shape_of(self._x_shape))
        return self._y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx: ``dy`` in the input's shape."""
        check_upstream(dy, getattr(self, "_y", None), self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        # a reshape moves no value, so dL/dx is dL/dy reshaped back
        return namespace(dy).reshape(dy, self._x_shape)

    def _check(self, x: Any) -> None:
        raise NotImplementedError

    def _shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        raise NotImplementedError


@register_layer
class Flatten(_Reshape):
    """Merge the axes ``start_dim`` to ``end_dim`` into one, as ``torch.nn.Flatten``; by
    default every axis after the batch: (N, C, H, W) becomes (N, C H W).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> flatten = hg.Flatten()
    >>> flatten.forward(np.zeros((2, 3, 4, 4))).shape
    (2, 48)
    >>> flatten.backward(np.ones((2, 48))).shape
    (2, 3, 4, 4)
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = _axis(start_dim, "start_dim")
        self.end_dim = _axis(end_dim, "end_dim")

    def config(self) -> dict[str, Any]:
        return {"start_dim": self.start_dim, "end_dim": self.end_dim}

    def __repr__(self) -> str:
        return f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim})"

    def _span(self, ndim: int) -> tuple[int, int]:
        start = self.start_dim + ndim if self.start_dim < 0 else self.start_dim
        end = self.end_dim + ndim if self.end_dim < 0 else self.end_dim
        return start, end

    def _check(self, x: Any) -> None:
        start, end = self._span(x.ndim)
        if not (0 <= start < x.ndim and 0 <= end < x.ndim and start <= end):
            raise ValueError(
                f"x must have the axes start_dim={self.start_dim} to end_dim={self.end_dim}, "
                f"in that order, got shape {tuple(x.shape)}"
            )

    def _shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        start, end = self._span(len(shape))
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])


@register_layer
class Unflatten(_Reshape):
    """Split axis ``dim`` into ``unflattened_size``, as ``torch.nn.Unflatten``: with
    ``Unflatten(1, (1, 8, 8))`` rows of 64 features become 1 x 8 x 8 images, so a
    convolutional network takes the same (examples, features) data as an MLP.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> unflatten = hg.Unflatten(1, (1, 8, 8))
    >>> unflatten.forward(np.zeros((5, 64))).shape, unflatten.in_features
    ((5, 1, 8, 8), 64)
    """

    def __init__(self, dim: int, unflattened_size: Any) -> None:
        super().__init__()
        self.dim = _axis(dim, "dim")
        try:
            size = tuple(unflattened_size)
        except TypeError:
            size = ()
        if not size or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in size
        ):
            raise ValueError(
                f"unflattened_size must be a non-empty sequence of positive integers, got "
                f"{unflattened_size!r}"
            )
        self.unflattened_size = size

    @property
    def in_features(self) -> int:
        """The length of the axis it splits: the width of the rows it takes."""
        return math.prod(self.unflattened_size)

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim, "unflattened_size": list(self.unflattened_size)}

    def __repr__(self) -> str:
        return f"Unflatten(dim={self.dim}, unflattened_size={self.unflattened_size})"

    def _check(self, x: Any) -> None:
        dim = self.dim + x.ndim if self.dim < 0 else self.dim
        if not 0 <= dim < x.ndim or x.shape[dim] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} elements along axis {self.dim} to split "
                f"into {self.unflattened_size}, got shape {tuple(x.shape)}"
            )

    def _shape_of(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        dim = self.dim + len(shape) if self.dim < 0 else self.dim
        return (*shape[:dim], *self.unflattened_size, *shape[dim + 1 :])
