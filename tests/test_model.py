import numpy as np
import pytest
from helpers import Square, as_torch, namespace_or_skip, rel_err

import handgrad as hg
from handgrad.core.arrays import convert, to_numpy

torch = pytest.importorskip("torch")


def _model(rng=0, **kwargs):
    return hg.Sequential(
        hg.Linear(4, 5, rng=rng, **kwargs), hg.Tanh(), hg.Linear(5, 3, rng=rng, **kwargs)
    )


def test_parameters_are_named_as_pytorch_names_them():
    model = _model()
    reference = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    assert list(model.params) == list(reference.state_dict())
    for k, v in model.state_dict().items():
        assert tuple(v.shape) == tuple(reference.state_dict()[k].shape)
    assert list(model.grads) == list(model.params)


def test_params_are_live_and_state_dict_is_a_copy():
    model = _model()
    model.params["0.weight"][0, 0] = 42.0
    assert model[0].params["weight"][0, 0] == 42.0
    state = model.state_dict()
    state["0.weight"][0, 0] = -1.0
    assert model[0].params["weight"][0, 0] == 42.0


def test_weights_move_to_torch_and_back_and_compute_the_same():
    rng = np.random.default_rng(1)
    model = _model(rng)
    reference = torch.nn.Sequential(
        torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3)
    ).double()
    reference.load_state_dict({k: as_torch(v) for k, v in model.state_dict().items()})
    x = rng.standard_normal((6, 4))
    assert rel_err(model.forward(x), reference(as_torch(x)).detach()) < 1e-12
    with torch.no_grad():
        for p in reference.parameters():
            p.mul_(-2.0)
    model.load_state_dict(reference.state_dict())
    assert rel_err(model.forward(x), reference(as_torch(x)).detach()) < 1e-12


def test_load_state_dict_copies_in_place_and_refuses_a_bad_state_unchanged():
    model = _model()
    weight = model[0].params["weight"]
    before = model.state_dict()
    state = {k: v * 2 for k, v in before.items()}
    model.load_state_dict(state)
    assert model[0].params["weight"] is weight
    np.testing.assert_array_equal(weight, before["0.weight"] * 2)
    bad = dict(state, **{"2.weight": np.zeros((5, 3))})
    with pytest.raises(
        ValueError, match=r"state\['2.weight'\] has shape \(5, 3\), the model needs \(3, 5\)"
    ):
        model.load_state_dict({k: v + 1 for k, v in bad.items()})
    np.testing.assert_array_equal(weight, before["0.weight"] * 2)
    with pytest.raises(KeyError, match=r"missing \['2.bias'\], unexpected \['9.bias'\]"):
        model.load_state_dict({**{k: v for k, v in state.items() if k != "2.bias"}, "9.bias": 0})


def test_backward_is_the_chain_in_reverse():
    rng = np.random.default_rng(2)
    model = _model(rng)
    x, r = rng.standard_normal((3, 4)), rng.standard_normal((3, 3))
    y = model.forward(x)
    dx = model.backward(r)
    h = model[0].forward(x)
    expected = model[0].backward(model[1].backward(model[2].backward(r)))
    np.testing.assert_array_equal(y, model[2].forward(model[1].forward(h)))
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("backend", ["torch", "array_api_strict"])
def test_to_moves_every_array_and_keeps_the_numbers(backend):
    xp = namespace_or_skip(backend)
    model = _model()
    x = np.random.default_rng(3).standard_normal((2, 4))
    expected = model.forward(x)
    model.to(backend)
    y = model.forward(convert(x, xp))
    assert rel_err(y, expected) < 1e-12
    assert all(type(v) is type(y) for v in model.params.values())
    model.to("numpy", dtype="float32")
    assert all(v.dtype == np.float32 for v in model.params.values())
    assert rel_err(to_numpy(model.forward(x.astype(np.float32))), expected) < 1e-6


def test_a_users_own_layer_works_in_a_model():
    rng = np.random.default_rng(4)
    model = hg.Sequential(hg.Linear(3, 4, rng=rng), Square(), hg.Linear(4, 2, rng=rng))
    x, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
    assert hg.check_gradients(model, hg.CrossEntropyLoss(), x, y).passed


def test_sequential_refuses_what_is_not_a_layer():
    with pytest.raises(TypeError, match=r"layer 1 \(int\) does not follow the layer protocol"):
        hg.Sequential(hg.Tanh(), 3)
    with pytest.raises(ValueError, match="at least one layer"):
        hg.Sequential()

    class BadParams:
        params, grads = [], {}

        def forward(self, x):
            return x

        def backward(self, dy):
            return dy

    with pytest.raises(TypeError, match=r"params must be a dict .* got list"):
        hg.Sequential(BadParams())


def test_repr_len_and_iteration():
    model = _model()
    assert len(model) == 3 and list(model)[1] is model[1]
    assert "(0): Linear(in_features=4, out_features=5, bias=True)" in repr(model)
