"""The compiled training path: whole runs of steps in one call to a numba kernel
(:mod:`handgrad.training.fused_kernels`), for the models it knows, with the weights of the
reference path (``step.Step``) to 1e-12 in float64.

:func:`fit` uses it by itself when numba (the ``numba`` extra) is installed and the run is
one it supports; otherwise, or with ``fit(compiled=False)`` or the environment variable
``HANDGRAD_COMPILED=0``, it runs the reference NumPy path. Supported:

- a chain of ``Linear`` layers (with bias), each but the last followed by nothing or one
  of the activations ``Sigmoid``, ``Tanh``, ``ReLU``, ``LeakyReLU``, ``ELU``, ``GELU``
  (either form), ``SiLU``, ``Softplus``;
- ``CrossEntropyLoss`` (class labels or probabilities), ``MSELoss`` and
  ``BCEWithLogitsLoss`` (no ``weight`` or ``pos_weight``), mean or sum, or such a loss
  times a constant (an object whose ``as_scaled()`` returns ``(loss, factor)``, as the
  scikit-learn estimators' losses do); the L2 penalty ``alpha``; sample weights;
- ``SGD`` (momentum, Nesterov, weight decay), ``Adam`` and ``AdamW`` on the model's own
  parameters, in its order;
- dense NumPy data and parameters, all float32 or all float64, no tied weights, one
  process (no ``parallel``).

The first run in a fresh environment compiles the kernel, once per dtype whatever the
depth (about 7 s on this project's 2-core machine, more when it is busy), and caches it on
disk: next to the module, or in numba's per-user cache (``NUMBA_CACHE_DIR``) where the
package is read-only. A later process loads it in under half a second. After a compiled
run each Linear layer's ``grads`` hold the last step's loss gradients, as after the
reference path.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from handgrad.nn.layers import ELU, GELU, LeakyReLU, Linear, ReLU, Sigmoid, SiLU, Softplus, Tanh
from handgrad.nn.losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from handgrad.nn.protocol import chain
from handgrad.training.optim import SGD, Adam, AdamW, Optimizer

__all__ = ["ENVIRONMENT_VARIABLE", "compiled_steps", "unsupported"]

ENVIRONMENT_VARIABLE = "HANDGRAD_COMPILED"

_ACTIVATIONS = {
    Sigmoid: "sigmoid",
    Tanh: "tanh",
    ReLU: "relu",
    LeakyReLU: "leaky_relu",
    ELU: "elu",
    GELU: "gelu",
    SiLU: "silu",
    Softplus: "softplus",
}
_PATCHABLE = {"forward", "forward_unchecked", "backward", "backward_unchecked"}
_LOSSES = {CrossEntropyLoss: "cross_entropy", MSELoss: "mse", BCEWithLogitsLoss: "bce"}


def _kernels() -> Any:
    """The kernels module, or None without numba (or SciPy, whose BLAS numba calls)."""
    try:
        import scipy.linalg.cython_blas  # noqa: F401

        from handgrad.training import fused_kernels
    except ImportError:
        return None
    return fused_kernels


def _activation(layer: Any) -> tuple[str, float, float] | None:
    """The kernel's name and options of a supported activation layer, or None."""
    name = _ACTIVATIONS.get(type(layer))
    if name == "leaky_relu":
        return name, float(layer.negative_slope), 0.0
    if name == "elu":
        return name, float(layer.alpha), 0.0
    if name == "gelu" and layer.approximate == "tanh":
        return "gelu_tanh", 0.0, 0.0
    if name == "softplus":
        return name, float(layer.beta), float(layer.threshold)
    return None if name is None else (name, 0.0, 0.0)


def _layers(model: Any) -> tuple[list[Any], list[tuple[str, float, float]]] | str:
    """The Linear layers and the activation after each, or why the model is not a chain
    the kernel runs."""
    linears: list[Any] = []
    after: list[tuple[str, float, float]] = []
    for layer in chain(model):
        if _PATCHABLE & set(vars(layer)):
            return f"a {type(layer).__name__}'s methods are replaced on the instance"
        if type(layer) is Linear:
            if "bias" not in layer.params:
                return "a Linear layer has no bias"
            if len(linears) > len(after):
                after.append(("identity", 0.0, 0.0))
            linears.append(layer)
            continue
        activation = _activation(layer)
        if activation is None:
            return f"the model holds a {type(layer).__name__}, which the compiled step lacks"
        if len(linears) != len(after) + 1:
            return "an activation does not follow a Linear layer"
        after.append(activation)
    if not linears or len(after) == len(linears):
        return "the model does not end with a Linear layer"
    after.append(("identity", 0.0, 0.0))
    return linears, after


