"""Training: optimizers, learning-rate schedules, gradient clipping, the fit loop and
checkpoints."""

from handgrad.training.clipping import clip_grad_norm
from handgrad.training.fit import evaluate, fit
from handgrad.training.history import History, Progress
from handgrad.training.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    Optimizer,
    RMSprop,
    make_optimizer,
)
from handgrad.training.schedules import make_schedule

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "History",
    "Optimizer",
    "Progress",
    "RMSprop",
    "clip_grad_norm",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_schedule",
]
