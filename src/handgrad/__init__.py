"""handgrad: neural networks whose every backward pass is written by hand and proven right,
against finite differences and against PyTorch autograd.

The public face: everything here is re-exported from the subpackages (``handgrad.core``,
``handgrad.nn``, ``handgrad.models``, ``handgrad.gradcheck``, ``handgrad.training``,
``handgrad.interop``, ``handgrad.data``, ``handgrad.app``, ``handgrad.cli``).
"""

from handgrad import _compat
from handgrad.app.seed_network import SimpleNN
from handgrad.core.errors import GradientCheckError, GradientCheckWarning
from handgrad.gradcheck import (
    GradientCheckReport,
    ParameterCheck,
    check_gradients,
    check_layer,
    numerical_gradient,
    relative_difference,
)
from handgrad.interop.oracle import compare_with_autograd
from handgrad.models import mlp
from handgrad.nn import (
    ELU,
    GELU,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv1d,
    Conv2d,
    CrossEntropyLoss,
    Dropout,
    Flatten,
    GroupNorm,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    MaxPool2d,
    Module,
    MSELoss,
    NLLLoss,
    ReLU,
    Sequential,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
    Unflatten,
    register_layer,
)

__version__ = "0.2.0"

__all__ = [
    "ELU",
    "GELU",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "CrossEntropyLoss",
    "Dropout",
    "Flatten",
    "GradientCheckError",
    "GradientCheckReport",
    "GradientCheckWarning",
    "GroupNorm",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "NLLLoss",
    "ParameterCheck",
    "ReLU",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "SimpleNN",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
    "check_gradients",
    "check_layer",
    "compare_with_autograd",
    "mlp",
    "numerical_gradient",
    "register_layer",
    "relative_difference",
]

_compat.install()
