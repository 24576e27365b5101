import math
import sys

import numpy as np
import pytest
from helpers import Square

import handgrad as hg
from handgrad.core.errors import TrainingDivergedError
from handgrad.training.fit import evaluate, fit
from handgrad.training.history import History
from handgrad.training.optim import SGD, Adam
from handgrad.training.schedules import make_schedule


def _blobs(rng, n=120, classes=3, features=4):
    centers = rng.standard_normal((classes, features)) * 3
    y = rng.integers(0, classes, n)
    return centers[y] + rng.standard_normal((n, features)), y


def test_fit_learns_separable_blobs_and_records_history():
    rng = np.random.default_rng(0)
    X, y = _blobs(rng)
    model = hg.mlp([4, 8, 3], "tanh", rng=1)
    history = fit(
        model,
        hg.CrossEntropyLoss(),
        Adam(model.params, 0.05),
        X,
        y,
        epochs=30,
        batch_size=16,
        validation=(X[:30], y[:30]),
        rng=2,
    )
    assert history.epoch == list(range(1, 31))
    assert len(history.train_loss) == len(history.val_accuracy) == 30
    assert history.train_loss[-1] < history.train_loss[0] / 3
    assert history.train_accuracy[-1] > 0.95 and history.val_accuracy[-1] > 0.95
    loss, accuracy = evaluate(model, hg.CrossEntropyLoss(), X[:30], y[:30])
    assert loss == pytest.approx(history.val_loss[-1]) and accuracy == history.val_accuracy[-1]


def test_an_epoch_is_the_mean_of_its_batches_and_visits_every_example_once():
    rng = np.random.default_rng(1)
    X, y = _blobs(rng, n=10)
    model = hg.mlp([4, 3], rng=0)
    seen = []
    original = model.layers[0].forward_unchecked

    def spy(x):
        seen.append(x.shape[0])
        return original(x)

    model.layers[0].forward_unchecked = spy
    fit(model, hg.CrossEntropyLoss(), SGD(model.params, 1e-9), X, y, epochs=1, batch_size=4)
    assert seen == [1, 4, 4, 2]  # one row first: fit checks that the model takes the data


def test_same_seed_same_weights_and_history_bit_for_bit():
    rng = np.random.default_rng(2)
    X, y = _blobs(rng)
    runs = []
    for _ in range(2):
        model = hg.mlp([4, 6, 3], rng=5)
        h = fit(
            model,
            hg.CrossEntropyLoss(),
            Adam(model.params, 0.01),
            X,
            y,
            epochs=5,
            rng=7,
            validation=(X, y),
            alpha=1e-3,
        )
        runs.append((model.state_dict(), h.as_dict()))
    assert runs[0][1] == runs[1][1]
    for k in runs[0][0]:
        np.testing.assert_array_equal(runs[0][0][k], runs[1][0][k])


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(3)
    X, y = _blobs(rng, n=60)
    X_val, y_val = _blobs(np.random.default_rng(99), n=40)  # other centres: gets worse
    model = hg.mlp([4, 16, 3], rng=0)
    history = fit(
        model,
        hg.CrossEntropyLoss(),
        Adam(model.params, 0.05),
        X,
        y,
        epochs=200,
        validation=(X_val, y_val),
        patience=5,
        rng=0,
    )
    assert history.stopped_early and len(history.epoch) < 200
    assert history.best_epoch == len(history.epoch) - 5
    best = history.val_loss[history.best_epoch - 1]
    assert min(history.val_loss) == best
    assert evaluate(model, hg.CrossEntropyLoss(), X_val, y_val)[0] == pytest.approx(best, rel=1e-12)


def test_a_diverging_loss_stops_with_the_epoch_and_step():
    rng = np.random.default_rng(4)
    X, y = _blobs(rng)
    model = hg.mlp([4, 8, 3], "relu", rng=0)
    with pytest.raises(TrainingDivergedError, match=r"at epoch \d+, step \d+; try a smaller") as e:
        fit(model, hg.CrossEntropyLoss(), SGD(model.params, 1e6), X * 1e3, y, epochs=50)
    assert e.value.epoch >= 1 and e.value.step >= 1
    assert isinstance(e.value, RuntimeError)


def test_check_runs_a_gradient_check_before_the_first_step():
    rng = np.random.default_rng(5)
    X, y = _blobs(rng, n=20)
    model = hg.mlp([4, 5, 3], rng=0)
    history = fit(
        model,
        hg.CrossEntropyLoss(),
        SGD(model.params, 0.1),
        X,
        y,
        epochs=1,
        batch_size=8,
        check=True,
    )
    assert history.gradient_check.passed
    assert [c.name for c in history.gradient_check.checks] == list(model.params)


def test_schedule_sets_the_learning_rate_per_epoch():
    rng = np.random.default_rng(6)
    X, y = _blobs(rng, n=16)
    model = hg.mlp([4, 3], rng=0)
    history = fit(
        model,
        hg.CrossEntropyLoss(),
        SGD(model.params, 0.8),
        X,
        y,
        epochs=5,
        schedule=make_schedule("step", step_size=2, gamma=0.5),
    )
    assert history.lr == [0.8, 0.8, 0.4, 0.4, 0.2]


