"""JAX functions with hand-written ``custom_vjp`` rules, right and wrong, for
``handgrad.jax.check_grads``. Each wrong one says which order must catch it: 1 (its bwd
rule is wrong) or 2 (its bwd rule is right but not differentiable as written: the
derivative JAX takes of it is wrong)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy


@dataclass(frozen=True)
class Case:
    name: str
    f: Callable[..., Any]
    args: Callable[[np.random.Generator], tuple]  # float64 NumPy arguments
    caught_by: int  # 0: right; 1 or 2: the order that must catch it


def _vjp(forward, backward):
    """A custom_vjp function whose residuals are its arguments."""
    f = jax.custom_vjp(forward)
    f.defvjp(lambda *args: (forward(*args), args), lambda args, g: backward(*args, g))
    f.plain = forward
    return f


# --- SiLU: y = x s(x); dy/dx = s + x s (1 - s) ---------------------------------------------


def _silu(x):
    return x * jax.nn.sigmoid(x)


def _silu_bwd(x, g):
    s = jax.nn.sigmoid(x)
    return (g * (s + x * s * (1 - s)),)


def _silu_slip(x, g):  # forgets the x s (1 - s) term
    return (g * jax.nn.sigmoid(x),)


def _silu_frozen(x, g):  # right values, but s is a constant to the second derivative
    s = jax.lax.stop_gradient(jax.nn.sigmoid(x))
    return (g * (s + x * s * (1 - s)),)


@jax.custom_jvp
def _dsilu(x):
    s = jax.nn.sigmoid(x)
    return s + x * s * (1 - s)


@_dsilu.defjvp
def _dsilu_jvp(primals, tangents):  # a slip: the second derivative of SiLU without 2 s (1 - s)
    (x,), (t,) = primals, tangents
    s = jax.nn.sigmoid(x)
    return _dsilu(x), t * x * s * (1 - s) * (1 - 2 * s)


def _silu_custom_jvp_bwd(x, g):
    return (g * _dsilu(x),)


# --- Tanh from its output: dy/dx = 1 - y^2 ----------------------------------------------------

_tanh = jax.custom_vjp(jnp.tanh)
_tanh.defvjp(lambda x: (jnp.tanh(x), jnp.tanh(x)), lambda y, g: (g * (1 - y * y),))
_tanh.plain = jnp.tanh


# --- Layer norm over the last axis, params a dict ---------------------------------------------


def _layer_norm(x, params):
    mu = x.mean(-1, keepdims=True)
    xhat = (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    return xhat * params["gamma"] + params["beta"]


def _layer_norm_bwd(x, params, g, slip=False):
    mu = x.mean(-1, keepdims=True)
    rstd = 1 / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    xhat = (x - mu) * rstd
    dxhat = g * params["gamma"]  # B,D
    # dL/dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat))
    projection = 0.0 if slip else xhat * (dxhat * xhat).mean(-1, keepdims=True)
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True) - projection)
    return dx, {"gamma": (g * xhat).sum(0), "beta": g.sum(0)}


# --- Attention: softmax(q k^T / sqrt(d)) v ----------------------------------------------------


def _attention(q, k, v):
    p = jax.nn.softmax(q @ k.T / np.sqrt(q.shape[-1]), axis=-1)
    return p @ v


def _attention_bwd(q, k, v, g, slip=False):
    scale = 1 / np.sqrt(q.shape[-1])
    p = jax.nn.softmax(q @ k.T * scale, axis=-1)  # T,T
    dp = g @ v.T
    # dL/ds = p (dp - rowsum(dp p))
    ds = p * dp if slip else p * (dp - (dp * p).sum(-1, keepdims=True))
    return ds @ k * scale, ds.T @ q * scale, p.T @ g


# --- A 1-d convolution by unfolding: y[o, t] = sum_ck w[o, c, k] x[c, t + k] -------------------


def _windows(length, kernel):
    return np.arange(length - kernel + 1)[None, :] + np.arange(kernel)[:, None]  # K,T


def _conv(x, w):
    cols = x[:, _windows(x.shape[1], w.shape[2])]  # C,K,T
    return jnp.einsum("ock,ckt->ot", w, cols)


def _conv_bwd(x, w, g, slip=False):
    index = _windows(x.shape[1], w.shape[2])
    cols = x[:, index]
    kernel = w[:, :, ::-1] if slip else w  # the slip: the kernel flipped for dx
    dcols = jnp.einsum("ock,ot->ckt", kernel, g)
    return jnp.zeros_like(x).at[:, index].add(dcols), jnp.einsum("ot,ckt->ock", g, cols)


# --- One element off ---------------------------------------------------------------------------


def _scale_bwd_one_off(x, g):
    return ((3 * g).at[0, 1].multiply(1.05),)


# --- ReLU, checked where an element sits at its kink -------------------------------------------


def _relu_bwd(x, g):
    return (jnp.where(x > 0, g, 0.0),)


def _normal(*shape):
    return lambda rng: (rng.standard_normal(shape),)


def _layer_norm_args(rng):
    return (
        rng.standard_normal((3, 5)),
        {"gamma": 1 + 0.1 * rng.standard_normal(5), "beta": rng.standard_normal(5)},
    )


def _attention_args(rng):
    return tuple(rng.standard_normal((4, 3)) for _ in range(3))


def _conv_args(rng):
    return rng.standard_normal((2, 7)), rng.standard_normal((3, 2, 3))


def _relu_args(rng):
    x = rng.standard_normal((3, 4))
    x[1, 2] = 0.0
    return (x,)


ZOO = [
    Case("silu", _vjp(_silu, _silu_bwd), _normal(3, 4), 0),
    Case("silu-slip", _vjp(_silu, _silu_slip), _normal(3, 4), 1),
    Case("silu-stop-gradient-bwd", _vjp(_silu, _silu_frozen), _normal(3, 4), 2),
    Case("silu-wrong-custom-jvp-in-bwd", _vjp(_silu, _silu_custom_jvp_bwd), _normal(3, 4), 2),
    Case("tanh-from-output", _tanh, _normal(3, 4), 0),
    Case("layer-norm", _vjp(_layer_norm, _layer_norm_bwd), _layer_norm_args, 0),
    Case(
        "layer-norm-slip",
        _vjp(_layer_norm, lambda x, p, g: _layer_norm_bwd(x, p, g, slip=True)),
        _layer_norm_args,
        1,
    ),
    Case("attention", _vjp(_attention, _attention_bwd), _attention_args, 0),
    Case(
        "attention-slip",
        _vjp(_attention, lambda q, k, v, g: _attention_bwd(q, k, v, g, slip=True)),
        _attention_args,
        1,
    ),
    Case("conv", _vjp(_conv, _conv_bwd), _conv_args, 0),
    Case("conv-slip", _vjp(_conv, lambda x, w, g: _conv_bwd(x, w, g, slip=True)), _conv_args, 1),
    Case("scale-one-element-off", _vjp(lambda x: 3 * x, _scale_bwd_one_off), _normal(3, 4), 1),
    Case("relu-at-a-kink", _vjp(jax.nn.relu, _relu_bwd), _relu_args, 0),
]
