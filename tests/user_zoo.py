"""A zoo of layers as people write them, outside handgrad: NumPy (and a few torch) classes
with nothing but ``params``, ``grads``, ``forward`` and ``backward``, in the styles of
course assignments and small libraries: axis=1 reductions, ``x.T``, ``reshape(N, -1)``,
batch statistics, in-place writes to caches, to the input and to ``dy``, dropout with a
fixed mask, convolution by loops and by im2col, overlapping max-pooling, RNN and LSTM
steps, embeddings of integer indices, float32 and torch tensors.

Each family has a right version and a wrong one (a slip people make); ``FAMILIES`` maps a
name to ``(make_right, make_wrong)``, each ``rng -> (layer, x)``. The checker must pass
every right one and catch every wrong one.
"""

from __future__ import annotations

import numpy as np

# --- dense layers ---------------------------------------------------------------------------


class DotLinear:
    """y = np.dot(x, W) + b, W (in, out): the CS231n style."""

    def __init__(self, rng, n_in=5, n_out=4):
        self.params = {"W": rng.standard_normal((n_in, n_out)), "b": rng.standard_normal(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return np.dot(x, self.params["W"]) + self.params["b"]

    def backward(self, dout):
        self.grads["W"] = np.dot(self.x.T, dout)
        self.grads["b"] = np.sum(dout, axis=0)
        return np.dot(dout, self.params["W"].T)


class DotLinearMeanBias(DotLinear):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = np.mean(dout, axis=0)  # the slip: a mean where a sum belongs
        return dx


class TorchStyleLinear:
    """y = x @ W.T + b with W (out, in), as torch.nn.Linear keeps it."""

    def __init__(self, rng, n_in=5, n_out=3):
        self.weight = rng.standard_normal((n_out, n_in)) * 0.5
        self.bias = rng.standard_normal(n_out)
        self.params = {"weight": self.weight, "bias": self.bias}  # the same arrays
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.weight.T + self.bias

    def backward(self, dy):
        self.grads["weight"] = dy.T @ self.x
        self.grads["bias"] = dy.sum(0)
        return dy @ self.weight


class TorchStyleLinearSignSlip(TorchStyleLinear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["weight"] = -self.grads["weight"]
        return dx


class TransposedLinear:
    """y = (W @ x.T).T + b: transposes everywhere; x square (batch = features)."""

    def __init__(self, rng, n=4):
        self.params = {"W": rng.standard_normal((n, n)), "b": rng.standard_normal(n)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return (self.params["W"] @ x.T).T + self.params["b"]

    def backward(self, dy):
        self.grads["W"] = (self.x.T @ dy).T
        self.grads["b"] = dy.sum(axis=0)
        return (self.params["W"].T @ dy.T).T


class TransposedLinearSlip(TransposedLinear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["W"] = self.x.T @ dy  # fits the square shape, transposed values
        return dx


class AffineReshape:
    """CS231n's affine_forward: x (N, d1, ..., dk) flattened with reshape(N, -1)."""

    def __init__(self, rng, shape=(2, 3, 2), n_out=3):
        size = int(np.prod(shape))
        self.params = {"w": rng.standard_normal((size, n_out)), "b": rng.standard_normal(n_out)}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x.reshape(x.shape[0], -1).dot(self.params["w"]) + self.params["b"]

    def backward(self, dout):
        x = self.x
        self.grads["w"] = x.reshape(x.shape[0], -1).T.dot(dout)
        self.grads["b"] = np.sum(dout, axis=0)
        return dout.dot(self.params["w"].T).reshape(x.shape)


class AffineReshapeSlip(AffineReshape):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["w"] /= self.x.shape[0]  # averaged over the batch
        return dx


class ScalarScale:
    """y = s * x with s a 0-d parameter."""

    def __init__(self, rng):
        self.params = {"s": np.array(rng.standard_normal())}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return self.params["s"] * x

    def backward(self, dy):
        self.grads["s"] = np.array(np.sum(dy * self.x))
        return self.params["s"] * dy


class ScalarScaleSlip(ScalarScale):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["s"] = np.array(np.mean(dy * self.x))
        return dx


# --- activations, in place --------------------------------------------------------------------


class ReluWritesDy:
    """dx = dout; dx[x <= 0] = 0: writes into the upstream gradient."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        return np.maximum(0, x)

    def backward(self, dout):
        dx = dout
        dx[self.x <= 0] = 0
        return dx


class ReluMaskFromDy(ReluWritesDy):
    def backward(self, dout):
        dx = dout
        dx[dout <= 0] = 0  # the slip: the mask from dout, not from x
        return dx


class ReluOverwritesInput:
    """np.maximum(x, 0, out=x): the forward overwrites its own input."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        np.maximum(x, 0, out=x)
        self.out = x
        return x

    def backward(self, dout):
        return dout * (self.out > 0)


class ReluOverwritesInputSlip(ReluOverwritesInput):
    def backward(self, dout):
        return dout


class TanhBuffer:
    """Writes its output into one preallocated buffer and returns it at every call."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}
        self.out = None

    def forward(self, x):
        if self.out is None or self.out.shape != x.shape:
            self.out = np.empty_like(x)
        np.tanh(x, out=self.out)
        self.y = self.out.copy()
        return self.out

    def backward(self, dout):
        return dout * (1 - self.y**2)


class TanhBufferSlip(TanhBuffer):
    def backward(self, dout):
        return dout * (1 - self.y)


# --- reductions over features and softmax ------------------------------------------------------


class SoftmaxTransposes:
    """Row softmax computed through transposes, reductions over axis=1."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        e = np.exp((x.T - x.max(axis=1)).T)
        self.s = (e.T / e.sum(axis=1)).T
        return self.s

    def backward(self, dout):
        s = self.s
        return s * (dout - (dout * s).sum(axis=1, keepdims=True))


class SoftmaxDiagonalSlip(SoftmaxTransposes):
    def backward(self, dout):
        return self.s * (1 - self.s) * dout


class SoftmaxInPlace:
    """x -= x.max(axis=1, keepdims=True) and the rest in place: overwrites the input."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        x -= x.max(axis=1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=1, keepdims=True)
        self.s = x
        return x

    def backward(self, dout):
        dx = self.s * dout
        dx -= self.s * np.sum(dx, axis=1, keepdims=True)
        return dx


class SoftmaxInPlaceSlip(SoftmaxInPlace):
    def backward(self, dout):
        return self.s * dout


class FeatureMean:
    """y = x.mean(axis=1): one number per sample."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=1)

    def backward(self, dout):
        return np.repeat(dout[:, None], self.shape[1], axis=1) / self.shape[1]


class FeatureMeanSlip(FeatureMean):
    def backward(self, dout):
        return np.repeat(dout[:, None], self.shape[1], axis=1)


class LayerNorm:
    """Normalisation over features (axis=1), gamma and beta."""

    def __init__(self, rng, d=5, eps=1e-5):
        self.params = {"gamma": 1 + 0.1 * rng.standard_normal(d), "beta": rng.standard_normal(d)}
        self.grads, self.eps = {}, eps

    def forward(self, x):
        mu = x.mean(axis=1, keepdims=True)
        var = x.var(axis=1, keepdims=True)
        self.inv = 1 / np.sqrt(var + self.eps)
        self.xhat = (x - mu) * self.inv
        return self.params["gamma"] * self.xhat + self.params["beta"]

    def backward(self, dout):
        d = dout.shape[1]
        self.grads["gamma"] = np.sum(dout * self.xhat, axis=0)
        self.grads["beta"] = np.sum(dout, axis=0)
        dxhat = dout * self.params["gamma"]
        return (
            self.inv
            / d
            * (
                d * dxhat
                - dxhat.sum(axis=1, keepdims=True)
                - self.xhat * (dxhat * self.xhat).sum(axis=1, keepdims=True)
            )
        )


class LayerNormSlip(LayerNorm):
    def backward(self, dout):
        super().backward(dout)
        dxhat = dout * self.params["gamma"]
        d = dout.shape[1]
        return self.inv / d * (d * dxhat - dxhat.sum(axis=1, keepdims=True))  # no variance term


# --- batch statistics -----------------------------------------------------------------------


class BatchCenter:
    """y = x - x.mean(axis=0): every sample depends on the batch."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        return x - x.mean(axis=0)

    def backward(self, dout):
        return dout - dout.mean(axis=0)


class BatchCenterSlip(BatchCenter):
    def backward(self, dout):
        return dout


class BatchNormTrain:
    """Batch normalisation in training mode: batch mean and variance over axis 0, running
    statistics updated at every forward (an attribute and a buffers dict, in place), the
    normalised input written into a cache buffer."""

    def __init__(self, rng, d=4, eps=1e-5, momentum=0.9):
        self.params = {"gamma": 1 + 0.1 * rng.standard_normal(d), "beta": rng.standard_normal(d)}
        self.grads = {}
        self.running_mean = np.zeros(d)
        self.buffers = {"running_var": np.ones(d)}
        self.eps, self.momentum, self.training = eps, momentum, True
        self.cache = None

    def forward(self, x):
        mu, var = x.mean(axis=0), x.var(axis=0)
        self.running_mean = self.momentum * self.running_mean + (1 - self.momentum) * mu
        self.buffers["running_var"] *= self.momentum
        self.buffers["running_var"] += (1 - self.momentum) * var
        if self.cache is None or self.cache.shape != x.shape:
            self.cache = np.empty_like(x)
        self.inv = 1 / np.sqrt(var + self.eps)
        self.cache[...] = (x - mu) * self.inv  # xhat, in place
        return self.params["gamma"] * self.cache + self.params["beta"]

    def backward(self, dout):
        n, xhat = dout.shape[0], self.cache
        self.grads["gamma"] = np.sum(dout * xhat, axis=0)
        self.grads["beta"] = np.sum(dout, axis=0)
        dxhat = dout * self.params["gamma"]
        return self.inv / n * (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0))


class BatchNormStatsAsConstants(BatchNormTrain):
    def backward(self, dout):
        super().backward(dout)
        return dout * self.params["gamma"] * self.inv  # the slip: mean and variance as constants


# --- dropout --------------------------------------------------------------------------------


class DropoutFixedMask:
    """Inverted dropout whose mask comes from a fixed seed: the same mask at every call."""

    def __init__(self, rng, p=0.5, seed=3):
        self.params, self.grads, self.p, self.seed = {}, {}, p, seed

    def forward(self, x):
        self.mask = (np.random.default_rng(self.seed).random(x.shape) >= self.p) / (1 - self.p)
        return x * self.mask

    def backward(self, dout):
        return dout * self.mask


class DropoutUnscaledSlip(DropoutFixedMask):
    def backward(self, dout):
        return dout * (self.mask > 0)  # forgets the 1 / (1 - p)


# --- convolution and pooling ----------------------------------------------------------------


def _pad(x, pad):
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))


class ConvLoops:
    """Naive 2-D convolution (cross-correlation), stride 1, padding 1, by loops."""

    def __init__(self, rng, c=2, f=2, k=3):
        self.params = {"w": rng.standard_normal((f, c, k, k)) * 0.5, "b": rng.standard_normal(f)}
        self.grads = {}

    def forward(self, x):
        w, b = self.params["w"], self.params["b"]
        n, _, h, wd = x.shape
        f, _, k, _ = w.shape
        self.xp = _pad(x, 1)
        out = np.zeros((n, f, h + 2 - k + 1, wd + 2 - k + 1))
        for i in range(n):
            for j in range(f):
                for r in range(out.shape[2]):
                    for s in range(out.shape[3]):
                        out[i, j, r, s] = np.sum(self.xp[i, :, r : r + k, s : s + k] * w[j]) + b[j]
        return out

    def backward(self, dout):
        w = self.params["w"]
        k = w.shape[2]
        dxp, dw = np.zeros_like(self.xp), np.zeros_like(w)
        for i in range(dout.shape[0]):
            for j in range(w.shape[0]):
                for r in range(dout.shape[2]):
                    for s in range(dout.shape[3]):
                        dw[j] += self.xp[i, :, r : r + k, s : s + k] * dout[i, j, r, s]
                        dxp[i, :, r : r + k, s : s + k] += w[j] * dout[i, j, r, s]
        self.grads["w"], self.grads["b"] = dw, dout.sum(axis=(0, 2, 3))
        return dxp[:, :, 1:-1, 1:-1]


class ConvLoopsOverwriteSlip(ConvLoops):
    def backward(self, dout):
        dx = super().backward(dout)
        w, k = self.params["w"], self.params["w"].shape[2]
        dw = np.zeros_like(w)
        for i in range(dout.shape[0]):
            for j in range(w.shape[0]):
                for r in range(dout.shape[2]):
                    for s in range(dout.shape[3]):
                        dw[j] = self.xp[i, :, r : r + k, s : s + k] * dout[i, j, r, s]  # = not +=
        self.grads["w"] = dw
        return dx


def _im2col(xp, k):
    n, c, h, w = xp.shape
    oh, ow = h - k + 1, w - k + 1
    cols = np.empty((n, c, k, k, oh, ow))
    for a in range(k):
        for b in range(k):
            cols[:, :, a, b] = xp[:, :, a : a + oh, b : b + ow]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n * oh * ow, -1)


class ConvIm2col:
    """2-D convolution by im2col and one matrix product, stride 1, padding 1."""

    def __init__(self, rng, c=2, f=3, k=3):
        self.params = {"w": rng.standard_normal((f, c, k, k)) * 0.5, "b": rng.standard_normal(f)}
        self.grads = {}

    def forward(self, x):
        w = self.params["w"]
        n, _, h, wd = x.shape
        f, _, k, _ = w.shape
        self.shape = x.shape
        self.cols = _im2col(_pad(x, 1), k)  # N*OH*OW, C*k*k
        out = self.cols @ w.reshape(f, -1).T + self.params["b"]
        return out.reshape(n, h, wd, f).transpose(0, 3, 1, 2)

    def backward(self, dout):
        w = self.params["w"]
        f, c, k, _ = w.shape
        n, _, h, wd = self.shape
        d = dout.transpose(0, 2, 3, 1).reshape(-1, f)
        self.grads["w"] = (d.T @ self.cols).reshape(w.shape)
        self.grads["b"] = d.sum(axis=0)
        dcols = (d @ w.reshape(f, -1)).reshape(n, h, wd, c, k, k).transpose(0, 3, 4, 5, 1, 2)
        dxp = np.zeros((n, c, h + 2, wd + 2))
        for a in range(k):
            for b in range(k):
                self._scatter(dxp, dcols, a, b, h, wd)
        return dxp[:, :, 1:-1, 1:-1]

    def _scatter(self, dxp, dcols, a, b, h, wd):
        dxp[:, :, a : a + h, b : b + wd] += dcols[:, :, a, b]


class ConvIm2colOverwriteSlip(ConvIm2col):
    def _scatter(self, dxp, dcols, a, b, h, wd):
        dxp[:, :, a : a + h, b : b + wd] = dcols[:, :, a, b]  # col2im that overwrites


class MaxPoolOverlap:
    """Max-pooling with overlapping windows (2x2, stride 1), by loops."""

    def __init__(self, rng, k=2, stride=1):
        self.params, self.grads, self.k, self.stride = {}, {}, k, stride

    def forward(self, x):
        n, c, h, w = x.shape
        k, st = self.k, self.stride
        oh, ow = (h - k) // st + 1, (w - k) // st + 1
        self.x, out = x, np.empty((n, c, oh, ow))
        for r in range(oh):
            for s in range(ow):
                out[:, :, r, s] = x[:, :, r * st : r * st + k, s * st : s * st + k].max(axis=(2, 3))
        return out

    def backward(self, dout):
        x, k, st = self.x, self.k, self.stride
        dx = np.zeros_like(x)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                for r in range(dout.shape[2]):
                    for s in range(dout.shape[3]):
                        window = x[i, j, r * st : r * st + k, s * st : s * st + k]
                        a, b = np.unravel_index(np.argmax(window), window.shape)
                        self._route(dx, i, j, r * st + a, s * st + b, dout[i, j, r, s])
        return dx

    def _route(self, dx, i, j, a, b, g):
        dx[i, j, a, b] += g


class MaxPoolOverwriteSlip(MaxPoolOverlap):
    def _route(self, dx, i, j, a, b, g):
        dx[i, j, a, b] = g  # overlapping windows: = loses a window's share


# --- recurrent steps and embeddings ----------------------------------------------------------


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


class RnnStep:
    """h = tanh(x Wx + h_prev Wh + b), h_prev a fixed attribute."""

    def __init__(self, rng, d=3, hidden=4, batch=3):
        self.params = {
            "Wx": rng.standard_normal((d, hidden)) * 0.5,
            "Wh": rng.standard_normal((hidden, hidden)) * 0.5,
            "b": rng.standard_normal(hidden) * 0.1,
        }
        self.h_prev = rng.standard_normal((batch, hidden))
        self.grads = {}

    def forward(self, x):
        p = self.params
        self.x, self.h = x, np.tanh(x @ p["Wx"] + self.h_prev @ p["Wh"] + p["b"])
        return self.h

    def backward(self, dh):
        dz = dh * (1 - self.h**2)
        self.grads = {"Wx": self.x.T @ dz, "Wh": self.h_prev.T @ dz, "b": dz.sum(axis=0)}
        return dz @ self.params["Wx"].T


class RnnStepSlip(RnnStep):
    def backward(self, dh):
        dz = dh * (1 - self.h)  # the slip
        self.grads = {"Wx": self.x.T @ dz, "Wh": self.h_prev.T @ dz, "b": dz.sum(axis=0)}
        return dz @ self.params["Wx"].T


class LstmStep:
    """One LSTM step returning [next_h, next_c]; backward adds into its slice of dy in
    place (``dnext_c += ...``), as CS231n's lstm_step_backward does with its arguments."""

    def __init__(self, rng, d=3, hidden=2, batch=3):
        self.params = {
            "Wx": rng.standard_normal((d, 4 * hidden)) * 0.5,
            "Wh": rng.standard_normal((hidden, 4 * hidden)) * 0.5,
            "b": rng.standard_normal(4 * hidden) * 0.1,
        }
        self.prev_h = rng.standard_normal((batch, hidden))
        self.prev_c = rng.standard_normal((batch, hidden))
        self.grads = {}

    def forward(self, x):
        p, hd = self.params, self.prev_h.shape[1]
        a = x @ p["Wx"] + self.prev_h @ p["Wh"] + p["b"]
        i, f = _sigmoid(a[:, :hd]), _sigmoid(a[:, hd : 2 * hd])
        o, g = _sigmoid(a[:, 2 * hd : 3 * hd]), np.tanh(a[:, 3 * hd :])
        c = f * self.prev_c + i * g
        h = o * np.tanh(c)
        self.cache = (x, i, f, o, g, c)
        return np.concatenate([h, c], axis=1)

    def backward(self, dout):
        x, i, f, o, g, c = self.cache
        hd = c.shape[1]
        dnext_h, dnext_c = dout[:, :hd], dout[:, hd:]  # views of dy
        dnext_c += self._dc_from_h(dnext_h, o, c)  # written into dy
        da = np.concatenate(
            [
                dnext_c * g * i * (1 - i),
                dnext_c * self.prev_c * f * (1 - f),
                dnext_h * np.tanh(c) * o * (1 - o),
                dnext_c * i * (1 - g**2),
            ],
            axis=1,
        )
        self.grads = {"Wx": x.T @ da, "Wh": self.prev_h.T @ da, "b": da.sum(axis=0)}
        return da @ self.params["Wx"].T

    def _dc_from_h(self, dnext_h, o, c):
        return dnext_h * o * (1 - np.tanh(c) ** 2)


class LstmStepSlip(LstmStep):
    def _dc_from_h(self, dnext_h, o, c):
        return dnext_h * o  # forgets tanh's derivative


class Embedding:
    """y = W[x] for integer indices x (N, T); dW by np.add.at, so repeats add up."""

    def __init__(self, rng, vocab=5, d=3):
        self.params = {"W": rng.standard_normal((vocab, d))}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return self.params["W"][x]

    def backward(self, dout):
        dW = np.zeros_like(self.params["W"])
        np.add.at(dW, self.x, dout)
        self.grads["W"] = dW
        return None  # no gradient for indices


class EmbeddingBufferedSlip(Embedding):
    def backward(self, dout):
        dW = np.zeros_like(self.params["W"])
        dW[self.x] += dout  # buffered: a repeated index counts once
        self.grads["W"] = dW


class SoftmaxLossRows:
    """Per-sample softmax cross-entropy: y (N,) for logits x (N, C), fixed targets."""

    def __init__(self, rng, classes=4, batch=5):
        self.params, self.grads = {}, {}
        self.target = rng.integers(0, classes, batch)

    def forward(self, x):
        shifted = x - x.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        self.p = np.exp(logp)
        return -logp[np.arange(x.shape[0]), self.target]

    def backward(self, dout):
        dx = self.p.copy()
        dx[np.arange(dx.shape[0]), self.target] -= 1
        return dx * dout[:, None]


class SoftmaxLossRowsSlip(SoftmaxLossRows):
    def backward(self, dout):
        dx = self.p.copy()
        dx[np.arange(dx.shape[0]), self.target] -= 1
        return dx / dx.shape[0]  # the upstream gradient forgotten


class Attention:
    """Single-head self-attention on (B, T, D): softmax(Q K^T / sqrt(D)) V."""

    def __init__(self, rng, d=4):
        self.params = {k: rng.standard_normal((d, d)) * 0.5 for k in ("Wq", "Wk", "Wv")}
        self.grads = {}

    def forward(self, x):
        p = self.params
        self.x = x
        self.q, self.k, self.v = x @ p["Wq"], x @ p["Wk"], x @ p["Wv"]
        scores = self.q @ np.swapaxes(self.k, -1, -2) / np.sqrt(x.shape[-1])
        scores = scores - scores.max(axis=-1, keepdims=True)
        e = np.exp(scores)
        self.a = e / e.sum(axis=-1, keepdims=True)
        return self.a @ self.v

    def backward(self, dy):
        p, x, scale = self.params, self.x, 1 / np.sqrt(self.x.shape[-1])
        da = dy @ np.swapaxes(self.v, -1, -2)
        dv = np.swapaxes(self.a, -1, -2) @ dy
        ds = self._softmax_backward(da) * scale
        dq, dk = ds @ self.k, np.swapaxes(ds, -1, -2) @ self.q
        flat = x.reshape(-1, x.shape[-1])
        for name, d in (("Wq", dq), ("Wk", dk), ("Wv", dv)):
            self.grads[name] = flat.T @ d.reshape(-1, d.shape[-1])
        return dq @ p["Wq"].T + dk @ p["Wk"].T + dv @ p["Wv"].T

    def _softmax_backward(self, da):
        return self.a * (da - (da * self.a).sum(axis=-1, keepdims=True))


class AttentionSoftmaxSlip(Attention):
    def _softmax_backward(self, da):
        return self.a * da  # forgets the normalisation term


# --- float32 and torch ------------------------------------------------------------------------


class Float32Linear(DotLinear):
    """DotLinear with float32 parameters, for float32 input."""

    def __init__(self, rng, n_in=5, n_out=4):
        super().__init__(rng, n_in, n_out)
        self.params = {k: v.astype(np.float32) for k, v in self.params.items()}


class Float32LinearSlip(Float32Linear):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["b"] = self.grads["b"] / dout.shape[0]
        return dx


class Float32Internal:
    """Computes in float32 whatever it is given: x and W cast down inside forward."""

    def __init__(self, rng, n_in=5, n_out=4):
        self.params = {"W": rng.standard_normal((n_in, n_out))}
        self.grads = {}

    def forward(self, x):
        self.x32 = x.astype(np.float32)
        self.y = np.tanh(self.x32 @ self.params["W"].astype(np.float32))
        return self.y

    def backward(self, dout):
        dz = (dout * (1 - self.y.astype(np.float64) ** 2)).astype(np.float32)
        self.grads["W"] = (self.x32.T @ dz).astype(np.float64)
        return (dz @ self.params["W"].astype(np.float32).T).astype(np.float64)


class Float32InternalSlip(Float32Internal):
    def backward(self, dout):
        dx = super().backward(dout)
        self.grads["W"] = -self.grads["W"]
        return dx


def _torch():
    import torch

    return torch


class TorchLinear:
    """x @ W + b on torch tensors whose parameters require grad."""

    def __init__(self, rng, n_in=5, n_out=3):
        torch = _torch()
        self.params = {
            "W": torch.tensor(rng.standard_normal((n_in, n_out)), requires_grad=True),
            "b": torch.tensor(rng.standard_normal(n_out), requires_grad=True),
        }
        self.grads = {}

    def forward(self, x):
        self.x = x
        return x @ self.params["W"] + self.params["b"]

    def backward(self, dy):
        self.grads["W"] = self.x.T @ dy
        self.grads["b"] = dy.sum(0)
        return dy @ self.params["W"].T


class TorchLinearSlip(TorchLinear):
    def backward(self, dy):
        dx = super().backward(dy)
        self.grads["b"] = dy.mean(0)
        return dx


class TorchSoftmax:
    """torch.softmax(x, dim=1) with a hand-written backward."""

    def __init__(self, rng):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.s = _torch().softmax(x, dim=1)
        return self.s

    def backward(self, dy):
        return self.s * (dy - (dy * self.s).sum(dim=1, keepdim=True))


class TorchSoftmaxSlip(TorchSoftmax):
    def backward(self, dy):
        return self.s * (1 - self.s) * dy


# --- the families: (make_right, make_wrong), each rng -> (layer, x) --------------------------


def _normal(*shape):
    return lambda rng: rng.standard_normal(shape)


def _family(right, wrong, x, **kwargs):
    def make(cls):
        def build(rng):
            layer = cls(rng, **kwargs)
            return layer, x(rng)

        return build

    return make(right), make(wrong)


def _torch_x(*shape):
    return lambda rng: _torch().tensor(rng.standard_normal(shape))


FAMILIES = {
    "dot linear (np.dot, batch sum)": _family(DotLinear, DotLinearMeanBias, _normal(6, 5)),
    "torch-style linear (x @ W.T)": _family(
        TorchStyleLinear, TorchStyleLinearSignSlip, _normal(4, 5)
    ),
    "x.T with batch = features": _family(TransposedLinear, TransposedLinearSlip, _normal(4, 4)),
    "affine with reshape(N, -1)": _family(AffineReshape, AffineReshapeSlip, _normal(3, 2, 3, 2)),
    "0-d parameter": _family(ScalarScale, ScalarScaleSlip, _normal(3, 4)),
    "relu writing into dy": _family(ReluWritesDy, ReluMaskFromDy, _normal(4, 5)),
    "relu overwriting its input": _family(
        ReluOverwritesInput, ReluOverwritesInputSlip, _normal(4, 5)
    ),
    "tanh into a reused buffer": _family(TanhBuffer, TanhBufferSlip, _normal(4, 5)),
    "softmax by transposes (axis=1)": _family(
        SoftmaxTransposes, SoftmaxDiagonalSlip, _normal(4, 5)
    ),
    "softmax in place": _family(SoftmaxInPlace, SoftmaxInPlaceSlip, _normal(4, 5)),
    "mean over axis=1": _family(FeatureMean, FeatureMeanSlip, _normal(4, 5)),
    "layer norm (axis=1)": _family(LayerNorm, LayerNormSlip, _normal(4, 5)),
    "batch centring (axis=0)": _family(BatchCenter, BatchCenterSlip, _normal(5, 3)),
    "batch norm, train mode": _family(BatchNormTrain, BatchNormStatsAsConstants, _normal(6, 4)),
    "dropout, fixed mask": _family(DropoutFixedMask, DropoutUnscaledSlip, _normal(4, 5)),
    "conv by loops": _family(ConvLoops, ConvLoopsOverwriteSlip, _normal(1, 2, 3, 3)),
    "conv by im2col": _family(ConvIm2col, ConvIm2colOverwriteSlip, _normal(2, 2, 4, 4)),
    "max-pool, overlapping windows": _family(
        MaxPoolOverlap, MaxPoolOverwriteSlip, _normal(1, 1, 4, 4)
    ),
    "rnn step": _family(RnnStep, RnnStepSlip, _normal(3, 3)),
    "lstm step, writes into dy": _family(LstmStep, LstmStepSlip, _normal(3, 3)),
    "embedding of integer indices": _family(
        Embedding, EmbeddingBufferedSlip, lambda rng: rng.integers(0, 5, (3, 4))
    ),
    "per-sample softmax loss": _family(SoftmaxLossRows, SoftmaxLossRowsSlip, _normal(5, 4)),
    "self-attention": _family(Attention, AttentionSoftmaxSlip, _normal(2, 3, 4)),
    "float32 parameters and input": _family(
        Float32Linear, Float32LinearSlip, lambda rng: rng.standard_normal((4, 5)).astype(np.float32)
    ),
    "computes in float32 inside": _family(Float32Internal, Float32InternalSlip, _normal(4, 5)),
    "torch linear, requires_grad": _family(TorchLinear, TorchLinearSlip, _torch_x(4, 5)),
    "torch softmax (dim=1)": _family(TorchSoftmax, TorchSoftmaxSlip, _torch_x(4, 5)),
}
