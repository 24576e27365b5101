"""The shape of the package: imports run one way, the old module names still work (with a
warning), and the bugs found while reshaping it stay fixed."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import handgrad as hg
from handgrad._compat import MOVED
from handgrad.training import SGD, fit, make_schedule

SRC = Path(hg.__file__).parent

# what each subpackage may import from handgrad: the import direction of the design,
# core <- nn <- models, gradcheck <- training, interop <- app <- cli; data needs only core
ALLOWED = {
    "core": {"core"},
    "nn": {"core", "nn"},
    "models": {"core", "nn", "models"},
    "gradcheck": {"core", "nn", "gradcheck"},
    "training": {"core", "nn", "gradcheck", "data", "training"},  # fit(check=True)
    "interop": {"core", "nn", "gradcheck", "interop"},
    "data": {"core", "data"},
    "app": {"core", "nn", "models", "gradcheck", "training", "interop", "data", "app"},
    "cli": {"core", "nn", "models", "gradcheck", "training", "interop", "data", "app", "cli"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "handgrad" and len(parts) > 1 and parts[1] in ALLOWED:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    for path in sorted((SRC / package).rglob("*.py")):
        wrong = _imports(path) - ALLOWED[package]
        assert not wrong, f"{path.relative_to(SRC)} imports from {sorted(wrong)}"


def test_reading_a_model_file_does_not_load_the_training_loop():
    code = (
        "import sys, handgrad.app.model_files; "
        "print(any(m.startswith('handgrad.training') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_names_still_import_with_a_deprecation_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        module = importlib.import_module(old)
    public = [n for n in dir(importlib.import_module(MOVED[old][0])) if not n.startswith("_")]
    assert public, old
    for name in public[:5]:
        assert getattr(module, name) is getattr(importlib.import_module(MOVED[old][0]), name)


def test_old_names_used_in_0_1_code_resolve():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from handgrad.classifier import TrainConfig, train_classifier
        from handgrad.io import read_archive, save_classifier
        from handgrad.presets import SimpleNN, mlp
    from handgrad.app.trainer import TrainConfig as NewConfig
    from handgrad.core.archives import read_archive as new_read

    assert TrainConfig is NewConfig and read_archive is new_read
    assert callable(train_classifier) and callable(save_classifier)
    assert SimpleNN is hg.SimpleNN and mlp is hg.mlp


def test_import_works_under_python_oo():
    code = "import handgrad, handgrad.cli, handgrad.sklearn; print(handgrad.mlp([2, 2]).params)"
    out = subprocess.run(
        [sys.executable, "-OO", "-c", code], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert "0.weight" in out.stdout


def test_fit_leaves_the_optimizer_as_it_found_it():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    model = hg.mlp([3, 4, 2], rng=0)
    optimizer = SGD(model.params, lr=0.5)
    schedule = make_schedule("step", step_size=1, gamma=0.1)
    history = fit(model, hg.CrossEntropyLoss(), optimizer, X, y, epochs=3, schedule=schedule)
    assert optimizer.lr == 0.5
    assert history.lr == pytest.approx([0.5, 0.05, 0.005], rel=1e-12)
    again = fit(model, hg.CrossEntropyLoss(), optimizer, X, y, epochs=2, schedule=schedule)
    assert again.lr == pytest.approx([0.5, 0.05], rel=1e-12)  # not compounded: 0.005, ...


def test_the_batched_method_does_not_turn_a_bug_into_the_slow_loop():
    class Broken(hg.Softmax):
        """A handgrad layer type whose stacked forward has a bug."""

        def _forward(self, xp, x):
            if x.ndim > 2:
                raise TypeError("a bug in the stacked forward")
            return super()._forward(xp, x)

    from handgrad.nn.registry import LAYER_TYPES, register_layer

    register_layer(Broken)
    try:
        rng = np.random.default_rng(1)
        model = hg.Sequential(hg.Linear(3, 4, rng=rng), Broken(), hg.Linear(4, 2, rng=rng))
        x, y = rng.standard_normal((5, 3)), rng.integers(0, 2, 5)
        with pytest.raises(TypeError, match="a bug in the stacked forward"):
            hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, method="auto")
    finally:
        del LAYER_TYPES["Broken"]


def test_renamed_names_still_work_with_a_deprecation_warning():
    import handgrad.data
    import handgrad.nn.init
    from handgrad.app.classifier import Classifier
    from handgrad.data import Standardizer, split

    with pytest.warns(DeprecationWarning, match="Standardiser is deprecated"):
        assert handgrad.data.Standardiser is Standardizer
    with pytest.warns(DeprecationWarning, match="get_initialiser is deprecated"):
        assert handgrad.nn.init.get_initialiser is handgrad.nn.init.get_initializer
    classifier = Classifier(hg.mlp([2, 2], rng=0), Standardizer(), ("a", "b"))
    with pytest.warns(DeprecationWarning, match="standardiser is deprecated"):
        assert classifier.standardiser is classifier.standardizer
    X, y = np.arange(40.0).reshape(20, 2), np.repeat([0, 1], 10)
    with pytest.warns(DeprecationWarning, match="seed is deprecated: pass rng"):
        old = split(X, y, seed=3)
    assert np.array_equal(old.y_test, split(X, y, rng=3).y_test)
