"""Learning-rate schedules: functions from the epoch (0-based) to a factor of the initial
learning rate, as ``torch.optim.lr_scheduler``'s."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from handgrad.core.validation import (
    FRACTION,
    check_choice,
    check_positive_float,
    check_positive_int,
)

__all__ = ["SCHEDULES", "Schedule", "make_schedule"]


Schedule = Callable[[int], float]


def _constant() -> Schedule:
    return lambda epoch: 1.0


def _step(step_size: int = 30, gamma: float = 0.1) -> Schedule:
    step_size = check_positive_int(step_size, "step_size")
    gamma = check_positive_float(gamma, "gamma")
    return lambda epoch: gamma ** (epoch // step_size)


def _cosine(total_epochs: int = 100, min_factor: float = 0.0) -> Schedule:
    total_epochs = check_positive_int(total_epochs, "total_epochs")
    min_factor = FRACTION.check(min_factor, "min_factor")
    return lambda epoch: (
        min_factor
        + (1 - min_factor) * (1 + math.cos(math.pi * min(epoch, total_epochs) / total_epochs)) / 2
    )


def _warmup_cosine(warmup: int = 0, total: int = 100, min_factor: float = 0.1) -> Schedule:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")
    total = check_positive_int(total, "total")
    if warmup >= total:
        raise ValueError(f"warmup ({warmup}) must be shorter than total ({total})")
    min_factor = FRACTION.check(min_factor, "min_factor")

    def factor(index: int) -> float:
        if index < warmup:  # linear, as nanoGPT: (index + 1) / (warmup + 1)
            return (index + 1) / (warmup + 1)
        progress = min(index - warmup, total - warmup) / (total - warmup)
        return min_factor + (1 - min_factor) * (1 + math.cos(math.pi * progress)) / 2

    return factor


SCHEDULES = {
    "constant": _constant,
    "step": _step,
    "cosine": _cosine,
    "warmup_cosine": _warmup_cosine,
}


def make_schedule(name: str, **options: Any) -> Schedule:
    """A learning-rate schedule: a function from the epoch (0-based) to a factor of the
    initial rate.

    - ``"constant"``: 1.
    - ``"step"``: ``gamma ** (epoch // step_size)`` (as ``torch.optim.lr_scheduler.StepLR``).
    - ``"cosine"``: from 1 down to ``min_factor`` over ``total_epochs``, half a cosine (as
      ``CosineAnnealingLR`` with ``eta_min = min_factor * lr``).
    - ``"warmup_cosine"``: a linear warm-up over the first ``warmup`` indices,
      ``(i + 1) / (warmup + 1)``, then half a cosine from 1 down to ``min_factor`` at index
      ``total`` and after, as nanoGPT's ``get_lr`` (the index counts epochs or steps,
      whichever the caller steps it by).

    Examples
    --------
    >>> from handgrad.training.schedules import make_schedule
    >>> step = make_schedule("step", step_size=10, gamma=0.5)
    >>> [step(epoch) for epoch in (0, 9, 10, 25)]
    [1.0, 1.0, 0.5, 0.25]
    >>> cosine = make_schedule("cosine", total_epochs=4)
    >>> [round(cosine(epoch), 3) for epoch in range(5)]
    [1.0, 0.854, 0.5, 0.146, 0.0]
    >>> warm = make_schedule("warmup_cosine", warmup=3, total=7, min_factor=0.1)
    >>> [round(warm(step), 3) for step in range(9)]
    [0.25, 0.5, 0.75, 1.0, 0.868, 0.55, 0.232, 0.1, 0.1]
    """
    check_choice(name, "schedule", SCHEDULES)
    takes = inspect.signature(SCHEDULES[name]).parameters
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise TypeError(
            f"schedule {name!r} takes {', '.join(takes) or 'no options'}, got {', '.join(unknown)}"
        )
    return SCHEDULES[name](**options)
