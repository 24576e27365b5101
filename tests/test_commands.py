"""handgrad train, predict and evaluate, end to end."""

import csv
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from handgrad.app.model_files import load_classifier
from handgrad.cli import commands
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
    written = {"model.npz", "history.csv", "curves.png", "run.json"}
    assert {p.name for p in tmp_path.iterdir()} == written  # no lock, no temporary file left
    classifier = load_classifier(tmp_path / "model.npz")
    run = json.loads((tmp_path / "run.json").read_text())
    assert classifier.info["run"] == run and len(run["id"]) == 32
    assert run["data"]["rows"] == 569 and run["options"]["hidden"] == [20]
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


# --- issue 15: small data, labels, headers, separators, memory, pipes --------------------------


def _run_args(data, out, *extra):
    source = ["--data", str(data), "--target", "label"]
    return ["train", *source, "--epochs", "3", "--quiet", "--seed", "0", "--out", str(out), *extra]


def test_twenty_rows_of_three_classes_train_and_the_split_says_what_it_did(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = [[f"{v:.3f}" for v in rng.standard_normal(2)] + ["abc"[i % 3]] for i in range(20)]
    data = _write_csv(tmp_path / "small.csv", ["a", "b", "label"], rows)
    assert main(_run_args(data, tmp_path / "run")) == 0
    out = capsys.readouterr().out
    assert "train 12, validation 3, test 5" in out
    assert "small data: the validation part holds 3 rows, not 2, for a row of each class\n" in out


def test_two_rows_per_class_train_without_a_validation_part(tmp_path, capsys):
    data = _write_csv(
        tmp_path / "tiny.csv", ["a", "label"], [["1", "x"], ["2", "x"], ["8", "y"], ["9", "y"]]
    )
    assert main(_run_args(data, tmp_path / "run", "--patience", "2")) == 0
    out = capsys.readouterr().out
    assert "train 2, validation 0, test 2" in out
    assert (
        "small data: the test part holds 2 rows, not 1, for a row of each class; no validation "
        "part: every class has 2 rows, one to train on and one to test; --patience is off "
        "without one\n"
    ) in out


def test_labels_are_classes_as_written_unless_numeric_labels_is_given(tmp_path, capsys):
    big = 2**53
    rows = [
        [str(i), label] for i, label in enumerate(["01", "1", str(big), str(big + 1), "NA"] * 4)
    ]
    data = _write_csv(tmp_path / "labels.csv", ["a", "label"], rows)
    assert main(_run_args(data, tmp_path / "run", "--test-size", "0.25", "--val-size", "0")) == 0
    names = load_classifier(tmp_path / "run" / "model.npz").class_names
    assert names == ("01", "1", str(big), str(big + 1), "NA")  # not all numbers: as text
    capsys.readouterr()
    assert main([*_run_args(data, tmp_path / "run2", "--val-size", "0"), "--missing", "NA"]) == 2
    assert "row 6, column 'label' of" in capsys.readouterr().err
    assert main([*_run_args(data, tmp_path / "run3", "--val-size", "0"), "--numeric-labels"]) == 0
    numeric = load_classifier(tmp_path / "run3" / "model.npz")
    assert numeric.class_names == ("1", str(big), str(big + 1), "NA")
    spelled = _write_csv(tmp_path / "spelled.csv", ["a", "label"], [["0", "1.0"], ["1", "NA"]])
    capsys.readouterr()
    assert main(["evaluate", "--model", str(tmp_path / "run3" / "model.npz"), str(spelled)]) == 0
    assert "accuracy" in capsys.readouterr().out  # 1.0 is the class 1, as in training
    assert main(["evaluate", "--model", str(tmp_path / "run" / "model.npz"), str(spelled)]) == 2
    assert "holds class '1.0', which the model does not know" in capsys.readouterr().err


def test_predict_reads_a_header_of_numbers_by_name(tmp_path, capsys):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 40)
    rows = [[f"{3 * c + rng.normal():.3f}", f"{rng.normal():.3f}", "ab"[c]] for c in y]
    data = _write_csv(tmp_path / "spectra.csv", ["400", "500", "label"], rows)
    assert main(_run_args(data, tmp_path / "run", "--epochs", "60")) == 0
    model = tmp_path / "run" / "model.npz"
    assert load_classifier(model).feature_names == ("400", "500")
    new = _write_csv(tmp_path / "new.csv", ["500", "400"], [["0.0", "-3.0"], ["0.0", "6.0"]])
    capsys.readouterr()
    assert main(["predict", "--model", str(model), str(new)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == ["a", "b"]  # 2 rows, columns by name


def test_a_semicolon_file_is_read_and_one_with_decimal_commas_is_named(tmp_path, capsys):
    plain = tmp_path / "plain.csv"
    plain.write_text("a;b;label\n" + "".join(f"{i};{i % 3};{'xy'[i % 2]}\n" for i in range(12)))
    assert main(_run_args(plain, tmp_path / "run")) == 0
    european = tmp_path / "european.csv"
    european.write_text(
        "a;b;label\n" + "".join(f"{i},5;{i % 3};{'xy'[i % 2]}\n" for i in range(12))
    )
    capsys.readouterr()
    assert main(_run_args(european, tmp_path / "run2")) == 2
    err = capsys.readouterr().err
    assert "looks separated by ';', not by commas" in err and "--sep ';'" in err
    assert main([*_run_args(european, tmp_path / "run2"), "--sep", ";"]) == 2
    assert "holds '0,5', which is not a number; write it 0.5" in capsys.readouterr().err


def test_a_value_too_large_to_standardise_is_named(tmp_path, capsys):
    rows = [[str(i), "1e308" if i == 3 else str(i), "xy"[i % 2]] for i in range(12)]
    data = _write_csv(tmp_path / "huge.csv", ["a", "b", "label"], rows)
    assert main(_run_args(data, tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("handgrad train: error: feature 'b' holds values as large as 1e+308")
    assert "NaN" not in err


def test_a_model_too_big_for_memory_is_refused_with_its_size(tmp_path, capsys):
    args = ["train", "--dataset", "iris", "--hidden", "100000000000", "--out", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not enough memory: the model 4-100000000000-3 has" in err[0]
    assert "TiB" in err[0] and "Traceback" not in err[0]


def test_memory_running_out_anywhere_is_one_line_with_the_size(tmp_path, capsys, monkeypatch):
    def allocate(*args, **kwargs):
        return np.empty((10**6, 10**7))  # asks for 72.8 TiB

    monkeypatch.setattr(commands, "load_dataset", allocate)
    assert main(["train", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "handgrad train: error: not enough memory: unable to allocate 72.8 TiB for an array "
        "with shape (1000000, 10000000) and data type float64"
    ]


def test_output_into_a_missing_folder_names_that_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    new = _write_csv(tmp_path / "new.csv", None, [["1", "2", "3", "4"]])
    capsys.readouterr()
    args = ["predict", "--model", str(out / "model.npz"), str(new), "--output", "nodir/x.csv"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        "handgrad predict: error: there is no folder nodir to write nodir/x.csv in; "
        "create it first\n"
    )


def test_a_csv_given_as_the_model_is_named(tmp_path, capsys):
    data = _flowers(tmp_path / "data.csv")
    assert main(["predict", "--model", str(data), str(data)]) == 2
    err = capsys.readouterr().err
    assert "data.csv' is a CSV file, not a handgrad model file" in err and "pickled" not in err


class _ClosedPipe(io.StringIO):
    """A stdout whose reader went away after the first line (``| head -1``)."""

    def write(self, text):
        if self.getvalue().count("\n") >= 1:
            raise BrokenPipeError(32, "Broken pipe")
        return super().write(text)


def test_a_closed_pipe_does_not_stop_training(tmp_path, capsys, monkeypatch):
    pipe = _ClosedPipe()
    monkeypatch.setattr(sys, "stdout", pipe)
    assert (
        main(["train", "--dataset", "iris", "--epochs", "2", "--quiet", "--out", str(tmp_path)])
        == 0
    )
    assert sys.stdout is pipe and pipe.getvalue().startswith("seed ")
    assert (tmp_path / "model.npz").is_file() and capsys.readouterr().err == ""


def test_predict_into_a_pipe_closed_early_ends_quietly(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    rows = [[str(v) for v in np.random.default_rng(0).normal(5, 2, 4)] for _ in range(4000)]
    new = _write_csv(tmp_path / "new.csv", None, rows)
    command = [sys.executable, "-m", "handgrad.cli", "predict", "--model", str(out / "model.npz")]
    process = subprocess.Popen([*command, str(new)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout.readline().startswith(b"prediction,")
    process.stdout.close()  # as head -1 does
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, err
    assert err == ""
