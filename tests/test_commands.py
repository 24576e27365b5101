"""handgrad train, predict and evaluate, end to end."""

import csv

import numpy as np
import pytest

from handgrad.app.model_files import load_classifier
from handgrad.cli.main import main

pytest.importorskip("sklearn")


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def _flowers(path, n=60, seed=0):
    rng = np.random.default_rng(seed)
    names = np.array(["iris-a", "iris-b", "iris-c"])
    y = rng.integers(0, 3, n)
    X = rng.standard_normal((n, 3)) + 3 * y[:, None]
    rows = [[f"{v:.4f}" for v in x] + [names[c]] for x, c in zip(X, y, strict=True)]
    return _write_csv(path, ["petal", "sepal", "stem", "kind"], rows)


def test_default_train_trains_the_seeds_network_on_breast_cancer(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "breast_cancer: 569 examples, 30 features, 2 classes" in out
    assert "model 30-20-2 (sigmoid)" in out and "accuracy" in out
    assert {p.name for p in tmp_path.iterdir()} == {"model.npz", "history.csv", "curves.png"}
    classifier = load_classifier(tmp_path / "model.npz")
    assert classifier.class_names == ("malignant", "benign")
    seed = classifier.info["seed"]
    assert classifier.info["dataset"] == "breast_cancer" and isinstance(seed, int)
    assert f"seed {seed} (drawn at random; pass --seed {seed} to repeat this run)" in out
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 101


def test_same_seed_same_model_bit_for_bit(tmp_path):
    for run in ("a", "b"):
        assert (
            main(
                [
                    "train",
                    "--dataset",
                    "iris",
                    "--epochs",
                    "5",
                    "--seed",
                    "3",
                    "--quiet",
                    "--out",
                    str(tmp_path / run),
                ]
            )
            == 0
        )
    a, b = (load_classifier(tmp_path / r / "model.npz").model.params for r in ("a", "b"))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert (tmp_path / "a" / "history.csv").read_text() == (
        tmp_path / "b" / "history.csv"
    ).read_text()


def test_train_predict_evaluate_on_a_users_csv(tmp_path, capsys):
    data = _flowers(tmp_path / "flowers.csv")
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--target",
                "kind",
                "--hidden",
                "8",
                "--epochs",
                "40",
                "--quiet",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "3 classes" in capsys.readouterr().out
    new = _write_csv(
        tmp_path / "new.csv",
        ["stem", "sepal", "petal"],
        [["0.1", "0.0", "0.2"], ["6.2", "6.0", "5.9"]],
    )
    assert main(["predict", "--model", str(out / "model.npz"), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "prediction,p_iris-a,p_iris-b,p_iris-c"
    assert [line.split(",")[0] for line in lines[1:]] == ["iris-a", "iris-c"]
    for line in lines[1:]:
        assert sum(float(p) for p in line.split(",")[1:]) == pytest.approx(1.0, abs=1e-5)
    assert (
        main(
            [
                "predict",
                "--model",
                str(out / "model.npz"),
                str(new),
                "--output",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )
    assert (tmp_path / "p.csv").read_text().splitlines() == lines
    assert main(["evaluate", "--model", str(out / "model.npz"), str(data)]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_train_with_check_prints_the_gradient_report(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--dataset",
                "wine",
                "--epochs",
                "2",
                "--check",
                "--quiet",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    assert "4 of 4 checks passed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--dataset", "mnist"], "mnist"),
        (["--data", "missing.csv", "--target", "y"], "missing.csv"),
        (["--data", "DATA"], "--data needs --target"),
        (["--dataset", "iris", "--target", "y"], "--target goes with --data"),
        (["--data", "DATA", "--target", "nope"], "nope"),
        (["--lr", "0"], "must be a finite number greater than 0"),
        (["--epochs", "-1"], "must be a positive integer"),
        (["--batch-size", "0"], "must be a positive integer"),
        (["--hidden", "0"], "must be a positive integer"),
        (["--activation", "swish"], "invalid choice: 'swish'"),
        (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["--test-size", "0.8", "--val-size", "0.3"], "leave some data to train on"),
    ],
)
def test_bad_train_input_exits_2_with_one_line_and_no_files(tmp_path, capsys, args, match):
    data = _flowers(tmp_path / "data.csv")
    args = [str(data) if a == "DATA" else a for a in args]
    out = tmp_path / "out"
    assert _exit_code(["train", "--quiet", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert match in err[-1] and "Traceback" not in "\n".join(err)
    assert not out.exists()


def _exit_code(args):
    """main's status, whether it returns it or argparse exits with it."""
    try:
        return main(args)
    except SystemExit as exited:
        return exited.code


def test_a_model_for_other_features_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "iris", "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    other = _write_csv(tmp_path / "other.csv", ["a", "b"], [["1", "2"]])
    assert main(["predict", "--model", str(out / "model.npz"), str(other)]) == 2
    assert "sepal length (cm)" in capsys.readouterr().err


def test_a_broken_model_file_exits_2(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"garbage")
    data = _flowers(tmp_path / "data.csv")
    assert main(["evaluate", "--model", str(bad), str(data)]) == 2
    assert "not a readable handgrad model file" in capsys.readouterr().err


def test_a_diverging_run_stops_with_one_line_and_keeps_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "train",
        "--dataset",
        "digits",
        "--optimizer",
        "sgd",
        "--activation",
        "relu",
        "--alpha",
        "0",
        "--seed",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main([*args, "--epochs", "1", "--lr", "0.01", "--checkpoint-every", "1"]) == 0
    before = (out / "checkpoint.npz").read_bytes()
    capsys.readouterr()
    assert main([*args, "--lr", "1e9", "--checkpoint-every", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "the training loss became nan at epoch 1" in err[0]
    assert "try a smaller learning rate (now 1e+09) (the last checkpoint is kept)" in err[0]
    assert (out / "checkpoint.npz").read_bytes() == before
