"""Checkpoints and resume: an interrupted run goes on to exactly the weights and history of
one that was never interrupted; files survive kills; Ctrl-C saves and exits with 130."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.core.errors import ModelFileError, TrainingInterruptedError
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
            standardiser=None,
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


KILLS = int(os.environ.get("HANDGRAD_KILLS", "3"))


def test_killed_runs_leave_loadable_files_and_resume_to_the_same_result(tmp_path, uninterrupted):
    """SIGKILL at random moments (HANDGRAD_KILLS of them; 20 in the full run)."""
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
        if not (out / "checkpoint.npz").exists():
            continue
        done = subprocess.run(
            [sys.executable, "-m", "handgrad.cli", "train", "--resume", str(out), "--quiet"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        _same_run(out, uninterrupted)
