"""A handgrad layer as a PyTorch autograd Function, so that its hand-written backward runs
inside a PyTorch model and can be checked by ``torch.autograd.gradcheck``. Needs the
``torch`` extra.

``as_function(layer)`` returns ``f(x, *params)``: the parameters are inputs of the function,
in the order and with the names of ``named_layers`` (``"0.weight"``, ``"0.bias"``, ... for a
Sequential). Each call runs the layer *with* those tensors: they take the place of the
layer's own arrays in ``layer.params`` for the call and the originals (the same objects,
unchanged) are put back after it. ``layer.grads`` is left as the last backward wrote it.
``as_module(layer)`` holds the parameters as ``nn.Parameter``s, named with ``_`` for ``.``
(``"0_weight"``), which PyTorch does not allow in a parameter's name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import array_api_compat

from handgrad.core.arrays import get_namespace, namespace, to_numpy
from handgrad.nn.protocol import named_layers

try:
    import torch
    from torch.autograd.function import once_differentiable
except ImportError as err:
    raise ImportError("handgrad.torch needs PyTorch: pip install 'handgrad[torch]'") from err

__all__ = ["LayerFunction", "LayerModule", "as_function", "as_module"]


def _tensor(a: Any, dtype: Any = None, device: Any = None) -> torch.Tensor:
    """A new torch tensor holding a copy of ``a``, an array of any library."""
    if isinstance(a, torch.Tensor):
        return a.detach().to(dtype=dtype, device=device, copy=True)
    return torch.tensor(to_numpy(a), dtype=dtype, device=device)


class LayerFunction:
    """``f(x, *params) -> y`` computed by a handgrad layer; see :func:`as_function`.

    Examples
    --------
    >>> import torch
    >>> import handgrad as hg
    >>> from handgrad.torch import LayerFunction
    >>> f = LayerFunction(hg.Linear(3, 2, rng=0))
    >>> x = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    >>> weight, bias = f.parameters()
    >>> f(x, weight, bias).sum().backward()  # runs the layer's hand-written backward
    >>> f.names, x.grad.shape, bias.grad.tolist()
    (('weight', 'bias'), torch.Size([4, 3]), [4.0, 4.0])
    """

    def __init__(self, layer: Any, backend: str | None = None) -> None:
        pairs = named_layers(layer)  # TypeError, naming what is missing, for a non-layer
        owners = [sub for _, sub in pairs if sub.params]
        if len({id(sub) for sub in owners}) != len(owners):
            raise ValueError(
                "the model holds a layer with parameters more than once, and its grads would "
                "be overwritten; use separate layers, or call one as_function twice instead"
            )
        self.layer = layer
        self.names = tuple(prefix + name for prefix, sub in pairs for name in sub.params)
        self._slots = [(sub, name) for _, sub in pairs for name in sub.params]
        if backend is not None:
            self.xp = get_namespace(backend)
        else:
            own = [sub.params[name] for sub, name in self._slots]
            self.xp = namespace(*own) if own else get_namespace("numpy")

    def __repr__(self) -> str:
        return f"as_function({self.layer!r})"

    def __call__(self, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(
                f"x must be a floating-point torch.Tensor, got {type(x).__name__} "
                f"{getattr(x, 'dtype', '')}".rstrip()
            )
        if len(params) != len(self.names):
            raise TypeError(
                f"{self!r} takes x and {len(self.names)} parameter tensors "
                f"({', '.join(self.names) or 'none'}), got {len(params)}"
            )
        for name, value, (sub, key) in zip(self.names, params, self._slots, strict=True):
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"parameter {name!r} must be a torch.Tensor, got {type(value)}")
            if tuple(value.shape) != tuple(sub.params[key].shape):
                raise ValueError(
                    f"parameter {name!r} must have shape {tuple(sub.params[key].shape)}, "
                    f"got {tuple(value.shape)}"
                )
        return _LayerBridge.apply(self, x, *params)

    def parameters(self, dtype: Any = None, requires_grad: bool = True) -> tuple[torch.Tensor, ...]:
        """Copies of the layer's current parameters as leaf tensors, in :attr:`names` order
        (``dtype`` None keeps each parameter's own)."""
        return tuple(
            _tensor(sub.params[name], dtype).requires_grad_(requires_grad)
            for sub, name in self._slots
        )

    def _to_layer(self, t: torch.Tensor) -> Any:
        """``t`` as an array of the library the layer computes in (a view where possible)."""
        t = t.detach()
        return t if array_api_compat.is_torch_namespace(self.xp) else self.xp.asarray(to_numpy(t))

    @contextmanager
    def _using(self, params: Sequence[torch.Tensor]) -> Iterator[None]:
        """Run the layer with ``params`` in place of its own; put its own back afterwards."""
        own = [sub.params[name] for sub, name in self._slots]
        try:
            for (sub, name), value in zip(self._slots, params, strict=True):
                sub.params[name] = self._to_layer(value)
            yield
        finally:
            for (sub, name), value in zip(self._slots, own, strict=True):
                sub.params[name] = value


class _LayerBridge(torch.autograd.Function):
    """The autograd Function behind :class:`LayerFunction`: the layer's forward and backward."""

    @staticmethod
    def forward(ctx: Any, fn: LayerFunction, x: torch.Tensor, *params: torch.Tensor) -> Any:
        ctx.fn = fn
        ctx.save_for_backward(x, *params)
        with fn._using(params):
            return _tensor(fn.layer.forward(fn._to_layer(x)), x.dtype, x.device)

    @staticmethod
    @once_differentiable  # the hand-written backward is not itself differentiable
    def backward(ctx: Any, dy: torch.Tensor) -> tuple[Any, ...]:
        fn = ctx.fn
        x, *params = ctx.saved_tensors
        with fn._using(params):
            # The layer keeps one forward cache, and it may belong to a later call by now
            # (gradcheck's perturbed forwards, or a second use of the layer in the graph):
            # rebuild this call's cache from its saved inputs before the backward.
            fn.layer.forward(fn._to_layer(x))
            dx = fn.layer.backward(fn._to_layer(dy))
            grads = []
            for name, (sub, key), p in zip(fn.names, fn._slots, params, strict=True):
                if key not in sub.grads:
                    raise RuntimeError(f"{fn.layer!r}.backward did not write grads[{name!r}]")
                grads.append(_tensor(sub.grads[key], p.dtype, p.device))
        return None, _tensor(dx, x.dtype, x.device), *grads


def as_function(layer: Any, *, backend: str | None = None) -> LayerFunction:
    """Wrap a layer (anything with the layer protocol, a Sequential too) as an autograd
    function ``f(x, *params) -> y`` whose backward is the layer's own.

    Parameters
    ----------
    layer : Layer or Sequential
        The layer; its ``params`` are not changed by calls, its ``grads`` are overwritten.
    backend : {'numpy', 'torch', 'array_api_strict'}, optional
        Library the layer computes in during a call; by default that of its parameters
        (NumPy for a layer without any). Tensors go to NumPy by ``detach().cpu().numpy()``
        and results come back with the input's dtype and device.

    Returns
    -------
    LayerFunction
        ``f(x, *params)``, with ``f.names`` the parameter names and ``f.parameters()``
        leaf copies of the layer's parameters. Not twice differentiable.

    Examples
    --------
    >>> import torch
    >>> import handgrad as hg
    >>> from handgrad.torch import as_function
    >>> f = as_function(hg.Linear(4, 3, rng=0))
    >>> f.names
    ('weight', 'bias')
    >>> x = torch.randn(2, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> torch.autograd.gradcheck(f, (x.requires_grad_(), *f.parameters()))
    True
    """
    return LayerFunction(layer, backend)


class LayerModule(torch.nn.Module):
    """A layer as a ``torch.nn.Module`` with its own ``nn.Parameter``s; see :func:`as_module`.

    Examples
    --------
    >>> import torch
    >>> import handgrad as hg
    >>> from handgrad.torch import LayerModule
    >>> module = LayerModule(hg.mlp([3, 4, 2], rng=0))
    >>> start = module.get_parameter("2_bias").detach().clone()
    >>> module(torch.ones(5, 3, dtype=torch.float64)).pow(2).sum().backward()
    >>> torch.optim.SGD(module.parameters(), lr=0.1).step()  # torch.optim trains it
    >>> module.param_names["2_bias"], bool(torch.equal(module.get_parameter("2_bias"), start))
    ('2.bias', False)
    """

    def __init__(self, layer: Any, dtype: Any = None, backend: str | None = None) -> None:
        super().__init__()
        self.function = as_function(layer, backend=backend)
        self.param_names = {n.replace(".", "_"): n for n in self.function.names}
        if len(self.param_names) != len(self.function.names):
            raise ValueError(
                f"parameter names {self.function.names} collide once '.' becomes '_'; "
                "rename the layer's parameters"
            )
        for name, value in zip(self.param_names, self.function.parameters(dtype), strict=True):
            self.register_parameter(name, torch.nn.Parameter(value))

    def extra_repr(self) -> str:
        return repr(self.function.layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x, *(getattr(self, name) for name in self.param_names))


def as_module(layer: Any, *, dtype: Any = None, backend: str | None = None) -> LayerModule:
    """Wrap a layer as a ``torch.nn.Module`` that ``torch.optim`` can train.

    The ``nn.Parameter``s start as copies of the layer's parameters, in ``dtype`` (default:
    the layer's own, float64 for handgrad's layers), named with ``_`` for ``.`` as PyTorch
    requires (``"0.weight"`` -> ``"0_weight"``; ``module.param_names`` maps them back).
    Training changes the module's parameters, never the layer's.

    Examples
    --------
    >>> import torch
    >>> import handgrad as hg
    >>> from handgrad.torch import as_module
    >>> module = as_module(hg.mlp([4, 3, 2], rng=0))
    >>> [name for name, _ in module.named_parameters()]
    ['0_weight', '0_bias', '2_weight', '2_bias']
    >>> module(torch.ones(5, 4, dtype=torch.float64)).shape
    torch.Size([5, 2])
    """
    return LayerModule(layer, dtype, backend)
