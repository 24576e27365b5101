"""The faults of issue 19, one test (or more) each: what the checker did wrong on layers
people write, and what it does now. Also kinks, randomness, float32, the noise floor per
element, shapes, models without parameters and the layer's state after a check."""

import warnings

import numpy as np
import pytest
import user_zoo as zoo

import handgrad as hg
from handgrad.gradcheck import probes
from handgrad.gradcheck.routes import LayerProblem, as_float64


def _x(rng, *shape):
    return rng.standard_normal(shape)


# 1. Stacked copies are used only where they are proven equal to copies one by one.


class MeanOverAxis0:
    """y = x - x.mean(axis=0): runs on a stack of copies without raising, and computes
    something else there (the mean over the copies)."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        return x - x.mean(axis=0)

    def backward(self, dy):
        return dy - dy.mean(axis=0)


class MeanOverAxis0Slip(MeanOverAxis0):
    def backward(self, dy):
        return dy


@pytest.mark.parametrize(
    "make",
    [
        MeanOverAxis0,
        lambda: zoo.TransposedLinear(np.random.default_rng(0)),
        lambda: zoo.DropoutFixedMask(np.random.default_rng(0)),
    ],
    ids=["axis-0 mean", "x.T, batch = features", "mask over the whole shape"],
)
def test_stacked_copies_that_compute_something_else_are_never_used(make):
    layer, x = make(), _x(np.random.default_rng(1), 4, 4)
    y = layer.forward(x.copy())
    problem = LayerProblem(layer, x, as_float64(y), np.ones(y.shape))
    found = probes.probe_stacking(problem.forward, x, 2.0**-52, np.random.default_rng(0))
    assert not found.ok and "stacked copies" in found.reason
    report = hg.check_layer(layer, x, rng=2)
    assert report.passed and report["x"].method != "batched"
    with pytest.raises(ValueError, match=r"method='batched' cannot check 'x': .*stacked copies"):
        hg.check_layer(layer, x, method="batched", rng=2)


def test_a_right_and_a_wrong_batch_layer_are_told_apart():
    x = _x(np.random.default_rng(3), 5, 3)
    assert hg.check_layer(MeanOverAxis0(), x, rng=4).passed
    report = hg.check_layer(MeanOverAxis0Slip(), x, rng=4, raise_on_failure=False)
    assert not report.passed and report["x"].n_failed == 15
    assert report["x"].numeric == pytest.approx(
        report["x"].analytic - np.mean(report["x"].analytic), abs=1
    ) or report["x"].numeric != pytest.approx(report["x"].analytic)


def test_samples_checked_many_per_call_only_when_they_are_independent():
    x = _x(np.random.default_rng(5), 6, 4)
    independent = hg.check_layer(zoo.LayerNorm(np.random.default_rng(0), d=4), x, rng=0)
    assert independent.passed and independent["x"].method == "rows"
    batch_norm = zoo.BatchNormTrain(np.random.default_rng(0))
    report = hg.check_layer(batch_norm, x, rng=0)
    assert report.passed and report["x"].method == "loop"
    assert any("samples are not independent" in note for note in report.notes)
    with pytest.raises(ValueError, match="method='rows' cannot check 'x': samples are not"):
        hg.check_layer(batch_norm, x, method="rows", rng=0)


def test_a_users_layer_that_takes_stacked_copies_is_batched():
    rng = np.random.default_rng(6)
    layer, x = zoo.Attention(rng), _x(rng, 3, 4, 4)
    report = hg.check_layer(layer, x, rng=0)
    assert report.passed
    assert {c.name: c.method for c in report.checks} == {
        "x": "rows",
        "Wq": "batched",
        "Wk": "batched",
        "Wv": "batched",
    }
    assert hg.check_layer(layer, x, method="batched", rng=0)["x"].method == "batched"


# 2 and 7. backward gets its own copy of the upstream gradient.


class ScaleWritesDy:
    """y = gamma * x; backward scales dy in place, then (a slip) takes dgamma from it."""

    def __init__(self):
        self.params, self.grads = {"gamma": np.array([0.5, 2.0, -1.5])}, {}

    def forward(self, x):
        self.x = x
        return self.params["gamma"] * x

    def backward(self, dy):
        dy *= self.params["gamma"]  # in place: dy is now dL/dx
        self.grads["gamma"] = np.sum(dy * self.x, axis=0)  # the slip: gamma counted twice
        return dy


def test_a_backward_that_writes_into_dy_is_blamed_on_the_right_array():
    x = _x(np.random.default_rng(7), 4, 3)
    report = hg.check_layer(ScaleWritesDy(), x, rng=8, raise_on_failure=False)
    assert report["x"].passed
    assert not report["gamma"].passed and report.failures[0].name == "gamma"


def test_relu_and_lstm_steps_that_write_into_dy_pass():
    rng = np.random.default_rng(9)
    assert hg.check_layer(zoo.ReluWritesDy(rng), _x(rng, 4, 5), rng=1).passed
    assert hg.check_layer(zoo.LstmStep(rng), _x(rng, 3, 3), rng=1).passed


# 3. Integer inputs are indices: not checked, the parameters are.


def test_an_embedding_of_integer_indices_is_checked_by_its_parameters():
    rng = np.random.default_rng(10)
    x = rng.integers(0, 5, (3, 4))
    before = x.copy()
    report = hg.check_layer(zoo.Embedding(rng), x, rng=1)
    assert report.passed and [c.name for c in report.checks] == ["W"]
    assert any("indices" in note and "not checked" in note for note in report.notes)
    np.testing.assert_array_equal(x, before)
    slip = hg.check_layer(zoo.EmbeddingBufferedSlip(rng), x, rng=1, raise_on_failure=False)
    assert not slip.passed and slip.failures[0].name == "W"


def test_check_gradients_takes_integer_inputs_too():
    rng = np.random.default_rng(11)
    model = hg.Sequential(zoo.Embedding(rng), hg.Linear(3, 2, rng=rng))
    x, y = rng.integers(0, 5, 6), rng.integers(0, 2, 6)
    report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert report.passed and [c.name for c in report.checks] == ["0.W", "1.weight", "1.bias"]
    with pytest.raises(ValueError, match="nothing to check: x holds integers"):
        hg.check_layer(MeanOverAxis0(), rng.integers(0, 5, (3, 2)))


# 4 and 5. Each forward gets its own copy of x; outputs are copied at once.


@pytest.mark.parametrize("method", hg.gradcheck.METHODS)
@pytest.mark.parametrize(
    "cls", [zoo.ReluOverwritesInput, zoo.SoftmaxInPlace, zoo.TanhBuffer], ids=lambda c: c.__name__
)
def test_forwards_that_overwrite_their_input_or_reuse_their_output_pass(cls, method):
    rng = np.random.default_rng(12)
    x = _x(rng, 4, 5)
    before = x.copy()
    try:
        report = hg.check_layer(cls(rng), x, method=method, rng=1)
    except ValueError as err:  # softmax over axis=1 does not take stacked copies
        assert method == "batched" and cls is zoo.SoftmaxInPlace, err
    else:
        assert report.passed and report["x"].method == ("rows" if method == "auto" else method)
    np.testing.assert_array_equal(x, before)


# 6. A probe that raises (an assert included) is a "no", not a crash.


class TwoDimensionalOnly:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        assert x.ndim == 2, "2-D input only"
        self.y = np.tanh(x)
        return self.y

    def backward(self, dy):
        return dy * (1 - self.y**2)


def test_an_assert_in_forward_makes_the_stacked_method_refuse_not_crash():
    x = _x(np.random.default_rng(13), 3, 4)
    assert hg.check_layer(TwoDimensionalOnly(), x, rng=0).passed
    with pytest.raises(ValueError, match=r"cannot check 'x': forward raised AssertionError: 2-D"):
        hg.check_layer(TwoDimensionalOnly(), x, method="batched")


# 8. A noise floor per element: tiny gradients next to large ones are checked.


class TinyNextToLarge:
    """y = x * w with w = (1, 1e-10): the second column's gradients are ~1e-10."""

    def __init__(self, slip=False):
        self.params, self.grads, self.slip = {"w": np.array([1.0, 1e-10])}, {}, slip

    def forward(self, x):
        self.x = x
        return x * self.params["w"]

    def backward(self, dy):
        sign = np.array([1.0, -1.0]) if self.slip else 1.0  # the slip: the tiny one's sign
        self.grads["w"] = np.sum(dy * self.x, axis=0)
        return dy * self.params["w"] * sign


