"""handgrad's own error types. Each is also a standard exception (ValueError, RuntimeError)
so that code which catches those keeps working."""

from __future__ import annotations

from typing import Any

__all__ = [
    "DataError",
    "GradientCheckError",
    "GradientCheckWarning",
    "HandgradError",
    "ModelFileError",
    "NonFiniteLossError",
    "TrainingDivergedError",
    "TrainingInterruptedError",
    "WorkerLostError",
]


class HandgradError(Exception):
    """Base class of the errors handgrad raises on purpose.

    Examples
    --------
    >>> from handgrad.data import load_dataset
    >>> from handgrad.core.errors import HandgradError
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
    >>> from handgrad.core.errors import DataError
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
    >>> from handgrad.core.errors import ModelFileError
    >>> from handgrad.app.model_files import load_classifier
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
    >>> from handgrad.core.errors import TrainingDivergedError
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.full((2, 2), 1e10), np.array([0, 1])
    >>> try:
    ...     with np.errstate(over="ignore", invalid="ignore"):  # lr=1e300: overflow on purpose
    ...         fit(model, hg.CrossEntropyLoss(), SGD(model.params, lr=1e300), X, y, epochs=3)
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
    >>> from handgrad.core.errors import NonFiniteLossError
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
    >>> from handgrad.core.errors import TrainingInterruptedError
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.fit import fit
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> try:  # interrupted() is asked after every step; here it says stop at once
    ...     fit(model, hg.CrossEntropyLoss(), SGD(model.params), X, y, interrupted=lambda: True)
    ... except TrainingInterruptedError as err:
    ...     print(type(err).__name__, err.epoch, err.step)
    TrainingInterruptedError 1 1
    """

    def __init__(self, message: str, *, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class WorkerLostError(HandgradError, RuntimeError):
    """A worker of a data-parallel run stopped answering: it died, or did not reach an
    all-reduce within the process group's timeout. The run cannot go on without it.

    Examples
    --------
    >>> from handgrad.core.errors import WorkerLostError
    >>> err = WorkerLostError("worker 0 of 2 lost contact with the others at step 3")
    >>> isinstance(err, RuntimeError), str(err).split(" at ")[0]
    (True, 'worker 0 of 2 lost contact with the others')
    """


class GradientCheckError(HandgradError, ValueError):
    """A gradient check failed; ``report`` holds every array's result.

    A :class:`~handgrad.core.errors.HandgradError`, and a ``ValueError``, so the seed notebook's
    ``except ValueError`` still catches it.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> class Doubled(hg.Tanh):  # a slip: dL/dx twice too large
    ...     def backward(self, dy):
    ...         return 2 * super().backward(dy)
    >>> try:
    ...     hg.check_layer(Doubled(), np.random.default_rng(0).standard_normal((4, 3)))
    ... except hg.GradientCheckError as err:
    ...     print(type(err).__name__, err.failure.name, isinstance(err, ValueError))
    GradientCheckError x True
    """

    def __init__(self, report: Any) -> None:
        self.report = report
        self.failure = report.failures[0]
        others = len(report.failures) - 1
        more = f" ({others} more check{'s' if others > 1 else ''} failed too)" if others else ""
        super().__init__(
            f"{self.failure.describe()}; threshold {report.threshold:g}, eps {report.eps:g}{more}"
        )


class GradientCheckWarning(UserWarning):
    """A gradient check was asked of data it cannot resolve well (e.g. float32).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> import handgrad as hg
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = hg.numerical_gradient(lambda v: (v**2).sum(), np.ones(2, dtype=np.float32))
    >>> [type(w.message).__name__ for w in caught], issubclass(hg.GradientCheckWarning, UserWarning)
    (['GradientCheckWarning'], True)
    """
