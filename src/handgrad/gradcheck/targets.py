"""The arrays a check compares: the parameters (by PyTorch name, a tied one once) and the
input, each with where it lives, and the analytic gradients that the backward pass wrote,
in float64; a backward that returns or writes something else is named."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from handgrad.core.arrays import is_floating
from handgrad.gradcheck.routes import as_float64
from handgrad.gradcheck.state import is_array
from handgrad.nn.module import slots
from handgrad.nn.protocol import chain, named_layers

__all__ = ["Target", "analytic_grads", "input_gradient", "param_targets"]


@dataclass
class Target:
    """One array to check: its report name, the live array, the params dict that holds it
    (None for the input), its key there, and the chain position of its layer (see
    :func:`param_targets`)."""

    name: str
    array: Any
    owner: dict | None
    key: str
    index: int | None
    tied: bool = False


def analytic_grads(model: Any) -> dict[str, np.ndarray]:
    """Each parameter's gradient from the last backward, in float64 (a tied parameter's
    uses summed).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.targets import analytic_grads
    >>> layer = hg.Linear(3, 2, rng=0)
    >>> _ = layer.forward(np.ones((4, 3)))
    >>> _ = layer.backward(np.ones((4, 2)))
    >>> analytic_grads(layer)["bias"].tolist()
    [4.0, 4.0]
    """
    grads = {}
    for name, places in slots(model).items():
        total = None
        for layer, key in places:
            if key not in layer.grads:
                raise ValueError(
                    f"{type(layer).__name__} has parameter {key!r} but no grads[{key!r}] after "
                    "backward: backward must write a gradient for every parameter"
                )
            grad = layer.grads[key]
            if not is_array(grad):
                raise TypeError(
                    f"{type(layer).__name__}.grads[{key!r}] is {type(grad).__name__} after "
                    "backward: backward must write an array shaped like the parameter"
                )
            total = as_float64(grad) if total is None else total + as_float64(grad)
        grads[name] = total
    return grads


def param_targets(model: Any) -> list[Target]:
    """Every parameter, with the index of the chain element (see ``chain``) that holds it.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.gradcheck.targets import param_targets
    >>> [(t.name, t.index, t.key) for t in param_targets(hg.mlp([3, 4, 2]))][:2]
    [('0.weight', 0, 'weight'), ('0.bias', 0, 'bias')]
    """
    position = {
        id(leaf): i for i, element in enumerate(chain(model)) for _, leaf in named_layers(element)
    }
    targets = []
    for name, places in slots(model).items():
        layer, key = places[0]
        array = layer.params[key]
        if not is_array(array) or not is_floating(array):
            kind = type(array).__name__ if not is_array(array) else f"an array of {array.dtype}"
            raise TypeError(
                f"parameter {name!r} of {type(layer).__name__} is {kind}, not a floating-point "
                "array: keep it as one (np.array(0.5) for a number) and read it from params "
                "in forward, so that the check can perturb it in place"
            )
        targets.append(Target(name, array, layer.params, key, position[id(layer)], len(places) > 1))
    return targets


def input_gradient(dx: Any, layer: Any, x: Any) -> np.ndarray:
    """``dx``, what ``layer.backward`` returned, in float64, or a TypeError that says what
    it must return.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.targets import input_gradient
    >>> input_gradient(np.ones(2, dtype=np.float32), None, np.ones(2)).dtype.name
    'float64'
    >>> input_gradient(None, object(), np.ones((2, 3)))
    Traceback (most recent call last):
        ...
    TypeError: object.backward returned None: it must return dL/dx, an array shaped like x (2, 3)
    """
    if not is_array(dx):
        got = "None" if dx is None else f"a {type(dx).__name__}"
        raise TypeError(
            f"{type(layer).__name__}.backward returned {got}: it must return dL/dx, an array "
            f"shaped like x {tuple(x.shape)}"
        )
    return as_float64(dx)