def test_l2_penalty_is_added_to_loss_and_weight_gradients_only():
    X, y = np.ones((2, 3)), np.array([0, 1])
    plain, penalised = hg.mlp([3, 2], rng=0), hg.mlp([3, 2], rng=0)
    h0 = fit(plain, hg.CrossEntropyLoss(), SGD(plain.params, 0.1), X, y, epochs=1, batch_size=2)
    h1 = fit(
        penalised,
        hg.CrossEntropyLoss(),
        SGD(penalised.params, 0.1),
        X,
        y,
        epochs=1,
        batch_size=2,
        alpha=0.5,
    )
    w0 = hg.mlp([3, 2], rng=0).params["0.weight"]
    assert h1.train_loss[0] - h0.train_loss[0] == pytest.approx(0.5 / 4 * np.sum(w0**2))
    np.testing.assert_allclose(
        penalised.params["0.weight"], plain.params["0.weight"] - 0.1 * 0.5 / 2 * w0, rtol=1e-12
    )
    np.testing.assert_array_equal(penalised.params["0.bias"], plain.params["0.bias"])


@pytest.mark.parametrize("backend", ["torch"])
def test_fit_on_the_torch_backend_matches_numpy(backend):
    pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    X, y = _blobs(rng, n=40)
    results = []
    for b in ("numpy", backend):
        model = hg.mlp([4, 6, 3], rng=0, backend=b)
        h = fit(model, hg.CrossEntropyLoss(), Adam(model.params, 0.01), X, y, epochs=3, rng=1)
        results.append(h.train_loss)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10)


def test_history_csv_round_trips(tmp_path):
    history = History(
        epoch=[1, 2], lr=[0.1, 0.1], train_loss=[0.5, 0.25], train_accuracy=[0.5, 0.75]
    )
    path = history.to_csv(tmp_path / "history.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,lr,train_loss,train_accuracy"
    assert lines[2] == "2,0.1,0.25,0.75"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs must be a positive integer, got 0"),
        ({"batch_size": -2}, ValueError, "batch_size must be a positive integer"),
        ({"patience": 3}, ValueError, "patience .* needs validation data"),
        ({"alpha": -1.0}, ValueError, "alpha must be a finite number >= 0"),
        ({"X": np.ones((3, 4)), "y": np.array([0, 1])}, ValueError, "X has 3 rows but y has 2"),
        ({"y": np.zeros(5)}, ValueError, "y holds floating-point targets for 1 output"),
        ({"X": np.full((5, 4), math.nan)}, ValueError, "X contains NaN"),
    ],
)
def test_fit_refuses_bad_arguments_before_training(kwargs, error, match):
    model = hg.mlp([4, 3], rng=0)
    before = model.state_dict()
    data = {"X": np.ones((5, 4)), "y": np.zeros(5, dtype=np.int64)}
    data.update({k: kwargs.pop(k) for k in ("X", "y") if k in kwargs})
    with pytest.raises(error, match=match):
        fit(model, hg.CrossEntropyLoss(), SGD(model.params, 0.1), data["X"], data["y"], **kwargs)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_without_shuffling_the_batch_seed_changes_nothing():
    rng = np.random.default_rng(8)
    X, y = _blobs(rng, n=30)
    histories = []
    for seed in (1, 2):
        model = hg.mlp([4, 3], rng=0)
        histories.append(
            fit(
                model,
                hg.CrossEntropyLoss(),
                SGD(model.params, 0.1),
                X,
                y,
                epochs=3,
                batch_size=7,
                rng=seed,
                shuffle=False,
            ).train_loss
        )
    assert histories[0] == histories[1]


def test_fit_trains_a_model_of_users_layers_and_a_users_loss():
    class ProtocolOnlyLoss:
        """A user's loss with only forward and backward, which fit calls as they are."""

        def __init__(self):
            self.inner = hg.CrossEntropyLoss()

        def forward(self, pred, target):
            return self.inner.forward(pred, target)

        def backward(self):
            return self.inner.backward()

    rng = np.random.default_rng(9)
    X, y = _blobs(rng, n=40)
    model = hg.Sequential(hg.Linear(4, 6, rng=0), Square(), hg.Linear(6, 3, rng=1))
    history = fit(model, hg.CrossEntropyLoss(), SGD(model.params, 0.01), X, y, epochs=20, rng=0)
    assert history.train_loss[-1] < history.train_loss[0]
    model = hg.Sequential(hg.Linear(4, 6, rng=0), Square(), hg.Linear(6, 3, rng=1))
    again = fit(model, ProtocolOnlyLoss(), SGD(model.params, 0.01), X, y, epochs=20, rng=0)
    np.testing.assert_allclose(again.train_loss, history.train_loss, rtol=1e-12)