def test_a_wrong_sign_on_a_tiny_gradient_next_to_large_ones_is_caught():
    x = _x(np.random.default_rng(14), 6, 2)
    assert hg.check_layer(TinyNextToLarge(), x, rng=0).passed
    report = hg.check_layer(TinyNextToLarge(slip=True), x, rng=0, raise_on_failure=False)
    assert not report.passed and report["x"].n_failed >= 4
    assert abs(report["x"].analytic) < 1e-9 and report["x"].numeric == pytest.approx(
        -report["x"].analytic, rel=1e-3
    )
    # one floor for the whole check, as before, waved it through
    assert report["x"].max_abs_diff < report.atol


# 9. Independent streams for x and the upstream gradient; the command line's --method.


def test_an_int_seed_gives_an_upstream_gradient_unlike_an_input_from_that_seed():
    seed, shape = 5, (4, 3)
    x = np.random.default_rng(seed).standard_normal(shape)
    seen = []

    class Spy(zoo.ReluWritesDy):
        def backward(self, dout):
            seen.append(dout.copy())
            return super().backward(dout)

    hg.check_layer(Spy(None), x, rng=seed)
    assert not np.allclose(seen[0], x)


# 10. The layer is left as it was found.


def test_a_batch_norm_layer_is_left_as_it_was_found():
    rng = np.random.default_rng(15)
    layer, x = zoo.BatchNormTrain(rng), _x(rng, 6, 4)
    layer.forward(x)  # some state of its own before the check
    mean, var, cache = layer.running_mean, layer.buffers["running_var"], layer.cache
    saved = (mean.copy(), var.copy(), cache.copy())
    params = {k: (v, v.copy()) for k, v in layer.params.items()}
    for method in hg.gradcheck.METHODS:
        for mode in hg.gradcheck.MODES:
            try:
                hg.check_layer(layer, x, mode=mode, method=method, rng=0)
            except ValueError as err:
                assert "cannot check" in str(err)
            assert layer.running_mean is mean and layer.running_mean.shape == (4,)
            assert layer.buffers["running_var"] is var and layer.cache is cache
            for now, before in zip((mean, var, cache), saved, strict=True):
                np.testing.assert_array_equal(now, before)
            for key, (array, values) in params.items():
                assert layer.params[key] is array
                np.testing.assert_array_equal(array, values)
            assert layer.training is True