def _loss(loss: Any) -> tuple[str, Any, float] | str:
    """The kernel's loss name, the loss and its constant factor, or why not."""
    factor = 1.0
    scaled = getattr(loss, "as_scaled", None)
    if scaled is not None:
        loss, factor = scaled()
    name = _LOSSES.get(type(loss))
    if name is None:
        return f"the loss {type(loss).__name__} is not one the compiled step computes"
    if name == "bce" and (loss.weight is not None or loss.pos_weight is not None):
        return "BCEWithLogitsLoss has weight or pos_weight"
    return name, loss, float(factor)


def unsupported(step: Any, model: Any, loss: Any, optimizer: Optimizer, order: list[int]) -> str:
    """Why the compiled path cannot run this training (an empty string when it can).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.fused import unsupported
    >>> from handgrad.training.optim import RMSprop
    >>> from handgrad.training.step import Step
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> optimizer, loss = RMSprop(model.params), hg.CrossEntropyLoss()
    >>> unsupported(Step(model, loss, optimizer, X, y, 0.0), model, loss, optimizer, [0, 1])
    'the optimizer RMSprop is not one the compiled step runs'
    """
    layers = _layers(model)
    if isinstance(layers, str):
        return layers
    form = _loss(loss)
    if isinstance(form, str):
        return form
    if form[0] != "cross_entropy" and not step.targets_given:
        return f"{type(form[1]).__name__} needs floating-point targets"
    if type(optimizer) not in (SGD, Adam, AdamW):
        return f"the optimizer {type(optimizer).__name__} is not one the compiled step runs"
    if order != list(range(len(order))) or len(order) != 2 * len(layers[0]) or step.tied:
        return "the optimizer does not hold exactly the model's parameters, in its order"
    if step.sparse or type(step.X) is not np.ndarray or step.X.ndim != 2:
        return "X is not a dense NumPy array of (samples, features)"
    dtype = step.X.dtype
    if dtype not in (np.float32, np.float64):
        return f"the data are {dtype}, not float32 or float64"
    arrays = [p for layer in layers[0] for p in layer.params.values()]
    arrays += [a for values in optimizer._buffers().values() for a in values if a is not None]
    if any(type(a) is not np.ndarray or a.dtype != dtype for a in arrays):
        return "the parameters or the optimizer's state are not NumPy arrays of the data's dtype"
    if not all(a.flags.c_contiguous for a in arrays):
        return "a parameter or the optimizer's state is not C-contiguous"
    if isinstance(optimizer, SGD) and len({v is None for v in optimizer.velocity}) > 1:
        return "SGD has a velocity for some parameters only"
    return ""


def compiled_steps(
    step: Any, model: Any, loss: Any, optimizer: Optimizer, order: list[int], compiled: Any
) -> _CompiledSteps | None:
    """The compiled path for this training, or None for the reference path: ``compiled``
    None chooses by itself (numba installed, the run supported, ``HANDGRAD_COMPILED`` not
    ``0``), False never, True always (a ``ValueError`` says why it cannot).

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.training.fused import compiled_steps
    >>> from handgrad.training.optim import SGD
    >>> from handgrad.training.step import Step
    >>> model, X, y = hg.mlp([2, 2], rng=0), np.eye(2), np.array([0, 1])
    >>> optimizer, loss = SGD(model.params), hg.CrossEntropyLoss()
    >>> step = Step(model, loss, optimizer, X, y, 0.0)
    >>> compiled_steps(step, model, loss, optimizer, [0, 1], compiled=False) is None
    True
    """
    if compiled is False or (compiled is None and os.environ.get(ENVIRONMENT_VARIABLE) == "0"):
        return None
    reason = unsupported(step, model, loss, optimizer, order)
    kernels = None if reason else _kernels()
    if kernels is None and not reason:
        reason = "numba is not installed (pip install 'handgrad[numba]')"
    if reason:
        if compiled:
            raise ValueError(f"compiled=True, but {reason}; pass compiled=None or False")
        return None
    return _CompiledSteps(kernels, step, model, loss, optimizer)