def test_labels_beyond_the_models_outputs_are_refused():
    model = hg.mlp([4, 3], rng=0)
    with pytest.raises(ValueError, match=r"y holds class index 5 but the model has 3 outputs"):
        fit(
            model,
            hg.CrossEntropyLoss(),
            SGD(model.params, 0.1),
            np.ones((2, 4)),
            np.array([0, 5]),
        )


def _twins(sizes=(4, 6, 2), activation="tanh", lr=0.1):
    """Two identical models with plain SGD."""
    models = [hg.mlp(list(sizes), activation, rng=3) for _ in range(2)]
    return [(m, SGD(m.params, lr)) for m in models]


def test_fit_takes_floating_point_targets():
    rng = np.random.default_rng(10)
    X = rng.standard_normal((64, 4))
    targets = np.stack([X[:, 0] - X[:, 1], X[:, 2] * 0.5], axis=1)
    model = hg.mlp([4, 16, 2], "tanh", rng=0)
    history = fit(model, hg.MSELoss(), Adam(model.params, 0.02), X, targets, epochs=60, rng=0)
    assert history.train_loss[-1] < 0.1 * history.train_loss[0]
    assert all(math.isnan(a) for a in history.train_accuracy)
    one = hg.mlp([4, 1], rng=0)
    fit(one, hg.MSELoss(), SGD(one.params, 0.1), X, targets[:, 0], epochs=1)  # (n,) is (n, 1)


def test_integer_sample_weights_are_repeated_examples():
    """One batch of everything: weight k counts as the example written k times (the loss and
    the L2 penalty, which is divided by the total weight)."""
    rng = np.random.default_rng(11)
    X, y = _blobs(rng, n=12)
    weight = rng.integers(0, 4, 12)
    weight[0] = 2
    (a, opt_a), (b, opt_b) = _twins((4, 6, 3))
    common = {"epochs": 5, "shuffle": False, "alpha": 0.3}
    ha = fit(a, hg.CrossEntropyLoss(), opt_a, X, y, batch_size=12, sample_weight=weight, **common)
    Xr, yr = np.repeat(X, weight, axis=0), np.repeat(y, weight)
    hb = fit(b, hg.CrossEntropyLoss(), opt_b, Xr, yr, batch_size=len(yr), **common)
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-12)
    for name, p in a.params.items():
        np.testing.assert_allclose(p, b.params[name], rtol=1e-11, atol=1e-14)


def test_on_epoch_stops_training():
    rng = np.random.default_rng(12)
    X, y = _blobs(rng, n=30)
    model = hg.mlp([4, 3], rng=0)
    seen = []

    def stop_after_three(history):
        seen.append(len(history.epoch))
        return len(history.epoch) == 3

    history = fit(
        model, hg.CrossEntropyLoss(), SGD(model.params), X, y, epochs=10, on_epoch=stop_after_three
    )
    assert seen == [1, 2, 3] and history.epoch == [1, 2, 3] and history.stopped_early


def test_without_stop_on_divergence_non_finite_losses_are_recorded():
    X, y = np.full((4, 2), 1e200), np.array([0, 1, 0, 1])
    model = hg.mlp([2, 4, 2], "relu", rng=0)
    with np.errstate(all="ignore"):
        history = fit(
            model,
            hg.CrossEntropyLoss(),
            SGD(model.params, 1e300),
            X,
            y,
            epochs=3,
            stop_on_divergence=False,
        )
    assert len(history.train_loss) == 3
    assert not math.isfinite(history.train_loss[-1])


def test_sparse_features_train_as_the_dense_ones():
    sparse = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(13)
    X, y = _blobs(rng, n=40, features=6)
    X[np.abs(X) < 1.5] = 0.0
    (a, opt_a), (b, opt_b) = _twins((6, 5, 3))
    ha = fit(
        a, hg.CrossEntropyLoss(), opt_a, sparse.csr_matrix(X), y, epochs=4, batch_size=8, rng=0
    )
    hb = fit(b, hg.CrossEntropyLoss(), opt_b, X, y, epochs=4, batch_size=8, rng=0)
    np.testing.assert_allclose(ha.train_loss, hb.train_loss, rtol=1e-12)
    for name, p in a.params.items():
        np.testing.assert_allclose(p, b.params[name], rtol=1e-12, atol=1e-15)


def test_data_already_on_the_model_is_not_copied(monkeypatch):
    fit_module = sys.modules["handgrad.training.inputs"]  # where the data is moved
    copies = []
    real = fit_module.convert
    monkeypatch.setattr(
        fit_module, "convert", lambda a, *args, **kw: copies.append(a) or real(a, *args, **kw)
    )
    X = np.random.default_rng(14).standard_normal((20, 3)).astype(np.float32)
    targets = X[:, :1] * 2
    model = hg.mlp([3, 1], rng=0, dtype="float32")
    fit(model, hg.MSELoss(), SGD(model.params), X, targets, epochs=1)
    assert copies == []  # float32 X and targets for a float32 model: used as they are
