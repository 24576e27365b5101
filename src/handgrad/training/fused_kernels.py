"""The compiled training loop behind :mod:`handgrad.training.fused`: numba, BLAS (through
``np.dot``) for the matrix products and one fused loop for everything else.

:func:`train_batches` runs the steps of an epoch's batch order without returning to
Python: gather the rows, forward through Linear layers and activations, the loss and its
gradient, backward, the L2 penalty, and the optimizer's update, each the reference path's
formula (``nn.layers``, ``nn.losses``, ``training.step``, ``training.optim``) written
element by element. Compiled on first use and cached on disk (``cache=True``: next to this
file, or in numba's per-user cache where the package is read-only). Imported only when
numba is installed.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["ACTIVATIONS", "LOSSES", "OPTIMIZERS", "train_batches"]

# activation codes: the layer after each Linear (IDENTITY: none, or the last Linear)
IDENTITY, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, GELU, GELU_TANH, SILU, SOFTPLUS = range(10)
ACTIVATIONS = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "elu": ELU,
    "gelu": GELU,
    "gelu_tanh": GELU_TANH,
    "silu": SILU,
    "softplus": SOFTPLUS,
}
CROSS_ENTROPY, SQUARED_ERROR, BINARY_CROSS_ENTROPY = range(3)
LOSSES = {"cross_entropy": CROSS_ENTROPY, "mse": SQUARED_ERROR, "bce": BINARY_CROSS_ENTROPY}
PLAIN, MOMENTUM, ADAM = range(3)
OPTIMIZERS = {"sgd": PLAIN, "momentum": MOMENTUM, "adam": ADAM}

_ROOT_2_OVER_PI = math.sqrt(2 / math.pi)
_ROOT_HALF = math.sqrt(0.5)
_ROOT_2PI = math.sqrt(2 * math.pi)
_KAPPA = 0.044715

# exp(u) = 2^k exp(r), k = round(u / ln 2), r = u - k ln 2 in two parts (Cody and Waite),
# exp(r) by its Taylor series to r^13 (|r| <= ln 2 / 2: the rest is below 1e-17)
_LOG2E = 1.4426950408889634
_LN2_HIGH = 6.93147180369123816490e-01
_LN2_LOW = 1.90821492927058770002e-10
_INVERSE_FACTORIALS = tuple(1 / math.factorial(n) for n in range(14))

_jit = numba.njit(cache=True, nogil=True)


@_jit
def _activate(code, x, a, b):
    """The activation of one pre-activation ``x`` (``a``, ``b``: the layer's options)."""
    if code == SIGMOID:
        return 1 / (math.exp(-max(x, -700.0)) + 1)
    if code == TANH:
        return math.tanh(x)
    if code == RELU:
        return x if x > 0 else 0.0
    if code == LEAKY_RELU:
        return x if x > 0 else x * a
    if code == ELU:
        return x if x > 0 else a * math.expm1(min(x, 0.0))
    if code == GELU:
        return x * (0.5 * (1 + math.erf(x * _ROOT_HALF)))
    if code == GELU_TANH:
        return 0.5 * x * (1 + math.tanh(_ROOT_2_OVER_PI * (x + _KAPPA * x * x * x)))
    if code == SILU:
        e = math.exp(-abs(x))
        return x * ((1.0 if x >= 0 else e) / (1 + e))
    if code == SOFTPLUS:  # a = beta, b = threshold
        bx = a * x
        return x if bx > b else math.log1p(math.exp(min(bx, b))) / a
    return x


@_jit
def _derivative(code, dy, x, y, a, b):
    """dL/dx from dL/dy, the input ``x`` and the output ``y``, as the layers' backward."""
    if code == SIGMOID:  # dy/dx = y (1 - y)
        return dy * y * (1 - y)
    if code == TANH:  # 1 - y^2
        return dy * (1 - y * y)
    if code == RELU:
        return dy if y > 0 else 0.0
    if code == LEAKY_RELU:
        return dy if x > 0 else dy * a
    if code == ELU:  # alpha exp(x) below 0
        return dy if x > 0 else dy * (a * math.exp(min(x, 0.0)))
    if code == GELU:  # Phi(x) + x phi(x)
        cdf = 0.5 * (1 + math.erf(x * _ROOT_HALF))
        return dy * (cdf + x * math.exp(-0.5 * x * x) / _ROOT_2PI)
    if code == GELU_TANH:  # (1 + t) / 2 + x / 2 (1 - t^2) du/dx
        t = math.tanh(_ROOT_2_OVER_PI * (x + _KAPPA * x * x * x))
        du = _ROOT_2_OVER_PI * (1 + 3 * _KAPPA * x * x)
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du)
    if code == SILU:  # s (1 + x (1 - s))
        e = math.exp(-abs(x))
        s = (1.0 if x >= 0 else e) / (1 + e)
        return dy * s * (1 + x * (1 - s))
    if code == SOFTPLUS:  # sigmoid(beta x); 1 where y = x
        bx = a * x
        if bx > b:
            return dy
        z = math.exp(min(bx, b))
        return dy * z / (z + 1)
    return dy


