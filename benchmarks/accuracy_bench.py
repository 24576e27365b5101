"""Test accuracy of ``handgrad train``'s defaults beside scikit-learn's peers, and the
wall time of the default command.

For each data set: 5 stratified 75/25 splits (seeds 0-4). handgrad trains exactly as
``handgrad train`` does (a validation tenth of the data set kept out of training, for the
curves); LogisticRegression and MLPClassifier (same hidden width, StandardScaler in front)
train on the whole 75%. Printed: the mean and each split's test accuracy, and the time.

Run: python benchmarks/accuracy_bench.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from handgrad.app.trainer import TrainConfig, train_classifier
from handgrad.data import load_dataset, split

CASES = [
    ("breast_cancer", (20,), "sigmoid"),
    ("digits", (20,), "sigmoid"),
    ("digits", (64,), "relu"),
]
SEEDS = range(5)


def handgrad_accuracy(dataset, hidden, activation, seed):
    parts = split(dataset.X, dataset.y, test_size=0.25, val_size=0.1, rng=seed)
    classifier, _ = train_classifier(
        parts.X_train,
        parts.y_train,
        dataset.class_names,
        config=TrainConfig(hidden=hidden, activation=activation, seed=seed),
        validation=(parts.X_val, parts.y_val),
    )
    return float(np.mean(classifier.predict(parts.X_test) == parts.y_test))


def peer_accuracy(make, dataset, seed):
    parts = split(dataset.X, dataset.y, test_size=0.25, val_size=0.0, rng=seed)
    model = make_pipeline(StandardScaler(), make(seed)).fit(parts.X_train, parts.y_train)
    return float(model.score(parts.X_test, parts.y_test))


def row(name, run):
    started = time.perf_counter()
    accuracies = [run(seed) for seed in SEEDS]
    elapsed = time.perf_counter() - started
    splits = " ".join(f"{a:.3f}" for a in accuracies)
    print(f"  {name:<34} mean {np.mean(accuracies):.4f}   [{splits}]   {elapsed:5.1f} s")
    return float(np.mean(accuracies))


def main() -> None:
    warnings.simplefilter("ignore", ConvergenceWarning)
    for name, hidden, activation in CASES:
        dataset = load_dataset(name)
        width = hidden[0]
        print(f"\n{name}, hidden {hidden}, 5 stratified 75/25 splits: test accuracy")
        ours = row(
            f"handgrad (train defaults, {width} {activation})",
            lambda s, d=dataset, h=hidden, a=activation: handgrad_accuracy(d, h, a, s),
        )
        logistic = row(
            "LogisticRegression",
            lambda s, d=dataset: peer_accuracy(
                lambda seed: LogisticRegression(max_iter=5000), d, s
            ),
        )
        mlp = row(
            f"MLPClassifier ({width} relu, adam)",
            lambda s, d=dataset, w=width: peer_accuracy(
                lambda seed: MLPClassifier((w,), max_iter=1000, random_state=seed), d, s
            ),
        )
        print(
            f"  ratios: handgrad / LogisticRegression {ours / logistic:.4f}, "
            f"handgrad / MLPClassifier {ours / mlp:.4f}"
        )

    print("\nwall time of `handgrad train` (defaults, imports included), 3 runs:")
    with tempfile.TemporaryDirectory() as out:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "handgrad.cli", "train", "--quiet", "--out", out],
                check=True,
                capture_output=True,
            )
            times.append(time.perf_counter() - started)
    print("  " + ", ".join(f"{t:.2f} s" for t in times))


if __name__ == "__main__":
    main()
