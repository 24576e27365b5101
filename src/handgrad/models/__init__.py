"""Ready-made networks built from handgrad's layers."""

from handgrad.models.mlp import mlp

__all__ = ["mlp"]
