"""The layer protocol: any object with these four members is a layer, a user's own class too::

    layer.params      # mapping name -> array (empty for activations)
    layer.grads       # mapping name -> array, same keys and shapes, written by backward
    y = layer.forward(x)        # x: (batch, features); caches what backward needs
    dx = layer.backward(dy)     # dy = dL/dy; returns dL/dx and overwrites layer.grads

``backward`` overwrites ``grads``; it never accumulates, so calling it twice on the same
upstream gradient gives the same result twice. Optional members: ``buffers`` (state that is
saved but not trained), ``train()`` / ``eval()`` (modes), and ``children`` (a mapping name ->
layer, for containers: parameters are then named ``"<child>.<name>"``, as PyTorch names them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from handgrad.core.arrays import namespace
from handgrad.core.validation import check_array

__all__ = [
    "Layer",
    "chain",
    "check_input",
    "check_protocol",
    "check_upstream",
    "children_of",
    "in_mode",
    "named_layers",
]


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

    params: Mapping[str, Any]
    grads: Mapping[str, Any]

    def forward(self, x: Any) -> Any: ...

    def backward(self, dy: Any) -> Any: ...


def check_protocol(layer: Any, where: str) -> None:
    """Raise TypeError, naming ``where`` and what is missing, unless ``layer`` is a layer.

    Examples
    --------
    >>> from handgrad.nn.protocol import check_protocol
    >>> check_protocol(object(), "layer 2")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    TypeError: layer 2 (object) does not follow the layer protocol: it lacks params, grads, ...
    """
    missing = [m for m in ("params", "grads", "forward", "backward") if not hasattr(layer, m)]
    if missing:
        raise TypeError(
            f"{where} ({type(layer).__name__}) does not follow the layer protocol: it lacks "
            f"{', '.join(missing)} (see handgrad.Layer)"
        )
    for member in ("params", "grads"):
        if not isinstance(getattr(layer, member), Mapping):
            raise TypeError(
                f"{where} ({type(layer).__name__}).{member} must be a dict of name -> array, "
                f"got {type(getattr(layer, member)).__name__}"
            )


def children_of(layer: Any) -> Mapping[str, Any]:
    """The layers a container holds, by name; an empty mapping for a plain layer."""
    children = getattr(layer, "children", None)
    return children if isinstance(children, Mapping) else {}


def named_layers(model: Any) -> list[tuple[str, Any]]:
    """The leaves of a tree of layers, in order, as ``(prefix, layer)`` pairs, so that
    ``prefix + name`` names each parameter as PyTorch does (``"1.2.weight"``).

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.protocol import named_layers
    >>> [(prefix, type(layer).__name__) for prefix, layer in named_layers(hg.mlp([4, 3, 2]))]
    [('0.', 'Linear'), ('1.', 'Sigmoid'), ('2.', 'Linear')]
    >>> [prefix + name for prefix, layer in named_layers(hg.Linear(4, 3)) for name in layer.params]
    ['weight', 'bias']
    """
    check_protocol(model, "model")
    children = children_of(model)
    if not children:
        return [("", model)]
    return [
        (f"{name}.{prefix}", leaf)
        for name, child in children.items()
        for prefix, leaf in named_layers(child)
    ]


def chain(model: Any) -> list[Any]:
    """The layers that ``model`` runs one after the other: the leaves of nested Sequentials
    (anything with a ``layers`` list), or ``[model]`` for any other layer.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.protocol import chain
    >>> model = hg.Sequential(hg.Linear(2, 2), hg.Sequential(hg.Tanh(), hg.Linear(2, 1)))
    >>> [type(layer).__name__ for layer in chain(model)]
    ['Linear', 'Tanh', 'Linear']
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, list):
        return [model]
    return [leaf for layer in layers for leaf in chain(layer)]


def check_input(
    x: Any, weight: Any, layer: object, size: int, axis: int, what: str, layout: str
) -> None:
    """Check ``x`` for a layer whose parameters are like ``weight``: an array of at least
    ``1 - axis`` dimensions (``layout`` says how they are read), of ``weight``'s library and
    dtype, with ``size`` entries along ``axis``, ``what`` naming them in the message.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.nn.protocol import check_input
    >>> layer = hg.Linear(3, 2)
    >>> weight = layer.params["weight"]
    >>> check_input(np.ones((2, 4)), weight, layer, 3, -1, "features", "")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: x must have 3 features for Linear(...), got shape (2, 4)
    """
    check_array(x, "x", min_ndim=max(2, 1 - axis), layout=layout)
    namespace(x, weight)  # refuses a mix of array libraries
    if x.shape[axis] != size:
        raise ValueError(f"x must have {size} {what} for {layer!r}, got shape {tuple(x.shape)}")
    if x.dtype != weight.dtype:
        raise TypeError(
            f"x has dtype {x.dtype} but the layer's weight is {weight.dtype}; convert x "
            "or move the model with model.to(dtype=...)"
        )


def check_upstream(dy: Any, out: Any, layer: object) -> Any:
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


@contextlib.contextmanager
def in_mode(model: Any, training: bool) -> Iterator[Any]:
    """``model`` in training (or evaluation) mode for the ``with`` block, every layer's
    mode as it was afterwards; a model without modes is left alone.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.protocol import in_mode
    >>> model = hg.Sequential(hg.Linear(2, 2), hg.Dropout(0.5))
    >>> with in_mode(model, False):
    ...     print(model[1].training)
    False
    >>> model[1].training
    True
    """
    before = []

    def visit(layer: Any) -> None:
        if hasattr(layer, "training"):
            before.append((layer, layer.training))
        for child in children_of(layer).values():
            visit(child)

    visit(model)
    if hasattr(model, "train"):
        model.train(training)
    try:
        yield model
    finally:
        for layer, training_before in before:
            layer.training = training_before
