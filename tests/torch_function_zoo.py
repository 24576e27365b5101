"""Custom ``torch.autograd.Function``s as people write them, each right and with a slip,
for ``handgrad.torch.gradcheck`` / ``gradgradcheck``: SiLU (old style, and the new style
that vmap takes), layer norm, attention, a convolution by unfold, a fused kernel that is
right only for a contiguous ``grad_output``, a float32-only kernel, and backwards that are
right once but wrong when differentiated again.

``CASES`` maps a name to (function, inputs maker, which check catches the slip: None for a
right one, "first", "layouts" or "second").
"""

from __future__ import annotations

import math

import torch
from torch.nn.functional import fold, unfold


class SiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return dy * s * (1 + x * (1 - s))  # dL/dx = dy s (1 + x (1 - s))


class SiLUSlip(SiLU):
    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return dy * s * (1 + x * s)  # slip: (1 - s) written as s


class SiLUVmap(torch.autograd.Function):
    """The new style: forward without ctx, setup_context, a generated vmap rule."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x):
        return x * torch.sigmoid(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return dy * s * (1 + x * (1 - s))


class SiLUVmapSlip(SiLUVmap):
    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return dy * torch.sigmoid(x)  # slip: the derivative of x s(x) is not s(x)


class LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b):
        mean = x.mean(-1, keepdim=True)
        xc = x - mean
        rstd = (xc.pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt()
        xhat = xc * rstd
        ctx.save_for_backward(xhat, rstd, w)
        return xhat * w + b

    @staticmethod
    def backward(ctx, dy):
        xhat, rstd, w = ctx.saved_tensors
        g = dy * w  # B,T,C
        # dL/dx = rstd (g - mean(g) - xhat mean(g xhat))
        dx = rstd * (g - g.mean(-1, keepdim=True) - xhat * (g * xhat).mean(-1, keepdim=True))
        lead = tuple(range(dy.ndim - 1))
        return dx, (dy * xhat).sum(lead), dy.sum(lead)


class LayerNormSlip(LayerNorm):
    @staticmethod
    def backward(ctx, dy):
        xhat, rstd, w = ctx.saved_tensors
        g = dy * w
        dx = rstd * (g - g.mean(-1, keepdim=True))  # slip: the variance's term left out
        lead = tuple(range(dy.ndim - 1))
        return dx, (dy * xhat).sum(lead), dy.sum(lead)


class Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        scale = 1 / math.sqrt(q.shape[-1])
        p = torch.softmax(q @ k.transpose(-1, -2) * scale, -1)  # B,T,T
        ctx.save_for_backward(q, k, v, p)
        ctx.scale = scale
        return p @ v

    @staticmethod
    def backward(ctx, dy):
        q, k, v, p = ctx.saved_tensors
        dp = dy @ v.transpose(-1, -2)
        ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * ctx.scale  # softmax's Jacobian
        return ds @ k, ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ dy


class AttentionSlip(Attention):
    @staticmethod
    def backward(ctx, dy):
        q, k, v, p = ctx.saved_tensors
        dp = dy @ v.transpose(-1, -2)
        ds = p * dp * ctx.scale  # slip: softmax's Jacobian without its rank-one term
        return ds @ k, ds.transpose(-1, -2) @ q, p.transpose(-1, -2) @ dy


class UnfoldConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        n, _, h, width = x.shape
        o, _, kh, kw = w.shape
        cols = unfold(x, (kh, kw))  # N,C*kh*kw,L
        ctx.save_for_backward(cols, w)
        ctx.size = (h, width)
        out = w.reshape(o, -1) @ cols  # N,O,L
        return out.reshape(n, o, h - kh + 1, width - kw + 1)

    @staticmethod
    def backward(ctx, dy):
        cols, w = ctx.saved_tensors
        o, _, kh, kw = w.shape
        dy = dy.reshape(dy.shape[0], o, -1)  # N,O,L
        dw = (dy @ cols.transpose(1, 2)).sum(0).reshape(w.shape)
        dcols = w.reshape(o, -1).t() @ dy
        return fold(dcols, ctx.size, (kh, kw)), dw


class UnfoldConvSlip(UnfoldConv):
    @staticmethod
    def backward(ctx, dy):
        cols, w = ctx.saved_tensors
        o, _, kh, kw = w.shape
        dy = dy.reshape(dy.shape[0], o, -1)
        dw = (dy @ cols.transpose(1, 2)).sum(0).reshape(w.shape)
        dcols = w.flip(-1).reshape(o, -1).t() @ dy  # slip: the kernel flipped
        return fold(dcols, ctx.size, (kh, kw)), dw


class FusedSiLU(torch.autograd.Function):
    """A kernel-style backward that walks ``grad_output``'s memory as if it were
    contiguous, as a hand-written CUDA or Triton kernel indexing ``ptr + i`` does."""

    @staticmethod
    def forward(ctx, x):
        x = x.contiguous()
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        flat = dy.as_strided((dy.numel(),), (1,))  # the slip: assumes contiguous memory
        s = torch.sigmoid(x)
        return (flat.reshape(x.shape) * s * (1 + x * (1 - s))).reshape(x.shape)


class FusedSiLURight(FusedSiLU):
    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        flat = dy.contiguous().as_strided((dy.numel(),), (1,))
        s = torch.sigmoid(x)
        return flat.reshape(x.shape) * s * (1 + x * (1 - s))


class Float32Tanh(torch.autograd.Function):
    """A kernel that computes in float32 whatever it is given."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x.float())
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return (dy.float() * (1 - y * y)).to(dy.dtype)


