"""The fit loop: shuffled mini-batches, a history per epoch, early stopping with the best
weights restored, an optional gradient check before the first step, and a clear stop when
the loss stops being finite."""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from handgrad.core.arrays import convert, namespace
from handgrad.core.errors import TrainingDivergedError, TrainingInterruptedError
from handgrad.core.files import atomic_write
from handgrad.core.validation import NON_NEGATIVE, check_array, check_positive_int
from handgrad.data import batches
from handgrad.gradcheck.check import GradientCheckReport, check_gradients
from handgrad.nn.containers import Sequential
from handgrad.nn.init import make_rng
from handgrad.nn.module import slots
from handgrad.nn.protocol import chain, children_of
from handgrad.training.optim import Optimizer

__all__ = ["COLUMNS", "History", "Progress", "evaluate", "fit", "in_mode"]

COLUMNS = ("epoch", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass
class History:
    """What happened in each epoch, and how training ended.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> history = fit(model, hg.CrossEntropyLoss(), SGD(model.params, lr=0.5), X, y, epochs=3)
    >>> history.epoch, [round(loss, 4) for loss in history.train_loss], history.val_loss
    ([1, 2, 3], [0.6231, 0.505, 0.4237], [])
    """

    epoch: list[int] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    gradient_check: GradientCheckReport | None = None

    def as_dict(self) -> dict[str, list[float]]:
        """The per-epoch columns; validation columns are empty without validation data."""
        return {name: list(getattr(self, name)) for name in COLUMNS}

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write one row per epoch to ``path``, atomically."""
        columns = [c for c, values in self.as_dict().items() if values]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for row in zip(*(getattr(self, c) for c in columns), strict=True):
            writer.writerow([repr(v) if isinstance(v, float) else v for v in row])
        with atomic_write(path, "w") as f:
            f.write(text.getvalue())
        return Path(path)


def _on_model(model: Sequential, X: Any, y: Any) -> tuple[Any, Any]:
    """X and y moved once to the library, dtype and device of the model's parameters."""
    weight = next(iter(model.params.values()))
    xp = namespace(weight)
    return (
        convert(X, xp, dtype=weight.dtype, device=weight.device),
        convert(y, xp, dtype=xp.int64, device=weight.device),
    )


@dataclass
class Progress:
    """Where a run of :func:`fit` stands: enough, with the model's weights and the
    optimizer's state, to go on exactly as if it had never stopped.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> seen = []  # fit hands its Progress to checkpoint() every checkpoint_every epochs
    >>> history = fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=3,
    ...               checkpoint=lambda p: seen.append((p.epoch, p.step)), checkpoint_every=1)
    >>> seen
    [(1, 1), (2, 2), (3, 3)]
    """

    history: History = field(default_factory=History)
    epoch: int = 0  # epochs completed
    step: int = 0  # steps completed
    position: int = 0  # batches completed in the epoch under way
    totals: tuple[float, int] = (0.0, 0)  # its loss sum and rows classified right so far
    rng_state: dict[str, Any] | None = None  # the batch order's generator as that epoch began
    best_loss: float = math.inf
    best_state: dict[str, Any] | None = None
    waited: int = 0


def _check_data(X: Any, y: Any, prefix: str) -> None:
    check_array(X, f"{prefix}X", ndim=2, layout="(examples, features)")
    check_array(y, f"{prefix}y", ndim=1, layout="(examples,) of class indices", floating=False)
    if namespace(y).isdtype(y.dtype, "real floating"):
        raise TypeError(f"{prefix}y must hold integer class indices, got dtype {y.dtype}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{prefix}X has {X.shape[0]} rows but {prefix}y has {y.shape[0]} labels")
    if X.shape[0] == 0:
        raise ValueError(
            f"{prefix}X must hold at least one row (example), got shape {tuple(X.shape)}"
        )


@contextlib.contextmanager
def in_mode(model: Any, training: bool) -> Iterator[Any]:
    """``model`` in training (or evaluation) mode for the ``with`` block, every layer's
    mode as it was afterwards; a model without modes is left alone.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.training.fit import in_mode
    >>> model = hg.Sequential(hg.Linear(2, 2), hg.Dropout(0.5))
    >>> with in_mode(model, False):
    ...     print(model[1].training)
    False
    >>> model[1].training
    True
    """
    before = []

    def visit(layer: Any) -> None:
        if hasattr(layer, "training"):
            before.append((layer, layer.training))
        for child in children_of(layer).values():
            visit(child)

    visit(model)
    if hasattr(model, "train"):
        model.train(training)
    try:
        yield model
    finally:
        for layer, training_before in before:
            layer.training = training_before


def evaluate(model: Sequential, loss: Any, X: Any, y: Any) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)`` (arrays of the model's library),
    in evaluation mode.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.fit import evaluate
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> loss, accuracy = evaluate(model, hg.CrossEntropyLoss(), X, y)
    >>> round(loss, 4), accuracy
    (0.6231, 0.5)
    """
    xp = namespace(X)
    with in_mode(model, False):
        logits = model.forward(X)
    value = float(loss.forward(logits, y))
    correct = xp.sum(xp.astype(xp.argmax(logits, axis=1) == y, xp.int64))
    return value, int(correct) / X.shape[0]


def fit(
    model: Sequential,
    loss: Any,
    optimizer: Optimizer,
    X: Any,
    y: Any,
    *,
    epochs: int = 100,
    batch_size: int = 32,
    validation: tuple[Any, Any] | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    schedule: Any = None,
    alpha: float = 0.0,
    rng: Any = None,
    shuffle: bool = True,
    check: bool = False,
    progress: bool = False,
    start: Progress | None = None,
    checkpoint: Callable[[Progress], None] | None = None,
    checkpoint_every: int | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> History:
    """Train ``model`` on integer class labels ``y`` with mini-batches; return the history.

    The model trains in training mode and is evaluated in evaluation mode (which matter to
    layers such as dropout and batch norm); its modes are as they were when ``fit`` returns.

    Parameters
    ----------
    model, loss, optimizer
        A Sequential that outputs logits, a loss such as CrossEntropyLoss, and an optimizer
        built on ``model.params``.
    X, y : arrays
        Features (examples, features) and class indices (examples,), NumPy or the model's
        library; they are moved to the model's library, dtype and device once.
    epochs, batch_size : int
        Passes over the data, and examples per step (the last batch may be smaller).
    validation : (X_val, y_val), optional
        Data for the validation loss and accuracy after each epoch.
    patience : int, optional
        Stop when the validation loss has not improved by ``min_delta`` for this many
        epochs; the weights of the best epoch are restored. Needs ``validation``.
    schedule : callable, optional
        Epoch (0-based) -> factor of the initial learning rate (see ``optim.make_schedule``).
    alpha : float
        L2 penalty on weights (not biases), as scikit-learn's MLP: ``alpha / 2 * |W|^2``
        per batch, divided by the batch size.
    rng : int or numpy.random.Generator, optional
        Seeds the order of the batches.
    shuffle : bool
        Draw the batches in a fresh random order each epoch (default); False keeps the
        order of ``X``.
    check : bool
        Gradient-check the model on the first batch before the first step (raises
        :class:`~handgrad.GradientCheckError` if it fails); the report is kept in the history.
        The check runs in evaluation mode, where every forward pass computes the same
        function (no fresh dropout masks) and leaves the running statistics alone.
    progress : bool
        Show a tqdm progress bar (one tick per epoch) with the running loss and accuracy.
    start : Progress, optional
        Where an earlier run stopped (from a checkpoint): training goes on from there, and
        ends with exactly the weights and history of a run that was never stopped, given
        the same model weights and optimizer state.
    checkpoint, checkpoint_every
        ``checkpoint(progress)`` is called after every ``checkpoint_every`` epochs, and
        when training is interrupted.
    interrupted : callable, optional
        Asked after each step; when it returns True, the progress is checkpointed and
        :class:`~handgrad.core.errors.TrainingInterruptedError` is raised (the model is consistent).

    Raises
    ------
    TrainingDivergedError
        If the loss becomes NaN or infinite; names the epoch and step. A NaN gradient shows
        as a NaN loss at the next step.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.optim import Adam
    >>> from handgrad.training.fit import fit
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((200, 2))
    >>> y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)  # two classes on either side of a line
    >>> model = hg.mlp([2, 8, 2], activation="tanh", rng=0)
    >>> optimizer = Adam(model.params, lr=0.05)
    >>> history = fit(model, hg.CrossEntropyLoss(), optimizer, X, y, epochs=20, rng=0)
    >>> len(history.epoch), history.train_accuracy[-1] > 0.95
    (20, True)
    """
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    _check_data(X, y, "")
    if validation is not None:
        _check_data(*validation, "validation ")
    if patience is not None:
        check_positive_int(patience, "patience")
        if validation is None:
            raise ValueError("patience (early stopping) needs validation data, got none")
    alpha = NON_NEGATIVE.check(alpha, "alpha")
    min_delta = NON_NEGATIVE.check(min_delta, "min_delta")
    X, y = _on_model(model, X, y)
    if validation is not None:
        validation = _on_model(model, *validation)
    run_step = _Step(model, loss, optimizer, X, y, alpha)
    state = start if start is not None else Progress()
    generator, base_lr = make_rng(rng), optimizer.lr
    if state.rng_state is not None:
        generator.bit_generator.state = state.rng_state
    history = state.history
    bar = _progress_bar(epochs, state.epoch) if progress else None
    modes = contextlib.ExitStack()
    modes.enter_context(in_mode(model, True))  # back as they were in the finally clause
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            optimizer.lr = base_lr * (schedule(epoch - 1) if schedule else 1.0)
            if state.position == 0:
                state.rng_state, state.totals = generator.bit_generator.state, (0.0, 0)
            else:  # resuming inside this epoch: draw its batch order again
                generator.bit_generator.state = state.rng_state
            order = list(batches(X.shape[0], batch_size, generator, shuffle=shuffle))
            total_loss, correct = state.totals
            for position in range(state.position, len(order)):
                index = order[position]
                if check and state.step == 0:  # in evaluation mode: no dropout mask drawn
                    with in_mode(model, False):  # anew, no running statistic moved per pass
                        batch = run_step.batch(index)
                        history.gradient_check = check_gradients(model, loss, *batch)
                value, right = run_step(index)
                state.step += 1
                if not math.isfinite(value):
                    raise TrainingDivergedError(
                        f"the training loss became {value} at epoch {epoch}, step {state.step}; "
                        f"try a smaller learning rate (now {optimizer.lr:g})",
                        epoch=epoch,
                        step=state.step,
                    )
                total_loss += value * len(index)
                correct += right
                if interrupted is not None and interrupted():
                    state.position, state.totals = position + 1, (total_loss, correct)
                    if checkpoint is not None:
                        checkpoint(state)
                    raise TrainingInterruptedError(
                        f"training interrupted at epoch {epoch}, step {state.step}",
                        epoch=epoch,
                        step=state.step,
                    )
            state.epoch, state.position = epoch, 0
            history.epoch.append(epoch)
            history.lr.append(optimizer.lr)
            history.train_loss.append(total_loss / X.shape[0])
            history.train_accuracy.append(correct / X.shape[0])
            if validation is not None:
                val_loss, val_accuracy = evaluate(model, loss, *validation)
                history.val_loss.append(val_loss)
                history.val_accuracy.append(val_accuracy)
                if val_loss < state.best_loss - min_delta:
                    state.best_loss, state.best_state, state.waited = (
                        val_loss,
                        model.state_dict(),
                        0,
                    )
                    history.best_epoch = epoch
                else:
                    state.waited += 1
            if bar is not None:
                bar.set_postfix(_postfix(history), refresh=False)
                bar.update()
            if patience is not None and state.waited >= patience:
                history.stopped_early = True
                break
            if checkpoint is not None and checkpoint_every and epoch % checkpoint_every == 0:
                state.rng_state = generator.bit_generator.state
                checkpoint(state)
    finally:
        optimizer.lr = base_lr  # a schedule changes the rate for the run only
        modes.close()
        if bar is not None:
            bar.close()
    if state.best_state is not None and patience is not None:
        model.load_state_dict(state.best_state)
    return history


class _Step:
    """One training step on the rows ``index`` of the data, with every method, array and
    target looked up once: the hot loop checks nothing that :func:`fit` checked before.

    handgrad's own layers and losses offer ``*_unchecked`` methods (and the first layer
    skips dL/dx, which nothing needs); a user's layer is called through the protocol.
    """

    def __init__(
        self, model: Sequential, loss: Any, optimizer: Optimizer, X: Any, y: Any, alpha: float
    ) -> None:
        layers = chain(model)
        self.xp = xp = namespace(X)
        self.X, self.y, self.alpha = X, y, alpha
        with in_mode(model, False):  # the model takes this data, checked
            classes = model.forward(X[:1, ...]).shape[-1]
        low, high = int(xp.min(y)), int(xp.max(y))
        if low < 0 or high >= classes:
            raise ValueError(
                f"y holds class index {low if low < 0 else high} but the model "
                f"has {classes} outputs (valid indices 0 to {classes - 1})"
            )
        self.forwards = [getattr(layer, "forward_unchecked", layer.forward) for layer in layers]
        # backpropagate down to the first layer with parameters, without its dL/dx: the
        # layers before it (a reshape of the input, say) have no gradient to fill
        first = next((i for i, layer in enumerate(layers) if layer.params), 0)
        backwards = [getattr(layer, "backward_unchecked", layer.backward) for layer in layers]
        if hasattr(layers[first], "backward_unchecked"):
            backwards[first] = functools.partial(layers[first].backward_unchecked, input_grad=False)
        self.backwards = backwards[first:][::-1]
        self.loss = loss
        self.targets = None
        if hasattr(loss, "forward_unchecked"):  # fused targets: one-hot rows, made once
            columns = xp.arange(classes, dtype=y.dtype, device=y.device)
            self.targets = xp.astype(y[:, None] == columns[None, :], X.dtype)
        places = list(slots(model).values())
        self.grads = [(owners[0][0].grads, owners[0][1]) for owners in places]
        self.tied = [  # an array held by several layers: the gradients of its uses add up
            (i, [(layer.grads, key) for layer, key in owners[1:]])
            for i, owners in enumerate(places)
            if len(owners) > 1
        ]
        names = list(model.params)
        self.weights = [
            (i, p) for i, (k, p) in enumerate(model.params.items()) if k.endswith("weight")
        ]
        self.update = (
            optimizer.update
            if optimizer.names == names
            else lambda grads: optimizer.step(dict(zip(names, grads, strict=True)))
        )

    def _index(self, index: Any) -> Any:
        """Row indices in the data's library (NumPy's pass as they are)."""
        if self.xp is namespace(index):
            return index
        return convert(index, self.xp, device=self.X.device)

    def batch(self, index: Any) -> tuple[Any, Any]:
        """The features and labels of the rows ``index``."""
        index = self._index(index)
        return self.xp.take(self.X, index, axis=0), self.xp.take(self.y, index, axis=0)

    def __call__(self, index: Any) -> tuple[float, int]:
        """Forward, loss, backward and update on rows ``index``; the loss and the number of
        rows classified right."""
        xp, index = self.xp, self._index(index)
        out = xp.take(self.X, index, axis=0)
        labels = xp.take(self.y, index, axis=0)
        for forward in self.forwards:
            out = forward(out)
        if self.targets is None:  # a loss of one's own, called through the protocol
            try:
                value = float(self.loss.forward(out, labels))
            except ValueError:
                if bool(xp.all(xp.isfinite(out))):
                    raise
                return math.nan, 0  # the model's output is no longer finite
        else:  # NaN or infinite logits make a NaN or infinite loss, which fit reports
            value = float(
                self.loss.forward_unchecked(out, xp.take(self.targets, index, axis=0), one_hot=True)
            )
        grad = self.loss.backward()
        for backward in self.backwards:
            grad = backward(grad)
        grads = [store[key] for store, key in self.grads]
        for i, others in self.tied:
            for store, key in others:
                grads[i] = grads[i] + store[key]
        if self.alpha:
            b = index.shape[0]
            # L2 penalty: L += alpha / (2 b) |W|^2,  dL/dW += alpha W / b
            for i, w in self.weights:
                value += self.alpha / (2 * b) * float(xp.sum(w * w))
                grads[i] = grads[i] + (self.alpha / b) * w
        self.update(grads)
        return value, int(xp.count_nonzero(xp.argmax(out, axis=1) == labels))


def _progress_bar(epochs: int, done: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(
        total=epochs, initial=done, unit="epoch", desc="training", leave=False, dynamic_ncols=True
    )


def _postfix(history: History) -> dict[str, str]:
    postfix = {"loss": f"{history.train_loss[-1]:.4f}", "acc": f"{history.train_accuracy[-1]:.3f}"}
    if history.val_loss:
        postfix["val_loss"] = f"{history.val_loss[-1]:.4f}"
        postfix["val_acc"] = f"{history.val_accuracy[-1]:.3f}"
    return postfix
