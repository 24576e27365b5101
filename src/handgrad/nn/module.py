"""The base of handgrad's layers and containers: parameters, gradients and buffers by PyTorch
name, modes, ``state_dict`` and moves between array libraries.

A layer keeps its own arrays in three dicts: ``params`` (trained), ``grads`` (written by
``backward``) and ``buffers`` (saved, not trained: running statistics). A container's are
live views over its children, named ``"<child>.<name>"``; an array held by two layers (tied
weights) is listed once, under its first name, and its gradient is the sum of both uses.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import array_api_compat

from handgrad.core.arrays import convert, float_dtype_name, get_namespace, namespace, resolve_dtype
from handgrad.nn.protocol import children_of

__all__ = ["ArrayView", "Module", "slots"]

STORES = ("params", "grads", "buffers")


def slots(model: Any, store: str = "params") -> dict[str, list[tuple[Any, str]]]:
    """``store`` arrays of a tree of layers by PyTorch name, each with the places that hold
    it, ``[(layer, key), ...]``: one place, or several for an array tied across layers.
    A container holds arrays only through its children (its own ``params`` is a view).

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.nn.module import slots
    >>> first, second = hg.Linear(3, 3, rng=0), hg.Linear(3, 3, rng=1)
    >>> second.params["weight"] = first.params["weight"]  # tie the two weights
    >>> {name: len(places) for name, places in slots(hg.Sequential(first, second)).items()}
    {'0.weight': 2, '0.bias': 1, '1.bias': 1}
    """
    found: dict[str, list[tuple[Any, str]]] = {}
    first_name: dict[int, str] = {}

    def visit(layer: Any, prefix: str) -> None:
        children = children_of(layer)
        if children:
            for name, child in children.items():
                visit(child, f"{prefix}{name}.")
            return
        own = getattr(layer, store, None) if store != "grads" else getattr(layer, "params", {})
        for key, array in (own or {}).items():
            name = first_name.setdefault(id(array), prefix + key)
            found.setdefault(name, []).append((layer, key))

    visit(model, "")
    return found


class ArrayView(Mapping):
    """The live ``params``, ``grads`` or ``buffers`` of a tree of layers, by PyTorch name.

    Reading gives the arrays themselves (changing one in place changes the model); setting
    an entry replaces the array in every layer that holds it.
    """

    def __init__(self, root: Any, store: str) -> None:
        self._root, self._store = root, store

    def _slots(self) -> dict[str, list[tuple[Any, str]]]:
        return slots(self._root, self._store)

    def __getitem__(self, name: str) -> Any:
        places = self._slots().get(name)
        if places is None:
            raise KeyError(name)
        if self._store != "grads":
            layer, key = places[0]
            return getattr(layer, self._store)[key]
        values = [layer.grads[key] for layer, key in places]
        total = values[0]
        for value in values[1:]:  # a tied array: the gradients of its uses add up
            total = total + value
        return total

    def __setitem__(self, name: str, value: Any) -> None:
        places = self._slots().get(name)
        if places is None:
            raise KeyError(f"no array named {name!r}; have {sorted(self._slots())}")
        for layer, key in places:
            getattr(layer, self._store)[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._slots())

    def __len__(self) -> int:
        return len(self._slots())

    def __repr__(self) -> str:
        return f"{self._store}({', '.join(self)})"

    def __call__(self) -> dict[str, Any]:
        warnings.warn(
            f"model.{self._store}() is deprecated: model.{self._store} is a live mapping "
            f"now; use model.{self._store} (or dict(model.{self._store}) for a snapshot)",
            DeprecationWarning,
            stacklevel=2,
        )
        return dict(self)


class Module:
    """Base class of handgrad's layers: ``params``, ``grads`` and ``buffers`` dicts, a
    training flag, ``state_dict`` and ``to``. Containers set ``children``.

    Examples
    --------
    >>> import handgrad as hg
    >>> model = hg.Sequential(hg.Linear(3, 2, rng=0), hg.Sequential(hg.Tanh(), hg.Linear(2, 1)))
    >>> list(model.params)  # nested containers, named as torch names them
    ['0.weight', '0.bias', '1.1.weight', '1.1.bias']
    >>> model.eval() is model, model[1].training
    (True, False)
    """

    training = True

    def __init__(self) -> None:
        self.params: Any = {}
        self.grads: Any = {}
        self.buffers: Any = {}
        self.training = True

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def config(self) -> dict[str, Any]:
        """The constructor's arguments that rebuild this layer, JSON-ready (model files)."""
        return {}

    @classmethod
    def array_shapes(cls, **config: Any) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter and buffer of a layer built with ``config``."""
        return {}

    def torch_module(self) -> Any:
        """A ``torch.nn`` module that computes what this layer computes (without weights:
        :func:`handgrad.interop.oracle.to_torch_module` loads them). Needs PyTorch."""
        import torch

        from handgrad.nn.registry import registered_type

        return getattr(torch.nn, registered_type(self).__name__)(**self.config())

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode, here and in every child;
        return ``self``."""
        self.training = bool(mode)
        for child in children_of(self).values():
            if hasattr(child, "train"):
                child.train(mode)
        return self

    def eval(self) -> Module:
        """Set evaluation mode (``train(False)``); return ``self``."""
        return self.train(False)

    def state_dict(self) -> dict[str, Any]:
        """Copies of the parameters and buffers, keyed and shaped as torch's ``state_dict``."""
        arrays = {**slots_arrays(self, "params"), **slots_arrays(self, "buffers")}
        return {k: namespace(v).asarray(v, copy=True) for k, v in arrays.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> Module:
        """Copy ``state`` (arrays of any library, PyTorch tensors included) into the
        parameters and buffers, in place. Keys and shapes must match :meth:`state_dict`'s
        exactly; nothing is changed unless all do. Returns ``self``."""
        own = {**slots_arrays(self, "params"), **slots_arrays(self, "buffers")}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(
                f"state does not fit this model: missing {missing or 'nothing'}, "
                f"unexpected {unexpected or 'nothing'}"
            )
        converted = {}
        for name, mine in own.items():
            value = state[name]
            if not hasattr(value, "shape"):
                raise TypeError(
                    f"state[{name!r}] must be an array (NumPy, PyTorch, or another array-API "
                    f"library) of shape {tuple(mine.shape)}, got {type(value).__name__}"
                )
            if tuple(value.shape) != tuple(mine.shape):
                raise ValueError(
                    f"state[{name!r}] has shape {tuple(value.shape)}, "
                    f"the model needs {tuple(mine.shape)}"
                )
            converted[name] = convert(
                value, namespace(mine), dtype=mine.dtype, device=array_api_compat.device(mine)
            )
        for name, mine in own.items():
            mine[...] = converted[name]
        return self

    def to(self, backend: Any = None, *, dtype: Any = None, device: Any = None) -> Module:
        """Move every array to ``backend``, ``dtype`` (floating arrays only) and ``device``;
        return ``self``. Arrays are replaced (tied ones stay tied), so create optimizers
        after moving a model."""
        moved: dict[int, Any] = {}

        def move(value: Any) -> Any:
            if id(value) not in moved:
                xp = namespace(value) if backend is None else get_namespace(backend)
                floating = namespace(value).isdtype(value.dtype, "real floating")
                target = None
                if floating:
                    target = resolve_dtype(xp, float_dtype_name(value) if dtype is None else dtype)
                moved[id(value)] = convert(value, xp, dtype=target, device=device)
            return moved[id(value)]

        for store in STORES:
            for places in slots(self, store).values():
                for layer, key in places:
                    own = getattr(layer, store)
                    if key in own:
                        own[key] = move(own[key])
        return self


def slots_arrays(model: Any, store: str) -> dict[str, Any]:
    """The ``store`` arrays of a tree of layers by name (tied arrays once)."""
    return {
        name: getattr(places[0][0], store)[places[0][1]]
        for name, places in slots(model, store).items()
    }
