"""Optimizers.

An optimizer holds the parameter arrays of a model (``model.params``) and their state in
lists parallel to them; ``step(grads)`` updates every parameter in place from the gradients
of the last backward (``model.grads``). They follow ``torch.optim``'s update rules, so the
same gradients give the same weights (tested to 1e-12 in float64).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.validation import (
    FRACTION,
    NON_NEGATIVE,
    check_choice,
    check_positive_float,
)

__all__ = ["DEFAULT_LR", "OPTIMIZERS", "SGD", "Adam", "Optimizer", "make_optimizer"]


class Optimizer:
    """Base class: the parameters by name, the learning rate, and the gradient look-up.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import Optimizer
    >>> class SignSGD(Optimizer):  # a subclass writes update: p -= lr * sign(grad)
    ...     def update(self, grads):
    ...         for p, g in zip(self.params, grads):
    ...             p -= self.lr * np.sign(g)
    >>> w = np.array([1.0, -1.0])
    >>> SignSGD({"w": w}, lr=0.5).step({"w": np.array([3.0, -0.1])})
    >>> print(w)
    [ 0.5 -0.5]
    """

    def __init__(self, params: Mapping[str, Any], lr: float) -> None:
        if not isinstance(params, Mapping) or not params:
            got = "an empty dict" if isinstance(params, Mapping) else type(params).__name__
            raise ValueError(
                f"params must be a non-empty dict of name -> array, such as model.params, got {got}"
            )
        self.names = list(params)
        self.params = list(params.values())
        self.lr = check_positive_float(lr, "lr")

    def _gradients(self, grads: Mapping[str, Any]) -> list[Any]:
        try:
            return [grads[name] for name in self.names]
        except KeyError as err:
            raise KeyError(
                f"grads has no entry {err.args[0]!r}; pass model.grads after model.backward"
            ) from None

    def step(self, grads: Mapping[str, Any]) -> None:
        """Update every parameter in place from ``grads`` (keyed as the parameters, each
        an array of its parameter's shape); nothing changes when one does not fit.

        Examples
        --------
        >>> import numpy as np
        >>> from handgrad.training.optim import SGD
        >>> SGD({"w": np.ones((2, 3))}).step({"w": np.ones(3)})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
            ...
        ValueError: grads['w'] has shape (3,), but the parameter 'w' has shape (2, 3); ...
        """
        values = self._gradients(grads)
        for name, p, g in zip(self.names, self.params, values, strict=True):
            if not hasattr(g, "shape") or not hasattr(g, "dtype"):
                raise TypeError(
                    f"grads[{name!r}] must be an array of shape {tuple(p.shape)}, got "
                    f"{type(g).__name__}"
                )
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(
                    f"grads[{name!r}] has shape {tuple(g.shape)}, but the parameter {name!r} has "
                    f"shape {tuple(p.shape)}; pass model.grads after model.backward"
                )
        self.update(values)

    def update(self, grads: list[Any]) -> None:
        """:meth:`step` with the gradients as a list in the order of ``names``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state as NumPy arrays keyed ``"<kind>/<parameter>"`` and numbers,
        for checkpoints."""
        state: dict[str, Any] = {"step": self._steps()}
        for kind, values in self._buffers().items():
            for name, value in zip(self.names, values, strict=True):
                if value is not None:
                    state[f"{kind}/{name}"] = np.array(to_numpy(value))
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (of an optimizer of the same kind and parameters)."""
        buffers = self._buffers()
        for key, value in state.items():
            kind, _, name = key.partition("/")
            if key == "step":
                continue
            if kind not in buffers or name not in self.names:
                raise KeyError(f"state holds {key!r}, which this {type(self).__name__} has not")
            i = self.names.index(name)
            p = self.params[i]
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(
                    f"state[{key!r}] has shape {tuple(value.shape)}, the "
                    f"parameter {name!r} has {tuple(p.shape)}"
                )
            buffers[kind][i] = convert(value, namespace(p), dtype=p.dtype, device=p.device)
        self._set_steps(int(state.get("step", 0)))

    def _buffers(self) -> dict[str, list[Any]]:
        return {}

    def _steps(self) -> int:
        return 0

    def _set_steps(self, steps: int) -> None:
        pass


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight
    decay, as ``torch.optim.SGD`` (no dampening).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import SGD
    >>> w = np.array([1.0, -2.0])
    >>> optimizer = SGD({"w": w}, lr=0.1)
    >>> optimizer.step({"w": np.array([0.5, 0.5])})  # w -= lr * grad, in place
    >>> print(w)
    [ 0.95 -2.05]

    With momentum the velocity ``v = momentum * v + g`` takes the step:

    >>> w = np.array([1.0])
    >>> optimizer = SGD({"w": w}, lr=0.1, momentum=0.9)
    >>> for _ in range(2):
    ...     optimizer.step({"w": np.array([1.0])})  # v = 1, then 0.9 * 1 + 1 = 1.9
    >>> print(w.round(6))  # 1 - 0.1 * 1 - 0.1 * 1.9
    [0.71]
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = FRACTION.check(momentum, "momentum")
        if nesterov and not self.momentum:
            raise ValueError("nesterov=True needs a momentum greater than 0, got momentum=0")
        self.nesterov = bool(nesterov)
        self.weight_decay = NON_NEGATIVE.check(weight_decay, "weight_decay")
        self.velocity: list[Any] = [None] * len(self.params)

    def _buffers(self) -> dict[str, list[Any]]:
        return {"velocity": self.velocity}

    def update(self, grads: list[Any]) -> None:
        """One update: ``v = momentum * v + g``; ``p -= lr * (g + momentum * v if nesterov
        else v)``, with ``g = grad + weight_decay * p``."""
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if self.momentum:
                v = self.velocity[i]
                if v is None:
                    v = self.velocity[i] = namespace(g).asarray(g, copy=True)
                else:
                    v *= self.momentum
                    v += g
                g = g + self.momentum * v if self.nesterov else v
            p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction and L2 weight decay, as ``torch.optim.Adam``.

    The step counter advances once per ``step``, not once per parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import Adam
    >>> w = np.array([1.0, -2.0])
    >>> optimizer = Adam({"w": w}, lr=0.1)
    >>> optimizer.step({"w": np.array([0.5, -3.0])})
    >>> print(w.round(6))  # the first step moves each element by lr against its gradient
    [ 0.9 -1.9]
    >>> optimizer.t
    1
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, tuple | list) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = (FRACTION.check(betas[0], "betas[0]"), FRACTION.check(betas[1], "betas[1]"))
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = NON_NEGATIVE.check(weight_decay, "weight_decay")
        self.t = 0
        self.m: list[Any] = [namespace(p).zeros_like(p) for p in self.params]
        self.v: list[Any] = [namespace(p).zeros_like(p) for p in self.params]

    def _buffers(self) -> dict[str, list[Any]]:
        return {"m": self.m, "v": self.v}

    def _steps(self) -> int:
        return self.t

    def _set_steps(self, steps: int) -> None:
        self.t = steps

    def update(self, grads: list[Any]) -> None:
        """One update: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
        ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.t)
        root_correction = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            xp = namespace(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            p -= step_size * (m / (xp.sqrt(v) / root_correction + self.eps))


OPTIMIZERS = ("sgd", "momentum", "adam")
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.1, "adam": 0.01}
_OPTIONS = {
    "sgd": ("momentum", "nesterov", "weight_decay"),
    "adam": ("betas", "eps", "weight_decay"),
}


def make_optimizer(
    name: str, params: Mapping[str, Any], lr: float | None = None, **options: Any
) -> Optimizer:
    """``"sgd"`` (plain), ``"momentum"`` (SGD with Nesterov momentum 0.9) or ``"adam"``,
    with the learning rate ``lr`` or the name's default (:data:`DEFAULT_LR`).

    ``options`` go to the optimizer and override the name's presets: ``momentum``,
    ``nesterov`` and ``weight_decay`` for the SGD names (:class:`SGD`); ``betas``, ``eps``
    and ``weight_decay`` for ``"adam"`` (:class:`Adam`).

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.training.optim import make_optimizer
    >>> optimizer = make_optimizer("momentum", hg.mlp([3, 2], rng=0).params)
    >>> type(optimizer).__name__, optimizer.lr, optimizer.momentum, optimizer.nesterov
    ('SGD', 0.1, 0.9, True)
    """
    check_choice(name, "optimizer", OPTIMIZERS)
    lr = DEFAULT_LR[name] if lr is None else lr
    kind = "adam" if name == "adam" else "sgd"
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise TypeError(
            f"optimizer {name!r} takes the options {', '.join(_OPTIONS[kind])}, "
            f"got {', '.join(unknown)}"
        )
    if name == "adam":
        return Adam(params, lr, **options)
    preset = {"momentum": 0.9, "nesterov": True} if name == "momentum" else {}
    return SGD(params, lr, **{**preset, **options})
