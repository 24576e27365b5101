"""Random generators: every function that draws takes ``rng``, an int seed, a
``numpy.random.Generator`` (used as is) or None (fresh entropy)."""

from __future__ import annotations

import numpy as np

__all__ = ["make_rng"]


def make_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` from a seed, a generator (used as is) or None.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.nn.init import make_rng
    >>> make_rng(0).integers(0, 100, 3).tolist() == make_rng(0).integers(0, 100, 3).tolist()
    True
    >>> generator = np.random.default_rng(1)
    >>> make_rng(generator) is generator
    True
    """
    if rng is not None and not isinstance(rng, int | np.random.Generator):
        raise TypeError(
            f"rng must be an int seed, a numpy.random.Generator or None, got {type(rng).__name__}"
        )
    if isinstance(rng, int) and rng < 0:
        raise ValueError(f"rng must be a non-negative seed, got {rng}")
    return np.random.default_rng(rng)
