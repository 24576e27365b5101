"""Gradient checking at scale: handgrad against the seed notebook's loop and PyTorch's
gradcheck, in one run.

For each network (float64, sigmoid MLP, mean cross-entropy, a batch of 16) every
contender checks the gradient of the loss with respect to every weight and bias:

- the seed notebook's loop (its ``numerical_gradients``, copied below: ``np.nditer`` over
  each parameter, two loss evaluations per element);
- ``torch.autograd.gradcheck`` on the same network written in ``torch.nn.functional``, in
  its default mode and with ``fast_mode=True``;
- handgrad's element loop (``method="loop"``), handgrad full (batched), handgrad fast.

Then: how a full check grows with width and batch (784-256-10 against 784-1024-10 at
batch 16, batch 16 against batch 256; one thread, CPU time, the best of interleaved
rounds) next to the bare work of its first look, peak memory of handgrad full on 784-256-10
against its budget, fast mode on a 1,000,000-weight MLP, and how often the zoo of wrong
layers (tests/zoo.py) is caught.

Run: python benchmarks/gradcheck_bench.py [--skip-slow] [--rounds 5]   (a few minutes on 2
cores; --scaling-only runs the growth table alone)
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
from threadpoolctl import threadpool_limits

import handgrad as hg
from handgrad.gradcheck.check import DEFAULT_MAX_MEMORY
from handgrad.nn.functional import log_softmax

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


def problem(sizes, seed=0, batch=BATCH):
    rng = np.random.default_rng(seed)
    model = hg.mlp(list(sizes), "sigmoid", rng=rng)
    x = rng.standard_normal((batch, sizes[0]))
    y = rng.integers(0, sizes[-1], batch)
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


def _ce_changes(softmax, y, delta, vectors):
    """Mean cross-entropy changes of logits moved by outer(delta[p], vectors[p])."""
    moves = delta[:, :, None] * vectors[:, None, :]  # P,B,C
    np.expm1(moves, out=moves)
    shifted = np.log1p(np.einsum("pbc,bc->pb", moves, softmax))
    return (shifted - delta * vectors[:, y]).mean(axis=1)


def bare_first_look(model, x, y, eps=1e-6) -> dict[str, np.ndarray]:
    """The bare work of a full check's first look on a sigmoid MLP (Linear, Sigmoid,
    Linear) under mean cross-entropy: the central difference of every weight, each loss
    change by the rank-one formulas handgrad's batched evaluator uses, in cache-sized
    chunks, and nothing else (no planning, probes, second look, checks of the input or
    report). What handgrad's full check could not go below without another algorithm."""
    w1, b1, w2, b2 = (p for p in model.params.values())
    z1 = x @ w1.T + b1  # B,H
    h = 1 / (1 + np.exp(-z1))
    z2 = h @ w2.T + b2  # B,C
    softmax = np.exp(log_softmax(np, z2))
    batch, classes = z2.shape
    per_pass = max(1, 2**18 // (batch * classes))  # elements (2 copies each) per pass
    steps = np.array([eps, -eps])
    grads = {}

    def first_look(size, changes_of):
        out = np.empty(size)
        for start in range(0, size, per_pass):
            flat = np.arange(start, min(size, start + per_pass))
            elements, s = np.repeat(flat, 2), np.tile(steps, flat.size)
            losses = changes_of(elements, s).reshape(-1, 2)
            out[flat] = (losses[:, 0] - losses[:, 1]) / (2 * eps)
        return out

    def along(s):  # the same move for every sample: (P, B)
        return np.broadcast_to(s[:, None], (s.size, batch))

    def hidden(i, dz):  # the hidden unit i moved by dz (P,B): rank-one logits
        dh = 1 / (1 + np.exp(-(z1[:, i].T + dz))) - h[:, i].T
        return _ce_changes(softmax, y, dh, w2[:, i].T)

    onehot = np.eye(classes)
    d_in = x.shape[1]
    grads["0.weight"] = first_look(
        w1.size, lambda e, s: hidden(e // d_in, s[:, None] * x[:, e % d_in].T)
    )
    grads["0.bias"] = first_look(b1.size, lambda e, s: hidden(e, along(s)))
    width = h.shape[1]
    grads["2.weight"] = first_look(
        w2.size,
        lambda e, s: _ce_changes(softmax, y, s[:, None] * h[:, e % width].T, onehot[e // width]),
    )
    grads["2.bias"] = first_look(b2.size, lambda e, s: _ce_changes(softmax, y, along(s), onehot[e]))
    return grads


SCALING = (((784, 256, 10), 16), ((784, 1024, 10), 16), ((784, 256, 10), 256))


def scaling(rounds: int) -> None:
    """How a full check grows with width and batch, against its bare work."""
    print(
        "\nfull check as the network grows (one thread, CPU seconds, best of "
        f"{rounds} interleaved rounds)"
    )
    cases = []
    for sizes, batch in SCALING:
        model, x, y = problem(sizes, batch=batch)
        report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
        assert report.passed and report.method == "batched"
        bare = bare_first_look(model, x, y)
        for name, values in bare.items():  # the bare work computes the same derivatives
            analytic = model.grads[name].reshape(-1)
            assert np.max(np.abs(values - analytic)) <= 1e-6 * np.max(np.abs(analytic)) + 1e-9
        cases.append((sizes, batch, model, x, y))
    best = {(i, kind): float("inf") for i in range(len(cases)) for kind in ("full", "bare")}
    with threadpool_limits(limits=1):
        for _ in range(rounds):
            for i, (_, _, model, x, y) in enumerate(cases):
                for kind in ("full", "bare"):
                    started = time.process_time()
                    if kind == "full":
                        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
                    else:
                        bare_first_look(model, x, y)
                    best[i, kind] = min(best[i, kind], time.process_time() - started)
    header = ("network", "batch", "handgrad full", "bare work", "full / bare")
    print("  " + " ".join(f"{h:>{w}}" for h, w in zip(header, (12, 6, 14, 10, 12), strict=True)))
    for i, (sizes, batch, *_rest) in enumerate(cases):
        full, bare = best[i, "full"], best[i, "bare"]
        print(
            f"  {'-'.join(map(str, sizes)):>12} {batch:>6} {full:14.3f} {bare:10.3f} "
            f"{full / bare:11.1f}x"
        )
    wide = best[1, "full"] / best[0, "full"]
    large = best[2, "full"] / best[0, "full"]
    print(
        f"  784-1024-10 / 784-256-10 at batch 16: {wide:.2f}x (target <= 5; 4x the weights; "
        f"bare work {best[1, 'bare'] / best[0, 'bare']:.2f}x)"
    )
    print(
        f"  batch 256 / batch 16 on 784-256-10: {large:.2f}x (target <= 20; 16x the samples; "
        f"bare work {best[2, 'bare'] / best[0, 'bare']:.2f}x)"
    )


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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of scaling")
    parser.add_argument("--scaling-only", action="store_true", help="only the growth table")
    args = parser.parse_args()
    print(
        f"torch threads: {torch.get_num_threads()}, numpy {np.__version__}, "
        f"torch {torch.__version__}\n"
    )
    if args.scaling_only:
        scaling(args.rounds)
        return
    speed(args.skip_slow)
    scaling(args.rounds)
    memory()
    million()
    detection()


if __name__ == "__main__":
    main()
