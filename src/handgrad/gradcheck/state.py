"""What a gradient check must not change, and what it must not share.

- :class:`Snapshot` records the state of a tree of layers (every attribute, the dicts,
  lists and tuples they hold, arrays by content, random generators by state) and puts it
  back after the check: parameters, buffers, the training flag, a running mean kept as a
  plain attribute. Only ``grads`` is left as the check's own backward pass wrote it.
- :func:`fresh` copies an array, so that the user's code never holds one of the check's.
- :func:`promoted_copy` copies a layer with every low-precision floating array made
  float64, tied arrays kept tied.
- :func:`untracked` switches off PyTorch's autograd while the check runs, so that
  parameters with ``requires_grad=True`` can be perturbed in place.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
import types
from collections.abc import Callable, Iterator
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import namespace

__all__ = ["Snapshot", "fresh", "is_array", "promoted_copy", "untracked"]

_SKIPPED = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)
_SKIPPED_METHODS = (types.MethodType, staticmethod, classmethod, property)


def is_array(value: Any) -> bool:
    """True for an array of any array-API library (not a Python or NumPy scalar).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.state import is_array
    >>> is_array(np.zeros(2)), is_array(np.float64(1.0)), is_array(1.0)
    (True, False, False)
    """
    return array_api_compat.is_array_api_obj(value) and not isinstance(value, np.generic)


def fresh(a: Any) -> Any:
    """A copy of array ``a`` in its own library, dtype and device, detached from autograd.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.state import fresh
    >>> a = np.arange(3.0)
    >>> b = fresh(a)
    >>> b[0] = 9.0
    >>> a.tolist(), b.tolist()
    ([0.0, 1.0, 2.0], [9.0, 1.0, 2.0])
    """
    if array_api_compat.is_torch_array(a):
        return a.detach().clone()
    return namespace(a).asarray(a, copy=True)


@contextlib.contextmanager
def untracked() -> Iterator[None]:
    """Run the block with PyTorch's autograd off, when PyTorch is loaded.

    Examples
    --------
    >>> import torch
    >>> from handgrad.gradcheck.state import untracked
    >>> w = torch.zeros(2, requires_grad=True)
    >>> with untracked():
    ...     w[0] = 1.0  # in place on a leaf that requires grad: allowed here
    >>> w.tolist()
    [1.0, 0.0]
    """
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    with torch.no_grad():
        yield


def _same(a: Any, b: Any) -> bool:
    """True when arrays ``a`` and ``b`` hold the same values (NaN equal to NaN)."""
    if tuple(a.shape) != tuple(b.shape) or a.dtype != b.dtype:
        return False
    if type(a) is np.ndarray and type(b) is np.ndarray:
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    xp = namespace(a)
    return bool(xp.all((a == b) | ((a != a) & (b != b))))


def _generator_state(value: Any) -> tuple[Callable[[], Any], Callable[[Any], None]] | None:
    """How to read and set the state of a random generator, or None for anything else."""
    if isinstance(value, np.random.Generator):
        bits = value.bit_generator
        return (lambda: bits.state), (lambda state: setattr(bits, "state", state))
    if isinstance(value, np.random.RandomState | random.Random):
        getter = value.get_state if isinstance(value, np.random.RandomState) else value.getstate
        setter = value.set_state if isinstance(value, np.random.RandomState) else value.setstate
        return getter, setter
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Generator):
        return value.get_state, value.set_state
    return None


class Snapshot:
    """The state of an object and of everything it holds, to put back later.

    Walks the object's attributes, and the dicts, lists and tuples and other objects they
    hold: arrays are copied by content, random generators by state. :meth:`restore` puts
    every attribute back (the same objects, with their old contents) and removes
    attributes that appeared since. Entries named ``grads`` are not recorded.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.state import Snapshot
    >>> class Norm:
    ...     def __init__(self):
    ...         self.params, self.grads, self.running_mean = {}, {}, np.zeros(2)
    >>> layer = Norm()
    >>> mean = layer.running_mean
    >>> snapshot = Snapshot(layer)
    >>> mean += 1.0  # in place
    >>> layer.running_mean, layer.cache = np.ones((3, 2)), "new"  # rebound, added
    >>> snapshot.restore()
    >>> layer.running_mean is mean, layer.running_mean.tolist(), hasattr(layer, "cache")
    (True, [0.0, 0.0], False)
    """

    def __init__(self, root: Any) -> None:
        self._undo: list[Callable[[], None]] = []
        self._seen: set[int] = set()
        self._keep: list[Any] = []  # the objects recorded, alive while their ids are used
        self._visit(root)

    def restore(self) -> None:
        """Put everything back; contents first, then the bindings that hold them."""
        with untracked():
            for undo in reversed(self._undo):
                undo()

    def _visit(self, value: Any) -> None:
        if value is None or isinstance(value, bool | int | float | complex | str | bytes):
            return
        if isinstance(value, _SKIPPED + _SKIPPED_METHODS):
            return
        if id(value) in self._seen:
            return
        self._seen.add(id(value))
        self._keep.append(value)
        if is_array(value):
            self._record_array(value)
        elif (state := _generator_state(value)) is not None:
            getter, setter = state
            saved = copy.deepcopy(getter())
            self._undo.append(lambda: setter(saved))
        elif isinstance(value, dict):
            self._record_dict(value)
        elif isinstance(value, list):
            saved_list = list(value)
            self._undo.append(lambda: value.__setitem__(slice(None), saved_list))
            for item in saved_list:
                self._visit(item)
        elif isinstance(value, tuple):
            for item in value:
                self._visit(item)
        elif isinstance(getattr(value, "__dict__", None), dict):
            self._record_dict(vars(value))

    def _record_dict(self, store: dict) -> None:
        saved = dict(store)

        def undo() -> None:
            for key in [k for k in store if k not in saved]:
                del store[key]
            for key, item in saved.items():
                if store.get(key, _MISSING) is not item:
                    store[key] = item

        self._undo.append(undo)
        for key, item in saved.items():
            if key != "grads":
                self._visit(item)

    def _record_array(self, array: Any) -> None:
        saved = fresh(array)

        def undo() -> None:
            if not _same(array, saved):
                array[...] = saved

        self._undo.append(undo)


_MISSING = object()


def promoted_copy(root: Any) -> Any:
    """A copy of ``root`` (a layer or a tree of them) in which every float32 or float16
    array is float64; other arrays are copied, tied arrays stay tied, and modules,
    functions and numbers are shared.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.gradcheck.state import promoted_copy
    >>> class Scale:
    ...     def __init__(self):
    ...         self.w = np.ones(2, dtype=np.float32)
    ...         self.params, self.grads = {"w": self.w}, {}
    >>> layer = Scale()
    >>> twin = promoted_copy(layer)
    >>> twin.w.dtype.name, twin.params["w"] is twin.w, layer.w.dtype.name
    ('float64', True, 'float32')
    """
    done: dict[int, Any] = {}
    with untracked():
        return _promote(root, done, [])


def _promote(value: Any, done: dict[int, Any], keep: list[Any]) -> Any:
    if value is None or isinstance(value, bool | int | float | complex | str | bytes):
        return value
    if isinstance(value, _SKIPPED + _SKIPPED_METHODS):
        return value
    if id(value) in done:
        return done[id(value)]
    keep.append(value)
    if is_array(value):
        xp = namespace(value)
        low = xp.isdtype(value.dtype, "real floating") and value.dtype != xp.float64
        done[id(value)] = xp.astype(value, xp.float64) if low else fresh(value)
        return done[id(value)]
    if _generator_state(value) is not None:
        done[id(value)] = value  # shared: the snapshot of the original puts its state back
        return value
    if isinstance(value, dict):
        twin: Any = type(value)() if type(value) is not dict else {}
        done[id(value)] = twin
        for key, item in value.items():
            twin[key] = _promote(item, done, keep)
        return twin
    if isinstance(value, list):
        twin = []
        done[id(value)] = twin
        twin.extend(_promote(item, done, keep) for item in value)
        return twin
    if isinstance(value, tuple):
        items = [_promote(item, done, keep) for item in value]
        done[id(value)] = tuple(items) if type(value) is tuple else type(value)(*items)
        return done[id(value)]
    if isinstance(getattr(value, "__dict__", None), dict):
        twin = copy.copy(value)
        done[id(value)] = twin
        for key, item in list(vars(value).items()):
            vars(twin)[key] = _promote(item, done, keep)
        return twin
    return value