@_jit
def _sigmoid_rows(z, bias, y, powers):
    """``z += bias``, ``y = 1 / (1 + exp(-max(z, -700)))`` with an exp that LLVM can
    vectorise (libm's cannot be): the polynomial in one loop, the power of two built
    from its bits in ``powers`` (int64 scratch) and applied in a second. Within 2 ulp
    of libm's exp; where the argument is clamped at -708 the sigmoid is 1 either way."""
    rows, columns = z.shape
    bits = powers[:columns]
    scale = bits.view(np.float64)
    c = _INVERSE_FACTORIALS
    for i in range(rows):
        for j in range(columns):
            v = z[i, j] + bias[j]
            z[i, j] = v
            u = max(min(-v, 700.0), -708.0)
            k = np.floor(u * _LOG2E + 0.5)
            r = (u - k * _LN2_HIGH) - k * _LN2_LOW
            p = c[13]
            for n in range(12, -1, -1):
                p = p * r + c[n]
            bits[j] = (np.int64(k) + 1023) << 52
            y[i, j] = p
        for j in range(columns):
            y[i, j] = 1 / (y[i, j] * scale[j] + 1)


@_jit
def _forward_rows(code, z, bias, y, a, b, powers):
    """``z += bias`` and ``y = activation(z)`` over a batch, one loop per activation (the
    branch out of the loop, so that LLVM can vectorise the simple ones)."""
    rows, columns = z.shape
    if code == RELU:
        for i in range(rows):
            for j in range(columns):
                v = z[i, j] + bias[j]
                z[i, j] = v
                y[i, j] = v if v > 0 else 0.0
    elif code == SIGMOID:
        _sigmoid_rows(z, bias, y, powers)
    elif code == TANH:
        for i in range(rows):
            for j in range(columns):
                v = z[i, j] + bias[j]
                z[i, j] = v
                y[i, j] = math.tanh(v)
    else:
        for i in range(rows):
            for j in range(columns):
                v = z[i, j] + bias[j]
                z[i, j] = v
                y[i, j] = _activate(code, v, a, b)


@_jit
def _backward_rows(code, d, z, y, a, b):
    """``d = dL/dz`` from ``d = dL/dy`` in place, one loop per common activation."""
    rows, columns = d.shape
    if code == RELU:
        for i in range(rows):
            for j in range(columns):
                d[i, j] = d[i, j] if y[i, j] > 0 else 0.0
    elif code == SIGMOID:
        for i in range(rows):
            for j in range(columns):
                d[i, j] = d[i, j] * y[i, j] * (1 - y[i, j])
    elif code == TANH:
        for i in range(rows):
            for j in range(columns):
                d[i, j] = d[i, j] * (1 - y[i, j] * y[i, j])
    else:
        for i in range(rows):
            for j in range(columns):
                d[i, j] = _derivative(code, d[i, j], z[i, j], y[i, j], a, b)


@_jit
def _loss(code, z, t, w, scale, factor, grad):
    """The loss of the batch's outputs ``z`` against targets ``t`` (rows weighted by
    ``w``), times ``factor``; writes dL/dz into ``grad``."""
    rows, columns = z.shape
    weighted = w.shape[0] > 0
    total = 0.0
    for i in range(rows):
        wi = w[i] if weighted else 1.0
        if code == CROSS_ENTROPY:
            # L = -sum t log softmax(z);  dL/dz = p sum_j t_j - t
            top = z[i, 0]
            for j in range(1, columns):
                top = max(top, z[i, j])
            s = 0.0
            for j in range(columns):
                e = math.exp(z[i, j] - top)
                grad[i, j] = e
                s += e
            log_s, mass = math.log(s), 0.0
            for j in range(columns):
                mass += t[i, j] * wi
            for j in range(columns):
                log_p = (z[i, j] - top) - log_s
                tij = t[i, j] * wi
                total -= tij * log_p
                # p = exp(z - top) / s: exp(log_p) to an ulp, without a second exp
                grad[i, j] = factor * ((grad[i, j] / s * mass - tij) * scale)
        elif code == SQUARED_ERROR:
            # L = sum w (z - t)^2;  dL/dz = 2 w (z - t)
            for j in range(columns):
                diff = z[i, j] - t[i, j]
                total += diff * (diff * wi)
                grad[i, j] = factor * (2 * (diff * wi) * scale)
        else:
            # L = w [(1 - t) z + softplus(-z)];  dL/dz = w [(1 - t) - sigmoid(-z)]
            for j in range(columns):
                v, tij = z[i, j], t[i, j]
                e = math.exp(-abs(v))
                total += ((1 - tij) * v + (max(-v, 0.0) + math.log1p(e))) * wi
                sig = (1.0 if -v >= 0 else e) / (1 + e)
                grad[i, j] = factor * (((1 - tij) - sig) * wi * scale)
    return factor * (total * scale)


