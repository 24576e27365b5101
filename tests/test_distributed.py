"""Data-parallel training (handgrad.training.distributed), in one process: each worker is a
thread with a gloo process group of its own, joined through an in-memory store, so the
all-reduce is torch.distributed's real one, over 127.0.0.1, without starting processes.
The command line's workers (separate processes, torchrun) are in test_workers.py."""

from __future__ import annotations

import datetime
import threading
import time

import numpy as np
import pytest
from helpers import rel_err

import handgrad as hg
from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.errors import TrainingInterruptedError, WorkerLostError
from handgrad.data import batches, load_dataset
from handgrad.training.checkpoint import load_checkpoint, save_checkpoint
from handgrad.training.fit import fit
from handgrad.training.optim import make_optimizer

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

from handgrad.distributed import (  # noqa: E402
    WorkerGroup,
    all_reduce_gradients,
    init_workers,
    shard,
    shard_batches,
)


def run_workers(work, n=2, timeout=20.0, group_timeout=10.0):
    """``work(workers)`` in ``n`` threads, each with its WorkerGroup; the results by rank.
    An exception in a worker is raised here."""
    store = dist.HashStore()
    results, errors = [None] * n, [None] * n

    def target(rank):
        try:
            group = dist.ProcessGroupGloo(store, rank, n, datetime.timedelta(seconds=group_timeout))
            results[rank] = work(WorkerGroup(rank, n, group, timeout=group_timeout))
        except BaseException as err:  # handed to the test's thread
            errors[rank] = err

    threads = [threading.Thread(target=target, args=(rank,), daemon=True) for rank in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
        assert not thread.is_alive(), "a worker hung"
    for err in errors:
        if err is not None:
            raise err
    return results


def _digits():
    data = load_dataset("digits")
    X = data.X - data.X.mean(0)
    X /= np.where(X.std(0) > 0, X.std(0), 1.0)
    return X, data.y


def _weights(model):
    return {k: np.array(to_numpy(v)) for k, v in model.state_dict().items()}


# --- sharding -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 5, 64, 65])
@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
def test_the_shares_of_a_batch_cover_it_once_in_order_and_differ_by_at_most_one(n, world_size):
    index = np.random.default_rng(n).permutation(100)[:n]
    shares = [shard(index, rank, world_size) for rank in range(world_size)]
    np.testing.assert_array_equal(np.concatenate(shares), index)
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_the_sampler_gives_each_worker_its_share_of_the_same_batches():
    whole = list(batches(23, 6, np.random.default_rng(4)))
    shares = [list(shard_batches(23, 6, 4, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shares] == [len(whole)] * 3
    for i, batch in enumerate(whole):
        np.testing.assert_array_equal(np.concatenate([s[i] for s in shares]), batch)


@pytest.mark.parametrize(("rank", "world_size"), [(2, 2), (-1, 2), (0, 0), (True, 2), (0.5, 2)])
def test_a_rank_outside_the_world_is_refused(rank, world_size):
    with pytest.raises(ValueError, match=r"rank must be|world_size must be"):
        shard(np.arange(4), rank, world_size)


# --- all_reduce_gradients -------------------------------------------------------------------


def _gradient(model, X, y):
    """The model's gradients of the mean cross-entropy on (X, y), NumPy arrays."""
    xp = namespace(next(iter(model.params.values())))
    X, y = convert(X, xp), convert(y, xp)
    loss = hg.CrossEntropyLoss()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    return {k: np.array(to_numpy(v)) for k, v in model.grads.items()}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("rows", [7, 2, 1])  # shares of 4 + 3, 1 + 1, and 1 + none
def test_all_reduce_gradients_is_the_gradient_of_the_whole_batch(backend, rows):
    rng = np.random.default_rng(rows)
    X, y = rng.standard_normal((rows, 5)), rng.integers(0, 3, rows)
    whole = _gradient(hg.mlp([5, 4, 3], "tanh", rng=0, backend=backend), X, y)

    def work(workers):
        model = hg.mlp([5, 4, 3], "tanh", rng=0, backend=backend)
        mine = workers.shard(np.arange(rows))
        if len(mine):
            _gradient(model, X[mine], y[mine])
        total = all_reduce_gradients(model, count=len(mine), group=workers.group)
        return total, {k: np.array(to_numpy(v)) for k, v in model.grads.items()}

    for total, grads in run_workers(work):
        assert total == rows
        for name, expected in whole.items():
            assert rel_err(grads[name], expected) < 1e-12, name


def test_without_a_count_each_worker_weighs_the_same():
    def work(workers):
        model = hg.mlp([2, 2], rng=0)
        model.layers[0].grads.update(
            weight=np.full((2, 2), float(workers.rank + 1)), bias=np.zeros(2)
        )
        assert all_reduce_gradients(model, group=workers.group) == 2
        return model.grads["0.weight"]

    for weight in run_workers(work):
        np.testing.assert_array_equal(weight, np.full((2, 2), 1.5))  # (1 + 2) / 2


def test_a_tied_weight_is_reduced_through_each_use():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)

    def tied():
        first, second = hg.Linear(3, 3, rng=0), hg.Linear(3, 3, rng=1)
        second.params["weight"] = first.params["weight"]
        return hg.Sequential(first, hg.Tanh(), second)

    whole = _gradient(tied(), X, y)

    def work(workers):
        model = tied()
        mine = workers.shard(np.arange(6))
        _gradient(model, X[mine], y[mine])
        all_reduce_gradients(model, count=len(mine), group=workers.group)
        return {k: np.array(v) for k, v in model.grads.items()}

    for grads in run_workers(work):
        assert list(grads) == list(whole)
        for name, expected in whole.items():
            assert rel_err(grads[name], expected) < 1e-12, name


# --- fit as one of several workers: the equality, in one process ---------------------


def _train(backend, parallel=None, optimizer="sgd", alpha=0.0, batch_size=64, **options):
    X, y = _digits()
    if batch_size < 8:  # fewer steps: an all-reduce each
        X, y = X[:150], y[:150]
    model = hg.mlp([64, 32, 10], "sigmoid", rng=0, backend=backend)
    history = fit(
        model,
        hg.CrossEntropyLoss(),
        make_optimizer(optimizer, model.params, 0.1 if optimizer == "sgd" else 0.01),
        X,
        y,
        epochs=3,
        batch_size=batch_size,
        rng=0,
        alpha=alpha,
        parallel=parallel,
        **options,
    )
    return _weights(model), history


@pytest.mark.parametrize(
    ("backend", "optimizer", "alpha", "batch_size"),
    [
        ("torch", "sgd", 0.0, 64),  # the case: 1797 = 28 * 64 + 5, an uneven last batch
        ("numpy", "adam", 1e-2, 64),  # the L2 penalty is the whole batch's
        ("numpy", "momentum", 0.0, 1),  # a batch of one: worker 1's share is always empty
    ],
)
def test_two_workers_end_with_the_weights_of_one_process(backend, optimizer, alpha, batch_size):
    expected, history = _train(backend, None, optimizer, alpha, batch_size)
    runs = run_workers(lambda w: _train(backend, w, optimizer, alpha, batch_size))
    for weights, worker_history in runs:
        for name, value in expected.items():
            assert np.max(np.abs(weights[name] - value)) < 1e-10, name
        assert worker_history.train_accuracy == history.train_accuracy
        np.testing.assert_allclose(worker_history.train_loss, history.train_loss, rtol=1e-12)
    for name in expected:  # every worker holds the same weights, bit for bit
        np.testing.assert_array_equal(runs[0][0][name], runs[1][0][name])


def test_the_workers_stop_together_when_one_is_asked_to():
    asked_at = 5  # worker 1 is asked to stop after its fifth step; worker 0 never is

    def work(workers):
        calls = []

        def interrupted():
            calls.append(1)
            return workers.rank == 1 and len(calls) >= asked_at

        with pytest.raises(TrainingInterruptedError) as stopped:
            _train("numpy", workers, interrupted=interrupted)
        return stopped.value.step

    assert run_workers(work) == [asked_at, asked_at]


def test_two_workers_stopped_and_resumed_end_as_one_process_never_stopped(tmp_path):
    path, saved = tmp_path / "checkpoint.npz", threading.Barrier(2)
    expected, history = _train("numpy", None, "momentum")  # lr 0.01, one process

    def work(workers):
        X, y = _digits()
        model = hg.mlp([64, 32, 10], "sigmoid", rng=0)
        optimizer = make_optimizer("momentum", model.params, 0.01)
        calls = []

        def save(progress):  # worker 0 alone writes, as the command line does
            save_checkpoint(
                path,
                config={},
                model=model,
                optimizer=optimizer,
                standardizer=None,
                progress=progress,
            )

        def interrupted():  # worker 1 is asked to stop in the middle of the second epoch
            calls.append(1)
            return workers.rank == 1 and len(calls) == 40

        options = {"epochs": 3, "batch_size": 64, "rng": 0, "parallel": workers}
        with pytest.raises(TrainingInterruptedError):
            fit(
                model,
                hg.CrossEntropyLoss(),
                optimizer,
                X,
                y,
                checkpoint=save if workers.rank == 0 else None,
                interrupted=interrupted,
                **options,
            )
        saved.wait(timeout=10)
        checkpoint = load_checkpoint(path)
        position = checkpoint.progress.position
        model = hg.mlp([64, 32, 10], "sigmoid", rng=1)  # other weights: all come from the file
        model.load_state_dict(checkpoint.params)
        optimizer = make_optimizer("momentum", model.params, 0.01)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        resumed = fit(
            model, hg.CrossEntropyLoss(), optimizer, X, y, start=checkpoint.progress, **options
        )
        return position, _weights(model), resumed

    for position, weights, resumed in run_workers(work):
        assert position == 40 - 29  # stopped inside epoch 2 (29 steps an epoch)
        for name, value in expected.items():
            assert np.max(np.abs(weights[name] - value)) < 1e-10, name
        np.testing.assert_allclose(resumed.train_loss, history.train_loss, rtol=1e-12)


def test_a_worker_that_does_not_answer_ends_the_run_within_the_timeout():
    def work(workers):
        if workers.rank == 1:  # joins, then never reaches the all-reduce
            time.sleep(1.0)
            return None
        started = time.perf_counter()
        with pytest.raises(WorkerLostError, match=r"worker 0 of 2 lost contact .*0\.5 s"):
            _train("numpy", workers)
        return time.perf_counter() - started

    waited = run_workers(work, group_timeout=0.5)[0]
    assert 0.4 < waited < 1.5


def test_broadcast_gives_every_worker_worker_0s_value():
    assert run_workers(lambda workers: workers.broadcast(100 + workers.rank)) == [100, 100]


def test_init_workers_names_what_the_environment_lacks(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="needs RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT"):
        init_workers()


def test_all_reduce_gradients_needs_a_process_group():
    with pytest.raises(RuntimeError, match="there is no process group"):
        all_reduce_gradients(hg.mlp([2, 2]))
