"""``handgrad train`` as several workers (data-parallel, on ``torch.distributed``).

``handgrad train --nproc N`` starts N copies of the same command on this machine, with the
environment that ``torchrun`` gives its workers (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``
= 127.0.0.1, a free ``MASTER_PORT``), watches them, and stops them all when one fails. A
copy started that way, or by ``torchrun`` on one machine or several, joins the process
group and trains on its share of every batch; worker 0 alone prints and writes the model,
history, curves and checkpoints. See the guide "Data-parallel training".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from handgrad.cli import commands
from handgrad.core.errors import WorkerLostError

__all__ = ["launch", "train"]

LAUNCHER = "HANDGRAD_LAUNCHER"  # set in the workers that handgrad train --nproc started
WORKER_ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
GRACE = 1.0  # seconds the other workers get to stop by themselves after one fails
POLL = 0.05  # seconds between looks at the workers


def train(args: argparse.Namespace) -> int:
    """``handgrad train``: in one process, as the launcher of ``--nproc`` workers, or as a
    worker (when the environment names its rank, as torchrun and the launcher set it)."""
    if all(name in os.environ for name in WORKER_ENVIRONMENT):
        return _as_worker(args)
    if args.nproc > 1:
        return launch(args)
    return commands.train(args)


def _as_worker(args: argparse.Namespace) -> int:
    """Join the process group, train on this worker's shares, and let worker 0 report."""
    if os.environ.get(LAUNCHER) is None and args.nproc != 1:
        raise ValueError(
            "--nproc starts workers on this machine; under torchrun, which starts them "
            "itself, leave it out (torchrun --nproc-per-node N sets their number)"
        )
    from handgrad.training.distributed import init_workers  # torch, only for workers

    device = None
    if args.backend == "torch":
        if args.device == "cuda":  # one GPU per worker on each machine
            args.device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        device = args.device
    with init_workers(timeout=args.worker_timeout, device=device) as workers:
        try:
            with contextlib.ExitStack() as stack:
                if workers.rank != 0:  # worker 0 alone prints
                    args.quiet = True
                    devnull = stack.enter_context(open(os.devnull, "w"))
                    stack.enter_context(contextlib.redirect_stdout(devnull))
                return commands.train(args, workers=workers)
        except WorkerLostError as err:
            folder = Path(args.resume or args.out)
            kept = (  # the launcher gives the whole command to go on
                f"; the last checkpoint is kept: add --resume {folder} to go on"
                if (folder / "checkpoint.npz").exists() and LAUNCHER not in os.environ
                else ""
            )
            raise WorkerLostError(f"{err}; the run is stopped, no model written{kept}") from None


@dataclass
class _Worker:
    rank: int
    process: subprocess.Popen
    stderr: IO[bytes] | None  # a file, for workers other than 0
    stopped: bool = False  # stopped by the launcher, after another failed

    def tail(self) -> str:
        """The last line this worker wrote to stderr."""
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        lines = self.stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else ""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback() -> str | None:
    """The loopback interface's name ("lo" on Linux, "lo0" on macOS), for gloo."""
    names = [name for _, name in socket.if_nameindex()]
    return next((name for name in ("lo", "lo0") if name in names), None)


def launch(args: argparse.Namespace) -> int:
    """Run ``args.argv`` as ``args.nproc`` workers on this machine, joined by gloo over
    127.0.0.1; return 0 when all succeed, worker 0's status when it failed and said why,
    and 2 with one line naming the worker when another died or failed."""
    n = args.nproc
    port = _free_port()
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(n),
        "LOCAL_WORLD_SIZE": str(n),
        LAUNCHER: str(os.getpid()),
    }
    # as torchrun: one thread per worker's libraries unless told otherwise (threads that
    # outnumber the cores spin against each other and slow every step down many times)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))
    loopback = _loopback()
    if loopback is not None:
        env.setdefault("GLOO_SOCKET_IFNAME", loopback)
    command = [sys.executable, "-m", "handgrad.cli", *args.argv]
    print(f"starting {n} workers on this machine (torch.distributed, 127.0.0.1:{port})")
    sys.stdout.flush()
    workers: list[_Worker] = []
    with contextlib.ExitStack() as files:
        logs = Path(files.enter_context(tempfile.TemporaryDirectory(prefix="handgrad-workers-")))
        try:
            for rank in range(n):
                stderr = files.enter_context(open(logs / f"{rank}.err", "w+b")) if rank else None
                process = subprocess.Popen(
                    command,
                    env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                    stdout=None if rank == 0 else subprocess.DEVNULL,
                    stderr=stderr,
                    start_new_session=True,  # signals reach them through the launcher only
                )
                workers.append(_Worker(rank, process, stderr))
            with _forwarding_signals(workers):
                _wait(workers)
            return _report(workers, args)
        finally:
            for worker in workers:
                if worker.process.poll() is None:
                    worker.process.kill()
                    worker.process.wait()


@contextlib.contextmanager
def _forwarding_signals(workers: list[_Worker]) -> Any:
    """While the workers run, Ctrl-C and SIGTERM sent to the launcher go to each of them
    (they agree to stop at the same step: worker 0 checkpoints)."""

    def forward(signum: int, frame: Any) -> None:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # only there can it listen
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _wait(workers: list[_Worker]) -> None:
    """Wait until every worker has ended; once one fails, give the others ``GRACE``
    seconds to stop by themselves, then terminate them, then kill them."""
    while True:
        codes = [w.process.poll() for w in workers]
        if all(code is not None for code in codes):
            return
        if any(code not in (None, 0) for code in codes):
            break
        time.sleep(POLL)
    deadline = time.monotonic() + GRACE
    while time.monotonic() < deadline and any(w.process.poll() is None for w in workers):
        time.sleep(POLL)
    for signum, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, None)):
        alive = [w for w in workers if w.process.poll() is None]
        for worker in alive:
            worker.stopped = True
            worker.process.send_signal(signum)
            worker.process.send_signal(signal.SIGCONT)  # a stopped (hung) worker too
        for worker in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(wait)


def _describe(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by signal {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"failed (exit status {code})"


def _report(workers: list[_Worker], args: argparse.Namespace) -> int:
    """The launcher's exit status; and one line on stderr naming the worker that ended the
    run, unless worker 0 failed and said why (its message is on stderr already)."""
    codes = [w.process.returncode for w in workers]
    if all(code == 0 for code in codes):
        return 0
    own = [w for w in workers if not w.stopped and w.process.returncode != 0]
    if own and all(w.process.returncode == 130 for w in own):
        return 130  # stopped by Ctrl-C, together; worker 0 checkpointed and said so
    killed = [w for w in own if w.process.returncode < 0]
    crashed = [w for w in own if w.rank and not w.tail().startswith("handgrad train:")]
    if not killed and not crashed and workers[0] in own:
        return codes[0]  # worker 0's own error, already on stderr
    cause = (killed or crashed or own or [w for w in workers if w.process.returncode])[0]
    said = cause.tail()
    if codes[0] == 0:
        after = "worker 0 had finished and written its results"
    else:
        folder = Path(args.resume or args.out)
        kept = (
            f"; go on from the last checkpoint with: handgrad train --resume {folder} "
            f"--nproc {args.nproc}"
            if (folder / "checkpoint.npz").exists()
            else ""
        )
        after = f"the others were stopped and no model was written{kept}"
    print(
        f"handgrad train: error: worker {cause.rank} of {len(workers)} "
        f"{_describe(cause.process.returncode)}{f' ({said})' if said else ''}; {after}",
        file=sys.stderr,
    )
    return 2
