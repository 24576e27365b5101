"""The scikit-learn estimators against scikit-learn's own: time per epoch (per iteration
for L-BFGS) of ``fit``, and the peak memory of a float32 fit.

HandgradClassifier / HandgradRegressor and MLPClassifier / MLPRegressor get the same data
(standardised), the same parameters and the same number of epochs (``tol=0`` and
``n_iter_no_change`` past ``max_iter``, so every epoch runs), on one thread (BLAS pinned
to 1). The best of 3 interleaved rounds. Printed: milliseconds per epoch, the ratio
handgrad / scikit-learn (below 1: handgrad is faster), and for float32 data the peak
memory of each fit (tracemalloc) beside the size of X.

First, the small-network speed target: HandgradClassifier on breast cancer (30-20-1: two
classes make one logistic output, as in MLPClassifier), sigmoid hidden layer, plain SGD,
batch 32, float64, 200 epochs, against the same math as a bare NumPy loop and as the fused
limit (``limits.py``), and with the compiled path turned off (``HANDGRAD_COMPILED=0``);
CPU time, best of 5 interleaved rounds, under both OpenBLAS kernel settings (one process
each). The limit column is each time over the fastest contender's.

Run: python benchmarks/sklearn_bench.py [--quick]   (about seven minutes on a busy 2-core machine)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc
import warnings

import numpy as np
from limits import blas_kernels, check_limit, fused_epoch, run_per_blas_setting
from sklearn.datasets import load_breast_cancer, load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from threadpoolctl import threadpool_limits

import handgrad as hg
from handgrad.sklearn import HandgradClassifier, HandgradRegressor

PAIRS = {
    "classifier": (HandgradClassifier, MLPClassifier),
    "regressor": (HandgradRegressor, MLPRegressor),
}


def data(name):
    if name == "digits":
        X, y = load_digits(return_X_y=True)
    elif name == "mnist-sized":
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((8192, 784)), rng.integers(0, 10, 8192)
    else:  # regression
        X, y = make_regression(5000, 50, n_informative=20, noise=5.0, random_state=0)
        y = (y - y.mean()) / y.std()
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return X, y


def timed_fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        estimator.fit(X, y)
        elapsed = time.perf_counter() - started
    return elapsed / estimator.n_iter_


def peak_memory(estimator, X, y):
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


CASES = [
    # (data, kind, parameters, epochs)
    ("digits", "classifier", {"hidden_layer_sizes": (100,)}, 30),
    ("digits", "classifier", {"hidden_layer_sizes": (100,), "solver": "sgd"}, 30),
    ("digits", "classifier", {"hidden_layer_sizes": (50,), "solver": "lbfgs"}, 100),
    ("mnist-sized", "classifier", {"hidden_layer_sizes": (1024,), "batch_size": 256}, 2),
    ("regression", "regressor", {"hidden_layer_sizes": (100,)}, 30),
    ("regression", "regressor", {"hidden_layer_sizes": (100, 50), "solver": "sgd"}, 30),
    ("regression", "regressor", {"hidden_layer_sizes": (100,), "solver": "lbfgs"}, 100),
]


LR, BATCH, EPOCHS = 0.1, 32, 200


def _target_data():
    X, y = load_breast_cancer(return_X_y=True)
    return (X - X.mean(0)) / X.std(0), y


def _orders(n, epochs):
    rng = np.random.default_rng(0)
    return [rng.permutation(n) for _ in range(epochs)]


def _weights():
    w = hg.mlp([30, 20, 1], "sigmoid", rng=0).state_dict()
    return w["0.weight"].copy(), w["0.bias"].copy(), w["2.weight"].copy(), w["2.bias"].copy()


def run_estimator(X, y, epochs, compiled):
    os.environ["HANDGRAD_COMPILED"] = "1" if compiled else "0"
    estimator = HandgradClassifier(
        (20,), "logistic", solver="sgd", momentum=0.0, alpha=0.0, batch_size=BATCH,
        learning_rate_init=LR, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
        random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.process_time()
        estimator.fit(X, y)
        return time.process_time() - started


def run_bare(X, y, epochs):
    """30-20-1 sigmoid, logistic output and binary cross-entropy, plain SGD, written out."""
    W1, b1, W2, b2 = _weights()
    t = y.astype(np.float64)[:, None]
    started = time.process_time()
    for order in _orders(len(y), epochs):
        for i in range(0, len(y), BATCH):
            idx = order[i : i + BATCH]
            xb, tb = X[idx], t[idx]
            z = 1 / (1 + np.exp(-(xb @ W1.T + b1)))
            o = z @ W2.T + b2
            _ = np.mean((1 - tb) * o + np.logaddexp(0, -o))
            d2 = (1 / (1 + np.exp(-o)) - tb) / len(idx)
            d1 = (d2 @ W2) * z * (1 - z)
            W2 -= LR * (d2.T @ z)
            b2 -= LR * d2.sum(axis=0)
            W1 -= LR * (d1.T @ xb)
            b1 -= LR * d1.sum(axis=0)
    return time.process_time() - started


def run_limit(X, y, epochs):
    W1, b1, W2, b2 = _weights()
    t = y.astype(np.float64)[:, None]
    orders = _orders(len(y), epochs)
    started = time.process_time()
    for order in orders:
        fused_epoch(X, t, order, BATCH, W1, b1, W2, b2, LR, False)
    return time.process_time() - started


def run_mlp(X, y, epochs):
    clf = MLPClassifier(
        (20,), "logistic", solver="sgd", momentum=0.0, alpha=0.0, batch_size=BATCH,
        learning_rate_init=LR, max_iter=epochs, tol=0.0, n_iter_no_change=epochs + 1,
        random_state=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.process_time()
        clf.fit(X, y)
        return time.process_time() - started


TARGET_CONTENDERS = {
    "HandgradClassifier": lambda X, y, e: run_estimator(X, y, e, True),
    "HandgradClassifier (NumPy path)": lambda X, y, e: run_estimator(X, y, e, False),
    "bare NumPy": run_bare,
    "fused limit": run_limit,
    "MLPClassifier": run_mlp,
}


def target(rounds):
    X, y = _target_data()
    t = y.astype(np.float64)[:, None]
    gap = check_limit(X, t, _orders(len(y), 1)[0], BATCH, _weights(), False)
    print(f"fused limit against the same epoch in NumPy: weights differ by {gap:.1e} at most")
    for run in TARGET_CONTENDERS.values():  # warm up: imports, numba's cache
        run(X, y, 2)
    best = dict.fromkeys(TARGET_CONTENDERS, np.inf)
    for _ in range(rounds):
        for name, run in TARGET_CONTENDERS.items():
            best[name] = min(best[name], run(X, y, EPOCHS))
    os.environ.pop("HANDGRAD_COMPILED")
    samples, fastest = len(y) * EPOCHS, min(best.values())
    print(f"breast_cancer 30-20-1, batch {BATCH}, {EPOCHS} epochs, float64, plain SGD")
    for name, t in best.items():
        print(f"  {name:<32} {samples / t:>12,.0f} samples/s   limit {t / fastest:5.2f}")
    ours = best["HandgradClassifier"]
    print(
        f"  HandgradClassifier: {best['bare NumPy'] / ours:.2f}x the bare NumPy loop's "
        f"samples/s (target >= 2.5), {ours / best['fused limit']:.2f}x the fused limit's "
        "time (target <= 1.5)",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer epochs")
    parser.add_argument("--child", action="store_true", help="one BLAS setting, this process")
    parser.add_argument("--target-only", action="store_true", help="the target case only")
    args = parser.parse_args()
    if not args.child:
        run_per_blas_setting(__file__, sys.argv[1:])
        return
    print(f"BLAS: {blas_kernels()}")
    target(1 if args.quick else 5)
    if args.target_only or os.environ.get("OPENBLAS_CORETYPE"):
        return  # the other cases under OpenBLAS's own choice of kernel only
    rounds = 1 if args.quick else 3
    cache = {}
    for name, kind, params, epochs in CASES:
        if name not in cache:
            cache[name] = data(name)
        X64, y = cache[name]
        epochs = max(1, epochs // 3) if args.quick else epochs
        ours, theirs = PAIRS[kind]
        common = {**params, "max_iter": epochs, "tol": 0.0, "n_iter_no_change": epochs + 1}
        common["random_state"] = 0
        per_epoch = "iteration" if params.get("solver") == "lbfgs" else "epoch"
        for dtype in ("float64", "float32"):
            X = X64.astype(dtype)
            best = {"handgrad": np.inf, "scikit-learn": np.inf}
            for _ in range(rounds):
                best["handgrad"] = min(best["handgrad"], timed_fit(ours(**common), X, y))
                best["scikit-learn"] = min(best["scikit-learn"], timed_fit(theirs(**common), X, y))
            fastest = min(best.values())
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            print(f"{name} {X.shape}, {kind} ({shown}), {dtype}, {epochs} {per_epoch}s")
            mine, peer = best["handgrad"], best["scikit-learn"]
            print(
                f"  handgrad {mine * 1e3:9.2f} ms/{per_epoch}   scikit-learn "
                f"{peer * 1e3:9.2f} ms/{per_epoch}   ratio {mine / peer:.2f}   limit: "
                f"handgrad {mine / fastest:.2f}, scikit-learn {peer / fastest:.2f}",
                flush=True,
            )
            if dtype == "float32" and per_epoch == "epoch":
                one = {**common, "max_iter": 1}
                mine, peer = peak_memory(ours(**one), X, y), peak_memory(theirs(**one), X, y)
                print(
                    f"  peak memory of a 1-epoch fit: handgrad {mine / 2**20:.1f} MiB, "
                    f"scikit-learn {peer / 2**20:.1f} MiB (X is {X.nbytes / 2**20:.1f} MiB)"
                )


if __name__ == "__main__":
    with threadpool_limits(limits=1):
        main()
