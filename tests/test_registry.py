"""The registry of layer types: a new layer type is one class in one file (here, this test),
and model files, the autograd oracle, ``mlp`` and the command line's choices know it."""

from __future__ import annotations

import numpy as np
import pytest

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.nn.registry import (
    LAYER_TYPES,
    activation,
    activation_names,
    build_layer,
    layer_spec,
    register_layer,
    spec_shapes,
)


class Scale(hg.Module):
    """y = x * gain + shift, per feature: a toy layer type with a parameter and a buffer."""

    def __init__(self, num_features: int, shift: float = 0.0):
        super().__init__()
        self.num_features, self.shift = num_features, shift
        self.params["gain"] = np.linspace(0.5, 1.5, num_features)
        self.buffers["shift"] = np.full(num_features, float(shift))
        self.grads = {"gain": np.zeros(num_features)}

    @classmethod
    def array_shapes(cls, num_features: int, shift: float = 0.0):
        return {"gain": (num_features,), "shift": (num_features,)}

    def config(self):
        return {"num_features": self.num_features, "shift": self.shift}

    def forward(self, x):
        self.x = x
        return x * self.params["gain"] + self.buffers["shift"]

    def backward(self, dy):
        # dL/dgain = sum over the batch of dy x,  dL/dx = dy gain
        self.grads["gain"] = (dy * self.x).sum(axis=0)
        return dy * self.params["gain"]


@pytest.fixture
def registered():
    register_layer(Scale)
    yield Scale
    del LAYER_TYPES["Scale"]


def test_a_registered_type_is_saved_loaded_and_run(registered, tmp_path):
    model = hg.Sequential(hg.Linear(3, 4, rng=0), Scale(4, shift=0.25), hg.Linear(4, 2, rng=1))
    model.layers[1].params["gain"][...] = [2.0, -1.0, 0.5, 3.0]
    saved = Classifier(model, None, ("a", "b"), ("x", "y", "z"))
    loaded = load_classifier(save_classifier(tmp_path / "model.npz", saved))
    X = np.random.default_rng(0).standard_normal((5, 3))
    assert np.array_equal(loaded.predict_proba(X), saved.predict_proba(X))
    assert loaded.model.layers[1].config() == {"num_features": 4, "shift": 0.25}
    assert np.array_equal(loaded.model.buffers["1.shift"], np.full(4, 0.25))


def test_specs_and_shapes_come_from_the_type(registered):
    spec = layer_spec(Scale(3, shift=1.0))
    assert spec == {"type": "Scale", "num_features": 3, "shift": 1.0}
    assert spec_shapes(spec) == {"gain": (3,), "shift": (3,)}
    assert isinstance(build_layer(spec), Scale)
    nested = {"type": "Sequential", "layers": [spec, {"type": "Tanh"}]}
    assert spec_shapes(nested) == {"0.gain": (3,), "0.shift": (3,)}


def test_a_registered_type_is_checked_like_any_layer(registered):
    x = np.random.default_rng(1).standard_normal((4, 3))
    assert hg.check_layer(Scale(3), x).passed


def test_an_unregistered_type_cannot_be_saved_or_rebuilt():
    with pytest.raises(TypeError, match=r"layer \(Scale\) is not a registered handgrad layer"):
        layer_spec(Scale(2))
    with pytest.raises(ValueError, match="has type 'Scale', which this handgrad does not know"):
        build_layer({"type": "Scale", "num_features": 2})
    with pytest.raises(ValueError, match="is not a layer description"):
        build_layer(["Linear"])
    with pytest.raises(ValueError, match=r"\(Linear\) has options it does not take"):
        build_layer({"type": "Linear", "in_features": 2, "out_features": 2, "colour": 1})


def test_two_types_of_one_name_are_refused(registered):
    class Scale(hg.Module):  # another class of the same name
        pass

    with pytest.raises(ValueError, match="a layer type named 'Scale' is registered already"):
        register_layer(Scale)


def test_activations_are_offered_by_name_to_mlp_and_the_command_line():
    class Cube(hg.Module):
        activation_name = "cube"

        def forward(self, x):
            self.x = x
            return x**3

        def backward(self, dy):
            return 3 * self.x**2 * dy  # dL/dx = 3 x^2 dL/dy

    register_layer(Cube)
    try:
        assert "cube" in activation_names() and activation("cube") is Cube
        model = hg.mlp([3, 4, 2], activation="cube", rng=0)
        assert isinstance(model.layers[1], Cube)
        from handgrad.cli.main import _parser

        args = _parser().parse_args(["check", "--activation", "cube"])
        assert args.activation == "cube"
    finally:
        del LAYER_TYPES["Cube"]
        from handgrad.nn import registry

        del registry._ACTIVATIONS["cube"]


def test_the_oracle_builds_torch_counterparts_from_the_registry():
    torch = pytest.importorskip("torch")
    from handgrad.interop.oracle import to_torch_module

    model = hg.Sequential(hg.Linear(3, 4, rng=0), hg.Sequential(hg.ReLU(), hg.Linear(4, 2)))
    module = to_torch_module(model)
    assert isinstance(module[1], torch.nn.Sequential)
    x = np.random.default_rng(2).standard_normal((5, 3))
    out = module(torch.from_numpy(x)).detach().numpy()
    assert np.allclose(out, model.forward(x), rtol=1e-12, atol=0)
