"""The fit loop: shuffled mini-batches, a history per epoch, early stopping with the best
weights restored, an optional gradient check before the first step, and a clear stop when
the loss stops being finite."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

from handgrad.core.arrays import namespace
from handgrad.core.errors import TrainingDivergedError, TrainingInterruptedError
from handgrad.core.validation import NON_NEGATIVE, check_positive_int
from handgrad.data.preparation import epoch_order
from handgrad.gradcheck.check import check_gradients
from handgrad.nn.containers import Sequential
from handgrad.nn.init import make_rng
from handgrad.nn.protocol import in_mode
from handgrad.training.fused import compiled_steps
from handgrad.training.history import History, Progress
from handgrad.training.inputs import check_data, is_targets, on_model, sample_weights
from handgrad.training.optim import Optimizer
from handgrad.training.step import Step

__all__ = ["evaluate", "fit"]


def _optimizer_order(model: Sequential, optimizer: Optimizer) -> list[int]:
    """The place of each of the optimizer's arrays among the model's parameters."""
    place = {id(p): i for i, p in enumerate(model.params.values())}
    order = [place.get(id(p)) for p in optimizer.params]
    for name, i in zip(optimizer.names, order, strict=True):
        if i is None:
            raise ValueError(
                f"optimizer updates an array {name!r} that is not a parameter of model, so "
                "training would change nothing; build the optimizer on this model's params, "
                "e.g. Adam(model.params) (after any model.to(...))"
            )
    return order


def evaluate(model: Sequential, loss: Any, X: Any, y: Any) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)`` (arrays of the model's library),
    in evaluation mode.

    Parameters
    ----------
    model : Sequential
        The model, put in evaluation mode for the call and back in its mode after.
    loss : loss
        A handgrad loss.
    X : array
        The inputs, (n_samples, ...).
    y : array
        The class labels, (n_samples,), or the targets of a regression or of several
        labels.

    Returns
    -------
    tuple of float
        The mean loss and the accuracy (nan for targets other than class labels).

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
    if is_targets(y):  # regression or multi-label targets: no accuracy
        return value, math.nan
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
    sample_weight: Any = None,
    on_epoch: Callable[[History], bool | None] | None = None,
    stop_on_divergence: bool = True,
    parallel: Any = None,
    compiled: bool | None = None,
) -> History:
    """Train ``model`` on class labels or targets ``y`` with mini-batches; return the history.

    The model trains in training mode and is evaluated in evaluation mode (which matter to
    layers such as dropout and batch norm); its modes are as they were when ``fit`` returns.

    Parameters
    ----------
    model, loss, optimizer
        A Sequential that outputs logits, a loss such as CrossEntropyLoss, and an optimizer
        built on ``model.params``.
    X, y : arrays
        Features (examples, features) and class indices (examples,), or floating-point
        targets (examples, outputs) for a loss such as MSELoss or BCEWithLogitsLoss (the
        accuracy columns of the history are then NaN). NumPy or the model's library; they
        are moved to the model's library, dtype and device once (not copied when they are
        there already). ``X`` may be a SciPy sparse matrix: its rows are made dense one
        batch at a time.
    epochs, batch_size : int
        Passes over the data, and examples per step (the last batch may be smaller).
    validation : (X_val, y_val), optional
        Data for the validation loss and accuracy after each epoch.
    patience : int, optional
        Stop when the validation loss has not improved by ``min_delta`` for this many
        epochs; the weights of the best epoch are restored. Needs ``validation``.
    min_delta : float
        The least fall of the validation loss that counts as an improvement (0).
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
    sample_weight : array, optional
        A weight per example (examples,): each batch's loss is the weighted mean of its
        examples' losses (handgrad's own losses take the weights), and the L2 penalty is
        divided by the batch's total weight instead of its size.
    on_epoch : callable, optional
        ``on_epoch(history)`` is called after each epoch's row is recorded; training stops
        (``history.stopped_early``) when it returns True.
    stop_on_divergence : bool
        Raise :class:`~handgrad.core.errors.TrainingDivergedError` when the loss stops being
        finite (default); False records the NaN or infinite losses and goes on.
    parallel : WorkerGroup, optional
        Train as one of several workers (:mod:`handgrad.training.distributed`): each step
        computes on this worker's share of the batch and all-reduces the gradients, so that
        every worker ends with the weights of a single process; they stop together.
    compiled : bool, optional
        Run the steps in the compiled kernel (:mod:`handgrad.training.fused`, the ``numba``
        extra): None (default) where numba is installed and the model, loss, optimizer and
        data are ones it supports, unless the environment variable ``HANDGRAD_COMPILED`` is
        ``0``; False never; True always (a ``ValueError`` says why it cannot). The same
        weights as the reference path, to 1e-12 in float64.

    Returns
    -------
    History
        The loss and accuracy per epoch (validation too, when given), the learning rate,
        and whether training stopped early.

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
    check_data(X, y, "")
    if validation is not None:
        check_data(*validation, "validation ")
    if patience is not None:
        check_positive_int(patience, "patience")
        if validation is None:
            raise ValueError("patience (early stopping) needs validation data, got none")
    alpha = NON_NEGATIVE.check(alpha, "alpha")
    min_delta = NON_NEGATIVE.check(min_delta, "min_delta")
    order = _optimizer_order(model, optimizer)
    X, y = on_model(model, X, y, keep_sparse=True)
    if validation is not None:
        validation = on_model(model, *validation)
    if sample_weight is not None:
        sample_weight = sample_weights(sample_weight, model, y)
        if not hasattr(loss, "forward_unchecked"):
            raise TypeError(
                f"sample_weight needs one of handgrad's losses (CrossEntropyLoss, MSELoss, "
                f"BCEWithLogitsLoss, PoissonNLLLoss), got {type(loss).__name__}"
            )
    run_step = Step(model, loss, optimizer, X, y, alpha, sample_weight, order)
    fast = None
    if parallel is None:
        fast = compiled_steps(run_step, model, loss, optimizer, order, compiled)
    elif compiled:
        raise ValueError("compiled=True, but training runs on parallel workers; pass compiled=None")
    # an epoch's row indices go to the data's library at once; a worker and the compiled
    # path take NumPy's
    in_library = run_step.indices if parallel is None and fast is None else list
    if parallel is not None:  # one worker of several: a share of each batch, all-reduced
        if sample_weight is not None:
            raise ValueError(
                "sample_weight is not supported with parallel workers yet: each worker's share "
                "would need weighting by its total weight; train in one process"
            )
        run_step, interrupted = parallel.attach(model, run_step, interrupted)
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
            # batch p is the rows indices[p * batch_size : (p + 1) * batch_size]
            indices = epoch_order(X.shape[0], generator, shuffle)
            n_batches = -(-X.shape[0] // batch_size)
            (rows,) = in_library([indices])
            total_loss, correct = state.totals
            position = state.position
            while position < n_batches:
                index = rows[position * batch_size : (position + 1) * batch_size]
                if check and state.step == 0:  # in evaluation mode: no dropout mask drawn
                    with in_mode(model, False):  # anew, no running statistic moved per pass
                        batch = run_step.batch(index)
                        history.gradient_check = check_gradients(model, loss, *batch)
                if fast is None:
                    value, right = run_step(index)
                    total_loss, correct, steps = total_loss + value * len(index), correct + right, 1
                else:  # the rest of the epoch at once, or one step when asked after each
                    stop = position + 1 if interrupted is not None else n_batches
                    steps, value, total_loss, correct = fast(
                        indices, batch_size, position, stop, total_loss, correct, stop_on_divergence
                    )
                position += steps
                state.step += steps
                if stop_on_divergence and not math.isfinite(value):
                    raise TrainingDivergedError(
                        f"the training loss became {value} at epoch {epoch}, step {state.step}; "
                        f"try a smaller learning rate (now {optimizer.lr:g})",
                        epoch=epoch,
                        step=state.step,
                    )
                if interrupted is not None and interrupted():
                    state.position, state.totals = position, (total_loss, correct)
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
            history.train_accuracy.append(
                math.nan if run_step.targets_given else correct / X.shape[0]
            )
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
            if on_epoch is not None and on_epoch(history):
                history.stopped_early = True
                break
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
