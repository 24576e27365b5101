"""Recurrent layers over (batch, time, features), as ``torch.nn.RNN``, ``LSTM`` and ``GRU``
with ``batch_first=True``: torch's parameter names (``weight_ih_l0``, ...) and gate order
(LSTM: input, forget, cell, output; GRU: reset, update, new), so weights move both ways.
Backpropagation through time is written out step by step.

Each layer returns the top layer's hidden state at every step, (batch, time, hidden_size),
from a zero initial state, as torch's first output does."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.random import make_rng
from handgrad.core.validation import Options, check_positive_int
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_input, check_upstream
from handgrad.nn.registry import register_layer, registered_type

__all__ = ["GRU", "LSTM", "RNN"]

NONLINEARITIES = Options(("tanh", "relu"))


def _sigmoid(xp: Any, a: Any) -> Any:
    e = xp.exp(-xp.abs(a))  # in (0, 1]: never overflows
    return xp.where(a >= 0, 1.0, e) / (1 + e)


class _Recurrent(Module):
    """The loop over time and layers, the parameters and the weight gradients; a subclass
    writes one step forward (``_step``) and back (``_step_back``)."""

    broadcasts = True  # takes stacked copies, (..., batch, time, features), in one call
    gates = 1  # blocks of hidden_size rows in each weight, in torch's order

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        *,
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(input_size, hidden_size, num_layers, bias)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        self.num_layers, self.bias = int(num_layers), bool(bias)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        gen, bound = make_rng(rng), 1.0 / math.sqrt(self.hidden_size)
        for name, shape in shapes.items():  # torch's U(-1/sqrt(H), 1/sqrt(H)) for all
            value = gen.uniform(-bound, bound, size=shape)
            self.params[name] = xp.asarray(value, dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self._caches: list[tuple] = []
        self._y = None

    @classmethod
    def array_shapes(
        cls,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        **options: Any,
    ) -> dict[str, tuple[int, ...]]:
        """Per layer ``l``: ``weight_ih_l{l}`` (G H, in), ``weight_hh_l{l}`` (G H, H) and,
        with ``bias``, ``bias_ih_l{l}`` and ``bias_hh_l{l}`` (G H,), G the gate count."""
        n_in = check_positive_int(input_size, "input_size")
        h = check_positive_int(hidden_size, "hidden_size")
        rows = cls.gates * h
        shapes = {}
        for layer in range(check_positive_int(num_layers, "num_layers")):
            shapes[f"weight_ih_l{layer}"] = (rows, n_in if layer == 0 else h)
            shapes[f"weight_hh_l{layer}"] = (rows, h)
            if bias:
                shapes[f"bias_ih_l{layer}"] = (rows,)
                shapes[f"bias_hh_l{layer}"] = (rows,)
        return shapes

    def config(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "bias": self.bias,
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({options})"

    def torch_module(self) -> Any:
        """torch's layer of the same type, ``batch_first=True``, returning its first output
        (the hidden states). Needs PyTorch."""
        import torch

        base = getattr(torch.nn, registered_type(self).__name__)  # a subclass: its base's

        class Outputs(base):
            def forward(self, x: Any) -> Any:  # type: ignore[override]
                return super().forward(x)[0]

        return Outputs(**self.config(), batch_first=True)

    def forward(self, x: Any) -> Any:
        """Return the hidden states (batch, time, hidden_size) for ``x`` (batch, time,
        input_size)."""
        check_input(
            x,
            self.params["weight_ih_l0"],
            self,
            self.input_size,
            -1,
            "features (last axis)",
            "(batch, time, input_size)",
        )
        return self.forward_unchecked(x)

    def _weights(self, layer: int) -> tuple[Any, Any, Any, Any]:
        p = self.params
        return (
            p[f"weight_ih_l{layer}"],
            p[f"weight_hh_l{layer}"],
            p.get(f"bias_ih_l{layer}"),
            p.get(f"bias_hh_l{layer}"),
        )

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``."""
        xp = namespace(x)
        self._caches = []
        for layer in range(self.num_layers):
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            xw = x @ w_ih.mT  # ...,T,GH: the input's part of every step at once
            if b_ih is not None:
                xw = xw + b_ih
            h = xp.zeros(
                (*x.shape[:-2], self.hidden_size), dtype=x.dtype, device=array_api_compat.device(x)
            )
            state, outputs, steps = self._initial_state(xp, h), [], []
            for t in range(x.shape[-2]):
                hw = h @ w_hh.mT  # ...,GH
                if b_hh is not None:
                    hw = hw + b_hh
                h_prev = h
                h, state, cache = self._step(xp, xw[..., t, :], hw, h_prev, state)
                outputs.append(h)
                steps.append((h_prev, cache))
            self._caches.append((x, steps))
            x = xp.stack(outputs, axis=-2)  # ...,T,H
        self._y = x
        return x

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite every gradient in ``grads`` (backpropagation through
        time)."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        for layer in reversed(range(self.num_layers)):
            x, steps = self._caches[layer]
            w_ih, w_hh, b_ih, _ = self._weights(layer)
            dh_next = xp.zeros_like(dy[..., 0, :])
            dstate = None
            dxw, dhw, h_prevs = [], [], []
            for t in reversed(range(len(steps))):
                h_prev, cache = steps[t]
                dh = dy[..., t, :] + dh_next
                dxw_t, dhw_t, dh_direct, dstate = self._step_back(xp, dh, dstate, h_prev, cache)
                # h_{t-1} enters through h W_hh^T, and directly (GRU): dL/dh_{t-1} adds both
                dh_next = dhw_t @ w_hh if dh_direct is None else dh_direct + dhw_t @ w_hh
                dxw.append(dxw_t)
                dhw.append(dhw_t)
                h_prevs.append(h_prev)
            gh = self.gates * self.hidden_size
            dxw_rows = xp.reshape(xp.stack(dxw[::-1], axis=-2), (-1, gh))  # N T,GH
            dhw_rows = xp.reshape(xp.stack(dhw[::-1], axis=-2), (-1, gh))
            h_rows = xp.reshape(xp.stack(h_prevs[::-1], axis=-2), (-1, self.hidden_size))
            # dL/dW_ih = sum over steps of dxw_t^T x_t, dL/dW_hh = sum of dhw_t^T h_{t-1}
            self.grads[f"weight_ih_l{layer}"] = dxw_rows.mT @ xp.reshape(x, (-1, x.shape[-1]))
            self.grads[f"weight_hh_l{layer}"] = dhw_rows.mT @ h_rows
            if b_ih is not None:
                self.grads[f"bias_ih_l{layer}"] = xp.sum(dxw_rows, axis=0)
                self.grads[f"bias_hh_l{layer}"] = xp.sum(dhw_rows, axis=0)
            if layer or input_grad:
                dy = xp.reshape(dxw_rows @ w_ih, tuple(x.shape))  # ...,T,in
        return dy if input_grad else None

    def _initial_state(self, xp: Any, h: Any) -> Any:
        return None

    def _step(self, xp: Any, xw: Any, hw: Any, h_prev: Any, state: Any) -> tuple[Any, Any, Any]:
        """One step: ``(h_t, state_t, cache)`` from the input's and the hidden state's parts
        ``xw`` and ``hw`` (..., G H)."""
        raise NotImplementedError

    def _step_back(
        self, xp: Any, dh: Any, dstate: Any, h_prev: Any, cache: Any
    ) -> tuple[Any, Any, Any, Any]:
        """One step back from dL/dh_t and dL/dstate_t: ``(dL/dxw, dL/dhw, the direct part of
        dL/dh_{t-1} or None, dL/dstate_{t-1})``."""
        raise NotImplementedError


