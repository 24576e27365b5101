import math

import numpy as np
import pytest

from handgrad.core import validation


@pytest.mark.parametrize("value", [0, -3, 2.0, True, "4", None])
def test_positive_int_refuses_everything_but_positive_integers(value):
    with pytest.raises(ValueError, match=f"n must be a positive integer, got {value!r}"):
        validation.check_positive_int(value, "n")


@pytest.mark.parametrize("value", [0, -1e-3, math.inf, math.nan, True, "1e-3"])
def test_positive_float_refuses_zero_negative_infinite_and_non_numbers(value):
    with pytest.raises(ValueError, match="lr must be a finite number greater than 0"):
        validation.check_positive_float(value, "lr")


def test_accepted_values_come_back_typed():
    assert validation.check_positive_int(np.int64(3), "n") == 3
    assert validation.check_positive_float(1, "lr") == 1.0
    assert validation.check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b', got 'c'"):
        validation.check_choice("c", "mode", ("a", "b"))


def test_check_array_counts_non_finite_values():
    x = np.array([[1.0, np.inf], [np.nan, 2.0]])
    with pytest.raises(ValueError, match=r"data contains NaN or infinity \(2 of 4 elements\)"):
        validation.check_array(x, "data")
    validation.check_array(x, "data", finite=False)
    with pytest.raises(
        ValueError, match=r"data must be a 3-D array \(a, b, c\), got shape \(2, 2\)"
    ):
        validation.check_array(x, "data", ndim=3, layout="(a, b, c)", finite=False)
