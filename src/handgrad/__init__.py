"""handgrad: neural networks whose every backward pass is written by hand and proven right,
against finite differences and against PyTorch autograd."""

from handgrad.autograd import compare_with_autograd
from handgrad.gradcheck import (
    GradientCheckError,
    GradientCheckReport,
    GradientCheckWarning,
    ParameterCheck,
    check_gradients,
    check_layer,
    numerical_gradient,
    relative_difference,
)
from handgrad.layers import Layer, Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.losses import CrossEntropyLoss, MSELoss, NLLLoss
from handgrad.model import Sequential
from handgrad.presets import SimpleNN, mlp

__version__ = "0.1.0"

__all__ = [
    "CrossEntropyLoss",
    "GradientCheckError",
    "GradientCheckReport",
    "GradientCheckWarning",
    "Layer",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "NLLLoss",
    "ParameterCheck",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SimpleNN",
    "Softmax",
    "Tanh",
    "check_gradients",
    "check_layer",
    "compare_with_autograd",
    "mlp",
    "numerical_gradient",
    "relative_difference",
]
