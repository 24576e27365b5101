"""Model files: a classifier as an archive of plain arrays and JSON.

Layout: ``param/<name>`` for each parameter and ``buffer/<name>`` for each buffer (PyTorch
names), ``scaler/mean`` and ``scaler/scale`` when the inputs are standardised, and
``meta``: JSON with the format name and version, the architecture (the layer specs of
:mod:`handgrad.nn.registry`), the class and feature names and free-form ``info``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.app.classifier import Classifier
from handgrad.core.archives import FORMAT, read_archive, write_archive
from handgrad.core.arrays import to_numpy
from handgrad.core.errors import ModelFileError
from handgrad.data import Standardizer
from handgrad.nn.containers import Sequential
from handgrad.nn.module import slots_arrays
from handgrad.nn.registry import spec_shapes

__all__ = ["architecture", "build", "load_classifier", "save_classifier"]


def architecture(model: Sequential) -> list[dict[str, Any]]:
    """The model's layers as JSON-ready specs (see :mod:`handgrad.nn.registry`).

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.app.model_files import architecture
    >>> spec = architecture(hg.mlp([4, 3, 2], rng=0))
    >>> [layer["type"] for layer in spec]
    ['Linear', 'Sigmoid', 'Linear']
    >>> spec[0]
    {'type': 'Linear', 'in_features': 4, 'out_features': 3, 'bias': True}
    """
    return model.config()["layers"]


def build(spec: list[dict[str, Any]], **options: Any) -> Sequential:
    """The Sequential that ``spec`` (from :func:`architecture`) describes, with fresh weights;
    ``options`` (backend, dtype, device) say where its arrays live.

    Examples
    --------
    >>> import handgrad as hg
    >>> from handgrad.app.model_files import architecture, build
    >>> model = build(architecture(hg.mlp([4, 3, 2], rng=0)), dtype="float32")
    >>> len(model), model.params["0.weight"].shape, model.params["0.weight"].dtype.name
    (3, (3, 4), 'float32')
    """
    model = Sequential.from_config({"layers": spec})
    return model.to(
        options.get("backend"), dtype=options.get("dtype"), device=options.get("device")
    )


def save_classifier(path: str | os.PathLike, classifier: Classifier) -> Path:
    """Write ``classifier`` to ``path`` (an ``.npz`` file), atomically.

    Examples
    --------
    >>> import tempfile
    >>> import handgrad as hg
    >>> from handgrad.app.classifier import Classifier
    >>> from handgrad.app.model_files import save_classifier
    >>> from handgrad.core.archives import read_archive
    >>> classifier = Classifier(hg.mlp([2, 2], rng=0), None, ("no", "yes"), ("a", "b"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     meta, arrays = read_archive(save_classifier(f"{folder}/model.npz", classifier))
    >>> meta["format"], meta["class_names"], list(arrays)
    ('handgrad-model', ['no', 'yes'], ['param/0.weight', 'param/0.bias'])
    """
    model = classifier.model
    meta = {
        "format": FORMAT,
        "version": 1,
        "architecture": architecture(model),
        "class_names": list(classifier.class_names),
        "feature_names": list(classifier.feature_names),
        "target_name": classifier.target_name,
        "info": classifier.info,
    }
    arrays = {}
    for store, prefix in (("params", "param/"), ("buffers", "buffer/")):
        for name, value in slots_arrays(model, store).items():
            arrays[prefix + name] = np.array(to_numpy(value))
    if classifier.standardizer is not None:
        arrays.update(classifier.standardizer.to_arrays("scaler/"))
    return write_archive(path, arrays, meta)


def _state(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's arrays of a file, by PyTorch name (parameters and buffers)."""
    return {
        name.partition("/")[2]: value
        for name, value in arrays.items()
        if name.startswith(("param/", "buffer/"))
    }


def _shapes(meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The shape of each parameter and buffer that the metadata's architecture describes."""
    spec = meta["architecture"]
    if not isinstance(spec, list) or not spec or not all(isinstance(e, dict) for e in spec):
        raise ValueError("the architecture is not a non-empty list of layers")
    return spec_shapes({"type": "Sequential", "layers": spec}, "the architecture")


def _limits(meta: dict[str, Any]) -> dict[str, int]:
    """The most elements each array of a model file may hold, from its metadata alone: read
    before any array is decompressed (see :func:`~handgrad.core.archives.read_archive`)."""
    sizes = {name: math.prod(shape) for name, shape in _shapes(meta).items()}
    widest = max(sizes.values(), default=0)  # a scaler is no wider than the first weight
    return {
        **{prefix + name: size for prefix in ("param/", "buffer/") for name, size in sizes.items()},
        "scaler/mean": widest,
        "scaler/scale": widest,
    }


def _check_model(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the metadata and arrays describe one consistent classifier
    (the arrays' sizes were bounded by the metadata before they were read)."""
    expected = _shapes(meta)
    if not expected:
        raise ValueError("the architecture has no layer with weights")
    state = _state(arrays)
    for name in sorted(set(expected) | set(state)):
        value = state.get(name)
        got = None if value is None else tuple(value.shape)
        if got != expected.get(name):
            raise ValueError(
                f"parameter {name} has shape {got}, the architecture says {expected.get(name)}"
            )
        counter = value.dtype.kind in "iu" and f"buffer/{name}" in arrays  # a batch count
        if not counter and (value.dtype.kind != "f" or not np.all(np.isfinite(value))):
            raise ValueError(f"parameter {name} is not finite floating-point data")
    for key in ("class_names", "feature_names"):
        value = meta[key]
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ValueError(f"{key} is not a list of names")
    if not isinstance(meta.get("info", {}), dict):
        raise ValueError("info is not a mapping")


def _inputs_of(model: Sequential) -> int:
    """The input width the model takes: its first layer's ``in_features`` (a Linear, or an
    Unflatten that turns rows of features into images)."""
    first = model
    while hasattr(first, "layers"):
        first = first.layers[0]
    width = getattr(first, "in_features", None)
    if not isinstance(width, int):
        raise ValueError(
            f"the model's first layer ({type(first).__name__}) is not a Linear or an Unflatten, "
            "which take rows of features"
        )
    return width


def _check_widths(model: Sequential, meta: dict[str, Any], scaler: Any) -> None:
    """The model runs on one row of its input width, gives one output per class, and the
    feature names and scaler match that width."""
    inputs = _inputs_of(model)
    try:
        outputs = model.forward(np.zeros((1, inputs))).shape[-1]
    except (ValueError, TypeError) as err:
        raise ValueError(f"its layers do not chain: {err}") from None
    for key, size in (("class_names", outputs), ("feature_names", inputs)):
        names = meta[key]
        if (names or key == "class_names") and len(names) != size:
            raise ValueError(f"{len(names)} {key} for a model of {size}")
    if scaler is not None and scaler.mean_.shape != (inputs,):
        raise ValueError(
            f"scaler/mean has shape {scaler.mean_.shape}, the model takes {inputs} inputs"
        )


def load_classifier(path: str | os.PathLike, **options: Any) -> Classifier:
    """Read a classifier written by :func:`save_classifier`; ``options`` (backend, dtype,
    device) say where its model should live (default NumPy, float64).

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> import handgrad as hg
    >>> from handgrad.app.classifier import Classifier
    >>> from handgrad.app.model_files import load_classifier, save_classifier
    >>> saved = Classifier(hg.mlp([2, 2], rng=0), None, ("no", "yes"), ("a", "b"))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     loaded = load_classifier(save_classifier(f"{folder}/model.npz", saved))
    >>> X = np.eye(2)
    >>> loaded.class_names, bool(np.all(loaded.predict_proba(X) == saved.predict_proba(X)))
    (('no', 'yes'), True)
    """
    path = Path(path)
    meta, arrays = read_archive(path, limits=_limits)
    try:
        _check_model(meta, arrays)
        model = Sequential.from_config({"layers": meta["architecture"]})
        model.load_state_dict(_state(arrays)).eval()
        standardizer = Standardizer.from_archive(arrays, "scaler/")
        _check_widths(model, meta, standardizer)
        model.to(options.get("backend"), dtype=options.get("dtype"), device=options.get("device"))
        return Classifier(
            model=model,
            standardizer=standardizer,
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