class _CompiledSteps:
    """Runs of training steps in the compiled kernel for :func:`~handgrad.training.fit.fit`.

    The kernel works on flat buffers (layer by layer, weight then bias: the model's order),
    so that it is compiled once per dtype whatever the depth: the optimizer's state is
    flat already (:mod:`handgrad.training.flat`), the gradients live in one buffer that the
    layers' ``grads`` view, and the parameters are gathered into one before each run and
    written back after it (two copies per epoch).
    """

    def __init__(self, kernels: Any, step: Any, model: Any, loss: Any, optimizer: Any) -> None:
        linears, after = _layers(model)
        name, inner, factor = _loss(loss)
        dtype = step.X.dtype
        self.kernel, self.optimizer = kernels.train_batches, optimizer
        self.X = np.ascontiguousarray(step.X)
        self.T = np.ascontiguousarray(step.targets, dtype=dtype)
        self.count_right = not step.targets_given
        self.labels = np.asarray(step.y if self.count_right else np.empty(0), dtype=np.int64)
        weights = step.sample_weight
        self.sample_weight = np.ascontiguousarray(
            np.empty(0) if weights is None else weights, dtype=dtype
        )
        self.shapes = np.array([layer.params["weight"].shape for layer in linears], np.int64)
        self.params = [layer.params[key] for layer in linears for key in ("weight", "bias")]
        self.flat_params = np.empty(sum(p.size for p in self.params), dtype)
        self.param_views = optimizer._flat.views(self.flat_params)
        self.flat_grads = np.zeros_like(self.flat_params)
        grads = optimizer._flat.views(self.flat_grads)
        for layer, weight, bias in zip(linears, grads[0::2], grads[1::2], strict=True):
            layer.grads["weight"], layer.grads["bias"] = weight, bias  # the kernel writes them
        self.activations = np.array([kernels.ACTIVATIONS.get(a[0], 0) for a in after], np.int64)
        self.options = np.array([a[1:] for a in after], np.float64).reshape(-1, 2)
        self.loss = kernels.LOSSES[name]
        self.mean, self.factor, self.alpha = inner.reduction == "mean", factor, float(step.alpha)
        self.kind, self.hyper = self._optimizer_form(kernels)

    def _optimizer_form(self, kernels: Any) -> tuple[int, np.ndarray]:
        """The kernel's optimizer code and hyperparameters (momentum, nesterov, coupled
        decay, beta1, beta2, eps, decoupled decay of the weights, and of the biases)."""
        opt = self.optimizer
        if isinstance(opt, SGD):
            kind = kernels.OPTIMIZERS["momentum" if opt.momentum else "sgd"]
            hyper = [opt.momentum, float(opt.nesterov), opt.weight_decay, 0.0, 0.0, 1.0, 0.0, 0.0]
            return kind, np.array(hyper, np.float64)
        decoupled = 0.0 if opt.coupled_decay else opt.weight_decay
        biases_decayed = isinstance(opt, AdamW) and opt.decay == "all"
        hyper = [
            0.0,
            0.0,
            opt.weight_decay if opt.coupled_decay else 0.0,
            opt.betas[0],
            opt.betas[1],
            opt.eps,
            decoupled,
            decoupled if biases_decayed else 0.0,
        ]
        return kernels.OPTIMIZERS["adam"], np.array(hyper, np.float64)

    def _state(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """The optimizer's flat state buffers, and whether SGD's velocity starts now."""
        opt = self.optimizer
        if isinstance(opt, SGD):
            if not opt.momentum:  # no state: the kernel reads none
                return self.flat_grads, self.flat_grads, False
            velocity, fresh = opt._velocity_buffer()  # made, or a loaded one gathered
            return velocity, velocity, fresh
        if not opt._flat_moments():  # a moment was replaced: back into the buffers
            np.concatenate(opt.m, axis=None, out=opt._flat_m)
            np.concatenate(opt.v, axis=None, out=opt._flat_v)
            opt.m[:], opt.v[:] = opt._flat.views(opt._flat_m), opt._flat.views(opt._flat_v)
        return opt._flat_m, opt._flat_v, False

    def __call__(
        self,
        indices: np.ndarray,
        batch_size: int,
        first: int,
        stop: int,
        total_loss: float,
        correct: int,
        stop_on_nonfinite: bool,
    ) -> tuple[int, float, float, int]:
        """Steps ``first`` to ``stop`` of the epoch whose rows come in the order ``indices``,
        ``batch_size`` at a time; the steps done (fewer after a loss that is not finite,
        with ``stop_on_nonfinite``), the last loss, and the running loss total and count
        of rows classified right."""
        opt = self.optimizer
        first_state, second_state, fresh = self._state()
        np.concatenate(self.params, axis=None, out=self.flat_params)
        done, value, total_loss, right = self.kernel(
            self.X, self.T, self.labels, self.sample_weight, indices, batch_size, first, stop,
            self.flat_params, self.flat_grads, first_state, second_state, self.shapes,
            self.activations, self.options, self.loss, self.mean, self.factor,
            self.count_right, self.alpha, self.kind, float(opt.lr), self.hyper,
            getattr(opt, "t", 0), fresh, stop_on_nonfinite, total_loss,
        )  # fmt: skip
        for param, view in zip(self.params, self.param_views, strict=True):
            param[...] = view
        if isinstance(opt, Adam):
            opt.t += done - first
        return done - first, value, total_loss, correct + right
