"""Forward formulas shared by several layers and losses, written once."""

from __future__ import annotations

from typing import Any

__all__ = ["affine", "log_softmax"]


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
