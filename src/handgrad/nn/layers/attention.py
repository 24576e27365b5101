"""Self-attention: the attention of fused queries, keys and values over a sequence
(``ScaledDotProductAttention``), and ``MultiheadSelfAttention`` with its projections, as
``torch.nn.MultiheadAttention`` used on one sequence. Both backward passes are written out:
the softmax's Jacobian through the causal mask, no autograd."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import get_namespace, namespace, resolve_dtype
from handgrad.core.validation import check_array, check_positive_int
from handgrad.nn.functional import affine
from handgrad.nn.init import initialize
from handgrad.nn.module import Module
from handgrad.nn.protocol import check_input, check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["MultiheadSelfAttention", "ScaledDotProductAttention", "merge_heads", "split_heads"]


def _check_heads(embed_dim: Any, num_heads: Any) -> tuple[int, int]:
    embed_dim = check_positive_int(embed_dim, "embed_dim")
    num_heads = check_positive_int(num_heads, "num_heads")
    if embed_dim % num_heads:
        raise ValueError(
            f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads}): each head "
            "takes embed_dim / num_heads features"
        )
    return embed_dim, num_heads


def split_heads(xp: Any, z: Any, heads: int) -> Any:
    """(..., T, C) -> (..., H, T, C / H): the features of each position cut into ``heads``
    groups, the heads moved before the time axis.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.layers.attention import split_heads
    >>> z = np.arange(12.0).reshape(1, 2, 6)  # (batch, time, features)
    >>> split_heads(namespace(z), z, 3)[0, 1]  # head 1: features 2 and 3 of each position
    array([[2., 3.],
           [8., 9.]])
    """
    *lead, time, features = z.shape
    z = xp.reshape(z, (*lead, time, heads, features // heads))
    n = z.ndim
    return xp.permute_dims(z, (*range(n - 3), n - 2, n - 3, n - 1))


def merge_heads(xp: Any, z: Any) -> Any:
    """(..., H, T, d) -> (..., T, H d), the inverse of :func:`split_heads`.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.core.arrays import namespace
    >>> from handgrad.nn.layers.attention import merge_heads, split_heads
    >>> z = np.arange(12.0).reshape(1, 2, 6)
    >>> xp = namespace(z)
    >>> bool(np.array_equal(merge_heads(xp, split_heads(xp, z, 3)), z))
    True
    """
    n = z.ndim
    z = xp.permute_dims(z, (*range(n - 3), n - 2, n - 3, n - 1))  # ...,T,H,d
    return xp.reshape(z, (*z.shape[:-2], z.shape[-2] * z.shape[-1]))


@register_layer
class ScaledDotProductAttention(Module):
    """Multi-head attention of a sequence on itself, from queries, keys and values side by
    side: ``qkv`` of shape (..., time, 3 * embed_dim) gives (..., time, embed_dim).

    Per head, ``softmax(q k^T / sqrt(d) + mask) v``, with ``d = embed_dim / num_heads`` and,
    when ``causal``, a mask of -inf above the diagonal (position t sees positions <= t).
    No parameters: it is the core of :class:`MultiheadSelfAttention` and of the GPT's
    attention, between their projections.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.attention import ScaledDotProductAttention
    >>> attention = ScaledDotProductAttention(num_heads=2, causal=True)
    >>> qkv = np.random.default_rng(0).standard_normal((1, 4, 3 * 6))  # (batch, time, 3 C)
    >>> y = attention.forward(qkv)
    >>> y.shape
    (1, 4, 6)
    >>> bool(np.allclose(y[0, 0], qkv[0, 0, 12:]))  # the first position sees only itself
    True
    >>> attention.backward(np.ones_like(y)).shape  # dL/dqkv
    (1, 4, 18)
    """

    broadcasts = True  # takes stacked copies, (..., batch, time, 3 C), in one call

    def __init__(self, num_heads: int = 1, causal: bool = False) -> None:
        super().__init__()
        self.num_heads = check_positive_int(num_heads, "num_heads")
        self.causal = bool(causal)
        self._masks: dict[tuple, Any] = {}
        self._cache: tuple | None = None
        self._y = None

    def config(self) -> dict[str, Any]:
        return {"num_heads": self.num_heads, "causal": self.causal}

    def __repr__(self) -> str:
        return f"ScaledDotProductAttention(num_heads={self.num_heads}, causal={self.causal})"

    def torch_module(self) -> Any:
        """A ``torch.nn.Module`` that splits ``qkv`` and calls
        ``torch.nn.functional.scaled_dot_product_attention``. Needs PyTorch."""
        import torch

        heads, causal = self.num_heads, self.causal

        class FusedAttention(torch.nn.Module):
            def forward(self, qkv: Any) -> Any:
                q, k, v = (z.unflatten(-1, (heads, -1)).transpose(-3, -2) for z in qkv.chunk(3, -1))
                o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
                return o.transpose(-3, -2).flatten(-2)

        return FusedAttention()

    def forward(self, qkv: Any) -> Any:
        """Return the attention output, (..., time, embed_dim), of ``qkv`` (..., time,
        3 * embed_dim)."""
        check_array(qkv, "qkv", min_ndim=2, layout="(batch, time, 3 * embed_dim)")
        width = qkv.shape[-1]
        if width % (3 * self.num_heads) or width == 0:
            raise ValueError(
                f"qkv's last axis ({width}) must be 3 * embed_dim, queries, keys and values "
                f"side by side, with embed_dim a multiple of num_heads ({self.num_heads})"
            )
        return self.forward_unchecked(qkv)

    def _mask(self, xp: Any, time: int, like: Any) -> Any:
        """The causal mask as an additive (T, T) array: 0 on and below the diagonal, -inf
        above; kept per length, dtype and library."""
        key = (time, str(like.dtype), xp.__name__, str(array_api_compat.device(like)))
        if key not in self._masks:
            rows = xp.reshape(xp.arange(time), (time, 1))
            above = rows < xp.reshape(xp.arange(time), (1, time))
            mask = xp.where(above, xp.asarray(-math.inf), xp.asarray(0.0))
            self._masks[key] = xp.asarray(
                mask, dtype=like.dtype, device=array_api_compat.device(like)
            )
        return self._masks[key]

    def forward_unchecked(self, qkv: Any) -> Any:
        """:meth:`forward` without checking ``qkv``."""
        xp = namespace(qkv)
        width = qkv.shape[-1] // 3
        q, k, v = (
            split_heads(xp, qkv[..., i * width : (i + 1) * width], self.num_heads) for i in range(3)
        )  # ...,H,T,d each
        scale = 1.0 / math.sqrt(width // self.num_heads)
        s = (q @ k.mT) * scale  # ...,H,T,T
        if self.causal:
            s = s + self._mask(xp, qkv.shape[-2], s)
        p = _softmax(xp, s)
        y = merge_heads(xp, p @ v)  # ...,T,C
        self._cache = (q, k, v, p, scale)
        self._y = y
        return y

    def backward(self, dy: Any) -> Any:
        """Return dL/dqkv from dL/dy."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        q, k, v, p, scale = self._cache
        do = split_heads(xp, dy, self.num_heads)  # ...,H,T,d
        dv = p.mT @ do  # dL/dv = P^T dO
        dp = do @ v.mT  # dL/dP = dO v^T, ...,H,T,T
        # dL/dS = P * (dL/dP - rowsum(dL/dP * P)), the softmax's Jacobian row by row; where
        # the mask put -inf, P = 0 and so dL/dS = 0: the mask needs no term of its own
        ds = p * (dp - xp.sum(dp * p, axis=-1, keepdims=True)) * scale
        dq, dk = ds @ k, ds.mT @ q  # S = q k^T / sqrt(d)
        return xp.concat([merge_heads(xp, g) for g in (dq, dk, dv)], axis=-1)  # ...,T,3C


