"""Gradient checking: hand-written gradients against finite differences, with a tolerance
that knows floating-point noise, batched evaluation, modes, reports and assertions."""

from handgrad.core.errors import GradientCheckError, GradientCheckWarning
from handgrad.gradcheck.check import (
    DEFAULT_EPS,
    DEFAULT_THRESHOLD,
    check_gradients,
    check_layer,
    numerical_gradient,
    relative_difference,
)
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_THRESHOLD",
    "GradientCheckError",
    "GradientCheckReport",
    "GradientCheckWarning",
    "ParameterCheck",
    "check_gradients",
    "check_layer",
    "numerical_gradient",
    "relative_difference",
]
