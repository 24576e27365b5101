import math

import numpy as np
import pytest

import handgrad as hg
from handgrad.gradcheck import finite_differences as fd
from handgrad.gradcheck import shortcuts


def test_richardson_once_is_the_4_point_stencil_at_half_the_step():
    r1 = fd.make_stencil("central", richardson=1)
    four = fd.make_stencil("4-point")
    assert r1.order == four.order == 4
    # the 4-point estimate at step h/2: sum_k w_k L(p + c_k h/2) / (h/2), i.e. (c/2, 2w) at h
    pairs = sorted(zip(r1.offsets, r1.weights, strict=True))
    expected = sorted((c / 2, 2 * w) for c, w in zip(four.offsets, four.weights, strict=True))
    np.testing.assert_allclose(pairs, expected, rtol=1e-15)


@pytest.mark.parametrize(
    ("stencil", "richardson"), [("central", 0), ("4-point", 0), ("central", 1), ("central", 2)]
)
def test_stencils_are_exact_on_polynomials_of_their_order(stencil, richardson):
    s = fd.make_stencil(stencil, richardson)
    assert sum(s.weights) == pytest.approx(0.0, abs=1e-15)
    for power in range(0, s.order + 1):  # exact for p^power, power <= order
        derivative = sum(w * c**power for c, w in zip(s.offsets, s.weights, strict=True))
        assert derivative == pytest.approx(1.0 if power == 1 else 0.0, abs=1e-12)


def test_higher_order_stencils_shrink_the_truncation_error():
    x = np.array([0.7])
    exact = np.cos(0.7) * 3 * math.sin(0.7) ** 2  # d/dx sin(x)^3
    errors = {}
    for stencil, richardson in [("central", 0), ("4-point", 0), ("central", 2)]:
        g = hg.numerical_gradient(
            lambda v: np.sin(v[0]) ** 3, x.copy(), eps=1e-2, stencil=stencil, richardson=richardson
        )
        errors[(stencil, richardson)] = abs(float(g[0]) - exact)
    assert errors[("central", 0)] > 1e-6
    assert errors[("4-point", 0)] < errors[("central", 0)] / 1000
    assert errors[("central", 2)] < errors[("4-point", 0)]


def test_bad_stencils_are_refused():
    with pytest.raises(ValueError, match="stencil must be 'central' or '4-point', got 'five'"):
        fd.make_stencil("five")
    with pytest.raises(ValueError, match="richardson must be an integer >= 0"):
        fd.make_stencil("central", -1)
    with pytest.raises(ValueError, match="use one or the other"):
        fd.make_stencil("4-point", 1)


def test_scaled_steps_grow_with_the_value():
    np.testing.assert_array_equal(fd.steps(np.array([0.5, -4.0]), 1e-6, True), [1e-6, 4e-6])
    np.testing.assert_array_equal(fd.steps(np.array([0.5, -4.0]), 1e-6, False), [1e-6, 1e-6])


def test_columns_densify_to_copies_with_one_column_replaced():
    base = np.arange(6.0).reshape(2, 3)
    cols = fd.Columns(base, np.array([2, 0]), np.array([[10.0, 11.0], [20.0, 21.0]]))
    dense = cols.dense()
    expected = np.stack([base.copy(), base.copy()])
    expected[0, :, 2] = [10.0, 11.0]
    expected[1, :, 0] = [20.0, 21.0]
    np.testing.assert_array_equal(dense, expected)


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_linear_shortcuts_equal_perturbed_copies(name):
    rng = np.random.default_rng(0)
    layer = hg.Linear(4, 3, rng=rng)
    layer.params["bias"][...] = rng.standard_normal(3)
    x = rng.standard_normal((5, 4))
    size = layer.params[name].size
    index, moves = np.arange(size), rng.standard_normal(size)
    columns, values = shortcuts.perturbed_columns(layer)(x, name, index, moves)
    got = fd.Columns(layer.forward(x), columns, values).dense()
    for i in range(size):
        saved = layer.params[name].copy()
        layer.params[name].reshape(-1)[i] += moves[i]
        np.testing.assert_allclose(got[i], layer.forward(x), rtol=1e-13, atol=1e-15)
        layer.params[name][...] = saved
    replaced = rng.standard_normal((4, 5))
    dense = shortcuts.forward_columns(layer)(x, np.arange(4), replaced)
    for j in range(4):
        copy = x.copy()
        copy[:, j] = replaced[j]
        np.testing.assert_allclose(dense[j], layer.forward(copy), rtol=1e-13, atol=1e-15)
