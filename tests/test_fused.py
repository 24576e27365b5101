"""The compiled training path (handgrad.training.fused): the weights, history and optimizer
state of the reference path on every supported combination of activation, optimizer and
loss (float64 to 1e-12, float32 to its precision), at every depth, through fit's
checkpoints, divergence stop and gradient check, and through the scikit-learn estimators;
and the reference path wherever it is not supported, or turned off."""

import itertools

import numpy as np
import pytest
from helpers import rel_err

import handgrad as hg
from handgrad.app.perceptron import _Scaled
from handgrad.core.errors import TrainingDivergedError, TrainingInterruptedError
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import ELU, GELU, LeakyReLU, Linear, ReLU, Sigmoid, SiLU, Softplus, Tanh
from handgrad.training import fused
from handgrad.training.fit import fit
from handgrad.training.optim import SGD, Adam, AdamW, RMSprop
from handgrad.training.step import Step

pytest.importorskip("numba")

ACTIVATIONS = {
    "identity": None,
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": lambda: LeakyReLU(0.1),
    "elu": lambda: ELU(0.7),
    "gelu": GELU,
    "gelu_tanh": lambda: GELU("tanh"),
    "silu": SiLU,
    "softplus": lambda: Softplus(beta=2.0, threshold=1.0),  # both branches are taken
}
OPTIMIZERS = {
    "sgd": lambda p: SGD(p, lr=0.03),
    "sgd_decay": lambda p: SGD(p, lr=0.03, weight_decay=0.01),
    "momentum": lambda p: SGD(p, lr=0.01, momentum=0.9),
    "nesterov_decay": lambda p: SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: Adam(p, lr=0.02),
    "adam_decay": lambda p: Adam(p, lr=0.02, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01),
    "adamw": lambda p: AdamW(p, lr=0.02, weight_decay=0.1),
    "adamw_all": lambda p: AdamW(p, lr=0.02, weight_decay=0.1, decay="all"),
}
ROWS, OUTPUTS = 10, 3


def _data(kind, dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, 5)).astype(dtype)
    labels = rng.integers(0, OUTPUTS, ROWS)
    if kind == "labels":
        return X, labels
    if kind == "probabilities":
        p = rng.uniform(0.1, 1, (ROWS, OUTPUTS))
        return X, (p / p.sum(1, keepdims=True)).astype(dtype)
    if kind == "binary":
        return X, (rng.uniform(size=(ROWS, OUTPUTS)) > 0.5).astype(dtype)
    return X, rng.standard_normal((ROWS, OUTPUTS)).astype(dtype)


WEIGHTS = np.linspace(0.2, 2.0, ROWS)
LOSSES = {  # the loss, its data, alpha (L2) and sample weights
    "cross_entropy": (hg.CrossEntropyLoss, "labels", 0.0, None),
    "cross_entropy_l2_weighted": (hg.CrossEntropyLoss, "labels", 0.05, WEIGHTS),
    "cross_entropy_probabilities_sum": (
        lambda: hg.CrossEntropyLoss(reduction="sum"),
        "probabilities",
        0.0,
        None,
    ),
    "mse": (hg.MSELoss, "targets", 0.0, None),
    "mse_sum_l2_weighted": (lambda: hg.MSELoss(reduction="sum"), "targets", 0.02, WEIGHTS),
    "bce": (hg.BCEWithLogitsLoss, "binary", 0.0, None),
    "bce_scaled_l2_weighted": (
        lambda: _Scaled(hg.BCEWithLogitsLoss(), 3.0),
        "binary",
        0.05,
        WEIGHTS,
    ),
    "mse_half_scaled": (lambda: _Scaled(hg.MSELoss(), 1.5), "targets", 0.0, None),
}


def _model(sizes, activation, dtype):
    layers = []
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        if i and ACTIVATIONS[activation] is not None:
            layers.append(ACTIVATIONS[activation]())
        layers.append(Linear(n_in, n_out, rng=i, dtype=dtype))
    model = Sequential(*layers)
    for layer in layers[::2]:  # non-zero biases, so that their updates show
        layer.params["bias"][...] = np.linspace(-0.3, 0.3, layer.out_features)
    return model


