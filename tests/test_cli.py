import json
import subprocess
import sys

import pytest

from handgrad.cli.main import main


def test_check_runs_the_seed_network_and_a_model(capsys):
    assert main(["check"]) == 0
    out = capsys.readouterr().out
    assert "Gradient check for parameter w_1 is passed." in out
    assert "Gradient check for parameter w_2 is passed." in out
    assert "MLP 30-20-2 (sigmoid)" in out and "4 of 4 checks passed" in out
    assert "handgrad vs PyTorch autograd: agree" in out
    assert out.rstrip().endswith("all checks passed")


def test_check_with_options_and_the_torch_backend(capsys):
    pytest.importorskip("torch")
    args = [
        "check",
        "--hidden",
        "6",
        "--hidden",
        "5",
        "--activation",
        "relu",
        "--backend",
        "torch",
        "--batch-size",
        "3",
        "--classes",
        "4",
        "--inputs",
        "7",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "MLP 7-6-5-4 (relu)" in out and "6 of 6 checks passed" in out


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["check", "--hidden", "0"], "must be a positive integer, got 0"),
        (["check", "--eps", "-1"], "must be a finite number greater than 0"),
        (["check", "--activation", "sine"], "invalid choice: 'sine'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_exit_with_status_2_and_one_message(args, match, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and match in err[0]


def test_the_installed_command_runs():
    done = subprocess.run(
        [sys.executable, "-m", "handgrad.cli", "check", "--hidden", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "all checks passed" in done.stdout


LAYER_FILE = '''
import numpy as np


class Square:
    """y = x^2 with a slip: the derivative misses its factor 2."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return self.x * dy


class GoodSquare(Square):
    def backward(self, dy):
        return 2 * self.x * dy


def make_good():
    return GoodSquare()
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    (tmp_path / "userlayers.py").write_text(LAYER_FILE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("userlayers", None)


def test_check_a_users_layer_points_at_the_wrong_element(user_package, capsys):
    assert main(["check", "userlayers:Square", "--input-shape", "4,3"]) == 1
    out = capsys.readouterr().out
    assert "== userlayers:Square (Square) on a random input of shape (4, 3) ==" in out
    assert "FAILED: gradient check failed for 'x' (shape (4, 3)): 12 of 12 elements off" in out
    assert main(["check", "userlayers:GoodSquare"]) == 0
    assert main(["check", "userlayers:make_good", "--mode", "fast"]) == 0


def test_check_json_and_plot(user_package, capsys):
    plot = user_package / "errors.png"
    assert main(["check", "userlayers:Square", "--json", "--plot", str(plot)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] is False and data["input_shape"] == [8, 10]
    assert data["report"]["checks"][0]["name"] == "x"
    assert plot.read_bytes()[:4] == b"\x89PNG"
    assert main(["check", "--json", "--hidden", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["passed"] and data["seed_network"]["passed"] and data["autograd"]["passed"]
    assert [c["name"] for c in data["model"]["checks"]] == [
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    ]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["check", "userlayers:Nope"], "module 'userlayers' has no 'Nope'"),
        (["check", "nosuchmodule:Layer"], "cannot import 'nosuchmodule': ModuleNotFoundError"),
        (["check", "userlayers"], "LAYER must look like module:Class"),
        (["check", "--input-shape", "4,3"], "--input-shape goes with a LAYER"),
        (["check", "userlayers:np"], "does not follow the layer protocol"),
    ],
)
def test_check_refuses_bad_targets_with_status_2(user_package, capsys, args, match):
    assert main(args) == 2
    assert match in capsys.readouterr().err
