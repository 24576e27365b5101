"""Optimizers.

An optimizer holds the parameter arrays of a model (``model.params``) and their state in
lists parallel to them; ``step(grads)`` updates every parameter in place from the gradients
of the last backward (``model.grads``). They follow ``torch.optim``'s update rules, so the
same gradients give the same weights (tested to 1e-12 in float64). On NumPy parameters of
one floating dtype, SGD's and Adam's state is flat and updated in place
(:mod:`handgrad.training.flat`), bit for bit the per-parameter formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from handgrad.core.arrays import convert, namespace, native, to_numpy
from handgrad.core.validation import (
    FRACTION,
    NON_NEGATIVE,
    check_choice,
    check_positive_float,
)
from handgrad.training.flat import FlatState

__all__ = [
    "DEFAULT_LR",
    "OPTIMIZERS",
    "SGD",
    "Adagrad",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "make_optimizer",
]


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
            value = convert(value, namespace(p), dtype=p.dtype, device=p.device)
            if isinstance(buffers[kind][i], np.ndarray):  # in place: it may be a flat view
                np.copyto(buffers[kind][i], value)
            else:
                buffers[kind][i] = value
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
        self._flat = FlatState.over(self.params)
        self._flat_velocity: np.ndarray | None = None  # the buffer the velocities view
        # torch's one call for every parameter (plain SGD), looked up once
        self._add_scaled = native(namespace(self.params[0]), "add_scaled") if self.params else None

    def _buffers(self) -> dict[str, list[Any]]:
        return {"velocity": self.velocity}

    def _velocity_buffer(self) -> tuple[np.ndarray | None, bool]:
        """The flat velocity (after moving a loaded one there) and whether this is the
        first step; None where the velocities are not one buffer's views (some missing)."""
        flat, velocity = self._flat, self.velocity
        if velocity[0] is None and all(v is None for v in velocity):
            self._flat_velocity, views = flat.zeros()
            velocity[:] = views
            return self._flat_velocity, True
        buffer = self._flat_velocity
        if buffer is None or any(v is None or v.base is not buffer for v in velocity):
            if any(v is None for v in velocity):
                return None, False
            buffer, views = flat.zeros()  # a loaded velocity
            for view, v in zip(views, velocity, strict=True):
                np.copyto(view, v)
            self._flat_velocity, velocity[:] = buffer, views
        return self._flat_velocity, False

    def update(self, grads: list[Any]) -> None:
        """One update: ``v = momentum * v + g``; ``p -= lr * (g + momentum * v if nesterov
        else v)``, with ``g = grad + weight_decay * p``."""
        flat = self._flat
        if flat is not None:
            if not self.momentum:
                flat.sgd(grads, self.lr, self.weight_decay)
                return
            velocity, first = self._velocity_buffer()
            if velocity is not None:
                flat.momentum(
                    grads, velocity, first, self.lr, self.momentum, self.nesterov, self.weight_decay
                )
                return
        if self._add_scaled is not None and not self.momentum and not self.weight_decay:
            self._add_scaled(self.params, grads, alpha=-self.lr)
            return
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

    coupled_decay = True  # weight decay as an L2 term in the gradient (AdamW: decoupled)

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
        self._flat = FlatState.over(self.params)
        if self._flat is not None:  # each moment one flat buffer, a view per parameter
            (self._flat_m, self.m), (self._flat_v, self.v) = self._flat.zeros(), self._flat.zeros()
        else:
            self.m: list[Any] = [namespace(p).zeros_like(p) for p in self.params]
            self.v: list[Any] = [namespace(p).zeros_like(p) for p in self.params]

    def _buffers(self) -> dict[str, list[Any]]:
        return {"m": self.m, "v": self.v}

    def _flat_moments(self) -> bool:
        """Whether the moments are still views of the flat buffers (none was replaced)."""
        return all(a.base is self._flat_m for a in self.m) and all(
            a.base is self._flat_v for a in self.v
        )

    def _steps(self) -> int:
        return self.t

    def _set_steps(self, steps: int) -> None:
        self.t = steps

    def update(self, grads: list[Any]) -> None:
        """One update: ``m = b1 m + (1 - b1) g``, ``v = b2 v + (1 - b2) g^2``,
        ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""
        self.t += 1
        if self._flat is not None and self._flat_moments():
            decay = self.weight_decay if self.coupled_decay else 0.0
            self._flat.adam(
                grads, self._flat_m, self._flat_v, self.t, self.lr, self.betas, self.eps, decay
            )
            return
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1**self.t)
        root_correction = math.sqrt(1 - beta2**self.t)
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            xp = namespace(p)
            if self.weight_decay and self.coupled_decay:
                g = g + self.weight_decay * p
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * (g * g)
            p -= step_size * (m / (xp.sqrt(v) / root_correction + self.eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter), as ``torch.optim.AdamW``:
    each step first shrinks a parameter, ``p *= 1 - lr * weight_decay``, then takes Adam's
    step from the gradient alone.

    ``decay="matrices"`` (the default) decays only parameters of two or more dimensions
    (weights and embeddings, not biases or norm scales), as GPT training does with two
    parameter groups; ``"all"`` decays every parameter.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import AdamW
    >>> w, b = np.ones((1, 2)), np.ones(2)
    >>> optimizer = AdamW({"w": w, "b": b}, lr=0.1, weight_decay=0.5)
    >>> optimizer.step({"w": np.zeros((1, 2)), "b": np.zeros(2)})  # no gradient: decay only
    >>> print(w, b)  # the matrix shrinks by lr * weight_decay, the bias does not
    [[0.95 0.95]] [1. 1.]
    """

    coupled_decay = False

    def __init__(
        self,
        params: Mapping[str, Any],
        lr: float = 0.001,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        decay: str = "matrices",
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)
        self.decay = check_choice(decay, "decay", ("matrices", "all"))
        self.decayed = [self.decay == "all" or p.ndim >= 2 for p in self.params]

    def update(self, grads: list[Any]) -> None:
        """One update: ``p *= 1 - lr * weight_decay`` (decayed parameters), then Adam's step
        without weight decay in the gradient."""
        if self.weight_decay:
            shrink = 1 - self.lr * self.weight_decay
            for p, decayed in zip(self.params, self.decayed, strict=True):
                if decayed:
                    p *= shrink
        super().update(grads)


