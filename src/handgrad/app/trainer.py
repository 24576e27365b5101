"""Training a classifier: the options (``TrainConfig``) and ``train_classifier``, the path
of ``handgrad train`` (standardisation, ``models.mlp``, :func:`handgrad.training.fit`; the
scikit-learn estimators train through the same ``fit``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.app.classifier import Classifier
from handgrad.core.arrays import BACKENDS
from handgrad.core.validation import (
    FLOAT_DTYPES,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    Constraint,
    Options,
)
from handgrad.data import Standardizer
from handgrad.models.cnn import cnn, square_image
from handgrad.models.mlp import mlp
from handgrad.nn.containers import Sequential
from handgrad.nn.losses import CrossEntropyLoss
from handgrad.nn.registry import activation_names
from handgrad.training.fit import fit
from handgrad.training.history import History, Progress
from handgrad.training.optim import DEFAULT_LR, OPTIMIZERS, make_optimizer
from handgrad.training.schedules import SCHEDULES, make_schedule

__all__ = [
    "CONSTRAINTS",
    "MODELS",
    "TrainConfig",
    "build_model",
    "default_lr",
    "describe_model",
    "train_classifier",
]

# The networks train_classifier builds: "mlp" (hidden, activation) or "cnn" (rows of pixels
# of a square image: conv, ReLU, pool, conv, ReLU, dropout, dense; see handgrad.models.cnn).
MODELS = ("mlp", "cnn")
# The cnn's default learning rate is the optimizer's divided by this: Adam at 0.01 makes its
# training loss jump now and then (from 0.01 to 0.09 at epoch 90 on digits), 0.001 not.
CNN_LR_DIVISOR = 10


@dataclass(frozen=True)
class TrainConfig:
    """How to train a classifier; the defaults are ``handgrad train``'s: the seed's network
    (one hidden layer of 20 sigmoid units), Adam, 100 epochs, L2 penalty 1e-2.
    ``model="cnn"`` trains :func:`~handgrad.models.cnn.cnn` instead, on rows of pixels of
    square images (``hidden`` and ``activation`` shape the MLP only), by default at a tenth
    of the optimizer's default learning rate. Early
    stopping is off unless ``patience`` is set (and validation data given); an epoch counts
    as better when the validation loss falls by more than ``min_delta``.
    ``optimizer_options`` go to :func:`~handgrad.training.make_optimizer` (``momentum``,
    ``nesterov``, ``betas``, ``eps``, ``weight_decay``).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.trainer import TrainConfig, train_classifier
    >>> config = TrainConfig(hidden=(8,), optimizer="sgd", epochs=5)
    >>> X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    >>> classifier, history = train_classifier(X, y, ["even", "odd"], config=config)
    >>> classifier.info["sizes"], classifier.info["optimizer"], len(history.epoch)
    ([3, 8, 2], 'sgd', 5)
    """

    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
    model: str = "mlp"
    optimizer: str = "adam"
    lr: float | None = None
    epochs: int = 100
    batch_size: int = 32
    schedule: str = "constant"
    patience: int | None = None
    alpha: float = 1e-2
    backend: str = "numpy"
    dtype: str = "float64"
    device: Any = None
    seed: int | None = 0
    check: bool = False
    progress: bool = False
    min_delta: float = 0.0
    optimizer_options: Mapping[str, Any] = field(default_factory=dict, hash=False)
    shuffle: bool = True

    def __post_init__(self) -> None:
        for name, constraint in CONSTRAINTS.items():
            value = getattr(self, name)
            if value is not None or name not in _OPTIONAL:
                constraint.check(value, name)
        if isinstance(self.hidden, str) or not isinstance(self.hidden, Sequence):
            raise ValueError(f"hidden must be a sequence of layer widths, got {self.hidden!r}")
        for i, width in enumerate(self.hidden):
            POSITIVE_INT.check(width, f"hidden[{i}]")


# What each option of TrainConfig may be: declared once, used by TrainConfig, the command
# line (its types and choices) and the estimator.
CONSTRAINTS: dict[str, Constraint] = {
    "activation": Options(activation_names()),
    "model": Options(MODELS),
    "optimizer": Options(OPTIMIZERS),
    "lr": POSITIVE,
    "epochs": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "schedule": Options(SCHEDULES),
    "patience": POSITIVE_INT,
    "alpha": NON_NEGATIVE,
    "backend": Options(BACKENDS),
    "dtype": FLOAT_DTYPES,
    "min_delta": NON_NEGATIVE,
}
_OPTIONAL = ("lr", "patience")


def _schedule(config: TrainConfig) -> Any:
    if config.schedule == "cosine":
        return make_schedule("cosine", total_epochs=config.epochs)
    if config.schedule == "step":
        return make_schedule("step", step_size=max(1, config.epochs // 3), gamma=0.1)
    if config.schedule == "warmup_cosine":
        warmup = min(config.epochs // 10, config.epochs - 1)
        return make_schedule("warmup_cosine", warmup=warmup, total=config.epochs)
    return make_schedule(config.schedule)


def build_model(config: TrainConfig, features: int, classes: int) -> Sequential:
    """The untrained network that ``config`` asks for, for rows of ``features`` and
    ``classes`` outputs.

    Examples
    --------
    >>> from handgrad.app.trainer import TrainConfig, build_model
    >>> len(build_model(TrainConfig(), 30, 2)), len(build_model(TrainConfig(model="cnn"), 64, 10))
    (3, 9)
    """
    where = {"rng": config.seed, "backend": config.backend, "dtype": config.dtype}
    if config.model == "cnn":
        return cnn(square_image(features), classes, device=config.device, **where)
    sizes = [features, *config.hidden, classes]
    return mlp(sizes, config.activation, device=config.device, **where)


def default_lr(optimizer: str, model: str = "mlp") -> float:
    """The learning rate that ``optimizer`` trains ``model`` at when none is given: the
    optimizer's default, a tenth of it for the cnn.

    Examples
    --------
    >>> from handgrad.app.trainer import default_lr
    >>> default_lr("adam"), default_lr("adam", "cnn")
    (0.01, 0.001)
    """
    return DEFAULT_LR[optimizer] / (CNN_LR_DIVISOR if model == "cnn" else 1)


def describe_model(config: TrainConfig, features: int, classes: int) -> str:
    """A line that names the network ``config`` asks for.

    Examples
    --------
    >>> from handgrad.app.trainer import TrainConfig, describe_model
    >>> describe_model(TrainConfig(), 30, 2)
    '30-20-2 (sigmoid)'
    >>> describe_model(TrainConfig(model="cnn"), 64, 10)
    'cnn on 1x8x8 images: conv 16, relu, max pool, conv 32, relu, dropout 0.5, dense 10'
    """
    if config.model == "cnn":
        image = "x".join(map(str, square_image(features)))
        return (
            f"cnn on {image} images: conv 16, relu, max pool, conv 32, relu, dropout 0.5, "
            f"dense {classes}"
        )
    return f"{'-'.join(map(str, [features, *config.hidden, classes]))} ({config.activation})"


def train_classifier(
    X: Any,
    y: Any,
    class_names: Sequence[str],
    *,
    config: TrainConfig = TrainConfig(),
    validation: tuple[Any, Any] | None = None,
    feature_names: Sequence[str] = (),
    target_name: str = "target",
    resume: Any = None,
    checkpoint: Callable[[Sequential, Any, Standardizer, Progress], None] | None = None,
    checkpoint_every: int | None = None,
    interrupted: Callable[[], bool] | None = None,
    parallel: Any = None,
) -> tuple[Classifier, History]:
    """Standardise on ``X``, build the network of ``config.model`` for ``len(class_names)``
    classes and train it.

    ``y`` holds class indices; ``validation`` (raw features and indices) enables early
    stopping after ``config.patience`` epochs without a better validation loss.
    ``resume`` (a :class:`handgrad.training.checkpoint.Checkpoint` of a run of the same data and
    config) goes on where that run stopped; ``checkpoint(model, optimizer, scaler,
    progress)`` is called every ``checkpoint_every`` epochs and on an interruption (see
    :func:`handgrad.training.fit`). ``parallel`` (a
    :class:`~handgrad.training.distributed.WorkerGroup`) trains as one of several workers.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.app.trainer import TrainConfig, train_classifier
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("iris")
    >>> parts = split(data.X, data.y, rng=0)
    >>> classifier, history = train_classifier(
    ...     parts.X_train,
    ...     parts.y_train,
    ...     data.class_names,
    ...     config=TrainConfig(epochs=100, seed=0),
    ...     validation=(parts.X_val, parts.y_val),
    ... )
    >>> classifier.predict_proba(parts.X_test[:2]).shape  # raw features in, probabilities out
    (2, 3)
    >>> float(np.mean(classifier.predict(parts.X_test) == parts.y_test)) > 0.9
    True
    """
    X = np.asarray(X, dtype=np.float64)
    scaler = Standardizer().fit(X) if resume is None else resume.standardizer
    model = build_model(config, X.shape[1], len(class_names))
    lr = default_lr(config.optimizer, config.model) if config.lr is None else config.lr
    optimizer = make_optimizer(config.optimizer, model.params, lr, **config.optimizer_options)
    if resume is not None:
        model.load_state_dict(resume.params)
        optimizer.load_state_dict(resume.optimizer_state)
    if validation is not None and len(validation[1]) == 0:
        validation = None
    history = fit(
        model,
        CrossEntropyLoss(),
        optimizer,
        scaler.transform(X),
        np.asarray(y),
        epochs=config.epochs,
        batch_size=config.batch_size,
        shuffle=config.shuffle,
        validation=None
        if validation is None
        else (
            scaler.transform(np.asarray(validation[0], dtype=np.float64)),
            np.asarray(validation[1]),
        ),
        patience=config.patience if validation is not None else None,
        min_delta=config.min_delta,
        schedule=_schedule(config),
        alpha=config.alpha,
        rng=config.seed,
        check=config.check,
        progress=config.progress,
        start=None if resume is None else resume.progress,
        checkpoint=None
        if checkpoint is None
        else (lambda progress: checkpoint(model, optimizer, scaler, progress)),
        checkpoint_every=checkpoint_every,
        interrupted=interrupted,
        parallel=parallel,
    )
    info = {
        "model": config.model,
        **(
            {"sizes": [X.shape[1], *config.hidden, len(class_names)]}
            if config.model == "mlp"
            else {}
        ),
        "activation": config.activation if config.model == "mlp" else "relu",
        "optimizer": config.optimizer,
        "lr": optimizer.lr,
        "seed": config.seed,
        "epochs_run": len(history.epoch),
        "best_epoch": history.best_epoch,
    }
    if config.optimizer_options:
        info["optimizer_options"] = dict(config.optimizer_options)
    classifier = Classifier(
        model.eval(), scaler, tuple(class_names), tuple(feature_names), target_name, info
    )
    return classifier, history