def test_a_model_keeps_its_mode_buffers_and_generators():
    rng = np.random.default_rng(16)
    model = hg.mlp([4, 5, 3], rng=rng).eval()
    dropout = zoo.DropoutFixedMask(rng)
    dropout.rng = np.random.default_rng(0)
    state = dropout.rng.bit_generator.state
    x, y = _x(rng, 3, 4), rng.integers(0, 3, 3)
    hg.check_gradients(hg.Sequential(model, dropout), hg.CrossEntropyLoss(), x, y)
    assert model.training is False and dropout.rng.bit_generator.state == state


# 11. Messages that say what is wrong.


def test_torch_parameters_that_require_grad_are_checked():
    pytest.importorskip("torch")
    rng = np.random.default_rng(17)
    layer, x = zoo.FAMILIES["torch linear, requires_grad"][0](rng)
    report = hg.check_layer(layer, x, rng=0)
    assert report.passed and layer.params["W"].requires_grad


class Doubler:
    def __init__(self, backward_returns=None, scale=None):
        self.params = {} if scale is None else {"s": scale}
        self.grads, self.returns = {}, backward_returns

    def forward(self, x):
        return 2 * x

    def backward(self, dy):
        if self.params:
            self.grads["s"] = 0.0
        return self.returns


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (Doubler(), r"Doubler.backward returned None: it must return dL/dx, an array shaped "),
        (Doubler([1.0]), r"Doubler.backward returned a list: it must return dL/dx"),
        (Doubler(np.ones((2, 3)), scale=0.5), r"parameter 's' of Doubler is float, not a floating"),
    ],
)
def test_backward_returning_nothing_and_a_python_float_parameter_are_named(layer, message):
    with pytest.raises(TypeError, match=message):
        hg.check_layer(layer, np.ones((2, 3)))


