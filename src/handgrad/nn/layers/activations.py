"""Parameter-free layers: elementwise activations, each a forward rule and a one-line
derivative (written from its output where that is exact, from its input otherwise), and the
row-wise softmax and log-softmax."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from handgrad.core.arrays import namespace, native
from handgrad.core.validation import POSITIVE, Interval, Options, check_array, check_not_empty
from handgrad.nn.functional import erf, log_softmax
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = [
    "ELU",
    "GELU",
    "LeakyReLU",
    "LogSoftmax",
    "ReLU",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
]

NUMBER = Interval(float, None, None)


class _Activation(Module):
    """An elementwise or row-wise map with no parameters; subclasses define the math."""

    broadcasts = True  # takes stacked copies, (..., batch, features), in one call
    row_wise = False  # reduces over the last axis (the classes), which must not be empty
    weight_init = "glorot"  # how mlp initialises the Linear layer before this activation
    options: tuple[str, ...] = ()  # the constructor's arguments, saved in model files

    def __init__(self) -> None:
        super().__init__()
        self._x = self._y = None

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (the activations with options list them)."""
        return {name: getattr(self, name) for name in self.options}

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """None: an activation has no parameters (checks the config by building one)."""
        cls(**config)
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())})"

    def forward(self, x: Any) -> Any:
        """Return the activation of ``x``, an array of shape (..., batch, features)."""
        check_array(x, "x", min_ndim=2, layout="(batch, features)")
        if self.row_wise:
            check_not_empty(x, "x", last=1, needs=f"at least one class for {self!r}")
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        self._x, self._y = x, self._forward(namespace(x), x)
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
        if (own := native(xp, "sigmoid")) is not None:  # torch: one kernel
            return own(x)
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        return xp.where(x >= 0, 1.0, e) / (1 + e)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = y (1 - y)
        if (own := native(xp, "sigmoid_backward")) is not None:  # torch: one kernel
            return own(dy, y)
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
        if isinstance(x, np.ndarray):  # NumPy's route: a ufunc, 7x faster than where
            return np.maximum(x, 0.0)
        if (own := native(xp, "relu")) is not None:  # torch: one kernel
            return own(x)
        return xp.where(x > 0, x, 0.0)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 where x > 0 (equivalently y > 0), else 0
        if isinstance(dy, np.ndarray):  # NumPy's route: a product with the mask, no where
            return dy * (y > 0)
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
        if (own := native(xp, "softmax")) is not None:  # torch: one kernel
            return own(x)
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


