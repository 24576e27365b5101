"""handgrad's estimators beyond scikit-learn's own MLP tests (tests/test_sklearn_suite.py):
check_estimator, the objective against scikit-learn's, the weights' layout, dtypes, and
the options scikit-learn's tests check only through private attributes."""

import itertools
import pickle
import re
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_iris, make_multilabel_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import (
    check_classifiers_multilabel_output_format_predict,
    check_classifiers_multilabel_output_format_predict_proba,
    check_sample_weight_equivalence_on_dense_data,
    check_sample_weight_equivalence_on_sparse_data,
    parametrize_with_checks,
)

from handgrad.sklearn import HandgradClassifier, HandgradRegressor
from handgrad.training.step import Step

pytest.importorskip("scipy")

SMALL = {"hidden_layer_sizes": (10,), "max_iter": 50, "learning_rate_init": 0.01}
IRIS = {"hidden_layer_sizes": (10,), "max_iter": 50, "learning_rate_init": 0.03}
X_IRIS, Y_IRIS = load_iris(return_X_y=True)
X_SCALED = StandardScaler().fit_transform(X_IRIS)


@parametrize_with_checks(
    [
        HandgradClassifier(**SMALL, random_state=0),
        HandgradClassifier(**SMALL, solver="sgd", activation="logistic", random_state=0),
        HandgradRegressor(**SMALL, random_state=0),
        HandgradRegressor(**SMALL, activation="identity", random_state=0),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "estimator",
    [
        HandgradClassifier((10,), solver="lbfgs", activation="tanh", random_state=0),
        HandgradRegressor(hidden_layer_sizes=(10,), solver="lbfgs", random_state=0),
    ],
    ids=["classifier", "regressor"],
)
def test_lbfgs_weights_are_repeated_examples(estimator):
    """check_estimator's sample-weight checks with the full-batch solver too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        name = type(estimator).__name__
        check_sample_weight_equivalence_on_dense_data(name, estimator)
        check_sample_weight_equivalence_on_sparse_data(name, estimator)
        if isinstance(estimator, HandgradClassifier):
            check_classifiers_multilabel_output_format_predict(name, estimator)
            check_classifiers_multilabel_output_format_predict_proba(name, estimator)


# --- the objective is scikit-learn's ------------------------------------------------------


def _objective_cases():
    rng = np.random.RandomState(0)
    X = rng.standard_normal((12, 4))
    multilabel = make_multilabel_classification(12, 4, n_classes=3, random_state=0)[1]
    return {
        "multiclass": (MLPClassifier, HandgradClassifier, {}, X, rng.randint(0, 3, 12)),
        "binary": (MLPClassifier, HandgradClassifier, {}, X, rng.randint(0, 2, 12)),
        "multilabel": (MLPClassifier, HandgradClassifier, {}, X, multilabel),
        "squared_error": (MLPRegressor, HandgradRegressor, {}, X, rng.standard_normal(12)),
        "two targets": (MLPRegressor, HandgradRegressor, {}, X, rng.standard_normal((12, 2))),
        "poisson": (MLPRegressor, HandgradRegressor, {"loss": "poisson"}, X, rng.poisson(2, 12)),
    }


@pytest.mark.parametrize("case", list(_objective_cases()))
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_the_gradient_is_scikit_learns(case, activation):
    """At the same weights, with sample weights and an L2 penalty, the loss and every
    gradient that handgrad's hand-written backward gives equal MLPClassifier's /
    MLPRegressor's (the loss up to a constant for Poisson, and up to the factor
    MLPRegressor's reported squared error leaves out for two targets)."""
    peer_type, own_type, options, X, y = _objective_cases()[case]
    common = {"hidden_layer_sizes": (5, 3), "activation": activation, "alpha": 0.3}
    common.update(solver="lbfgs", max_iter=1, random_state=0, **options)
    weight = np.random.RandomState(1).uniform(0.2, 3.0, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        own = own_type(**common).fit(X, y)
        peer = peer_type(**common).fit(X, y)
    for mine, theirs in zip(
        own.coefs_ + own.intercepts_, peer.coefs_ + peer.intercepts_, strict=True
    ):
        theirs[...] = mine
    Y = peer._label_binarizer.transform(y) if own_type is HandgradClassifier else y
    Y = Y.reshape(len(X), -1) if np.ndim(Y) == 1 else Y
    units = [4, 5, 3, own.n_outputs_]
    shapes = list(itertools.pairwise(units))
    value, grad = peer._loss_grad_lbfgs(
        np.hstack([p.ravel() for p in peer.coefs_ + peer.intercepts_]),
        X,
        Y,
        weight,
        [X] + [None] * 3,
        [None] * 3,
        [np.empty(s) for s in shapes],
        [np.empty(s[1]) for s in shapes],
    )
    targets = own._validate_input(X, y, False, False)[1]
    step = Step(own._network().network, own._loss(own.n_outputs_), None, X, targets, 0.3, weight)
    own_value, _, own_grads = step.gradients(None)
    params = own._network().network.params
    names = [n for n in params if n.endswith("weight")] + [n for n in params if n.endswith("bias")]
    by_name = dict(zip(params, own_grads, strict=True))
    own_grad = np.hstack(
        [(by_name[n].T if n.endswith("weight") else by_name[n]).ravel() for n in names]
    )
    np.testing.assert_allclose(own_grad, grad, rtol=1e-10, atol=1e-13)
    if case == "two targets":
        value += 0.5 * np.average((peer.predict(X) - y) ** 2, weights=weight, axis=0).mean()
    if case != "poisson":
        assert own_value == pytest.approx(value, rel=1e-10)


# --- the weights --------------------------------------------------------------------------


def _forward(model, X):
    """The network written out from coefs_ and intercepts_, in NumPy."""
    act = {
        "identity": lambda z: z,
        "logistic": lambda z: 1 / (1 + np.exp(-z)),
        "tanh": np.tanh,
        "relu": lambda z: np.maximum(z, 0),
    }[model.activation]
    out = X
    for i, (coef, intercept) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
        out = out @ coef + intercept
        if i < len(model.coefs_) - 1:
            out = act(out)
    return out


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_coefs_are_the_weights_in_the_raw_feature_space(activation):
    """No scaling inside: predictions are the network of coefs_ / intercepts_ on the X given,
    and coefs_[i] is (n_in, n_out), scikit-learn's layout."""
    model = HandgradClassifier((6, 5), activation, solver="lbfgs", max_iter=30, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_IRIS, Y_IRIS)  # unscaled: petal widths and sepal lengths as they are
    assert [c.shape for c in model.coefs_] == [(4, 6), (6, 5), (5, 3)]
    z = _forward(model, X_IRIS)
    expected = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        model.predict_proba(X_IRIS), expected / expected.sum(axis=1, keepdims=True), rtol=1e-12
    )


def test_the_network_reads_and_writes_coefs_in_place():
    model = HandgradRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_SCALED[:, :3], X_IRIS[:, 3])
    first = model.coefs_[0]
    before = first.copy()
    model.partial_fit(X_SCALED[:, :3], X_IRIS[:, 3])
    assert model.coefs_[0] is first and not np.array_equal(first, before)  # trained in place
    model.coefs_[1] = np.zeros((4, 1))  # an assigned array is used from then on
    model.intercepts_[1] = np.array([2.5])
    np.testing.assert_array_equal(model.predict(X_SCALED[:5, :3]), np.full(5, 2.5))


