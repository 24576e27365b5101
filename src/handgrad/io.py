"""Model files: ``.npz`` archives of plain arrays and one JSON string, written atomically
and read with ``allow_pickle=False``. Nothing is ever unpickled.

Layout: ``param/<name>`` for each parameter (PyTorch names), ``scaler/mean`` and
``scaler/scale`` when the inputs are standardised, and ``meta``: JSON with the format name
and version, the architecture, the class and feature names and free-form ``info``.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.backend import to_numpy
from handgrad.classifier import Classifier
from handgrad.data import Standardiser
from handgrad.errors import ModelFileError
from handgrad.files import atomic_write
from handgrad.layers import Linear, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from handgrad.model import Sequential

__all__ = [
    "FORMAT_VERSION",
    "architecture",
    "build",
    "load_classifier",
    "read_archive",
    "save_classifier",
    "write_archive",
]

FORMAT = "handgrad-model"
FORMAT_VERSION = 1
_ACTIVATIONS = {cls.__name__: cls for cls in (Sigmoid, Tanh, ReLU, Softmax, LogSoftmax)}


def architecture(model: Sequential) -> list[dict[str, Any]]:
    """The model as a JSON-ready list of layer descriptions.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.io import architecture
    >>> spec = architecture(hg.mlp([4, 3, 2], rng=0))
    >>> [layer["type"] for layer in spec]
    ['Linear', 'Sigmoid', 'Linear']
    >>> spec[0]
    {'type': 'Linear', 'in_features': 4, 'out_features': 3, 'bias': True}
    """
    spec = []
    for i, layer in enumerate(model.layers):
        if type(layer) is Linear:
            spec.append(
                {
                    "type": "Linear",
                    "in_features": layer.in_features,
                    "out_features": layer.out_features,
                    "bias": "bias" in layer.params,
                }
            )
        elif type(layer) in _ACTIVATIONS.values():
            spec.append({"type": type(layer).__name__})
        else:
            raise TypeError(
                f"layer {i} ({type(layer).__name__}) cannot be saved: model files hold "
                f"handgrad's own layers (Linear, {', '.join(_ACTIVATIONS)})"
            )
    return spec


def build(spec: list[dict[str, Any]], **options: Any) -> Sequential:
    """The Sequential that ``spec`` (from :func:`architecture`) describes, with fresh weights;
    ``options`` (backend, dtype, device) go to each Linear.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.io import architecture, build
    >>> model = build(architecture(hg.mlp([4, 3, 2], rng=0)), dtype="float32")
    >>> len(model), model.params()["0.weight"].shape, model.params()["0.weight"].dtype.name
    (3, (3, 4), 'float32')
    """
    layers = []
    for i, entry in enumerate(spec):
        kind = entry.get("type") if isinstance(entry, dict) else None
        if kind == "Linear":
            layers.append(
                Linear(entry["in_features"], entry["out_features"], bool(entry["bias"]), **options)
            )
        elif kind in _ACTIVATIONS:
            layers.append(_ACTIVATIONS[kind]())
        else:
            raise ValueError(f"layer {i} of the architecture is not one handgrad knows: {entry!r}")
    return Sequential(*layers)


def save_classifier(path: str | os.PathLike, classifier: Classifier) -> Path:
    """Write ``classifier`` to ``path`` (an ``.npz`` file), atomically.

    Examples
    --------
    >>> import tempfile
    >>> import handgrad as hg
    >>> from handgrad.classifier import Classifier
    >>> from handgrad.io import read_archive, save_classifier
    >>> classifier = Classifier(hg.mlp([2, 2], rng=0), None, ("no", "yes"), ("a", "b"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta, arrays = read_archive(save_classifier(f"{folder}/model.npz", classifier))
    >>> meta["format"], meta["class_names"], list(arrays)
    ('handgrad-model', ['no', 'yes'], ['param/0.weight', 'param/0.bias'])
    """
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "architecture": architecture(classifier.model),
        "class_names": list(classifier.class_names),
        "feature_names": list(classifier.feature_names),
        "target_name": classifier.target_name,
        "info": classifier.info,
    }
    arrays = {f"param/{k}": np.array(to_numpy(v)) for k, v in classifier.model.params().items()}
    if classifier.standardiser is not None:
        arrays["scaler/mean"] = classifier.standardiser.mean_
        arrays["scaler/scale"] = classifier.standardiser.scale_
    return write_archive(path, arrays, meta)


def write_archive(path: str | os.PathLike, arrays: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Write ``arrays`` and the JSON ``meta`` as one ``.npz`` file, atomically.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from handgrad.io import write_archive
    >>> header = {"format": "notes", "version": 1}
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_archive(f"{folder}/notes.npz", {"w": np.ones(2)}, header)
    ...     with np.load(path) as archive:  # plain arrays, and the JSON as one string
    ...         print(path.name, sorted(archive.files), archive["meta"].dtype.kind)
    notes.npz ['meta', 'w'] U
    """
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays, meta=np.array(json.dumps(meta)))
    return path


def read_archive(
    path: str | os.PathLike, kind: str = FORMAT, what: str = "model file"
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a file written by :func:`write_archive` whose metadata says it is a ``kind``;
    every problem is a :class:`ModelFileError` that names the file.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from handgrad.io import read_archive, write_archive
    >>> header = {"format": "notes", "version": 1}  # the kind and version are checked
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = write_archive(f"{folder}/notes.npz", {"w": np.ones(2)}, header)
    ...     meta, arrays = read_archive(path, kind="notes")
    >>> meta == header, arrays["w"].tolist()
    (True, [1.0, 1.0])
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"{what} {str(path)!r} does not exist; train one with "
            "'handgrad train --out DIR' and pass DIR/model.npz"
            if kind == FORMAT
            else f"{what} {str(path)!r} does not exist"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (
        OSError,
        ValueError,
        EOFError,
        KeyError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        MemoryError,
    ) as err:
        reason = (
            "it holds pickled objects, which handgrad never loads"
            if "allow_pickle" in str(err)
            else f"{type(err).__name__}: {str(err).split('. ')[0]}"
        )
        raise ModelFileError(
            f"{str(path)!r} is not a readable handgrad {what} ({reason}); "
            "it may be damaged or not a model: train the model again"
        ) from None
    try:
        meta = json.loads(str(arrays.pop("meta")[()]))
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise ModelFileError(f"{str(path)!r} has no valid handgrad metadata ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != kind:
        raise ModelFileError(f"{str(path)!r} is not a handgrad {what}")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{str(path)!r} is format version {version!r}, newer than this handgrad reads "
            f"({FORMAT_VERSION}); upgrade handgrad"
        )
    return meta, arrays


def _check_model(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the metadata and arrays describe one consistent classifier;
    checked before anything is allocated, so a file cannot claim a huge model."""
    spec = meta["architecture"]
    if not isinstance(spec, list) or not all(isinstance(e, dict) for e in spec):
        raise ValueError("the architecture is not a list of layers")
    params = {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
    width = None
    linear = [(i, e) for i, e in enumerate(spec) if e.get("type") == "Linear"]
    if not linear:
        raise ValueError("the architecture has no Linear layer")
    for i, entry in linear:
        shapes = {"weight": (entry.get("out_features"), entry.get("in_features"))}
        if entry.get("bias"):
            shapes["bias"] = (entry.get("out_features"),)
        for name, shape in shapes.items():
            value = params.get(f"{i}.{name}")
            if value is None or tuple(value.shape) != shape:
                got = None if value is None else tuple(value.shape)
                raise ValueError(
                    f"parameter {i}.{name} has shape {got}, the architecture says {shape}"
                )
            if value.dtype.kind != "f" or not np.all(np.isfinite(value)):
                raise ValueError(f"parameter {i}.{name} is not finite floating-point data")
        if width is not None and entry["in_features"] != width:
            raise ValueError(f"layer {i} takes {entry['in_features']} inputs but gets {width}")
        width = entry["out_features"]
    inputs = linear[0][1]["in_features"]
    for key, names in (("class_names", width), ("feature_names", inputs)):
        value = meta[key]
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ValueError(f"{key} is not a list of names")
        if (value or key == "class_names") and len(value) != names:
            raise ValueError(f"{len(value)} {key} for a model of {names}")
    if not isinstance(meta.get("info", {}), dict):
        raise ValueError("info is not a mapping")
    for key in ("scaler/mean", "scaler/scale"):
        if key in arrays and tuple(arrays[key].shape) != (inputs,):
            raise ValueError(
                f"{key} has shape {tuple(arrays[key].shape)}, the model takes {inputs} inputs"
            )


def load_classifier(path: str | os.PathLike, **options: Any) -> Classifier:
    """Read a classifier written by :func:`save_classifier`; ``options`` (backend, dtype,
    device) say where its model should live (default NumPy, float64).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.classifier import Classifier
    >>> from handgrad.io import load_classifier, save_classifier
    >>> saved = Classifier(hg.mlp([2, 2], rng=0), None, ("no", "yes"), ("a", "b"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     loaded = load_classifier(save_classifier(f"{folder}/model.npz", saved))
    >>> X = np.eye(2)
    >>> loaded.class_names, bool(np.all(loaded.predict_proba(X) == saved.predict_proba(X)))
    (('no', 'yes'), True)
    """
    path = Path(path)
    meta, arrays = read_archive(path)
    try:
        _check_model(meta, arrays)
        model = build(meta["architecture"], **options)
        model.load_state_dict(
            {k.removeprefix("param/"): v for k, v in arrays.items() if k.startswith("param/")}
        )
        standardiser = (
            Standardiser.from_arrays(arrays["scaler/mean"], arrays["scaler/scale"])
            if "scaler/mean" in arrays
            else None
        )
        return Classifier(
            model=model,
            standardiser=standardiser,
            class_names=tuple(meta["class_names"]),
            feature_names=tuple(meta["feature_names"]),
            target_name=str(meta["target_name"]),
            info=dict(meta.get("info", {})),
        )
    except (KeyError, ValueError, TypeError) as err:
        reason = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise ModelFileError(
            f"{str(path)!r} does not describe a consistent model: {reason}"
        ) from None