class RMSprop(Optimizer):
    """RMSprop, as ``torch.optim.RMSprop``: each gradient divided by the root of a running
    mean of its squares, ``v = alpha v + (1 - alpha) g^2``, ``p -= lr g / (sqrt(v) + eps)``;
    optional momentum on that step, ``centered`` (the running mean's square subtracted from
    ``v``) and L2 weight decay.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import RMSprop
    >>> w = np.array([1.0, -1.0])
    >>> optimizer = RMSprop({"w": w}, lr=0.01, alpha=0.75)
    >>> optimizer.step({"w": np.array([2.0, -0.5])})  # v = 0.25 g^2: the step is 2 lr sign(g)
    >>> print(w.round(6))
    [ 0.98 -0.98]
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.alpha = FRACTION.check(alpha, "alpha")
        self.eps = check_positive_float(eps, "eps")
        self.weight_decay = NON_NEGATIVE.check(weight_decay, "weight_decay")
        self.momentum = FRACTION.check(momentum, "momentum")
        self.centered = bool(centered)
        self.square_avg: list[Any] = [namespace(p).zeros_like(p) for p in self.params]
        self.grad_avg: list[Any] = [
            namespace(p).zeros_like(p) if self.centered else None for p in self.params
        ]
        self.velocity: list[Any] = [
            namespace(p).zeros_like(p) if self.momentum else None for p in self.params
        ]

    def _buffers(self) -> dict[str, list[Any]]:
        return {"square_avg": self.square_avg, "grad_avg": self.grad_avg, "velocity": self.velocity}

    def update(self, grads: list[Any]) -> None:
        """One update: ``v = alpha v + (1 - alpha) g^2``, ``d = sqrt(v - m^2 if centered
        else v) + eps``, then ``p -= lr g / d`` (or through momentum ``b = mu b + g / d``)."""
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            xp = namespace(p)
            if self.weight_decay:
                g = g + self.weight_decay * p
            v = self.square_avg[i]
            v *= self.alpha
            v += (1 - self.alpha) * (g * g)
            if self.centered:
                m = self.grad_avg[i]
                m *= self.alpha
                m += (1 - self.alpha) * g
                denominator = xp.sqrt(v - m * m) + self.eps
            else:
                denominator = xp.sqrt(v) + self.eps
            if self.momentum:
                b = self.velocity[i]
                b *= self.momentum
                b += g / denominator
                p -= self.lr * b
            else:
                p -= self.lr * (g / denominator)


class Adagrad(Optimizer):
    """Adagrad, as ``torch.optim.Adagrad``: each gradient divided by the root of the sum of
    all its squares so far, ``s += g^2``, ``p -= lr_t g / (sqrt(s) + eps)``, with
    ``lr_t = lr / (1 + (t - 1) lr_decay)`` at step t, and L2 weight decay.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.training.optim import Adagrad
    >>> w = np.array([1.0, -1.0])
    >>> optimizer = Adagrad({"w": w}, lr=0.1)
    >>> optimizer.step({"w": np.array([3.0, -0.5])})  # the first step: lr sign(g)
    >>> print(w.round(6))
    [ 0.9 -0.9]
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        super().__init__(params, lr)
        self.lr_decay = NON_NEGATIVE.check(lr_decay, "lr_decay")
        self.weight_decay = NON_NEGATIVE.check(weight_decay, "weight_decay")
        start = NON_NEGATIVE.check(initial_accumulator_value, "initial_accumulator_value")
        self.eps = check_positive_float(eps, "eps")
        self.t = 0
        self.sum: list[Any] = [namespace(p).zeros_like(p) + start for p in self.params]

    def _buffers(self) -> dict[str, list[Any]]:
        return {"sum": self.sum}

    def _steps(self) -> int:
        return self.t

    def _set_steps(self, steps: int) -> None:
        self.t = steps

    def update(self, grads: list[Any]) -> None:
        """One update: ``s += g^2``, ``p -= lr / (1 + (t - 1) lr_decay) g / (sqrt(s) + eps)``."""
        self.t += 1
        rate = self.lr / (1 + (self.t - 1) * self.lr_decay)
        for p, g, s in zip(self.params, grads, self.sum, strict=True):
            if self.weight_decay:
                g = g + self.weight_decay * p
            s += g * g
            p -= rate * (g / (namespace(p).sqrt(s) + self.eps))


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")
DEFAULT_LR = {
    "sgd": 0.1,
    "momentum": 0.1,
    "adam": 0.01,
    "adamw": 0.01,
    "rmsprop": 0.01,
    "adagrad": 0.1,
}
_KINDS = {
    "sgd": SGD,
    "momentum": SGD,
    "adam": Adam,
    "adamw": AdamW,
    "rmsprop": RMSprop,
    "adagrad": Adagrad,
}
_OPTIONS = {
    SGD: ("momentum", "nesterov", "weight_decay"),
    Adam: ("betas", "eps", "weight_decay"),
    AdamW: ("betas", "eps", "weight_decay", "decay"),
    RMSprop: ("alpha", "eps", "weight_decay", "momentum", "centered"),
    Adagrad: ("lr_decay", "weight_decay", "initial_accumulator_value", "eps"),
}


