"""The scikit-learn estimators against scikit-learn's own: time per epoch (per iteration
for L-BFGS) of ``fit``, and the peak memory of a float32 fit.

HandgradClassifier / HandgradRegressor and MLPClassifier / MLPRegressor get the same data
(standardised), the same parameters and the same number of epochs (``tol=0`` and
``n_iter_no_change`` past ``max_iter``, so every epoch runs), on one thread (BLAS pinned
to 1). The best of 3 interleaved rounds. Printed: milliseconds per epoch, the ratio
handgrad / scikit-learn (below 1: handgrad is faster), and for float32 data the peak
memory of each fit (tracemalloc) beside the size of X.

Run: python benchmarks/sklearn_bench.py [--quick]   (about four minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier, MLPRegressor
from threadpoolctl import threadpool_limits

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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer epochs")
    args = parser.parse_args()
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
            shown = ", ".join(f"{k}={v}" for k, v in params.items())
            print(f"{name} {X.shape}, {kind} ({shown}), {dtype}, {epochs} {per_epoch}s")
            print(
                f"  handgrad {best['handgrad'] * 1e3:9.2f} ms/{per_epoch}   scikit-learn "
                f"{best['scikit-learn'] * 1e3:9.2f} ms/{per_epoch}   ratio "
                f"{best['handgrad'] / best['scikit-learn']:.2f}"
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
