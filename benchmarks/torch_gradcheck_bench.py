"""handgrad.torch.gradcheck / gradgradcheck against torch.autograd.gradcheck /
gradgradcheck (default mode: the dense Jacobian, column by column), measured in the same
run, rounds interleaved, one torch thread each; and the peak memory of a check of a
1,000,000-element input against its budget (the resident set's high-water mark, VmHWM,
reset after a warm-up check, in a process of its own).

    python benchmarks/torch_gradcheck_bench.py            # 20,000 elements (torch: minutes,
                                                          # and ~24 GiB for its Jacobians:
                                                          # fewer elements where that is
                                                          # more than there is)
    python benchmarks/torch_gradcheck_bench.py --quick    # 4,000 elements

Both checks compare every element. handgrad's includes its backward checks (grad_output
in three layouts, a second pass, a zero grad_output); torch's does not have them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import handgrad.torch as hgt
from tests.torch_function_zoo import LayerNorm, SiLU


def _timed(call) -> float:
    start = time.perf_counter()
    assert call(), "the check must pass"
    return time.perf_counter() - start


def _race(name: str, ours, theirs, rounds: int) -> float:
    """Interleaved rounds (ours, theirs, ours, ...); the best of each; the ratio."""
    mine, peer = [], []
    for r in range(rounds):
        mine.append(_timed(ours))
        if r < max(1, rounds - 1):  # the peer is the slow one: one round fewer when >1
            peer.append(_timed(theirs))
    best, best_peer = min(mine), min(peer)
    print(
        f"  {name:<44} handgrad {best:8.3f} s   torch {best_peer:8.3f} s   "
        f"torch / handgrad {best_peer / best:7.1f}x"
    )
    return best_peer / best


_TORCH_BYTES_PER_N2 = 62  # torch's default gradcheck held ~941 MiB at n = 4,000 (see memory())


def _available() -> int:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable")) * 1024


def fitting_rows(rows: int) -> int:
    """``rows`` (of 100), or fewer when torch's dense Jacobians would not fit in memory."""
    fits = int((0.6 * _available() / _TORCH_BYTES_PER_N2) ** 0.5) // 100
    if fits < rows:
        print(
            f"note: torch's gradcheck of {rows * 100:,} elements would hold about "
            f"{_TORCH_BYTES_PER_N2 * (rows * 100) ** 2 / 2**30:.0f} GiB; with "
            f"{_available() / 2**30:.0f} GiB available, both are measured at {fits * 100:,}"
        )
    return max(1, min(rows, fits))


def first_order(rows: int, rounds: int) -> None:
    rows = fitting_rows(rows)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 100, dtype=torch.float64, generator=generator).requires_grad_(True)
    print(f"first order, every element of a {rows}x100 input ({x.numel():,} elements), float64")
    _race(
        "SiLU (custom Function)",
        lambda: hgt.gradcheck(SiLU.apply, (x,)),
        lambda: torch.autograd.gradcheck(SiLU.apply, (x,)),
        rounds,
    )
    small = x[:40].detach().clone().requires_grad_(True)  # torch's Jacobians: 3 x 4,000^2
    w = (1 + 0.1 * torch.randn(100, dtype=torch.float64, generator=generator)).requires_grad_()
    b = torch.randn(100, dtype=torch.float64, generator=generator).requires_grad_(True)
    _race(
        "layer norm (custom Function; x 40x100, w, b)",
        lambda: hgt.gradcheck(LayerNorm.apply, (small, w, b)),
        lambda: torch.autograd.gradcheck(LayerNorm.apply, (small, w, b)),
        rounds,
    )


def second_order(rows: int, rounds: int) -> None:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(rows, 50, dtype=torch.float64, generator=generator).requires_grad_(True)
    print(f"second order, every element of a {rows}x50 input and its grad_output, float64")
    _race(
        "SiLU (custom Function), gradgradcheck",
        lambda: hgt.gradgradcheck(SiLU.apply, (x,)),
        lambda: torch.autograd.gradgradcheck(SiLU.apply, (x,)),
        rounds,
    )


_MEMORY_CHILD = """
import json, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, {root!r})
import handgrad.torch as hgt
from tests.torch_function_zoo import SiLU

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field)) * 1024

hgt.check_report(SiLU.apply, (torch.randn(4, 100, dtype=torch.float64).requires_grad_(True),))
x = torch.randn({rows}, 100, dtype=torch.float64).requires_grad_(True)
base = status("VmRSS")  # after a small check: torch's libraries and thread pools loaded
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from here
start = time.perf_counter()
if {peer!r} == "torch":
    passed, method = torch.autograd.gradcheck(SiLU.apply, (x,)), "dense Jacobian"
else:
    report = hgt.check_report(SiLU.apply, (x,), max_memory={budget})
    passed, method = report.passed, report.checks[0].method
seconds = time.perf_counter() - start
peak = status("VmHWM")
print(json.dumps({{"passed": passed, "base": base, "peak": peak, "seconds": seconds,
                  "method": method, "elements": x.numel()}}))
"""


def _peak(rows: int, budget: int, peer: str, exact: bool = False) -> dict:
    """The child's figures; ``exact``: glibc's mmap threshold fixed at 64 KiB, so that
    every freed array leaves the resident set at once (the arrays alive, without what the
    allocator keeps for reuse; much slower)."""
    root = str(Path(__file__).resolve().parents[1])
    code = _MEMORY_CHILD.format(root=root, rows=rows, budget=budget, peer=peer)
    env = {**os.environ, **({"MALLOC_MMAP_THRESHOLD_": "65536"} if exact else {})}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def memory(rows: int, budgets: tuple[int, ...]) -> None:
    """Peak resident memory of a check of ``rows`` x 100 elements at each budget, each in a
    fresh process; and torch's at 4,000 elements."""
    for budget in budgets:
        got = _peak(rows, budget, "handgrad")
        alive = _peak(rows, budget, "handgrad", exact=True)
        grown, live = got["peak"] - got["base"], alive["peak"] - alive["base"]
        size = got["elements"] * 8
        print(
            f"memory: SiLU on {got['elements']:,} elements ({size / 2**20:.0f} MiB), budget "
            f"{budget / 2**20:4.0f} MiB: peak RSS above the RSS before the check "
            f"{grown / 2**20:4.0f} MiB = {grown / (budget + size):.2f} x (budget + input), "
            f"method {got['method']}, {got['seconds']:.1f} s, passed {got['passed']}\n"
            f"  the same with malloc's mmap threshold fixed (arrays alive, no reuse pool): "
            f"{live / 2**20:4.0f} MiB = {live / (budget + size):.2f} x (budget + input), "
            f"input x {(live - budget) / size:.1f} beyond the budget"
        )
    theirs = _peak(40, budgets[0], "torch")
    grown = theirs["peak"] - theirs["base"]
    print(
        f"  torch.autograd.gradcheck on {theirs['elements']:,} elements: {grown / 2**20:.0f} MiB "
        f"(dense Jacobians, n^2 x 8 bytes each); on {got['elements']:,} elements one "
        f"Jacobian alone would take {got['elements'] ** 2 * 8 / 2**40:.1f} TiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 elements, 2 rounds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, rounds = (40, 2) if args.quick else (200, 2)
    first_order(rows, rounds)
    second_order(10 if args.quick else 40, 3)
    memory(1000 if args.quick else 10_000, (16 * 2**20, 64 * 2**20, 256 * 2**20))


if __name__ == "__main__":
    main()
