"""``handgrad train`` as several worker processes (handgrad.cli.workers): ``--nproc 2`` and
``torchrun`` give the weights of one process; a killed worker ends the run with status 2
and no model; the run resumes from its checkpoint with the same number of workers.

Every run here uses 127.0.0.1 and a free port, and is bounded in time. The tests marked
``slow`` (resuming a killed run, Ctrl-C, a hung worker, the guide's loop under torchrun) start
more processes or wait out a timeout; they run with ``HANDGRAD_SLOW=1``. Resuming as two
workers is also tested in one process, in test_distributed.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from handgrad.app.model_files import load_classifier
from handgrad.cli.main import main

pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="finds the workers through /proc"
)
slow = pytest.mark.skipif(os.environ.get("HANDGRAD_SLOW") != "1", reason="HANDGRAD_SLOW=1")

# the issue's run: digits, 64-32-10, SGD, batch 64, 3 epochs, seed 0, torch backend, float64
ISSUE_RUN = ["train", "--dataset", "digits", "--hidden", "32", "--optimizer", "sgd"]
ISSUE_RUN += ["--batch-size", "64", "--epochs", "3", "--seed", "0", "--backend", "torch"]
ISSUE_RUN += ["--dtype", "float64", "--quiet"]
LIMIT = 120  # seconds any one command may take here before the test fails


def _handgrad(*argv: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "handgrad.cli", *argv],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env={**os.environ, "MPLBACKEND": "Agg"},
        **options,
    )


def _weights(folder: Path) -> dict[str, np.ndarray]:
    model = load_classifier(folder / "model.npz").model
    return {k: np.asarray(v) for k, v in model.state_dict().items()}


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The issue's run in one process."""
    out = tmp_path_factory.mktemp("one")
    assert main([*ISSUE_RUN, "--out", str(out)]) == 0
    return out


