"""Dropout, as ``torch.nn.Dropout``: in training mode each element is kept with probability
``1 - p`` and scaled by ``1 / (1 - p)`` (inverted dropout, so evaluation needs no scaling);
in evaluation mode the layer passes its input through."""

from __future__ import annotations

from typing import Any

import array_api_compat

from handgrad.core.arrays import convert, namespace
from handgrad.core.random import make_rng
from handgrad.core.validation import Interval, check_array
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["Dropout"]

PROBABILITY = Interval(float, 0, 1, "both")


@register_layer
class Dropout(Module):
    """Zero each element with probability ``p`` in training mode, scaling the rest by
    ``1 / (1 - p)``; the identity in evaluation mode (``eval()``).

    The mask comes from the layer's own NumPy generator, ``generator`` (seeded by ``rng``),
    whatever the array library, so a run is repeatable, and a gradient check can draw the
    same mask for every forward pass by seeding the generator again before each one.

    Parameters
    ----------
    p : float in [0, 1]
        The probability of dropping an element (``p = 1`` drops all of them).
    rng : int, numpy.random.Generator or None
        Source of the masks.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> drop = hg.Dropout(0.5, rng=0)
    >>> y = drop.forward(np.ones((2, 4)))
    >>> sorted(set(y.ravel().tolist()))  # dropped, or kept and doubled
    [0.0, 2.0]
    >>> bool(np.all(drop.backward(np.ones((2, 4))) == y))  # dL/dx = dy * mask / (1 - p)
    True
    >>> drop.eval().forward(np.ones((1, 3))).tolist()  # evaluation: the identity
    [[1.0, 1.0, 1.0]]
    """

    def __init__(self, p: float = 0.5, *, rng: Any = None) -> None:
        super().__init__()
        self.p = PROBABILITY.check(p, "p")
        self.generator = make_rng(rng)
        self.mask = None  # the last training-mode mask, scaled: 0 or 1 / (1 - p)
        self._y = None

    @classmethod
    def array_shapes(cls, p: float = 0.5) -> dict[str, tuple[int, ...]]:
        """None: dropout has no parameters or buffers (checks ``p``)."""
        PROBABILITY.check(p, "p")
        return {}

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def __repr__(self) -> str:
        return f"Dropout(p={self.p:g})"

    def forward(self, x: Any) -> Any:
        """``x`` with a fresh random mask applied (training mode), or ``x`` itself."""
        check_array(x, "x")
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``: for loops that checked their data once."""
        if not self.training or self.p == 0:
            self.mask = None
            self._y = x
            return x
        keep = self.generator.random(tuple(x.shape)) >= self.p
        scale = 1.0 / (1.0 - self.p) if self.p < 1 else 0.0
        self.mask = convert(
            keep * scale, namespace(x), dtype=x.dtype, device=array_api_compat.device(x)
        )
        self._y = x * self.mask
        return self._y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx: ``dy`` through the last forward pass's mask."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        # y = x m / (1 - p) elementwise, so dL/dx = dy m / (1 - p); the identity's is dy
        return dy if self.mask is None else dy * self.mask
