import dataclasses
import warnings

import numpy as np
import pytest
from helpers import BACKENDS, namespace_or_skip
from zoo import LAYER_BUGS, AveragedBiasGrad, MissingSigmoidDerivative, SeedSlipNet

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy
from handgrad.gradcheck.check import NOISE_FACTOR, RELATIVE_FLOOR, _upstream_rng


def test_numerical_gradient_of_a_quadratic():
    rng = np.random.default_rng(0)
    a, x = rng.standard_normal(7), rng.standard_normal(7)
    g = hg.numerical_gradient(lambda v: np.sum(a * v**2), x)
    np.testing.assert_allclose(g, 2 * a * x, rtol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_numerical_gradient_keeps_library_shape_and_dtype(backend):
    xp = namespace_or_skip(backend)
    x = convert(np.arange(6.0).reshape(2, 3), xp)
    g = hg.numerical_gradient(lambda v: xp.sum(v**3), x)
    assert type(g) is type(x) and g.shape == x.shape and g.dtype == x.dtype
    np.testing.assert_allclose(to_numpy(g), 3 * np.arange(6.0).reshape(2, 3) ** 2, atol=1e-6)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.arange(4.0)
    before = x.copy()
    calls = []

    def f(v):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return np.sum(v)

    with pytest.raises(RuntimeError, match="boom"):
        hg.numerical_gradient(f, x)
    np.testing.assert_array_equal(x, before)


def test_numerical_gradient_refuses_non_scalar_f_and_bad_eps():
    x = np.ones(3)
    with pytest.raises(ValueError, match=r"must return a scalar.*\(3,\)"):
        hg.numerical_gradient(lambda v: v * 2, x)
    with pytest.raises(ValueError, match="eps must be a finite number greater than 0, got 0"):
        hg.numerical_gradient(np.sum, x, eps=0)
    with pytest.raises(ValueError, match="eps"):
        hg.numerical_gradient(np.sum, x, eps=-1e-3)
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        hg.numerical_gradient(np.sum, np.arange(3))


def test_numerical_gradient_names_the_element_where_the_loss_is_not_finite():
    x = np.array([1.0, 0.0, 2.0])
    with pytest.raises(ValueError, match=r"x\[1\] moves by -1e-06"):
        hg.numerical_gradient(lambda v: np.sum(np.sqrt(v)) if v[1] >= 0 else np.inf, x)
    np.testing.assert_array_equal(x, [1.0, 0.0, 2.0])


def test_relative_difference_is_the_seeds_formula_with_a_floor():
    a = np.array([1.0, 0.0, 1e-13, 2.0])
    b = np.array([3.0, 0.0, 0.0, -2.0])
    rel = hg.relative_difference(a, b)
    np.testing.assert_allclose(rel, [0.5, 0.0, 1e-13 / RELATIVE_FLOOR, 1.0])
    np.testing.assert_allclose(hg.relative_difference(a, b, floor=0), [0.5, 0.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="floor"):
        hg.relative_difference(a, b, floor=-1)


def _batch(rng, batch=8, features=5, classes=3):
    return rng.standard_normal((batch, features)), rng.integers(0, classes, batch)


@pytest.mark.parametrize("name", sorted(LAYER_BUGS))
def test_every_wrong_layer_in_the_zoo_is_caught(name):
    rng = np.random.default_rng(1)
    layer = LAYER_BUGS[name](rng)
    x = rng.standard_normal((4, getattr(layer, "in_features", 5)))
    with pytest.raises(hg.GradientCheckError) as caught:
        hg.check_layer(layer, x, rng=2)
    failure = caught.value.failure
    assert failure.n_failed > 0
    assert failure.name in caught.value.args[0]


def test_the_seeds_markdown_slip_is_caught_and_located():
    rng = np.random.default_rng(3)
    net = SeedSlipNet(6, rng)
    x, y = _batch(rng, features=6, classes=6)
    with pytest.raises(hg.GradientCheckError, match="'w_1'") as caught:
        hg.check_gradients(net, hg.CrossEntropyLoss(), x, y)
    report = caught.value.report
    assert report["w_2"].passed and not report["w_1"].passed


def test_a_wrong_layer_inside_a_model_is_named_with_its_index():
    rng = np.random.default_rng(4)
    model = hg.Sequential(hg.Linear(5, 7, rng=rng), MissingSigmoidDerivative(), hg.Linear(7, 3))
    x, y = _batch(rng)
    with pytest.raises(hg.GradientCheckError, match=r"'0\.weight'") as caught:
        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    report = caught.value.report
    assert [c.name for c in report.failures] == ["0.weight", "0.bias"]
    assert report["2.weight"].passed


def test_averaged_bias_is_caught_only_when_the_batch_has_more_than_one_row():
    rng = np.random.default_rng(5)
    layer = AveragedBiasGrad(3, 2, rng=rng)
    hg.check_layer(layer, rng.standard_normal((1, 3)))  # identical for one row
    with pytest.raises(hg.GradientCheckError, match="'bias'"):
        hg.check_layer(layer, rng.standard_normal((2, 3)))


LAYERS = {
    "linear": lambda rng: hg.Linear(5, 4, rng=rng),
    "linear without bias": lambda rng: hg.Linear(5, 4, bias=False, rng=rng),
    "sigmoid": lambda rng: hg.Sigmoid(),
    "tanh": lambda rng: hg.Tanh(),
    "relu": lambda rng: hg.ReLU(),
    "softmax": lambda rng: hg.Softmax(),
    "log-softmax": lambda rng: hg.LogSoftmax(),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_correct_layers_pass_with_the_defaults_over_100_seeds(name):
    for seed in range(100):
        rng = np.random.default_rng(seed)
        layer = LAYERS[name](rng)
        x = rng.standard_normal((1 + seed % 6, 5)) * (1 + seed % 4)
        report = hg.check_layer(layer, x, rng=seed)
        assert report.passed, f"seed {seed}\n{report}"


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("loss", ["cross-entropy", "mse", "nll"])
def test_correct_models_pass_with_the_defaults_over_100_seeds(activation, loss):
    for seed in range(100):
        rng = np.random.default_rng(seed)
        model = hg.mlp([4, 6, 3], activation, rng=rng)
        x = rng.standard_normal((1 + seed % 8, 4)) * (1 + seed % 3)
        if loss == "mse":
            loss_fn, y = hg.MSELoss(), rng.standard_normal((x.shape[0], 3))
        elif loss == "nll":
            model = hg.Sequential(*model.layers, hg.LogSoftmax())
            loss_fn, y = hg.NLLLoss(reduction="sum"), rng.integers(0, 3, x.shape[0])
        else:
            loss_fn, y = hg.CrossEntropyLoss(), rng.integers(0, 3, x.shape[0])
        report = hg.check_gradients(model, loss_fn, x, y)
        assert report.passed, f"seed {seed}\n{report}"


def _seed_rule_fails(report_like_a, numeric, threshold):
    """The seed notebook's check: any |a - n| / (|a| + |n|) > threshold, 0/0 as 0."""
    with np.errstate(invalid="ignore"):
        rel = np.abs(report_like_a - numeric) / (np.abs(report_like_a) + np.abs(numeric))
    return bool(np.any(np.nan_to_num(rel) > threshold))


@pytest.mark.parametrize("seed", range(3))
def test_a_correct_64_128_10_network_passes_where_the_seeds_rule_fails(seed):
    rng = np.random.default_rng(seed)
    model = hg.mlp([64, 128, 10], "sigmoid", init="small_normal", rng=rng)
    x, y = rng.standard_normal((32, 64)), rng.integers(0, 10, 32)
    loss = hg.CrossEntropyLoss()
    report = hg.check_gradients(model, loss, x, y)
    assert report.passed, str(report)
    # The same numbers judged by the seed's purely relative rule at eps = threshold = 1e-6 fail:
    # the tolerance's noise floor is what lets a correct network pass.
    weight = model.params["0.weight"]
    analytic = model.grads["0.weight"].copy()
    numeric = hg.numerical_gradient(lambda _: loss.forward(model.forward(x), y), weight, 1e-6)
    assert _seed_rule_fails(analytic, numeric, 1e-6)


def test_parameters_are_restored_bit_for_bit_even_when_the_check_fails():
    rng = np.random.default_rng(6)
    model = hg.Sequential(hg.Linear(5, 7, rng=rng), MissingSigmoidDerivative(), hg.Linear(7, 3))
    before = {k: v.copy() for k, v in model.params.items()}
    ids = {k: id(v) for k, v in model.params.items()}
    x, y = _batch(rng)
    x_before = x.copy()
    with pytest.raises(hg.GradientCheckError):
        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    for k, v in model.params.items():
        assert id(v) == ids[k]
        np.testing.assert_array_equal(v, before[k])
    np.testing.assert_array_equal(x, x_before)


def test_float32_input_warns_and_checks_a_float64_copy():
    rng = np.random.default_rng(7)
    model = hg.mlp([5, 6, 3], rng=rng, dtype="float32")
    x = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.integers(0, 3, 4)
    before = {k: v.copy() for k, v in model.params.items()}
    with pytest.warns(hg.GradientCheckWarning, match="float32"):
        report = hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    assert report.passed
    for k, v in model.params.items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, before[k])


def test_float16_layers_are_checked_in_float64_too():
    rng = np.random.default_rng(16)
    x = rng.standard_normal((3, 4)).astype(np.float16)
    with pytest.warns(hg.GradientCheckWarning, match="x is float16"):
        assert hg.check_layer(hg.Linear(4, 2, rng=rng, dtype="float16"), x).passed


def test_float64_data_draws_no_warning():
    rng = np.random.default_rng(8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hg.check_layer(hg.Tanh(), rng.standard_normal((3, 4)))


def test_report_names_the_worst_element_and_prints_a_table():
    rng = np.random.default_rng(9)
    layer = hg.Linear(3, 2, rng=rng)
    x = rng.standard_normal((4, 3))
    report = hg.check_layer(layer, x, rng=1)
    assert [c.name for c in report.checks] == ["x", "weight", "bias"]
    assert report["weight"].shape == (2, 3) and report["weight"].size == 6
    text = str(report)
    for word in ("array", "max rel diff", "worst index", "weight", "bias", "3 of 3 checks passed"):
        assert word in text
    assert report.atol == pytest.approx(
        NOISE_FACTOR * np.finfo(np.float64).eps * report_scale(layer, x, 1) / 1e-6
    )


def report_scale(layer, x, seed):
    y = layer.forward(x)
    r = _upstream_rng(seed).standard_normal(y.shape)  # the upstream gradient's own stream
    return float(np.sum(np.abs(y * r)))


def test_error_message_points_at_the_element():
    rng = np.random.default_rng(10)
    layer = LAYER_BUGS["sign error in the weight gradient"](rng)
    x = rng.standard_normal((3, 5))
    with pytest.raises(hg.GradientCheckError) as caught:
        hg.check_layer(layer, x)
    failure = caught.value.failure
    message = str(caught.value)
    assert failure.name == "weight"
    assert f"index {failure.worst_index}" in message
    assert f"analytic {failure.analytic:.6e}" in message
    assert f"numeric {failure.numeric:.6e}" in message
    assert f"{failure.n_failed} of 20 elements off" in message
    assert failure.analytic == pytest.approx(-failure.numeric, rel=1e-6)
    assert isinstance(caught.value, ValueError)


def test_a_transposed_gradient_of_the_wrong_shape_is_reported_as_such():
    class Transposed(hg.Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            self.grads["weight"] = self.grads["weight"].T
            return dx

    rng = np.random.default_rng(11)
    with pytest.raises(hg.GradientCheckError, match=r"shape \(5, 4\) but the parameter has"):
        hg.check_layer(Transposed(5, 4, rng=rng), rng.standard_normal((2, 5)))


def test_raise_on_failure_false_returns_the_failing_report():
    rng = np.random.default_rng(12)
    report = hg.check_layer(
        MissingSigmoidDerivative(), rng.standard_normal((2, 3)), raise_on_failure=False
    )
    assert not report.passed and report.failures[0].name == "x"


def test_a_parameter_without_a_gradient_entry_is_named():
    class Forgetful(hg.Linear):
        def backward(self, dy):
            dx = super().backward(dy)
            del self.grads["bias"]
            return dx

    rng = np.random.default_rng(13)
    with pytest.raises(ValueError, match=r"parameter 'bias' but no grads\['bias'\]"):
        hg.check_layer(Forgetful(3, 2, rng=rng), rng.standard_normal((2, 3)))


def test_not_a_layer_is_refused_with_the_missing_members():
    with pytest.raises(TypeError, match="lacks params, grads, forward, backward"):
        hg.check_layer(lambda x: x, np.ones((2, 2)))


def test_bad_eps_and_threshold_are_refused():
    layer, x = hg.Tanh(), np.ones((2, 2))
    with pytest.raises(ValueError, match="eps"):
        hg.check_layer(layer, x, eps=0.0)
    with pytest.raises(ValueError, match="threshold"):
        hg.check_layer(layer, x, threshold=-1.0)
    with pytest.raises(ValueError, match="x contains NaN"):
        hg.check_layer(layer, np.array([[np.nan, 1.0]]))


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_checks_run_on_other_backends(backend):
    xp = namespace_or_skip(backend)
    rng = np.random.default_rng(14)
    model = hg.mlp([4, 5, 3], "tanh", rng=rng, backend=backend)
    x = convert(rng.standard_normal((3, 4)), xp)
    y = convert(rng.integers(0, 3, 3), xp)
    assert hg.check_gradients(model, hg.CrossEntropyLoss(), x, y).passed
    broken = hg.Sequential(hg.Linear(4, 3, rng=rng, backend=backend), MissingSigmoidDerivative())
    with pytest.raises(hg.GradientCheckError, match=r"'0\.weight'"):
        hg.check_gradients(broken, hg.MSELoss(), x, convert(np.ones((3, 3)), xp))


def test_the_error_carries_all_failures_and_the_report_is_frozen():
    rng = np.random.default_rng(15)
    model = hg.Sequential(hg.Linear(5, 7, rng=rng), MissingSigmoidDerivative(), hg.Linear(7, 3))
    x, y = _batch(rng)
    with pytest.raises(hg.GradientCheckError, match=r"\(1 more check failed too\)") as caught:
        hg.check_gradients(model, hg.CrossEntropyLoss(), x, y)
    report = caught.value.report
    assert len(report.failures) == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.eps = 1.0
