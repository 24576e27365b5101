"""Training a character-level GPT: the settings of ``handgrad gpt train`` (validated once),
the loop (random windows, AdamW with decay on the matrices, warm-up + cosine, clipping by
global norm), validation on fixed windows, run files (weights, optimizer, position and
history, to sample from or to resume) and sampling text."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.core.archives import read_archive, write_archive
from handgrad.core.arrays import to_numpy
from handgrad.core.errors import (
    ModelFileError,
    TrainingDivergedError,
    TrainingInterruptedError,
)
from handgrad.core.validation import (
    FLOAT_DTYPES,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Constraint,
    Interval,
)
from handgrad.data.text import CharVocabulary, random_windows
from handgrad.models.gpt import GELU_APPROXIMATIONS, GPT
from handgrad.nn.losses import SequenceCrossEntropyLoss
from handgrad.nn.module import slots
from handgrad.training.clipping import clip_grad_norm
from handgrad.training.optim import AdamW
from handgrad.training.schedules import make_schedule

__all__ = [
    "CONSTRAINTS",
    "GPTRun",
    "GPTTrainConfig",
    "evaluate_loss",
    "gradient_reader",
    "load_gpt_run",
    "new_run",
    "sample_text",
    "save_gpt_run",
    "train_gpt",
]

KIND = "handgrad-gpt"

# What each setting of `handgrad gpt train` may be: the dataclass and the command line's
# types both read these.
CONSTRAINTS: dict[str, Constraint] = {
    "block_size": POSITIVE_INT,
    "n_layer": POSITIVE_INT,
    "n_head": POSITIVE_INT,
    "n_embd": POSITIVE_INT,
    "gelu": GELU_APPROXIMATIONS,
    "batch_size": POSITIVE_INT,
    "steps": POSITIVE_INT,
    "lr": POSITIVE,
    "warmup": Interval(int, 0, None, "left"),  # and below steps, checked with them
    "min_factor": FRACTION,
    "weight_decay": NON_NEGATIVE,
    "clip": POSITIVE,
    "eval_every": POSITIVE_INT,
    "eval_batches": POSITIVE_INT,
    "dtype": FLOAT_DTYPES,
    "val_fraction": FRACTION,
}


@dataclass(frozen=True)
class GPTTrainConfig:
    """The settings of a character-level GPT run; the defaults are ``handgrad gpt train``'s
    (a few minutes on two CPU cores).

    Examples
    --------
    >>> from handgrad.app.language_model import GPTTrainConfig
    >>> config = GPTTrainConfig(steps=10, warmup=2)
    >>> config.n_layer, config.n_embd, config.block_size
    (4, 128, 64)
    >>> GPTTrainConfig(n_embd=100, n_head=3)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
        ...
    ValueError: n_embd (100) must be a multiple of n_head (3): each head takes ...
    """

    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    gelu: str = "tanh"
    batch_size: int = 32
    steps: int = 600
    lr: float = 3e-3
    warmup: int = 50
    min_factor: float = 0.1
    weight_decay: float = 0.1
    clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    dtype: str = "float32"
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        for name, constraint in CONSTRAINTS.items():
            constraint.check(getattr(self, name), name)
        if self.warmup >= self.steps:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than steps ({self.steps})")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head}): each "
                "head takes n_embd / n_head features"
            )
        if not self.val_fraction > 0:
            raise ValueError("val_fraction must be greater than 0: validation needs some text")


@dataclass
class GPTRun:
    """A run: the model, its optimizer, the steps done and the history (training loss per
    step, validation loss at each evaluation). Step s draws its windows from a generator
    seeded by (seed, s), so a resumed run draws what an unbroken one would."""

    model: GPT
    optimizer: AdamW
    step: int = 0
    train_loss: list[float] = field(default_factory=list)
    val_steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)


def new_run(vocab_size: int, config: GPTTrainConfig) -> GPTRun:
    """A fresh model (nanoGPT's initialisation, seeded by ``config.seed``) and optimizer.

    Examples
    --------
    >>> from handgrad.app.language_model import GPTTrainConfig, new_run
    >>> run = new_run(20, GPTTrainConfig(n_layer=1, n_embd=8, n_head=2, steps=5, warmup=0))
    >>> run.step, run.model.params["transformer.wte.weight"].dtype
    (0, dtype('float32'))
    """
    model = GPT(
        vocab_size,
        config.block_size,
        config.n_layer,
        config.n_head,
        config.n_embd,
        gelu=config.gelu,
        rng=config.seed,
    ).to(dtype=config.dtype)
    optimizer = AdamW(
        model.params, lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay
    )
    return GPTRun(model, optimizer)


def gradient_reader(model: Any) -> Callable[[], dict[str, Any]]:
    """A function that returns every gradient of ``model`` by name, a tied array's uses
    summed, as ``dict(model.grads)`` does, with the places looked up once instead of per
    name (for a training loop).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.language_model import gradient_reader
    >>> from handgrad.models import GPT
    >>> model = GPT(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4, rng=0)
    >>> model.backward(np.ones_like(model.forward(np.array([[0, 1]]))))
    >>> grads = gradient_reader(model)()
    >>> all(np.array_equal(grads[k], v) for k, v in model.grads.items())
    True
    """
    places = slots(model)

    def gather() -> dict[str, Any]:
        grads = {}
        for name, owners in places.items():
            total = owners[0][0].grads[owners[0][1]]
            for layer, key in owners[1:]:
                total = total + layer.grads[key]
            grads[name] = total
        return grads

    return gather


def evaluate_loss(model: GPT, windows: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The mean cross-entropy (nats per token) of ``model`` over fixed ``windows``.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.language_model import evaluate_loss
    >>> from handgrad.models import GPT
    >>> model = GPT(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4, rng=0)
    >>> x = np.array([[0, 1, 2, 3]])
    >>> round(evaluate_loss(model, [(x, (x + 1) % 5)]), 2)  # near log 5 at the start
    1.61
    """
    loss = SequenceCrossEntropyLoss()
    total = sum(float(loss.forward(model.forward(x), y)) for x, y in windows)
    return total / len(windows)


def train_gpt(
    train_tokens: np.ndarray,
    val_tokens: np.ndarray,
    vocab_size: int,
    config: GPTTrainConfig,
    *,
    run: GPTRun | None = None,
    on_step: Callable[[GPTRun, float], None] | None = None,
    on_eval: Callable[[GPTRun], None] | None = None,
    checkpoint: Callable[[GPTRun], None] | None = None,
    checkpoint_every: int | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> GPTRun:
    """Train (or go on training ``run``) for ``config.steps`` steps in all; return the run.

    Each step: ``batch_size`` random windows of the training tokens, forward, the
    sequence cross-entropy, backward, gradients clipped to a global norm of ``clip``, and
    an AdamW step at the warm-up + cosine rate of that step. Every ``eval_every`` steps and
    at the end, the loss on fixed validation windows is recorded and ``on_eval`` called.
    A non-finite loss stops the run with :class:`TrainingDivergedError`; when
    ``interrupted()`` says so after a step, ``checkpoint(run)`` is called and
    :class:`TrainingInterruptedError` raised.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.language_model import GPTTrainConfig, train_gpt
    >>> tokens = np.tile(np.arange(5), 40)  # 0 1 2 3 4 0 1 2 ...: easy to learn
    >>> config = GPTTrainConfig(block_size=8, n_layer=1, n_head=1, n_embd=16, batch_size=8,
    ...     steps=60, warmup=5, lr=1e-2, eval_every=30, eval_batches=2, dtype="float64")
    >>> run = train_gpt(tokens, tokens, 5, config)
    >>> run.step, run.val_steps, run.val_loss[-1] < 0.1  # from log 5 = 1.6 to almost 0
    (60, [30, 60], True)
    """
    run = run or new_run(vocab_size, config)
    model, optimizer = run.model, run.optimizer
    schedule = make_schedule(
        "warmup_cosine", warmup=config.warmup, total=config.steps, min_factor=config.min_factor
    )
    val_rng = np.random.default_rng([config.seed, 2])  # the same windows at every evaluation
    windows = [
        random_windows(val_tokens, config.block_size, config.batch_size, val_rng)
        for _ in range(config.eval_batches)
    ]
    loss = SequenceCrossEntropyLoss()
    gradients = gradient_reader(model)
    while run.step < config.steps:
        rng = np.random.default_rng([config.seed, 1, run.step])
        x, y = random_windows(train_tokens, config.block_size, config.batch_size, rng)
        optimizer.lr = config.lr * schedule(run.step)
        value = float(loss.forward(model.forward_unchecked(x), y))
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"the training loss became {value} at step {run.step + 1}; try a smaller "
                f"learning rate (now {config.lr:g})",
                epoch=0,
                step=run.step + 1,
            )
        model.backward_unchecked(loss.backward())
        clipped, _ = clip_grad_norm(gradients(), config.clip)
        optimizer.step(clipped)
        run.step += 1
        run.train_loss.append(value)
        if on_step is not None:
            on_step(run, value)
        if run.step % config.eval_every == 0 or run.step == config.steps:
            run.val_steps.append(run.step)
            run.val_loss.append(evaluate_loss(model, windows))
            if on_eval is not None:
                on_eval(run)
        if checkpoint is not None and checkpoint_every and run.step % checkpoint_every == 0:
            checkpoint(run)
        if interrupted is not None and interrupted():
            if checkpoint is not None:
                checkpoint(run)
            raise TrainingInterruptedError(
                f"interrupted after step {run.step}", epoch=0, step=run.step
            )
    optimizer.lr = config.lr
    return run


def save_gpt_run(
    path: str | os.PathLike,
    run: GPTRun,
    vocab: CharVocabulary,
    config: GPTTrainConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a run to ``path`` atomically: the weights, the optimizer's state, the batch
    history, the settings and the vocabulary (one ``.npz`` of plain
    arrays and JSON, read back without unpickling). ``extra`` is kept as given (JSON).

    Examples
    --------
    >>> import tempfile
    >>> from handgrad.app.language_model import (GPTTrainConfig, load_gpt_run, new_run,
    ...     save_gpt_run)
    >>> from handgrad.data.text import CharVocabulary
    >>> config = GPTTrainConfig(n_layer=1, n_embd=8, n_head=2, steps=5, warmup=0)
    >>> vocab = CharVocabulary.from_text("abc")
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_gpt_run(f"{folder}/gpt.npz", new_run(3, config), vocab, config)
    ...     loaded = load_gpt_run(path)
    >>> loaded.vocab.chars, loaded.config == config, loaded.run.step
    ('abc', True, 0)
    """
    arrays = {f"param/{k}": np.array(to_numpy(v)) for k, v in run.model.params.items()}
    state = run.optimizer.state_dict()
    arrays.update({f"optim/{k}": v for k, v in state.items() if k != "step"})
    meta = {
        "format": KIND,
        "version": 1,
        "config": asdict(config),
        "vocab": vocab.chars,
        "step": run.step,
        "optimizer_step": state["step"],
        "train_loss": run.train_loss,
        "val_steps": run.val_steps,
        "val_loss": run.val_loss,
        "extra": extra or {},
    }
    return write_archive(path, arrays, meta)


@dataclass
class LoadedRun:
    """What :func:`load_gpt_run` reads: the run, its vocabulary and settings, and ``extra``."""

    run: GPTRun
    vocab: CharVocabulary
    config: GPTTrainConfig
    extra: dict[str, Any]


def load_gpt_run(path: str | os.PathLike) -> LoadedRun:
    """Read a run written by :func:`save_gpt_run`; every problem is a
    :class:`ModelFileError` that names the file.

    Examples
    --------
    >>> from handgrad.app.language_model import load_gpt_run
    >>> load_gpt_run("nowhere.npz")
    Traceback (most recent call last):
        ...
    handgrad.core.errors.ModelFileError: GPT run 'nowhere.npz' does not exist
    """
    meta, arrays = read_archive(path, KIND, "GPT run")
    try:
        config = GPTTrainConfig(**meta["config"])
        vocab = CharVocabulary(str(meta["vocab"]))
        run = new_run(len(vocab), config)
        params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
        run.model.load_state_dict(params)
        state = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
        run.optimizer.load_state_dict({**state, "step": int(meta["optimizer_step"])})
        run.step = int(meta["step"])
        run.train_loss = [float(v) for v in meta["train_loss"]]
        run.val_steps = [int(v) for v in meta["val_steps"]]
        run.val_loss = [float(v) for v in meta["val_loss"]]
        return LoadedRun(run, vocab, config, dict(meta.get("extra", {})))
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(f"{str(path)!r} is not a consistent GPT run: {err}") from None


def sample_text(
    model: GPT,
    vocab: CharVocabulary,
    start: str,
    chars: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    rng: Any = None,
) -> str:
    """``start`` followed by ``chars`` characters drawn from ``model`` one at a time.

    Examples
    --------
    >>> from handgrad.app.language_model import sample_text
    >>> from handgrad.data.text import CharVocabulary
    >>> from handgrad.models import GPT
    >>> vocab = CharVocabulary.from_text("ab\\n")
    >>> model = GPT(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=4, rng=0)
    >>> text = sample_text(model, vocab, "a", 10, rng=0)
    >>> len(text), set(text) <= set("ab\\n")
    (11, True)
    """
    if not start:
        raise ValueError("start must hold at least one character to begin from")
    idx = vocab.encode(start)[None, :]
    out = model.generate(idx, chars, temperature=temperature, top_k=top_k, rng=rng)
    return vocab.decode(out[0])
