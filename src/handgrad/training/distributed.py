"""Data-parallel training on ``torch.distributed``: several workers, each computing the
hand-written gradients of its share of every global batch, and one all-reduce per step that
turns the shares into the gradient of the whole batch.

The result is the single-process one: a worker's gradient is the mean over its ``n_r`` rows,
so the whole batch's mean over ``b`` rows is ``sum_r (n_r / b) * mean_r``: each share is
weighted by its size before the sum, and an uneven last batch comes out right. Workers find
each other as ``torchrun`` tells them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` in the environment); gloo carries CPU arrays (NumPy's share their memory
with the tensor sent), NCCL carries CUDA tensors. Needs the ``torch`` extra.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
    import torch.distributed as dist
except ImportError as err:  # pragma: no cover - the torch extra is part of the test setup
    raise ImportError("handgrad.distributed needs PyTorch: pip install 'handgrad[torch]'") from err

from handgrad.core.errors import WorkerLostError
from handgrad.core.random import make_rng
from handgrad.core.validation import POSITIVE, check_choice, check_positive_int
from handgrad.data import batches
from handgrad.nn.module import slots

__all__ = [
    "DEFAULT_TIMEOUT",
    "WorkerGroup",
    "all_reduce_gradients",
    "init_workers",
    "shard",
    "shard_batches",
]

DEFAULT_TIMEOUT = 60.0  # seconds a worker waits for the others in a collective
ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _check_rank(rank: int, world_size: int) -> tuple[int, int]:
    world_size = check_positive_int(world_size, "world_size")
    integer = isinstance(rank, int | np.integer) and not isinstance(rank, bool)
    if not integer or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer from 0 to {world_size - 1}, got {rank!r}")
    return int(rank), world_size


def _bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``start:stop`` of ``n`` that worker ``rank`` takes: contiguous, the first
    ``n % world_size`` workers one more."""
    each, extra = divmod(n, world_size)
    start = rank * each + min(rank, extra)
    return start, start + each + (rank < extra)


def shard(index: Any, rank: int, world_size: int) -> Any:
    """Worker ``rank``'s share of a global batch ``index``: a contiguous slice (a view), the
    first ``len(index) % world_size`` workers one row more; a share may be empty.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.distributed import shard
    >>> [shard(np.arange(5), rank, 2).tolist() for rank in range(2)]
    [[0, 1, 2], [3, 4]]
    >>> [shard(np.arange(1), rank, 2).tolist() for rank in range(2)]  # a last batch of one
    [[0], []]
    """
    rank, world_size = _check_rank(rank, world_size)
    start, stop = _bounds(len(index), rank, world_size)
    return index[start:stop]


def shard_batches(
    n: int,
    batch_size: int,
    rng: Any,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    shuffle: bool = True,
) -> Iterator[np.ndarray]:
    """The sampler of a worker: its share of each batch of :func:`handgrad.data.batches`.

    Every worker draws the same order from the same seed and keeps its own slice of each
    batch of ``batch_size`` rows (the global batch). ``rank`` and ``world_size`` default to
    this process's place in the process group.

    Examples
    --------
    >>> from handgrad.training.distributed import shard_batches
    >>> [b.tolist() for b in shard_batches(5, 2, 0, rank=0, world_size=2)]
    [[2], [3], [1]]
    >>> [b.tolist() for b in shard_batches(5, 2, 0, rank=1, world_size=2)]
    [[4], [0], []]
    """
    if rng is None:
        raise ValueError(
            "rng must be a seed or generator that every worker shares (the same batch "
            "order on each), got None"
        )
    if rank is None or world_size is None:
        group = _group(None)
        rank = group.rank() if rank is None else rank
        world_size = group.size() if world_size is None else world_size
    rank, world_size = _check_rank(rank, world_size)
    order = batches(n, batch_size, make_rng(rng), shuffle=shuffle)
    return (index[slice(*_bounds(len(index), rank, world_size))] for index in order)


def _group(group: Any) -> Any:
    if group is not None:
        return group
    if not dist.is_initialized():
        raise RuntimeError(
            "there is no process group: start the workers with torchrun (or handgrad train "
            "--nproc N) and call handgrad.distributed.init_workers() first, or pass group="
        )
    return dist.group.WORLD


