"""Modules and containers: nesting with torch's names, tied parameters listed once with their
gradients summed, buffers in state_dict, modes, and moves that keep ties."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import Square, as_torch, rel_err

import handgrad as hg
from handgrad.nn.module import slots

torch = pytest.importorskip("torch")


class Counter(hg.Module):
    """A layer with a buffer: counts the rows it has seen in training mode."""

    def __init__(self):
        super().__init__()
        self.buffers["seen"] = np.zeros(())

    def forward(self, x):
        if self.training:
            self.buffers["seen"] += x.shape[0]
        return x

    def backward(self, dy):
        return dy


def _nested(rng):
    return hg.Sequential(
        hg.Linear(4, 5, rng=rng),
        hg.Sequential(hg.Tanh(), hg.Sequential(hg.Linear(5, 3, rng=rng), Counter())),
        hg.Linear(3, 2, rng=rng),
    )


def test_nested_containers_are_named_as_torch_names_them():
    model = _nested(np.random.default_rng(0))
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 5),
        torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Linear(5, 3))),
        torch.nn.Linear(3, 2),
    )
    assert list(model.params) == [name for name, _ in reference.named_parameters()]
    assert list(model.buffers) == ["1.1.1.seen"]
    assert list(model.state_dict()) == [*model.params, "1.1.1.seen"]


def test_a_nested_model_backpropagates_as_torch_does():
    rng = np.random.default_rng(1)
    model = _nested(rng)
    x, r = rng.standard_normal((6, 4)), rng.standard_normal((6, 2))
    module = torch.nn.Sequential(
        torch.nn.Linear(4, 5),
        torch.nn.Sequential(torch.nn.Tanh(), torch.nn.Sequential(torch.nn.Linear(5, 3))),
        torch.nn.Linear(3, 2),
    ).double()
    module.load_state_dict({k: as_torch(v) for k, v in model.params.items()})
    x_t = as_torch(x, requires_grad=True)
    (module(x_t) * as_torch(r)).sum().backward()
    assert rel_err(model.forward(x), module(x_t).detach()) < 1e-12
    assert rel_err(model.backward(r), x_t.grad) < 1e-12
    for name, p in module.named_parameters():
        assert rel_err(model.grads[name], p.grad) < 1e-12, name


def test_tied_parameters_are_listed_once_and_their_gradients_add_up():
    rng = np.random.default_rng(2)
    first, second = hg.Linear(3, 3, bias=False, rng=rng), hg.Linear(3, 3, rng=rng)
    second.params["weight"] = first.params["weight"]  # one array, used twice
    model = hg.Sequential(first, hg.Tanh(), second)
    assert list(model.params) == ["0.weight", "2.bias"]
    assert len(slots(model)["0.weight"]) == 2

    shared = torch.nn.Parameter(as_torch(first.params["weight"]))
    bias = torch.nn.Parameter(as_torch(second.params["bias"]))
    x, r = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    x_t = as_torch(x)
    out = torch.tanh(x_t @ shared.T) @ shared.T + bias
    (out * as_torch(r)).sum().backward()
    model.forward(x)
    model.backward(r)
    assert rel_err(model.grads["0.weight"], shared.grad) < 1e-12
    assert rel_err(model.grads["2.bias"], bias.grad) < 1e-12
    report = hg.check_gradients(model, hg.MSELoss(), x, np.zeros((4, 3)))
    assert report.passed and [c.name for c in report.checks] == ["0.weight", "2.bias"]


def test_training_a_tied_model_updates_the_shared_array_once_per_step():
    rng = np.random.default_rng(3)
    first, second = hg.Linear(4, 4, rng=rng), hg.Linear(4, 2, rng=rng)
    model = hg.Sequential(first, hg.Tanh(), hg.Linear(4, 4, rng=rng), hg.Tanh(), second)
    model.layers[2].params["weight"] = first.params["weight"]
    X, y = rng.standard_normal((8, 4)), rng.integers(0, 2, 8)
    before = first.params["weight"].copy()
    model.forward(X)
    loss = hg.CrossEntropyLoss()
    loss.forward(model.forward(X), y)
    model.backward(loss.backward())
    expected = before - 0.1 * model.grads["0.weight"]
    from handgrad.training import SGD, fit

    fit(model, loss, SGD(model.params, lr=0.1), X, y, epochs=1, batch_size=8, shuffle=False)
    assert model.layers[2].params["weight"] is first.params["weight"]
    assert np.allclose(first.params["weight"], expected, rtol=0, atol=1e-14)


def test_state_dict_holds_buffers_and_load_state_dict_restores_them():
    model = _nested(np.random.default_rng(4))
    model.forward(np.ones((5, 4)))
    state = model.state_dict()
    assert float(state["1.1.1.seen"]) == 5.0
    fresh = _nested(np.random.default_rng(5))
    assert fresh.load_state_dict(state) is fresh
    assert float(fresh.buffers["1.1.1.seen"]) == 5.0
    for name, value in model.params.items():
        assert np.array_equal(fresh.params[name], value)
    state["1.1.1.seen"][()] = 99.0  # a copy: the model is not changed through it
    assert float(model.buffers["1.1.1.seen"]) == 5.0


def test_load_state_dict_changes_nothing_unless_everything_fits():
    model = _nested(np.random.default_rng(6))
    before = model.state_dict()
    bad = dict(before, **{"2.weight": np.zeros((9, 9))})
    with pytest.raises(ValueError, match=r"state\['2.weight'\] has shape \(9, 9\)"):
        model.load_state_dict(bad)
    with pytest.raises(KeyError, match=r"missing \['1\.1\.1\.seen'\]"):
        model.load_state_dict({k: v for k, v in before.items() if k != "1.1.1.seen"})
    for name, value in model.state_dict().items():
        assert np.array_equal(value, before[name])


def test_train_and_eval_return_the_model_and_reach_every_layer():
    model = _nested(np.random.default_rng(7))
    counter = model.layers[1].layers[1].layers[1]
    assert model.eval() is model
    assert not model.training and not counter.training and not model.layers[0].training
    model.forward(np.ones((3, 4)))
    assert float(counter.buffers["seen"]) == 0.0  # eval: not counted
    assert model.train() is model and counter.training
    model.forward(np.ones((3, 4)))
    assert float(counter.buffers["seen"]) == 3.0


def test_a_users_layer_without_modes_or_buffers_still_works_in_a_container():
    model = hg.Sequential(hg.Linear(3, 3, rng=0), Square())
    assert model.eval() is model and model.train() is model
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    assert model.forward(np.ones((2, 3))).shape == (2, 3)


def test_to_keeps_tied_arrays_tied():
    rng = np.random.default_rng(8)
    first, second = hg.Linear(3, 3, rng=rng), hg.Linear(3, 3, rng=rng)
    second.params["weight"] = first.params["weight"]
    model = hg.Sequential(first, second).to("torch", dtype="float32")
    assert model.layers[0] is first
    assert isinstance(first.params["weight"], torch.Tensor)
    assert second.params["weight"] is first.params["weight"]
    assert first.params["weight"].dtype == torch.float32


def test_the_params_view_is_live_and_assignable():
    model = hg.mlp([3, 4, 2], rng=0)
    model.params["0.bias"][...] = 7.0
    assert np.all(model.layers[0].params["bias"] == 7.0)
    model.params["2.bias"] = np.ones(2)
    assert np.array_equal(model.layers[2].params["bias"], np.ones(2))
    with pytest.raises(KeyError, match=r"no array named '9\.weight'"):
        model.params["9.weight"] = np.ones(2)


def test_calling_params_like_a_method_still_works_with_a_deprecation_warning():
    model = hg.mlp([3, 2], rng=0)
    with pytest.warns(DeprecationWarning, match=r"model.params\(\) is deprecated"):
        snapshot = model.params()
    assert list(snapshot) == ["0.weight", "0.bias"] and isinstance(snapshot, dict)
