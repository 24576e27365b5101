"""Gradient clipping by global norm: every gradient scaled by one factor, so that all of them
together, as one vector, are at most ``max_norm`` long (``torch.nn.utils.clip_grad_norm_``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_positive_float

__all__ = ["clip_grad_norm"]


def clip_grad_norm(grads: Mapping[str, Any], max_norm: float) -> tuple[dict[str, Any], float]:
    """Scale ``grads`` (name -> array, such as ``model.grads``) so that their global norm
    ``sqrt(sum of every squared element)`` is at most ``max_norm``; return the scaled
    gradients (new arrays where scaled; the inputs are not changed) and the norm before.

    As torch, the factor is ``max_norm / (norm + 1e-6)``, applied only when below 1.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.clipping import clip_grad_norm
    >>> clipped, norm = clip_grad_norm({"w": np.array([3.0, 0.0]), "b": np.array([4.0])}, 1.0)
    >>> norm, [round(float(v), 6) for g in clipped.values() for v in g]
    (5.0, [0.6, 0.0, 0.8])
    >>> clip_grad_norm({"w": np.array([0.3])}, 1.0)[1]  # short enough: unchanged
    0.3
    """
    max_norm = check_positive_float(max_norm, "max_norm")
    if not isinstance(grads, Mapping) or not grads:
        raise ValueError("grads must be a non-empty dict of name -> array, such as model.grads")
    grads = dict(grads)
    total = 0.0
    for g in grads.values():
        total += float(namespace(g).sum(g * g))
    norm = math.sqrt(total)
    factor = max_norm / (norm + 1e-6)
    if factor < 1:
        grads = {name: g * factor for name, g in grads.items()}
    return grads, norm
