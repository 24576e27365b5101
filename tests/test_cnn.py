"""The cnn model, and a convolutional network through everything a classifier goes
through: train_classifier, fit's modes, model files with every new layer type, and
handgrad train / predict / evaluate with --model cnn."""

import csv

import numpy as np
import pytest
from helpers import rel_err

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.app.trainer import TrainConfig, train_classifier
from handgrad.cli.main import main
from handgrad.data import Standardizer, load_dataset
from handgrad.models.cnn import cnn, square_image
from handgrad.training.fit import evaluate, fit
from handgrad.training.optim import Adam

pytest.importorskip("sklearn")


def test_cnn_takes_rows_of_pixels_and_outputs_logits():
    model = cnn((1, 8, 8), 10, rng=0)
    kinds = [type(layer).__name__ for layer in model]
    assert kinds == [
        "Unflatten", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "Flatten", "Dropout",
        "Linear",
    ]  # fmt: skip
    x = np.random.default_rng(0).standard_normal((3, 64))
    assert model.forward(x).shape == (3, 10)
    assert model.backward(np.ones((3, 10))).shape == (3, 64)
    assert cnn((3, 5, 7), 2, channels=(4, 6), rng=0)[-1].in_features == 6 * 2 * 3


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: square_image(30), "30 features are not n x n pixels"),
        (lambda: cnn((8, 8), 10), r"input_shape must be \(channels, height, width\)"),
        (lambda: cnn((1, 1, 8), 10), "at least 2 x 2 pixels"),
        (lambda: cnn((1, 8, 8), 10, channels=(4,)), "channels must be the filters of the two"),
    ],
)
def test_bad_cnn_arguments_are_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_train_classifier_trains_a_cnn_that_predicts_in_evaluation_mode():
    data = load_dataset("digits")
    X, y = data.X[:300], data.y[:300]
    config = TrainConfig(model="cnn", epochs=3, seed=0)
    classifier, history = train_classifier(X, y, data.class_names, config=config)
    assert classifier.info["model"] == "cnn" and "sizes" not in classifier.info
    assert classifier.info["lr"] == 0.001  # a tenth of Adam's default for the mlp
    assert classifier.model.training is False and len(history.epoch) == 3
    assert history.train_accuracy[-1] > 0.3  # three epochs learn something (chance: 0.1)
    assert classifier.predict_proba(data.X[300:305]).shape == (5, 10)


def test_fit_trains_in_training_mode_and_evaluates_in_evaluation_mode():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 4)), rng.integers(0, 2, 40)
    model = hg.Sequential(hg.Linear(4, 8, rng=0), hg.Dropout(0.5, rng=0), hg.Linear(8, 2, rng=1))
    seen = []
    model[1].forward_unchecked = lambda x, f=model[1].forward_unchecked: (
        seen.append(model[1].training) or f(x)
    )
    fit(model, hg.CrossEntropyLoss(), Adam(model.params), X, y, epochs=2, validation=(X, y))
    # the first forward checks the data (evaluation mode); then per epoch two training steps
    # of 32 + 8 rows in training mode and the validation pass in evaluation mode
    assert seen == [False, True, True, False, True, True, False]
    assert model.training and model[1].training  # and the modes are back as they were
    model.eval()
    first = evaluate(model, hg.CrossEntropyLoss(), X, y)
    assert evaluate(model.train(), hg.CrossEntropyLoss(), X, y) == first  # no dropout
    assert model[1].training


def test_a_batch_norm_network_trains_and_a_last_batch_of_one_is_named():
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((33, 3)), rng.integers(0, 2, 33)
    model = hg.Sequential(hg.Linear(3, 4, rng=0), hg.BatchNorm1d(4), hg.Linear(4, 2, rng=1))
    history = fit(model, hg.CrossEntropyLoss(), Adam(model.params), X[:32], y[:32], epochs=2)
    assert int(model[1].buffers["num_batches_tracked"]) == 2 and len(history.epoch) == 2
    with pytest.raises(ValueError, match="more than one value per channel"):
        fit(model, hg.CrossEntropyLoss(), Adam(model.params), X, y, epochs=1, shuffle=False)


