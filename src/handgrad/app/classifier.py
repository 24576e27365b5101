"""A trained classifier: the model with what it needs around it to be used on raw data
(the standardisation fitted on its training data, the feature and class names)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.validation import check_array
from handgrad.data import Standardizer
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Softmax

__all__ = ["Classifier"]


@dataclass
class Classifier:
    """A model that outputs logits, with its input scaling and names.

    ``predict_proba`` and ``predict`` take raw (unscaled) NumPy features of shape
    (n, features) and return NumPy results whatever the model's backend.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.app.classifier import Classifier
    >>> from handgrad.data import Standardizer
    >>> X = np.array([[1.0, 200.0], [3.0, 100.0], [2.0, 150.0]])  # raw features
    >>> classifier = Classifier(hg.mlp([2, 2], rng=0), Standardizer().fit(X), ("no", "yes"))
    >>> classifier.predict_proba(X).shape, classifier.predict(X).tolist()
    ((3, 2), [1, 0, 0])
    """

    model: Sequential
    standardizer: Standardizer | None
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...] = ()
    target_name: str = "target"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def standardiser(self) -> Standardizer | None:
        """The old name of :attr:`standardizer`."""
        warnings.warn(
            "Classifier.standardiser is deprecated: use Classifier.standardizer",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.standardizer

    def _inputs(self, X: Any) -> Any:
        X = np.asarray(X, dtype=np.float64)
        check_array(X, "X", ndim=2, layout="(examples, features)")
        if self.standardizer is not None:
            X = self.standardizer.transform(X)
        weight = self.model.params[next(iter(self.model.params))]
        return convert(X, namespace(weight), dtype=weight.dtype, device=weight.device)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, classes), each row summing to 1."""
        logits = self.model.forward(self._inputs(X))
        return np.asarray(to_numpy(Softmax().forward(logits)), dtype=np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """Class indices, (n,): the most probable class of each row."""
        return np.argmax(self.predict_proba(X), axis=1)
