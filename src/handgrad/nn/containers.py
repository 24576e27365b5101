"""Containers: layers that hold layers. ``Sequential`` runs its layers in order forward and in
reverse backward; ``Residual`` adds its input to what its layers make; ``ModuleDict`` holds
layers by name for a model that wires them itself. Each is a layer, so containers nest, and
parameters are named as PyTorch names them (``"0.weight"``, ``"1.2.bias"``,
``"transformer.wte.weight"``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from handgrad.nn.module import ArrayView, Module
from handgrad.nn.protocol import Layer, check_protocol
from handgrad.nn.registry import build_layer, layer_spec, register_layer, spec_shapes

__all__ = ["Container", "ModuleDict", "Residual", "Sequential"]


class Container(Module):
    """Base of the layers that hold layers (``children``, by name): their ``params``,
    ``grads`` and ``buffers`` are live views over the children, by PyTorch name, a tied
    array listed once and its gradients summed.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.containers import Container
    >>> class Pair(Container):  # a container of one's own: children and the wiring
    ...     def __init__(self):
    ...         self.training = True
    ...         self.first, self.second = hg.Linear(2, 2, rng=0), hg.Linear(2, 2, rng=1)
    ...     @property
    ...     def children(self):
    ...         return {"first": self.first, "second": self.second}
    >>> list(Pair().params)
    ['first.weight', 'first.bias', 'second.weight', 'second.bias']
    """

    def __init__(self) -> None:
        self.training = True

    @property
    def children(self) -> dict[str, Layer]:
        """The members by name."""
        raise NotImplementedError

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


@register_layer
class Sequential(Container):
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


@register_layer
class Residual(Container):
    """A residual block: ``y = x + f(x)``, ``f`` its layers run one after the other, named
    ``"0"``, ``"1"``, ... as in a Sequential. ``f``'s output must have ``x``'s shape.

    Backward: ``dL/dx = dL/dy + f'(x)^T dL/dy``, the gradient along the skip path added to
    the one through the layers.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.nn.containers import Residual
    >>> model = hg.Sequential(hg.Linear(3, 4, rng=0), Residual(hg.Tanh(), hg.Linear(4, 4, rng=1)))
    >>> list(model.params)
    ['0.weight', '0.bias', '1.1.weight', '1.1.bias']
    >>> x = np.random.default_rng(0).standard_normal((2, 3))
    >>> block = model[1]
    >>> h = model[0].forward(x)
    >>> bool(np.allclose(block.forward(h), h + block.body.forward(h)))
    True
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        self.body = Sequential(*layers)  # not a ``layers`` list: chain() must not flatten it

    @property
    def children(self) -> dict[str, Layer]:
        """The layers of ``f`` by name: ``"0"``, ``"1"``, ..."""
        return self.body.children

    def __repr__(self) -> str:
        return "Residual" + repr(self.body).removeprefix("Sequential")

    def forward(self, x: Any) -> Any:
        """Return ``x + f(x)``."""
        y = self.body.forward(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(
                f"a Residual's layers must keep the shape of their input {tuple(x.shape)} to "
                f"add it back, got {tuple(y.shape)}"
            )
        return x + y

    def backward(self, dy: Any) -> Any:
        """Overwrite the layers' grads and return dL/dx = dy + (what f passes back)."""
        # dL/dx = dL/dy (the skip path) + f'(x)^T dL/dy (through the layers)
        return dy + self.body.backward(dy)

    def config(self) -> dict[str, Any]:
        """The layers' specs, in order, as a Sequential's."""
        return self.body.config()

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Residual:
        """The Residual that :meth:`config` describes, with fresh weights."""
        return cls(*Sequential.from_config(config).layers)

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """The layers' arrays, named ``"<index>.<name>"``."""
        return Sequential.array_shapes(**config)

    def torch_module(self) -> Any:
        """A ``torch.nn.Sequential`` of the layers' counterparts that adds its input to its
        output (the same parameter names). Needs PyTorch."""
        import torch

        class TorchResidual(torch.nn.Sequential):
            def forward(self, x: Any) -> Any:
                return x + super().forward(x)

        return TorchResidual(*self.body.torch_module())


class ModuleDict(Container):
    """Layers by name, for a model that wires them itself (as ``torch.nn.ModuleDict``): its
    parameters are named ``"<name>.<parameter>"``. It has no forward pass of its own.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.containers import ModuleDict
    >>> parts = ModuleDict(encoder=hg.Linear(4, 2, rng=0), decoder=hg.Linear(2, 4, rng=1))
    >>> list(parts.params)
    ['encoder.weight', 'encoder.bias', 'decoder.weight', 'decoder.bias']
    >>> parts["encoder"].out_features
    2
    """

    def __init__(self, **layers: Layer) -> None:
        super().__init__()
        for name, layer in layers.items():
            check_protocol(layer, f"layer {name!r}")
        self._layers = dict(layers)

    @property
    def children(self) -> dict[str, Layer]:
        """The members by name."""
        return dict(self._layers)

    def __getitem__(self, name: str) -> Layer:
        return self._layers[name]

    def __repr__(self) -> str:
        inner = "".join(
            f"\n  ({name}): " + repr(layer).replace("\n", "\n  ")
            for name, layer in self._layers.items()
        )
        return f"ModuleDict({inner}\n)"

    def forward(self, x: Any) -> Any:
        """Not defined: the model that holds a ModuleDict runs its members."""
        raise TypeError("a ModuleDict holds layers by name and has no forward pass of its own")

    def backward(self, dy: Any) -> Any:
        """Not defined: the model that holds a ModuleDict runs its members."""
        raise TypeError("a ModuleDict holds layers by name and has no backward pass of its own")
