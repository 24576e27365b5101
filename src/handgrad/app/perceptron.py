"""What ``HandgradClassifier`` and ``HandgradRegressor`` share: the hyperparameters and their
checks, the weights (``coefs_`` / ``intercepts_``, scikit-learn's layout, which the handgrad
network reads and writes in place), and training with scikit-learn's meaning of every
option, through :func:`handgrad.training.fit` (mini-batches) or
:func:`handgrad.training.lbfgs.fit_lbfgs` (full batch). Needs scikit-learn 1.6 or later."""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state

from handgrad.app.trainer import CONSTRAINTS
from handgrad.core.arrays import convert, get_namespace, to_numpy
from handgrad.core.validation import (
    BOOLEAN,
    FRACTION,
    NON_NEGATIVE,
    OPEN_FRACTION,
    POSITIVE,
    POSITIVE_INT,
    AnyOf,
    Constraint,
    Options,
    Predicate,
)
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Linear, ReLU, Sigmoid, Tanh
from handgrad.nn.protocol import chain
from handgrad.training.fit import fit
from handgrad.training.lbfgs import fit_lbfgs
from handgrad.training.optim import SGD, Adam, Optimizer

__all__ = ["MultilayerPerceptron"]

_HIDDEN = {"identity": None, "logistic": Sigmoid, "tanh": Tanh, "relu": ReLU}
_DTYPES = {None: (np.float64, np.float32), "float64": np.float64, "float32": np.float32}
_CHUNK = 4096  # rows of a sparse X made dense at a time when predicting


def _integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


# What each hyperparameter may be: the library's own constraints where the meaning is the
# same (alpha is TrainConfig's alpha, learning_rate_init its lr, ...), and the estimator's
# own for what only it has; hidden_layer_sizes has its own check.
RULES: dict[str, Constraint] = {
    "activation": Options(_HIDDEN),
    "solver": Options(("lbfgs", "sgd", "adam")),
    "alpha": CONSTRAINTS["alpha"],
    "batch_size": AnyOf(Options(["auto"]), CONSTRAINTS["batch_size"]),
    "learning_rate": Options(("constant", "invscaling", "adaptive")),
    "learning_rate_init": CONSTRAINTS["lr"],
    "power_t": NON_NEGATIVE,
    "max_iter": CONSTRAINTS["epochs"],
    "shuffle": BOOLEAN,
    "random_state": Predicate(
        lambda v: (
            v is None or isinstance(v, np.random.RandomState) or (_integer(v) and 0 <= v < 2**32)
        ),
        "None, an int in [0, 2**32 - 1] or a numpy.random.RandomState",
    ),
    "tol": CONSTRAINTS["min_delta"],
    "verbose": Predicate(
        lambda v: isinstance(v, bool | np.bool_) or (_integer(v) and v >= 0),
        "True, False or an int >= 0",
    ),
    "warm_start": BOOLEAN,
    "momentum": FRACTION,
    "nesterovs_momentum": BOOLEAN,
    "early_stopping": BOOLEAN,
    "validation_fraction": OPEN_FRACTION,
    "beta_1": FRACTION,
    "beta_2": FRACTION,
    "epsilon": POSITIVE,
    "n_iter_no_change": AnyOf(
        POSITIVE_INT, Predicate(lambda v: v == math.inf, "numpy.inf to never stop early")
    ),
    "max_fun": POSITIVE_INT,
    "backend": CONSTRAINTS["backend"],
    "dtype": AnyOf(Options([None]), CONSTRAINTS["dtype"]),
}


class _Scaled:
    """A handgrad loss times a constant: ``c L`` and ``c dL/dpred``."""

    def __init__(self, loss: Any, factor: float) -> None:
        self.loss, self.factor = loss, factor

    def forward_unchecked(self, *args: Any, **kwargs: Any) -> Any:
        return self.factor * self.loss.forward_unchecked(*args, **kwargs)

    def backward(self) -> Any:
        # d(c L)/dpred = c dL/dpred
        return self.factor * self.loss.backward()

    def as_scaled(self) -> tuple[Any, float]:
        """The loss and the constant: how the compiled training step reads this loss."""
        return self.loss, self.factor