@register_layer
class RNN(_Recurrent):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or ReLU), as
    ``torch.nn.RNN(..., batch_first=True)``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.recurrent import RNN
    >>> rnn = RNN(3, 4, rng=0)
    >>> list(rnn.params)  # torch's names
    ['weight_ih_l0', 'weight_hh_l0', 'bias_ih_l0', 'bias_hh_l0']
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3))  # (batch, time, input_size)
    >>> rnn.forward(x).shape, rnn.backward(np.ones((2, 5, 4))).shape
    ((2, 5, 4), (2, 5, 3))
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        **options: Any,
    ) -> None:
        self.nonlinearity = NONLINEARITIES.check(nonlinearity, "nonlinearity")
        super().__init__(input_size, hidden_size, num_layers, bias, **options)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "nonlinearity": self.nonlinearity}

    def _step(self, xp: Any, xw: Any, hw: Any, h_prev: Any, state: Any) -> tuple[Any, Any, Any]:
        a = xw + hw
        h = xp.tanh(a) if self.nonlinearity == "tanh" else xp.where(a > 0, a, 0.0)
        return h, None, h

    def _step_back(
        self, xp: Any, dh: Any, dstate: Any, h_prev: Any, h: Any
    ) -> tuple[Any, Any, Any, Any]:
        # dL/da = dh (1 - h^2) for tanh, dh [h > 0] for ReLU; a = xw + hw
        da = dh * (1 - h * h) if self.nonlinearity == "tanh" else xp.where(h > 0, dh, 0.0)
        return da, da, None, None