def _train(compiled, sizes, activation, optimizer, loss, dtype="float64", epochs=2, **options):
    make_loss, kind, alpha, weights = LOSSES[loss]
    X, y = _data(kind, dtype)
    model = _model(sizes, activation, dtype)
    opt = OPTIMIZERS[optimizer](model.params)
    history = fit(
        model, make_loss(), opt, X, y, epochs=epochs, batch_size=4, alpha=alpha, rng=0,
        sample_weight=weights, compiled=compiled, **options,
    )  # fmt: skip
    return model, opt, history


def _assert_same(reference, compiled, tolerance):
    (model, opt, history), (model2, opt2, history2) = reference, compiled
    for name, p in model.params.items():
        assert rel_err(model2.params[name], p) < tolerance, name
    state, state2 = opt.state_dict(), opt2.state_dict()
    assert sorted(state) == sorted(state2) and state["step"] == state2["step"]
    for key in state:
        if key != "step":
            assert rel_err(state2[key], state[key]) < tolerance, key
    np.testing.assert_allclose(history2.train_loss, history.train_loss, rtol=tolerance)
    np.testing.assert_array_equal(history2.train_accuracy, history.train_accuracy)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_combination_trains_to_the_reference_weights_in_float64(activation, optimizer, loss):
    sizes = [5, 7, 6, OUTPUTS]  # two hidden layers; batches of 4, 4 and 2 rows
    reference = _train(False, sizes, activation, optimizer, loss)
    _assert_same(reference, _train(True, sizes, activation, optimizer, loss), 1e-12)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_trains_to_the_reference_weights_to_float32_precision(activation, optimizer):
    args = ([5, 7, 6, OUTPUTS], activation, optimizer, "cross_entropy_l2_weighted", "float32")
    reference, compiled = _train(False, *args), _train(True, *args)
    assert all(p.dtype == np.float32 for p in compiled[0].params.values())
    _assert_same(reference, compiled, 1e-5)


@pytest.mark.parametrize("sizes", [[5, OUTPUTS], [5, 8, OUTPUTS], [5, 4, 9, 6, OUTPUTS]])
@pytest.mark.parametrize("loss", ["cross_entropy_l2_weighted", "mse", "bce"])
def test_every_depth_trains_to_the_reference_weights(sizes, loss):
    reference = _train(False, sizes, "tanh", "nesterov_decay", loss, epochs=3)
    _assert_same(reference, _train(True, sizes, "tanh", "nesterov_decay", loss, epochs=3), 1e-12)


def test_the_last_steps_gradients_are_left_in_the_layers():
    reference = _train(False, [5, 7, OUTPUTS], "sigmoid", "adam", "cross_entropy_l2_weighted")
    compiled = _train(True, [5, 7, OUTPUTS], "sigmoid", "adam", "cross_entropy_l2_weighted")
    for name, g in reference[0].grads.items():
        assert rel_err(compiled[0].grads[name], g) < 1e-12, name


def _step_and_model(model=None, loss=None, optimizer=None, X=None, y=None):
    X0, y0 = _data("labels", "float64")
    model = model if model is not None else _model([5, 4, OUTPUTS], "relu", "float64")
    loss = loss if loss is not None else hg.CrossEntropyLoss()
    optimizer = optimizer if optimizer is not None else SGD(model.params, lr=0.1)
    X = X0 if X is None else X
    y = y0 if y is None else y
    order = list(range(len(model.params)))
    return Step(model, loss, optimizer, X, y, 0.0, None, order), model, loss, optimizer, order


def _tied():
    model = _model([5, 5, 5], "tanh", "float64")
    model.layers[2].params["weight"] = model.layers[0].params["weight"]
    return model