class _Session:
    """The handgrad network over ``coefs_`` / ``intercepts_`` and its optimizer."""

    def __init__(self, network: Sequential, sources: list[np.ndarray], shared: bool) -> None:
        self.network, self.sources, self.shared = network, sources, shared
        self.optimizer: Optimizer | None = None


class MultilayerPerceptron(BaseEstimator):
    """Base class of :class:`~handgrad.app.estimators.HandgradClassifier` and
    :class:`~handgrad.app.estimators.HandgradRegressor`; not for use on its own.

    Subclasses define ``_validate_input``, ``_loss``, ``_score``, ``_stratify`` and
    ``_output_activation``.

    Examples
    --------
    >>> from handgrad.app.perceptron import MultilayerPerceptron
    >>> from handgrad.sklearn import HandgradRegressor
    >>> issubclass(HandgradRegressor, MultilayerPerceptron)
    True
    """

    def __init__(
        self,
        hidden_layer_sizes: Any,
        activation: str,
        solver: str,
        alpha: float,
        batch_size: int | str,
        learning_rate: str,
        learning_rate_init: float,
        power_t: float,
        max_iter: int,
        shuffle: bool,
        random_state: Any,
        tol: float,
        verbose: bool | int,
        warm_start: bool,
        momentum: float,
        nesterovs_momentum: bool,
        early_stopping: bool,
        validation_fraction: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
        n_iter_no_change: int | float,
        max_fun: int,
        backend: str,
        dtype: str | None,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.backend = backend
        self.dtype = dtype

    # --- checks -------------------------------------------------------------------------

    def _bad(self, name: str, allowed: str, value: Any) -> ValueError:
        return ValueError(f"{type(self).__name__}'s {name} must be {allowed}, got {value!r}")

    def _check_params(self) -> list[int]:
        """Check every hyperparameter before anything is fitted; return the hidden widths."""
        for name, constraint in self._rules().items():
            if not constraint.accepts(getattr(self, name)):
                raise self._bad(name, constraint.description, getattr(self, name))
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if _integer(sizes) else sizes
        if isinstance(sizes, str) or not np.iterable(sizes):
            raise self._bad("hidden_layer_sizes", "an int or a sequence of ints >= 1", sizes)
        sizes = tuple(sizes)
        if not all(_integer(s) and s >= 1 for s in sizes):
            raise self._bad(
                "hidden_layer_sizes", "an int or a sequence of ints >= 1", self.hidden_layer_sizes
            )
        return [int(s) for s in sizes]

    def _rules(self) -> dict[str, Constraint]:
        return RULES

    def _check_solver(self) -> bool:
        if self.solver not in ("sgd", "adam"):
            raise AttributeError(
                f"partial_fit is only available for the stochastic solvers 'sgd' and 'adam', "
                f"not {self.solver!r}"
            )
        return True

    def _input_dtype(self, first_pass: bool) -> Any:
        """The dtypes validate_data may keep: the weights' once they exist."""
        if not first_pass:
            return self.coefs_[0].dtype.type
        return _DTYPES[self.dtype]

    # --- the weights and the network ----------------------------------------------------

    def _initialize(self, layer_units: list[int], dtype: Any) -> None:
        """Draw the weights as scikit-learn does (Glorot uniform, factor 2 before a logistic
        activation, intercepts too) and reset what training records."""
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(layer_units)
        self.n_outputs_ = layer_units[-1]
        self.out_activation_ = self._output_activation()
        factor = 2.0 if self.activation == "logistic" else 6.0
        self.coefs_, self.intercepts_ = [], []
        for fan_in, fan_out in itertools.pairwise(layer_units):
            bound = math.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            # (in, out) in Fortran order: its transpose is handgrad's (out, in) C-order weight
            self.coefs_.append(np.asfortranarray(coef, dtype=dtype))
            self.intercepts_.append(intercept.astype(dtype))
        self._best_params: list[np.ndarray] | None = None
        self._session = None
        if self.solver != "lbfgs":
            self.loss_curve_ = []
            self._no_improvement_count = 0
            self._lr_factor = 1.0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _network(self) -> _Session:
        """The handgrad network that computes with ``coefs_`` and ``intercepts_``: on NumPy
        its parameters are views of them (no copy, updated in place), on other backends
        copies written back after training. Built again when the arrays were replaced."""
        sources = [*self.coefs_, *self.intercepts_]
        session = getattr(self, "_session", None)
        if session is not None and all(
            a is b for a, b in zip(session.sources, sources, strict=True)
        ):
            return session
        xp = get_namespace(self.backend)
        shared = self.backend == "numpy"
        hidden = _HIDDEN[self.activation]
        layers: list[Any] = []
        for i, (coef, intercept) in enumerate(zip(self.coefs_, self.intercepts_, strict=True)):
            if i and hidden is not None:
                layers.append(hidden())
            dtype = coef.dtype.name
            layer = Linear(*coef.shape, init=_zeros, backend=self.backend, dtype=dtype)
            for name, array in (("weight", coef.T), ("bias", intercept)):
                layer.params[name] = array if shared else convert(array, xp, dtype=dtype)
            layers.append(layer)
        new = _Session(Sequential(*layers), sources, shared)
        if session is not None and session.optimizer is not None:
            new.optimizer = self._make_optimizer(new.network)
            new.optimizer.load_state_dict(session.optimizer.state_dict())
        self._session = new
        return new

    def _write_back(self, session: _Session) -> None:
        """Copy the network's weights into ``coefs_`` / ``intercepts_`` (other backends)."""
        if session.shared:
            return
        params = list(session.network.params.values())
        for source, param in zip(session.sources, params[0::2] + params[1::2], strict=True):
            value = to_numpy(param)
            np.copyto(source, value.T if source.ndim == 2 else value)

    def _make_optimizer(self, network: Sequential) -> Optimizer:
        lr = float(self.learning_rate_init)
        if self.solver == "adam":
            betas = (float(self.beta_1), float(self.beta_2))
            return Adam(network.params, lr, betas=betas, eps=float(self.epsilon))
        # scikit-learn ignores nesterovs_momentum without momentum; handgrad's SGD refuses it
        nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
        return SGD(network.params, lr, momentum=float(self.momentum), nesterov=nesterov)

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's last layer before the output activation, (n_samples, n_outputs),
        in the weights' dtype; no check of X (already validated)."""
        session = self._network()
        dtype = self.coefs_[0].dtype
        if hasattr(X, "toarray"):  # sparse: dense a few thousand rows at a time
            parts = [
                self._outputs(X[i : i + _CHUNK].toarray()) for i in range(0, X.shape[0], _CHUNK)
            ]
            return np.concatenate(parts) if parts else np.empty((0, self.n_outputs_), dtype)
        out = np.asarray(X, dtype=dtype)
        if not session.shared:
            weight = session.network.params["0.weight"]
            xp = get_namespace(self.backend)
            out = convert(out, xp, dtype=dtype.name, device=weight.device)
        for layer in chain(session.network):
            out = layer.forward_unchecked(out)
        return np.asarray(to_numpy(out))

    # --- training -----------------------------------------------------------------------

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool) -> Any:
        hidden = self._check_params()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        X, targets, y, n_outputs = self._validate_input(X, y, incremental, first_pass)
        if sample_weight is not None:
            sample_weight = _check_weights(sample_weight, X)
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize([X.shape[1], *hidden, n_outputs], X.dtype)
        elif n_outputs != self.n_outputs_:
            raise ValueError(
                f"y has {n_outputs} output(s) but the fitted network has {self.n_outputs_}; "
                "fit again without warm_start"
            )
        session = self._network()
        if self.solver == "lbfgs":
            self._fit_lbfgs(session, X, targets, sample_weight, n_outputs)
        else:
            self._fit_stochastic(session, X, targets, y, sample_weight, incremental, n_outputs)
        self._write_back(session)
        if not all(np.isfinite(w).all() for w in [*self.coefs_, *self.intercepts_]):
            raise ValueError(
                "Solver produced non-finite parameter weights. The input data may contain "
                "large values and need to be preprocessed."
            )
        return self

    def _fit_lbfgs(
        self, session: _Session, X: Any, targets: Any, sample_weight: Any, n_outputs: int
    ) -> None:
        def report(iteration: int, loss: float) -> None:
            print(f"Iteration {iteration}, loss = {loss:.8f}")

        result = fit_lbfgs(
            session.network,
            self._loss(n_outputs),
            X,
            targets,
            sample_weight=sample_weight,
            alpha=float(self.alpha),
            max_iter=int(self.max_iter),
            max_fun=int(self.max_fun),
            tol=float(self.tol),
            callback=report if self.verbose else None,
        )
        self.n_iter_ = min(int(result.nit), int(self.max_iter))
        self.loss_ = float(result.fun)
        if result.status != 0:
            message = (
                f"lbfgs failed to converge after {self.n_iter_} iteration(s) "
                f"(status={result.status}):\n{result.message}\n"
            )
            if self.n_iter_ == self.max_iter:
                message += (
                    "\nIncrease the number of iterations to improve the convergence "
                    f"(max_iter={self.max_iter})."
                )
            message += "\nYou might also want to scale the data (e.g. with StandardScaler)."
            warnings.warn(message, ConvergenceWarning, stacklevel=4)  # the caller of fit

    def _fit_stochastic(
        self,
        session: _Session,
        X: Any,
        targets: Any,
        y: Any,
        sample_weight: Any,
        incremental: bool,
        n_outputs: int,
    ) -> None:
        if not incremental or session.optimizer is None:
            session.optimizer = self._make_optimizer(session.network)
            self._lr_factor = 1.0
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = None
        params = list(session.network.params.values())
        if self.early_stopping:
            X, targets, sample_weight, validation = self._hold_out(X, targets, y, sample_weight)
            if self._best_params is None:  # the weights to go back to if no epoch is better
                self._best_params = [np.array(to_numpy(p)) for p in params]
        n_samples = X.shape[0]
        if incremental and getattr(self, "_batch_rng", None) is not None:
            generator = self._batch_rng
        else:
            generator = np.random.default_rng(self._random_state.randint(np.iinfo(np.int32).max))
        self._batch_rng = generator
        rule = _EpochRule(self, n_samples, validation)
        self.n_iter_ = 0
        history = fit(
            session.network,
            self._loss(n_outputs),
            session.optimizer,
            X,
            targets,
            epochs=1 if incremental else int(self.max_iter),
            batch_size=self._batch_size(n_samples),
            shuffle=bool(self.shuffle),
            alpha=float(self.alpha),
            rng=generator,
            schedule=rule.factor,
            sample_weight=sample_weight,
            on_epoch=rule,
            stop_on_divergence=False,
        )
        if self.early_stopping:  # back to the weights of the best validation score
            for param, best in zip(params, self._best_params, strict=True):
                param[...] = best if session.shared else convert(best, get_namespace(self.backend))
        if not incremental and not history.stopped_early:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=4,  # the caller of fit
            )

    def _hold_out(self, X: Any, targets: Any, y: Any, sample_weight: Any) -> tuple:
        """Split off ``validation_fraction`` for early stopping (stratified for a single
        classification output, as scikit-learn); the validation part keeps ``y`` as given."""
        arrays = [X, targets, y] + ([sample_weight] if sample_weight is not None else [])
        parts = train_test_split(
            *arrays,
            random_state=self._random_state,
            test_size=self.validation_fraction,
            stratify=self._stratify(targets),
        )
        X, X_val, targets, _, _, y_val = parts[:6]
        w, w_val = parts[6:8] if sample_weight is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError(
                "The validation set is too small. Increase 'validation_fraction' or the size "
                "of your dataset."
            )
        return X, targets, w, (X_val, y_val, w_val)

    def _batch_size(self, n_samples: int) -> int:
        if self.batch_size == "auto":
            return min(200, n_samples)
        if self.batch_size > n_samples:
            warnings.warn(
                f"batch_size={self.batch_size} is larger than the {n_samples} training "
                f"samples; using {n_samples}",
                UserWarning,
                stacklevel=5,  # the caller of fit
            )
        return int(min(self.batch_size, n_samples))

    def _score_on(self, X: Any, y: Any, sample_weight: Any, score: Any) -> float:
        """``score(y, prediction)``, or NaN where the network's outputs are not finite."""
        outputs = self._outputs(X)
        if not np.isfinite(outputs).all():
            return math.nan
        return float(score(y, self._predictions(outputs), sample_weight=sample_weight))

    # --- persistence --------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: the model itself keeps its session
        session = state.pop("_session", None)
        if session is not None and session.optimizer is not None:
            state["_optimizer_state"] = session.optimizer.state_dict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        optimizer_state = state.pop("_optimizer_state", None)
        super().__setstate__(state)
        if optimizer_state is not None:
            session = self._network()
            session.optimizer = self._make_optimizer(session.network)
            session.optimizer.load_state_dict(optimizer_state)


