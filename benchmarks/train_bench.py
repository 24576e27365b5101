"""Training speed: handgrad against a bare NumPy loop, the fused limit, torch.nn +
autograd, and scikit-learn's MLPClassifier, in one run, under both BLAS kernel settings.

Every contender trains the same architecture (sigmoid hidden layer, softmax + cross-entropy)
with plain SGD (no momentum, no penalty) from the same initial weights, for the same epochs,
on one thread (BLAS and torch pinned to 1). handgrad, the bare loop, the fused limit and
torch also use the same batch order; MLPClassifier draws its own. "handgrad" is ``fit`` as
it runs by itself (the compiled path where numba is installed), "handgrad (NumPy path)"
``fit(compiled=False)``, "fused limit" the bare numba loop of ``limits.py``. Times are CPU
time (the machine is shared), the best of interleaved rounds after a warm-up. Printed:
samples per second, the ratio of each contender's time to handgrad's, and the limit
column: each time over the fastest contender's; then the NumPy path's peak memory after
one and after three epochs (tracemalloc does not see numba's allocations).

Run: python benchmarks/train_bench.py [--quick]   (about ten minutes on a busy 2-core
machine, both BLAS settings; --quick: one round, about four)
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
import warnings

import numpy as np
import torch
from limits import blas_kernels, check_limit, fused_epoch, run_per_blas_setting
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier
from threadpoolctl import threadpool_limits

import handgrad as hg
from handgrad.training.fit import fit
from handgrad.training.optim import SGD

LR = 0.1


def data(name, dtype):
    if name == "breast_cancer":
        X, y = load_breast_cancer(return_X_y=True)
    elif name == "digits":
        X, y = load_digits(return_X_y=True)
    else:  # synthetic, MNIST-sized
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((8192, 784)), rng.integers(0, 10, 8192)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return X.astype(dtype), y.astype(np.int64)


def orders(n, batch, epochs, seed=0):
    """The batch order every contender but MLPClassifier follows."""
    rng = np.random.default_rng(seed)
    return [
        [perm[i : i + batch] for i in range(0, n, batch)]
        for perm in (rng.permutation(n) for _ in range(epochs))
    ]


def initial(sizes, dtype):
    model = hg.mlp(sizes, "sigmoid", rng=0, dtype=dtype)
    return {k: v.copy() for k, v in model.state_dict().items()}


def run_handgrad(sizes, X, y, batch, epochs, dtype, backend="numpy", compiled=None):
    model = hg.mlp(sizes, "sigmoid", rng=0, dtype=dtype, backend=backend)
    optimizer = SGD(model.params, lr=LR)
    loss = hg.CrossEntropyLoss()
    started = time.process_time()
    fit(model, loss, optimizer, X, y, epochs=epochs, batch_size=batch, rng=0, compiled=compiled)
    return time.process_time() - started


def run_limit(sizes, X, y, batch, epochs, dtype):
    """The fused limit: the bare numba loop of limits.py (float64 only: it is written for
    one dtype, as a bare loop is)."""
    w = initial(sizes, "float64")
    W1, b1, W2, b2 = w["0.weight"], w["0.bias"], w["2.weight"], w["2.bias"]
    X = X.astype(np.float64)
    onehot = np.eye(sizes[-1])[y]
    flat = [np.concatenate(epoch) for epoch in orders(len(y), batch, epochs)]
    started = time.process_time()
    for order in flat:
        fused_epoch(X, onehot, order, batch, W1, b1, W2, b2, LR, True)
    return time.process_time() - started


def run_bare(sizes, X, y, batch, epochs, dtype):
    """The same math with no library around it."""
    w = initial(sizes, dtype)
    W1, b1, W2, b2 = w["0.weight"], w["0.bias"], w["2.weight"], w["2.bias"]
    onehot = np.eye(sizes[-1], dtype=dtype)[y]
    started = time.process_time()
    for epoch in orders(len(y), batch, epochs):
        for idx in epoch:
            xb, tb = X[idx], onehot[idx]
            z = 1 / (1 + np.exp(-(xb @ W1.T + b1)))
            logits = z @ W2.T + b2
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            _ = -np.sum(tb * log_p) / len(idx)
            d2 = (np.exp(log_p) - tb) / len(idx)
            d1 = (d2 @ W2) * z * (1 - z)
            W2 -= LR * (d2.T @ z)
            b2 -= LR * d2.sum(axis=0)
            W1 -= LR * (d1.T @ xb)
            b1 -= LR * d1.sum(axis=0)
    return time.process_time() - started


def run_torch(sizes, X, y, batch, epochs, dtype):
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    model = torch.nn.Sequential(
        torch.nn.Linear(sizes[0], sizes[1]), torch.nn.Sigmoid(), torch.nn.Linear(sizes[1], sizes[2])
    ).to(tdtype)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in initial(sizes, dtype).items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    batches = [[torch.from_numpy(i) for i in epoch] for epoch in orders(len(y), batch, epochs)]
    for idx in batches[0][:5]:  # warm up
        loss_fn(model(Xt[idx]), yt[idx])
    started = time.process_time()
    for epoch in batches:
        for idx in epoch:
            optimizer.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
    return time.process_time() - started


def run_sklearn(sizes, X, y, batch, epochs, dtype):
    clf = MLPClassifier(
        hidden_layer_sizes=(sizes[1],),
        activation="logistic",
        solver="sgd",
        learning_rate_init=LR,
        momentum=0.0,
        nesterovs_momentum=False,
        alpha=0.0,
        batch_size=batch,
        max_iter=epochs,
        tol=0.0,
        n_iter_no_change=epochs + 1,
        random_state=0,
    )
    started = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return time.process_time() - started


def peak_memory(sizes, X, y, batch, epochs, dtype):
    model = hg.mlp(sizes, "sigmoid", rng=0, dtype=dtype)
    optimizer = SGD(model.params, lr=LR)
    tracemalloc.start()
    fit(
        model, hg.CrossEntropyLoss(), optimizer, X, y, epochs=epochs, batch_size=batch, rng=0,
        compiled=False,
    )  # fmt: skip
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


CASES = [
    ("breast_cancer", [30, 20, 2], 32, 200, ["float64", "float32"]),
    ("digits", [64, 128, 10], 64, 30, ["float64", "float32"]),
    ("synthetic", [784, 1024, 10], 256, 2, ["float32", "float64"]),
]
CONTENDERS = {
    "handgrad": run_handgrad,
    "handgrad (NumPy path)": lambda *a: run_handgrad(*a, compiled=False),
    "handgrad (torch)": lambda *a: run_handgrad(*a, backend="torch"),
    "bare NumPy": run_bare,
    "fused limit": run_limit,
    "torch autograd": run_torch,
    "MLPClassifier": run_sklearn,
}


def best_times(sizes, X, y, batch, epochs, dtype, repeats):
    """The best time of each contender over ``repeats`` rounds; in each round every
    contender runs once, in turn, so that a slow spell of the machine hits them all."""
    contenders = {
        name: run
        for name, run in CONTENDERS.items()
        if name != "fused limit" or (dtype == "float64" and len(sizes) == 3)
    }
    small = orders(len(y), batch, 1)[0][:3]
    for run in contenders.values():  # warm up: imports, numba's cache, torch's kernels
        run(sizes, X[np.concatenate(small)], y[np.concatenate(small)], batch, 1, dtype)
    best = dict.fromkeys(contenders, float("inf"))
    for _ in range(repeats):
        for name, run in contenders.items():
            best[name] = min(best[name], run(sizes, X, y, batch, epochs, dtype))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--child", action="store_true", help="one BLAS setting, this process")
    args = parser.parse_args()
    if not args.child:
        run_per_blas_setting(__file__, sys.argv[1:])
        return
    repeats = 1 if args.quick else 3
    print(f"BLAS: {blas_kernels()}; CPU time, best of {repeats} interleaved rounds")
    X, y = data("breast_cancer", "float64")
    w = initial([30, 20, 2], "float64")
    weights = [w[k] for k in ("0.weight", "0.bias", "2.weight", "2.bias")]
    order = np.concatenate(orders(len(y), 32, 1)[0])
    gap = check_limit(X, np.eye(2)[y], order, 32, weights, True)
    print(f"fused limit against the same epoch in NumPy: weights differ by {gap:.1e} at most")
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        for name, sizes, batch, epochs, dtypes in CASES:
            for dtype in dtypes:
                X, y = data(name, dtype)
                samples = len(y) * epochs
                print(
                    f"\n{name} {'-'.join(map(str, sizes))}, batch {batch}, {epochs} epochs, "
                    f"{dtype}, best of {repeats} rounds"
                )
                times = best_times(sizes, X, y, batch, epochs, dtype, repeats)
                fastest = min(times.values())
                for c, t in times.items():
                    ratio = t / times["handgrad"]
                    print(
                        f"  {c:<22} {samples / t:>12,.0f} samples/s   "
                        f"time / handgrad's {ratio:5.2f}   limit {t / fastest:5.2f}",
                        flush=True,
                    )
                if sizes[0] >= 784:
                    share = matmul_share(sizes, X, batch, dtype)
                    print(f"  matrix products take {share:.0%} of the bare loop's time")
                one = peak_memory(sizes, X, y, batch, 1, dtype)
                three = peak_memory(sizes, X, y, batch, 3, dtype)
                print(
                    f"  handgrad (NumPy path) peak memory: {one / 2**20:.2f} MiB after 1 epoch, "
                    f"{three / 2**20:.2f} MiB after 3"
                )


def matmul_share(sizes, X, batch, dtype):
    """Time of the five matrix products of a step, over the time of a bare step."""
    w = initial(sizes, dtype)
    W1, W2 = w["0.weight"], w["2.weight"]
    xb = X[:batch]
    z = 1 / (1 + np.exp(-(xb @ W1.T)))
    d2 = np.ones((batch, sizes[-1]), dtype=dtype)
    d1 = (d2 @ W2) * z * (1 - z)
    started = time.process_time()
    for _ in range(20):
        _ = xb @ W1.T, z @ W2.T, d2 @ W2, d2.T @ z, d1.T @ xb
    products = time.process_time() - started
    y = np.zeros(batch, dtype=np.int64)
    bare = run_bare(sizes, np.concatenate([xb] * 20), np.concatenate([y] * 20), batch, 1, dtype)
    return products / bare


if __name__ == "__main__":
    main()
