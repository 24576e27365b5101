"""Gradient checking at scale: handgrad against the seed notebook's loop and PyTorch's
gradcheck, in one run.

For each network (float64, sigmoid MLP, mean cross-entropy, a batch of 16) every
contender checks the gradient of the loss with respect to every weight and bias:

- the seed notebook's loop (its ``numerical_gradients``, copied below: ``np.nditer`` over
  each parameter, two loss evaluations per element);
- ``torch.autograd.gradcheck`` on the same network written in ``torch.nn.functional``, in
  its default mode and with ``fast_mode=True``;
- handgrad's element loop (``method="loop"``), handgrad full (batched), handgrad fast.

Then: peak memory of handgrad full on 784-256-10 against its budget, fast mode on a
1,000,000-weight MLP, and how often the zoo of wrong layers (tests/zoo.py) is caught.

Run: python benchmarks/gradcheck_bench.py [--skip-slow]   (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

import handgrad as hg
from handgrad.gradcheck.check import DEFAULT_MAX_MEMORY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import LAYER_BUGS

NETWORKS = [(10, 20, 3), (30, 64, 2), (64, 128, 10), (784, 256, 10)]
BATCH = 16


def seed_numerical_gradients(params, loss, epsilon):
    """The seed notebook's loop, as it is there (one parameter tuple, np.nditer)."""
    d_params = tuple(np.zeros_like(p) * 1.0 for p in params)
    for d_param, param in zip(d_params, params, strict=True):
        it = np.nditer(param, flags=["multi_index"], op_flags=["readwrite"])
        while not it.finished:
            ix = it.multi_index
            original_value = param[ix]
            param[ix] = original_value + epsilon
            loss_plus = loss()
            param[ix] = original_value - epsilon
            loss_minus = loss()
            d_param[ix] = (loss_plus - loss_minus) / (2 * epsilon)
            param[ix] = original_value
            it.iternext()
    return d_params


def problem(sizes, seed=0):
    rng = np.random.default_rng(seed)
    model = hg.mlp(list(sizes), "sigmoid", rng=rng)
    x = rng.standard_normal((BATCH, sizes[0]))
    y = rng.integers(0, sizes[-1], BATCH)
    return model, x, y


def torch_function(model, x, y):
    """The network as a function of its parameters, for torch.autograd.gradcheck."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    names = list(model.params)

    def f(*params):
        p = dict(zip(names, params, strict=True))
        h = torch.sigmoid(torch.nn.functional.linear(xt, p["0.weight"], p["0.bias"]))
        logits = torch.nn.functional.linear(h, p["2.weight"], p["2.bias"])
        return torch.nn.functional.cross_entropy(logits, yt)

    inputs = tuple(torch.from_numpy(v.copy()).requires_grad_(True) for v in model.params.values())
    return f, inputs


def timed(run):
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def network_times(sizes, skip_slow: bool) -> dict[str, float]:
    """Seconds each contender takes for a full check of one network."""
    model, x, y = problem(sizes)
    loss = hg.CrossEntropyLoss()
    slow = skip_slow and sum(p.size for p in model.params.values()) > 100_000
    times = {}
    if not slow:
        times["seed loop"], _ = timed(
            lambda: seed_numerical_gradients(
                tuple(model.params.values()),
                lambda: float(loss.forward(model.forward(x), y)),
                1e-6,
            )
        )
        f, inputs = torch_function(model, x, y)
        times["torch default"], ok = timed(
            lambda: torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
        )
        assert ok
    f, inputs = torch_function(model, x, y)
    times["torch fast"], ok = timed(
        lambda: torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)
    )
    assert ok
    if not slow:
        times["handgrad loop"], r = timed(
            lambda: hg.check_gradients(model, loss, x, y, method="loop")
        )
        assert r.passed
    times["handgrad full"], r = timed(lambda: hg.check_gradients(model, loss, x, y))
    assert r.passed and r.method == "batched"
    times["handgrad fast"], r = timed(
        lambda: hg.check_gradients(model, loss, x, y, mode="fast", rng=0)
    )
    assert r.passed
    return times


CONTENDERS = (
    "seed loop",
    "torch default",
    "torch fast",
    "handgrad loop",
    "handgrad full",
    "handgrad fast",
)


def speed(skip_slow: bool) -> None:
    print(
        f"full gradient checks, float64, batch {BATCH} (seconds; ratio = contender / handgrad full)"
    )
    print(f"{'network':>12} {'weights':>8}  " + "  ".join(f"{c:>16}" for c in CONTENDERS))
    for sizes in NETWORKS:
        times = network_times(sizes, skip_slow)
        n = sum(a * b + b for a, b in itertools.pairwise(sizes))
        cells = []
        for c in CONTENDERS:
            t = times.get(c)
            cells.append(
                f"{'skipped':>16}"
                if t is None
                else f"{t:8.3f} ({t / times['handgrad full']:5.1f}x)"
            )
        print(f"{'-'.join(map(str, sizes)):>12} {n:>8}  " + "  ".join(cells))


def memory() -> None:
    model, x, y = problem((784, 256, 10))
    tracemalloc.start()
    hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\npeak memory of handgrad full on 784-256-10: {peak / 2**20:.1f} MiB "
        f"(budget max_memory = {DEFAULT_MAX_MEMORY / 2**20:.0f} MiB)"
    )


def million() -> None:
    model, x, y = problem((1000, 1000, 10))
    n = sum(p.size for p in model.params.values())
    loss = hg.CrossEntropyLoss()
    elapsed, report = timed(lambda: hg.check_gradients(model, loss, x, y, mode="fast", rng=0))
    assert report.passed
    print(
        f"fast mode on 1000-1000-10 ({n:,} weights): {elapsed:.3f} s "
        f"({len(report.checks)} random directions)"
    )


def detection() -> None:
    print("\nwrong layers caught (tests/zoo.py), over 100 seeds each, default settings:")
    print(f"  {'bug':<36} {'full':>6} {'fast':>6}")
    for name, make in LAYER_BUGS.items():
        caught = {"full": 0, "fast": 0}
        for seed in range(100):
            rng = np.random.default_rng(seed)
            layer = make(rng)
            x = rng.standard_normal((4, getattr(layer, "in_features", 5)))
            for mode in caught:
                report = hg.check_layer(layer, x, mode=mode, rng=seed, raise_on_failure=False)
                caught[mode] += not report.passed
        print(f"  {name:<36} {caught['full']:>6} {caught['fast']:>6}")
    false = {"full": 0, "fast": 0}
    for seed in range(100):
        model, x, y = problem((8, 12, 4), seed)
        for mode in false:
            report = hg.check_gradients(
                model, hg.CrossEntropyLoss(), x, y, mode=mode, rng=seed, raise_on_failure=False
            )
            false[mode] += not report.passed
    print(f"  {'correct 8-12-4 models failed':<36} {false['full']:>6} {false['fast']:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--skip-slow",
        action="store_true",
        help="skip the seed loop, torch default and handgrad loop above 100k weights",
    )
    args = parser.parse_args()
    print(
        f"torch threads: {torch.get_num_threads()}, numpy {np.__version__}, "
        f"torch {torch.__version__}\n"
    )
    speed(args.skip_slow)
    memory()
    million()
    detection()


if __name__ == "__main__":
    main()
