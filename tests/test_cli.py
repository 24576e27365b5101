import subprocess
import sys

import pytest

from handgrad.cli import main


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
        (["check", "--activation", "gelu"], "invalid choice: 'gelu'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_exit_with_status_2_and_one_message(args, match, capsys):
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert match in capsys.readouterr().err


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
