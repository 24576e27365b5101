"""Parameter-free layers: elementwise activations, each a forward rule and a one-line
derivative written from its output, and the row-wise softmax and log-softmax."""

from __future__ import annotations

from typing import Any

import numpy as np

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_array, check_not_empty
from handgrad.nn.functional import log_softmax
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


class _Activation(Module):
    """An elementwise or row-wise map with no parameters; subclasses define the math."""

    broadcasts = True  # takes stacked copies, (..., batch, features), in one call
    row_wise = False  # reduces over the last axis (the classes), which must not be empty
    weight_init = "glorot"  # how mlp initialises the Linear layer before this activation

    def __init__(self) -> None:
        super().__init__()
        self._y = None

    def forward(self, x: Any) -> Any:
        """Return the activation of ``x``, an array of shape (..., batch, features)."""
        check_array(x, "x", min_ndim=2, layout="(batch, features)")
        if self.row_wise:
            check_not_empty(x, "x", last=1, needs=f"at least one class for {self!r}")
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        self._y = self._forward(namespace(x), x)
        return self._y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx from dL/dy, using the cached output."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        return self._backward(namespace(dy), self._y, dy)

    def _forward(self, xp: Any, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        raise NotImplementedError


@register_layer
class Sigmoid(_Activation):
    """``y = 1 / (1 + exp(-x))``, computed without overflow for large |x|.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> sigmoid = hg.Sigmoid()
    >>> print(sigmoid.forward(np.array([[0.0, 2.0]])).round(4))
    [[0.5    0.8808]]
    >>> print(sigmoid.backward(np.array([[1.0, 1.0]])).round(4))  # y (1 - y)
    [[0.25  0.105]]
    """

    activation_name = "sigmoid"
    weight_init = "glorot_sigmoid"
    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        if isinstance(x, np.ndarray):  # NumPy's route: in place, no overflow (exp(700) < inf)
            y = np.maximum(x, -700.0)  # sigmoid(-700) = 1e-304: nothing below is lost
            np.exp(np.negative(y, out=y), out=y)
            y += 1
            return np.reciprocal(y, out=y)
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        return xp.where(x >= 0, 1.0, e) / (1 + e)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = y (1 - y)
        return dy * y * (1 - y)


@register_layer
class Tanh(_Activation):
    """``y = tanh(x)``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> tanh = hg.Tanh()
    >>> print(tanh.forward(np.array([[0.0, 1.0]])).round(4))
    [[0.     0.7616]]
    >>> print(tanh.backward(np.array([[1.0, 1.0]])).round(4))  # 1 - y^2
    [[1.   0.42]]
    """

    activation_name = "tanh"
    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.tanh(x)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 - y^2
        return dy * (1 - y * y)


@register_layer
class ReLU(_Activation):
    """``y = max(x, 0)``; the derivative at 0 is taken as 0, as in PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> relu = hg.ReLU()
    >>> print(relu.forward(np.array([[-1.0, 0.0, 2.0]])))
    [[0. 0. 2.]]
    >>> print(relu.backward(np.array([[5.0, 5.0, 5.0]])))  # dy where x > 0
    [[0. 0. 5.]]
    """

    activation_name = "relu"
    weight_init = "he"
    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.where(x > 0, x, 0.0)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 where x > 0 (equivalently y > 0), else 0
        return xp.where(y > 0, dy, 0.0)


@register_layer
class Softmax(_Activation):
    """Softmax over the last axis (the classes), shifted by the row maximum for stability.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> softmax = hg.Softmax()
    >>> print(softmax.forward(np.array([[1.0, 2.0, 3.0]])).round(4))
    [[0.09   0.2447 0.6652]]
    >>> print(softmax.backward(np.array([[1.0, 0.0, 0.0]])).round(4))  # y * (dy - dy . y)
    [[ 0.0819 -0.022  -0.0599]]
    """

    row_wise = True

    def torch_module(self) -> Any:
        import torch

        return torch.nn.Softmax(dim=-1)

    def _forward(self, xp: Any, x: Any) -> Any:
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dL/dx_i = y_i (dy_i - sum_j dy_j y_j): the Jacobian diag(y) - y y^T, row by row
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


@register_layer
class LogSoftmax(_Activation):
    """``log(softmax(x))`` over the last axis, as ``x - max - log(sum(exp(x - max)))``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> log_softmax = hg.LogSoftmax()
    >>> print(log_softmax.forward(np.array([[1.0, 2.0, 3.0]])).round(4))
    [[-2.4076 -1.4076 -0.4076]]
    >>> print(log_softmax.backward(np.array([[1.0, 0.0, 0.0]])).round(4))  # dy - exp(y) sum(dy)
    [[ 0.91   -0.2447 -0.6652]]
    """

    row_wise = True

    def torch_module(self) -> Any:
        import torch

        return torch.nn.LogSoftmax(dim=-1)

    def _forward(self, xp: Any, x: Any) -> Any:
        return log_softmax(xp, x)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dL/dx_i = dy_i - softmax(x)_i sum_j dy_j, with softmax(x) = exp(y)
        return dy - xp.exp(y) * xp.sum(dy, axis=-1, keepdims=True)
