"""Data-parallel training on ``torch.distributed`` for a loop of your own: every worker
computes hand-written gradients on its share of each batch (``shard_batches``), and
``all_reduce_gradients`` turns the shares into the whole batch's gradient before the
optimizer's step. Needs the ``torch`` extra. Example, run with
``torchrun --nproc-per-node 2 my_loop.py``::

    from handgrad.distributed import all_reduce_gradients, init_workers, shard_batches

    with init_workers() as workers:
        for epoch in range(epochs):
            for rows in shard_batches(len(X), 64, rng):  # the same rng seed on every worker
                ...  # forward and backward on X[rows]
                all_reduce_gradients(model, count=len(rows))
                optimizer.step(model.grads)
"""

from handgrad.training.distributed import (
    WorkerGroup,
    all_reduce_gradients,
    init_workers,
    shard,
    shard_batches,
)

__all__ = ["WorkerGroup", "all_reduce_gradients", "init_workers", "shard", "shard_batches"]
