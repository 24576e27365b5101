"""Gradient checking: hand-written gradients against finite differences, with a tolerance
that knows floating-point noise, batched evaluation, modes, reports and assertions."""

from handgrad.core.errors import GradientCheckError, GradientCheckWarning, RandomLayerError
from handgrad.gradcheck.check import (
    DEFAULT_EPS,
    DEFAULT_THRESHOLD,
    METHODS,
    MODES,
    check_gradients,
    check_layer,
    numerical_gradient,
    relative_difference,
)
from handgrad.gradcheck.report import GradientCheckReport, ParameterCheck

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_THRESHOLD",
    "METHODS",
    "MODES",
    "GradientCheckError",
    "GradientCheckReport",
    "GradientCheckWarning",
    "ParameterCheck",
    "RandomLayerError",
    "check_gradients",
    "check_layer",
    "numerical_gradient",
    "relative_difference",
]
