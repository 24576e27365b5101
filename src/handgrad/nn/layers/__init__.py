"""handgrad's layer types, one family per file; importing this package registers them."""

from handgrad.nn.layers.activations import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.nn.layers.linear import Linear

__all__ = ["Linear", "LogSoftmax", "ReLU", "Sigmoid", "Softmax", "Tanh"]
