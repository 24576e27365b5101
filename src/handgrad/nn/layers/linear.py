"""The affine layer, ``y = x W^T + b``, as ``torch.nn.Linear``."""

from __future__ import annotations

from typing import Any

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.validation import check_positive_int
from handgrad.nn.functional import affine
from handgrad.nn.init import Initializer, initialize
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_input, check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["Linear"]


@register_layer
class Linear(Module):
    """Affine map ``y = x W^T + b`` with ``W`` of shape (out_features, in_features).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the input and output.
    bias : bool
        Add a learnable bias (initialised to zero).
    init : str or callable
        Weight initialiser: 'glorot' (default), 'glorot_sigmoid', 'he', 'small_normal' (the
        seed notebook's ``randn * 0.01``), or a function ``(shape, rng) -> ndarray``.
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

    broadcasts = True  # takes stacked copies, (..., batch, in_features), in one call

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: str | Initializer = "glorot",
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(in_features, out_features, bias)
        self.in_features, self.out_features = int(in_features), int(out_features)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        weight = initialize(init, shapes["weight"], rng)
        self.params["weight"] = xp.asarray(weight, dtype=dtype, device=device)
        if bias:
            self.params["bias"] = xp.zeros(shapes["bias"], dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._x = None
        self._y = None

    @classmethod
    def array_shapes(
        cls, in_features: int, out_features: int, bias: bool = True
    ) -> dict[str, tuple[int, ...]]:
        """``weight`` (out_features, in_features) and ``bias`` (out_features,)."""
        n_in = check_positive_int(in_features, "in_features")
        n_out = check_positive_int(out_features, "out_features")
        return {"weight": (n_out, n_in), **({"bias": (n_out,)} if bias else {})}

    def config(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": "bias" in self.params,
        }

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={'bias' in self.params})"
        )

    def forward(self, x: Any) -> Any:
        """Return ``x @ W.T + b`` for ``x`` of shape (..., batch, in_features)."""
        check_input(
            x,
            self.params["weight"],
            self,
            self.in_features,
            -1,
            "features (columns)",
            "(batch, in_features)",
        )
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        y = affine(x, self.params["weight"], self.params.get("bias"))  # ...,B,out
        self._x, self._y = x, y
        return y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite ``grads['weight']`` (and ``grads['bias']``)."""
        check_upstream(dy, self._y, self)
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
