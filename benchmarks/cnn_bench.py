"""The cnn on digits through the command line: ``handgrad train --dataset digits --model
cnn --seed S`` as a user runs it (a fresh process, imports included), beside the best MLP
of ``accuracy_bench.py`` (64 ReLU units) on the same splits.

For each seed: the test accuracy that the command prints and its wall time. The target is
a mean of at least 0.985 over seeds 0-2; seeds 3-5 show how much a split moves it.

Run: python benchmarks/cnn_bench.py [--seeds 0 1 2 3 4 5]   (about two minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

RUNS = {
    "cnn": ["--model", "cnn"],
    "mlp 64 relu": ["--hidden", "64", "--activation", "relu"],
}


def train(options, seed, out):
    """Test accuracy and wall time of one ``handgrad train`` run."""
    command = [sys.executable, "-m", "handgrad.cli", "train", "--dataset", "digits"]
    command += [*options, "--seed", str(seed), "--quiet", "--out", out]
    started = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    return float(re.search(r"test set: accuracy ([0-9.]+)", done.stdout)[1]), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    args = parser.parse_args()
    print("handgrad train --dataset digits --seed S, test accuracy (wall time)")
    with tempfile.TemporaryDirectory() as out:
        for name, options in RUNS.items():
            results = {seed: train(options, seed, out) for seed in args.seeds}
            cells = "  ".join(f"{s}: {a:.4f} ({t:4.1f} s)" for s, (a, t) in results.items())
            print(f"  {name:<12} {cells}")
            first = [results[s][0] for s in args.seeds if s in (0, 1, 2)]
            if len(first) == 3:
                print(f"  {'':<12} mean over seeds 0-2: {np.mean(first):.4f}", end="")
            print(f"   over all: {np.mean([a for a, _ in results.values()]):.4f}")


if __name__ == "__main__":
    main()
