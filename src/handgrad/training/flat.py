"""Optimizer state for NumPy parameters in flat buffers, updated in place.

A model's parameters stay its own arrays (a scikit-learn estimator's ``coefs_`` are views
that training must update in place), but an optimizer's state (SGD's velocity, Adam's
moments) is one flat buffer per kind, and each parameter's state a view of it. A step
gathers the gradients into one flat scratch buffer (one call), runs every ufunc of the
update once over all parameters with ``out=`` (no temporaries), and subtracts each
parameter's share of the step from it. Each elementwise operation is the one the
per-parameter formula does, in the same order, so the weights are bit for bit the same;
a 30-20-2 network's Adam step takes about 8 us instead of 21 (``benchmarks/README.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["FlatState"]


class FlatState:
    """Flat buffers over NumPy parameters of one floating dtype, and the in-place updates.

    Parameters
    ----------
    params : list of numpy.ndarray
        The parameters, in the optimizer's order.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.flat import FlatState
    >>> w, b = np.ones((2, 3)), np.ones(2)
    >>> flat = FlatState.over([w, b])
    >>> buffer, views = flat.zeros()
    >>> buffer.shape, [v.shape for v in views]
    ((8,), [(2, 3), (2,)])
    >>> flat.sgd([np.ones((2, 3)), np.ones(2)], lr=0.5)  # p -= lr g
    >>> print(w[0], b)
    [0.5 0.5 0.5] [0.5 0.5]
    """

    def __init__(self, params: list[np.ndarray]) -> None:
        self.params = params
        self.dtype = params[0].dtype
        self.size = sum(p.size for p in params)
        self.grad = np.empty(self.size, self.dtype)  # the gradients, gathered
        self.scratch = np.empty(self.size, self.dtype)  # one operand of the update
        self.step_views = self.views(self.scratch)

    @classmethod
    def over(cls, params: list[Any]) -> FlatState | None:
        """Flat state for ``params``, or None where they are not all NumPy arrays of one
        floating dtype (the optimizer then updates each array by the array API)."""
        if not params or not all(type(p) is np.ndarray for p in params):
            return None
        dtype = params[0].dtype
        if dtype.kind != "f" or any(p.dtype != dtype for p in params):
            return None
        return cls(params)

    def views(self, buffer: np.ndarray) -> list[np.ndarray]:
        """Each parameter's part of a flat ``buffer``, in its shape (C order)."""
        views, start = [], 0
        for p in self.params:
            views.append(buffer[start : start + p.size].reshape(p.shape))
            start += p.size
        return views

    def zeros(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """A new flat buffer of zeros and its views, one per parameter."""
        buffer = np.zeros(self.size, self.dtype)
        return buffer, self.views(buffer)

    def gather(self, grads: list[Any], weight_decay: float = 0.0) -> np.ndarray:
        """The gradients in the flat scratch buffer, plus ``weight_decay * p`` if given."""
        g = self.grad
        np.concatenate(grads, axis=None, out=g)
        if weight_decay:  # g = grad + weight_decay * p
            s = self.scratch
            np.concatenate(self.params, axis=None, out=s)
            np.multiply(s, weight_decay, out=s)
            np.add(g, s, out=g)
        return g

    def subtract(self) -> None:
        """``p -= step`` for every parameter, the step being the scratch buffer's share."""
        for p, step in zip(self.params, self.step_views, strict=True):
            p -= step

    def sgd(self, grads: list[Any], lr: float, weight_decay: float = 0.0) -> None:
        """Plain SGD: ``p -= lr * g``; without weight decay parameter by parameter (two
        passes over memory instead of three: the gathering copy does not pay here)."""
        if weight_decay:
            g = self.gather(grads, weight_decay)
            np.multiply(g, lr, out=self.scratch)
            self.subtract()
            return
        for p, g, step in zip(self.params, grads, self.step_views, strict=True):
            np.multiply(g, lr, out=step)
            p -= step

    def momentum(
        self,
        grads: list[Any],
        velocity: np.ndarray,
        first: bool,
        lr: float,
        momentum: float,
        nesterov: bool,
        weight_decay: float = 0.0,
    ) -> None:
        """SGD with momentum: ``v = momentum * v + g`` (``v = g`` on the first step), then
        ``p -= lr * (g + momentum * v if nesterov else v)``."""
        g, s = self.gather(grads, weight_decay), self.scratch
        if first:
            np.copyto(velocity, g)
        else:
            np.multiply(velocity, momentum, out=velocity)
            np.add(velocity, g, out=velocity)
        if nesterov:
            np.multiply(velocity, momentum, out=s)
            np.add(g, s, out=s)
            np.multiply(s, lr, out=s)
        else:
            np.multiply(velocity, lr, out=s)
        self.subtract()

    def adam(
        self,
        grads: list[Any],
        m: np.ndarray,
        v: np.ndarray,
        t: int,
        lr: float,
        betas: tuple[float, float],
        eps: float,
        weight_decay: float = 0.0,
    ) -> None:
        """Adam's step ``t``: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
        ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""
        beta1, beta2 = betas
        step_size = lr / (1 - beta1**t)
        root_correction = math.sqrt(1 - beta2**t)
        g, s = self.gather(grads, weight_decay), self.scratch
        np.multiply(m, beta1, out=m)
        np.multiply(g, 1 - beta1, out=s)
        np.add(m, s, out=m)
        np.multiply(v, beta2, out=v)
        np.multiply(g, g, out=s)
        np.multiply(s, 1 - beta2, out=s)
        np.add(v, s, out=v)
        np.sqrt(v, out=s)
        np.divide(s, root_correction, out=s)
        np.add(s, eps, out=s)
        np.divide(m, s, out=s)
        np.multiply(s, step_size, out=s)
        self.subtract()
