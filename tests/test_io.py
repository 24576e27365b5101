import io
import json
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

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
from handgrad.core import archives, files
from handgrad.core.archives import FORMAT_VERSION
from handgrad.core.errors import ModelFileError
from handgrad.core.files import atomic_write
from handgrad.data import Standardizer


def _classifier():
    model = hg.mlp([3, 4, 2], "tanh", rng=0)
    scaler = Standardizer.from_arrays(np.array([1.0, 2.0, 3.0]), np.array([0.5, 1.0, 2.0]))
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


# --- files that are not the format (issue 15) ------------------------------------------------

DATA = Path(__file__).resolve().parent / "data"


def test_a_version_1_file_of_handgrad_0_2_still_loads_and_predicts_as_its_arrays_say():
    path = DATA / "model-v1.npz"  # written by handgrad 0.2 (commit a36dab8), before run ids
    classifier = load_classifier(path)
    assert classifier.class_names == ("setosa", "versicolor", "virginica")
    assert "run" not in classifier.info and classifier.info["seed"] == 0
    with np.load(path) as archive:
        w1, b1, w2, b2 = (
            archive[f"param/{k}"] for k in ("0.weight", "0.bias", "2.weight", "2.bias")
        )
        mean, scale = archive["scaler/mean"], archive["scaler/scale"]
    X = np.random.default_rng(0).normal(5, 2, size=(6, 4))
    hidden = 1 / (1 + np.exp(-((X - mean) / scale @ w1.T + b1)))
    logits = hidden @ w2.T + b2
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(classifier.predict_proba(X), expected, rtol=1e-12)


def _zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _good_members():
    meta = _meta(architecture=[{"type": "Linear", "in_features": 2, "out_features": 2}])
    return {"meta.npy": _npy(meta), "param/0.weight.npy": _npy(np.ones((2, 2)))}


