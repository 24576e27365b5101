"""Checkpoints and resume: an interrupted run goes on to exactly the weights and history of
one that was never interrupted; files survive kills; Ctrl-C saves and exits with 130."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.cli.main import main
from handgrad.core.errors import ModelFileError, TrainingInterruptedError
from handgrad.core.files import LOCK_NAME, locked_folder
from handgrad.training.checkpoint import load_checkpoint, save_checkpoint
from handgrad.training.fit import fit
from handgrad.training.optim import SGD, Adam


def _data(rng, n=90):
    centers = rng.standard_normal((3, 4)) * 2
    y = rng.integers(0, 3, n)
    return centers[y] + rng.standard_normal((n, 4)), y


def _run(make_optimizer, X, y, val, *, stop_at=None, start=None, saved=None, tmp=None):
    model = hg.mlp([4, 6, 3], "tanh", rng=0)
    optimizer = make_optimizer(model.params)
    if saved is not None:
        model.load_state_dict(saved.params)
        optimizer.load_state_dict(saved.optimizer_state)
        start = saved.progress

    def checkpoint(progress):
        save_checkpoint(
            tmp,
            config={"test": True},
            model=model,
            optimizer=optimizer,
            standardizer=None,
            progress=progress,
        )

    calls = {"n": 0}

    def interrupted():
        calls["n"] += 1
        return stop_at is not None and calls["n"] == stop_at

    history = fit(
        model,
        hg.CrossEntropyLoss(),
        optimizer,
        X,
        y,
        epochs=12,
        batch_size=16,
        validation=val,
        patience=None if val is None else 20,
        alpha=1e-3,
        rng=5,
        start=start,
        checkpoint=checkpoint,
        checkpoint_every=4,
        interrupted=interrupted,
    )
    return model, history


@pytest.mark.parametrize(
    "make", [lambda p: SGD(p, 0.1, momentum=0.9, nesterov=True), lambda p: Adam(p, 0.01)]
)
@pytest.mark.parametrize("stop_at", [1, 6, 17, 30, 72])
def test_a_resumed_run_ends_bit_for_bit_as_an_uninterrupted_one(tmp_path, make, stop_at):
    rng = np.random.default_rng(0)
    X, y = _data(rng)
    val = _data(rng, 30)
    path = tmp_path / "checkpoint.npz"
    reference, ref_history = _run(make, X, y, val, tmp=tmp_path / "ref.npz")
    with pytest.raises(TrainingInterruptedError, match="training interrupted at epoch"):
        _run(make, X, y, val, stop_at=stop_at, tmp=path)
    saved = load_checkpoint(path)
    assert saved.progress.step == stop_at
    model, history = _run(make, X, y, val, saved=saved, tmp=path)
    for k, v in reference.params.items():
        np.testing.assert_array_equal(model.params[k], v)
    assert history.as_dict() == ref_history.as_dict()
    assert history.best_epoch == ref_history.best_epoch


def test_a_checkpoint_records_where_the_run_stood(tmp_path):
    rng = np.random.default_rng(1)
    X, y = _data(rng)
    _run(lambda p: Adam(p, 0.01), X, y, None, tmp=tmp_path / "c.npz")
    saved = load_checkpoint(tmp_path / "c.npz")  # the last is after epoch 12
    assert saved.progress.epoch == 12 and saved.progress.position == 0
    assert saved.progress.step == 12 * 6 and saved.optimizer_state["step"] == 72
    assert len(saved.progress.history.epoch) == 12 and saved.config == {"test": True}
    model_file = save_classifier(
        tmp_path / "model.npz", Classifier(hg.mlp([2, 2]), None, ("a", "b"))
    )
    with pytest.raises(ModelFileError, match="is not a handgrad checkpoint"):
        load_checkpoint(model_file)


CLI = [
    sys.executable,
    "-m",
    "handgrad.cli",
    "train",
    "--dataset",
    "digits",
    "--epochs",
    "40",
    "--seed",
    "2",
    "--quiet",
    "--checkpoint-every",
    "1",
    "--optimizer",
    "momentum",
]


def _params(path):
    return load_classifier(path).model.params


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    subprocess.run([*CLI, "--out", str(out)], check=True, capture_output=True, timeout=300)
    return out


def _same_run(out, reference):
    for k, v in _params(reference / "model.npz").items():
        np.testing.assert_array_equal(_params(out / "model.npz")[k], v)
    assert (out / "history.csv").read_text() == (reference / "history.csv").read_text()


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_run_resumes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*CLI, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "checkpoint saved to" in lines[0] and "--resume" in lines[0]
    assert not (out / "model.npz").exists()
    done = subprocess.run(
        [sys.executable, "-m", "handgrad.cli", "train", "--resume", str(out), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    _same_run(out, uninterrupted)


def test_sigterm_saves_a_checkpoint_exits_143_and_the_run_resumes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*CLI, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.terminate()
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "by SIGTERM; checkpoint saved to" in lines[0], err
    assert not (out / "model.npz").exists() and not (out / LOCK_NAME).exists()
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    _same_run(out, uninterrupted)


KILLS = int(os.environ.get("HANDGRAD_KILLS", "3"))


def _leftovers(out):
    """What a killed run may leave that the next run must have removed."""
    return sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp") or p.name == LOCK_NAME)


def test_killed_runs_leave_loadable_files_and_resume_to_the_same_result(tmp_path, uninterrupted):
    """SIGKILL at random moments (HANDGRAD_KILLS of them; 20 in the full run); the next run
    into the folder takes over its lock and removes its temporary files."""
    rng = np.random.default_rng(7)
    for kill in range(KILLS):
        out = tmp_path / f"kill{kill}"
        process = subprocess.Popen(
            [*CLI, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(float(rng.uniform(1.0, 4.0)))
        process.kill()
        process.wait(timeout=60)
        for name in ("checkpoint.npz", "model.npz"):  # whatever survived loads
            if (out / name).exists():
                (load_checkpoint if name == "checkpoint.npz" else load_classifier)(out / name)
        if not (out / "checkpoint.npz").exists():  # killed early: a new run into the folder
            args = ["train", "--dataset", "iris", "--epochs", "1", "--quiet", "--out", str(out)]
            assert main(args) == 0
            assert _leftovers(out) == []
            continue
        done = subprocess.run(
            [sys.executable, "-m", "handgrad.cli", "train", "--resume", str(out), "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        _same_run(out, uninterrupted)
        assert _leftovers(out) == []


# --- a run's identity: what --resume refuses ----------------------------------------------------


def _train(out, *extra, data=None):
    source = ["--data", str(data), "--target", "label"] if data else ["--dataset", "iris"]
    args = ["train", *source, "--epochs", "4", "--hidden", "3", "--seed", "0", "--quiet"]
    return main([*args, "--out", str(out), *extra])


def _last_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_resume_refuses_the_checkpoint_of_a_run_the_folder_no_longer_holds(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--checkpoint-every", "2") == 0  # run A, its checkpoint
    first = json.loads((out / "run.json").read_text())
    assert load_checkpoint(out / "checkpoint.npz").config["run"] == first
    assert _train(out, "--lr", "0.1") == 0  # run B into the same folder, without checkpoints
    second = json.loads((out / "run.json").read_text())
    model = (out / "model.npz").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    assert f"is of run {first['id'][:8]} (begun " in _last_error(capsys)
    assert (out / "model.npz").read_bytes() == model  # B's model, untouched
    assert load_classifier(out / "model.npz").info["run"]["id"] == second["id"]
    (out / "run.json").unlink()  # without run.json, the model tells whose folder it is
    assert main(["train", "--resume", str(out)]) == 2
    assert f"the folder now holds run {second['id'][:8]}" in _last_error(capsys)


def test_resume_goes_on_with_the_folders_own_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0  # run A, no checkpoint
    assert _train(out, "--checkpoint-every", "3") == 0  # run B, its checkpoint after epoch 3
    assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert "resuming the run in" in capsys.readouterr().out


def test_resume_refuses_data_that_changed(tmp_path, capsys):
    data = tmp_path / "data.csv"
    rows = "".join(f"{i % 7},{i % 5},{'abc'[i % 3]}\n" for i in range(30))
    data.write_text("a,b,label\n" + rows)
    out = tmp_path / "run"
    assert _train(out, "--checkpoint-every", "2", data=data) == 0
    data.write_text("a,b,label\n" + rows.replace("4,", "5,", 1))
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 2
    assert f"the data of the run in {out} changed: {data} now holds 30 rows" in _last_error(capsys)
    data.write_text("a,b,label\n" + rows)
    assert main(["train", "--resume", str(out), "--quiet"]) == 0


def test_resume_refuses_options_that_change_the_run_and_takes_those_that_do_not(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--checkpoint-every", "2") == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--epochs", "9", "--lr", "0.5"]) == 2
    message = _last_error(capsys)
    assert "cannot change --epochs 9 (the run has 4), --lr 0.5 (the run has 0.01)" in message
    same = ["--epochs", "4", "--hidden", "3", "--dataset", "iris", "--seed", "0"]
    assert main(["train", "--resume", str(out), *same, "--checkpoint-every", "1", "--quiet"]) == 0


def test_resume_refuses_a_checkpoint_without_a_run_identity(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(Path(__file__).parent / "data" / "checkpoint-v1.npz", out / "checkpoint.npz")
    assert load_checkpoint(out / "checkpoint.npz").progress.epoch == 4  # it still loads
    assert main(["train", "--resume", str(out)]) == 2
    assert "records no run identity (an older handgrad wrote it)" in _last_error(capsys)


def test_a_run_into_a_folder_in_use_exits_2_naming_the_first_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with locked_folder(out, {"run": "a1b2c3d4", "started": "then"}):
        assert _train(out) == 2
        message = _last_error(capsys)
    assert f"{out} is in use by another handgrad run (pid {os.getpid()}, run a1b2c3d4" in message
    assert list(out.iterdir()) == []
