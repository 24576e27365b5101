"""A zoo of deliberately wrong backward passes: each one a slip people make, each one a
gradient check must catch."""

from __future__ import annotations

import numpy as np

from handgrad import Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.core.arrays import namespace


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
