"""handgrad's layer types, one family per file; importing this package registers them."""

from handgrad.nn.layers.activations import (
    ELU,
    GELU,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from handgrad.nn.layers.attention import MultiheadSelfAttention, ScaledDotProductAttention
from handgrad.nn.layers.conv import Conv1d, Conv2d
from handgrad.nn.layers.dropout import Dropout
from handgrad.nn.layers.embedding import Embedding
from handgrad.nn.layers.linear import Linear
from handgrad.nn.layers.normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm
from handgrad.nn.layers.pooling import AvgPool2d, MaxPool2d
from handgrad.nn.layers.recurrent import GRU, LSTM, RNN
from handgrad.nn.layers.shape import Flatten, Unflatten

__all__ = [
    "ELU",
    "GELU",
    "GRU",
    "LSTM",
    "RNN",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv1d",
    "Conv2d",
    "Dropout",
    "Embedding",
    "Flatten",
    "GroupNorm",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "MultiheadSelfAttention",
    "ReLU",
    "ScaledDotProductAttention",
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "Unflatten",
]