def test_a_member_larger_than_the_metadata_allows_is_refused_before_it_is_decompressed(
    tmp_path, monkeypatch
):
    members = _good_members()
    members["param/0.bias.npy"] = _npy(np.zeros(3_000_000))  # 24 MB of zeros, the bias is (2,)
    path = _zip(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 100_000
    read = []
    real = archives._read_array
    monkeypatch.setattr(
        archives, "_read_array", lambda a, info, name: read.append(name) or real(a, info, name)
    )
    with pytest.raises(ModelFileError, match=r"would unpack .* into 22.9 MiB.*zip bomb"):
        load_classifier(path)
    assert read == []  # not even the metadata was decompressed


def test_a_member_beyond_its_metadata_is_refused_before_it_is_read(tmp_path, monkeypatch):
    members = _good_members()
    members["param/0.bias.npy"] = _npy(np.zeros(50_000))  # stored: 400 kB for a bias of 2
    path = _zip(tmp_path / "big.npz", members)
    read = []
    real = archives._read_array
    monkeypatch.setattr(
        archives, "_read_array", lambda a, info, name: read.append(name) or real(a, info, name)
    )
    with pytest.raises(
        ModelFileError, match=r"array param/0.bias declares 390.8 KiB, but its metadata allows 2 "
    ):
        load_classifier(path)
    assert read == ["meta"]


def test_an_architecture_that_claims_a_huge_model_cannot_unpack_one(tmp_path):
    members = _good_members()
    meta = _meta(architecture=[{"type": "Linear", "in_features": 10**9, "out_features": 2}])
    members["meta.npy"] = _npy(meta)
    members["param/0.weight.npy"] = _npy(np.zeros((20, 2**20 // 8)))  # deflates ~1000 times
    with pytest.raises(ModelFileError, match="zip bomb"):
        load_classifier(_zip(tmp_path / "claims.npz", members, zipfile.ZIP_DEFLATED))


def test_a_header_that_claims_more_than_its_member_holds_is_refused_unallocated(tmp_path):
    data = bytearray(_npy(np.ones((2, 2))))
    header = bytes(data[:128]).replace(b"(2, 2)", b"(2, 9)")
    members = {**_good_members(), "param/0.weight.npy": header + bytes(data[128:])}
    with pytest.raises(ModelFileError, match=r"claims shape \(2, 9\) of float64"):
        load_classifier(_zip(tmp_path / "liar.npz", members))


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ({"notes.txt": b"hello"}, r"it holds 'notes.txt', which is not an .npy array"),
        ({"meta.npy": b"not an npy"}, r"not a readable handgrad model file \(ValueError"),
        (
            {"other.npy": _npy(np.ones(2))},
            "holds an array 'other', which a handgrad model file has not",
        ),
    ],
    ids=["not-npy", "bad-npy", "unknown-array"],
)
def test_members_that_are_not_the_format_are_refused_naming_the_file(tmp_path, members, match):
    path = _zip(tmp_path / "odd.npz", {**_good_members(), **members})
    with pytest.raises(ModelFileError, match=match) as caught:
        load_classifier(path)
    assert str(path) in str(caught.value)


def test_a_folder_a_device_and_a_csv_file_are_named_as_such(tmp_path):
    with pytest.raises(ModelFileError, match="is a folder, not a handgrad model file"):
        load_classifier(tmp_path)
    if Path("/dev/zero").exists():
        with pytest.raises(ModelFileError, match="is not a plain file"):
            load_classifier("/dev/zero")
    csv_file = tmp_path / "data.csv"
    csv_file.write_text("a,b,label\n1,2,x\n")
    with pytest.raises(ModelFileError, match=r"'.*data\.csv' is a CSV file, not a handgrad model"):
        load_classifier(csv_file)


# --- atomic writes: permissions, temporary files ---------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
@pytest.mark.parametrize(("umask", "expected"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_a_new_file_gets_the_umasks_permissions(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        path = save_classifier(tmp_path / "model.npz", _classifier())
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == expected


@pytest.mark.skipif(os.name == "nt", reason="POSIX permissions")
def test_an_existing_file_keeps_its_permissions(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("old")
    path.chmod(0o664)
    old = os.umask(0o077)
    try:
        with atomic_write(path, "w") as f:
            f.write("new")
    finally:
        os.umask(old)
    assert path.read_text() == "new" and stat.S_IMODE(path.stat().st_mode) == 0o664


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def test_the_next_write_removes_what_a_killed_writer_left(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    left = tmp_path / f".model.npz.{files._HOST}-{dead}.0123abcd.tmp"  # a killed writer's
    busy = tmp_path / f".model.npz.{files._HOST}-{alive}.0123abcd.tmp"  # a live one's
    other = tmp_path / f".history.csv.{files._HOST}-{dead}.0123abcd.tmp"  # another file's
    for path in (left, busy, other):
        path.write_bytes(b"half")
    save_classifier(tmp_path / "model.npz", _classifier())
    assert not left.exists() and busy.exists() and other.exists()
    assert files.remove_stale_temporaries(tmp_path) == [other]


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("nodir/x.csv", r"^there is no folder nodir to write nodir/x.csv in; create it first$"),
        (".", r"is a folder"),
    ],
)
def test_a_write_that_cannot_be_made_names_the_path_asked_for(tmp_path, monkeypatch, target, match):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match=match), atomic_write(target, "w") as f:
        f.write("never")
    assert [p.name for p in tmp_path.iterdir()] == []


# --- the lock on a folder -----------------------------------------------------------------------


def test_a_locked_folder_refuses_a_second_holder_naming_the_first(tmp_path):
    with files.locked_folder(tmp_path, {"run": "a1b2c3d4"}) as previous:
        assert previous == {}
        with (
            pytest.raises(
                RuntimeError,
                match=rf"in use by another handgrad run \(pid {os.getpid()}, run a1b2c3d4\)",
            ),
            files.locked_folder(tmp_path, {"run": "e5f6"}),
        ):
            pass
    assert not (tmp_path / files.LOCK_NAME).exists()
    with files.locked_folder(tmp_path, {"run": "e5f6"}) as previous:  # free again
        assert previous == {}


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    code = (
        "import os, sys; from handgrad.core.files import locked_folder\n"
        "with locked_folder(sys.argv[1], {'run': 'dead0001'}):\n"
        "    os._exit(9)  # dies holding the lock, as kill -9 would leave it\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False)
    assert (tmp_path / files.LOCK_NAME).exists()
    with files.locked_folder(tmp_path, {"run": "next"}) as previous:
        assert previous["run"] == "dead0001"