def make_optimizer(
    name: str, params: Mapping[str, Any], lr: float | None = None, **options: Any
) -> Optimizer:
    """An optimizer by name: ``"sgd"`` (plain), ``"momentum"`` (SGD with Nesterov momentum
    0.9), ``"adam"``, ``"adamw"``, ``"rmsprop"`` or ``"adagrad"``, with the learning rate
    ``lr`` or the name's default (:data:`DEFAULT_LR`).

    ``options`` go to the optimizer's class and override the name's presets: ``momentum``,
    ``nesterov`` and ``weight_decay`` for the SGD names (:class:`SGD`); ``betas``, ``eps``
    and ``weight_decay`` for :class:`Adam` (and ``decay`` for :class:`AdamW`); see
    :class:`RMSprop` and :class:`Adagrad` for theirs.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.training.optim import make_optimizer
    >>> optimizer = make_optimizer("momentum", hg.mlp([3, 2], rng=0).params)
    >>> type(optimizer).__name__, optimizer.lr, optimizer.momentum, optimizer.nesterov
    ('SGD', 0.1, 0.9, True)
    >>> type(make_optimizer("adamw", hg.mlp([3, 2], rng=0).params, weight_decay=0.1)).__name__
    'AdamW'
    """
    check_choice(name, "optimizer", OPTIMIZERS)
    lr = DEFAULT_LR[name] if lr is None else lr
    kind = _KINDS[name]
    unknown = sorted(set(options) - set(_OPTIONS[kind]))
    if unknown:
        raise TypeError(
            f"optimizer {name!r} takes the options {', '.join(_OPTIONS[kind])}, "
            f"got {', '.join(unknown)}"
        )
    preset = {"momentum": 0.9, "nesterov": True} if name == "momentum" else {}
    return kind(params, lr, **{**preset, **options})