@_jit
def _update(p, g, s1, s2, kind, lr, hyper, l2, shrink, fresh, step_size, root):
    """The optimizer's update of one parameter (a matrix; a bias as one row), from its
    loss gradient ``g`` plus ``l2 * p`` (the penalty), with state ``s1``, ``s2``."""
    momentum, nesterov, decay, beta1, beta2, eps = (
        hyper[0],
        hyper[1],
        hyper[2],
        hyper[3],
        hyper[4],
        hyper[5],
    )
    rows, columns = p.shape
    if kind == PLAIN and not l2 and not decay:  # the common case, vectorised loops
        for i in range(rows):
            for j in range(columns):
                p[i, j] -= lr * g[i, j]
        return
    for i in range(rows):
        for j in range(columns):
            gi = g[i, j] + l2 * p[i, j] if l2 else g[i, j]
            if shrink != 1.0:  # AdamW's decoupled decay, before the step
                p[i, j] *= shrink
            if decay:  # L2 weight decay in the gradient
                gi = gi + decay * p[i, j]
            if kind == PLAIN:
                p[i, j] -= lr * gi
            elif kind == MOMENTUM:
                v = gi if fresh else s1[i, j] * momentum + gi
                s1[i, j] = v
                p[i, j] -= lr * (gi + momentum * v if nesterov else v)
            else:
                m = s1[i, j] * beta1 + (1 - beta1) * gi
                v = s2[i, j] * beta2 + (1 - beta2) * (gi * gi)
                s1[i, j], s2[i, j] = m, v
                p[i, j] -= step_size * (m / (math.sqrt(v) / root + eps))


@_jit
def _matrices(flat, shapes, part):
    """Each layer's weight (``part`` 0, out x in) or bias (``part`` 1, as a 1 x out row)
    as a view of the flat buffer that holds them all, weight and bias layer by layer."""
    views, start = [], 0
    for k in range(shapes.shape[0]):
        out, inputs = shapes[k, 0], shapes[k, 1]
        if part == 0:
            views.append(flat[start : start + out * inputs].reshape((out, inputs)))
        else:
            views.append(flat[start + out * inputs : start + out * (inputs + 1)].reshape((1, out)))
        start += out * (inputs + 1)
    return views


