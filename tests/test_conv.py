"""Conv1d and Conv2d against torch.nn (float64, 1e-12 relative) on random shapes and
arguments, on every backend; their stacked copies, model specs, and torch's weights."""

import numpy as np
import pytest
from helpers import BACKENDS, against_torch, as_torch, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import handgrad as hg
from handgrad.core.arrays import convert
from handgrad.interop.oracle import to_torch_module
from handgrad.nn.registry import build_layer, layer_spec, spec_shapes

torch = pytest.importorskip("torch")

TOL = 1e-12
few = settings(max_examples=8, deadline=None)


@st.composite
def conv_cases(draw, dims):
    """Constructor arguments and an input shape that fits them."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = draw(
        st.one_of(
            st.just("valid"),
            st.just("same") if stride == (1,) * dims else st.just(0),
            st.integers(0, 2),
            st.tuples(*[st.integers(0, 2)] * dims),
        )
    )
    if padding == "same":
        pads = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    elif padding == "valid":
        pads = [0] * dims
    else:
        pads = [2 * p for p in (padding if isinstance(padding, tuple) else (padding,) * dims)]
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True)]
    size = tuple(
        draw(st.integers(max(1, s - p), s - p + 6)) for s, p in zip(spans, pads, strict=True)
    )
    args = (c_in, c_out, kernel, stride, padding, dilation, groups, draw(st.booleans()))
    return args, (draw(st.integers(1, 3)), c_in, *size)


def _random_params(layer, rng, backend):
    for name, p in layer.params.items():
        layer.params[name][...] = convert(rng.standard_normal(tuple(p.shape)), backend)


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(case=conv_cases(2), seed=st.integers(0, 2**32 - 1))
def test_conv2d_equals_torch(backend, case, seed):
    args, shape = case
    rng = np.random.default_rng(seed)
    layer = hg.Conv2d(*args, rng=rng, backend=backend)
    _random_params(layer, rng, backend)
    x = rng.standard_normal(shape)
    r = rng.standard_normal(tuple(layer.torch_module()(as_torch(x).float()).shape))
    errors = against_torch(layer, x, r, backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("backend", BACKENDS)
@few
@given(case=conv_cases(1), seed=st.integers(0, 2**32 - 1))
def test_conv1d_equals_torch(backend, case, seed):
    args, shape = case
    rng = np.random.default_rng(seed)
    layer = hg.Conv1d(*args, rng=rng, backend=backend)
    _random_params(layer, rng, backend)
    x = rng.standard_normal(shape)
    r = rng.standard_normal(tuple(layer.torch_module()(as_torch(x).float()).shape))
    errors = against_torch(layer, x, r, backend)
    assert max(errors.values()) < TOL, errors


@pytest.mark.parametrize("stride", [1, 2])
def test_stacked_copies_are_convolved_one_by_one(stride):
    """Leading axes (the gradient check's stacked copies) are more images; the gradients
    sum over all of them."""
    rng = np.random.default_rng(0)
    layer = hg.Conv2d(2, 3, 3, stride=stride, padding=1, rng=rng)
    x, r = rng.standard_normal((4, 2, 2, 5, 5)), None
    stacked = layer.forward(x)
    r = rng.standard_normal(stacked.shape)
    dx = layer.backward(r)
    grads = {k: v.copy() for k, v in layer.grads.items()}
    total = {k: 0.0 for k in grads}
    for i in range(4):
        assert rel_err(stacked[i], layer.forward(x[i])) < TOL
        assert rel_err(dx[i], layer.backward(r[i])) < TOL
        total = {k: total[k] + layer.grads[k] for k in grads}
    for k in grads:
        assert rel_err(grads[k], total[k]) < TOL


def test_torch_weights_load_and_come_back():
    module = torch.nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), groups=1).double()
    layer = hg.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0))
    layer.load_state_dict(module.state_dict())
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    assert rel_err(layer.forward(x), module(as_torch(x)).detach()) < TOL
    back = to_torch_module(layer)
    for k, v in module.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)


@pytest.mark.parametrize(
    "layer",
    [
        hg.Conv2d(4, 6, 3, stride=2, padding=(1, 0), dilation=(1, 2), groups=2, bias=False),
        hg.Conv2d(1, 2, 5, padding="same"),
        hg.Conv1d(2, 2, 4, padding="valid"),
    ],
    ids=repr,
)
def test_a_spec_rebuilds_the_layer_and_names_its_shapes(layer):
    spec = layer_spec(layer)
    rebuilt = build_layer(spec)
    assert repr(rebuilt) == repr(layer) and rebuilt.config() == layer.config()
    assert spec_shapes(spec) == {k: tuple(v.shape) for k, v in layer.params.items()}
    assert isinstance(layer.torch_module(), getattr(torch.nn, type(layer).__name__))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_same_padding_keeps_the_size_with_the_extra_pad_after():
    """An even kernel needs an odd total padding: torch puts the extra row and column
    after (bottom, right)."""
    rng = np.random.default_rng(1)
    layer = hg.Conv2d(1, 1, (2, 4), padding="same", rng=rng)
    x = rng.standard_normal((1, 1, 5, 6))
    assert layer.forward(x).shape == (1, 1, 5, 6)
    errors = against_torch(layer, x, rng.standard_normal((1, 1, 5, 6)))
    assert max(errors.values()) < TOL


def test_first_layer_skips_the_input_gradient():
    rng = np.random.default_rng(2)
    layer = hg.Conv2d(2, 3, 3, rng=rng)
    layer.forward(rng.standard_normal((2, 2, 5, 5)))
    r = rng.standard_normal((2, 3, 3, 3))
    assert layer.backward_unchecked(r, input_grad=False) is None
    weight_grad = layer.grads["weight"].copy()
    layer.backward(r)
    np.testing.assert_array_equal(layer.grads["weight"], weight_grad)


def test_float32_runs_in_float32():
    layer = hg.Conv2d(2, 3, 3, padding=1, rng=0, dtype="float32")
    x = np.ones((1, 2, 4, 4), dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32 and layer.backward(np.ones_like(y)).dtype == np.float32
    assert layer.grads["weight"].dtype == np.float32


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((3, 4, 3, 1, 0, 1, 2), "groups must divide in_channels and out_channels"),
        ((2, 4, 0), "kernel_size must be an integer >= 1"),
        ((2, 4, (3, 3, 3)), "kernel_size must be an integer >= 1 or a sequence of 2"),
        ((2, 4, 3, 2, "same"), "padding='same' needs stride 1"),
        ((2, 4, 3, 1, "full"), "padding must be 'same', 'valid'"),
        ((2, 4, 3, 1, -1), "padding must be an integer >= 0"),
        ((0, 4, 3), "in_channels must be a positive integer"),
    ],
)
def test_bad_arguments_are_named(args, match):
    with pytest.raises(ValueError, match=match):
        hg.Conv2d(*args)


def test_a_spec_with_bad_arguments_is_refused_before_anything_is_built():
    spec = {
        "type": "Conv2d",
        "in_channels": 3,
        "out_channels": 4,
        "kernel_size": [3, 3],
        "groups": 2,
    }
    with pytest.raises(ValueError, match="groups must divide"):
        spec_shapes(spec)
