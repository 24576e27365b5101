import re

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from handgrad.app.trainer import TrainConfig, train_classifier
from handgrad.sklearn import HandgradClassifier
from handgrad.training.optim import SGD, Adam, make_optimizer

# A learning rate of 0.01 (not MLPClassifier's 0.001) so that 50 epochs reach the
# accuracy check_classifiers_train asks for (> 0.83 on blobs); MLPClassifier needs the same.
SMALL = {"hidden_layer_sizes": (10,), "max_iter": 50, "learning_rate_init": 0.01}
# Iris has one batch per epoch: 50 steps at 0.03 fit it to about 97%.
IRIS = {"hidden_layer_sizes": (10,), "max_iter": 50, "learning_rate_init": 0.03}


@pytest.fixture(scope="module")
def iris():
    X, y = load_iris(return_X_y=True)
    return X, y


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


@parametrize_with_checks(
    [
        HandgradClassifier(**SMALL, random_state=0),
        HandgradClassifier(
            **SMALL, solver="sgd", activation="logistic", dtype="float32", random_state=0
        ),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def test_pipeline_and_cross_val_score(iris):
    X, y = iris
    pipeline = make_pipeline(StandardScaler(), HandgradClassifier(**IRIS, random_state=0))
    scores = cross_val_score(pipeline, X, y, cv=3)
    assert scores.shape == (3,)
    assert scores.min() >= 0.8


def test_grid_search(iris):
    X, y = iris
    grid = {"hidden_layer_sizes": [(5,), (10,)], "alpha": [1e-4, 1.0]}
    search = GridSearchCV(HandgradClassifier(**IRIS, random_state=0), grid, cv=3).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["hidden_layer_sizes"] in grid["hidden_layer_sizes"]
    assert search.best_params_["alpha"] in grid["alpha"]
    assert search.best_score_ >= 0.8
    assert search.best_estimator_.score(X, y) >= 0.8


def test_string_labels_round_trip(iris):
    X, y = iris
    names = np.array(["virginica", "setosa", "versicolor"])  # not in sorted order
    labels = names[y]
    model = HandgradClassifier(**IRIS, random_state=0).fit(X, labels)
    np.testing.assert_array_equal(model.classes_, np.sort(names))
    predicted = model.predict(X)
    assert predicted.dtype == labels.dtype
    assert set(predicted) <= set(names)
    assert np.mean(predicted == labels) >= 0.9
    assert model.classifier_.class_names == tuple(np.sort(names))


def test_predict_proba_columns_follow_classes(iris):
    X, y = iris
    labels = np.array([20, 10, 30])[y]  # class c is column [1, 0, 2][c] in sorted order
    model = HandgradClassifier(**IRIS, random_state=0).fit(X, labels)
    proba = model.predict_proba(X)
    assert proba.shape == (150, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(model.classes_[proba.argmax(axis=1)], model.predict(X))
    for label, column in ((10, 0), (20, 1), (30, 2)):
        assert proba[labels == label].mean(axis=0).argmax() == column
    np.testing.assert_allclose(model.predict_log_proba(X), np.log(proba), rtol=1e-12)


def test_same_random_state_same_model(iris):
    X, y = iris
    first = HandgradClassifier(**IRIS, random_state=3).fit(X, y)
    second = HandgradClassifier(**IRIS, random_state=3).fit(X, y)
    other = HandgradClassifier(**IRIS, random_state=4).fit(X, y)
    assert first.loss_curve_ == second.loss_curve_
    np.testing.assert_array_equal(first.predict_proba(X), second.predict_proba(X))
    assert first.loss_curve_ != other.loss_curve_
    # a fresh RandomState with one seed gives one model too
    third = HandgradClassifier(**IRIS, random_state=np.random.RandomState(3)).fit(X, y)
    fourth = HandgradClassifier(**IRIS, random_state=np.random.RandomState(3)).fit(X, y)
    assert third.loss_curve_ == fourth.loss_curve_


@pytest.mark.parametrize(
    ("solver", "optimizer", "lr"), [("adam", "adam", 0.001), ("sgd", "momentum", 0.01)]
)
def test_trains_as_train_classifier_does(iris, solver, optimizer, lr):
    """The estimator is train_classifier with sklearn's names: same seed, same weights."""
    X, y = iris
    model = HandgradClassifier(
        (8,), "tanh", solver=solver, learning_rate_init=lr, max_iter=15, random_state=5
    ).fit(X, y)
    config = TrainConfig(
        hidden=(8,),
        activation="tanh",
        optimizer=optimizer,
        lr=lr,
        epochs=15,
        batch_size=150,  # "auto" = min(200, n_samples)
        alpha=1e-4,
        seed=5,
    )
    classifier, history = train_classifier(X, y, ["0", "1", "2"], config=config)
    assert model.loss_curve_ == history.train_loss
    np.testing.assert_array_equal(model.predict_proba(X), classifier.predict_proba(X))


@pytest.mark.parametrize("n_iter_no_change", [5, np.inf])
def test_early_stopping_keeps_best_weights(cancer, n_iter_no_change):
    X, y = cancer
    model = HandgradClassifier(
        (50,),
        learning_rate_init=0.01,
        max_iter=60,
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=n_iter_no_change,
        random_state=0,
    ).fit(X, y)
    history = model.history_
    assert len(model.validation_scores_) == len(model.loss_curve_) == model.n_iter_
    assert model.validation_scores_ == history.val_accuracy
    assert model.best_validation_score_ == history.val_accuracy[history.best_epoch - 1]
    assert model.best_loss_ is None
    if n_iter_no_change == np.inf:
        assert model.n_iter_ == 60
    else:
        assert history.stopped_early
        assert model.n_iter_ == history.best_epoch + n_iter_no_change
    # the split fit makes: stratified, random_state drawn from RandomState(0)
    _, X_val, _, y_val = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=np.random.RandomState(0)
    )
    proba = model.predict_proba(X_val)
    val_loss = -np.mean(np.log(proba[np.arange(len(y_val)), y_val]))
    assert history.best_epoch < len(history.val_loss)  # the last epoch was not the best
    np.testing.assert_allclose(val_loss, min(history.val_loss), rtol=1e-10)
    np.testing.assert_allclose(model.score(X_val, y_val), model.best_validation_score_)


def test_tol_is_the_improvement_early_stopping_needs(cancer):
    X, y = cancer
    common = {"max_iter": 30, "early_stopping": True, "n_iter_no_change": 3, "random_state": 0}
    strict = HandgradClassifier((10,), tol=1.0, **common).fit(X, y)
    # no epoch lowers the validation loss by 1.0, so the first stays best and 3 more run
    assert strict.history_.best_epoch == 1
    assert strict.n_iter_ == 4


def test_without_early_stopping_all_epochs_run(iris):
    X, y = iris
    model = HandgradClassifier(**IRIS, random_state=0).fit(X, y)
    assert model.n_iter_ == len(model.loss_curve_) == 50
    assert model.validation_scores_ is None
    assert model.best_validation_score_ is None
    assert model.loss_ == model.loss_curve_[-1]
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.loss_curve_[-1] < model.loss_curve_[0]
    assert model.n_features_in_ == 4
    assert not hasattr(model, "feature_names_in_")


def test_feature_names_from_a_dataframe(iris):
    pd = pytest.importorskip("pandas")
    X, y = iris
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    model = HandgradClassifier(**IRIS, random_state=0).fit(frame, y)
    np.testing.assert_array_equal(model.feature_names_in_, ["a", "b", "c", "d"])
    assert model.classifier_.feature_names == ("a", "b", "c", "d")


def test_batch_size_larger_than_data_is_clipped(iris):
    X, y = iris
    with pytest.warns(UserWarning, match="batch_size=500 is larger than the 150"):
        big = HandgradClassifier(**{**IRIS, "batch_size": 500}, random_state=0).fit(X, y)
    auto = HandgradClassifier(**IRIS, random_state=0).fit(X, y)  # "auto": min(200, 150)
    assert big.loss_curve_ == auto.loss_curve_
    small = HandgradClassifier(**{**IRIS, "batch_size": 16}, random_state=0).fit(X, y)
    assert small.loss_curve_ != auto.loss_curve_


def test_get_and_set_params():
    model = HandgradClassifier(hidden_layer_sizes=(7, 3), alpha=0.5)
    params = model.get_params()
    assert params["hidden_layer_sizes"] == (7, 3)
    assert params["alpha"] == 0.5
    assert params["solver"] == "adam"
    assert params["backend"] == "numpy"
    assert params["batch_size"] == "auto"
    assert model.set_params(alpha=2.0, solver="sgd") is model
    assert (model.alpha, model.solver) == (2.0, "sgd")
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    with pytest.raises(ValueError, match="Invalid parameter 'hidden'"):
        model.set_params(hidden=(3,))


def test_torch_backend_matches_numpy(iris):
    pytest.importorskip("torch")
    X, y = iris
    options = {"hidden_layer_sizes": (8,), "max_iter": 10, "batch_size": 50, "random_state": 0}
    ours = HandgradClassifier(**options).fit(X, y)
    theirs = HandgradClassifier(**options, backend="torch").fit(X, y)
    np.testing.assert_allclose(theirs.loss_curve_, ours.loss_curve_, rtol=1e-12)
    np.testing.assert_allclose(theirs.predict_proba(X), ours.predict_proba(X), rtol=1e-10)
    np.testing.assert_array_equal(theirs.predict(X), ours.predict(X))


def test_breast_cancer_accuracy(cancer):
    X, y = cancer
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )
    model = HandgradClassifier(hidden_layer_sizes=(20,), max_iter=200, random_state=0)
    assert model.fit(X_train, y_train).score(X_test, y_test) >= 0.95


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("hidden_layer_sizes", (10, 0), "sequence of ints >= 1"),
        ("hidden_layer_sizes", "10", "sequence of ints >= 1"),
        ("hidden_layer_sizes", 2.5, "sequence of ints >= 1"),
        ("activation", "identity", "no 'identity'"),
        ("activation", "softplus", "'logistic'"),
        ("solver", "lbfgs", "no 'lbfgs'"),
        ("alpha", -1.0, ">= 0"),
        ("alpha", np.nan, ">= 0"),
        ("batch_size", 0, "'auto' or a positive integer"),
        ("batch_size", "big", "'auto' or a positive integer"),
        ("learning_rate_init", 0.0, "greater than 0"),
        ("max_iter", 0, "a positive integer"),
        ("max_iter", 10.0, "a positive integer"),
        ("shuffle", "no", "True or False"),
        ("random_state", -1, r"an int in \[0, 2\*\*32 - 1\]"),
        ("random_state", "seed", "numpy.random.RandomState"),
        ("tol", -1e-4, ">= 0"),
        ("early_stopping", "yes", "True or False"),
        ("validation_fraction", 1.0, r"in \(0, 1\)"),
        ("n_iter_no_change", 0, "numpy.inf"),
        ("momentum", 1.0, r"\[0, 1\)"),
        ("nesterovs_momentum", 1, "True or False"),
        ("beta_1", -0.1, r"\[0, 1\)"),
        ("beta_2", 1.0, r"\[0, 1\)"),
        ("epsilon", 0.0, "greater than 0"),
        ("backend", "jax", "'numpy'"),
        ("dtype", "float16", "'float64'"),
    ],
)
def test_bad_hyperparameters_are_named(iris, name, value, allowed):
    X, y = iris
    model = HandgradClassifier(**{name: value})  # storing never fails
    with pytest.raises(ValueError, match=rf"HandgradClassifier's {name} must be .*{allowed}"):
        model.fit(X, y)
    with pytest.raises(ValueError, match=re.escape(f"got {value!r}")):
        model.fit(X, y)
    assert not hasattr(model, "classes_")


