"""Forward formulas shared by several layers and losses, written once."""

from __future__ import annotations

from typing import Any

__all__ = ["affine", "log_softmax", "softplus"]


def affine(x: Any, weight: Any, bias: Any = None) -> Any:
    """``x @ weight.T + bias`` for ``x`` of shape (..., batch, in) and ``weight`` (out, in).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.functional import affine
    >>> print(affine(np.ones((1, 2)), np.array([[1.0, 2.0]]), np.array([0.5])))
    [[3.5]]
    """
    y = x @ weight.mT  # ...,B,out
    return y if bias is None else y + bias


def log_softmax(xp: Any, x: Any) -> Any:
    """``log(softmax(x))`` over the last axis, as ``x - max - log(sum(exp(x - max)))``: no
    overflow, and no log of an underflowed 0.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.functional import log_softmax
    >>> x = np.array([[1000.0, 1000.0]])
    >>> print(log_softmax(namespace(x), x).round(4))
    [[-0.6931 -0.6931]]
    """
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def softplus(xp: Any, x: Any) -> Any:
    """``log(1 + exp(x))`` as ``max(x, 0) + log1p(exp(-|x|))``: no overflow for large x,
    no loss of small values for very negative x.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.functional import softplus
    >>> x = np.array([-800.0, 0.0, 800.0])
    >>> softplus(namespace(x), x).tolist()
    [0.0, 0.6931471805599453, 800.0]
    """
    return xp.where(x > 0, x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))
