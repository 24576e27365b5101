"""Residual and ModuleDict: residual addition inside nested containers against torch in
float64 (1e-12), gradient checks, model files, training with fit, and refusals."""

import numpy as np
import pytest
import torch
from helpers import rel_err

import handgrad as hg
from handgrad.interop.oracle import to_torch_module
from handgrad.nn.protocol import chain
from handgrad.nn.registry import build_layer, layer_spec, spec_shapes


def _nested(rng):
    """Residuals two deep inside Sequentials."""
    inner = hg.Residual(hg.Tanh(), hg.Linear(4, 4, rng=rng))
    return hg.Sequential(
        hg.Linear(3, 4, rng=rng),
        hg.Residual(hg.Linear(4, 4, rng=rng), hg.Sequential(hg.Sigmoid(), inner)),
        hg.LayerNorm(4),
        hg.Linear(4, 2, rng=rng),
    )


def test_nested_residuals_equal_torch():
    rng = np.random.default_rng(0)
    model = _nested(rng)
    assert "1.1.1.1.weight" in model.params  # named as torch names them
    module = to_torch_module(model)
    assert [k for k, _ in module.named_parameters()] == list(model.params)
    x, r = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    (out * torch.from_numpy(r)).sum().backward()
    assert rel_err(model.forward(x), out.detach()) < 1e-12
    assert rel_err(model.backward(r), x_t.grad) < 1e-12
    for name, p in module.named_parameters():
        assert rel_err(model.grads[name], p.grad) < 1e-12, name


def test_a_residual_is_one_element_of_the_chain_and_passes_the_checks():
    rng = np.random.default_rng(1)
    model = _nested(rng)
    assert [type(layer).__name__ for layer in chain(model)] == [
        "Linear",
        "Residual",
        "LayerNorm",
        "Linear",
    ]
    x, y = rng.standard_normal((4, 3)), rng.integers(0, 2, 4)
    assert hg.check_gradients(model, hg.CrossEntropyLoss(), x, y).passed
    assert hg.check_layer(model[1], rng.standard_normal((3, 4)), rng=2).passed


def test_fit_trains_a_residual_model_as_plain_steps_do():
    from handgrad.training import SGD, fit

    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((8, 3)), rng.integers(0, 2, 8)
    model, twin = _nested(np.random.default_rng(4)), _nested(np.random.default_rng(4))
    fit(model, hg.CrossEntropyLoss(), SGD(model.params, lr=0.1), X, y, epochs=1, batch_size=8)
    loss = hg.CrossEntropyLoss()
    loss.forward(twin.forward(X), y)
    twin.backward(loss.backward())
    for name, p in twin.params.items():
        assert np.allclose(model.params[name], p - 0.1 * twin.grads[name], rtol=0, atol=1e-14)


def test_a_residual_saves_and_rebuilds():
    model = _nested(np.random.default_rng(5))
    spec = layer_spec(model)
    assert spec["layers"][1]["type"] == "Residual"
    assert spec_shapes(spec) == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rebuilt = build_layer(spec).load_state_dict(model.state_dict())
    x = np.ones((2, 3))
    assert np.array_equal(rebuilt.forward(x), model.forward(x))


def test_a_residual_must_keep_the_shape():
    with pytest.raises(ValueError, match=r"must keep the shape of their input \(2, 3\)"):
        hg.Residual(hg.Linear(3, 2)).forward(np.ones((2, 3)))


def test_module_dict_names_its_members_and_has_no_forward():
    parts = hg.ModuleDict(a=hg.Linear(2, 3, rng=0), b=hg.Sequential(hg.Tanh(), hg.Linear(3, 1)))
    assert list(parts.params) == ["a.weight", "a.bias", "b.1.weight", "b.1.bias"]
    assert parts.eval() is parts and not parts["b"][1].training
    with pytest.raises(TypeError, match="has no forward pass of its own"):
        parts.forward(np.ones((1, 2)))
    with pytest.raises(TypeError, match=r"layer 'c' \(int\) does not follow the layer protocol"):
        hg.ModuleDict(c=3)
