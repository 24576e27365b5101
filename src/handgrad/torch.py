"""handgrad and PyTorch: a handgrad layer as a ``torch.autograd.Function`` or
``torch.nn.Module`` whose backward is the hand-written one. Needs the ``torch`` extra."""

from handgrad.interop.torch_bridge import LayerFunction, LayerModule, as_function, as_module

__all__ = ["LayerFunction", "LayerModule", "as_function", "as_module"]