def test_two_workers_train_the_weights_of_one_process(one_process, tmp_path):
    done = _handgrad(*ISSUE_RUN, "--out", str(tmp_path), "--nproc", "2")
    assert done.returncode == 0, done.stderr
    difference = _largest_difference(_weights(tmp_path), _weights(one_process))
    assert difference < 1e-10
    print(f"--nproc 2 vs --nproc 1: largest weight difference {difference:.2e}")
    one = np.genfromtxt(one_process / "history.csv", delimiter=",", names=True)
    two = np.genfromtxt(tmp_path / "history.csv", delimiter=",", names=True)
    np.testing.assert_allclose(two.tolist(), one.tolist(), rtol=1e-12)
    # worker 0 alone reports and writes
    assert done.stdout.count("test set:") == 1 and done.stdout.count("wrote ") == 1
    assert "starting 2 workers on this machine" in done.stdout
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["curves.png", "history.csv", "model.npz", "run.json"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_same_command_runs_under_torchrun(one_process, tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun is not installed beside this python")
    done = subprocess.run(
        [
            torchrun,
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(_free_port()),
            "-m",
            "handgrad.cli",
            *ISSUE_RUN,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        env={**os.environ, "MPLBACKEND": "Agg", "GLOO_SOCKET_IFNAME": "lo"},
    )
    assert done.returncode == 0, done.stderr
    assert _largest_difference(_weights(tmp_path), _weights(one_process)) < 1e-10
    assert done.stdout.count("test set:") == 1


def test_nproc_is_refused_under_torchrun(monkeypatch, capsys):
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HANDGRAD_LAUNCHER", raising=False)
    assert main(["train", "--nproc", "2"]) == 2
    assert "under torchrun, which starts them itself, leave it out" in capsys.readouterr().err


# A run to stop in the middle: few steps, each epoch ending with a checkpoint (an fsync);
# its seed drawn at random by worker 0 and sent to the other.
LONG_RUN = ["train", "--dataset", "digits", "--hidden", "32", "--optimizer", "sgd", "--quiet"]
LONG_RUN += ["--epochs", "20", "--batch-size", "512", "--checkpoint-every", "1"]


def _start(out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "handgrad.cli", *LONG_RUN, "--out", str(out), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )


def _worker(launcher: subprocess.Popen, rank: int, out: Path) -> int:
    """The process id of worker ``rank``, once the run has written its first checkpoint."""
    deadline = time.monotonic() + LIMIT
    while time.monotonic() < deadline and launcher.poll() is None:
        if (out / "checkpoint.npz").exists():
            children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children")
            for pid in map(int, children.read_text().split()):
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in environ:
                    return pid
        time.sleep(0.01)
    launcher.kill()
    pytest.fail(f"the run ended or stalled before its first checkpoint: {launcher.communicate()}")


def _killed_run(out: Path) -> str:
    """A run on two workers whose worker 1 is killed after the first checkpoint; its stdout."""
    launcher = _start(out, "--nproc", "2", "--worker-timeout", "5")
    os.kill(_worker(launcher, 1, out), signal.SIGKILL)
    killed = time.monotonic()
    stdout, stderr = launcher.communicate(timeout=LIMIT)
    assert time.monotonic() - killed < 5  # the others ended within the timeout
    assert launcher.returncode == 2, stderr
    assert "trained for" not in stdout, "the run ended before the kill: make it longer"
    assert "worker 1 of 2 was killed by signal SIGKILL; the others were stopped and no " in stderr
    assert f"go on from the last checkpoint with: handgrad train --resume {out} --nproc 2" in stderr
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "run.json"]  # no model
    return stdout


def test_a_killed_worker_ends_the_run_with_status_2_and_no_model(tmp_path):
    _killed_run(tmp_path)


@slow
def test_a_killed_run_resumes_with_the_same_n_to_the_result_of_one_process(tmp_path):
    out = tmp_path / "run"
    stdout = _killed_run(out)
    done = _handgrad("train", "--resume", str(out), "--nproc", "2")
    assert done.returncode == 0, done.stderr
    assert "resuming the run in" in done.stdout
    seed = re.search(r"seed (\d+) \(drawn at random", stdout)[1]
    whole = [*LONG_RUN[:-2], "--seed", seed, "--out", str(tmp_path / "whole")]
    assert main(whole) == 0  # one process, never stopped, worker 0's seed
    assert _largest_difference(_weights(out), _weights(tmp_path / "whole")) < 1e-10


@slow
def test_ctrl_c_stops_every_worker_after_the_same_step_and_worker_0_checkpoints(tmp_path):
    launcher = _start(tmp_path, "--nproc", "2")
    _worker(launcher, 1, tmp_path)  # the run is under way
    launcher.send_signal(signal.SIGINT)  # as Ctrl-C: the launcher passes it on
    _, stderr = launcher.communicate(timeout=LIMIT)
    assert launcher.returncode == 130, stderr
    assert stderr.count("checkpoint saved to") == 1  # worker 0's message, once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "run.json"]


@slow
def test_a_hung_worker_ends_the_run_after_the_timeout(tmp_path):
    launcher = _start(tmp_path, "--nproc", "2", "--worker-timeout", "2")
    os.kill(_worker(launcher, 1, tmp_path), signal.SIGSTOP)  # alive, but never answers
    stopped = time.monotonic()
    _, stderr = launcher.communicate(timeout=LIMIT)
    assert 2 <= time.monotonic() - stopped < 2 + 6  # the timeout, then the launcher's grace
    assert launcher.returncode == 2
    assert "worker 0 of 2 lost contact with the others" in stderr
    assert "not answered within 2 s): Timed out" in stderr
    assert not (tmp_path / "model.npz").exists()


@slow
def test_the_guides_own_loop_runs_under_torchrun_as_one_process_would(tmp_path):
    """docs/guides/distributed.md's my_loop.py, on two workers, against fit in one process."""
    import handgrad as hg
    from handgrad.data import load_dataset
    from handgrad.training import SGD, evaluate, fit

    page = Path(__file__).resolve().parents[1] / "docs" / "guides" / "distributed.md"
    loop = re.search(r'```python title="my_loop.py"\n(.*?)```', page.read_text(), re.DOTALL)
    (tmp_path / "my_loop.py").write_text(loop[1], encoding="utf-8")
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    rendezvous = ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
    done = subprocess.run(
        [torchrun, "--nproc-per-node", "2", *rendezvous, "my_loop.py"],
        capture_output=True,
        text=True,
        timeout=LIMIT,
        cwd=tmp_path,
        env={**os.environ, "GLOO_SOCKET_IFNAME": "lo"},
    )
    assert done.returncode == 0, done.stderr
    printed = float(re.search(r"final loss: (\S+)", done.stdout)[1])
    data = load_dataset("iris")  # the same run, in one process
    X = (data.X - data.X.mean(0)) / data.X.std(0)
    model, loss = hg.mlp([4, 8, 3], "tanh", rng=0), hg.CrossEntropyLoss()
    fit(model, loss, SGD(model.params, lr=0.1), X, data.y, epochs=20, batch_size=32, rng=0)
    assert printed == pytest.approx(evaluate(model, loss, X, data.y)[0], rel=1e-10)