def _reason(err: BaseException) -> str:
    """The useful part of a torch.distributed error: its first line, without the source
    location in front and the general advice behind."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". This is typically")[0].rstrip(".")


class _Flat:
    """Arrays of the shapes of ``like`` packed in one buffer of their library, followed by
    ``extra`` scalars, and the torch tensor that shares its memory (one all-reduce for all)."""

    def __init__(self, like: list[Any], extra: int) -> None:
        first = like[0]
        if isinstance(first, torch.Tensor):
            self.array = torch.zeros(
                sum(a.numel() for a in like) + extra, dtype=first.dtype, device=first.device
            )
            self.tensor = self.array
        elif isinstance(first, np.ndarray):
            self.array = np.zeros(sum(a.size for a in like) + extra, dtype=first.dtype)
            self.tensor = torch.from_numpy(self.array)
        else:
            raise TypeError(
                "data-parallel training takes NumPy arrays or torch tensors, got "
                f"{type(first).__module__}.{type(first).__name__}; move the model with "
                "model.to('numpy') or model.to('torch')"
            )
        self.slices, start = [], 0
        for a in like:
            size = math.prod(a.shape)
            self.slices.append((start, start + size))
            start += size
        self.size = start  # the arrays' part; the scalars follow
        self.views = [
            self.array[a:z].reshape(tuple(x.shape))
            for (a, z), x in zip(self.slices, like, strict=True)
        ]
        # the scalars, through NumPy where the memory is the host's (no kernel per number)
        host = self.tensor.device.type == "cpu"
        self.scalars = self.tensor[start:].numpy() if host else self.array[start:]
        self.multiply = torch.mul if isinstance(first, torch.Tensor) else np.multiply

    def pack(self, arrays: list[Any], scale: float = 1.0) -> None:
        """Copy ``arrays`` in, each multiplied by ``scale`` (one pass)."""
        for (a, z), x in zip(self.slices, arrays, strict=True):
            self.multiply(x.reshape(-1), scale, out=self.array[a:z])


@dataclass
class WorkerGroup:
    """This process's place among the workers of a data-parallel run: its ``rank``, their
    number ``world_size``, and the torch ``ProcessGroup`` that joins them.

    :func:`init_workers` makes one from the environment that ``torchrun`` sets; tests and
    special setups build one on a group of their own. Give it to
    :func:`handgrad.training.fit` as ``parallel=`` to train as one of the workers.

    Examples
    --------
    >>> import datetime
    >>> import numpy as np
    >>> import torch.distributed as dist
    >>> from handgrad.training.distributed import WorkerGroup
    >>> group = dist.ProcessGroupGloo(dist.HashStore(), 0, 1, datetime.timedelta(seconds=10))
    >>> workers = WorkerGroup(rank=0, world_size=1, group=group)  # a world of one worker
    >>> workers.shard(np.arange(4)).tolist(), workers.broadcast(7)
    ([0, 1, 2, 3], 7)
    """

    rank: int
    world_size: int
    group: Any = None  # a torch ProcessGroup; None: the default one (init_workers)
    timeout: float | None = None  # the group's, in seconds, for messages
    owns_group: bool = False  # close() destroys the default process group
    device: str = "cpu"  # where the group's tensors live: "cuda" for NCCL

    def __post_init__(self) -> None:
        self.rank, self.world_size = _check_rank(self.rank, self.world_size)

    def shard(self, index: Any) -> Any:
        """This worker's share of the global batch ``index`` (see :func:`shard`)."""
        start, stop = _bounds(len(index), self.rank, self.world_size)
        return index[start:stop]

    def all_reduce(self, tensor: Any) -> None:
        """Sum ``tensor`` over every worker, in place; a worker that does not answer within
        the timeout, or has died, raises :class:`~handgrad.core.errors.WorkerLostError`."""
        if self.world_size == 1:
            return  # the sum of one
        try:
            _group(self.group).allreduce([tensor]).wait()
        except RuntimeError as err:
            raise WorkerLostError(self._lost(err)) from None

    def broadcast(self, value: int) -> int:
        """Worker 0's integer ``value``, on every worker (a seed drawn at random)."""
        tensor = torch.tensor([int(value)], dtype=torch.int64, device=self.device)
        try:
            _group(self.group).broadcast(tensor, 0).wait()
        except RuntimeError as err:
            raise WorkerLostError(self._lost(err)) from None
        return int(tensor[0])

    def _lost(self, err: BaseException) -> str:
        within = "the timeout" if self.timeout is None else f"{self.timeout:g} s"
        return (
            f"worker {self.rank} of {self.world_size} lost contact with the others (one has "
            f"stopped, or not answered within {within}): {_reason(err)}"
        )

    def attach(
        self, model: Any, step: Any, interrupted: Callable[[], bool] | None
    ) -> tuple[Any, Callable[[], bool]]:
        """``fit``'s step and its ``interrupted`` callable as this worker's: the step computes
        on this worker's share and all-reduces; the workers stop together when any is asked
        to (its ``interrupted()`` is sent with the gradients)."""
        sharded = _ShardedStep(self, model, step, interrupted)
        return sharded, sharded.stopping

    def close(self) -> None:
        """Leave the process group (destroy it, if :func:`init_workers` made it)."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> WorkerGroup:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def init_workers(
    *, backend: str = "auto", timeout: float = DEFAULT_TIMEOUT, device: Any = None
) -> WorkerGroup:
    """Join the workers described by the environment, as ``torchrun`` (or ``handgrad train
    --nproc N``) sets it: ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``.

    ``backend="auto"`` takes NCCL for a CUDA ``device`` (when torch has it; each worker then
    uses GPU ``LOCAL_RANK``) and gloo otherwise. Every collective, and finding the others at
    the start, waits at most ``timeout`` seconds: a worker that dies or hangs ends the run
    with :class:`~handgrad.core.errors.WorkerLostError` instead of a hang. Use the result
    as a context manager, or call ``close()``.

    Examples
    --------
    >>> import os
    >>> from unittest import mock
    >>> from handgrad.training.distributed import init_workers
    >>> env = {"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"}
    >>> with mock.patch.dict(os.environ, env), init_workers(timeout=10) as workers:
    ...     print(workers.rank, workers.world_size)
    0 1
    """
    check_choice(backend, "backend", ("auto", "gloo", "nccl"))
    timeout = POSITIVE.check(timeout, "timeout")
    missing = [name for name in ENVIRONMENT if name not in os.environ]
    if missing:
        raise RuntimeError(
            f"init_workers needs {', '.join(missing)} in the environment, as torchrun sets "
            "them; start the workers with torchrun or with handgrad train --nproc N"
        )
    rank, world_size = _check_rank(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
    if backend == "auto":
        backend = "nccl" if str(device).startswith("cuda") and dist.is_nccl_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group(
            backend,
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
    except RuntimeError as err:
        address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise WorkerLostError(
            f"worker {rank} of {world_size} could not join the others at {address} within "
            f"{timeout:g} s: {_reason(err)}"
        ) from None
    device = "cuda" if backend == "nccl" else "cpu"
    return WorkerGroup(rank, world_size, None, timeout, owns_group=True, device=device)


def all_reduce_gradients(model: Any, count: int | None = None, *, group: Any = None) -> int:
    """Replace each gradient in ``model`` by its mean over all workers, with one all-reduce;
    return the number of examples behind the mean.

    ``count`` is the number of examples this worker's gradients are the mean of (its share
    of the global batch): each worker's gradient is weighted by it, so the result is the
    mean over every example, as one process computes it for the whole batch, even when the
    shares differ in size. A worker whose share is empty passes 0 (and needs no backward).
    Without ``count`` every worker weighs the same (the plain average of torch's
    DistributedDataParallel). Call it after ``backward`` and before the optimizer's step.

    Examples
    --------
    >>> import datetime
    >>> import numpy as np
    >>> import torch.distributed as dist
    >>> import handgrad as hg
    >>> from handgrad.training.distributed import all_reduce_gradients
    >>> group = dist.ProcessGroupGloo(dist.HashStore(), 0, 1, datetime.timedelta(seconds=10))
    >>> model, loss = hg.mlp([3, 2], rng=0), hg.CrossEntropyLoss()
    >>> X, y = np.ones((4, 3)), np.array([0, 1, 1, 0])
    >>> _ = loss.forward(model.forward(X), y)
    >>> _ = model.backward(loss.backward())
    >>> before = model.grads["0.weight"].copy()
    >>> all_reduce_gradients(model, count=4, group=group)  # a world of one: the mean is its own
    4
    >>> bool(np.array_equal(model.grads["0.weight"], before))
    True
    """
    weight = 1 if count is None else count
    if isinstance(weight, bool) or not isinstance(weight, int | np.integer) or weight < 0:
        raise ValueError(f"count must be a number of examples (an integer >= 0), got {count!r}")
    pg = _group(group)
    named = [(name, place) for name, owners in slots(model).items() for place in owners]
    places = [place for _, place in named]
    flat = _Flat([layer.params[key] for layer, key in places], extra=1)
    if weight:
        missing = [name for name, (layer, key) in named if key not in layer.grads]
        if missing:
            raise ValueError(
                f"model has no gradient for {missing[0]!r}: call backward before "
                "all_reduce_gradients (or pass count=0 for a worker without examples)"
            )
        flat.pack([layer.grads[key] for layer, key in places], weight)
    flat.scalars[0] = weight
    WorkerGroup(pg.rank(), pg.size(), pg).all_reduce(flat.tensor)
    total = int(flat.scalars[0])
    if total == 0:
        raise ValueError("count was 0 on every worker: there are no examples to average over")
    flat.array[: flat.size] /= total
    for (layer, key), view in zip(places, flat.views, strict=True):
        layer.grads[key] = view
    return total


class _ShardedStep:
    """``fit``'s step as one worker of several: forward and backward on this worker's share
    of the global batch, one all-reduce of the gradients (weighted by the share's size), the
    loss, the rows classified right and the stop flag, then the L2 penalty of the whole
    batch and the optimizer's update, the same on every worker."""

    def __init__(
        self, workers: WorkerGroup, model: Any, step: Any, interrupted: Callable[[], bool] | None
    ) -> None:
        self.workers, self.step, self.interrupted = workers, step, interrupted
        # the L2 penalty divides by the whole batch: added after the all-reduce, not by step
        self.alpha, step.alpha = step.alpha, 0.0
        self.apply, step.update = step.update, self._keep
        self.flat = _Flat(list(model.params.values()), extra=3)
        self.weights, self.batch, self.xp = step.weights, step.batch, step.xp
        self.kept, self.stop, self.share = False, False, 1.0

    def __getattr__(self, name: str) -> Any:  # what fit reads of its step (targets_given, ...)
        return getattr(self.step, name)

    def _keep(self, grads: list[Any]) -> None:
        """In place of the optimizer's update: keep this worker's gradients for the sum,
        weighted by its share of the batch: sum_r (n_r / b) mean_r = the batch's mean."""
        self.flat.pack(grads, self.share)
        self.kept = True

    def stopping(self) -> bool:
        """Whether any worker was asked to stop at the last step."""
        return self.stop

    def __call__(self, index: Any) -> tuple[float, int]:
        flat, scalars, b = self.flat, self.flat.scalars, len(index)
        rows = self.workers.shard(index)
        n = len(rows)
        self.kept, self.share = False, n / b
        value, right = self.step(rows) if n else (0.0, 0)
        if not self.kept:  # an empty share, or a loss that is no longer finite
            flat.array[: flat.size] = 0
        scalars[0] = value * self.share
        scalars[1] = right
        scalars[2] = float(self.interrupted is not None and self.interrupted())
        self.workers.all_reduce(flat.tensor)
        value, right, self.stop = float(scalars[0]), int(scalars[1]), bool(scalars[2] > 0)
        grads = flat.views
        if self.alpha:
            grads = list(grads)
            # L2 penalty: L += alpha / (2 b) |W|^2,  dL/dW += alpha W / b, b the whole batch
            for i, w in self.weights:
                value += self.alpha / (2 * b) * float(self.xp.sum(w * w))
                grads[i] = grads[i] + (self.alpha / b) * w
        self.apply(grads)
        return value, right
