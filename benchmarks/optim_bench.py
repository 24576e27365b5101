"""Optimizer updates: handgrad's flat in-place state against the per-parameter formulas.

"per parameter" is the update as handgrad's optimizers computed it before their state was
flat (one expression per parameter, temporaries included), written out here; "handgrad"
is ``optimizer.update`` (one flat buffer per kind of state, every ufunc once with
``out=``). Both on the parameters of an MLP, float64, one thread, CPU time, the best of
interleaved rounds; the weights after the timed steps are compared, bit for bit.

Run: python benchmarks/optim_bench.py   (about a minute)
"""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
from threadpoolctl import threadpool_limits

from handgrad.training.optim import SGD, Adam

SIZES = ([30, 20, 2], [64, 128, 10], [784, 1024, 10])


def per_parameter_sgd(params, velocity, grads, lr, momentum, nesterov):
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        if momentum:
            if velocity[i] is None:
                velocity[i] = g.copy()
            else:
                velocity[i] *= momentum
                velocity[i] += g
            g = g + momentum * velocity[i] if nesterov else velocity[i]
        p -= lr * g


def per_parameter_adam(params, m, v, t, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8):
    step_size = lr / (1 - beta1**t)
    root_correction = math.sqrt(1 - beta2**t)
    for p, g, mi, vi in zip(params, grads, m, v, strict=True):
        mi *= beta1
        mi += (1 - beta1) * g
        vi *= beta2
        vi += (1 - beta2) * (g * g)
        p -= step_size * (mi / (np.sqrt(vi) / root_correction + eps))


def shapes(sizes):
    return [s for n_in, n_out in itertools.pairwise(sizes) for s in ((n_out, n_in), (n_out,))]


def run(kind, sizes, steps):
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(s) for s in shapes(sizes)]
    grads = [rng.standard_normal(s) * 1e-3 for s in shapes(sizes)]
    ours, theirs = [p.copy() for p in start], [p.copy() for p in start]
    if kind == "adam":
        optimizer = Adam(dict(enumerate(ours)), lr=1e-3)
        m, v = [np.zeros_like(p) for p in start], [np.zeros_like(p) for p in start]

        def reference(t):
            per_parameter_adam(theirs, m, v, t, grads, 1e-3)
    else:
        momentum = 0.9 if kind == "nesterov" else 0.0
        optimizer = SGD(dict(enumerate(ours)), lr=1e-3, momentum=momentum, nesterov=bool(momentum))
        velocity = [None] * len(start)

        def reference(t):
            per_parameter_sgd(theirs, velocity, grads, 1e-3, momentum, bool(momentum))

    times = {"handgrad": math.inf, "per parameter": math.inf}
    t = 0
    for _ in range(5):
        began = time.process_time()
        for _ in range(steps):
            optimizer.update(grads)
        times["handgrad"] = min(times["handgrad"], (time.process_time() - began) / steps)
        began = time.process_time()
        for i in range(steps):
            reference(t + i + 1)
        times["per parameter"] = min(times["per parameter"], (time.process_time() - began) / steps)
        t += steps
    same = all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    return times, same


def main():
    print("update time per step (CPU time, best of 5 interleaved rounds), float64")
    with threadpool_limits(limits=1):
        for sizes in SIZES:
            steps = 2000 if sizes[0] < 100 else 20
            for kind in ("sgd", "nesterov", "adam"):
                times, same = run(kind, sizes, steps)
                ours, theirs = times["handgrad"], times["per parameter"]
                print(
                    f"  {'-'.join(map(str, sizes)):<13} {kind:<9} handgrad {ours * 1e6:9.1f} us   "
                    f"per parameter {theirs * 1e6:9.1f} us   ratio {ours / theirs:5.2f}   "
                    f"same weights: {same}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
