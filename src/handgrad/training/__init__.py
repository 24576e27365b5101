"""Training: optimizers, learning-rate schedules, the fit loop and checkpoints."""

from handgrad.training.fit import History, Progress, evaluate, fit
from handgrad.training.optim import SGD, Adam, Optimizer, make_optimizer
from handgrad.training.schedules import make_schedule

__all__ = [
    "SGD",
    "Adam",
    "History",
    "Optimizer",
    "Progress",
    "evaluate",
    "fit",
    "make_optimizer",
    "make_schedule",
]
