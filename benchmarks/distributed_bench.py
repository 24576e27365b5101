"""Data-parallel scaling on this machine: ``fit`` in one process, and as 1 and 2 workers
(torch.distributed, gloo over 127.0.0.1), on the issue's run (digits 64-32-10, SGD,
batch 64, float64, torch backend) and on a larger one whose steps are matrix products
(784-1024-10, batch 256). Printed per setup: time per step, the part of it spent in the
all-reduce (sending, and waiting for the slower worker), samples per second and the
speed-up over one process; and the bytes all-reduced per step.

Every process runs one thread (as torchrun sets it), so two workers use the two cores.
Each worker trains ``--repeats`` times from the same start and keeps its best run.

Run: python benchmarks/distributed_bench.py [--quick]   (about a minute on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

CASES = {  # name: (sizes, batch, epochs, quick epochs)
    "digits": ([64, 32, 10], 64, 10, 3),
    "synthetic": ([784, 1024, 10], 256, 2, 1),
}


def data(name: str) -> tuple[np.ndarray, np.ndarray]:
    if name == "digits":
        from handgrad.data import load_dataset

        dataset = load_dataset("digits")
        X, y = dataset.X, dataset.y
    else:  # MNIST-sized
        rng = np.random.default_rng(0)
        X, y = rng.standard_normal((4096, 784)), rng.integers(0, 10, 4096)
    X = (X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1.0)
    return X, y


def worker(name: str, epochs: int, repeats: int, parallel: bool) -> dict:
    """Train ``repeats`` times in this process (as a worker when ``parallel``); the best."""
    import torch

    import handgrad as hg
    from handgrad.training.distributed import init_workers
    from handgrad.training.fit import fit
    from handgrad.training.optim import SGD

    torch.set_num_threads(1)
    sizes, batch, _, _ = CASES[name]
    X, y = data(name)
    workers = init_workers(timeout=120) if parallel else None
    reducing = [0.0]
    if workers is not None:
        send = workers.all_reduce

        def timed(tensor):  # the all-reduce, and the wait for the other workers in it
            started = time.perf_counter()
            send(tensor)
            reducing[0] += time.perf_counter() - started

        workers.all_reduce = timed
    best = None
    for _ in range(repeats):
        model = hg.mlp(sizes, "sigmoid", rng=0, backend="torch", dtype="float64")
        reducing[0] = 0.0
        started = time.perf_counter()
        history = fit(
            model,
            hg.CrossEntropyLoss(),
            SGD(model.params, lr=0.1),
            X,
            y,
            epochs=epochs,
            batch_size=batch,
            rng=0,
            parallel=workers,
        )
        run = {
            "seconds": time.perf_counter() - started,
            "reducing": reducing[0],
            "loss": history.train_loss[-1],
            "parameters": sum(int(p.numel()) for p in model.params.values()),
        }
        if best is None or run["seconds"] < best["seconds"]:
            best = run
    if workers is not None:
        workers.close()
    return best


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(name: str, epochs: int, repeats: int, nproc: int | None) -> dict:
    """Run the workers (or, with ``nproc`` None, one plain process); worker 0's result."""
    command = [sys.executable, __file__, "--worker", name, str(epochs), str(repeats)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    if nproc is None:
        done = subprocess.run([*command, "plain"], capture_output=True, text=True, env=env)
        if done.returncode:
            raise RuntimeError(done.stderr)
        return json.loads(done.stdout)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nproc))
    processes = [
        subprocess.Popen(
            [*command, "parallel"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(rank)},
        )
        for rank in range(nproc)
    ]
    outputs = [p.communicate() for p in processes]
    if any(p.returncode for p in processes):
        raise RuntimeError("\n".join(err for _, err in outputs))
    return json.loads(outputs[0][0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, one repeat")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, epochs, repeats, mode = args.worker
        print(json.dumps(worker(name, int(epochs), int(repeats), mode == "parallel")))
        return
    repeats = 1 if args.quick else 3
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{os.cpu_count()} cores (load average {load} before the run); one thread per "
        f"process; best of {repeats} runs per process"
    )
    for name, (sizes, batch, epochs, quick_epochs) in CASES.items():
        epochs = quick_epochs if args.quick else epochs
        X, _ = data(name)
        steps = epochs * -(-X.shape[0] // batch)
        print(
            f"\n{name} {'-'.join(map(str, sizes))}, batch {batch}, {epochs} epochs "
            f"({steps} steps), SGD, float64, torch backend"
        )
        print(
            f"  {'setup':<14} {'ms/step':>8} {'all-reduce ms/step':>19} {'share':>6} "
            f"{'samples/s':>10} {'speed-up':>9}"
        )
        plain = launch(name, epochs, repeats, None)
        for label, nproc in (("fit, 1 process", None), ("1 worker", 1), ("2 workers", 2)):
            run = plain if nproc is None else launch(name, epochs, repeats, nproc)
            per_step = run["seconds"] / steps * 1e3
            reduce = run["reducing"] / steps * 1e3
            if nproc:
                reduced = f"{reduce:19.3f} {run['reducing'] / run['seconds']:6.0%}"
            else:
                reduced = f"{'-':>19} {'-':>6}"
            print(
                f"  {label:<14} {per_step:8.3f} {reduced} "
                f"{X.shape[0] * epochs / run['seconds']:10,.0f} "
                f"{plain['seconds'] / run['seconds']:9.2f}"
            )
            if nproc == 2:
                same = abs(run["loss"] - plain["loss"]) <= 1e-12 * abs(plain["loss"])
                print(f"  final training loss, 2 workers vs 1 process: equal to 1e-12: {same}")
        values = plain["parameters"] + 3  # the gradients, the loss, the rows right, the stop flag
        print(
            f"  all-reduced per step: {plain['parameters']:,} gradients + 3 scalars = "
            f"{values * 8:,} bytes (float64), {values * 4:,} bytes (float32)"
        )


if __name__ == "__main__":
    main()
