import numpy as np
import pytest
from zoo import LAYER_BUGS

import handgrad as hg
from handgrad.testing import assert_gradients, assert_layer_gradients


def test_assert_layer_gradients_passes_correct_layers_and_returns_the_report():
    report = assert_layer_gradients(hg.Linear(4, 3, rng=0), np.ones((2, 4)))
    assert report.passed and [c.name for c in report.checks] == ["x", "weight", "bias"]


def test_assert_layer_gradients_points_at_the_element():
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match=r"'weight' .* worst at index \(\d, \d\)") as caught:
        assert_layer_gradients(
            LAYER_BUGS["sign error in the weight gradient"](rng), rng.standard_normal((3, 5))
        )
    assert "max rel diff" in str(caught.value)  # the whole table follows


def test_assert_gradients_of_a_function():
    x = np.array([0.5, -1.0, 2.0])
    assert_gradients(lambda v: np.sum(np.sin(v) * v), x, np.cos(x) * x + np.sin(x))
    wrong = np.cos(x) * x
    with pytest.raises(AssertionError, match=r"'grad' \(shape \(3,\)\): 3 of 3 elements off"):
        assert_gradients(lambda v: np.sum(np.sin(v) * v), x, wrong)
    with pytest.raises(AssertionError, match=r"grad has shape \(2,\) but x has \(3,\)"):
        assert_gradients(np.sum, x, np.ones(2))
