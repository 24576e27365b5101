"""``SimpleNN``: the seed notebook's two-layer network with the seed's attributes,
methods and column layout, on handgrad's layers, checker and training step."""

from __future__ import annotations

import dataclasses
from typing import Any

from handgrad.core.arrays import BACKENDS, convert, float_dtype_name, get_namespace, namespace
from handgrad.core.errors import GradientCheckError
from handgrad.core.random import make_rng
from handgrad.core.validation import check_array, check_choice, check_positive_float
from handgrad.gradcheck.check import (
    DEFAULT_EPS,
    DEFAULT_THRESHOLD,
    check_gradients,
    numerical_gradient,
)
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Linear, LogSoftmax, Sigmoid
from handgrad.nn.losses import NLLLoss

__all__ = ["SimpleNN"]


class SimpleNN:
    """The seed notebook's network: ``h_1 = w_1 x``, ``z_1 = sigmoid(h_1)``,
    ``h_2 = w_2 z_1``, ``z_2 = log_softmax(h_2)``, with loss ``-sum(label * z_2)``.

    Arrays are in the seed's column layout: ``x`` is (input_size, k), ``label`` is
    (output_size, k). ``backend`` says where the arithmetic runs ('numpy' or 'torch');
    arrays from another library are taken in and results handed back in the caller's
    library, so the seed's PyTorch cells run unchanged on either backend.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> net = hg.SimpleNN(10, 20, 3, rng=0)
    >>> x = np.arange(10.0).reshape(10, 1)  # one example, as a column
    >>> label = np.array([[0.0], [0.0], [1.0]])
    >>> dw_1, dw_2 = net.backward(x, label)
    >>> dw_1.shape, dw_2.shape
    ((20, 10), (3, 20))
    >>> net.gradient_check(x, label)
    <BLANKLINE>
    Performing gradient check for parameter w_1 with size = 200.
    Gradient check for parameter w_1 is passed.
    <BLANKLINE>
    Performing gradient check for parameter w_2 with size = 60.
    Gradient check for parameter w_2 is passed.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        backend: str = "numpy",
        *,
        rng: Any = None,
        dtype: str = "float64",
        device: Any = None,
    ) -> None:
        check_choice(backend, "backend", BACKENDS)
        gen = make_rng(rng)
        options = {
            "bias": False,
            "init": "small_normal",
            "rng": gen,
            "backend": backend,
            "dtype": dtype,
            "device": device,
        }
        self.model = Sequential(
            Linear(input_size, hidden_size, **options),
            Sigmoid(),
            Linear(hidden_size, output_size, **options),
            LogSoftmax(),
        )
        self.backend = backend
        self._xp = get_namespace(backend)
        self._nll = NLLLoss(reduction="sum")
        self.cache: dict[str, Any] = {}

    def __repr__(self) -> str:
        out, hidden = self.w_2.shape
        return (
            f"SimpleNN(input_size={self.w_1.shape[1]}, hidden_size={hidden}, "
            f"output_size={out}, backend={self.backend!r})"
        )

    @property
    def w_1(self) -> Any:
        """Hidden-layer weight, (hidden_size, input_size)."""
        return self.model[0].params["weight"]

    @w_1.setter
    def w_1(self, value: Any) -> None:
        self.model.load_state_dict({"0.weight": value, "2.weight": self.w_2})

    @property
    def w_2(self) -> Any:
        """Output-layer weight, (output_size, hidden_size)."""
        return self.model[2].params["weight"]

    @w_2.setter
    def w_2(self, value: Any) -> None:
        self.model.load_state_dict({"0.weight": self.w_1, "2.weight": value})

    def _take_in(self, x: Any, label: Any = None) -> tuple[Any, Any, Any]:
        """Rows-layout copies of x (and label) in the backend, and a way to hand results back."""
        check_array(x, "x", ndim=2, layout="(input_size, k), the seed's column layout")
        if x.shape[0] != self.w_1.shape[1]:
            raise ValueError(
                f"x must have shape ({self.w_1.shape[1]}, k) (input_size rows, one column per "
                f"example), got {tuple(x.shape)}"
            )
        caller = namespace(x)
        dtype = float_dtype_name(self.w_1)

        def adopt(a: Any) -> Any:
            return (
                a
                if namespace(a) is self._xp and a.dtype == self.w_1.dtype
                else convert(a, self._xp, dtype=dtype, device=self.w_1.device)
            )

        def hand_back(a: Any) -> Any:
            return a if caller is self._xp else convert(a, caller, device=x.device)

        rows = adopt(x).mT
        if label is None:
            return rows, None, hand_back
        check_array(label, "label", ndim=2, layout="(output_size, k)")
        if tuple(label.shape) != (self.w_2.shape[0], x.shape[1]):
            raise ValueError(
                f"label must have shape ({self.w_2.shape[0]}, {x.shape[1]}) (output_size, k) "
                f"to match x, got {tuple(label.shape)}"
            )
        return rows, adopt(label).mT, hand_back

    def _log_probs(self, rows: Any) -> Any:
        z_1 = self.model[1].forward(self.model[0].forward(rows))  # k,hidden
        z_2 = self.model[3].forward(self.model[2].forward(z_1))  # k,out
        self.cache = {"z_1": z_1.mT, "z_2": z_2.mT}
        return z_2

    def forward(self, x: Any) -> Any:
        """Log-probabilities, (output_size, k), for ``x`` of shape (input_size, k)."""
        rows, _, hand_back = self._take_in(x)
        return hand_back(self._log_probs(rows).mT)

    def loss(self, x: Any, label: Any) -> Any:
        """Cross-entropy ``-sum(label * log_pred)`` over all k examples."""
        rows, targets, hand_back = self._take_in(x, label)
        return hand_back(self._nll.forward(self._log_probs(rows), targets))

    def _backprop(self, rows: Any, targets: Any) -> Any:
        loss = self._nll.forward(self._log_probs(rows), targets)
        # dJ/dh_2 = z_2 - label;  dJ/dh_1 = (w_2^T dJ/dh_2) * z_1 (1 - z_1)
        self.model.backward(self._nll.backward())
        return loss

    def backward(self, x: Any, label: Any) -> tuple[Any, Any]:
        """Return ``(dw_1, dw_2)``, the gradients of :meth:`loss`, by hand-written backprop."""
        rows, targets, hand_back = self._take_in(x, label)
        self._backprop(rows, targets)
        return hand_back(self.model[0].grads["weight"]), hand_back(self.model[2].grads["weight"])

    def sgd_step(self, x: Any, label: Any, lr: float) -> Any:
        """One step of gradient descent, ``w <- w - lr * dw`` for ``w_1`` and ``w_2``, in place.

        Returns the loss before the step.
        """
        lr = check_positive_float(lr, "lr")
        rows, targets, hand_back = self._take_in(x, label)
        loss = self._backprop(rows, targets)
        for layer in (self.model[0], self.model[2]):
            layer.params["weight"] -= lr * layer.grads["weight"]
        return hand_back(loss)

    def numerical_gradients(self, x: Any, label: Any, epsilon: float) -> tuple[Any, Any]:
        """Return ``(dw_1, dw_2)`` by central differences, element by element, as the seed."""
        rows, targets, hand_back = self._take_in(x, label)
        epsilon = check_positive_float(epsilon, "epsilon")

        def loss_at(_: Any) -> Any:
            return self._nll.forward(self._log_probs(rows), targets)

        return tuple(
            hand_back(numerical_gradient(loss_at, w, epsilon)) for w in (self.w_1, self.w_2)
        )

    def gradient_check(
        self,
        x: Any,
        label: Any,
        epsilon: float = DEFAULT_EPS,
        threshold: float = DEFAULT_THRESHOLD,
    ) -> None:
        """The seed's gradient check: print a line per parameter, raise on the first failure.

        Uses handgrad's tolerance (relative threshold plus a rounding-noise floor, see
        :mod:`handgrad.gradcheck`). Raises :class:`GradientCheckError`, a ``ValueError``.
        """
        rows, targets, _ = self._take_in(x, label)
        report = check_gradients(
            self.model,
            self._nll,
            rows,
            targets,
            eps=epsilon,
            threshold=threshold,
            raise_on_failure=False,
        )
        for name, key in (("w_1", "0.weight"), ("w_2", "2.weight")):
            check = dataclasses.replace(report[key], name=name)
            print(f"\nPerforming gradient check for parameter {name} with size = {check.size}.")
            if not check.passed:
                raise GradientCheckError(dataclasses.replace(report, checks=(check,)))
            print(f"Gradient check for parameter {name} is passed.")
