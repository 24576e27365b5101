"""handgrad.jax.check_grads against JAX's own tools at equal coverage: every element of the
input checked, in reverse mode (the mode that runs a custom_vjp's bwd rule), float64.

Peers, measured in the same run, rounds interleaved:

- ``jax.test_util.check_grads`` per direction: JAX's checker compares one random direction
  per call. To cover every element, it is called once per input element ``i`` on
  ``t -> f(x + t e_i)`` with ``order=1, modes=["rev"]``: each call checks the VJP (with a
  random cotangent) against a central difference along ``e_i``. Timed on a sample of the
  directions and scaled to all of them (the calls are independent and alike).
- the dense check: ``jax.jacrev(f)(x)`` (the whole Jacobian, one VJP per output, vmapped)
  against the whole numeric Jacobian (central differences along every ``e_i``, vmapped),
  both under ``jax.jit``, compared with ``allclose``: the check a JAX user writes for full
  coverage. Its memory grows with outputs x inputs.

handgrad.jax.check_grads: a random cotangent ``v``, ``jax.vjp``, and the finite differences
of ``<v, f(x)>`` along every ``e_i``, batched with ``jax.vmap`` in chunks within a memory
budget (no Jacobian), each element decided by handgrad's verdict (second looks, kinks).

Times are warm (compiled functions reused; the first call, which compiles, is reported
apart), the median of ``--rounds`` interleaved rounds; ratios are peer time over
handgrad's.

Run: python benchmarks/jax_check_bench.py [--rounds 3] [--quick]   (two minutes or so)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.test_util import check_grads as jax_check_grads

import handgrad.jax as hj

jax.config.update("jax_enable_x64", True)  # JAX's checker needs it for float64
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from jax_zoo import ZOO  # noqa: E402

CASES = {case.name: case for case in ZOO}


def _problems(quick: bool):
    """(label, custom_vjp function, float64 arguments, the argument checked)."""
    rng = np.random.default_rng(0)
    rows = 16 if quick else 32
    return [
        ("SiLU, 64 x 64", CASES["silu"].f, (rng.standard_normal((64, 64)),)),
        (
            f"layer norm, {rows} x 64",
            CASES["layer-norm"].f,
            (
                rng.standard_normal((rows, 64)),
                {"gamma": 1 + 0.1 * rng.standard_normal(64), "beta": rng.standard_normal(64)},
            ),
        ),
        (
            "attention, q of 32 x 16",
            CASES["attention"].f,
            tuple(rng.standard_normal((32, 16)) for _ in range(3)),
        ),
    ]


def _first_argument(f, args):
    """f as a function of its first argument alone (the one all peers check)."""
    return lambda x: f(x, *args[1:])


def _per_direction(f, args, sample: int, order: int = 1) -> float:
    """Seconds for JAX's check_grads along ``sample`` basis directions of the first
    argument, scaled to every element."""
    g, x = _first_argument(f, args), jnp.asarray(args[0])
    n = x.size
    picks = np.random.default_rng(1).choice(n, size=min(sample, n), replace=False)
    start = time.perf_counter()
    for i in picks:
        e = jnp.zeros(n).at[int(i)].set(1.0).reshape(x.shape)
        jax_check_grads(lambda t, e=e: g(x + t * e), (0.0,), order=order, modes=["rev"])
    return (time.perf_counter() - start) * n / picks.size


def _dense_checker(f, args):
    g, x = _first_argument(f, args), jnp.asarray(args[0])
    n, h = x.size, 1e-6

    @jax.jit
    def dense(x):
        analytic = jax.jacrev(g)(x).reshape(-1, n)  # outputs x inputs

        def along(e):
            e = e.reshape(x.shape)
            return ((g(x + h * e) - g(x - h * e)) / (2 * h)).reshape(-1)

        numeric = jax.vmap(along)(jnp.eye(n)).T
        return jnp.allclose(analytic, numeric, rtol=1e-5, atol=1e-6)

    return lambda: bool(dense(x))


def _handgrad(f, args, order: int = 1):
    g, x = _first_argument(f, args), args[0]
    return lambda: hj.check_grads(g, (x,), order, rng=0)


def _jacobians_mib(f, args) -> float:
    """What the dense check's two float64 Jacobians hold (outputs x inputs, twice)."""
    outputs = sum(np.size(y) for y in jax.tree.leaves(f(*args)))
    return 2 * 8 * outputs * np.size(args[0]) / 2**20


