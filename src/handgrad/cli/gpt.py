"""``handgrad gpt train`` and ``handgrad gpt sample``: a character-level GPT on a text file
(or, with none, on the Python standard library's own source), trained with hand-written
backward passes."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.app.language_model import (
    CONSTRAINTS,
    GPTTrainConfig,
    load_gpt_run,
    sample_text,
    save_gpt_run,
    train_gpt,
)
from handgrad.cli.runs import StopSignals
from handgrad.core.errors import TrainingInterruptedError
from handgrad.core.files import atomic_write
from handgrad.core.validation import POSITIVE, POSITIVE_INT, Constraint
from handgrad.data.text import (
    DEFAULT_CORPUS_CHARS,
    CharVocabulary,
    default_corpus,
    read_text,
    split_tokens,
    unigram_loss,
)

__all__ = ["add_gpt_parser", "run"]

_DEFAULT = GPTTrainConfig()
RUN_FILE = "gpt.npz"
# the settings the command line offers, named as GPTTrainConfig's fields
_SETTINGS = (
    "steps",
    "batch_size",
    "block_size",
    "n_layer",
    "n_head",
    "n_embd",
    "lr",
    "warmup",
    "weight_decay",
    "clip",
    "eval_every",
    "gelu",
    "dtype",
)


def _typed(constraint: Constraint) -> Any:
    def parse(text: str) -> Any:
        try:
            return constraint.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def add_gpt_parser(commands: argparse._SubParsersAction) -> None:
    """Add ``gpt`` with its two commands, ``train`` and ``sample``, to the parser."""
    gpt = commands.add_parser(
        "gpt",
        help="train a character-level GPT on text, or sample from one",
        description="A GPT in nanoGPT's layout whose every backward pass is written by hand.",
    )
    sub = gpt.add_subparsers(dest="gpt_command", required=True, metavar="COMMAND")
    p = sub.add_parser(
        "train",
        help="train on a text file (default: Python's own standard library source)",
        description="Train a character-level GPT, print the validation loss against the "
        "unigram baseline and a sample, and write OUT/gpt.npz, OUT/loss.png and "
        "OUT/sample.txt.",
    )
    p.add_argument("--text", metavar="FILE", help="a UTF-8 text file to learn")
    p.add_argument(
        "--max-chars",
        type=_typed(POSITIVE_INT),
        default=DEFAULT_CORPUS_CHARS,
        help=f"use at most this many characters of the text ({DEFAULT_CORPUS_CHARS:,})",
    )
    for name, help_text in (  # the numeric settings
        ("steps", "training steps"),
        ("batch_size", "windows per step"),
        ("block_size", "context length in characters"),
        ("n_layer", "transformer blocks"),
        ("n_head", "attention heads per block"),
        ("n_embd", "width (a multiple of --n-head)"),
        ("lr", "peak learning rate (AdamW)"),
        ("warmup", "warm-up steps before the cosine decay"),
        ("weight_decay", "AdamW's decoupled weight decay, on the matrices"),
        ("clip", "clip the gradients to this global norm"),
        ("eval_every", "validation loss every this many steps"),
    ):
        default = getattr(_DEFAULT, name)
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=_typed(CONSTRAINTS[name]),
            default=default,
            help=f"{help_text} ({default:g})",
        )
    p.add_argument("--gelu", choices=CONSTRAINTS["gelu"].values, default=_DEFAULT.gelu)
    p.add_argument("--dtype", choices=CONSTRAINTS["dtype"].values, default=_DEFAULT.dtype)
    p.add_argument("--seed", type=int, default=0, help="weights, batches and samples (0)")
    p.add_argument(
        "--threads",
        type=_typed(POSITIVE_INT),
        default=1,
        help="threads of NumPy's BLAS (1: the fastest on a busy machine; more help on an idle "
        "one with as many cores); needs threadpoolctl, which scikit-learn installs",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_typed(POSITIVE_INT),
        default=None,
        metavar="N",
        help="save OUT/gpt.npz every N steps too (Ctrl-C always saves it)",
    )
    p.add_argument(
        "--resume", metavar="DIR", help="go on with the run saved in DIR (its settings are kept)"
    )
    p.add_argument("--sample-chars", type=_typed(POSITIVE_INT), default=500)
    p.add_argument("--out", default="handgrad-gpt", metavar="DIR", help="(handgrad-gpt)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("sample", help="write text from a trained GPT")
    p.add_argument("--model", required=True, metavar="DIR/gpt.npz")
    p.add_argument("--start", default="\n", help="the text to go on from (a newline)")
    p.add_argument("--chars", type=_typed(POSITIVE_INT), default=500)
    p.add_argument("--temperature", type=_typed(POSITIVE), default=0.8)
    p.add_argument("--top-k", type=_typed(POSITIVE_INT), default=None)
    p.add_argument("--seed", type=int, default=0)


def _corpus(text_path: str | None, max_chars: int) -> tuple[str, str]:
    if text_path is None:
        return default_corpus(max_chars)
    text = read_text(text_path, max_chars)
    return text, f"{text_path} ({len(text):,} chars)"


class _Progress:
    """A tqdm bar over the steps when stderr is a terminal, else a line per evaluation."""

    def __init__(self, total: int, done: int, enabled: bool) -> None:
        self.bar = None
        if enabled and importlib.util.find_spec("tqdm") is not None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, unit="step", file=sys.stderr)

    def step(self, run: Any, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def evaluation(self, run: Any) -> None:
        line = (
            f"step {run.step}: train loss {np.mean(run.train_loss[-20:]):.4f} (last 20 steps), "
            f"validation loss {run.val_loss[-1]:.4f}"
        )
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _blas_threads(threads: int) -> Any:
    """A context that limits NumPy's BLAS to ``threads`` (nothing without threadpoolctl)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _train(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    out = Path(args.resume or args.out)
    if args.resume is not None:
        loaded = load_gpt_run(out / RUN_FILE)
        config, vocab, run, extra = loaded.config, loaded.vocab, loaded.run, loaded.extra
        text, source = _corpus(extra.get("text"), extra.get("max_chars", DEFAULT_CORPUS_CHARS))
        if CharVocabulary.from_text(text) != vocab:
            raise ValueError(f"the text of the run in {out} has changed since it was saved")
        print(f"resuming the run in {out} after step {run.step} of {config.steps}")
    else:
        config = GPTTrainConfig(**{k: getattr(args, k) for k in _SETTINGS}, seed=args.seed)
        text, source = _corpus(args.text, args.max_chars)
        vocab, run = CharVocabulary.from_text(text), None
        extra = {
            "text": None if args.text is None else str(Path(args.text).resolve()),
            "max_chars": args.max_chars,
            "sample_chars": args.sample_chars,
        }
    train, val = split_tokens(vocab.encode(text), config.val_fraction)
    baseline = unigram_loss(train, val, len(vocab))
    print(f"text: {source}; {len(vocab)} distinct characters")
    print(
        f"GPT: {config.n_layer} layers, {config.n_head} heads, {config.n_embd} wide, context "
        f"{config.block_size}, gelu {config.gelu}, {config.dtype}; {config.steps} steps of "
        f"{config.batch_size} windows, AdamW lr {config.lr:g} (warm-up {config.warmup}, "
        f"cosine), clip {config.clip:g}, seed {config.seed}"
    )
    print(f"unigram baseline (validation): {baseline:.4f} nats per character")
    out.mkdir(parents=True, exist_ok=True)
    progress = _Progress(
        config.steps, run.step if run else 0, not args.quiet and sys.stderr.isatty()
    )

    def save(current: Any) -> Path:
        return save_gpt_run(out / RUN_FILE, current, vocab, config, extra)

    try:
        with StopSignals() as interrupted:
            run = train_gpt(
                train,
                val,
                len(vocab),
                config,
                run=run,
                on_step=progress.step,
                on_eval=progress.evaluation,
                checkpoint=save,
                checkpoint_every=args.checkpoint_every,
                interrupted=interrupted,
            )
    except TrainingInterruptedError as err:
        progress.close()  # before the message, so that the bar does not cover it
        print(
            f"handgrad gpt train: {err}; saved to {out / RUN_FILE}; go on with: "
            f"handgrad gpt train --resume {out}",
            file=sys.stderr,
        )
        return 128 + interrupted.received  # 130 after Ctrl-C, 143 after SIGTERM
    finally:
        progress.close()
    written = [save(run)]
    final = run.val_loss[-1]
    print(
        f"validation loss {final:.4f} nats per character against the unigram baseline's "
        f"{baseline:.4f} ({final / baseline:.0%} of it)"
    )
    if importlib.util.find_spec("matplotlib") is not None:
        from handgrad.app.plots import plot_loss_by_step

        title = f"GPT {config.n_layer}x{config.n_embd} on {Path(source.split(' (')[0]).name}"
        written.append(
            plot_loss_by_step(
                run.train_loss,
                run.val_steps,
                run.val_loss,
                out / "loss.png",
                baseline=baseline,
                title=title,
            )
        )
    start = "\n" if "\n" in vocab.chars else text[0]
    sample = sample_text(
        run.model, vocab, start, int(extra["sample_chars"]), temperature=0.8, rng=config.seed
    )
    with atomic_write(out / "sample.txt", "w") as f:
        f.write(sample)
    written.append(out / "sample.txt")
    print(f"\nsample (temperature 0.8):\n{'-' * 60}\n{sample}\n{'-' * 60}")
    print("wrote " + ", ".join(map(str, written)))
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _sample(args: argparse.Namespace) -> int:
    loaded = load_gpt_run(args.model)
    text = sample_text(
        loaded.run.model,
        loaded.vocab,
        args.start,
        args.chars,
        temperature=args.temperature,
        top_k=args.top_k,
        rng=args.seed,
    )
    sys.stdout.write(text + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``handgrad gpt train`` or ``handgrad gpt sample``."""
    if args.gpt_command == "train":
        with _blas_threads(args.threads):
            return _train(args)
    return _sample(args)
