"""Ready-made networks built from handgrad's layers."""

from handgrad.models.cnn import cnn
from handgrad.models.gpt import GPT
from handgrad.models.mlp import mlp

__all__ = ["GPT", "cnn", "mlp"]