def _timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def _second_order(options) -> None:
    """order=2 against JAX's check_grads(order=2, modes=["rev"]) per direction."""
    rng = np.random.default_rng(2)
    problems = [
        ("SiLU, 32 x 32", CASES["silu"].f, (rng.standard_normal((32, 32)),)),
        (
            "layer norm, 8 x 32",
            CASES["layer-norm"].f,
            (
                rng.standard_normal((8, 32)),
                {"gamma": 1 + 0.1 * rng.standard_normal(32), "beta": rng.standard_normal(32)},
            ),
        ),
    ]
    print(
        f"\norder 2 (x, and the VJP as a function of x and v)\n"
        f"{'function':26s} {'elements':>8s} {'handgrad':>10s} {'check_grads':>12s} {'cg/hg':>8s}"
    )
    for label, f, args in problems:
        ours = _handgrad(f, args, order=2)
        ours()  # compiles
        _per_direction(f, args, 2, order=2)  # JAX's primitives compiled too
        mine, theirs = [], []
        for _ in range(options.rounds):
            seconds, passed = _timed(ours)
            assert passed, label
            mine.append(seconds)
            theirs.append(_per_direction(f, args, max(4, options.sample // 4), order=2))
        a, b = statistics.median(mine), statistics.median(theirs)
        print(f"{label:26s} {np.size(args[0]):8d} {a:9.3f}s {b:11.2f}s {b / a:7.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=32, help="directions timed for check_grads")
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"jax {jax.__version__}, {jax.devices()[0].platform}, float64, full coverage")
    print(
        f"{'function':26s} {'elements':>8s} {'handgrad':>10s} {'dense jit':>10s} "
        f"{'check_grads':>12s} {'dense/hg':>9s} {'cg/hg':>8s} {'first calls (hg, dense)':>24s} "
        f"{'dense holds':>12s}"
    )
    for label, f, args in _problems(options.quick):
        ours, dense = _handgrad(f, args), _dense_checker(f, args)
        first = (_timed(ours)[0], _timed(dense)[0])  # compiles
        _per_direction(f, args, 2)  # JAX's primitives compiled too
        times = {"handgrad": [], "dense": [], "check_grads": []}
        for _ in range(options.rounds):
            seconds, passed = _timed(ours)
            assert passed, label
            times["handgrad"].append(seconds)
            seconds, agreed = _timed(dense)
            assert agreed, label
            times["dense"].append(seconds)
            times["check_grads"].append(_per_direction(f, args, options.sample))
        t = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"{label:26s} {np.size(args[0]):8d} {t['handgrad']:9.3f}s {t['dense']:9.3f}s "
            f"{t['check_grads']:11.2f}s {t['dense'] / t['handgrad']:8.1f}x "
            f"{t['check_grads'] / t['handgrad']:7.0f}x {first[0]:11.2f}s, {first[1]:.2f}s "
            f"{_jacobians_mib(f, args):9.0f} MiB"
        )
    _second_order(options)
    print(
        "check_grads: JAX's checker called once per input element on t -> f(x + t e_i), "
        f"order 1, rev mode (timed on {options.sample} directions, scaled);\n"
        "dense jit: jax.jacrev's whole Jacobian against the whole central-difference "
        "Jacobian, vmapped and compiled;\n"
        "order 2: JAX's checker with order=2 (its first and second order, rev mode) once per "
        f"element, timed on {max(4, options.sample // 4)} directions, scaled;\n"
        "handgrad: handgrad.jax.check_grads, full mode (every element), vmapped finite "
        "differences of <v, f(x)>, no Jacobian (copies within a 256 MiB budget)."
    )


if __name__ == "__main__":
    main()