class _EpochRule:
    """scikit-learn's end of an epoch: record the loss (and validation score), count the
    epochs without improvement by more than ``tol`` (of the validation score with early
    stopping, else of the training loss), and after more than ``n_iter_no_change`` of
    them stop, or with ``learning_rate="adaptive"`` divide the rate by 5. Also the
    learning-rate schedule: ``factor`` is the fraction of ``learning_rate_init`` in use."""

    def __init__(self, estimator: MultilayerPerceptron, n_samples: int, validation: Any) -> None:
        self.estimator, self.n_samples, self.validation = estimator, n_samples, validation

    def factor(self, epoch: int) -> float:
        return self.estimator._lr_factor

    def __call__(self, history: Any) -> bool:
        est = self.estimator
        loss = history.train_loss[-1]
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = loss
        est.loss_curve_.append(loss)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
        if self.validation is not None:
            score = est._score_on(*self.validation, est._score_function())
            est.validation_scores_.append(score)
            if est.verbose:
                print(f"Validation score: {score:f}")
            improved = not score < est.best_validation_score_ + est.tol
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                params = est._session.network.params.values()
                est._best_params = [np.array(to_numpy(p)) for p in params]
        else:
            improved = not loss > est.best_loss_ - est.tol
            if loss < est.best_loss_:
                est.best_loss_ = loss
        est._no_improvement_count = 0 if improved else est._no_improvement_count + 1
        sgd = est.solver == "sgd"
        if sgd and est.learning_rate == "invscaling":
            est._lr_factor = 1.0 / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count <= est.n_iter_no_change:
            return False
        what = "Validation score" if self.validation is not None else "Training loss"
        message = (
            f"{what} did not improve more than tol={est.tol:f} for "
            f"{est.n_iter_no_change} consecutive epochs."
        )
        if sgd and est.learning_rate == "adaptive":
            if est.learning_rate_init * est._lr_factor > 1e-6:
                est._lr_factor /= 5.0
                est._no_improvement_count = 0
                if est.verbose:
                    rate = est.learning_rate_init * est._lr_factor
                    print(f"{message} Setting learning rate to {rate:f}")
                return False
            message += " Learning rate too small."
        if est.verbose:
            print(f"{message} Stopping.")
        return True


def _zeros(shape: tuple[int, int], rng: Any) -> np.ndarray:
    """An initialiser for a Linear whose weights are set right after."""
    return np.zeros(shape)


def _check_weights(sample_weight: Any, X: Any) -> np.ndarray:
    """``sample_weight`` as a 1-D array of X's dtype with one finite weight per row."""
    weight = np.asarray(sample_weight, dtype=X.dtype)
    if weight.ndim == 0:
        weight = np.full(X.shape[0], weight, dtype=X.dtype)
    if weight.ndim != 1 or weight.shape[0] != X.shape[0]:
        raise ValueError(
            f"sample_weight must be a number or an array of shape ({X.shape[0]},), "
            f"got shape {weight.shape}"
        )
    if not np.isfinite(weight).all():
        raise ValueError("sample_weight must be finite, got NaN or infinity")
    if not weight.any():
        raise ValueError("sample_weight must not be all zero weights (got only zeros)")
    return weight
