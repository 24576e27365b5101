"""handgrad's own error types. Each is also a standard exception (ValueError, RuntimeError)
so that code which catches those keeps working."""

from __future__ import annotations

__all__ = [
    "DataError",
    "HandgradError",
    "ModelFileError",
    "NonFiniteLossError",
    "TrainingDivergedError",
    "TrainingInterruptedError",
]


class HandgradError(Exception):
    """Base class of the errors handgrad raises on purpose."""


class DataError(HandgradError, ValueError):
    """A data set or CSV file cannot be used: missing, empty, ragged, non-numeric, ..."""


class ModelFileError(HandgradError, ValueError):
    """A model file cannot be loaded: not a handgrad file, damaged, or for another model."""


class TrainingDivergedError(HandgradError, RuntimeError):
    """The loss became NaN or infinite during training."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class NonFiniteLossError(HandgradError, ValueError):
    """The loss is NaN or infinite at a point a gradient check perturbed to."""


class TrainingInterruptedError(HandgradError):
    """Training was asked to stop (Ctrl-C); the progress was checkpointed first."""

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
