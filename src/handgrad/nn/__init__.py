"""Layers and losses with hand-written backward passes: the protocol, the module base,
containers, the registry of layer types, initialisers, layers and losses."""

from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.nn.losses import (
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    MSELoss,
    NLLLoss,
    PoissonNLLLoss,
)
from handgrad.nn.module import Module
from handgrad.nn.protocol import Layer, named_layers
from handgrad.nn.registry import register_layer

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "Layer",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "Module",
    "NLLLoss",
    "PoissonNLLLoss",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "named_layers",
    "register_layer",
]
