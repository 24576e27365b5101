"""scikit-learn estimators trained by handgrad's hand-written backprop: ``HandgradClassifier``
and ``HandgradRegressor`` take the parameters and give the attributes of
:class:`~sklearn.neural_network.MLPClassifier` and
:class:`~sklearn.neural_network.MLPRegressor`, and pass scikit-learn's own MLP tests. Needs
scikit-learn 1.6 or later."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.metrics import accuracy_score, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import check_is_fitted, column_or_1d

try:
    from sklearn.utils.validation import validate_data
except ImportError:  # scikit-learn < 1.6
    raise ImportError(
        "handgrad.sklearn needs scikit-learn 1.6 or later; pip install -U 'scikit-learn>=1.6'"
    ) from None

from handgrad.app.perceptron import RULES, MultilayerPerceptron, _Scaled
from handgrad.core.validation import Constraint, Options
from handgrad.nn.layers import Sigmoid, Softmax
from handgrad.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, PoissonNLLLoss

__all__ = ["HandgradClassifier", "HandgradRegressor"]

_SPARSE = ["csr", "csc"]


class HandgradClassifier(ClassifierMixin, MultilayerPerceptron):
    """Multilayer perceptron classifier, a drop-in for scikit-learn's ``MLPClassifier``.

    Softmax outputs and cross-entropy for several classes; one logistic output for two
    classes; one logistic output per label for multi-label ``y`` (an indicator matrix),
    with :class:`~handgrad.nn.losses.BCEWithLogitsLoss` summed over the labels.

    The parameters, their defaults and the attributes are scikit-learn's (see
    :class:`sklearn.neural_network.MLPClassifier`); ``backend`` and ``dtype`` are
    handgrad's. Every gradient comes from handgrad's hand-written backward passes.

    - **No scaling inside**, as in scikit-learn: put a ``StandardScaler`` in front (a
      ``Pipeline``). ``coefs_[i]`` is the (n_in, n_out) weight matrix of layer ``i`` and
      ``intercepts_[i]`` its bias, in the space of the features given to ``fit``: the
      network computes ``act(X @ coefs_[0] + intercepts_[0])``, and so on. handgrad's
      ``Linear`` layers compute with these very arrays (their ``weight`` is
      ``coefs_[i].T``, a view): training updates them in place, and an array assigned to
      ``coefs_`` is used from the next call on.
    - The weights start as scikit-learn draws them (Glorot uniform, intercepts too), from
      the same ``random_state``; the batch order comes from another generator. Adam puts
      its epsilon as ``torch.optim.Adam`` does and SGD's velocity holds gradients (the
      same steps at a constant learning rate), so results are close to scikit-learn's but
      not identical. ``momentum`` must be below 1.
    - ``solver="lbfgs"`` is SciPy's L-BFGS-B on the flattened parameters, with the
      hand-written gradient. ``partial_fit`` draws a fresh batch order on each call.
    - ``backend`` ("numpy", "torch", "array_api_strict") is the array library the network
      computes in; on the others ``coefs_`` are copies written back after training.
      ``dtype`` None keeps float32 input in float32 (weights, gradients and predictions,
      without a float64 copy) and computes everything else in float64; "float32" or
      "float64" forces one.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from handgrad.sklearn import HandgradClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = HandgradClassifier((10,), solver="lbfgs", random_state=0)
    >>> model = make_pipeline(StandardScaler(), clf).fit(X, y)
    >>> model.predict(X[:3]).tolist(), model.score(X, y) > 0.95
    ([0, 0, 0], True)
    >>> [coef.shape for coef in clf.coefs_], clf.out_activation_
    ([(4, 10), (10, 3)], 'softmax')
    """

    def __init__(
        self,
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        max_fun: int = 15000,
        backend: str = "numpy",
        dtype: str | None = None,
    ) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            dtype=dtype,
        )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> HandgradClassifier:
        """Train on ``X`` (n_samples, n_features), dense or SciPy sparse, and labels ``y``
        (n_samples,) or a label indicator matrix (n_samples, n_labels); ``sample_weight``
        weights each sample's loss."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(
        self, X: Any, y: Any, sample_weight: Any = None, classes: Any = None
    ) -> HandgradClassifier:
        """One epoch over ``X, y``; ``classes`` (every label there will be) is needed on
        the first call. Only for the stochastic solvers."""
        first = not hasattr(self, "classes_")
        if classes is not None and not first:
            if not np.array_equal(self.classes_, unique_labels(classes)):
                raise ValueError(
                    f"classes={classes!r} is not the same as on the last call to "
                    f"partial_fit, was {self.classes_!r}"
                )
        elif classes is None and first:
            raise ValueError("classes must be passed on the first call to partial_fit")
        if first:
            self.classes_ = unique_labels(classes)
            self._label_binarizer = LabelBinarizer()
            multilabel = type_of_target(y).startswith("multilabel")
            self._label_binarizer.fit(y if multilabel else classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X: Any, y: Any, incremental: bool, first_pass: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE,
            multi_output=True,
            dtype=self._input_dtype(first_pass),
            reset=first_pass,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer().fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in "
                        f"the previous call to fit. Previously got {self.classes_}, `y` has "
                        f"{classes}"
                    )
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(
                    f"`y` has classes not in `self.classes_`. `self.classes_` has "
                    f"{self.classes_}. 'y' has {classes}."
                )
        Y = self._label_binarizer.transform(y)
        if self._label_binarizer.y_type_ == "multiclass":  # class indices, for softmax
            return X, np.argmax(Y, axis=1), y, Y.shape[1]
        return X, Y.astype(X.dtype), y, Y.shape[1]  # 0/1 targets of logistic outputs

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss(self, n_outputs: int) -> Any:
        if self.out_activation_ == "softmax":
            return CrossEntropyLoss()
        # scikit-learn sums the binary cross-entropy over the labels; BCE averages them
        loss = BCEWithLogitsLoss()
        return loss if n_outputs == 1 else _Scaled(loss, float(n_outputs))

    def _stratify(self, targets: Any) -> Any:
        """Stratify the early-stopping split for two classes (one output), as scikit-learn."""
        return targets.astype(bool) if targets.ndim == 2 and targets.shape[1] == 1 else None

    def _score_function(self) -> Any:
        return accuracy_score

    def _probabilities(self, outputs: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "softmax":
            return Softmax().forward_unchecked(outputs)
        return Sigmoid().forward_unchecked(outputs)

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        proba = self._probabilities(outputs)
        return self._label_binarizer.inverse_transform(
            proba.ravel() if self.n_outputs_ == 1 else proba
        )

    def _checked(self, X: Any) -> Any:
        check_is_fitted(self)
        return validate_data(self, X, accept_sparse=_SPARSE, reset=False)

    def predict(self, X: Any) -> np.ndarray:
        """Labels (n_samples,), or an indicator matrix for multi-label ``y``."""
        return self._predictions(self._outputs(self._checked(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities (n_samples, n_classes), columns in ``classes_`` order; for
        multi-label ``y`` each label's probability, (n_samples, n_labels)."""
        proba = self._probabilities(self._outputs(self._checked(X)))
        if self.n_outputs_ == 1:
            return np.hstack([1 - proba, proba])
        return proba

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.classifier_tags.multi_label = True
        return tags


class HandgradRegressor(RegressorMixin, MultilayerPerceptron):
    """Multilayer perceptron regressor, a drop-in for scikit-learn's ``MLPRegressor``.

    Identity outputs and half the squared error (``loss="squared_error"``), or
    exponential outputs and the Poisson loss (``loss="poisson"``); one output per target
    column. ``loss_`` is the loss summed over the outputs and averaged over the samples
    (MLPRegressor averages the squared error over the outputs too, while following the
    gradient of the sum; the Poisson loss here leaves out the constant ``y log y - y``).

    The parameters, defaults and attributes are :class:`sklearn.neural_network.MLPRegressor`'s,
    plus ``backend`` and ``dtype``; what :class:`HandgradClassifier` says of scaling,
    ``coefs_``, the solvers, ``backend`` and ``dtype`` holds here too.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.sklearn import HandgradRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(-1, 1, (200, 2))
    >>> y = np.sin(3 * X[:, 0]) + X[:, 1] ** 2
    >>> reg = HandgradRegressor(hidden_layer_sizes=(20,), activation="tanh", solver="lbfgs")
    >>> reg.fit(X, y).score(X, y) > 0.99, reg.predict(X[:2]).shape
    (True, (2,))
    """

    def __init__(
        self,
        loss: str = "squared_error",
        hidden_layer_sizes: Any = (100,),
        activation: str = "relu",
        *,
        solver: str = "adam",
        alpha: float = 0.0001,
        batch_size: int | str = "auto",
        learning_rate: str = "constant",
        learning_rate_init: float = 0.001,
        power_t: float = 0.5,
        max_iter: int = 200,
        shuffle: bool = True,
        random_state: Any = None,
        tol: float = 1e-4,
        verbose: bool | int = False,
        warm_start: bool = False,
        momentum: float = 0.9,
        nesterovs_momentum: bool = True,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        n_iter_no_change: int | float = 10,
        max_fun: int = 15000,
        backend: str = "numpy",
        dtype: str | None = None,
    ) -> None:
        self.loss = loss
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes,
            activation=activation,
            solver=solver,
            alpha=alpha,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_init=learning_rate_init,
            power_t=power_t,
            max_iter=max_iter,
            shuffle=shuffle,
            random_state=random_state,
            tol=tol,
            verbose=verbose,
            warm_start=warm_start,
            momentum=momentum,
            nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping,
            validation_fraction=validation_fraction,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            n_iter_no_change=n_iter_no_change,
            max_fun=max_fun,
            backend=backend,
            dtype=dtype,
        )

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> HandgradRegressor:
        """Train on ``X`` (n_samples, n_features), dense or SciPy sparse, and targets ``y``
        (n_samples,) or (n_samples, n_targets); ``sample_weight`` weights each sample."""
        return self._fit(X, y, sample_weight, incremental=False)

    @available_if(lambda est: est._check_solver())
    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> HandgradRegressor:
        """One epoch over ``X, y``. Only for the stochastic solvers."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _rules(self) -> dict[str, Constraint]:
        return {"loss": Options(("squared_error", "poisson")), **RULES}

    def _validate_input(self, X: Any, y: Any, incremental: bool, first_pass: bool) -> tuple:
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=_SPARSE,
            multi_output=True,
            y_numeric=True,
            dtype=self._input_dtype(first_pass),
            reset=first_pass,
        )
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        targets = np.reshape(y, (y.shape[0], -1)).astype(X.dtype, copy=False)
        return X, targets, y, targets.shape[1]

    def _output_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _loss(self, n_outputs: int) -> Any:
        if self.loss == "poisson":
            loss = PoissonNLLLoss()
            return loss if n_outputs == 1 else _Scaled(loss, float(n_outputs))
        # half the squared error, summed over the outputs: MSELoss averages over them
        return _Scaled(MSELoss(), n_outputs / 2)

    def _stratify(self, targets: Any) -> Any:
        return None

    def _score_function(self) -> Any:
        return r2_score

    def _predictions(self, outputs: np.ndarray) -> np.ndarray:
        if self.out_activation_ == "exp":
            outputs = np.exp(outputs)
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (n_samples,), or (n_samples, n_targets) for several targets, in the
        weights' dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=_SPARSE, reset=False)
        return self._predictions(self._outputs(X))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
