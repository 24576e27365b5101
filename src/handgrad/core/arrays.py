"""Array namespaces: one implementation for NumPy, PyTorch and any array-API library.

handgrad's layers ask their arrays for a namespace (the Python array API standard, through
array-api-compat) and use only what the standard defines, so the same code runs on NumPy
arrays, PyTorch tensors (CPU or CUDA), CuPy arrays and ``array-api-strict``.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "BACKENDS",
    "convert",
    "float_dtype_name",
    "get_namespace",
    "is_floating",
    "namespace",
    "native",
    "resolve_dtype",
    "to_numpy",
]

BACKENDS = ("numpy", "torch", "array_api_strict")
_MODULES = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "array_api_strict": "array_api_strict",
}
_INSTALL_HINTS = {
    "torch": "pip install 'handgrad[torch]'",
    "array_api_strict": "pip install array-api-strict",
}


class _NumPyNamespace:
    """array-api-compat's NumPy namespace, with the calls a training step makes many times
    (sums, maxima, take, count_nonzero) sent straight to NumPy's ufuncs and methods: the
    same results, a few microseconds less each."""

    def __init__(self, base: ModuleType) -> None:
        self._base = base
        self.__name__ = base.__name__

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def __repr__(self) -> str:
        return f"<handgrad's fast route to {self._base.__name__}>"

    def sum(self, x: Any, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Any:
        if dtype is None and x.dtype.kind == "f":
            return np.add.reduce(x, axis=axis, keepdims=keepdims)
        return self._base.sum(x, axis=axis, dtype=dtype, keepdims=keepdims)

    def max(self, x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
        return np.maximum.reduce(x, axis=axis, keepdims=keepdims)

    def take(self, x: Any, indices: Any, /, *, axis: int | None = None) -> Any:
        return x.take(indices, axis=axis)

    def count_nonzero(self, x: Any, /, *, axis: Any = None, keepdims: bool = False) -> Any:
        return np.count_nonzero(x, axis=axis, keepdims=keepdims)


_NUMPY_NAMESPACE = _NumPyNamespace(importlib.import_module("array_api_compat.numpy"))
# array types whose namespace is one module whatever the array (its device, its version of
# the standard): looked up once, then remembered by type, in _BY_TYPE
_ONE_NAMESPACE = frozenset({"torch.Tensor"})
_BY_TYPE: dict[type, Any] = {}


def namespace(*arrays: Any) -> Any:
    """Return the array-API namespace that all ``arrays`` share.

    Raises
    ------
    TypeError
        If the arrays come from different libraries or from none that is known.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.core.arrays import namespace
    >>> namespace(np.zeros(2), np.ones(3)).__name__, namespace(torch.zeros(2)).__name__
    ('array_api_compat.numpy', 'array_api_compat.torch')
    >>> namespace(np.zeros(2), torch.zeros(2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    TypeError: arrays must all come from one array library, got numpy.ndarray, torch.Tensor; ...
    """
    for a in arrays:  # the common case, NumPy, without the ~10 us lookup
        if type(a) is not np.ndarray:
            break
    else:
        return _NUMPY_NAMESPACE
    if len(arrays) == 1 and (known := _BY_TYPE.get(type(arrays[0]))) is not None:
        return known
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as err:
        kinds = sorted({f"{type(a).__module__}.{type(a).__name__}" for a in arrays})
        raise TypeError(
            f"arrays must all come from one array library, got {', '.join(kinds)}; "
            "convert them first (handgrad.core.arrays.convert, or model.to(backend))"
        ) from err
    kind = type(arrays[0])
    if len(arrays) == 1 and f"{kind.__module__}.{kind.__name__}" in _ONE_NAMESPACE:
        _BY_TYPE[kind] = xp
    return xp


# kernels a library has that the standard lacks: the name, and how to get it from the
# library's namespace as a function of the array (last axis for the row-wise ones)
_NATIVE = {
    "array_api_compat.torch": {
        "sigmoid": lambda xp: xp.sigmoid,
        "relu": lambda xp: xp.relu,
        "softmax": lambda xp: functools.partial(xp.softmax, dim=-1),
        "log_softmax": lambda xp: functools.partial(xp.log_softmax, dim=-1),
        "take_rows": lambda xp: functools.partial(xp.index_select, dim=0),
        "addmm": lambda xp: xp.addmm,  # addmm(b, x, w): b + x @ w, one BLAS call
        "sigmoid_backward": lambda xp: importlib.import_module("torch").ops.aten.sigmoid_backward,
        # add_scaled(arrays, others, alpha): arrays[i] += alpha * others[i], one call for all
        "add_scaled": lambda xp: importlib.import_module("torch")._foreach_add_,
    },
}


@functools.cache
def native(xp: Any, name: str) -> Any:
    """The library's own kernel for ``name`` when ``xp`` is torch's namespace, else None:
    NumPy and array-api-strict then use the standard's formulas. One kernel instead of
    several calls; the same values to rounding. The names: ``sigmoid``, ``relu``, and
    ``softmax`` and ``log_softmax`` over the last axis, of ``x``; ``take_rows(x, index=)``;
    ``addmm(b, x, w)`` (``b + x @ w``, x 2-D); ``sigmoid_backward(dy, y)`` (``dy y (1 - y)``);
    ``add_scaled(arrays, others, alpha=)`` (``arrays[i] += alpha * others[i]`` in place, every
    array in one call).

    Examples
    --------
    >>> import torch
    >>> from handgrad.core.arrays import get_namespace, native
    >>> native(get_namespace("numpy"), "sigmoid") is None
    True
    >>> sigmoid = native(get_namespace("torch"), "sigmoid")
    >>> sigmoid(torch.tensor([0.0, 2.0], dtype=torch.float64)).tolist()
    [0.5, 0.8807970779778823]
    """
    getter = _NATIVE.get(getattr(xp, "__name__", ""), {}).get(name)
    return None if getter is None else getter(xp)


def get_namespace(backend: Any) -> Any:
    """Return the namespace named ``backend`` ('numpy', 'torch', 'array_api_strict').

    A namespace (for example one returned by :func:`namespace`) is returned as is.

    Examples
    --------
    >>> from handgrad.core.arrays import get_namespace
    >>> xp = get_namespace("numpy")
    >>> xp.__name__, xp.asarray([1.0, 2.0]).shape
    ('array_api_compat.numpy', (2,))
    >>> get_namespace(xp) is xp
    True
    """
    if isinstance(backend, ModuleType | _NumPyNamespace):
        return backend if backend is not _NUMPY_NAMESPACE._base else _NUMPY_NAMESPACE
    if backend == "numpy":
        return _NUMPY_NAMESPACE
    if backend not in _MODULES:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        return importlib.import_module(_MODULES[backend])
    except ImportError as err:
        raise ImportError(
            f"backend {backend!r} needs a library that is not installed: "
            f"{_INSTALL_HINTS.get(backend, backend)}"
        ) from err


def resolve_dtype(xp: ModuleType, dtype: Any) -> Any:
    """Return ``xp``'s floating dtype for a name ('float64', 'float32') or a dtype object.

    Examples
    --------
    >>> from handgrad.core.arrays import get_namespace, resolve_dtype
    >>> resolve_dtype(get_namespace("torch"), "float32")
    torch.float32
    >>> resolve_dtype(get_namespace("numpy"), "float64").__name__
    'float64'
    """
    if isinstance(dtype, str):
        if dtype not in ("float64", "float32", "float16"):
            raise ValueError(f"dtype must be 'float64', 'float32' or 'float16', got {dtype!r}")
        return getattr(xp, dtype)
    return dtype


def float_dtype_name(x: Any) -> str:
    """Return 'float64', 'float32' or 'float16' for a floating array of any library.

    Examples
    --------
    >>> import numpy as np
    >>> import torch
    >>> from handgrad.core.arrays import float_dtype_name
    >>> float_dtype_name(np.zeros(2)), float_dtype_name(torch.zeros(2, dtype=torch.float16))
    ('float64', 'float16')
    """
    xp = namespace(x)
    for name in ("float64", "float32", "float16"):
        if x.dtype == getattr(xp, name):
            return name
    raise TypeError(f"expected a float64, float32 or float16 array, got dtype {x.dtype}")


def is_floating(x: Any) -> bool:
    """True if ``x`` has a real floating-point dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import is_floating
    >>> is_floating(np.zeros(2, dtype=np.float32)), is_floating(np.arange(2))
    (True, False)
    """
    return namespace(x).isdtype(x.dtype, "real floating")


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a NumPy array (a view where the library allows it).

    Examples
    --------
    >>> import torch
    >>> from handgrad.core.arrays import to_numpy
    >>> a = to_numpy(torch.arange(3.0))
    >>> type(a).__name__, a.dtype.name, a.tolist()
    ('ndarray', 'float32', [0.0, 1.0, 2.0])
    """
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_torch_array(x):
        return x.detach().cpu().numpy()
    if array_api_compat.is_cupy_array(x):
        return x.get()
    try:
        return np.from_dlpack(x)
    except (TypeError, AttributeError, BufferError, RuntimeError):
        return np.asarray(x)


def convert(x: Any, xp: ModuleType | str, *, dtype: Any = None, device: Any = None) -> Any:
    """Return a copy of ``x`` in namespace ``xp``, with ``dtype`` and ``device`` if given.

    Crossing libraries goes through NumPy on the CPU; within a library it is one copy.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import convert
    >>> t = convert(np.arange(3.0), "torch", dtype="float32")
    >>> type(t).__name__, t.dtype, t.tolist()
    ('Tensor', torch.float32, [0.0, 1.0, 2.0])
    """
    xp = get_namespace(xp)
    dtype = None if dtype is None else resolve_dtype(xp, dtype)
    if not _same_library(x, xp):
        # a NumPy copy of our own, which the new array may share: torch.asarray(copy=True)
        # refuses a 0-d array whose dtype changes
        return xp.asarray(
            np.array(to_numpy(x) if hasattr(x, "shape") else x), dtype=dtype, device=device
        )
    return xp.asarray(x, dtype=dtype, device=device, copy=True)


def _same_library(x: Any, xp: ModuleType) -> bool:
    try:
        return namespace(x) is xp
    except TypeError:
        return False
