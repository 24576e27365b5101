"""MaxPool2d and AvgPool2d against torch.nn (float64, 1e-12 relative) on random shapes and
windows, overlapping ones included, on every backend; worked examples of overlaps and ties."""

import numpy as np
import pytest
from helpers import BACKENDS, against_torch, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad as hg
from handgrad.nn.registry import build_layer, layer_spec

torch = pytest.importorskip("torch")

TOL = 1e-12
few = settings(max_examples=8, deadline=None)


@st.composite
def pool_cases(draw, dilated):
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch's limit
    size = tuple(
        draw(st.integers(max(1, s - 2 * p), s + 5)) for s, p in zip(spans, padding, strict=True)
    )
    lead = draw(st.sampled_from([(2, 3), (3,)]))  # ([batch,] channels), as torch takes
    return (kernel, stride, padding, dilation), (*lead, *size)


@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(case=pool_cases(dilated=True), seed=st.integers(0, 2**32 - 1))
def test_max_pool_equals_torch(backend, case, seed):
    (kernel, stride, padding, dilation), shape = case
    layer = hg.MaxPool2d(kernel, stride, padding, dilation)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y_shape = layer.torch_module()(torch.from_numpy(x)).shape
    errors = against_torch(layer, x, rng.standard_normal(tuple(y_shape)), backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(case=pool_cases(dilated=False), seed=st.integers(0, 2**32 - 1))
def test_avg_pool_equals_torch(backend, case, seed):
    (kernel, stride, padding, _), shape = case
    layer = hg.AvgPool2d(kernel, stride, padding)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    y_shape = layer.torch_module()(torch.from_numpy(x)).shape
    errors = against_torch(layer, x, rng.standard_normal(tuple(y_shape)), backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("layer", [hg.MaxPool2d(3, 2, 1), hg.AvgPool2d(2, 1)], ids=repr)
def test_stacked_copies_are_pooled_one_by_one(layer):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 2, 5, 5))
    y = layer.forward(x)
    r = rng.standard_normal(y.shape)
    dx = layer.backward(r)
    for i in range(3):
        assert rel_err(y[i], layer.forward(x[i])) == 0.0
        assert rel_err(dx[i], layer.backward(r[i])) == 0.0


def test_overlapping_max_windows_add_their_gradients():
    """3 x 3 windows, stride 1, over a 4 x 4 input whose maximum (9) is in all four
    windows: its gradient is the sum of the four upstream values, not the last one."""
    x = np.array([[1.0, 2, 3, 0], [4, 9, 5, 0], [6, 7, 8, 0], [0, 0, 0, 0]])[None, None]
    pool = hg.MaxPool2d(3, stride=1)
    assert pool.forward(x).tolist() == [[[[9.0, 9.0], [9.0, 9.0]]]]
    dy = np.array([[1.0, 10.0], [100.0, 1000.0]])[None, None]
    dx = pool.backward(dy)
    assert dx[0, 0, 1, 1] == 1111.0 and float(np.sum(dx)) == 1111.0


def test_a_tie_goes_to_the_first_element_of_the_window_as_in_torch():
    x = np.zeros((1, 1, 2, 2))
    errors = against_torch(hg.MaxPool2d(2), x, np.ones((1, 1, 1, 1)))
    assert max(errors.values()) == 0.0


def test_max_pool_padding_is_minus_infinity():
    x = -np.ones((1, 1, 2, 2))
    pool = hg.MaxPool2d(2, stride=2, padding=1)
    assert pool.forward(x).tolist() == [[[[-1.0, -1.0], [-1.0, -1.0]]]]


def test_avg_pool_backward_spreads_over_each_window():
    pool = hg.AvgPool2d(2, stride=1)
    pool.forward(np.zeros((1, 1, 3, 3)))
    dx = pool.backward(np.ones((1, 1, 2, 2)))
    assert rel_err(dx[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4) == 0.0


@pytest.mark.parametrize(
    "layer", [hg.MaxPool2d(3, 2, 1, dilation=2), hg.AvgPool2d((2, 3), stride=1)], ids=repr
)
def test_a_spec_rebuilds_the_pool(layer):
    rebuilt = build_layer(layer_spec(layer))
    assert repr(rebuilt) == repr(layer) and rebuilt.config() == layer.config()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: hg.MaxPool2d(2, padding=2), "padding must be at most half the window"),
        (lambda: hg.AvgPool2d(3, padding=(0, 2)), "padding must be at most half the window"),
        (lambda: hg.MaxPool2d(0), "kernel_size must be an integer >= 1"),
        (lambda: hg.AvgPool2d(2, stride=(1, 0)), "stride must be an integer >= 1"),
    ],
)
def test_bad_windows_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()
