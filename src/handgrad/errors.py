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
    """Base class of the errors handgrad raises on purpose.

    Examples
    --------
    >>> from handgrad.data import load_dataset
    >>> from handgrad.errors import HandgradError
    >>> try:
    ...     load_dataset("mnist")
    ... except HandgradError as err:  # catches every handgrad error, whatever its kind
    ...     print(type(err).__name__, isinstance(err, HandgradError))
    DataError True
    """


class DataError(HandgradError, ValueError):
    """A data set or CSV file cannot be used: missing, empty, ragged, non-numeric, ...

    Examples
    --------
    >>> from handgrad.data import load_dataset
    >>> from handgrad.errors import DataError
    >>> try:
    ...     load_dataset("mnist")
    ... except DataError as err:
    ...     print(type(err).__name__, isinstance(err, ValueError))
    DataError True
    """


class ModelFileError(HandgradError, ValueError):
    """A model file cannot be loaded: not a handgrad file, damaged, or for another model.

    Examples
    --------
    >>> import tempfile
    >>> from handgrad.errors import ModelFileError
    >>> from handgrad.io import load_classifier
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     try:
    ...         load_classifier(f"{folder}/missing.npz")
    ...     except ModelFileError as err:
    ...         print(type(err).__name__, isinstance(err, ValueError))
    ModelFileError True
    """


class TrainingDivergedError(HandgradError, RuntimeError):
    """The loss became NaN or infinite during training.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.errors import TrainingDivergedError
    >>> from handgrad.optim import SGD
    >>> from handgrad.train import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.full((2, 2), 1e10), np.array([0, 1])
    >>> try:
    ...     with np.errstate(over="ignore", invalid="ignore"):  # lr=1e300: overflow on purpose
    ...         fit(model, hg.CrossEntropyLoss(), SGD(model.params(), lr=1e300), X, y, epochs=3)
    ... except TrainingDivergedError as err:
    ...     print(type(err).__name__, err.epoch, err.step, isinstance(err, RuntimeError))
    TrainingDivergedError 2 2 True
    """

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class NonFiniteLossError(HandgradError, ValueError):
    """The loss is NaN or infinite at a point a gradient check perturbed to.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.errors import NonFiniteLossError
    >>> try:  # sqrt is not defined left of 0, where the step -eps lands
    ...     with np.errstate(invalid="ignore"):
    ...         hg.numerical_gradient(lambda v: np.sum(np.sqrt(v)), np.array([4.0, 0.0]))
    ... except NonFiniteLossError as err:
    ...     print(type(err).__name__, isinstance(err, ValueError))
    NonFiniteLossError True
    """


class TrainingInterruptedError(HandgradError):
    """Training was asked to stop (Ctrl-C); the progress was checkpointed first.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.errors import TrainingInterruptedError
    >>> from handgrad.optim import SGD
    >>> from handgrad.train import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> try:  # interrupted() is asked after every step; here it says stop at once
    ...     fit(model, hg.CrossEntropyLoss(), SGD(model.params()), X, y, interrupted=lambda: True)
    ... except TrainingInterruptedError as err:
    ...     print(type(err).__name__, err.epoch, err.step)
    TrainingInterruptedError 1 1
    """

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step
