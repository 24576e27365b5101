"""A trained classifier: the model with what it needs around it to be used on raw data
(the standardisation fitted on its training data, the feature and class names)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.backend import convert, namespace, to_numpy
from handgrad.data import Standardiser
from handgrad.layers import Softmax
from handgrad.losses import CrossEntropyLoss
from handgrad.model import Sequential
from handgrad.optim import make_optimizer, make_schedule
from handgrad.presets import mlp
from handgrad.train import History, Progress, fit
from handgrad.validation import check_array

__all__ = ["Classifier", "TrainConfig", "train_classifier"]


@dataclass
class Classifier:
    """A model that outputs logits, with its input scaling and names.

    ``predict_proba`` and ``predict`` take raw (unscaled) NumPy features of shape
    (n, features) and return NumPy results whatever the model's backend.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.classifier import Classifier
    >>> from handgrad.data import Standardiser
    >>> X = np.array([[1.0, 200.0], [3.0, 100.0], [2.0, 150.0]])  # raw features
    >>> classifier = Classifier(hg.mlp([2, 2], rng=0), Standardiser().fit(X), ("no", "yes"))
    >>> classifier.predict_proba(X).shape, classifier.predict(X).tolist()
    ((3, 2), [1, 0, 0])
    """

    model: Sequential
    standardiser: Standardiser | None
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    target_name: str = "target"
    info: dict[str, Any] = field(default_factory=dict)

    def _inputs(self, X: Any) -> Any:
        X = np.asarray(X, dtype=np.float64)
        check_array(X, "X", ndim=2, layout="(examples, features)")
        if self.standardiser is not None:
            X = self.standardiser.transform(X)
        weight = self.model.params()[next(iter(self.model.params()))]
        return convert(X, namespace(weight), dtype=weight.dtype, device=weight.device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, classes), each row summing to 1."""
        logits = self.model.forward(self._inputs(X))
        return np.asarray(to_numpy(Softmax().forward(logits)), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Class indices, (n,): the most probable class of each row."""
        return np.argmax(self.predict_proba(X), axis=1)


@dataclass(frozen=True)
class TrainConfig:
    """How to train a classifier; the defaults are ``handgrad train``'s: the seed's network
    (one hidden layer of 20 sigmoid units), Adam, 100 epochs, L2 penalty 1e-2. Early
    stopping is off unless ``patience`` is set (and validation data given); an epoch counts
    as better when the validation loss falls by more than ``min_delta``.
    ``optimizer_options`` go to :func:`~handgrad.optim.make_optimizer` (``momentum``,
    ``nesterov``, ``betas``, ``eps``, ``weight_decay``).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.classifier import TrainConfig, train_classifier
    >>> config = TrainConfig(hidden=(8,), optimizer="sgd", epochs=5)
    >>> X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    >>> classifier, history = train_classifier(X, y, ["even", "odd"], config=config)
    >>> classifier.info["sizes"], classifier.info["optimizer"], len(history.epoch)
    ([3, 8, 2], 'sgd', 5)
    """

    hidden: tuple[int, ...] = (20,)
    activation: str = "sigmoid"
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


def _schedule(config: TrainConfig) -> Any:
    if config.schedule == "cosine":
        return make_schedule("cosine", total_epochs=config.epochs)
    if config.schedule == "step":
        return make_schedule("step", step_size=max(1, config.epochs // 3), gamma=0.1)
    return make_schedule(config.schedule)


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
    checkpoint: Callable[[Sequential, Any, Standardiser, Progress], None] | None = None,
    checkpoint_every: int | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> tuple[Classifier, History]:
    """Standardise on ``X``, build an MLP for ``len(class_names)`` classes and train it.

    ``y`` holds class indices; ``validation`` (raw features and indices) enables early
    stopping after ``config.patience`` epochs without a better validation loss.
    ``resume`` (a :class:`handgrad.checkpoint.Checkpoint` of a run of the same data and
    config) goes on where that run stopped; ``checkpoint(model, optimizer, scaler,
    progress)`` is called every ``checkpoint_every`` epochs and on an interruption (see
    :func:`handgrad.train.fit`).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.classifier import TrainConfig, train_classifier
    >>> from handgrad.data import load_dataset, split
    >>> data = load_dataset("iris")
    >>> parts = split(data.X, data.y, seed=0)
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
    scaler = Standardiser().fit(X) if resume is None else resume.standardiser
    sizes = [X.shape[1], *config.hidden, len(class_names)]
    model = mlp(
        sizes,
        config.activation,
        rng=config.seed,
        backend=config.backend,
        dtype=config.dtype,
        device=config.device,
    )
    optimizer = make_optimizer(
        config.optimizer, model.params(), config.lr, **config.optimizer_options
    )
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
    )
    info = {
        "sizes": sizes,
        "activation": config.activation,
        "optimizer": config.optimizer,
        "lr": optimizer.lr,
        "seed": config.seed,
        "epochs_run": len(history.epoch),
        "best_epoch": history.best_epoch,
    }
    if config.optimizer_options:
        info["optimizer_options"] = dict(config.optimizer_options)
    classifier = Classifier(
        model, scaler, tuple(class_names), tuple(feature_names), target_name, info
    )
    return classifier, history
