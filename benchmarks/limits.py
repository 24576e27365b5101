"""What the training benchmarks share: the fused limit, and both BLAS kernel settings.

The fused limit is the fastest honest implementation of one training run: a bare numba
loop written out for one network (Linear, sigmoid, Linear, then softmax + cross-entropy or
sigmoid + binary cross-entropy; plain SGD), with BLAS (numba's ``np.dot``) for the five
matrix products of a step and plain loops for the rest, no generality and no checks. Its
hidden sigmoid uses the same vectorisable exp as handgrad's kernel (libm's exp, called
element by element, is what a plain loop would use, and is slower). It computes the loss
too, as every contender does.

OpenBLAS picks its kernels for the CPU it finds, unless ``OPENBLAS_CORETYPE`` names one;
this machine's environment sets ``OPENBLAS_CORETYPE=Haswell`` (AVX2), while OpenBLAS
detects ``SkylakeX`` (AVX-512) when it is unset. The kernel is chosen when the library is
loaded, so :func:`run_per_blas_setting` runs a benchmark once per setting, in a fresh
process each.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numba
import numpy as np

_C = tuple(1 / math.factorial(n) for n in range(14))
FORCED_CORETYPE = os.environ.get("OPENBLAS_CORETYPE") or "Haswell"


def blas_kernels() -> str:
    """The kernel each loaded OpenBLAS uses (NumPy's, and SciPy's, which numba calls)."""
    import scipy.linalg  # noqa: F401  (loads SciPy's OpenBLAS)
    from threadpoolctl import threadpool_info

    return ", ".join(
        f"{info['prefix']} {info.get('architecture', '?')}"
        for info in threadpool_info()
        if info["user_api"] == "blas"
    )


def run_per_blas_setting(script: str, argv: list[str]) -> None:
    """Run ``script --child argv`` under OpenBLAS's own choice of kernel and under
    ``OPENBLAS_CORETYPE`` forced, one process each."""
    settings = [
        ("OpenBLAS's detected kernel (OPENBLAS_CORETYPE unset)", None),
        (f"OPENBLAS_CORETYPE={FORCED_CORETYPE}", FORCED_CORETYPE),
    ]
    for label, value in settings:
        env = dict(os.environ)
        env.pop("OPENBLAS_CORETYPE", None)
        if value is not None:
            env["OPENBLAS_CORETYPE"] = value
        print(f"\n=== BLAS kernels: {label}", flush=True)
        subprocess.run([sys.executable, script, "--child", *argv], env=env, check=True)


@numba.njit(cache=True, nogil=True)
def fused_epoch(X, targets, order, batch, W1, b1, W2, b2, lr, softmax):
    """One epoch of plain SGD on ``X`` in the batch order ``order``: sigmoid hidden layer,
    softmax + cross-entropy (``softmax``) or sigmoid + binary cross-entropy outputs, mean
    over the batch (and the outputs, for binary cross-entropy). Returns the summed loss."""
    n, k, h = order.shape[0], W2.shape[0], W1.shape[0]
    xb, z = np.empty((batch, X.shape[1])), np.empty((batch, h))
    o, d1 = np.empty((batch, k)), np.empty((batch, h))
    gW1, gW2 = np.empty_like(W1), np.empty_like(W2)
    bits = np.empty(h, np.int64)
    scale = bits.view(np.float64)
    total = 0.0
    for start in range(0, n, batch):
        b = min(batch, n - start)
        x, zz, oo, dd = xb[:b], z[:b], o[:b], d1[:b]
        for i in range(b):
            x[i, :] = X[order[start + i], :]
        np.dot(x, W1.T, zz)
        for i in range(b):  # sigmoid, exp(u) = 2^k exp(r) with r = u - k ln 2
            for j in range(h):
                u = max(min(-(zz[i, j] + b1[j]), 700.0), -708.0)
                twos = np.floor(u * 1.4426950408889634 + 0.5)
                r = (u - twos * 6.93147180369123816490e-01) - twos * 1.90821492927058770002e-10
                p = _C[13]
                for m in range(12, -1, -1):
                    p = p * r + _C[m]
                bits[j] = (np.int64(twos) + 1023) << 52
                zz[i, j] = p
            for j in range(h):
                zz[i, j] = 1 / (1 + zz[i, j] * scale[j])
        np.dot(zz, W2.T, oo)
        for i in range(b):
            t = targets[order[start + i]]
            if softmax:  # dL/do = (p - t) / b
                top = -np.inf
                for j in range(k):
                    oo[i, j] += b2[j]
                    top = max(top, oo[i, j])
                s = 0.0
                for j in range(k):
                    s += math.exp(oo[i, j] - top)
                for j in range(k):
                    log_p = oo[i, j] - top - math.log(s)
                    total -= t[j] * log_p / b
                    oo[i, j] = (math.exp(log_p) - t[j]) / b
            else:  # dL/do = (sigmoid(o) - t) / (b k)
                for j in range(k):
                    v = oo[i, j] + b2[j]
                    total += ((1 - t[j]) * v + max(-v, 0.0) + math.log1p(math.exp(-abs(v)))) / (
                        b * k
                    )
                    oo[i, j] = (1 / (1 + math.exp(-v)) - t[j]) / (b * k)
        np.dot(oo, W2, dd)
        for i in range(b):
            for j in range(h):
                dd[i, j] *= zz[i, j] * (1 - zz[i, j])
        np.dot(oo.T, zz, gW2)
        np.dot(dd.T, x, gW1)
        for j in range(k):
            s = 0.0
            for i in range(b):
                s += oo[i, j]
            b2[j] -= lr * s
        for j in range(h):
            s = 0.0
            for i in range(b):
                s += dd[i, j]
            b1[j] -= lr * s
        for r in range(k):
            for c in range(h):
                W2[r, c] -= lr * gW2[r, c]
        for r in range(h):
            for c in range(X.shape[1]):
                W1[r, c] -= lr * gW1[r, c]
    return total


def check_limit(X, targets, order, batch, weights, softmax):
    """The largest difference between the weights after one epoch of :func:`fused_epoch`
    and after the same epoch written in NumPy: the limit computes what it claims."""
    fused = [w.copy() for w in weights]
    fused_epoch(X, targets, order, batch, *fused, 0.1, softmax)
    W1, b1, W2, b2 = (w.copy() for w in weights)
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        x, t = X[idx], targets[idx]
        z = 1 / (1 + np.exp(-(x @ W1.T + b1)))
        o = z @ W2.T + b2
        if softmax:
            e = np.exp(o - o.max(axis=1, keepdims=True))
            d2 = (e / e.sum(axis=1, keepdims=True) - t) / len(idx)
        else:
            d2 = (1 / (1 + np.exp(-o)) - t) / (len(idx) * o.shape[1])
        d1 = (d2 @ W2) * z * (1 - z)
        W2 -= 0.1 * (d2.T @ z)
        b2 -= 0.1 * d2.sum(axis=0)
        W1 -= 0.1 * (d1.T @ x)
        b1 -= 0.1 * d1.sum(axis=0)
    return max(float(np.abs(a - b).max()) for a, b in zip(fused, (W1, b1, W2, b2), strict=True))
