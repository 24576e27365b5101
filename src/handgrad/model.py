"""Sequential: layers run in order forward and in reverse backward, with parameters named as
PyTorch's ``nn.Sequential`` names them (``"0.weight"``, ``"0.bias"``, ``"2.weight"``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import array_api_compat

from handgrad.backend import convert, float_dtype_name, get_namespace, namespace, resolve_dtype
from handgrad.layers import Layer

__all__ = ["Sequential", "named_layers"]


def _check_layer(layer: Any, where: str) -> None:
    missing = [m for m in ("params", "grads", "forward", "backward") if not hasattr(layer, m)]
    if missing:
        raise TypeError(
            f"{where} ({type(layer).__name__}) does not follow the layer protocol: it lacks "
            f"{', '.join(missing)} (see handgrad.layers.Layer)"
        )
    for member in ("params", "grads"):
        if not isinstance(getattr(layer, member), dict):
            raise TypeError(
                f"{where} ({type(layer).__name__}).{member} must be a dict of name -> array, "
                f"got {type(getattr(layer, member)).__name__}"
            )


def named_layers(model: Any) -> list[tuple[str, Layer]]:
    """Return ``(prefix, layer)`` pairs: ``("0.", layer0), ...`` for a Sequential, or
    ``("", model)`` for a single layer, so that ``prefix + name`` names each parameter.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.model import named_layers
    >>> [(prefix, type(layer).__name__) for prefix, layer in named_layers(hg.mlp([4, 3, 2]))]
    [('0.', 'Linear'), ('1.', 'Sigmoid'), ('2.', 'Linear')]
    >>> [prefix + name for prefix, layer in named_layers(hg.Linear(4, 3)) for name in layer.params]
    ['weight', 'bias']
    """
    if isinstance(model, Sequential):
        return [(f"{i}.", layer) for i, layer in enumerate(model.layers)]
    _check_layer(model, "model")
    return [("", model)]


class Sequential:
    """A chain of layers: ``forward`` runs them in order, ``backward`` in reverse.

    Any object that follows the layer protocol (:class:`handgrad.layers.Layer`) can be a
    member, a user's own class included.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> model = hg.Sequential(hg.Linear(4, 3, rng=0), hg.Tanh(), hg.Linear(3, 2, rng=1))
    >>> list(model.params())  # named as torch.nn.Sequential names them
    ['0.weight', '0.bias', '2.weight', '2.bias']
    >>> x = np.random.default_rng(0).standard_normal((5, 4))
    >>> model.forward(x).shape
    (5, 2)
    >>> model.backward(np.ones((5, 2))).shape  # returns dL/dx and fills every layer's grads
    (5, 4)
    >>> model.grads()["0.weight"].shape
    (3, 4)
    """

    def __init__(self, *layers: Layer) -> None:
        if not layers:
            raise ValueError("Sequential needs at least one layer, got none")
        for i, layer in enumerate(layers):
            _check_layer(layer, f"layer {i}")
        self.layers = list(layers)

    def __repr__(self) -> str:
        inner = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
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

    def params(self) -> dict[str, Any]:
        """Live parameter arrays by PyTorch name; changing one changes the model."""
        return {p + k: v for p, layer in named_layers(self) for k, v in layer.params.items()}

    def grads(self) -> dict[str, Any]:
        """Gradients from the last ``backward``, keyed as :meth:`params`."""
        return {p + k: v for p, layer in named_layers(self) for k, v in layer.grads.items()}

    def state_dict(self) -> dict[str, Any]:
        """Copies of the parameters, keyed and shaped as ``torch.nn.Sequential.state_dict()``."""
        return {k: namespace(v).asarray(v, copy=True) for k, v in self.params().items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (arrays of any library, PyTorch tensors included) into the model.

        Keys and shapes must match :meth:`params` exactly; nothing is changed unless all do.
        """
        params = self.params()
        missing = sorted(set(params) - set(state))
        unexpected = sorted(set(state) - set(params))
        if missing or unexpected:
            raise KeyError(
                f"state does not fit this model: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        converted = {}
        for name, param in params.items():
            value = state[name]
            if not hasattr(value, "shape"):
                raise TypeError(
                    f"state[{name!r}] must be an array (NumPy, PyTorch, or another array-API "
                    f"library) of shape {tuple(param.shape)}, got {type(value).__name__}"
                )
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"state[{name!r}] has shape {tuple(value.shape)}, "
                    f"the model needs {tuple(param.shape)}"
                )
            converted[name] = convert(
                value,
                namespace(param),
                dtype=param.dtype,
                device=array_api_compat.device(param),
            )
        for name, param in params.items():
            param[...] = converted[name]

    def to(self, backend: Any = None, *, dtype: Any = None, device: Any = None) -> Sequential:
        """Move every parameter to ``backend``, ``dtype`` and ``device``; return ``self``.

        The arrays are replaced, so create optimizers after moving a model.
        """
        for _, layer in named_layers(self):
            for store in (layer.params, layer.grads):
                for name, value in store.items():
                    xp = namespace(value) if backend is None else get_namespace(backend)
                    target = resolve_dtype(xp, float_dtype_name(value) if dtype is None else dtype)
                    store[name] = convert(value, xp, dtype=target, device=device)
        return self
