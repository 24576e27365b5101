"""Conv2d speed: handgrad's forward + backward against torch.nn.Conv2d's, one thread each.

float32 input of 32 x 16 x 16 x 16 (N, C, H, W), 3 x 3 filters, 32 of them, padding 1; the
same weights, input and upstream gradient for both. One step is the forward pass, then the
backward pass for the input and both parameters (torch: ``conv(x).backward(dy)`` with
``x.requires_grad``). BLAS and torch are pinned to one thread. The two are timed in
interleaved rounds, one call at a time, and each one's fastest call is kept (on a shared
machine the slower calls measure the neighbours); the medians are printed too. Then
where handgrad's time goes: each stage timed on its own, and the same matrix products
through torch's BLAS.

Run: python benchmarks/conv_bench.py [--rounds R]   (about twenty seconds)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import handgrad as hg
from handgrad.core.arrays import namespace
from handgrad.nn.windows import add_windows_flat, gather_windows, pad

N, C, H, W, F, K = 32, 16, 16, 16, 32, 3


def timings(step, calls):
    """Seconds of each of ``calls`` calls of ``step`` (after one to warm up)."""
    step()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="calls per round")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    dy = rng.standard_normal((N, F, H, W)).astype(np.float32)
    layer = hg.Conv2d(C, F, K, padding=1, rng=0, dtype="float32")
    layer.params["bias"][...] = rng.standard_normal(F)
    module = torch.nn.Conv2d(C, F, K, padding=1)
    module.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in layer.params.items()})
    x_t = torch.from_numpy(x).requires_grad_(True)
    dy_t = torch.from_numpy(dy)

    def ours():
        layer.forward(x)
        return layer.backward(dy)

    def theirs():
        x_t.grad = None
        module.zero_grad(set_to_none=True)
        module(x_t).backward(dy_t)
        return x_t.grad

    scale = float(np.max(np.abs(theirs().numpy())))
    agree = float(np.max(np.abs(ours() - theirs().numpy()))) / scale
    with threadpool_limits(1):
        times = {"handgrad": [], "torch": []}
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            times["handgrad"] += timings(ours, args.calls)
            times["torch"] += timings(theirs, args.calls)
        ours_s, theirs_s = min(times["handgrad"]), min(times["torch"])
        medians = {k: float(np.median(v)) for k, v in times.items()}
        stages = _stages(layer, x, dy, args)
    print(
        f"Conv2d forward + backward, float32 x {N}x{C}x{H}x{W}, {K}x{K}, {F} filters, "
        f"padding 1, one thread, fastest of {args.rounds * args.calls} calls (median)"
    )
    print(f"  handgrad  {ours_s * 1e3:7.3f} ms  ({medians['handgrad'] * 1e3:.3f})")
    print(f"  torch     {theirs_s * 1e3:7.3f} ms  ({medians['torch'] * 1e3:.3f})")
    print(f"  handgrad / torch: {ours_s / theirs_s:.2f}  (dL/dx agrees to {agree:.1e} relative)")
    print("where handgrad's time goes (each stage alone):")
    for name, seconds in stages.items():
        print(f"  {name:<44} {seconds * 1e3:7.3f} ms")


def _stages(layer, x, dy, args):
    """Each stage of the step, timed alone, and its matrix products through torch too."""
    xp = namespace(x)
    padded = pad(xp, x, ((1, 1), (1, 1)))
    cols = np.reshape(gather_windows(xp, padded, (K, K), (1, 1), (1, 1), (H, W)), (N, 1, -1, H * W))
    weight = np.reshape(layer.params["weight"], (1, F, -1))
    rows = np.reshape(dy, (N, 1, F, H * W))
    wide = np.zeros((N, 1, F, H, W + 2), dtype=np.float32)
    wide[..., :W] = np.reshape(rows, (N, 1, F, H, W))
    wide = np.reshape(wide, (N, 1, F, H * (W + 2)))
    dcols = np.reshape(weight.mT @ wide, (N, C, K * K, -1))
    as_torch = [torch.from_numpy(a) for a in (weight, cols, rows, wide)]
    w_t, cols_t, rows_t, wide_t = as_torch
    flops = 2 * F * C * K * K * H * W * N

    def time_of(step):
        return min(timings(step, args.rounds * args.calls))

    stages = {
        "pad + gather windows (im2col)": time_of(
            lambda: gather_windows(xp, pad(xp, x, ((1, 1), (1, 1))), (K, K), (1, 1), (1, 1), (H, W))
        ),
        "forward product W cols (NumPy's BLAS)": time_of(lambda: weight @ cols),
        "dL/dW product dy cols^T, summed": time_of(lambda: np.sum(rows @ cols.mT, axis=0)),
        "dL/dcols product W^T dy (padded rows)": time_of(lambda: weight.mT @ wide),
        "add windows back (col2im, 9 shifted adds)": time_of(
            lambda: add_windows_flat(xp, dcols, (H + 2, W + 2), (K, K), (1, 1))
        ),
        "the three products through torch's BLAS": time_of(
            lambda: (w_t @ cols_t, torch.sum(rows_t @ cols_t.mT, dim=0), w_t.mT @ wide_t)
        ),
    }
    rate = flops / stages["forward product W cols (NumPy's BLAS)"] / 1e9
    print(f"NumPy's BLAS runs a product at {rate:.0f} GFLOP/s", file=sys.stderr)
    return stages


if __name__ == "__main__":
    main()
