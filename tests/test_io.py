import json
import zipfile

import numpy as np
import pytest

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.model_files import (
    architecture,
    build,
    load_classifier,
    save_classifier,
)
from handgrad.core.archives import FORMAT_VERSION
from handgrad.core.errors import ModelFileError
from handgrad.data import Standardiser


def _classifier():
    model = hg.mlp([3, 4, 2], "tanh", rng=0)
    scaler = Standardiser.from_arrays(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0]))
    return Classifier(model, scaler, ("no", "yes"), ("a", "b", "c"), "label", {"seed": 3})


def test_save_and_load_round_trip(tmp_path):
    original = _classifier()
    path = save_classifier(tmp_path / "model.npz", original)
    loaded = load_classifier(path)
    assert loaded.class_names == ("no", "yes") and loaded.feature_names == ("a", "b", "c")
    assert loaded.target_name == "label" and loaded.info == {"seed": 3}
    for k, v in original.model.params.items():
        np.testing.assert_array_equal(loaded.model.params[k], v)
    X = np.random.default_rng(0).standard_normal((5, 3))
    np.testing.assert_array_equal(loaded.predict_proba(X), original.predict_proba(X))
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["meta"]))
    assert meta["version"] == FORMAT_VERSION and meta["format"] == "handgrad-model"


def test_loading_onto_torch_gives_the_same_predictions(tmp_path):
    pytest.importorskip("torch")
    path = save_classifier(tmp_path / "model.npz", _classifier())
    X = np.random.default_rng(1).standard_normal((4, 3))
    np.testing.assert_allclose(
        load_classifier(path, backend="torch").predict_proba(X),
        load_classifier(path).predict_proba(X),
        rtol=1e-12,
    )


def test_architecture_and_build_round_trip():
    model = hg.Sequential(hg.Linear(3, 4, bias=False), hg.ReLU(), hg.Linear(4, 2), hg.LogSoftmax())
    spec = architecture(model)
    assert spec[0] == {"type": "Linear", "in_features": 3, "out_features": 4, "bias": False}
    assert architecture(build(spec)) == spec


def test_own_layers_cannot_be_saved():
    class Mine(hg.Tanh):
        pass

    with pytest.raises(
        TypeError,
        match=r"layer 1 \(Mine\) is not a registered handgrad layer type, so it cannot be saved",
    ):
        architecture(hg.Sequential(hg.Linear(2, 2), Mine()))


def _write(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def _meta(**changes):
    meta = {
        "format": "handgrad-model",
        "version": 1,
        "architecture": [{"type": "Linear", "in_features": 2, "out_features": 2, "bias": False}],
        "class_names": ["a", "b"],
        "feature_names": ["x", "y"],
        "target_name": "t",
        "info": {},
    }
    meta.update(changes)
    return np.array(json.dumps(meta))


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p, "does not exist"),
        (lambda p: p.write_bytes(b"not a zip at all") and p, "not a readable handgrad model file"),
        (lambda p: _write(p, meta=np.array([{"a": 1}], dtype=object)), "not a readable"),
        (lambda p: _write(p, weights=np.ones(3)), "no valid handgrad metadata"),
        (lambda p: _write(p, meta=np.array("{not json")), "no valid handgrad metadata"),
        (lambda p: _write(p, meta=_meta(format="other")), "not a handgrad model file"),
        (lambda p: _write(p, meta=_meta(version=2)), "format version 2, newer than this"),
        (
            lambda p: _write(p, meta=_meta(), **{"param/0.weight": np.ones((3, 2))}),
            r"does not describe a consistent model: .*shape \(3, 2\)",
        ),
        (lambda p: _write(p, meta=_meta()), r"parameter 0\.weight has shape None"),
        (
            lambda p: _write(p, meta=_meta(architecture=[{"type": "Conv"}])),
            "has type 'Conv', which this handgrad does not know",
        ),
    ],
)
def test_bad_model_files_are_refused_clearly(tmp_path, make, match):
    path = make(tmp_path / "model.npz")
    with pytest.raises(ModelFileError, match=match):
        load_classifier(path)


def test_a_truncated_file_is_refused(tmp_path):
    path = save_classifier(tmp_path / "model.npz", _classifier())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable handgrad model file"):
        load_classifier(path)
    assert zipfile.is_zipfile(path) is False


def test_saving_is_atomic(tmp_path, monkeypatch):
    path = save_classifier(tmp_path / "model.npz", _classifier())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_classifier(path, _classifier())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]
