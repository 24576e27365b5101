"""A lookup table, ``y = W[idx]``, as ``torch.nn.Embedding``."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.random import make_rng
from handgrad.core.validation import check_array, check_positive_float, check_positive_int
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["Embedding", "check_indices"]

_ONE_HOT_ELEMENTS = 2**22  # rows x classes per one-hot block on libraries without scatter-add


def check_indices(idx: Any, name: str, size: int, what: str) -> Any:
    """Check that ``idx`` is an integer array with values in ``[0, size)``; return its
    namespace. ``what`` names the table in the message.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.embedding import check_indices
    >>> check_indices(np.array([0, 3]), "idx", 3, "an Embedding of 3 rows")
    Traceback (most recent call last):
        ...
    ValueError: idx holds index 3 but an Embedding of 3 rows takes indices 0 to 2
    """
    xp = check_array(idx, name, floating=False, finite=False)
    if not xp.isdtype(idx.dtype, "integral"):
        raise TypeError(
            f"{name} must hold integer indices (int64 or int32), got dtype {idx.dtype}; "
            "convert it first, e.g. idx.astype('int64')"
        )
    if math.prod(idx.shape):
        low, high = int(xp.min(idx)), int(xp.max(idx))
        if low < 0 or high >= size:
            raise ValueError(
                f"{name} holds index {low if low < 0 else high} but {what} takes indices "
                f"0 to {size - 1}"
            )
    return xp


@register_layer
class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``: ``forward(idx)``
    returns the rows ``idx`` picks, ``idx`` an integer array of any shape.

    The weight is drawn from N(0, ``std``^2), ``std=1`` as torch.nn.Embedding. ``backward``
    returns None (an index has no gradient) and writes ``grads['weight']``: each row the sum
    of the upstream gradients of the positions that picked it.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.nn.layers.embedding import Embedding
    >>> table = Embedding(5, 3, rng=0)
    >>> idx = np.array([[1, 4, 1]])  # (batch, time)
    >>> table.forward(idx).shape  # (batch, time, embedding_dim)
    (1, 3, 3)
    >>> table.backward(np.ones((1, 3, 3))) is None
    True
    >>> print(table.grads["weight"][:, 0])  # row 1 was picked twice: its gradients add up
    [0. 2. 0. 0. 1.]
    """

    broadcasts = True  # idx of any shape: stacked copies are leading axes

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        *,
        std: float = 1.0,
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(num_embeddings, embedding_dim)
        self.num_embeddings, self.embedding_dim = shapes["weight"]
        xp = get_namespace(backend)
        weight = make_rng(rng).standard_normal(shapes["weight"]) * check_positive_float(std, "std")
        self.params["weight"] = xp.asarray(weight, dtype=resolve_dtype(xp, dtype), device=device)
        self.grads["weight"] = xp.zeros_like(self.params["weight"])
        self._idx = None
        self._y = None

    @classmethod
    def array_shapes(cls, num_embeddings: int, embedding_dim: int) -> dict[str, tuple[int, ...]]:
        """``weight`` (num_embeddings, embedding_dim)."""
        return {
            "weight": (
                check_positive_int(num_embeddings, "num_embeddings"),
                check_positive_int(embedding_dim, "embedding_dim"),
            )
        }

    def config(self) -> dict[str, Any]:
        return {"num_embeddings": self.num_embeddings, "embedding_dim": self.embedding_dim}

    def __repr__(self) -> str:
        return f"Embedding({self.num_embeddings}, {self.embedding_dim})"

    def forward(self, idx: Any) -> Any:
        """Return ``weight[idx]``, of shape ``idx.shape + (embedding_dim,)``."""
        check_indices(idx, "idx", self.num_embeddings, f"{self!r}")
        namespace(idx, self.params["weight"])  # refuses a mix of array libraries
        return self.forward_unchecked(idx)

    def forward_unchecked(self, idx: Any) -> Any:
        """:meth:`forward` without checking ``idx``: for loops that checked their data once."""
        weight = self.params["weight"]
        if isinstance(weight, np.ndarray):
            y = weight[idx]
        else:
            xp = namespace(weight)
            rows = xp.take(weight, xp.reshape(idx, (-1,)), axis=0)  # N,D
            y = xp.reshape(rows, (*idx.shape, self.embedding_dim))
        self._idx, self._y = idx, y
        return y

    def backward(self, dy: Any) -> None:
        """Overwrite ``grads['weight']`` from dL/dy and return None (indices have no
        gradient)."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> None:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        rows = xp.reshape(dy, (-1, self.embedding_dim))  # N,D
        flat = xp.reshape(self._idx, (-1,))  # N
        # dL/dW[v] = sum of dy[n] over the positions n with idx[n] = v (a scatter-add)
        if isinstance(rows, np.ndarray):
            grad = np.zeros((self.num_embeddings, self.embedding_dim), dtype=rows.dtype)
            np.add.at(grad, flat, rows)
        else:
            grad = self._one_hot_sum(xp, flat, rows)
        self.grads["weight"] = grad
        return None

    def _one_hot_sum(self, xp: Any, flat: Any, rows: Any) -> Any:
        """The scatter-add as one-hot products, in blocks of bounded size (the array API
        has no scatter-add)."""
        device = array_api_compat.device(rows)
        classes = xp.arange(self.num_embeddings, dtype=flat.dtype, device=device)
        grad = xp.zeros((self.num_embeddings, self.embedding_dim), dtype=rows.dtype, device=device)
        step = max(1, _ONE_HOT_ELEMENTS // self.num_embeddings)
        n = int(flat.shape[0])
        for start in range(0, n, step):
            stop = min(start + step, n)
            one_hot = xp.astype(xp.reshape(flat[start:stop], (-1, 1)) == classes, rows.dtype)
            grad = grad + one_hot.mT @ rows[start:stop, :]  # V,D from n,V and n,D
        return grad