@pytest.mark.parametrize("estimator", [HandgradClassifier, HandgradRegressor])
def test_float32_input_trains_in_float32_without_a_float64_copy(estimator):
    rng = np.random.RandomState(0)
    X = rng.standard_normal((20000, 50)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = estimator(hidden_layer_sizes=(8,), max_iter=1, batch_size=1000, random_state=0)
    tracemalloc.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 0.5 * X.nbytes  # a float64 copy of X alone would be 2 * X.nbytes
    assert {c.dtype for c in model.coefs_ + model.intercepts_} == {np.dtype(np.float32)}
    out = model.predict_proba(X[:3]) if estimator is HandgradClassifier else model.predict(X[:3])
    assert out.dtype == np.float32


def test_sparse_and_dense_input_train_the_same():
    sparse = pytest.importorskip("scipy.sparse")
    X = np.where(np.abs(X_SCALED) > 0.8, X_SCALED, 0.0)
    common = {"hidden_layer_sizes": (5,), "solver": "sgd", "max_iter": 5, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = HandgradClassifier(**common, batch_size=32).fit(X, Y_IRIS)
        csr = HandgradClassifier(**common, batch_size=32).fit(sparse.csr_matrix(X), Y_IRIS)
    np.testing.assert_allclose(csr.loss_curve_, dense.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(
        csr.predict_proba(sparse.csc_matrix(X)), dense.predict_proba(X), rtol=1e-11
    )


# --- partial_fit, warm_start, pickles ------------------------------------------------------


def test_partial_fit_continues_as_fit_does():
    common = {"hidden_layer_sizes": (6,), "shuffle": False, "tol": 0.0, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        whole = HandgradClassifier(**common, max_iter=4).fit(X_SCALED, Y_IRIS)
    steps = HandgradClassifier(**common)
    for _ in range(4):
        steps.partial_fit(X_SCALED, Y_IRIS, classes=[0, 1, 2])
    for a, b in zip(
        whole.coefs_ + whole.intercepts_, steps.coefs_ + steps.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)  # Adam's state carries over between calls


def test_a_pickled_model_goes_on_with_its_optimizer_state():
    model = HandgradRegressor(hidden_layer_sizes=(5,), random_state=0)
    for _ in range(3):
        model.partial_fit(X_SCALED[:, :3], X_IRIS[:, 3])
    twin = pickle.loads(pickle.dumps(model))
    for m in (model, twin):
        m.partial_fit(X_SCALED[:, :3], X_IRIS[:, 3])
    assert twin.loss_curve_ == model.loss_curve_
    for a, b in zip(model.coefs_, twin.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_warm_start_starts_from_the_last_weights():
    common = {"hidden_layer_sizes": (5,), "solver": "lbfgs", "max_iter": 5, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = HandgradClassifier(**common, warm_start=True).fit(X_SCALED, Y_IRIS)
        first_loss = warm.loss_
        warm.fit(X_SCALED, Y_IRIS)
        cold = HandgradClassifier(**common).fit(X_SCALED, Y_IRIS).fit(X_SCALED, Y_IRIS)
    assert warm.loss_ < first_loss == pytest.approx(cold.loss_)


# --- tol, n_iter_no_change, learning_rate, verbose ----------------------------------------


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("n_iter_no_change", [1, 4])
def test_training_stops_after_more_than_n_iter_no_change_epochs_without_gain(
    early_stopping, n_iter_no_change
):
    """With a tol no epoch can beat, the first epoch counts as the improvement (on -inf or
    inf) and training stops when the count of epochs without one exceeds n_iter_no_change."""
    model = HandgradClassifier(
        (5,),
        tol=1e9,
        n_iter_no_change=n_iter_no_change,
        early_stopping=early_stopping,
        max_iter=100,
        random_state=0,
    ).fit(X_SCALED, Y_IRIS)
    assert model.n_iter_ == n_iter_no_change + 2 == len(model.loss_curve_)
    if early_stopping:
        assert model.best_validation_score_ == max(model.validation_scores_)
        assert model.best_loss_ is None
    else:
        assert model.best_loss_ == min(model.loss_curve_) and model.validation_scores_ is None


def test_n_iter_no_change_inf_runs_every_epoch_and_warns():
    model = HandgradClassifier((5,), tol=1e9, n_iter_no_change=np.inf, max_iter=30, random_state=0)
    with pytest.warns(ConvergenceWarning, match=r"Maximum iterations \(30\) reached"):
        model.fit(X_SCALED, Y_IRIS)
    assert model.n_iter_ == 30


def test_early_stopping_keeps_the_weights_of_the_best_validation_score():
    model = HandgradClassifier(
        (20,),
        learning_rate_init=0.05,
        early_stopping=True,
        validation_fraction=0.3,
        n_iter_no_change=5,
        max_iter=200,
        random_state=3,
    ).fit(X_SCALED, Y_IRIS)
    assert model.n_iter_ < 200
    best = int(np.argmax(model.validation_scores_))  # the first of the best
    assert model.validation_scores_[-1] <= model.best_validation_score_
    twin = HandgradClassifier(
        (20,),
        learning_rate_init=0.05,
        early_stopping=True,
        validation_fraction=0.3,
        n_iter_no_change=np.inf,
        max_iter=best + 1,
        random_state=3,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        twin.fit(X_SCALED, Y_IRIS)  # the same run, stopped at the best epoch
    for a, b in zip(model.coefs_, twin.coefs_, strict=True):
        np.testing.assert_array_equal(a, b)


def test_invscaling_divides_the_rate_by_the_samples_seen():
    """Epoch 2 of invscaling is epoch 1 of a plain SGD run at lr / (n + 1) ** power_t."""
    common = {"hidden_layer_sizes": (4,), "solver": "sgd", "momentum": 0.0, "shuffle": False}
    common.update(random_state=0, tol=0.0)
    n, lr, power = len(Y_IRIS), 0.1, 0.3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scaled = HandgradClassifier(
            **common, learning_rate="invscaling", learning_rate_init=lr, power_t=power, max_iter=2
        ).fit(X_SCALED, Y_IRIS)
        plain = HandgradClassifier(**common, learning_rate_init=lr, max_iter=1, warm_start=True)
        plain.fit(X_SCALED, Y_IRIS)
        plain.set_params(learning_rate_init=lr / (n + 1) ** power).fit(X_SCALED, Y_IRIS)
    for a, b in zip(scaled.coefs_, plain.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_adaptive_divides_the_rate_by_five_until_it_is_too_small(capsys):
    model = HandgradClassifier(
        (3,), solver="sgd", learning_rate="adaptive", tol=0.5, max_iter=3000, verbose=True
    ).fit([[3, 2], [1, 6]], [1, 0])
    out = capsys.readouterr().out
    rates = [float(r) for r in re.findall(r"Setting learning rate to ([0-9.]+)", out)]
    np.testing.assert_allclose(rates, [0.001 / 5**k for k in range(1, len(rates) + 1)], atol=1e-6)
    # 0.001 / 5**5 = 3.2e-7 is the first rate at or below 1e-6: then it stops
    assert len(rates) == 5 and "Learning rate too small. Stopping." in out
    assert model.n_iter_ < 3000


def test_verbose_prints_each_epoch_and_validation_score(capsys):
    HandgradRegressor(
        hidden_layer_sizes=(3,), max_iter=3, early_stopping=True, verbose=1, n_iter_no_change=9
    ).fit(X_SCALED[:, :3], X_IRIS[:, 3])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[::2]] == [f"Iteration {i}" for i in (1, 2, 3)]
    assert all(line.startswith("Validation score: ") for line in lines[1::2])


# --- everyday use -------------------------------------------------------------------------


def test_pipeline_cross_validation_and_grid_search():
    pipeline = make_pipeline(StandardScaler(), HandgradClassifier(**IRIS, random_state=0))
    assert cross_val_score(pipeline, X_IRIS, Y_IRIS, cv=3).min() >= 0.8
    grid = {"hidden_layer_sizes": [(5,), (10,)], "alpha": [1e-4, 1.0]}
    search = GridSearchCV(HandgradClassifier(**IRIS, random_state=0), grid, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X_SCALED, Y_IRIS)
    assert len(search.cv_results_["params"]) == 4 and search.best_score_ >= 0.8


def test_string_labels_and_probability_columns():
    names = np.array(["virginica", "setosa", "versicolor"])  # not in sorted order
    labels = names[Y_IRIS]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = HandgradClassifier(**IRIS, random_state=0).fit(X_SCALED, labels)
    np.testing.assert_array_equal(model.classes_, np.sort(names))
    proba = model.predict_proba(X_SCALED)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X_SCALED))
    assert np.mean(model.predict(X_SCALED) == labels) >= 0.9


def test_torch_backend_matches_numpy():
    pytest.importorskip("torch")
    options = {"hidden_layer_sizes": (8,), "max_iter": 10, "batch_size": 50, "random_state": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = HandgradClassifier(**options).fit(X_SCALED, Y_IRIS)
        theirs = HandgradClassifier(**options, backend="torch").fit(X_SCALED, Y_IRIS)
    np.testing.assert_allclose(theirs.loss_curve_, ours.loss_curve_, rtol=1e-12)
    for a, b in zip(theirs.coefs_, ours.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10)
    np.testing.assert_allclose(
        theirs.predict_proba(X_SCALED), ours.predict_proba(X_SCALED), rtol=1e-10
    )


def test_get_and_set_params():
    model = HandgradClassifier(hidden_layer_sizes=(7, 3), alpha=0.5)
    params = model.get_params()
    assert (params["hidden_layer_sizes"], params["alpha"], params["solver"]) == (
        (7, 3),
        0.5,
        "adam",
    )
    assert params["backend"] == "numpy" and params["dtype"] is None
    assert clone(model.set_params(solver="lbfgs")).get_params() == model.get_params()
    assert HandgradRegressor().get_params()["loss"] == "squared_error"


def test_lbfgs_has_no_partial_fit_and_partial_fit_needs_classes():
    assert not hasattr(HandgradClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(HandgradRegressor(solver="lbfgs"), "partial_fit")
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        HandgradClassifier().partial_fit(X_SCALED, Y_IRIS)


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("hidden_layer_sizes", (10, 0), "sequence of ints >= 1"),
        ("hidden_layer_sizes", "10", "sequence of ints >= 1"),
        ("activation", "softplus", "'identity', 'logistic', 'tanh', 'relu'"),
        ("solver", "newton", "'lbfgs', 'sgd', 'adam'"),
        ("alpha", -1.0, ">= 0"),
        ("batch_size", 0, "'auto' or a positive integer"),
        ("learning_rate", "cosine", "'constant', 'invscaling', 'adaptive'"),
        ("learning_rate_init", 0.0, "greater than 0"),
        ("power_t", -0.5, ">= 0"),
        ("max_iter", 10.0, "a positive integer"),
        ("random_state", -1, r"an int in \[0, 2\*\*32 - 1\]"),
        ("tol", -1e-4, ">= 0"),
        ("verbose", -1, "True, False or an int >= 0"),
        ("warm_start", "yes", "True or False"),
        ("validation_fraction", 1.0, r"in \(0, 1\)"),
        ("n_iter_no_change", 0, "numpy.inf"),
        ("momentum", 1.0, r"\[0, 1\)"),
        ("epsilon", 0.0, "greater than 0"),
        ("max_fun", 0, "a positive integer"),
        ("backend", "jax", "'numpy'"),
        ("dtype", "float16", "'float64'"),
    ],
)
def test_bad_hyperparameters_are_named(name, value, allowed):
    for estimator in (HandgradClassifier, HandgradRegressor):
        model = estimator(**{name: value})  # storing never fails
        with pytest.raises(ValueError, match=rf"{estimator.__name__}'s {name} must be .*{allowed}"):
            model.fit(X_SCALED, Y_IRIS)
        assert not hasattr(model, "coefs_")
    with pytest.raises(ValueError, match="HandgradRegressor's loss must be one of 'squared_error'"):
        HandgradRegressor(loss="huber").fit(X_SCALED, Y_IRIS)
