"""Assertions for a test suite: check a layer's or a function's hand-written gradient and
fail with a message that points at the wrong element.

Example, in a pytest file::

    import numpy as np
    from handgrad.testing import assert_layer_gradients

    def test_my_layer():
        x = np.random.default_rng(0).standard_normal((8, 10))
        assert_layer_gradients(MyLayer(), x, rng=1)  # the upstream gradient from its own seed
"""

from handgrad.gradcheck.assertions import assert_gradients, assert_layer_gradients

__all__ = ["assert_gradients", "assert_layer_gradients"]
