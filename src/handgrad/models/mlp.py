"""``mlp``: a multilayer perceptron for any layer sizes, from handgrad's layers."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from handgrad.core.random import make_rng
from handgrad.core.validation import check_positive_int
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Linear
from handgrad.nn.registry import activation as activation_type

__all__ = ["mlp"]


def mlp(
    sizes: Sequence[int],
    activation: str = "sigmoid",
    *,
    bias: bool = True,
    init: Any = None,
    rng: Any = None,
    backend: Any = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Sequential:
    """A multilayer perceptron that outputs logits: Linear, activation, ..., Linear.

    ``sizes`` lists the widths from input to output, e.g. ``[30, 20, 2]`` is the seed's
    architecture. ``activation`` is the name of any registered activation ('sigmoid',
    'tanh', 'relu', ...); ``init`` defaults to the one it asks for (Glorot, with
    scikit-learn's factor 2 before a sigmoid, or He before a ReLU). Pair it with
    :class:`~handgrad.CrossEntropyLoss`.

    Parameters
    ----------
    sizes : sequence of int
        The widths from input to output, at least two.
    activation : str
        The activation between the Linear layers ("sigmoid").
    bias : bool
        Whether the Linear layers have a bias (True).
    init : str or Initializer, optional
        The weights' initializer; by default the one the activation asks for.
    rng : int or numpy.random.Generator, optional
        Seeds the initial weights.
    backend, dtype, device : str, optional
        The array library ("numpy"), dtype ("float64") and device of the weights.

    Returns
    -------
    Sequential
        Linear, activation, ..., Linear: ``2 * len(sizes) - 3`` layers.

    Examples
    --------
    >>> import handgrad as hg
    >>> hg.mlp([30, 20, 2], rng=0)  # the seed's architecture, with biases
    Sequential(
      (0): Linear(in_features=30, out_features=20, bias=True)
      (1): Sigmoid()
      (2): Linear(in_features=20, out_features=2, bias=True)
    )
    >>> len(hg.mlp([8, 16, 16, 3], activation="relu", rng=0))
    5
    """
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output width, got {sizes}")
    for i, size in enumerate(sizes):
        check_positive_int(size, f"sizes[{i}]")
    kind = activation_type(activation)
    gen = make_rng(rng)
    layers: list[Any] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        if i:
            layers.append(kind())
        layers.append(
            Linear(
                fan_in,
                fan_out,
                bias,
                init=init or getattr(kind, "weight_init", "glorot"),
                rng=gen,
                backend=backend,
                dtype=dtype,
                device=device,
            )
        )
    return Sequential(*layers)