def _softmax(xp: Any, s: Any) -> Any:
    """Softmax over the last axis, shifted by the row maximum; in place on NumPy."""
    if isinstance(s, np.ndarray):
        s -= np.maximum.reduce(s, axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= np.add.reduce(s, axis=-1, keepdims=True)
        return s
    e = xp.exp(s - xp.max(s, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


@register_layer
class MultiheadSelfAttention(Module):
    """Self-attention with ``num_heads`` heads and a fused query/key/value projection, as
    ``torch.nn.MultiheadAttention(embed_dim, num_heads, bias, batch_first=True)`` called
    with ``(x, x, x)``, and the same parameter names, so weights move both ways.

    ``x`` is (batch, time, embed_dim); ``qkv = x W_in^T + b_in`` (``in_proj_weight`` is
    (3 embed_dim, embed_dim)), the heads attend (:class:`ScaledDotProductAttention`, causal
    if asked), and ``out_proj`` maps the heads' outputs back.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.layers.attention import MultiheadSelfAttention
    >>> attention = MultiheadSelfAttention(8, num_heads=2, causal=True, rng=0)
    >>> list(attention.params)  # torch.nn.MultiheadAttention's names
    ['in_proj_weight', 'in_proj_bias', 'out_proj.weight', 'out_proj.bias']
    >>> x = np.random.default_rng(0).standard_normal((3, 5, 8))  # (batch, time, embed_dim)
    >>> attention.forward(x).shape
    (3, 5, 8)
    >>> attention.backward(np.ones((3, 5, 8))).shape
    (3, 5, 8)
    """

    broadcasts = True  # takes stacked copies, (..., batch, time, embed_dim), in one call

    def __init__(
        self,
        embed_dim: int,
        num_heads: int = 1,
        bias: bool = True,
        causal: bool = False,
        *,
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        shapes = self.array_shapes(embed_dim, num_heads, bias)
        self.embed_dim, self.num_heads = _check_heads(embed_dim, num_heads)
        xp = get_namespace(backend)
        dtype = resolve_dtype(xp, dtype)
        for name, shape in shapes.items():
            value = initialize("glorot", shape, rng) if name.endswith("weight") else np.zeros(shape)
            self.params[name] = xp.asarray(value, dtype=dtype, device=device)
        self.grads = {name: xp.zeros_like(p) for name, p in self.params.items()}
        self.attention = ScaledDotProductAttention(num_heads, causal)
        self._x = self._heads = self._y = None

    @property
    def causal(self) -> bool:
        """Whether each position attends only to itself and the positions before it."""
        return self.attention.causal

    @classmethod
    def array_shapes(
        cls, embed_dim: int, num_heads: int = 1, bias: bool = True, causal: bool = False
    ) -> dict[str, tuple[int, ...]]:
        """``in_proj_weight`` (3 E, E), ``in_proj_bias`` (3 E,), ``out_proj.weight`` (E, E),
        ``out_proj.bias`` (E,)."""
        e, _ = _check_heads(embed_dim, num_heads)
        shapes = {"in_proj_weight": (3 * e, e)}
        if bias:
            shapes["in_proj_bias"] = (3 * e,)
        shapes["out_proj.weight"] = (e, e)
        if bias:
            shapes["out_proj.bias"] = (e,)
        return shapes

    def config(self) -> dict[str, Any]:
        return {
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "bias": "in_proj_bias" in self.params,
            "causal": self.causal,
        }

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"MultiheadSelfAttention({options})"

    def torch_module(self) -> Any:
        """``torch.nn.MultiheadAttention`` (batch first) called as self-attention, with the
        causal mask when asked. Needs PyTorch."""
        import torch

        causal = self.causal

        class SelfAttention(torch.nn.MultiheadAttention):
            def forward(self, x: Any) -> Any:  # type: ignore[override]
                mask = None
                if causal:
                    mask = torch.nn.Transformer.generate_square_subsequent_mask(
                        x.shape[-2], dtype=x.dtype
                    )
                return super().forward(x, x, x, need_weights=False, attn_mask=mask)[0]

        return SelfAttention(
            self.embed_dim, self.num_heads, bias="in_proj_bias" in self.params, batch_first=True
        )

    def forward(self, x: Any) -> Any:
        """Return the attention output of ``x`` (batch, time, embed_dim), the same shape."""
        check_input(
            x,
            self.params["in_proj_weight"],
            self,
            self.embed_dim,
            -1,
            "features (last axis)",
            "(batch, time, embed_dim)",
        )
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Any) -> Any:
        """:meth:`forward` without checking ``x``."""
        p = self.params
        qkv = affine(x, p["in_proj_weight"], p.get("in_proj_bias"))  # ...,T,3E
        self._heads = self.attention.forward_unchecked(qkv)  # ...,T,E
        y = affine(self._heads, p["out_proj.weight"], p.get("out_proj.bias"))
        self._x, self._y = x, y
        return y

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite every gradient in ``grads``."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        """:meth:`backward` without checking ``dy``."""
        xp = namespace(dy)
        e, p = self.embed_dim, self.params
        rows = xp.reshape(dy, (-1, e))  # N,E
        # out_proj: dW = dy^T heads, db = sum of dy, dheads = dy W
        self.grads["out_proj.weight"] = rows.mT @ xp.reshape(self._heads, (-1, e))
        dqkv = self.attention.backward_unchecked(dy @ p["out_proj.weight"])  # ...,T,3E
        qkv_rows = xp.reshape(dqkv, (-1, 3 * e))  # N,3E
        self.grads["in_proj_weight"] = qkv_rows.mT @ xp.reshape(self._x, (-1, e))
        if "in_proj_bias" in p:
            self.grads["in_proj_bias"] = xp.sum(qkv_rows, axis=0)
            self.grads["out_proj.bias"] = xp.sum(rows, axis=0)
        return dqkv @ p["in_proj_weight"] if input_grad else None  # ...,T,E
