"""A zoo of deliberately wrong backward passes: each one a slip people make, each one a
gradient check must catch."""

from __future__ import annotations

import numpy as np

from handgrad import Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
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