@register_layer
class LSTM(_Recurrent):
    """Long short-term memory, as ``torch.nn.LSTM(..., batch_first=True)``: gates in
    torch's order input, forget, cell, output (rows ``[i; f; g; o]`` of each weight)::

        i, f, o = sigmoid(.), g = tanh(.)   of x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh
        c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.recurrent import LSTM
    >>> lstm = LSTM(3, 4, rng=0)
    >>> lstm.params["weight_ih_l0"].shape  # four gates of 4 rows each
    (16, 3)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3))
    >>> lstm.forward(x).shape, lstm.backward(np.ones((2, 5, 4))).shape
    ((2, 5, 4), (2, 5, 3))
    """

    gates = 4

    def _initial_state(self, xp: Any, h: Any) -> Any:
        return xp.zeros_like(h)  # c_0 = 0

    def _step(self, xp: Any, xw: Any, hw: Any, h_prev: Any, c_prev: Any) -> tuple[Any, Any, Any]:
        n = self.hidden_size
        a = xw + hw  # ...,4H
        i, f = _sigmoid(xp, a[..., :n]), _sigmoid(xp, a[..., n : 2 * n])
        g, o = xp.tanh(a[..., 2 * n : 3 * n]), _sigmoid(xp, a[..., 3 * n :])
        c = f * c_prev + i * g
        tanh_c = xp.tanh(c)
        return o * tanh_c, c, (i, f, g, o, c_prev, tanh_c)

    def _step_back(
        self, xp: Any, dh: Any, dc_next: Any, h_prev: Any, cache: Any
    ) -> tuple[Any, Any, Any, Any]:
        i, f, g, o, c_prev, tanh_c = cache
        # dc = dL/dc_t from h_t = o tanh(c_t) and from c_{t+1} = f_{t+1} c_t + ...
        dc = dh * o * (1 - tanh_c * tanh_c)
        if dc_next is not None:
            dc = dc + dc_next
        # through each gate's nonlinearity: sigmoid' = s (1 - s), tanh' = 1 - t^2
        da = xp.concat(
            [
                dc * g * i * (1 - i),
                dc * c_prev * f * (1 - f),
                dc * i * (1 - g * g),
                dh * tanh_c * o * (1 - o),
            ],
            axis=-1,
        )  # ...,4H in the order i, f, g, o
        return da, da, None, dc * f


@register_layer
class GRU(_Recurrent):
    """Gated recurrent unit, as ``torch.nn.GRU(..., batch_first=True)``: gates in torch's
    order reset, update, new (rows ``[r; z; n]``), the reset gate applied to the hidden
    state's part after its bias::

        r, z = sigmoid(x_t W_i^T + b_i + h_{t-1} W_h^T + b_h)   (their rows)
        n = tanh(x_t W_in^T + b_in + r (h_{t-1} W_hn^T + b_hn))
        h_t = (1 - z) n + z h_{t-1}

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.recurrent import GRU
    >>> gru = GRU(3, 4, rng=0)
    >>> gru.params["weight_hh_l0"].shape  # three gates of 4 rows each
    (12, 4)
    >>> x = np.random.default_rng(0).standard_normal((2, 5, 3))
    >>> gru.forward(x).shape, gru.backward(np.ones((2, 5, 4))).shape
    ((2, 5, 4), (2, 5, 3))
    """

    gates = 3

    def _step(self, xp: Any, xw: Any, hw: Any, h_prev: Any, state: Any) -> tuple[Any, Any, Any]:
        n = self.hidden_size
        r = _sigmoid(xp, xw[..., :n] + hw[..., :n])
        z = _sigmoid(xp, xw[..., n : 2 * n] + hw[..., n : 2 * n])
        hw_n = hw[..., 2 * n :]
        new = xp.tanh(xw[..., 2 * n :] + r * hw_n)
        return (1 - z) * new + z * h_prev, None, (r, z, new, hw_n)

    def _step_back(
        self, xp: Any, dh: Any, dstate: Any, h_prev: Any, cache: Any
    ) -> tuple[Any, Any, Any, Any]:
        r, z, new, hw_n = cache
        # h_t = (1 - z) n + z h_{t-1}:  dn = dh (1 - z), dz = dh (h_{t-1} - n)
        da_n = dh * (1 - z) * (1 - new * new)  # through tanh
        da_r = da_n * hw_n * r * (1 - r)  # n's argument holds r hw_n
        da_z = dh * (h_prev - new) * z * (1 - z)
        dxw = xp.concat([da_r, da_z, da_n], axis=-1)  # ...,3H in the order r, z, n
        dhw = xp.concat([da_r, da_z, da_n * r], axis=-1)
        return dxw, dhw, dh * z, None
