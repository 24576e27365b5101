"""Layers with hand-derived backward passes, on any array-API namespace.

The layer protocol: any object with these four members is a layer, a user's own class too::

    layer.params      # dict name -> array (empty for activations)
    layer.grads       # dict name -> array, same keys and shapes, written by backward
    y = layer.forward(x)        # x: (batch, features); caches what backward needs
    dx = layer.backward(dy)     # dy = dL/dy; returns dL/dx and overwrites layer.grads

``backward`` overwrites ``grads``; it never accumulates, so calling it twice on the same
upstream gradient gives the same result twice.

handgrad's layers also accept leading axes, ``x`` of shape (..., batch, features): stacked
copies of a batch, computed in one call. The batched gradient check uses them; a layer of
one's own that does not broadcast is checked element by element instead. Optional members
make that check faster (see :class:`handgrad.finite_differences.BatchedEvaluator`):
``elementwise = True`` for a layer that maps each element on its own, and Linear's
``perturbed_columns`` and ``forward_columns``.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from handgrad.backend import get_namespace, namespace, resolve_dtype
from handgrad.init import Initialiser, initialise
from handgrad.validation import check_array, check_not_empty, check_positive_int

__all__ = ["Layer", "Linear", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]


@runtime_checkable
class Layer(Protocol):
    """What handgrad needs of a layer: ``params``, ``grads``, ``forward``, ``backward``.

    Examples
    --------
    A class of one's own is a layer without importing anything from handgrad:

    >>> import handgrad as hg
    >>> class Double:
    ...     def __init__(self):
    ...         self.params, self.grads = {}, {}
    ...     def forward(self, x):
    ...         return 2 * x
    ...     def backward(self, dy):
    ...         return 2 * dy  # dL/dx = 2 dL/dy
    >>> isinstance(Double(), hg.Layer)
    True
    """

    params: dict[str, Any]
    grads: dict[str, Any]

    def forward(self, x: Any) -> Any: ...

    def backward(self, dy: Any) -> Any: ...


def _check_upstream(dy: Any, out: Any, layer: object) -> Any:
    """Check that dy is shaped like the last forward's output; return their namespace."""
    if out is None:
        raise RuntimeError(f"{type(layer).__name__}.backward called before forward")
    check_array(dy, "dy", finite=False)
    if tuple(dy.shape) != tuple(out.shape):
        raise ValueError(
            f"dy must have the shape of the layer's last output {tuple(out.shape)}, "
            f"got {tuple(dy.shape)}"
        )
    return namespace(dy, out)


