"""``cnn``: a small convolutional network for small images given as rows of pixels (the
digits data set's 8 x 8), from handgrad's layers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from handgrad.core.random import make_rng
from handgrad.core.validation import check_positive_int
from handgrad.nn.containers import Sequential
from handgrad.nn.layers import Conv2d, Dropout, Flatten, Linear, MaxPool2d, ReLU, Unflatten

__all__ = ["cnn", "square_image"]


def square_image(features: int) -> tuple[int, int, int]:
    """The one-channel square image ``(1, side, side)`` that rows of ``features`` pixels
    hold; ValueError if ``features`` is not a square number.

    Examples
    --------
    >>> from handgrad.models.cnn import square_image
    >>> square_image(64)  # the digits data set: 8 x 8 images
    (1, 8, 8)
    >>> square_image(30)
    Traceback (most recent call last):
        ...
    ValueError: the cnn model takes square one-channel images; 30 features are not n x n pixels
    """
    side = math.isqrt(check_positive_int(features, "features"))
    if side * side != features:
        raise ValueError(
            f"the cnn model takes square one-channel images; {features} features are not "
            "n x n pixels"
        )
    return (1, side, side)


def cnn(
    input_shape: Sequence[int],
    classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    dropout: float = 0.5,
    rng: Any = None,
    backend: Any = "numpy",
    dtype: Any = "float64",
    device: Any = None,
) -> Sequential:
    """A convolutional network that outputs logits, for rows of ``prod(input_shape)``
    pixels: unflatten to (channels, height, width), a 3 x 3 convolution (padding 1) and a
    ReLU, a 2 x 2 max pool, a second 3 x 3 convolution and ReLU, then a Linear layer on the
    flattened maps, after dropout (training mode only). Pair it with
    :class:`~handgrad.CrossEntropyLoss`.

    Parameters
    ----------
    input_shape : (int, int, int)
        The images' (channels, height, width); height and width at least 2.
    classes : int
        Outputs.
    channels : (int, int)
        Filters of the first and second convolution.
    dropout : float
        Dropout before the Linear layer (0 for none). On the digits data set it is worth
        half a percent of test accuracy (``benchmarks/accuracy_bench.py``).
    rng, backend, dtype, device
        As :func:`~handgrad.mlp`.

    Examples
    --------
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.models.cnn import cnn
    >>> model = cnn((1, 8, 8), 10, rng=0)
    >>> model
    Sequential(
      (0): Unflatten(dim=1, unflattened_size=(1, 8, 8))
      (1): Conv2d(1, 16, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
      (2): ReLU()
      (3): MaxPool2d(kernel_size=(2, 2), stride=(2, 2))
      (4): Conv2d(16, 32, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
      (5): ReLU()
      (6): Flatten(start_dim=1, end_dim=-1)
      (7): Dropout(p=0.5)
      (8): Linear(in_features=512, out_features=10, bias=True)
    )
    >>> model.forward(np.zeros((5, 64))).shape  # rows of 64 pixels in, logits out
    (5, 10)
    """
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    c, height, width = (check_positive_int(n, f"input_shape[{i}]") for i, n in enumerate(shape))
    if min(height, width) < 2:
        raise ValueError(f"input_shape must be at least 2 x 2 pixels for the pool, got {shape}")
    channels = tuple(channels)
    if len(channels) != 2:
        raise ValueError(f"channels must be the filters of the two convolutions, got {channels}")
    first, second = (check_positive_int(n, f"channels[{i}]") for i, n in enumerate(channels))
    gen = make_rng(rng)
    where = {"backend": backend, "dtype": dtype, "device": device}
    flat = second * (height // 2) * (width // 2)
    return Sequential(
        Unflatten(1, shape),
        Conv2d(c, first, 3, padding=1, rng=gen, **where),
        ReLU(),
        MaxPool2d(2),
        Conv2d(first, second, 3, padding=1, rng=gen, **where),
        ReLU(),
        Flatten(),
        Dropout(dropout, rng=gen),
        Linear(flat, check_positive_int(classes, "classes"), rng=gen, **where),
    )