@register_layer
class LeakyReLU(_Activation):
    """``y = x`` for ``x > 0``, ``negative_slope * x`` elsewhere, as ``torch.nn.LeakyReLU``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> leaky = hg.LeakyReLU(0.1)
    >>> print(leaky.forward(np.array([[-2.0, 0.0, 3.0]])))
    [[-0.2  0.   3. ]]
    >>> print(leaky.backward(np.array([[1.0, 1.0, 1.0]])))  # the slope at x <= 0
    [[0.1 0.1 1. ]]
    """

    activation_name = "leaky_relu"
    weight_init = "he"
    elementwise = True
    options = ("negative_slope",)

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = NUMBER.check(negative_slope, "negative_slope")

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.where(x > 0, x, x * self.negative_slope)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 where x > 0, negative_slope elsewhere (from x: any slope's sign)
        return xp.where(self._x > 0, dy, dy * self.negative_slope)


@register_layer
class ELU(_Activation):
    """``y = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` elsewhere, as ``torch.nn.ELU``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> elu = hg.ELU()
    >>> print(elu.forward(np.array([[-1.0, 2.0]])).round(4))
    [[-0.6321  2.    ]]
    >>> print(elu.backward(np.array([[1.0, 1.0]])).round(4))  # alpha exp(x) = y + alpha
    [[0.3679 1.    ]]
    """

    activation_name = "elu"
    weight_init = "he"
    elementwise = True
    options = ("alpha",)

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = NUMBER.check(alpha, "alpha")

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 where x > 0, alpha exp(x) elsewhere (= y + alpha, but without the
        # cancellation of y + alpha where y is close to -alpha)
        x = self._x
        return xp.where(x > 0, dy, dy * (self.alpha * xp.exp(xp.minimum(x, 0.0))))


@register_layer
class GELU(_Activation):
    """``y = x Phi(x)``, Phi the standard normal distribution function, as
    ``torch.nn.GELU``; ``approximate="tanh"`` uses
    ``Phi(x) ~ (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> gelu = hg.GELU()
    >>> print(gelu.forward(np.array([[-1.0, 0.0, 1.0]])).round(4))
    [[-0.1587  0.      0.8413]]
    >>> print(gelu.backward(np.array([[1.0, 1.0, 1.0]])).round(4))  # Phi(x) + x phi(x)
    [[-0.0833  0.5     1.0833]]
    """

    activation_name = "gelu"
    weight_init = "he"
    elementwise = True
    options = ("approximate",)
    _KAPPA = 0.044715

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = Options(("none", "tanh")).check(approximate, "approximate")

    def _forward(self, xp: Any, x: Any) -> Any:
        if self.approximate == "tanh":
            self._tanh = xp.tanh(math.sqrt(2 / math.pi) * (x + self._KAPPA * x * x * x))
            return 0.5 * x * (1 + self._tanh)
        self._cdf = 0.5 * (1 + erf(xp, x * math.sqrt(0.5)))
        return x * self._cdf

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        x = self._x
        if self.approximate == "tanh":
            # with u = sqrt(2/pi) (x + k x^3): dy/dx = (1 + tanh u) / 2
            #   + x / 2 (1 - tanh^2 u) sqrt(2/pi) (1 + 3 k x^2)
            t = self._tanh
            du = math.sqrt(2 / math.pi) * (1 + 3 * self._KAPPA * x * x)
            return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
        # dy/dx = Phi(x) + x phi(x), phi(x) = exp(-x^2 / 2) / sqrt(2 pi)
        return dy * (self._cdf + x * xp.exp(-0.5 * x * x) / math.sqrt(2 * math.pi))


@register_layer
class SiLU(_Activation):
    """``y = x sigmoid(x)`` (the swish), as ``torch.nn.SiLU``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> silu = hg.SiLU()
    >>> print(silu.forward(np.array([[-1.0, 0.0, 2.0]])).round(4))
    [[-0.2689  0.      1.7616]]
    >>> print(silu.backward(np.array([[1.0, 1.0, 1.0]])).round(4))  # s (1 + x (1 - s))
    [[0.0723 0.5    1.0908]]
    """

    activation_name = "silu"
    weight_init = "he"
    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        e = xp.exp(-xp.abs(x))  # in (0, 1]: never overflows
        self._sigmoid = xp.where(x >= 0, 1.0, e) / (1 + e)
        return x * self._sigmoid

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = s + x s (1 - s) = s (1 + x (1 - s)), s = sigmoid(x)
        s = self._sigmoid
        return dy * s * (1 + self._x * (1 - s))


@register_layer
class Softplus(_Activation):
    """``y = log(1 + exp(beta x)) / beta``, and ``y = x`` where ``beta x > threshold``
    (there the two agree to rounding), as ``torch.nn.Softplus``.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> softplus = hg.Softplus()
    >>> print(softplus.forward(np.array([[-1.0, 0.0, 30.0]])).round(4))
    [[ 0.3133  0.6931 30.    ]]
    >>> print(softplus.backward(np.array([[1.0, 1.0, 1.0]])).round(4))  # sigmoid(beta x)
    [[0.2689 0.5    1.    ]]
    """

    activation_name = "softplus"
    elementwise = True
    options = ("beta", "threshold")

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = POSITIVE.check(beta, "beta")
        self.threshold = NUMBER.check(threshold, "threshold")

    def _forward(self, xp: Any, x: Any) -> Any:
        bx = self.beta * x
        self._z = xp.exp(xp.minimum(bx, self.threshold))  # exp(beta x), capped: no overflow
        return xp.where(bx > self.threshold, x, xp.log1p(self._z) / self.beta)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = exp(beta x) / (1 + exp(beta x)) = sigmoid(beta x); 1 where y = x
        return xp.where(self.beta * self._x > self.threshold, dy, dy * self._z / (self._z + 1))
