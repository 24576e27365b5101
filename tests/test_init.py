import numpy as np
import pytest

from handgrad.nn import init


def test_make_rng_takes_a_seed_a_generator_or_none():
    g = np.random.default_rng(3)
    assert init.make_rng(g) is g
    np.testing.assert_array_equal(init.make_rng(5).random(3), np.random.default_rng(5).random(3))
    assert isinstance(init.make_rng(None), np.random.Generator)
    with pytest.raises(ValueError, match="rng must be a non-negative seed, got -1"):
        init.make_rng(-1)
    with pytest.raises(TypeError, match="got float"):
        init.make_rng(1.5)


def test_initialisers_have_their_documented_scales():
    rng = np.random.default_rng(0)
    assert init.scaled_normal((300, 400), rng).std() == pytest.approx(0.01, rel=0.02)
    glorot = init.glorot_uniform((300, 400), rng)
    assert 0.99 * np.sqrt(6 / 700) < np.abs(glorot).max() <= np.sqrt(6 / 700)
    sigmoid = init.get_initializer("glorot_sigmoid")((300, 400), rng)
    assert 0.99 * np.sqrt(2 / 700) < np.abs(sigmoid).max() <= np.sqrt(2 / 700)
    assert init.he_normal((300, 400), rng).std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)


def test_unknown_names_and_bad_factors_are_refused():
    with pytest.raises(ValueError, match="init must be one of 'small_normal', 'glorot'"):
        init.get_initializer("xavier")
    with pytest.raises(ValueError, match="factor must be a finite number greater than 0"):
        init.glorot_uniform((2, 2), np.random.default_rng(0), factor=0)
