"""Where the gradient check's tolerance comes from.

1. A correct 64-128-10 network judged by the seed notebook's purely relative rule and by
   handgrad's rule (relative threshold plus rounding-noise floor), at four (eps, threshold)
   pairs.
2. The noise factor that correct networks need: over a grid of architectures, activations,
   batches, losses and scales, the largest |analytic - numeric| that exceeds the relative
   tolerance, in units of machine_eps * max(|L|, 1) / eps. handgrad uses NOISE_FACTOR.

Run: python benchmarks/gradcheck_tolerance.py   (about a minute on 2 cores)
"""

from __future__ import annotations

import itertools

import numpy as np

import handgrad as hg
from handgrad.gradcheck.check import _FLOAT64_EPS, NOISE_FACTOR


def seed_rule_worst(analytic: np.ndarray, numeric: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        rel = np.abs(analytic - numeric) / (np.abs(analytic) + np.abs(numeric))
    return float(np.max(np.nan_to_num(rel)))


def compare_rules() -> None:
    rng = np.random.default_rng(0)
    model = hg.mlp([64, 128, 10], "sigmoid", init="small_normal", rng=rng)
    x, y = rng.standard_normal((32, 64)), rng.integers(0, 10, 32)
    loss = hg.CrossEntropyLoss()

    def loss_at() -> float:
        return float(loss.forward(model.forward(x), y))

    print(f"64-128-10 sigmoid, batch 32, loss {loss_at():.4f}")
    print(
        f"{'eps':>8} {'threshold':>10} {'seed rule (worst rel)':>24} {'handgrad (worst rel)':>22}"
    )
    for eps, threshold in [(1e-5, 1e-7), (1e-4, 1e-6), (1e-6, 1e-6), (1e-3, 1e-4)]:
        report = hg.check_gradients(
            model, loss, x, y, eps=eps, threshold=threshold, raise_on_failure=False
        )
        analytic = model.grads
        worst = max(
            seed_rule_worst(analytic[name], hg.numerical_gradient(lambda _: loss_at(), p, eps))
            for name, p in model.params.items()
        )
        ours = max(c.max_rel_diff for c in report.checks)
        seed_verdict = "FAIL" if worst > threshold else "pass"
        our_verdict = "pass" if report.passed else "FAIL"
        print(
            f"{eps:>8g} {threshold:>10g} {seed_verdict:>6} ({worst:.2e}){'':>6}"
            f" {our_verdict:>6} ({ours:.2e})"
        )


def calibrate(eps: float = 1e-6, threshold: float = 1e-6) -> None:
    worst, where = 0.0, None
    grid = itertools.product(
        [[4, 5, 3], [10, 20, 3], [30, 20, 2], [64, 32, 10]],
        ["sigmoid", "tanh", "relu"],
        [1, 8, 32],
        range(4),
        ["cross-entropy", "mse"],
    )
    count = 0
    for sizes, activation, batch, seed, loss_name in grid:
        count += 1
        rng = np.random.default_rng(seed)
        model = hg.mlp(sizes, activation, rng=rng)
        for p in model.params.values():
            p[...] = rng.standard_normal(p.shape) * (0.5 if seed % 2 else 2.0)
        x = rng.standard_normal((batch, sizes[0])) * (1 if seed < 2 else 5)
        if loss_name == "mse":
            loss, y = hg.MSELoss(), rng.standard_normal((batch, sizes[-1]))
        else:
            loss, y = hg.CrossEntropyLoss(), rng.integers(0, sizes[-1], batch)

        def loss_at(model=model, loss=loss, x=x, y=y) -> float:
            return float(loss.forward(model.forward(x), y))

        value = loss_at()
        model.backward(loss.backward())
        unit = _FLOAT64_EPS * max(abs(value), 1.0) / eps
        for name, p in model.params.items():
            a = model.grads[name].copy()
            n = hg.numerical_gradient(lambda _: loss_at(), p, eps)
            diff = np.abs(a - n)
            over = diff > threshold * (np.abs(a) + np.abs(n))
            if over.any() and diff[over].max() / unit > worst:
                worst = float(diff[over].max() / unit)
                arch = "-".join(map(str, sizes))
                where = f"{arch} {activation} batch {batch} seed {seed} {loss_name} {name}"
    print(f"\nnoise factor needed over {count} correct configurations: {worst:.2f} ({where})")
    print(f"NOISE_FACTOR in handgrad: {NOISE_FACTOR:g} (margin {NOISE_FACTOR / worst:.1f}x)")


if __name__ == "__main__":
    compare_rules()
    calibrate()