def test_a_random_forward_is_named_as_such():
    class FreshMask(zoo.DropoutFixedMask):
        def forward(self, x):
            self.seed += 1  # a new mask at every call
            return super().forward(x)

    with pytest.raises(
        hg.gradcheck.RandomLayerError, match="FreshMask is random: two forwards on the same"
    ):
        hg.check_layer(FreshMask(None), np.ones((3, 4)))
    model = hg.Sequential(hg.Linear(4, 4, rng=0), FreshMask(None))
    with pytest.raises(hg.gradcheck.RandomLayerError, match=r"layer 1 \(FreshMask\) is random"):
        hg.check_gradients(model, hg.MSELoss(), np.ones((3, 4)), np.zeros((3, 4)))


# Kinks are named, not failed.


class Relu:
    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        return np.maximum(x, 0)

    def backward(self, dy):
        return dy * (self.x > 0)


def test_relu_at_zero_is_a_kink_not_a_failure():
    x = np.array([[0.0, 1.0, -1.0, 0.0], [2.0, 3e-7, -0.5, 0.3]])
    report = hg.check_layer(Relu(), x, rng=0)
    kinks = {k.index for k in report["x"].kinks}
    assert report.passed and kinks == {(0, 0), (0, 3), (1, 1)}
    kink = next(k for k in report["x"].kinks if k.index == (0, 0))
    assert kink.left == 0.0 and kink.analytic == 0.0 and kink.right != 0.0
    assert "not differentiable near x[0, 0]: one-sided slopes 0 and" in str(report)


def test_a_derivative_outside_the_one_sided_slopes_fails_even_at_a_kink():
    class AbsWrongAtZero(Relu):
        def forward(self, x):
            self.x = x
            return np.abs(x)

        def backward(self, dy):
            return dy * (np.sign(self.x) + 3.0 * (self.x == 0))

    x = np.array([[0.0, 1.0, -1.0]])
    report = hg.check_layer(AbsWrongAtZero(), x, rng=0, raise_on_failure=False)
    assert not report.passed and report["x"].n_failed == 1 and report["x"].worst_index == (0, 0)


def test_max_pool_ties_are_kinks():
    x = np.array([[[[1.0, 1.0, 0.0], [0.5, -1.0, 0.2], [0.1, 0.3, 1.0]]]])  # two maxima tie
    report = hg.check_layer(zoo.MaxPoolOverlap(None), x, rng=1)
    assert report.passed and (0, 0, 0, 0) in {k.index for k in report["x"].kinks}


# float32: promoted where the layer allows it, else checked at float32's noise.


def test_float32_layers_are_checked_without_false_failures():
    rng = np.random.default_rng(18)
    x32 = _x(rng, 4, 5).astype(np.float32)
    with pytest.warns(hg.GradientCheckWarning, match="float64 copy") as caught:
        promoted = hg.check_layer(zoo.Float32Linear(rng), x32, rng=0)
    assert promoted.passed and promoted.precision == "float64"
    assert caught[0].filename == __file__  # the warning points at the caller
    with pytest.warns(hg.GradientCheckWarning, match="computes in float32"):
        low = hg.check_layer(zoo.Float32Internal(rng), _x(rng, 4, 5), rng=0)
    assert low.passed and low.precision == "float32" and low.threshold == 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", hg.GradientCheckWarning)
        slip = hg.check_layer(zoo.Float32InternalSlip(rng), _x(rng, 4, 5), raise_on_failure=False)
    assert not slip.passed and slip.failures[0].name == "W"


