import numpy as np
import pytest
from zoo import MissingSigmoidDerivative

import handgrad as hg
from handgrad.interop.oracle import to_torch_module

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("loss", ["ce-labels", "ce-soft", "nll", "mse"])
def test_models_agree_with_autograd_to_1e12(activation, loss):
    rng = np.random.default_rng(0)
    model = hg.mlp([6, 8, 5, 3], activation, rng=rng)
    x = rng.standard_normal((7, 6))
    if loss == "ce-labels":
        loss_fn, y = hg.CrossEntropyLoss(), rng.integers(0, 3, 7)
    elif loss == "ce-soft":
        loss_fn, y = hg.CrossEntropyLoss("sum"), rng.dirichlet(np.ones(3), 7)
    elif loss == "nll":
        model = hg.Sequential(*model.layers, hg.LogSoftmax())
        loss_fn, y = hg.NLLLoss(), rng.dirichlet(np.ones(3), 7)
    else:
        model = hg.Sequential(*model.layers, hg.Softmax())
        loss_fn, y = hg.MSELoss(), rng.standard_normal((7, 3))
    comparison = hg.compare_with_autograd(model, loss_fn, x, y)
    assert comparison.passed, str(comparison)
    assert comparison.max_relative_difference < 1e-12
    assert comparison.names == ("x", *model.params)
    assert "agree" in str(comparison)


def test_a_wrong_backward_disagrees():
    rng = np.random.default_rng(1)
    model = hg.Sequential(hg.Linear(4, 5, rng=rng), MissingSigmoidDerivative(), hg.Linear(5, 2))
    x, y = rng.standard_normal((3, 4)), np.array([0, 1, 0])
    comparison = hg.compare_with_autograd(model, hg.CrossEntropyLoss(), x, y)
    assert not comparison.passed
    assert comparison.names[1] == "0.weight"
    assert comparison.max_rel_diff[1] > 0.1 and comparison.max_rel_diff[3] < 1e-12
    assert comparison.loss_rel_diff < 1e-12
    assert "DISAGREE" in str(comparison)


def test_a_layer_without_a_pytorch_counterpart_is_refused():
    class Square:
        params, grads = {}, {}

        def forward(self, x):
            return x * x

        def backward(self, dy):
            return dy

    model = hg.Sequential(hg.Linear(2, 2), Square())
    with pytest.raises(TypeError, match=r"layer 1 \(Square\): Square has no PyTorch counterpart"):
        hg.compare_with_autograd(model, hg.MSELoss(), np.ones((1, 2)), np.ones((1, 2)))


def test_a_wrong_input_gradient_shows_in_the_x_row():
    from zoo import WrongInputGrad

    rng = np.random.default_rng(3)
    model = hg.Sequential(WrongInputGrad(5, 4, rng=rng))
    comparison = hg.compare_with_autograd(
        model, hg.MSELoss(), rng.standard_normal((3, 5)), rng.standard_normal((3, 4))
    )
    assert comparison.max_rel_diff[0] == pytest.approx(1.0)
    assert max(comparison.max_rel_diff[1:]) < 1e-12


def test_float32_models_compare_in_float32():
    rng = np.random.default_rng(2)
    model = hg.mlp([4, 3, 2], rng=rng, dtype="float32")
    x = rng.standard_normal((5, 4)).astype(np.float32)
    comparison = hg.compare_with_autograd(model, hg.CrossEntropyLoss(), x, rng.integers(0, 2, 5))
    assert comparison.threshold == 1e-5 and comparison.passed


def test_rtol_is_the_deprecated_name_of_threshold():
    rng = np.random.default_rng(3)
    model, x = hg.mlp([4, 3, 2], rng=rng), rng.standard_normal((5, 4))
    with pytest.warns(DeprecationWarning, match="rtol is deprecated: pass threshold"):
        comparison = hg.compare_with_autograd(
            model, hg.CrossEntropyLoss(), x, rng.integers(0, 2, 5), rtol=1e-9
        )
    assert comparison.threshold == 1e-9 == comparison.rtol


def test_to_torch_module_and_unknown_losses():
    model = hg.mlp([3, 2], bias=False)
    module = to_torch_module(model)
    assert isinstance(module[0], torch.nn.Linear) and module[0].bias is None
    with pytest.raises(TypeError, match="loss must be one of handgrad's losses"):
        hg.compare_with_autograd(model, object(), np.ones((1, 3)), np.ones((1, 2)))
