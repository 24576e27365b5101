"""Forward formulas shared by several layers and losses, written once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from handgrad.core.arrays import namespace, native

__all__ = ["affine", "erf", "log_softmax", "softplus"]


def affine(x: Any, weight: Any, bias: Any = None) -> Any:
    """``x @ weight.T + bias`` for ``x`` of shape (..., batch, in) and ``weight`` (out, in).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.functional import affine
    >>> print(affine(np.ones((1, 2)), np.array([[1.0, 2.0]]), np.array([0.5])))
    [[3.5]]
    """
    if bias is not None and x.ndim == 2 and not isinstance(x, np.ndarray):
        own = native(namespace(x), "addmm")
        if own is not None:  # torch: the product and the sum in one call
            return own(bias, x, weight.mT)  # B,out
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
    if (own := native(xp, "log_softmax")) is not None:  # torch: one kernel
        return own(x)
    shifted = x - xp.max(x, axis=-1, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def erf(xp: Any, x: Any) -> Any:
    """The error function, elementwise, to about 2e-15, from operations every array library
    has (the array API standard has no ``erf``).

    ``erf(z) = 2 / sqrt(pi) exp(-z^2) sum_n 2^n z^(2n+1) / (1 3 5 ... (2n+1))``: every term
    has the sign of z, so the sum loses nothing to cancellation; its terms shrink once n
    passes z^2, and ``z^2 + 10 |z| + 20`` of them reach float64 precision for |z| <= 6.
    Beyond 6, ``erf`` is +-1 in float64.

    Examples
    --------
    >>> import math
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.functional import erf
    >>> z = np.array([-7.0, -1.0, 0.0, 0.5, 3.0])
    >>> bool(np.all(np.abs(erf(namespace(z), z) - [math.erf(v) for v in z]) < 1e-14))
    True
    """
    size = xp.abs(x)
    z = xp.minimum(size, 6.0)
    z2 = z * z
    largest = float(xp.max(z)) if math.prod(z.shape) else 0.0
    term = total = z
    for n in range(int(largest * largest + 10 * largest + 20)):
        term = term * (2.0 / (2 * n + 3)) * z2  # ratio of term n+1 to term n: 2 z^2 / (2n+3)
        total = total + term
    value = xp.minimum(2 / math.sqrt(math.pi) * xp.exp(-z2) * total, 1.0)
    return xp.sign(x) * xp.where(size >= 6.0, 1.0, value)


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