# Shapes: (1, D) for (D,) stays a failure, saying the values are right.


class BiasKeepdims:
    def __init__(self, slip=0.0):
        self.params, self.grads, self.slip = {"b": np.zeros(5)}, {}, slip

    def forward(self, x):
        return x + self.params["b"]

    def backward(self, dy):
        self.grads["b"] = dy.sum(axis=0, keepdims=True) + self.slip
        return dy


def test_a_gradient_of_the_wrong_shape_says_whether_its_values_are_right():
    x = _x(np.random.default_rng(19), 3, 5)
    with pytest.raises(
        hg.GradientCheckError,
        match=r"has shape \(1, 5\) but the parameter has "
        r"shape \(5,\); its values are right: reshape it to \(5,\)",
    ):
        hg.check_layer(BiasKeepdims(), x)
    report = hg.check_layer(BiasKeepdims(slip=1.0), x, raise_on_failure=False)
    assert not report.passed and report["b"].values_right is None
    assert "its values are right" not in report["b"].describe()


def test_a_transposed_gradient_says_so():
    class Transposed(hg.Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["weight"] = self.grads["weight"].T
            return dx

    rng = np.random.default_rng(20)
    with pytest.raises(hg.GradientCheckError, match="its values are right transposed"):
        hg.check_layer(Transposed(5, 4, rng=rng), _x(rng, 2, 5))


# A model without parameters has its input gradient checked.


def test_a_model_without_parameters_has_its_input_gradient_checked():
    rng = np.random.default_rng(21)
    x, y = _x(rng, 3, 4), rng.random((3, 4))
    report = hg.check_gradients(hg.Sequential(hg.Tanh(), hg.Softmax()), hg.MSELoss(), x, y)
    assert report.passed and [c.name for c in report.checks] == ["x"]
    assert report["x"].n_checked == 12
    broken = hg.Sequential(zoo.SoftmaxDiagonalSlip(None))
    with pytest.raises(hg.GradientCheckError, match="'x'"):
        hg.check_gradients(broken, hg.MSELoss(), x, y)
    with pytest.raises(ValueError, match="no parameters and x holds integers"):
        hg.check_gradients(hg.Sequential(hg.Tanh()), hg.MSELoss(), np.ones((2, 2), int), y[:2, :2])


# 9 (the command line). Input and upstream gradient from independent streams; --method.

NORMALIZE = '''
import numpy as np


class Normalize:
    """y = x / |x| per row, with a slip: divides by |x|^2 where |x| belongs."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.norm = np.linalg.norm(x, axis=1, keepdims=True)
        self.y = x / self.norm
        return self.y

    def backward(self, dy):
        # dL/dx = (dy - y (y . dy)) / |x|; at dy = x this is 0 whatever the scale
        return (dy - self.y * np.sum(self.y * dy, axis=1, keepdims=True)) / self.norm**2
'''


@pytest.fixture
def normalize_module(tmp_path, monkeypatch):
    import sys

    (tmp_path / "normalize_layer.py").write_text(NORMALIZE)
    monkeypatch.chdir(tmp_path)
    yield
    sys.modules.pop("normalize_layer", None)


def test_the_command_line_does_not_give_the_upstream_gradient_the_inputs_values(
    normalize_module, capsys
):
    import json

    from handgrad.cli import main

    assert main(["check", "normalize_layer:Normalize", "--input-shape", "4,3"]) == 1
    assert "FAILED: gradient check failed for 'x'" in capsys.readouterr().out
    # the trap it avoids: an upstream gradient equal to x hides the slip
    x = np.random.default_rng(0).standard_normal((4, 3))
    import normalize_layer

    assert hg.check_layer(normalize_layer.Normalize(), x, rng=np.random.default_rng(0)).passed
    for method in ("loop", "rows"):
        assert main(["check", "normalize_layer:Normalize", "--method", method, "--json"]) == 1
        data = json.loads(capsys.readouterr().out)
        assert data["report"]["checks"][0]["method"] == method
    assert main(["check", "--method", "rows"]) == 2
    assert "method='rows' cannot check" in capsys.readouterr().err