def test_fits_gradient_check_runs_in_evaluation_mode():
    """No fresh dropout mask per pass (which no finite difference survives), and the
    check's many passes leave the running statistics alone."""
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((16, 3)), rng.integers(0, 2, 16)
    model = hg.Sequential(
        hg.Linear(3, 4, rng=0), hg.Tanh(), hg.Dropout(0.5, rng=0), hg.BatchNorm1d(4),
        hg.Linear(4, 2, rng=1),
    )  # fmt: skip
    history = fit(
        model, hg.CrossEntropyLoss(), Adam(model.params), X, y, epochs=1, batch_size=8, check=True
    )
    assert history.gradient_check.passed
    assert int(model[3].buffers["num_batches_tracked"]) == 2  # the two training steps only


def _every_new_layer(rng):
    """A network that holds every layer type of the vision family, Conv1d included."""
    image = hg.Sequential(
        hg.Conv2d(1, 4, 3, padding="same", rng=rng),
        hg.BatchNorm2d(4),
        hg.ELU(0.5),
        hg.MaxPool2d(2),
        hg.Conv2d(4, 4, 2, stride=1, groups=2, bias=False, rng=rng),
        hg.GroupNorm(2, 4),
        hg.GELU("tanh"),
        hg.AvgPool2d(2, stride=1),
        hg.Flatten(),
        hg.Unflatten(1, (4, 4)),
        hg.Conv1d(4, 2, 3, padding=1, dilation=1, rng=rng),
        hg.LeakyReLU(0.05),
        hg.Flatten(),
    )
    return hg.Sequential(
        hg.Unflatten(1, (1, 8, 8)),
        image,
        hg.Dropout(0.25, rng=rng),
        hg.LayerNorm(8),
        hg.Linear(8, 6, rng=rng),
        hg.BatchNorm1d(6, momentum=None),
        hg.SiLU(),
        hg.Softplus(beta=2.0),
        hg.Linear(6, 3, rng=rng),
    )


def test_a_model_file_saves_and_loads_every_new_layer(tmp_path):
    rng = np.random.default_rng(2)
    model = _every_new_layer(rng)
    X = rng.standard_normal((20, 64))
    for _ in range(3):  # running statistics and batch counts worth saving
        model.forward(X)
    for name, p in model.params.items():
        model.params[name][...] = rng.standard_normal(p.shape)
    names = tuple(f"pixel_{i}" for i in range(64))
    saved = Classifier(model.eval(), Standardizer().fit(X), ("a", "b", "c"), names)
    loaded = load_classifier(save_classifier(tmp_path / "model.npz", saved))
    assert repr(loaded.model) == repr(model)
    state = model.state_dict()
    assert sorted(loaded.model.state_dict()) == sorted(state)
    for name, value in loaded.model.state_dict().items():
        np.testing.assert_array_equal(value, state[name])
    assert int(loaded.model.state_dict()["5.num_batches_tracked"]) == 3
    assert rel_err(loaded.predict_proba(X), saved.predict_proba(X)) == 0.0


def _digits_csv(path, rows, with_target):
    data = load_dataset("digits")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*data.feature_names, *(["target"] if with_target else [])])
        for i in rows:
            values = [f"{v:g}" for v in data.X[i]]
            writer.writerow([*values, *([data.class_names[data.y[i]]] if with_target else [])])
    return str(path)


def test_train_predict_evaluate_a_cnn_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "digits", "--model", "cnn", "--epochs", "2", "--seed", "0"]
    assert main([*args, "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "model cnn on 1x8x8 images: conv 16, relu, max pool, conv 32, relu, dropout" in printed
    classifier = load_classifier(out / "model.npz")
    assert type(classifier.model[1]).__name__ == "Conv2d" and classifier.info["model"] == "cnn"
    new = _digits_csv(tmp_path / "new.csv", range(5), with_target=False)
    assert main(["predict", "--model", str(out / "model.npz"), new]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("prediction,p_0,p_1") and len(lines) == 6
    labelled = _digits_csv(tmp_path / "labelled.csv", range(0, 1797, 9), with_target=True)
    assert main(["evaluate", "--model", str(out / "model.npz"), labelled]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--dataset", "breast_cancer"], "30 features are not n x n pixels"),
        (["--dataset", "digits", "--hidden", "8"], "--hidden and --activation shape the mlp"),
        (["--dataset", "digits", "--activation", "relu"], "--hidden and --activation shape"),
    ],
)
def test_a_cnn_on_what_it_cannot_take_exits_2_with_one_line(tmp_path, capsys, args, match):
    out = tmp_path / "run"
    code = main(["train", "--model", "cnn", *args, "--epochs", "1", "--quiet", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]
    assert not (out / "model.npz").exists()
