"""Containers: layers that hold layers. ``Sequential`` runs its layers in order forward and in
reverse backward; it is itself a layer, so containers nest, and parameters are named as
PyTorch names them (``"0.weight"``, ``"1.2.bias"``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from handgrad.nn.module import ArrayView, Module
from handgrad.nn.protocol import Layer, check_protocol
from handgrad.nn.registry import build_layer, layer_spec, register_layer, spec_shapes

__all__ = ["Sequential"]


@register_layer
class Sequential(Module):
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Any object that follows the layer protocol (:class:`handgrad.Layer`) can be a member, a
    user's own class or another container included. ``params``, ``grads`` and ``buffers``
    are live views over the members, by PyTorch name.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> model = hg.Sequential(hg.Linear(4, 3, rng=0), hg.Tanh(), hg.Linear(3, 2, rng=1))
    >>> list(model.params)  # named as torch.nn.Sequential names them
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> x = np.random.default_rng(0).standard_normal((5, 4))
    >>> model.forward(x).shape
    (5, 2)
    >>> model.backward(np.ones((5, 2))).shape  # returns dL/dx and fills every layer's grads
    (5, 4)
    >>> model.grads["0.weight"].shape
    (3, 4)
    """

    def __init__(self, *layers: Layer) -> None:
        if not layers:
            raise ValueError("Sequential needs at least one layer, got none")
        for i, layer in enumerate(layers):
            check_protocol(layer, f"layer {i}")
        self.layers = list(layers)
        self.training = True

    @property
    def children(self) -> dict[str, Layer]:
        """The members by name: ``"0"``, ``"1"``, ..."""
        return {str(i): layer for i, layer in enumerate(self.layers)}

    @property
    def params(self) -> ArrayView:
        """Live parameter arrays by PyTorch name; changing one in place changes the model."""
        return ArrayView(self, "params")

    @property
    def grads(self) -> ArrayView:
        """Gradients from the last ``backward``, keyed as :attr:`params` (a tied parameter's
        uses summed)."""
        return ArrayView(self, "grads")

    @property
    def buffers(self) -> ArrayView:
        """Live buffers (state saved but not trained) by PyTorch name."""
        return ArrayView(self, "buffers")

    def __repr__(self) -> str:
        inner = "".join(
            f"\n  ({i}): " + repr(layer).replace("\n", "\n  ")
            for i, layer in enumerate(self.layers)
        )
        return f"Sequential({inner}\n)"

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def forward(self, x: Any) -> Any:
        """Run ``x`` through every layer and return the last output."""
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: Any) -> Any:
        """Backpropagate dL/doutput; overwrite every layer's grads and return dL/dx."""
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

    def config(self) -> dict[str, Any]:
        """The members' specs, in order (see :mod:`handgrad.nn.registry`)."""
        return {"layers": [layer_spec(layer, f"layer {i}") for i, layer in enumerate(self.layers)]}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """The Sequential that :meth:`config` describes, with fresh weights."""
        return cls(*(build_layer(spec, f"layer {i}") for i, spec in enumerate(_specs(config))))

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """The members' arrays, named ``"<index>.<name>"``."""
        return {
            f"{i}.{name}": shape
            for i, spec in enumerate(_specs(config))
            for name, shape in spec_shapes(spec, f"layer {i}").items()
        }

    def torch_module(self) -> Any:
        """``torch.nn.Sequential`` of the members' counterparts. Needs PyTorch."""
        import torch

        from handgrad.nn.registry import torch_counterpart

        modules = []
        for i, layer in enumerate(self.layers):
            try:
                modules.append(torch_counterpart(layer))
            except TypeError as err:
                raise TypeError(f"layer {i} ({type(layer).__name__}): {err}") from None
        return torch.nn.Sequential(*modules)


def _specs(config: dict[str, Any]) -> list[Any]:
    layers = config.get("layers")
    if set(config) != {"layers"} or not isinstance(layers, list) or not layers:
        raise ValueError(f"a Sequential is described by a non-empty list 'layers', got {config!r}")
    return layers