class Float32TanhSlip(Float32Tanh):
    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        return (dy.float() * (1 - y)).to(dy.dtype)  # slip: y for y^2


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x * dy


class SquareDetached(Square):
    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x.detach() * dy  # right once; its derivative in x is lost


class _CubeGrad(torch.autograd.Function):
    """dL/dx of x^3 as a Function of its own, whose backward is wrong: ``3 x^2 dy``'s
    derivative in x is ``6 x dy g``, written here as ``3 x dy g``."""

    @staticmethod
    def forward(ctx, x, dy):
        ctx.save_for_backward(x, dy)
        return 3 * x * x * dy

    @staticmethod
    def backward(ctx, g):
        x, dy = ctx.saved_tensors
        return 3 * x * dy * g, 3 * x * x * g  # slip in the first: 6 x dy g


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return _CubeGrad.apply(x, dy)  # first order right, second order wrong


class CubeRight(Cube):
    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 3 * x * x * dy


def _normal(generator, *shape, dtype):
    return torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)


def _inputs(*shapes):
    def make(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(_normal(g, *s, dtype=dtype).requires_grad_(True) for s in shapes)

    return make


def _layer_norm_inputs(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = _normal(g, 3, 4, 6, dtype=dtype)
    w = 1 + 0.5 * _normal(g, 6, dtype=dtype)
    b = _normal(g, 6, dtype=dtype)
    return tuple(t.requires_grad_(True) for t in (x, w, b))


def _conv_inputs(seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        _normal(g, 2, 2, 4, 4, dtype=dtype).requires_grad_(True),
        _normal(g, 2, 2, 2, 2, dtype=dtype).requires_grad_(True),
    )


# name -> (function, inputs(seed, dtype), the check that must catch it: None when right)
CASES = {
    "silu": (SiLU.apply, _inputs((6, 5)), None),
    "silu slip": (SiLUSlip.apply, _inputs((6, 5)), "first"),
    "silu vmap": (SiLUVmap.apply, _inputs((6, 5)), None),
    "silu vmap slip": (SiLUVmapSlip.apply, _inputs((6, 5)), "first"),
    "layer norm": (LayerNorm.apply, _layer_norm_inputs, None),
    "layer norm slip": (LayerNormSlip.apply, _layer_norm_inputs, "first"),
    "attention": (Attention.apply, _inputs((2, 4, 3), (2, 4, 3), (2, 4, 3)), None),
    "attention slip": (AttentionSlip.apply, _inputs((2, 4, 3), (2, 4, 3), (2, 4, 3)), "first"),
    "unfold conv": (UnfoldConv.apply, _conv_inputs, None),
    "unfold conv slip": (UnfoldConvSlip.apply, _conv_inputs, "first"),
    "fused kernel": (FusedSiLURight.apply, _inputs((5, 4)), None),
    "fused kernel contiguous only": (FusedSiLU.apply, _inputs((5, 4)), "layouts"),
    "float32 kernel": (Float32Tanh.apply, _inputs((4, 5)), None),
    "float32 kernel slip": (Float32TanhSlip.apply, _inputs((4, 5)), "first"),
    "square": (Square.apply, _inputs((3, 4)), None),
    "square detached backward": (SquareDetached.apply, _inputs((3, 4)), "second"),
    "cube": (CubeRight.apply, _inputs((3, 4)), None),
    "cube wrong double backward": (Cube.apply, _inputs((3, 4)), "second"),
}
