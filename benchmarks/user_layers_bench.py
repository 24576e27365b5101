"""The gradient check on layers as people write them (tests/user_zoo.py), in one run:

1. speed: ``check_layer`` with ``method="auto"`` (the fastest way proven right on the real
   input: stacked copies, perturbed samples, or the loop) against ``method="loop"`` (one
   element at a time), full mode, on user layers of the sizes of course assignments; the
   ratio is loop time over auto time, and the method each array went by;
2. trust: every family of the zoo, right and wrong, over ``--seeds`` seeds in every mode
   and by every method: false alarms on the right ones, catches of the wrong ones, and
   how often a method refused a layer it does not fit.

One thread (BLAS and torch), the least CPU time of ``--rounds`` interleaved rounds.

Run: python benchmarks/user_layers_bench.py [--seeds 10] [--rounds 5]   (a few minutes)
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import handgrad as hg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import user_zoo as zoo

# layers of the sizes of course assignments: (name, rng -> (layer, x))
SIZED = [
    (
        "np.dot Linear 20->10, batch 10",
        lambda r: (zoo.DotLinear(r, 20, 10), r.standard_normal((10, 20))),
    ),
    (
        "affine reshape(N, -1), 3x4x4 -> 10",
        lambda r: (zoo.AffineReshape(r, (3, 4, 4), 10), r.standard_normal((8, 3, 4, 4))),
    ),
    (
        "self-attention d=8, 4 x 5 tokens",
        lambda r: (zoo.Attention(r, 8), r.standard_normal((4, 5, 8))),
    ),
    ("layer norm 20, batch 10", lambda r: (zoo.LayerNorm(r, 20), r.standard_normal((10, 20)))),
    (
        "RNN step 10 -> 20, batch 10",
        lambda r: (zoo.RnnStep(r, 10, 20, 10), r.standard_normal((10, 10))),
    ),
    (
        "softmax by transposes, 10 x 20",
        lambda r: (zoo.SoftmaxTransposes(r), r.standard_normal((10, 20))),
    ),
    (
        "max-pool 2x2/1 by loops, 4x2x6x6",
        lambda r: (zoo.MaxPoolOverlap(r), r.standard_normal((4, 2, 6, 6))),
    ),
    (
        "conv im2col 3->4, 4x3x6x6",
        lambda r: (zoo.ConvIm2col(r, 3, 4), r.standard_normal((4, 3, 6, 6))),
    ),
    (
        "conv by loops 2->2, 2x2x5x5",
        lambda r: (zoo.ConvLoops(r, 2, 2), r.standard_normal((2, 2, 5, 5))),
    ),
    (
        "x @ W.T Linear (W an attribute) 20->10",
        lambda r: (zoo.TorchStyleLinear(r, 20, 10), r.standard_normal((10, 20))),
    ),
    (
        "batch norm (train) 10, batch 10",
        lambda r: (zoo.BatchNormTrain(r, 10), r.standard_normal((10, 10))),
    ),
    (
        "LSTM step 10 -> 8, batch 6",
        lambda r: (zoo.LstmStep(r, 10, 8, 6), r.standard_normal((6, 10))),
    ),
]
FAST = ("batched", "rows", "columns")


def best_time(run, rounds: int) -> float:
    """The least CPU time of ``rounds`` runs (the process's own time: on a shared machine
    what others run meanwhile does not count)."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        run()
        best = min(best, time.process_time() - started)
    return best


def speed(rounds: int) -> None:
    print("check_layer, full mode, float64: method='auto' against method='loop' (CPU ms)")
    print(f"  {'layer':<40} {'elements':>8} {'loop':>8} {'auto':>8} {'ratio':>6}  methods")
    allowing = []
    for name, make in SIZED:
        layer, x = make(np.random.default_rng(0))
        report = hg.check_layer(layer, x, rng=0)
        assert report.passed, name
        times = {"loop": float("inf"), "auto": float("inf")}
        for _ in range(rounds):  # interleaved, the best round of each
            for method in times:
                elapsed = best_time(
                    lambda m=method, layer=layer, x=x: hg.check_layer(layer, x, method=m, rng=0), 1
                )
                times[method] = min(times[method], elapsed)
        methods = {c.name: c.method for c in report.checks}
        every = all(m in FAST for m in methods.values())
        ratio = times["loop"] / times["auto"]
        if every:
            allowing.append(ratio)
        elements = sum(c.n_checked for c in report.checks)
        shown = ", ".join(f"{k} {v}" for k, v in methods.items())
        mark = "*" if every else " "
        loop_ms, auto_ms = times["loop"] * 1e3, times["auto"] * 1e3
        print(
            f"{mark} {name:<40} {elements:>8} {loop_ms:8.1f} {auto_ms:8.1f} {ratio:6.1f}  {shown}"
        )
    print(
        f"  * every array batched, by rows or by columns: loop / auto from {min(allowing):.1f}x to "
        f"{max(allowing):.1f}x (geometric mean {np.exp(np.mean(np.log(allowing))):.1f}x)"
    )


def trust(seeds: int) -> None:
    print(f"\nthe zoo (tests/user_zoo.py), {seeds} seeds per family, mode and method:")
    combos = [(mode, method) for mode in hg.gradcheck.MODES for method in hg.gradcheck.METHODS]
    totals = {combo: [0, 0, 0, 0, 0] for combo in combos}  # right, alarms, wrong, caught, refused
    for right, wrong in zoo.FAMILIES.values():
        for mode, method in combos:
            for seed in range(seeds):
                for kind, make in (("right", right), ("wrong", wrong)):
                    layer, x = make(np.random.default_rng(seed))
                    try:
                        report = hg.check_layer(
                            layer, x, mode=mode, method=method, rng=seed, raise_on_failure=False
                        )
                    except ValueError as err:
                        assert method in FAST and "cannot check" in str(err), err
                        totals[mode, method][4] += 1
                        continue
                    row = totals[mode, method]
                    if kind == "right":
                        row[0] += 1
                        row[1] += not report.passed
                    else:
                        row[2] += 1
                        row[3] += not report.passed
    print(f"  {'mode':<7} {'method':<8} {'false alarms':>16} {'wrong caught':>16} {'refused':>8}")
    for (mode, method), (right, alarms, wrong, caught, refused) in totals.items():
        print(
            f"  {mode:<7} {method:<8} {f'{alarms} of {right}':>16} {f'{caught} of {wrong}':>16} "
            f"{refused:>8}"
        )
    right = sum(v[0] for v in totals.values())
    alarms = sum(v[1] for v in totals.values())
    wrong = sum(v[2] for v in totals.values())
    caught = sum(v[3] for v in totals.values())
    print(
        f"  all {len(zoo.FAMILIES)} families: {alarms} false alarms in {right} checks of right "
        f"layers, {caught} of {wrong} wrong layers caught"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore", hg.GradientCheckWarning)
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        print(f"numpy {np.__version__}, torch {torch.__version__}, one thread\n")
        speed(args.rounds)
        trust(args.seeds)


if __name__ == "__main__":
    main()