@_jit
def train_batches(
    X,
    T,
    labels,
    sample_weight,
    order,
    batch_size,
    first,
    stop,
    params,
    grads,
    state1,
    state2,
    shapes,
    activations,
    options,
    loss,
    mean,
    factor,
    count_right,
    alpha,
    kind,
    lr,
    hyper,
    t,
    fresh,
    stop_on_nonfinite,
    total_loss,
):
    """Steps ``first`` to ``stop`` (exclusive) of the batch order ``order`` (batches of
    ``batch_size`` consecutive entries), on the parameters, gradients and optimizer state
    in flat buffers (layer by layer, weight then bias, ``shapes`` (out, in) each); returns
    the steps done (fewer when a loss is not finite and ``stop_on_nonfinite``), the last
    loss, ``total_loss`` plus each step's loss times its rows, and the rows classified
    right."""
    n_layers = shapes.shape[0]
    weights = _matrices(params, shapes, 0)  # the flat buffers as each layer's arrays
    biases = _matrices(params, shapes, 1)
    grad_weights, grad_biases = _matrices(grads, shapes, 0), _matrices(grads, shapes, 1)
    state_w1, state_b1 = _matrices(state1, shapes, 0), _matrices(state1, shapes, 1)
    state_w2, state_b2 = _matrices(state2, shapes, 0), _matrices(state2, shapes, 1)
    n = order.shape[0]
    rows = min(batch_size, n)
    dtype = X.dtype
    inputs = np.empty((rows, X.shape[1]), dtype)
    row_weight = np.empty(rows if sample_weight.shape[0] else 0, dtype)
    pre = [np.empty((rows, weights[k].shape[0]), dtype) for k in range(n_layers)]
    post = [np.empty((rows, weights[k].shape[0]), dtype) for k in range(n_layers)]
    delta = [np.empty((rows, weights[k].shape[0]), dtype) for k in range(n_layers)]
    target_rows = np.empty((rows, T.shape[1]), dtype)
    powers = np.empty(max([w.shape[0] for w in weights]), np.int64)
    beta1, beta2 = hyper[3], hyper[4]
    value, right, done = 0.0, 0, first
    for step in range(first, stop):
        start = step * batch_size
        b = min(start + batch_size, n) - start
        index = order[start : start + b]
        x = inputs[:b]
        for i in range(b):  # the batch's rows
            x[i, :] = X[index[i], :]
        divisor = float(b)
        w = row_weight[: b if row_weight.shape[0] else 0]
        if w.shape[0]:  # weights of mean 1: a 'mean' loss becomes the weighted mean
            weight_sum = 0.0
            for i in range(b):
                w[i] = sample_weight[index[i]]
                weight_sum += w[i]
            if weight_sum > 0:
                for i in range(b):
                    w[i] = w[i] * (b / weight_sum)
                divisor = weight_sum
        h = x
        for k in range(n_layers):  # forward: z = h W^T + b, then the activation
            z = pre[k][:b]
            np.dot(h, weights[k].T, z)
            code, a, c = activations[k], options[k, 0], options[k, 1]
            if code != IDENTITY:
                y = post[k][:b]
                _forward_rows(code, z, biases[k][0], y, a, c, powers)
                h = y
            else:
                bias = biases[k][0]
                for i in range(b):
                    for j in range(z.shape[1]):
                        z[i, j] += bias[j]
                h = z
        targets = target_rows[:b]
        for i in range(b):
            targets[i, :] = T[index[i], :]
        out = h
        scale = 1.0 / (b * out.shape[1] if loss != CROSS_ENTROPY else b) if mean else 1.0
        grad = delta[n_layers - 1][:b]
        value = _loss(loss, out, targets, w, scale, factor, grad)
        for k in range(n_layers - 1, -1, -1):  # backward
            # dL/dW = dz^T h,  dL/db = sum over the batch of dz,  dL/dh = dz W
            below = x
            if k:
                below = post[k - 1][:b] if activations[k - 1] != IDENTITY else pre[k - 1][:b]
            np.dot(grad.T, below, grad_weights[k])
            gb = grad_biases[k][0]
            gb[:] = 0
            for i in range(b):
                for j in range(gb.shape[0]):
                    gb[j] += grad[i, j]
            if k:
                down = delta[k - 1][:b]
                np.dot(grad, weights[k], down)
                code, a, c = activations[k - 1], options[k - 1, 0], options[k - 1, 1]
                if code != IDENTITY:
                    _backward_rows(code, down, pre[k - 1][:b], post[k - 1][:b], a, c)
                grad = down
        l2 = alpha / divisor if alpha else 0.0
        if alpha:  # L2 penalty: L += alpha / (2 b) |W|^2
            for k in range(n_layers):
                squares, W = 0.0, weights[k]
                for i in range(W.shape[0]):
                    for j in range(W.shape[1]):
                        squares += W[i, j] * W[i, j]
                value += alpha / (2 * divisor) * squares
        if count_right:
            for i in range(b):
                best = 0
                for j in range(out.shape[1]):
                    if math.isnan(out[i, j]):
                        best = j
                        break
                    if out[i, j] > out[i, best]:
                        best = j
                right += 1 if best == labels[index[i]] else 0
        t += 1
        step_size = lr / (1 - beta1 ** float(t))
        root = math.sqrt(1 - beta2 ** float(t))
        shrink_weights, shrink_biases = 1 - lr * hyper[6], 1 - lr * hyper[7]
        for k in range(n_layers):
            _update(
                weights[k],
                grad_weights[k],
                state_w1[k],
                state_w2[k],
                kind, lr, hyper, l2, shrink_weights, fresh, step_size, root,
            )  # fmt: skip
            _update(
                biases[k], grad_biases[k], state_b1[k], state_b2[k],
                kind, lr, hyper, 0.0, shrink_biases, fresh, step_size, root,
            )  # fmt: skip
        fresh = False
        total_loss += value * b
        done = step + 1
        if stop_on_nonfinite and not math.isfinite(value):
            break
    return done, value, total_loss, right
