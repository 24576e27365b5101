"""A zoo of deliberately wrong backward passes: each one a slip people make, each one a
gradient check must catch."""

from __future__ import annotations

import numpy as np

from handgrad import (
    ELU,
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    Dropout,
    Flatten,
    GroupNorm,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from handgrad.core.arrays import namespace
from handgrad.models.gpt import GPT
from handgrad.nn.layers.attention import ScaledDotProductAttention, merge_heads, split_heads
from handgrad.nn.layers.embedding import Embedding
from handgrad.nn.layers.recurrent import GRU, LSTM


class TransposedWeightGrad(Linear):
    """dW written as x^T dy, the transpose of dy^T x (only fits a square weight)."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = self.grads["weight"].T
        return dx


class SignErrorWeightGrad(Linear):
    """dW with the wrong sign."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = -self.grads["weight"]
        return dx


class AveragedBiasGrad(Linear):
    """db averaged over the batch where it must be summed."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["bias"] = self.grads["bias"] / dy.shape[0]
        return dx


class WrongInputGrad(Linear):
    """dx computed with W^T's shape trick gone wrong: dy W replaced by dy W * 2."""

    def backward(self, dy):
        return 2 * super().backward(dy)


class MissingSigmoidDerivative(Sigmoid):
    """Passes dy through, forgetting y (1 - y)."""

    def _backward(self, xp, y, dy):
        return dy


class TanhSigmoidDerivative(Tanh):
    """Uses the sigmoid's y (1 - y) where tanh needs 1 - y^2."""

    def _backward(self, xp, y, dy):
        return dy * y * (1 - y)


class LeakyReluDerivative(ReLU):
    """Lets a tenth of the gradient through where x < 0."""

    def _backward(self, xp, y, dy):
        return xp.where(y > 0, dy, 0.1 * dy)


class SoftmaxDiagonalOnly(Softmax):
    """Keeps only the diagonal y (1 - y) of the softmax Jacobian."""

    def _backward(self, xp, y, dy):
        return dy * y * (1 - y)


class LogSoftmaxNoExp(LogSoftmax):
    """Uses the log-probabilities y where softmax(x) = exp(y) belongs."""

    def _backward(self, xp, y, dy):
        return dy - y * xp.sum(dy, axis=-1, keepdims=True)


class SeedSlipNet:
    """The seed notebook's network, with its markdown's slip: dJ/dh_1 = (w_1^T dJ/dh_2) ...
    where w_2^T belongs. Shapes only allow it when all three sizes are equal."""

    def __init__(self, size: int, rng) -> None:
        self.params = {
            "w_1": rng.standard_normal((size, size)),
            "w_2": rng.standard_normal((size, size)),
        }
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        xp = namespace(x)
        self._x = x
        self._z_1 = 1 / (1 + xp.exp(-(x @ self.params["w_1"].T)))
        return self._z_1 @ self.params["w_2"].T

    def backward(self, dy):
        self.grads["w_2"] = dy.T @ self._z_1
        dh_1 = (dy @ self.params["w_1"]) * self._z_1 * (1 - self._z_1)  # the slip: w_1 for w_2
        self.grads["w_1"] = dh_1.T @ self._x
        return dh_1 @ self.params["w_1"]


LAYER_BUGS = {
    "transposed weight gradient": lambda rng: TransposedWeightGrad(6, 6, rng=rng),
    "sign error in the weight gradient": lambda rng: SignErrorWeightGrad(5, 4, rng=rng),
    "bias gradient averaged, not summed": lambda rng: AveragedBiasGrad(5, 4, rng=rng),
    "input gradient doubled": lambda rng: WrongInputGrad(5, 4, rng=rng),
    "missing sigmoid derivative": lambda rng: MissingSigmoidDerivative(),
    "sigmoid derivative in tanh": lambda rng: TanhSigmoidDerivative(),
    "leaky derivative in relu": lambda rng: LeakyReluDerivative(),
    "softmax Jacobian diagonal only": lambda rng: SoftmaxDiagonalOnly(),
    "log-softmax without exp": lambda rng: LogSoftmaxNoExp(),
}


# --- vision layers: each a slip people make in a convolution, a pool, a normalisation ---


class FlippedKernelGrad(Conv2d):
    """dW of a convolution taken for the cross-correlation's, with the kernel turned
    around (flipped rows and columns): the classic mix-up of the two."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = self.grads["weight"][..., ::-1, ::-1]
        return dx


class FlippedKernelGrad1d(Conv1d):
    """The same mix-up in one dimension."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = self.grads["weight"][..., ::-1]
        return dx


class ConvOverlapsAssigned(Conv2d):
    """col2im that *assigns* each window's gradient where it must add: an input element in
    several windows keeps only the last window's share."""

    def backward(self, dy):
        super().backward(dy)
        xp = namespace(dy)
        n, c, o = dy.shape[0], self.in_channels, self.out_channels
        oh, ow = dy.shape[-2:]
        kh, kw = self.kernel_size
        w = xp.reshape(self.params["weight"], (o, c * kh * kw))
        dcols = xp.reshape(w.mT @ xp.reshape(dy, (n, o, oh * ow)), (n, c, kh, kw, oh, ow))
        (top, _), (left, _) = self._pads()
        height, width = self._images[-2:]
        dx = np.zeros((n, c, height + 2 * top, width + 2 * left))
        for i in range(kh):
            for j in range(kw):
                dx[:, :, i : i + oh, j : j + ow] = dcols[:, :, i, j]  # the slip: = for +=
        return dx[:, :, top : top + height, left : left + width]


class ConvBiasGradAveraged(Conv2d):
    """db averaged over the output positions where it must be summed over them."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["bias"] = self.grads["bias"] / (dy.shape[-1] * dy.shape[-2])
        return dx


class MaxPoolOverlapsAssigned(MaxPool2d):
    """Overlapping max-pool windows *assigned* instead of added: an element that is the
    maximum of several windows gets only the last window's gradient."""

    def backward(self, dy):
        (kh, kw), (sh, sw), (oh, ow) = self.kernel_size, self.stride, dy.shape[-2:]
        winners = np.asarray(self._argmax)  # ...,oh,ow: each maximum's place in its window
        dx = np.zeros(self._padded_shape)
        for i in range(kh):
            for j in range(kw):
                window = dx[..., i : i + sh * (oh - 1) + 1 : sh, j : j + sw * (ow - 1) + 1 : sw]
                won = winners == i * kw + j
                window[won] = dy[won]  # the slip: = for +=
        (top, left), (height, width) = self.padding, self._x_shape[-2:]
        return dx[..., top : top + height, left : left + width]


class MaxPoolGradToWholeWindow(MaxPool2d):
    """Sends dy to every element of the window, as an (undivided) average pool would."""

    def _spread(self, xp, dy):
        k = self.kernel_size[0] * self.kernel_size[1]
        return xp.broadcast_to(dy[..., None, :, :], (*dy.shape[:-2], k, *dy.shape[-2:]))


class AvgPoolUndivided(AvgPool2d):
    """Forgets the 1 / (kh kw) of the mean in the backward pass."""

    def _spread(self, xp, dy):
        k = self.kernel_size[0] * self.kernel_size[1]
        return xp.broadcast_to(dy[..., None, :, :], (*dy.shape[:-2], k, *dy.shape[-2:]))


class BatchNormConstantStatistics(BatchNorm1d):
    """Treats the batch mean and variance as constants in training mode: dL/dx =
    dL/dxhat / sigma, the two mean terms of the batch-norm backward missing."""

    def backward(self, dy):
        super().backward(dy)
        return dy * self._scale * self._inv_std


class BatchNormMissingVarianceTerm(BatchNorm2d):
    """Keeps the mean's term but forgets that the variance depends on x."""

    def backward(self, dy):
        super().backward(dy)
        xp, axes = namespace(dy), (0, 2, 3)
        dxhat = dy * self._scale
        return self._inv_std * (dxhat - xp.mean(dxhat, axis=axes, keepdims=True))


class BatchNormGammaGradAveraged(BatchNorm1d):
    """dgamma averaged over the batch where it must be summed."""

    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = self.grads["weight"] / dy.shape[0]
        return dx


class LayerNormOverBatch(LayerNorm):
    """The layer-norm backward with batch-norm's axes: means over the batch, not over
    each example's features."""

    def backward(self, dy):
        super().backward(dy)
        xp = namespace(dy)
        dxhat = dy * self._scale
        mean = xp.mean(dxhat, axis=0, keepdims=True)
        mean_x = xp.mean(dxhat * self._xhat, axis=0, keepdims=True)
        return self._inv_std * (dxhat - mean - self._xhat * mean_x)


class GroupNormPerChannel(GroupNorm):
    """The group-norm backward with statistics per channel instead of per group."""

    def backward(self, dy):
        super().backward(dy)
        xp = namespace(dy)
        n, c = dy.shape[:2]
        dxhat = xp.reshape(dy * self._scale, (n, c, -1))
        xhat = xp.reshape(self._xhat, (n, c, -1))
        inv_std = xp.repeat(self._inv_std, c // self.num_groups, axis=1)
        mean = xp.mean(dxhat, axis=2, keepdims=True)
        mean_x = xp.mean(dxhat * xhat, axis=2, keepdims=True)
        return xp.reshape(inv_std * (dxhat - mean - xhat * mean_x), dy.shape)


class DropoutUnscaled(Dropout):
    """Dropout whose backward forgets the 1 / (1 - p) of the forward pass (its mask fixed,
    so that the check sees one function)."""

    def forward(self, x):
        self.generator = np.random.default_rng(7)
        return super().forward(x)

    def backward(self, dy):
        return dy * (self.mask != 0)


class FlattenChannelsLast(Flatten):
    """Reshapes the gradient back as (N, H, W, C) and moves the channels: the layout of
    the image mixed up, the shape right."""

    def backward(self, dy):
        n, c, h, w = self._x_shape
        return np.moveaxis(np.reshape(dy, (n, h, w, c)), -1, 1)


class LeakyReluZeroSlope(LeakyReLU):
    """ReLU's derivative: no gradient where x < 0."""

    def _backward(self, xp, y, dy):
        return xp.where(self._x > 0, dy, 0.0)


class EluWithoutAlpha(ELU):
    """exp(x) where alpha exp(x) belongs."""

    def _backward(self, xp, y, dy):
        return xp.where(self._x > 0, dy, dy * xp.exp(self._x))


class GeluOnlyCdf(GELU):
    """Only Phi(x), the x phi(x) of the product rule missing."""

    def _backward(self, xp, y, dy):
        return dy * self._cdf


class SiluOnlySigmoid(SiLU):
    """Only sigmoid(x), the x sigmoid'(x) of the product rule missing."""

    def _backward(self, xp, y, dy):
        return dy * self._sigmoid


class SoftplusWithoutBeta(Softplus):
    """sigmoid(x) where sigmoid(beta x) belongs."""

    def _backward(self, xp, y, dy):
        return dy / (1 + xp.exp(-self._x))


# name: (make the layer from a generator, the input's shape)
VISION_BUGS = {
    "conv kernel flipped in dW": (lambda rng: FlippedKernelGrad(2, 3, 3, rng=rng), (2, 2, 5, 5)),
    "conv1d kernel flipped in dW": (lambda rng: FlippedKernelGrad1d(2, 3, 3, rng=rng), (2, 2, 7)),
    "conv overlapping windows assigned": (
        lambda rng: ConvOverlapsAssigned(2, 3, 3, padding=1, rng=rng),
        (2, 2, 5, 5),
    ),
    "conv bias gradient averaged": (
        lambda rng: ConvBiasGradAveraged(2, 3, 3, rng=rng),
        (2, 2, 5, 5),
    ),
    "max pool overlapping windows assigned": (
        lambda rng: MaxPoolOverlapsAssigned(3, stride=1),
        (2, 2, 5, 5),
    ),
    "max pool gradient to the whole window": (
        lambda rng: MaxPoolGradToWholeWindow(2),
        (2, 2, 4, 4),
    ),
    "avg pool not divided by the window": (lambda rng: AvgPoolUndivided(2, 1), (2, 2, 4, 4)),
    "batch norm without the mean terms": (lambda rng: BatchNormConstantStatistics(3), (6, 3)),
    "batch norm without the variance term": (
        lambda rng: BatchNormMissingVarianceTerm(2),
        (3, 2, 3, 3),
    ),
    "batch norm gamma gradient averaged": (lambda rng: BatchNormGammaGradAveraged(3), (6, 3)),
    "layer norm with the batch's axes": (lambda rng: LayerNormOverBatch(4), (5, 4)),
    "group norm per channel": (lambda rng: GroupNormPerChannel(2, 4), (3, 4, 5)),
    "dropout backward unscaled": (lambda rng: DropoutUnscaled(0.4), (6, 5)),
    "flatten channels last": (lambda rng: FlattenChannelsLast(), (2, 3, 2, 2)),
    "leaky relu with relu's derivative": (lambda rng: LeakyReluZeroSlope(0.1), (4, 5)),
    "elu without alpha": (lambda rng: EluWithoutAlpha(2.0), (4, 5)),
    "gelu without x phi(x)": (lambda rng: GeluOnlyCdf(), (4, 5)),
    "silu without x sigmoid'(x)": (lambda rng: SiluOnlySigmoid(), (4, 5)),
    "softplus without beta": (lambda rng: SoftplusWithoutBeta(beta=2.0), (4, 5)),
}


# Slips in the sequence layers: each needs its own input, so each comes with one.


class EmbeddingOverwritesRepeats(Embedding):
    """dW[idx] = dy by fancy assignment: a row picked twice keeps one gradient, not the sum."""

    def backward_unchecked(self, dy, input_grad=True):
        grad = np.zeros_like(self.params["weight"])
        grad[self._idx.reshape(-1)] = dy.reshape(-1, self.embedding_dim)
        self.grads["weight"] = grad


class AttentionWithoutJacobianTerm(ScaledDotProductAttention):
    """dS = P * dP: the softmax Jacobian's -P rowsum(dP * P) term left out."""

    def backward_unchecked(self, dy, input_grad=True):
        q, k, v, p, scale = self._cache
        xp = namespace(dy)
        do = split_heads(xp, dy, self.num_heads)
        ds = p * (do @ v.mT) * scale
        grads = (ds @ k, ds.mT @ q, p.mT @ do)
        return xp.concat([merge_heads(xp, g) for g in grads], axis=-1)


class MaskAfterSoftmax(ScaledDotProductAttention):
    """The causal mask applied after the softmax (probabilities zeroed, rows no longer summing
    to 1), with the backward of a softmax whose mask came first."""

    def forward_unchecked(self, qkv):
        xp = namespace(qkv)
        width = qkv.shape[-1] // 3
        q, k, v = (
            split_heads(xp, qkv[..., i * width : (i + 1) * width], self.num_heads) for i in range(3)
        )
        scale = 1.0 / np.sqrt(width // self.num_heads)
        s = (q @ k.mT) * scale
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        p = e / e.sum(axis=-1, keepdims=True) * np.tril(np.ones(s.shape[-2:]))
        self._cache = (q, k, v, p, scale)
        self._y = merge_heads(xp, p @ v)
        return self._y


class LSTMGateOrder(LSTM):
    """The gate gradients stacked as (i, f, o, g) where the weights hold (i, f, g, o)."""

    def _step_back(self, xp, dh, dc_next, h_prev, cache):
        da, _, direct, dc = super()._step_back(xp, dh, dc_next, h_prev, cache)
        n = self.hidden_size
        da = xp.concat([da[..., : 2 * n], da[..., 3 * n :], da[..., 2 * n : 3 * n]], axis=-1)
        return da, da, direct, dc


class GRUResetBeforeBias(GRU):
    """The reset gate's derivative taken as if n = tanh(W_in x + b_in + W_hn (r h) + b_hn),
    the variant torch does not compute: dL/dr from hw_n without its bias."""

    def _step_back(self, xp, dh, dstate, h_prev, cache):
        r, z, new, hw_n = cache
        bias = self.params.get("bias_hh_l0")
        if bias is not None:
            hw_n = hw_n - bias[2 * self.hidden_size :]
        return super()._step_back(xp, dh, dstate, h_prev, (r, z, new, hw_n))


# name: (make the layer from a generator, the input shape)
SEQUENCE_BUGS = {
    "attention without the softmax Jacobian's second term": (
        lambda rng: AttentionWithoutJacobianTerm(2, causal=True),
        (2, 4, 12),
    ),
    "causal mask applied after the softmax": (lambda rng: MaskAfterSoftmax(2, True), (2, 4, 12)),
    "LSTM gates in the wrong order": (lambda rng: LSTMGateOrder(3, 4, rng=rng), (2, 4, 3)),
    "GRU reset gate without the hidden bias": (
        lambda rng: GRUResetBeforeBias(3, 4, rng=rng),
        (2, 4, 3),
    ),
}


class ForgottenTiedGradient(GPT):
    """The tied weight's gradient taken from the token embedding alone: the language-model
    head's use of the same array is dropped."""

    def backward_unchecked(self, dlogits, input_grad=True):
        super().backward_unchecked(dlogits, input_grad)
        self.lm_head.grads["weight"] = np.zeros_like(self.lm_head.grads["weight"])