UNSUPPORTED = {
    "an optimizer it lacks": (lambda m: {"optimizer": RMSprop(m.params)}, "RMSprop"),
    "a layer it lacks": (
        lambda m: {"model": Sequential(Linear(5, 4), hg.Dropout(0.5), Linear(4, OUTPUTS))},
        "Dropout",
    ),
    "a Linear without bias": (
        lambda m: {"model": Sequential(Linear(5, OUTPUTS, bias=False))},
        "no bias",
    ),
    "an activation at the end": (
        lambda m: {"model": Sequential(Linear(5, OUTPUTS), hg.Tanh())},
        "does not end with a Linear",
    ),
    "a loss it lacks": (lambda m: {"loss": hg.NLLLoss()}, "NLLLoss"),
    "BCE with pos_weight": (
        lambda m: {
            "loss": hg.BCEWithLogitsLoss(pos_weight=np.ones(OUTPUTS)),
            "y": _data("binary", "float64")[1],
        },
        "pos_weight",
    ),
    "a user's subclass of an activation": (
        lambda m: {"model": Sequential(Linear(5, 4), type("MyTanh", (Tanh,), {})(), Linear(4, 3))},
        "MyTanh",
    ),
    "tied weights": (lambda m: {"model": _tied(), "y": np.arange(ROWS) % 5}, "model's parameters"),
    "a sparse X": (
        lambda m: {
            "X": __import__("scipy.sparse").sparse.csr_matrix(_data("labels", "float64")[0])
        },
        "dense NumPy",
    ),
}


@pytest.mark.parametrize("case", UNSUPPORTED)
def test_unsupported_training_falls_back_and_says_why(case):
    make, reason = UNSUPPORTED[case]
    args = make(_model([5, 4, OUTPUTS], "relu", "float64"))
    step, model, loss, optimizer, order = _step_and_model(**args)
    assert reason in fused.unsupported(step, model, loss, optimizer, order)
    assert fused.compiled_steps(step, model, loss, optimizer, order, None) is None
    with pytest.raises(ValueError, match=f"compiled=True, but .*{reason}"):
        fused.compiled_steps(step, model, loss, optimizer, order, True)


def test_a_patched_layer_method_is_called_not_compiled_around():
    model = _model([5, 4, OUTPUTS], "relu", "float64")
    seen = []
    original = model.layers[0].forward_unchecked
    model.layers[0].forward_unchecked = lambda x: seen.append(x.shape[0]) or original(x)
    X, y = _data("labels", "float64")
    fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=1, batch_size=4)
    assert seen == [1, 4, 4, 2]


def test_the_torch_backend_falls_back():
    torch = pytest.importorskip("torch")
    model = hg.mlp([5, 4, OUTPUTS], rng=0, backend="torch")
    X, y = _data("labels", "float64")
    with pytest.raises(ValueError, match="dense NumPy array"):
        fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=1, compiled=True)
    history = fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=1)
    assert isinstance(model.params["0.weight"], torch.Tensor) and len(history.epoch) == 1


def test_turned_off_by_the_environment_or_missing_numba(monkeypatch):
    step, model, loss, optimizer, order = _step_and_model()
    assert fused.compiled_steps(step, model, loss, optimizer, order, None) is not None
    monkeypatch.setenv("HANDGRAD_COMPILED", "0")
    assert fused.compiled_steps(step, model, loss, optimizer, order, None) is None
    assert fused.compiled_steps(step, model, loss, optimizer, order, True) is not None
    monkeypatch.delenv("HANDGRAD_COMPILED")
    monkeypatch.setattr(fused, "_kernels", lambda: None)
    assert fused.compiled_steps(step, model, loss, optimizer, order, None) is None
    with pytest.raises(ValueError, match="numba is not installed"):
        fused.compiled_steps(step, model, loss, optimizer, order, True)


