"""A scikit-learn estimator around handgrad's MLP: ``HandgradClassifier`` trains through
:func:`handgrad.app.trainer.train_classifier`, the path ``handgrad train`` takes, and works
in pipelines, cross-validation and grid searches. Needs scikit-learn 1.6 or later."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    raise ImportError(
        "handgrad.sklearn needs scikit-learn 1.6 or later; pip install -U 'scikit-learn>=1.6'"
    ) from None

from handgrad.app.trainer import CONSTRAINTS, TrainConfig, train_classifier
from handgrad.core.validation import (
    BOOLEAN,
    FRACTION,
    OPEN_FRACTION,
    POSITIVE,
    POSITIVE_INT,
    AnyOf,
    Constraint,
    Options,
    Predicate,
)

__all__ = ["HandgradClassifier"]

_ACTIVATIONS = {"logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("sgd", "adam")


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


# What each hyperparameter may be: the library's own constraints where the meaning is the
# same (alpha is TrainConfig's alpha, learning_rate_init its lr, ...), and the estimator's
# own for what only it has; hidden_layer_sizes, activation and solver have their own checks.
_RULES: dict[str, Constraint] = {
    "alpha": CONSTRAINTS["alpha"],
    "batch_size": AnyOf(Options(["auto"]), CONSTRAINTS["batch_size"]),
    "learning_rate_init": CONSTRAINTS["lr"],
    "max_iter": CONSTRAINTS["epochs"],
    "shuffle": BOOLEAN,
    "random_state": Predicate(
        lambda v: (
            v is None or isinstance(v, np.random.RandomState) or (_integer(v) and 0 <= v < 2**32)
        ),
        "None, an int in [0, 2**32 - 1] or a numpy.random.RandomState",
    ),
    "tol": CONSTRAINTS["min_delta"],
    "early_stopping": BOOLEAN,
    "validation_fraction": OPEN_FRACTION,
    "n_iter_no_change": AnyOf(
        POSITIVE_INT, Predicate(lambda v: v == math.inf, "numpy.inf to never stop early")
    ),
    "momentum": FRACTION,
    "nesterovs_momentum": BOOLEAN,
    "beta_1": FRACTION,
    "beta_2": FRACTION,
    "epsilon": POSITIVE,
    "backend": CONSTRAINTS["backend"],
    "dtype": CONSTRAINTS["dtype"],
}


class HandgradClassifier(ClassifierMixin, BaseEstimator):
    """Multilayer perceptron classifier trained by handgrad's hand-written backprop.

    The parameters are :class:`sklearn.neural_network.MLPClassifier`'s names and defaults
    where they mean the same; ``backend`` and ``dtype`` are handgrad's. Where handgrad
    differs from MLPClassifier:

    - The inputs are always standardised inside (mean and scale of the training part), so
      a ``StandardScaler`` in front changes nothing but does no harm.
    - Without ``early_stopping`` every one of ``max_iter`` epochs runs: ``tol`` and
      ``n_iter_no_change`` act only with ``early_stopping=True``, and then on the
      validation *loss* (not accuracy): training stops after ``n_iter_no_change`` epochs
      in which it did not fall by more than ``tol``, and the weights of the epoch with the
      lowest validation loss are restored.
    - ``activation="identity"``, ``solver="lbfgs"`` and the parameters
      ``learning_rate``, ``power_t``, ``warm_start``, ``verbose`` and ``max_fun`` are not
      supported; ``momentum`` must be below 1.
    - The output layer is a softmax over all classes (two units for two classes, where
      MLPClassifier uses one logistic unit). Weights start as :func:`handgrad.mlp` draws
      them (He normal in a ReLU network, Glorot uniform otherwise; zero biases), and Adam
      follows ``torch.optim.Adam``, whose epsilon sits slightly differently from
      scikit-learn's, so results are close to MLPClassifier's but not identical.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        Widths of the hidden layers; ``()`` gives a linear softmax model.
    activation : {"relu", "tanh", "logistic"}, default="relu"
        Hidden-layer activation; "logistic" is handgrad's sigmoid.
    solver : {"adam", "sgd"}, default="adam"
        Adam, or SGD with ``momentum`` (Nesterov's when ``nesterovs_momentum``).
    alpha : float, default=1e-4
        L2 penalty on the weights (not biases), ``alpha / 2 * |W|^2`` per batch divided by
        the batch size.
    batch_size : int or "auto", default="auto"
        Examples per step; "auto" is ``min(200, n_samples)``; larger values are clipped.
    learning_rate_init : float, default=1e-3
        The (constant) learning rate.
    max_iter : int, default=200
        Epochs (passes over the training data).
    shuffle : bool, default=True
        Draw the batches in a fresh order each epoch; False keeps the order of ``X``.
    random_state : int, RandomState instance or None, default=None
        Seeds the initial weights, the batch order and the validation split. An int seeds
        handgrad directly, as ``handgrad train --seed``.
    tol : float, default=1e-4
        With early stopping, the fall in validation loss that counts as an improvement.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified), stop when its loss stalls
        and keep the best epoch's weights.
    validation_fraction : float, default=0.1
        The held-out part for early stopping.
    n_iter_no_change : int, default=10
        Epochs without improvement before early stopping; ``numpy.inf`` never stops but
        still restores the best weights.
    momentum : float, default=0.9
        SGD momentum, in [0, 1).
    nesterovs_momentum : bool, default=True
        Nesterov momentum for SGD.
    beta_1, beta_2 : float, default=0.9, 0.999
        Adam's decay rates of the first and second moment estimates, in [0, 1).
    epsilon : float, default=1e-8
        Adam's numerical-stability term.
    backend : {"numpy", "torch", "array_api_strict"}, default="numpy"
        The array library the network computes in.
    dtype : {"float64", "float32"}, default="float64"
        The floating-point type of the weights.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels; ``predict_proba``'s columns are in this order.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Feature names, when ``X`` had string column names (a pandas DataFrame).
    loss_ : float
        The training loss (cross-entropy plus L2 penalty) of the last epoch.
    best_loss_ : float or None
        The lowest training loss over the epochs; None with early stopping.
    loss_curve_ : list of float
        The training loss of each epoch.
    validation_scores_ : list of float or None
        The validation accuracy of each epoch with early stopping, else None.
    best_validation_score_ : float or None
        With early stopping, the validation accuracy of the epoch whose weights were kept
        (the lowest validation loss; it may be below ``max(validation_scores_)``), else None.
    n_iter_ : int
        Epochs run.
    classifier_ : handgrad.app.classifier.Classifier
        The trained network with its standardisation.
    history_ : handgrad.training.History
        Per-epoch losses and accuracies, and how training ended.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from handgrad.sklearn import HandgradClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = HandgradClassifier(hidden_layer_sizes=(10,), learning_rate_init=0.01, random_state=0)
    >>> clf = clf.fit(X, y)
    >>> clf.predict(X[:3]).tolist(), clf.n_iter_, clf.score(X, y) > 0.9
    ([0, 0, 0], 200, True)
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate_init: float = 0.001,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int | float = 10,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        backend: str = "numpy",
        dtype: str = "float64",
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.backend = backend
        self.dtype = dtype

    def _bad(self, name: str, allowed: str, value: Any) -> ValueError:
        return ValueError(f"{type(self).__name__}'s {name} must be {allowed}, got {value!r}")

    def _check_params(self) -> tuple[int, ...]:
        """Check every parameter, before anything is fitted; return the hidden widths."""
        for name, constraint in _RULES.items():
            if not constraint.accepts(getattr(self, name)):
                raise self._bad(name, constraint.description, getattr(self, name))
        if not isinstance(self.activation, str) or self.activation not in _ACTIVATIONS:
            raise self._bad(
                "activation",
                f"{Options(_ACTIVATIONS).description} (handgrad has no 'identity'; "
                "for a linear model use hidden_layer_sizes=())",
                self.activation,
            )
        if not isinstance(self.solver, str) or self.solver not in _SOLVERS:
            raise self._bad(
                "solver", f"{Options(_SOLVERS).description} (handgrad has no 'lbfgs')", self.solver
            )
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if _integer(sizes) else sizes
        if isinstance(sizes, str) or not np.iterable(sizes):
            raise self._bad("hidden_layer_sizes", "an int or a sequence of ints >= 1", sizes)
        sizes = tuple(sizes)
        if not all(_integer(s) and s >= 1 for s in sizes):
            raise self._bad(
                "hidden_layer_sizes", "an int or a sequence of ints >= 1", self.hidden_layer_sizes
            )
        return tuple(map(int, sizes))

    def _optimizer(self) -> tuple[str, dict[str, Any]]:
        """handgrad's optimizer name and options for ``solver``."""
        if self.solver == "adam":
            betas = (float(self.beta_1), float(self.beta_2))
            return "adam", {"betas": betas, "eps": float(self.epsilon)}
        # scikit-learn ignores nesterovs_momentum without momentum; handgrad's SGD refuses it
        nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
        return "sgd", {"momentum": float(self.momentum), "nesterov": nesterov}

    def fit(self, X: Any, y: Any) -> HandgradClassifier:
        """Train on ``X`` (n_samples, n_features) and class labels ``y`` (n_samples,)."""
        hidden = self._check_params()
        X, y = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        y = encoder.transform(y)
        rng = check_random_state(self.random_state)
        validation = None
        if self.early_stopping:
            X, y, validation = self._hold_out(X, y, rng)
        # an int seeds handgrad as `handgrad train --seed` does; else draw one from the stream
        seed = (
            int(self.random_state)
            if _integer(self.random_state)
            else int(rng.randint(np.iinfo(np.int32).max))
        )
        optimizer, options = self._optimizer()
        config = TrainConfig(
            hidden=hidden,
            activation=_ACTIVATIONS[self.activation],
            optimizer=optimizer,
            optimizer_options=options,
            lr=float(self.learning_rate_init),
            epochs=int(self.max_iter),
            batch_size=self._batch_size(X.shape[0]),
            # n_iter_no_change=inf: a patience of max_iter never runs out, and the best
            # epoch's weights are still restored
            patience=(
                int(min(self.n_iter_no_change, self.max_iter)) if self.early_stopping else None
            ),
            min_delta=float(self.tol),
            alpha=float(self.alpha),
            backend=self.backend,
            dtype=self.dtype,
            seed=seed,
            shuffle=bool(self.shuffle),
        )
        self.classifier_, self.history_ = train_classifier(
            X,
            y,
            [str(c) for c in self.classes_],
            config=config,
            validation=validation,
            feature_names=[str(f) for f in getattr(self, "feature_names_in_", ())],
        )
        history = self.history_
        self.n_iter_ = len(history.epoch)
        self.loss_curve_ = list(history.train_loss)
        self.loss_ = self.loss_curve_[-1]
        if self.early_stopping:
            self.best_loss_ = None
            self.validation_scores_ = list(history.val_accuracy)
            self.best_validation_score_ = history.val_accuracy[history.best_epoch - 1]
        else:
            self.best_loss_ = min(self.loss_curve_)
            self.validation_scores_ = None
            self.best_validation_score_ = None
        return self

    def _hold_out(
        self, X: np.ndarray, y: np.ndarray, rng: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Split off the stratified validation part for early stopping."""
        n_samples = len(y)
        try:
            X, X_val, y, y_val = train_test_split(
                X, y, test_size=self.validation_fraction, stratify=y, random_state=rng
            )
        except ValueError as err:
            raise ValueError(
                f"early_stopping cannot hold out validation_fraction={self.validation_fraction} "
                f"of {n_samples} samples stratified by class ({err}); raise validation_fraction, "
                "give more samples or set early_stopping=False"
            ) from None
        if len(y_val) < 2:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of {n_samples} samples leaves "
                f"{len(y_val)} for validation; raise it or give more samples (2 at least)"
            )
        return X, y, (X_val, y_val)

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n_samples} training "
                f"samples; using {n_samples}",
                UserWarning,
                stacklevel=3,
            )
        return int(min(self.batch_size, n_samples))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n_samples, n_classes), columns in ``classes_`` order."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.classifier_.predict_proba(X)

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label of each row, (n_samples,), of ``classes_``'s dtype."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
