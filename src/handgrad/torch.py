"""handgrad and PyTorch: a handgrad layer as a ``torch.autograd.Function`` or
``torch.nn.Module`` whose backward is the hand-written one, and ``gradcheck`` /
``gradgradcheck`` for any PyTorch code (custom Functions, kernels, modules), in torch's
call shape. Needs the ``torch`` extra."""

from handgrad.core.errors import GradientCheckError
from handgrad.interop.torch_bridge import LayerFunction, LayerModule, as_function, as_module
from handgrad.interop.torch_check import check_report, gradcheck, gradgradcheck

__all__ = [
    "GradientCheckError",
    "LayerFunction",
    "LayerModule",
    "as_function",
    "as_module",
    "check_report",
    "gradcheck",
    "gradgradcheck",
]