def test_interrupted_and_resumed_compiled_training_ends_as_one_run():
    from handgrad.training.history import Progress

    straight = _train(False, [5, 7, OUTPUTS], "tanh", "adam", "cross_entropy_l2_weighted", epochs=3)
    saved = []
    make_loss, kind, alpha, weights = LOSSES["cross_entropy_l2_weighted"]
    X, y = _data(kind, "float64")
    model = _model([5, 7, OUTPUTS], "tanh", "float64")
    opt = OPTIMIZERS["adam"](model.params)
    options = {"epochs": 3, "batch_size": 4, "alpha": alpha, "sample_weight": weights}
    calls = iter(range(100))
    with pytest.raises(TrainingInterruptedError) as raised:
        fit(
            model, make_loss(), opt, X, y, rng=0, compiled=True, checkpoint=saved.append,
            interrupted=lambda: next(calls) == 4, **options,
        )  # fmt: skip
    assert raised.value.step == 5 and saved[0].position == 2  # epoch 2, after its 2nd batch
    progress = saved[0]
    assert isinstance(progress, Progress)
    history = fit(model, make_loss(), opt, X, y, rng=0, compiled=True, start=progress, **options)
    _assert_same(straight, (model, opt, history), 1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflow it is about
def test_divergence_stops_at_the_same_step():
    X, y = _data("labels", "float64")
    steps = []
    for compiled in (False, True):
        model = _model([5, 7, OUTPUTS], "relu", "float64")
        with pytest.raises(TrainingDivergedError) as raised:
            fit(
                model, hg.CrossEntropyLoss(), SGD(model.params, lr=1e200), X * 1e100, y,
                epochs=5, batch_size=4, rng=0, compiled=compiled,
            )  # fmt: skip
        steps.append((raised.value.epoch, raised.value.step))
    assert steps[0] == steps[1]


def test_a_gradient_check_runs_before_the_compiled_steps():
    _, _, history = _train(True, [5, 7, OUTPUTS], "tanh", "sgd", "mse", check=True)
    assert history.gradient_check is not None and history.gradient_check.passed


def test_parallel_workers_refuse_compiled_true():
    X, y = _data("labels", "float64")
    model = _model([5, 4, OUTPUTS], "relu", "float64")
    with pytest.raises(ValueError, match="parallel workers"):
        fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, parallel=object(), compiled=True)


ESTIMATORS = [
    ("classifier", {"solver": "sgd", "activation": "logistic"}, "binary"),
    ("classifier", {"solver": "adam", "alpha": 0.01}, "multiclass"),
    (
        "classifier",
        {"solver": "sgd", "activation": "identity", "nesterovs_momentum": False},
        "multilabel",
    ),
    ("regressor", {"solver": "adam", "activation": "tanh"}, "targets"),
    ("regressor", {"solver": "sgd", "learning_rate": "invscaling"}, "target"),
]


@pytest.mark.parametrize(("kind", "options", "task"), ESTIMATORS)
def test_the_estimators_train_to_the_reference_weights(monkeypatch, kind, options, task):
    from handgrad.sklearn import HandgradClassifier, HandgradRegressor

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 4))
    y = {
        "binary": (X[:, 0] > 0).astype(int),
        "multiclass": rng.integers(0, 3, 60),
        "multilabel": (X[:, :2] > 0).astype(int),
        "targets": X[:, :2] @ [[1.0, 0.5], [-0.5, 2.0]],
        "target": X @ [1.0, -1.0, 0.5, 0.2],
    }[task]
    estimators = []
    for setting in ("0", "1"):
        monkeypatch.setenv("HANDGRAD_COMPILED", setting)
        kind_ = HandgradClassifier if kind == "classifier" else HandgradRegressor
        estimator = kind_(hidden_layer_sizes=(6,), max_iter=4, batch_size=16, random_state=0)
        with pytest.warns(Warning):  # no convergence in 4 epochs
            estimator.set_params(**options).fit(X, y, sample_weight=np.linspace(0.5, 2, 60))
        estimators.append(estimator)
    reference, compiled = estimators
    for a, b in zip(
        reference.coefs_ + reference.intercepts_,
        compiled.coefs_ + compiled.intercepts_,
        strict=True,
    ):
        assert rel_err(b, a) < 1e-12
    np.testing.assert_allclose(compiled.loss_curve_, reference.loss_curve_, rtol=1e-12)