def test_early_stopping_on_too_little_data():
    X = np.arange(20.0).reshape(10, 2)
    y = np.repeat([0, 1], 5)
    with pytest.raises(ValueError, match=r"validation_fraction=0\.1 of 10 samples"):
        HandgradClassifier(early_stopping=True).fit(X, y)


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("sgd", {}, {"momentum": 0.0, "nesterov": False}),
        ("sgd", {"momentum": 0.5, "nesterov": True}, {"momentum": 0.5, "nesterov": True}),
        ("momentum", {}, {"momentum": 0.9, "nesterov": True}),
        ("momentum", {"nesterov": False}, {"momentum": 0.9, "nesterov": False}),
        ("adam", {"betas": (0.8, 0.9), "eps": 1e-6}, {"betas": (0.8, 0.9), "eps": 1e-6}),
    ],
)
def test_make_optimizer_options(name, options, expected):
    optimizer = make_optimizer(name, {"w": np.zeros(3)}, 0.1, **options)
    assert isinstance(optimizer, Adam if name == "adam" else SGD)
    assert optimizer.lr == 0.1
    assert {key: getattr(optimizer, key) for key in expected} == expected


def test_make_optimizer_refuses_options_of_another_optimizer():
    with pytest.raises(TypeError, match="'adam' takes the options betas, eps, weight_decay"):
        make_optimizer("adam", {"w": np.zeros(3)}, momentum=0.9)


def test_shuffle_false_is_passed_to_the_fit_loop():
    X, y = load_iris(return_X_y=True)
    ordered = HandgradClassifier((5,), max_iter=3, shuffle=False, random_state=0).fit(X, y)
    shuffled = HandgradClassifier((5,), max_iter=3, random_state=0).fit(X, y)
    assert shuffled.loss_curve_ != ordered.loss_curve_