class Linear:
    """Affine map ``y = x W^T + b`` with ``W`` of shape (out_features, in_features).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output.
    bias : bool
        Add a learnable bias (initialised to zero).
    init : str or callable
        Weight initialiser: 'glorot' (default), 'glorot_sigmoid', 'he', 'seed' (the seed
        notebook's ``randn * 0.01``), or a function ``(shape, rng) -> ndarray``.
    rng : int, numpy.random.Generator or None
        Source of the initial weights.
    backend, dtype, device
        Where the parameters live: a namespace name ('numpy', 'torch', 'array_api_strict')
        or module, a floating dtype name, and a device of that library.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> layer = hg.Linear(3, 2, rng=0)
    >>> layer.params["weight"].shape  # (out_features, in_features), as torch.nn.Linear
    (2, 3)
    >>> layer.forward(np.ones((4, 3))).shape
    (4, 2)
    >>> dx = layer.backward(np.ones((4, 2)))  # dL/dy = 1 for every output
    >>> dx.shape, layer.grads["weight"].shape
    ((4, 3), (2, 3))
    >>> print(layer.grads["bias"])  # dL/dy summed over the batch
    [4. 4.]
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str | Initialiser = "glorot",
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        self.in_features = check_positive_int(in_features, "in_features")
        self.out_features = check_positive_int(out_features, "out_features")
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        weight = initialise(init, (self.out_features, self.in_features), rng)
        self.params = {"weight": xp.asarray(weight, dtype=dtype, device=device)}
        if bias:
            self.params["bias"] = xp.zeros(self.out_features, dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._x = None
        self._y = None

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={'bias' in self.params})"
        )

    def forward(self, x: Any) -> Any:
        """Return ``x @ W.T + b`` for ``x`` of shape (..., batch, in_features)."""
        weight = self.params["weight"]
        check_array(x, "x", min_ndim=2, layout="(batch, in_features)")
        namespace(x, weight)  # refuses a mix of array libraries
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have {self.in_features} features (columns) for {self!r}, "
                f"got shape {tuple(x.shape)}"
            )
        if x.dtype != weight.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the layer's weight is {weight.dtype}; convert x "
                "or move the model with model.to(dtype=...)"
            )
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        y = x @ self.params["weight"].mT  # ...,B,out
        if "bias" in self.params:
            y = y + self.params["bias"]
        self._x, self._y = x, y
        return y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite ``grads['weight']`` (and ``grads['bias']``)."""
        _check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``; with ``input_grad=False`` dL/dx is not
        computed (the first layer of a model needs none) and None is returned."""
        rows, x = dy, self._x
        if dy.ndim != 2:  # leading axes and batch as one: N,out and N,in
            xp = namespace(dy)
            rows = xp.reshape(dy, (-1, self.out_features))
            x = xp.reshape(x, (-1, self.in_features))
        # dL/dW = dy^T x,  dL/db = sum over the batch of dy,  dL/dx = dy W
        self.grads["weight"] = rows.mT @ x  # out,in
        if "bias" in self.params:
            self.grads["bias"] = namespace(rows).sum(rows, axis=0)  # out
        return dy @ self.params["weight"] if input_grad else None  # ...,B,in

    def perturbed_columns(self, x: Any, name: str, index: Any, moves: Any) -> tuple[Any, Any]:
        """The gradient check's shortcut: outputs for ``x`` (batch, in) when element
        ``index[i]`` (flat) of ``params[name]`` moves by ``moves[i]``, one copy per i. Each
        copy differs from the unperturbed output in one column (output unit); returns those
        columns and their values, (P,) and (P, batch). No weight matrix is copied."""
        xp = namespace(x, self.params["weight"])
        y = xp.matmul(x, self.params["weight"].mT)
        if "bias" in self.params:
            y = y + self.params["bias"]
        if name == "weight":
            rows, cols = index // self.in_features, index % self.in_features
            # (W + s e_i e_j^T) x = W x + s x_j e_i: only unit i changes, by s x_j
            change = moves[:, None] * xp.take(x, cols, axis=1).mT  # P,B
        elif name == "bias":
            rows, change = index, moves[:, None]
        else:
            raise KeyError(f"Linear has no parameter {name!r}")
        return rows, xp.take(y, rows, axis=1).mT + change

    def forward_columns(self, x: Any, columns: Any, values: Any) -> Any:
        """Outputs, (P, batch, out), for copies of ``x`` (batch, in) whose column
        ``columns[i]`` is replaced by ``values[i]`` (batch,)."""
        xp = namespace(x, self.params["weight"])
        y = xp.matmul(x, self.params["weight"].mT)
        if "bias" in self.params:
            y = y + self.params["bias"]
        # a new column j adds (v - x_j) W[:, j]^T: a rank-one change per copy
        delta = values - xp.take(x, columns, axis=1).mT  # P,B
        weight_columns = xp.take(self.params["weight"], columns, axis=1).mT  # P,out
        return y[None, ...] + delta[:, :, None] * weight_columns[:, None, :]


class _Activation:
    """An elementwise or row-wise map with no parameters; subclasses define the math."""

    row_wise = False  # reduces over the last axis (the classes), which must not be empty

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.grads: dict[str, Any] = {}
        self._y = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

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
        _check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        return self._backward(namespace(dy), self._y, dy)

    def _forward(self, xp: Any, x: Any) -> Any:
        raise NotImplementedError

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        raise NotImplementedError


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

    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.tanh(x)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 - y^2
        return dy * (1 - y * y)


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

    elementwise = True

    def _forward(self, xp: Any, x: Any) -> Any:
        return xp.where(x > 0, x, 0.0)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dy/dx = 1 where x > 0 (equivalently y > 0), else 0
        return xp.where(y > 0, dy, 0.0)


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

    def _forward(self, xp: Any, x: Any) -> Any:
        e = xp.exp(x - xp.max(x, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dL/dx_i = y_i (dy_i - sum_j dy_j y_j): the Jacobian diag(y) - y y^T, row by row
        return y * (dy - xp.sum(dy * y, axis=-1, keepdims=True))


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

    def _forward(self, xp: Any, x: Any) -> Any:
        shifted = x - xp.max(x, axis=-1, keepdims=True)
        return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))

    def _backward(self, xp: Any, y: Any, dy: Any) -> Any:
        # dL/dx_i = dy_i - softmax(x)_i sum_j dy_j, with softmax(x) = exp(y)
        return dy - xp.exp(y) * xp.sum(dy, axis=-1, keepdims=True)
