"""The registry of layer types: how each is written to a model file and rebuilt, which arrays
it holds, and its ``torch.nn`` counterpart for the autograd oracle.

A layer type registers itself with :func:`register_layer` in its own file and declares:

- ``config()``: the constructor arguments that rebuild it (JSON-ready); a container's
  holds its children's specs, and its ``from_config`` builds them;
- ``array_shapes(**config)`` (a classmethod): the shape of every parameter and buffer, by
  name, computed from the config alone, so a model file is checked before anything is
  allocated;
- ``torch_module()``: the matching ``torch.nn`` module, without weights.

Nothing else in handgrad lists layer types: model files, the oracle, the presets and the
command line all ask the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "LAYER_TYPES",
    "activation",
    "activation_names",
    "build_layer",
    "layer_spec",
    "register_layer",
    "registered_type",
    "spec_shapes",
    "torch_counterpart",
]

LAYER_TYPES: dict[str, type] = {}
_ACTIVATIONS: dict[str, type] = {}

T = TypeVar("T", bound=type)


def register_layer(cls: T) -> T:
    """Class decorator: make ``cls`` a layer type that model files can hold. A class with an
    ``activation_name`` is also offered by that name to ``mlp`` and the command line.

    Examples
    --------
    >>> from handgrad.nn import Module, register_layer
    >>> from handgrad.nn.registry import LAYER_TYPES
    >>> @register_layer
    ... class Negate(Module):
    ...     def forward(self, x):
    ...         return -x
    ...     def backward(self, dy):
    ...         return -dy  # dL/dx = -dL/dy
    >>> LAYER_TYPES["Negate"] is Negate
    True
    >>> del LAYER_TYPES["Negate"]
    """
    name = cls.__name__
    known = LAYER_TYPES.get(name)
    redefined = known is not None and (known.__module__, known.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )  # the same class defined again (a module reloaded, a notebook cell run twice)
    if known is not None and known is not cls and not redefined:
        raise ValueError(
            f"a layer type named {name!r} is registered already ({LAYER_TYPES[name]!r}); "
            "give the new one another name"
        )
    LAYER_TYPES[name] = cls
    short = getattr(cls, "activation_name", None)
    if short:
        _ACTIVATIONS[short] = cls
    return cls


def activation_names() -> tuple[str, ...]:
    """The names of the registered activations, sorted ('relu', 'sigmoid', 'tanh', ...)."""
    return tuple(sorted(_ACTIVATIONS))


def activation(name: str) -> type:
    """The activation class registered as ``name``."""
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {', '.join(map(repr, activation_names()))}, got {name!r}"
        )
    return _ACTIVATIONS[name]


def _registered_type(layer: Any, what: str) -> str:
    name = type(layer).__name__
    if LAYER_TYPES.get(name) is not type(layer):
        raise TypeError(
            f"{what} ({name}) is not a registered handgrad layer type, so it cannot be "
            f"{'saved' if what.startswith('layer') else 'matched'}: model files hold the types "
            f"{', '.join(sorted(LAYER_TYPES))}; register your own with register_layer"
        )
    return name


def layer_spec(layer: Any, where: str = "layer") -> dict[str, Any]:
    """``{"type": name, **config}``: what a model file stores to rebuild ``layer``.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.registry import layer_spec
    >>> layer_spec(hg.Linear(4, 3))
    {'type': 'Linear', 'in_features': 4, 'out_features': 3, 'bias': True}
    >>> layer_spec(hg.Sequential(hg.Tanh()))
    {'type': 'Sequential', 'layers': [{'type': 'Tanh'}]}
    """
    return {"type": _registered_type(layer, where), **layer.config()}


def _split(spec: Any, where: str) -> tuple[type, dict[str, Any]]:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("type"), str):
        raise ValueError(f"{where} is not a layer description {{'type': ..., ...}}: {spec!r}")
    cls = LAYER_TYPES.get(spec["type"])
    if cls is None:
        raise ValueError(
            f"{where} has type {spec['type']!r}, which this handgrad does not know (it knows "
            f"{', '.join(sorted(LAYER_TYPES))})"
        )
    return cls, {k: v for k, v in spec.items() if k != "type"}


def build_layer(spec: Mapping[str, Any], where: str = "layer") -> Any:
    """The layer that ``spec`` (from :func:`layer_spec`) describes, with fresh weights on
    NumPy in float64 (move it with ``.to``).

    Examples
    --------
    >>> from handgrad.nn.registry import build_layer
    >>> build_layer({"type": "Linear", "in_features": 4, "out_features": 3, "bias": False})
    Linear(in_features=4, out_features=3, bias=False)
    """
    cls, config = _split(spec, where)
    from_config = getattr(cls, "from_config", None)
    try:
        return from_config(config) if from_config is not None else cls(**config)
    except TypeError as err:
        raise ValueError(f"{where} ({spec['type']}) has options it does not take: {err}") from None


def spec_shapes(spec: Mapping[str, Any], where: str = "layer") -> dict[str, tuple[int, ...]]:
    """The shape of every parameter and buffer that ``spec`` describes, by PyTorch name,
    computed without building anything.

    Examples
    --------
    >>> from handgrad.nn.registry import spec_shapes
    >>> spec_shapes({"type": "Sequential", "layers": [
    ...     {"type": "Linear", "in_features": 4, "out_features": 3, "bias": True},
    ...     {"type": "Tanh"}]})
    {'0.weight': (3, 4), '0.bias': (3,)}
    """
    cls, config = _split(spec, where)
    try:
        return dict(cls.array_shapes(**config))
    except TypeError as err:
        raise ValueError(f"{where} ({spec['type']}) has options it does not take: {err}") from None


def registered_type(layer: Any) -> type | None:
    """The registered layer type that ``layer`` is, or derives from; None if none."""
    for cls in type(layer).__mro__:
        if LAYER_TYPES.get(cls.__name__) is cls:
            return cls
    return None


def torch_counterpart(layer: Any) -> Any:
    """The ``torch.nn`` module that computes what ``layer`` computes, without weights.

    A subclass of a registered type is matched to that type (so a subclass with a slipped
    backward shows up as a disagreement with autograd).
    """
    if registered_type(layer) is not None:
        return layer.torch_module()
    raise TypeError(
        f"{type(layer).__name__} has no PyTorch counterpart here: it is not a handgrad layer "
        "type; check your own layers with handgrad.check_layer"
    )
