"""GPT training step: handgrad (NumPy, hand-written backward passes) against PyTorch eager.

The same small character-level GPT in nanoGPT's layout (default 4 layers, 4 heads, 128 wide,
context 64, batch 32, float32, the characters of Python's standard library as vocabulary),
the same initial weights and batches, and the same step for both: forward, cross-entropy,
backward, gradients clipped to norm 1, AdamW with decay on the matrices. PyTorch's model is
nanoGPT's, with its fused attention (``F.scaled_dot_product_attention``). Both run with the
same number of threads (BLAS and torch); rounds interleave the two so that a slow spell of
the machine hits both. Memory per step: in a fresh process each, the peak resident memory
of three steps above the resident memory before them (model, data and, for handgrad, the
optimizer's state: torch's AdamW makes its state in the first step, 2 x 3.1 MiB here); for
handgrad also the peak of the arrays a step allocates (tracemalloc).

    python benchmarks/gpt_bench.py [--threads 2] [--rounds 5] [--gelu tanh]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import handgrad as hg
from handgrad.app.language_model import gradient_reader
from handgrad.data.text import CharVocabulary, default_corpus, random_windows
from handgrad.training.clipping import clip_grad_norm
from handgrad.training.optim import AdamW

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from torch_gpt import TorchGPT

LR, WEIGHT_DECAY, CLIP = 1e-3, 0.1, 1.0


def setting(args: argparse.Namespace) -> dict:
    return {
        "block_size": args.block_size,
        "n_layer": args.n_layer,
        "n_head": args.n_head,
        "n_embd": args.n_embd,
        "gelu": args.gelu,
    }


def data(args: argparse.Namespace, steps: int) -> tuple[int, list]:
    text, _ = default_corpus(200_000)
    vocab = CharVocabulary.from_text(text)
    tokens = vocab.encode(text)
    rng = np.random.default_rng(0)
    batches = [random_windows(tokens, args.block_size, args.batch_size, rng) for _ in range(steps)]
    return len(vocab), batches


def handgrad_step(vocab_size: int, args: argparse.Namespace):
    s = setting(args)
    model = hg.GPT(
        vocab_size, s["block_size"], s["n_layer"], s["n_head"], s["n_embd"], gelu=s["gelu"], rng=0
    ).to(dtype="float32")
    optimizer = AdamW(model.params, lr=LR, weight_decay=WEIGHT_DECAY)
    loss = hg.SequenceCrossEntropyLoss()
    gradients = gradient_reader(model)

    def step(x, y) -> float:
        value = loss.forward(model.forward_unchecked(x), y)
        model.backward_unchecked(loss.backward())
        clipped, _ = clip_grad_norm(gradients(), CLIP)
        optimizer.step(clipped)
        return float(value)

    return model, step


def torch_step(vocab_size: int, args: argparse.Namespace, weights: dict):
    s = setting(args)
    model = TorchGPT(
        vocab_size,
        s["block_size"],
        s["n_layer"],
        s["n_head"],
        s["n_embd"],
        approximate=s["gelu"],
        flash=True,
    )
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    others = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": matrices}, {"params": others, "weight_decay": 0.0}],
        lr=LR,
        weight_decay=WEIGHT_DECAY,
    )

    def step(x, y) -> float:
        optimizer.zero_grad(set_to_none=True)
        logits = model(torch.from_numpy(x))
        value = torch.nn.functional.cross_entropy(
            logits.reshape(-1, vocab_size), torch.from_numpy(y).reshape(-1)
        )
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        return float(value.detach())

    return model, step


def timing(args: argparse.Namespace) -> None:
    per_round = args.steps_per_round
    vocab_size, batches = data(args, 2 + args.rounds * per_round)
    model, ours = handgrad_step(vocab_size, args)
    _, theirs = torch_step(vocab_size, args, model.state_dict())
    losses = {"handgrad": [], "torch": []}
    for x, y in batches[:2]:  # warm-up, and a check that the two agree
        losses["handgrad"].append(ours(x, y))
        losses["torch"].append(theirs(x, y))
    times = {"handgrad": [], "torch": []}
    for r in range(args.rounds):
        chunk = batches[2 + r * per_round : 2 + (r + 1) * per_round]
        for name, step in (("handgrad", ours), ("torch", theirs)):
            started = time.perf_counter()
            for x, y in chunk:
                losses[name].append(step(x, y))
            times[name].append((time.perf_counter() - started) / per_round)
    tokens = args.batch_size * args.block_size
    print(
        f"GPT {args.n_layer} layers, {args.n_head} heads, {args.n_embd} wide, context "
        f"{args.block_size}, batch {args.batch_size}, vocab {vocab_size}, gelu {args.gelu}, "
        f"float32, {args.threads} thread(s); {args.rounds} rounds of {per_round} steps"
    )
    print(f"  parameters: {sum(p.size for p in model.params.values()):,}")
    for name in times:
        median, best = statistics.median(times[name]), min(times[name])
        print(
            f"  {name:<9} {median * 1e3:7.1f} ms/step (median; best {best * 1e3:6.1f})   "
            f"{tokens / median:9,.0f} tokens/s"
        )
    ratio = statistics.median(times["handgrad"]) / statistics.median(times["torch"])
    best = min(times["handgrad"]) / min(times["torch"])
    print(f"  time handgrad / torch: {ratio:.2f} (median), {best:.2f} (best)")
    drift = max(abs(a - b) for a, b in zip(losses["handgrad"], losses["torch"], strict=True))
    print(f"  largest loss difference over {len(losses['torch'])} steps: {drift:.1e} (float32)")


def memory(which: str, args: argparse.Namespace) -> dict:
    """Run in a fresh process: the resident memory a step adds at its peak."""
    vocab_size, batches = data(args, 4)
    model, ours = handgrad_step(vocab_size, args)
    step = ours if which == "handgrad" else torch_step(vocab_size, args, model.state_dict())[1]
    if which == "torch":
        del model
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to now
    for x, y in batches[:3]:
        step(x, y)
    result = {"peak_above_before_mib": (_status("VmHWM") - before) / 1024}
    if which == "handgrad":
        tracemalloc.start()
        step(*batches[1])
        result["arrays_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_report(args: argparse.Namespace, argv: list[str]) -> None:
    print("  memory per step (a fresh process each, the peak of its first 3 steps):")
    for which in ("handgrad", "torch"):
        done = subprocess.run(
            [sys.executable, __file__, *argv, "--memory", which],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        extra = ""
        if "arrays_peak_mib" in result:
            extra = f"; arrays allocated in a step peak at {result['arrays_peak_mib']:.1f} MiB"
        print(
            f"    {which:<9} peak resident memory {result['peak_above_before_mib']:6.1f} MiB "
            f"above what it held before{extra}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="BLAS and torch threads (2)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=3)
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--gelu", choices=("tanh", "none"), default="tanh")
    parser.add_argument("--memory", choices=("handgrad", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        if args.memory:
            print(json.dumps(memory(args.memory, args)))
            return
        timing(args)
    memory_report(args, sys.argv[1:])


if __name__ == "__main__":
    main()
