"""Every row of docs/errors.md, raised: each bad input gets the documented error type and
message, and the command line turns it into exit status 2 and one line on stderr.

The table is parsed from the doc; ``TRIGGERS`` maps each row's id to a function that makes
the bad call. Triggers run in a fresh temporary folder (the current directory), so file
names in them are relative paths.
"""

from __future__ import annotations

import datetime
import importlib
import io
import json
import os
import re
import sys
import threading
import types
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

import handgrad as hg
from handgrad.app.classifier import Classifier
from handgrad.app.language_model import load_gpt_run
from handgrad.app.model_files import load_classifier, save_classifier
from handgrad.cli.main import main
from handgrad.core.errors import (
    DataError,
    HandgradError,
    ModelFileError,
    NonFiniteLossError,
    TrainingDivergedError,
)
from handgrad.core.files import atomic_write, locked_folder
from handgrad.data import (
    Standardizer,
    batches,
    load_csv,
    load_dataset,
    load_features,
    split,
)
from handgrad.data.text import CharVocabulary, read_text
from handgrad.gradcheck.check import GradientCheckError
from handgrad.models.cnn import square_image
from handgrad.training.clipping import clip_grad_norm
from handgrad.training.fit import fit
from handgrad.training.optim import SGD, Adam, AdamW, RMSprop, make_optimizer
from handgrad.training.schedules import make_schedule

ERRORS_MD = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
DATA = Path(__file__).resolve().parent / "data"
CLI_TYPES = ("exit 2",)


@dataclass(frozen=True)
class Row:
    id: str
    where: str
    bad_input: str
    error_type: str
    message: str


def _cell(text: str) -> str:
    text = text.strip().replace("\\|", "|")
    return text[1:-1] if len(text) > 1 and text[0] == text[-1] == "`" else text


def parse_table(path: Path = ERRORS_MD) -> list[Row]:
    """The rows of the table whose header starts with ``| id |``."""
    rows, inside = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| id |"):
            inside = True
            continue
        if not inside or re.match(r"^\|\s*-", line):
            continue
        if not line.startswith("|"):
            inside = False
            continue
        cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
        assert len(cells) == 5, f"a row of {path.name} needs 5 cells: {line}"
        rows.append(Row(*map(_cell, cells)))
    return rows


ROWS = parse_table()


def matches(documented: str, actual: str) -> bool:
    """Whether ``actual`` starts with ``documented``, each ``...`` standing for any text."""
    pattern = ".*?".join(map(re.escape, documented.split("...")))
    return re.match(pattern, actual, flags=re.DOTALL) is not None


def message(err: BaseException) -> str:
    """The message as handgrad prints it (a KeyError's str() adds quotes)."""
    return str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)


# --- what the triggers need ---------------------------------------------------------------


def _write(name: str, content: str | bytes) -> str:
    path = Path(name)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return name


def _csv(text: str) -> str:
    return _write("data.csv", text)


GOOD_CSV = "a,b,label\n1,2,x\n3,4,y\n5,6,x\n7,8,y\n"


def _classifier() -> Classifier:
    model = hg.mlp([3, 4, 2], rng=0)
    scaler = Standardizer.from_arrays(np.zeros(3), np.ones(3))
    return Classifier(model, scaler, ("no", "yes"), ("a", "b", "c"), "label")


def _model_file(name: str = "model.npz") -> str:
    return str(save_classifier(name, _classifier()))


def _npz(**arrays) -> str:
    np.savez("model.npz", **arrays)
    return "model.npz"


def _edited_model_file(edit_meta=None, edit_arrays=None) -> str:
    """A model file rewritten with its metadata and arrays edited."""
    path = _model_file()
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    np.savez(path, meta=np.array(json.dumps(meta)), **arrays)
    return path


def _linear(x=None):
    layer = hg.Linear(3, 2, rng=0)
    if x is not None:
        layer.forward(x)
    return layer


def _ce(logits, target):
    return hg.CrossEntropyLoss().forward(logits, target)


def _check(**options):
    model = hg.mlp([3, 2], rng=0)
    x, y = np.ones((2, 3)), np.array([0, 1])
    return hg.check_gradients(model, hg.CrossEntropyLoss(), x, y, **options)


class _Square:
    """y = x^2 with a slip: the derivative misses its factor 2."""

    def __init__(self):
        self.params, self.grads = {}, {}

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return self.x * dy


class _Scale:
    """y = x * w; ``grads`` as the subclasses write them."""

    def __init__(self):
        self.params, self.grads = {"w": np.full(3, 2.0)}, {}

    def forward(self, x):
        self.x = x
        return x * self.params["w"]

    def backward(self, dy):
        self.grads = {"w": np.sum(dy * self.x, axis=0)}
        return dy * self.params["w"]


class _ScaleWithoutGrad(_Scale):
    def backward(self, dy):
        self.grads = {}
        return dy * self.params["w"]


class _ScaleWithShortGrad(_Scale):
    def backward(self, dy):
        self.grads = {"w": np.zeros(2)}
        return dy * self.params["w"]


class _ScaleWithKeptDims(_Scale):
    def backward(self, dy):
        self.grads = {"w": np.sum(dy * self.x, axis=0, keepdims=True)}  # (1, 3) for (3,)
        return dy * self.params["w"]


class _ScaleWithFloatGrad(_Scale):
    def backward(self, dy):
        self.grads = {"w": float(np.sum(dy * self.x))}
        return dy * self.params["w"]


class _ScaleReturningNothing(_Scale):
    def backward(self, dy):
        super().backward(dy)


class _FloatScale(_Scale):
    def __init__(self):
        super().__init__()
        self.params = {"w": 2.0}


class _ListOutput(_Scale):
    def forward(self, x):
        return x.tolist()


class _Infinite(_Scale):
    def forward(self, x):
        return np.full(x.shape, np.inf)


class _Dropout(_Scale):
    """A new mask at every call."""

    def __init__(self):
        super().__init__()
        self.params, self.rng = {}, np.random.default_rng(0)

    def forward(self, x):
        self.mask = self.rng.random(x.shape) > 0.5
        return x * self.mask

    def backward(self, dy):
        return dy * self.mask


class _BatchCentre(_Scale):
    def __init__(self):
        super().__init__()
        self.params = {}

    def forward(self, x):
        return x - x.mean(axis=0)

    def backward(self, dy):
        return dy - dy.mean(axis=0)


class _ListParams:
    params: list = []  # noqa: RUF012 (the bad input itself)
    grads: dict = {}  # noqa: RUF012

    def forward(self, x):
        return x

    def backward(self, dy):
        return dy


def _vector_loss():
    """A loss whose forward returns one value per row instead of a scalar."""
    return types.SimpleNamespace(
        forward=lambda pred, target: np.sum(pred, axis=1), backward=lambda: np.ones((2, 2))
    )


def _fit(X=None, y=None, **options):
    model = hg.mlp([3, 2], rng=0)
    X = np.ones((4, 3)) if X is None else X
    y = np.array([0, 1, 0, 1]) if y is None else y
    optimizer = SGD(model.params, lr=options.pop("lr", 0.1))
    return fit(model, hg.CrossEntropyLoss(), optimizer, X, y, **options)


class _SumLoss:
    """A loss of one's own: no row weights."""

    def forward(self, pred, target):
        self.shape = pred.shape
        return pred.sum()

    def backward(self):
        return np.ones(self.shape)


def _lbfgs(**options):
    from handgrad.training.lbfgs import fit_lbfgs

    return fit_lbfgs(
        hg.mlp([3, 2], rng=0),
        hg.CrossEntropyLoss(),
        np.ones((4, 3)),
        np.array([0, 1, 0, 1]),
        **options,
    )


def _sklearn():
    import handgrad.sklearn

    return handgrad.sklearn


def _estimator(name, X=None, y=None, **params):
    X = np.arange(12.0).reshape(6, 2) if X is None else X
    y = np.array([0, 1, 0, 1, 0, 1]) if y is None else y
    return getattr(_sklearn(), name)(**params).fit(X, y)


def _warm_start_new_class():
    model = _sklearn().HandgradClassifier((2,), solver="lbfgs", warm_start=True, max_iter=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(np.eye(3), np.array([0, 1, 0]))
    model.fit(np.eye(3), np.array([0, 1, 2]))


def _overflowing_regressor():
    X = np.finfo(np.float64).max * np.random.default_rng(0).uniform(size=(10, 2))
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        _sklearn().HandgradRegressor(max_iter=5).fit(X, np.ones(10))


def _diverge():
    """Features of 1e10 and a rate of 1e300: the first step sends the weights to infinity."""
    X = np.array([[1.0, -1.0, 2.0], [-2.0, 1.0, 0.5], [0.5, 2.0, -1.0], [1.0, 1.0, 1.0]]) * 1e10
    with np.errstate(over="ignore", invalid="ignore"):
        return _fit(X, lr=1e300, epochs=5, batch_size=2, shuffle=False)


def _torch_into_numpy_layer():
    torch = pytest.importorskip("torch")
    return _linear().forward(torch.ones((2, 3), dtype=torch.float64))


def _gpt_untied_head():
    model = hg.GPT(11, 8, rng=0)
    state = model.state_dict()
    state["lm_head.weight"] = state["lm_head.weight"] + 1.0
    model.load_state_dict(state)


def _cli(*argv: str):
    return lambda: main(list(argv))


def _t(*shape: int, grad: bool = True):
    torch = pytest.importorskip("torch")
    return torch.randn(
        *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    ).requires_grad_(grad)


def _sin(x):
    return x.sin()


def _zoo(name: str):
    from tests.torch_function_zoo import CASES

    return CASES[name]


def _torch_check(fn, *inputs, **options):
    from handgrad.torch import gradcheck

    return gradcheck(fn, inputs, **options)


def _torch_report(fn, *inputs, **options):
    from handgrad.torch import check_report

    return check_report(fn, inputs, **options)


def _torch_gradgradcheck(fn, x, grad_output):
    from handgrad.torch import gradgradcheck

    return gradgradcheck(fn, (x,), (grad_output.detach(),))


def _complex_input():
    torch = pytest.importorskip("torch")
    return torch.ones(2, dtype=torch.complex128, requires_grad=True)


def _two_outputs_without_none():
    from tests.test_torch_check import _TwoOutputs

    return _TwoOutputs.apply


def _noisy_backward():
    from tests.test_torch_check import _Noisy

    return _Noisy.apply


def _folder_in_use():
    with locked_folder(".", {"run": "a1b2c3d4"}), locked_folder(".", {"run": "e5f6"}):
        pass


def _predict_without_feature():
    _write("new.csv", "a,b\n1,2\n3,4\n")
    return main(["predict", "--model", _model_file(), "new.csv"])


def _evaluate_without_target():
    _write("new.csv", "a,b,c\n1,2,3\n3,4,5\n")
    return main(["evaluate", "--model", _model_file(), "new.csv"])


def _zip_model(replace: dict[str, bytes], method=zipfile.ZIP_STORED) -> str:
    """The good model file with members replaced or added, as raw ``.npy`` bytes."""
    path = _model_file()
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(path, "w", compression=method) as archive:
        for name, data in {**members, **replace}.items():
            archive.writestr(name, data)
    return path


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _header_claims_more() -> str:
    data = _npy(np.ones((4, 3)))
    return _zip_model({"param/0.weight.npy": data[:128].replace(b"(4, 3)", b"(4, 9)") + data[128:]})


def _device_as_model():
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    return load_classifier("/dev/zero")


def _fit_compiled(kind):
    model = hg.mlp([3, 2], rng=0)
    X, y = np.ones((4, 3)), np.array([0, 1, 0, 1])
    return fit(model, hg.CrossEntropyLoss(), kind(model.params), X, y, compiled=True)


def _fit_with_foreign_optimizer():
    model, other = hg.mlp([3, 2], rng=0), hg.mlp([3, 2], rng=1)
    return fit(
        model, hg.CrossEntropyLoss(), SGD(other.params), np.ones((4, 3)), np.array([0, 1] * 2)
    )


def _train(*extra: str, data: str | None = None, out: str = "run") -> int:
    source = ["--data", data, "--target", "label"] if data else ["--dataset", "iris"]
    args = ["train", *source, "--epochs", "2", "--hidden", "3", "--seed", "0", "--quiet"]
    return main([*args, "--out", out, *extra])


def _resume_foreign():
    _train("--checkpoint-every", "1")  # run A and its checkpoint
    _train()  # run B into the same folder
    return main(["train", "--resume", "run"])


CHANGING = "a,b,label\n" + "".join(f"{i},{i % 4},{'xy'[i % 2]}\n" for i in range(12))


def _resume_changed_data():
    _train("--checkpoint-every", "1", data=_write("data.csv", CHANGING))
    _write("data.csv", CHANGING.replace("3,3,", "3,0,"))
    return main(["train", "--resume", "run"])


def _resume_other_options():
    _train("--checkpoint-every", "1")
    return main(["train", "--resume", "run", "--epochs", "9"])


def _resume_without_identity():
    Path("run").mkdir()
    Path("run/checkpoint.npz").write_bytes((DATA / "checkpoint-v1.npz").read_bytes())
    return main(["train", "--resume", "run"])


def _train_into_folder_in_use():
    Path("run").mkdir()
    with locked_folder("run", {"run": "a1b2c3d4", "started": "now"}):
        return _train()


def _predict_too_large():
    model = hg.mlp([2, 2], rng=0)
    scaler = Standardizer.from_arrays(np.zeros(2), np.full(2, 0.5))
    path = save_classifier("model.npz", Classifier(model, scaler, ("x", "y"), ("a", "b"), "label"))
    _write("new.csv", "a,b\n1,2\n1e308,2\n")
    return main(["predict", "--model", str(path), "new.csv"])


def _world_of_one():
    """A gloo process group of this process alone."""
    dist = pytest.importorskip("torch.distributed")
    return dist.ProcessGroupGloo(dist.HashStore(), 0, 1, datetime.timedelta(seconds=10))


def _all_reduce(model, **options):
    from handgrad.distributed import all_reduce_gradients

    return all_reduce_gradients(model, group=_world_of_one(), **options)


def _distributed(name: str):
    pytest.importorskip("torch")
    return getattr(importlib.import_module("handgrad.distributed"), name)


def _lost_worker():
    """Two workers of one process; worker 1 joins but never reaches the all-reduce."""
    torch = pytest.importorskip("torch")
    dist = pytest.importorskip("torch.distributed")
    store, groups = dist.HashStore(), [None, None]

    def join(rank):
        groups[rank] = dist.ProcessGroupGloo(store, rank, 2, datetime.timedelta(seconds=0.2))

    threads = [threading.Thread(target=join, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    workers = _distributed("WorkerGroup")(0, 2, groups[0], timeout=0.2)
    workers.all_reduce(torch.zeros(3))


def _nproc_under_torchrun():
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with mock.patch.dict(os.environ, env):
        os.environ.pop("HANDGRAD_LAUNCHER", None)
        return main(["train", "--nproc", "2"])


def _without_torchrun_environment():
    names = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    with mock.patch.dict(os.environ, {}):
        for name in names:
            os.environ.pop(name, None)
        return _distributed("init_workers")()


NAN_X = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]])


def _fit_own_loss_with_weights():
    model = hg.mlp([3, 2], rng=0)
    fit(
        model,
        _SumLoss(),
        SGD(model.params),
        np.ones((4, 3)),
        np.array([0, 1, 0, 1]),
        sample_weight=np.ones(4),
    )


# --- handgrad.jax (the triggers skip without JAX) -------------------------------------------


def _jax():
    return pytest.importorskip("jax")


def _hj():
    _jax()
    import handgrad.jax

    return handgrad.jax


def _check_without_jax():
    import handgrad.jax

    with mock.patch.dict(sys.modules, {"jax": None, "jax.numpy": None}):
        handgrad.jax.check_grads(np.sin, (np.ones(3),))


def _jax_square_slip():
    jax = _jax()
    f = jax.custom_vjp(lambda x: x * x)
    f.defvjp(lambda x: (x * x, x), lambda x, g: (x * g,))  # 2 x g
    return f


def _jax_noise():
    jax = _jax()

    def noisy(x):
        draw = jax.pure_callback(
            lambda: np.random.standard_normal(3), jax.ShapeDtypeStruct((3,), x.dtype)
        )
        return x * draw

    return noisy


def _jax_jittered_vjp():
    jax = _jax()

    def bwd(x, g):
        bump = jax.pure_callback(
            lambda: np.random.uniform(0, 1e-13), jax.ShapeDtypeStruct((), g.dtype)
        )
        return (2 * x * g + bump,)

    f = jax.custom_vjp(lambda x: x * x)
    f.defvjp(lambda x: (x * x, x), bwd)
    return f


def _jax_host_sin():
    jax = _jax()

    def host(x):  # a callback without a batching rule
        return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x)

    f = jax.custom_vjp(host)
    f.defvjp(lambda x: (host(x), x), lambda x, g: (g * jax.numpy.cos(x),))
    return f


_JAX_TRIGGERS = {
    "jax-not-installed": _check_without_jax,
    "jax-f-not-callable": lambda: _hj().check_grads(3, (np.ones(3),)),
    "jax-args-not-a-tuple": lambda: _hj().check_grads(np.sin, np.ones(3)),
    "jax-order": lambda: _hj().check_grads(np.sin, (np.ones(3),), order=3),
    "jax-method": lambda: _hj().check_grads(np.sin, (np.ones(3),), method="batched"),
    "jax-nondet-tol": lambda: _hj().check_grads(np.sin, (np.ones(3),), nondet_tol=-1),
    "jax-leaf-not-an-array": lambda: _hj().check_grads(lambda x, p: x, (np.ones(3), {"name": "w"})),
    "jax-complex-leaf": lambda: _hj().check_grads(lambda x: x, (np.ones(3, complex),)),
    "jax-nothing-to-check": lambda: _hj().check_grads(lambda i: i * 1.0, (np.arange(3),)),
    "jax-output-not-floating": lambda: _hj().check_grads(lambda x: (x, x.argmax()), (np.ones(3),)),
    "jax-output-not-finite": lambda: _hj().check_grads(lambda x: x / 0.0, (np.ones(3),)),
    "jax-random": lambda: _hj().check_grads(_jax_noise(), (np.ones(3),)),
    "jax-vjp-not-deterministic": lambda: _hj().check_grads(_jax_jittered_vjp(), (np.ones(3),)),
    "jax-vmap-refused": lambda: _hj().check_grads(_jax_host_sin(), (np.ones(3),), method="vmap"),
    "jax-wrong-gradient": lambda: _hj().check_grads(
        _jax_square_slip(), (np.linspace(0.5, 1.5, 4),), rng=0
    ),
}


TRIGGERS = {
    # layers
    "linear-in-features": lambda: hg.Linear(0, 2),
    "linear-out-features-bool": lambda: hg.Linear(3, True),
    "linear-init": lambda: hg.Linear(3, 2, init="xavier"),
    "linear-init-shape": lambda: hg.Linear(3, 2, init=lambda shape, rng: np.zeros(3)),
    "linear-dtype": lambda: hg.Linear(3, 2, dtype="int32"),
    "linear-backend": lambda: hg.Linear(3, 2, backend="jax"),
    "linear-rng-type": lambda: hg.Linear(3, 2, rng="0"),
    "linear-rng-negative": lambda: hg.Linear(3, 2, rng=-1),
    "linear-not-array": lambda: _linear().forward([[1.0, 2.0, 3.0]]),
    "linear-ndim": lambda: _linear().forward(np.ones(3)),
    "linear-features": lambda: _linear().forward(np.ones((2, 4))),
    "linear-int-dtype": lambda: _linear().forward(np.ones((2, 3), dtype=np.int64)),
    "linear-nan": lambda: _linear().forward(NAN_X),
    "linear-dtype-mismatch": lambda: _linear().forward(np.ones((2, 3), dtype=np.float32)),
    "linear-library-mix": _torch_into_numpy_layer,
    "linear-backward-before-forward": lambda: _linear().backward(np.ones((2, 2))),
    "linear-dy-shape": lambda: _linear(np.ones((2, 3))).backward(np.ones((2, 3))),
    "activation-ndim": lambda: hg.Sigmoid().forward(np.ones(3)),
    "activation-complex": lambda: hg.Tanh().forward(np.ones((2, 2), dtype=complex)),
    "activation-backward-before-forward": lambda: hg.ReLU().backward(np.ones((2, 2))),
    "activation-no-classes": lambda: hg.Softmax().forward(np.ones((2, 0))),
    # vision layers
    "conv-ndim": lambda: hg.Conv2d(3, 8, 3).forward(np.ones((3, 8, 8))),
    "conv1d-ndim": lambda: hg.Conv1d(2, 4, 3).forward(np.ones((2, 8))),
    "conv-channels": lambda: hg.Conv2d(3, 8, 3).forward(np.ones((2, 1, 8, 8))),
    "conv-kernel-too-large": lambda: hg.Conv2d(1, 1, 5, padding=1).forward(np.ones((1, 1, 2, 2))),
    "conv-groups": lambda: hg.Conv2d(3, 4, 3, groups=2),
    "conv-same-stride": lambda: hg.Conv2d(3, 4, 3, stride=2, padding="same"),
    "conv-padding-string": lambda: hg.Conv2d(3, 4, 3, padding="full"),
    "conv-kernel-size": lambda: hg.Conv2d(3, 4, (3, 0)),
    "pool-padding": lambda: hg.MaxPool2d(2, padding=2),
    "pool-window-of-padding": lambda: hg.MaxPool2d((1, 2), padding=(0, 1), dilation=(1, 2)).forward(
        np.zeros((1, 1, 1, 1))
    ),
    "pool-kernel-too-large": lambda: hg.MaxPool2d(3).forward(np.ones((1, 1, 2, 2))),
    "pool-ndim": lambda: hg.AvgPool2d(2).forward(np.ones((4, 4))),
    "batchnorm-ndim": lambda: hg.BatchNorm2d(3).forward(np.ones((2, 3, 4))),
    "batchnorm-channels": lambda: hg.BatchNorm1d(3).forward(np.ones((2, 4))),
    "batchnorm-one-value": lambda: hg.BatchNorm1d(3).forward(np.ones((1, 3))),
    "batchnorm-momentum": lambda: hg.BatchNorm1d(3, momentum=1.5),
    "groupnorm-groups": lambda: hg.GroupNorm(3, 4),
    "layernorm-shape": lambda: hg.LayerNorm(3).forward(np.ones((2, 4))),
    "dropout-p": lambda: hg.Dropout(1.5),
    "flatten-axes": lambda: hg.Flatten(2).forward(np.ones((2, 3))),
    "unflatten-size": lambda: hg.Unflatten(1, (1, 8, 8)).forward(np.ones((2, 30))),
    "gelu-approximate": lambda: hg.GELU("fast"),
    # losses
    "bce-shape": lambda: hg.BCEWithLogitsLoss().forward(np.zeros((2, 3)), np.zeros(2)),
    "poisson-log-input": lambda: hg.PoissonNLLLoss(log_input=1),
    "loss-class-index": lambda: _ce(np.zeros((2, 3)), np.array([0, 3])),
    "loss-negative-class-index": lambda: _ce(np.zeros((2, 3)), np.array([-1, 0])),
    "loss-label-count": lambda: _ce(np.zeros((2, 3)), np.array([0, 1, 2])),
    "loss-soft-target-shape": lambda: _ce(np.zeros((2, 3)), np.full((2, 4), 0.25)),
    "loss-soft-target-nan": lambda: _ce(np.zeros((2, 3)), NAN_X),
    "loss-bool-target": lambda: _ce(np.zeros((2, 3)), np.array([True, False])),
    "loss-target-list": lambda: hg.NLLLoss().forward(np.zeros((2, 3)), [0, 1]),
    "loss-logits-ndim": lambda: _ce(np.zeros(3), np.array([0])),
    "loss-empty-batch": lambda: _ce(np.zeros((0, 3)), np.zeros(0, dtype=np.int64)),
    "loss-reduction": lambda: hg.CrossEntropyLoss(reduction="avg"),
    "loss-backward-before-forward": lambda: hg.CrossEntropyLoss().backward(),
    "mse-shape": lambda: hg.MSELoss().forward(np.zeros((2, 3)), np.zeros((3, 2))),
    "mse-empty": lambda: hg.MSELoss().forward(np.zeros((0, 3)), np.zeros((0, 3))),
    # Sequential
    "sequential-empty": lambda: hg.Sequential(),
    "sequential-not-a-layer": lambda: hg.Sequential(hg.Linear(2, 2), "relu"),
    "sequential-params-not-dict": lambda: hg.Sequential(_ListParams()),
    "state-missing": lambda: hg.mlp([2, 2]).load_state_dict({"0.weight": np.ones((2, 2))}),
    "state-unexpected": lambda: hg.mlp([2, 2]).load_state_dict(
        {"0.weight": np.ones((2, 2)), "0.bias": np.ones(2), "1.weight": np.ones((2, 2))}
    ),
    "state-shape": lambda: hg.mlp([2, 2]).load_state_dict(
        {"0.weight": np.ones((2, 3)), "0.bias": np.ones(2)}
    ),
    "state-not-array": lambda: hg.mlp([2, 2]).load_state_dict(
        {"0.weight": [[1.0, 0.0], [0.0, 1.0]], "0.bias": np.ones(2)}
    ),
    # mlp and SimpleNN
    "mlp-sizes-short": lambda: hg.mlp([3]),
    "mlp-size-zero": lambda: hg.mlp([3, 0, 2]),
    "mlp-size-float": lambda: hg.mlp([3, 2.5, 2]),
    "mlp-activation": lambda: hg.mlp([3, 2], activation="sine"),
    "cnn-not-square": lambda: square_image(30),
    "simplenn-backend": lambda: hg.SimpleNN(3, 4, 2, backend="jax"),
    "simplenn-x-shape": lambda: hg.SimpleNN(3, 4, 2).forward(np.ones((4, 1))),
    "simplenn-label-shape": lambda: hg.SimpleNN(3, 4, 2).loss(np.ones((3, 1)), np.ones((2, 2))),
    "simplenn-lr": lambda: hg.SimpleNN(3, 4, 2).sgd_step(np.ones((3, 1)), np.ones((2, 1)), 0),
    "simplenn-epsilon": lambda: hg.SimpleNN(3, 4, 2).numerical_gradients(
        np.ones((3, 1)), np.ones((2, 1)), -1e-6
    ),
    # gradient checks
    "gradcheck-eps": lambda: _check(eps=0),
    "gradcheck-threshold": lambda: _check(threshold=-1.0),
    "gradcheck-mode": lambda: _check(mode="partial"),
    "gradcheck-method": lambda: _check(method="fastest"),
    "gradcheck-samples": lambda: _check(mode="sample", samples=0),
    "gradcheck-stencil": lambda: _check(stencil="5-point"),
    "gradcheck-richardson": lambda: _check(stencil="4-point", richardson=2),
    "gradcheck-max-memory": lambda: _check(max_memory=0),
    "gradcheck-not-a-layer": lambda: hg.check_layer(object(), np.ones((2, 3))),
    "gradcheck-empty-x": lambda: hg.check_layer(hg.Tanh(), np.ones((0, 2))),
    "gradcheck-loss-not-scalar": lambda: hg.check_gradients(
        hg.mlp([3, 2], rng=0), _vector_loss(), np.ones((2, 3)), np.array([0, 1])
    ),
    "gradcheck-missing-grad": lambda: hg.check_layer(_ScaleWithoutGrad(), np.ones((2, 3))),
    "gradcheck-grad-shape": lambda: hg.check_layer(_ScaleWithShortGrad(), np.ones((2, 3))),
    "gradcheck-wrong-gradient": lambda: hg.check_layer(
        _Square(), np.random.default_rng(0).standard_normal((4, 3))
    ),
    "gradcheck-grad-shape-values-right": lambda: hg.check_layer(
        _ScaleWithKeptDims(), np.random.default_rng(0).standard_normal((2, 3))
    ),
    "gradcheck-grad-not-array": lambda: hg.check_layer(_ScaleWithFloatGrad(), np.ones((2, 3))),
    "gradcheck-backward-none": lambda: hg.check_layer(_ScaleReturningNothing(), np.ones((2, 3))),
    "gradcheck-param-not-array": lambda: hg.check_layer(_FloatScale(), np.ones((2, 3))),
    "gradcheck-forward-not-array": lambda: hg.check_layer(_ListOutput(), np.ones((2, 3))),
    "gradcheck-forward-not-finite": lambda: hg.check_layer(_Infinite(), np.ones((2, 3))),
    "gradcheck-complex-x": lambda: hg.check_layer(_Scale(), np.ones((2, 3), dtype=complex)),
    "gradcheck-nothing-to-check": lambda: hg.check_layer(_BatchCentre(), np.ones((2, 3), int)),
    "gradcheck-random-layer": lambda: hg.check_layer(_Dropout(), np.ones((2, 3))),
    "gradcheck-random-model": lambda: hg.check_gradients(
        hg.Sequential(hg.Linear(3, 3, rng=0), _Dropout()),
        hg.MSELoss(),
        np.ones((2, 3)),
        np.ones((2, 3)),
    ),
    "gradcheck-method-refused": lambda: hg.check_layer(
        _BatchCentre(), np.random.default_rng(0).standard_normal((4, 3)), method="rows"
    ),
    "gradcheck-rows-for-a-model": lambda: _check(method="rows"),
    "numgrad-non-scalar": lambda: hg.numerical_gradient(lambda x: x * 2, np.ones(3)),
    "numgrad-not-array": lambda: hg.numerical_gradient(lambda x: 0.0, [1.0, 2.0]),
    "numgrad-non-finite": lambda: hg.numerical_gradient(
        lambda x: np.inf if x[0] < 0 else float(np.sum(x)), np.zeros(2)
    ),
    "relative-difference-floor": lambda: hg.relative_difference(np.ones(2), np.ones(2), -1.0),
    # PyTorch gradient checks
    "torch-check-nothing": lambda: _torch_check(lambda x: x, _t(2, 3, grad=False)),
    "torch-check-not-callable": lambda: _torch_check(3, _t(2, 3)),
    "torch-check-output": lambda: _torch_check(lambda x: [1.0], _t(2, 3)),
    "torch-check-no-dependence": lambda: _torch_check(lambda x: x.detach() * 2, _t(2, 3)),
    "torch-check-complex": lambda: _torch_check(lambda x: x, _complex_input()),
    "torch-check-eps": lambda: _torch_check(_sin, _t(2, 3), eps=0),
    "torch-check-atol": lambda: _torch_check(_sin, _t(2, 3), atol=-1.0),
    "torch-check-nondet-tol": lambda: _torch_check(_sin, _t(2, 3), nondet_tol=-1.0),
    "torch-check-seed": lambda: _torch_check(_sin, _t(2, 3), seed=-1),
    "torch-check-method": lambda: _torch_check(_sin, _t(2, 3), method="fastest"),
    "torch-check-method-refused": lambda: _torch_check(_zoo("silu")[0], _t(6, 5), method="vmap"),
    "torch-check-order": lambda: _torch_report(_sin, _t(2, 3), order=3),
    "torch-check-grad-outputs": lambda: _torch_gradgradcheck(_sin, _t(2, 3), _t(3, 2)),
    "torch-check-random": lambda: _torch_check(
        lambda x: __import__("torch").nn.functional.dropout(x, 0.5), _t(4, 3)
    ),
    "torch-check-wrong-gradient": lambda: _torch_check(_zoo("silu slip")[0], _t(4, 3)),
    "torch-check-layout": lambda: _torch_check(_zoo("fused kernel contiguous only")[0], _t(4, 3)),
    "torch-check-undefined-grad": lambda: _torch_check(_two_outputs_without_none(), _t(4, 3)),
    "torch-check-reentrant": lambda: _torch_check(_noisy_backward(), _t(4, 3)),
    # optimizers and schedules
    "optimizer-lr": lambda: SGD(hg.mlp([2, 2]).params, lr=0),
    "optimizer-lr-nan": lambda: Adam(hg.mlp([2, 2]).params, lr=float("nan")),
    "optimizer-params": lambda: SGD({}, lr=0.1),
    "optimizer-grads-missing": lambda: SGD(hg.mlp([2, 2]).params).step({}),
    "optimizer-grad-shape": lambda: SGD(hg.mlp([2, 2]).params).step(
        {"0.weight": np.ones(3), "0.bias": np.ones(2)}
    ),
    "optimizer-grad-not-array": lambda: SGD(hg.mlp([2, 2]).params).step(
        {"0.weight": [[0.0, 0.0], [0.0, 0.0]], "0.bias": np.ones(2)}
    ),
    "sgd-momentum": lambda: SGD(hg.mlp([2, 2]).params, momentum=1.0),
    "sgd-nesterov-without-momentum": lambda: SGD(hg.mlp([2, 2]).params, nesterov=True),
    "sgd-weight-decay": lambda: SGD(hg.mlp([2, 2]).params, weight_decay=-1e-4),
    "adam-betas-pair": lambda: Adam(hg.mlp([2, 2]).params, betas=(0.9,)),
    "adam-beta-range": lambda: Adam(hg.mlp([2, 2]).params, betas=(1.0, 0.999)),
    "adam-eps": lambda: Adam(hg.mlp([2, 2]).params, eps=0.0),
    "optimizer-unknown": lambda: make_optimizer("lbfgs", hg.mlp([2, 2]).params),
    "optimizer-option": lambda: make_optimizer("adam", hg.mlp([2, 2]).params, momentum=0.9),
    "schedule-unknown": lambda: make_schedule("linear"),
    "schedule-option": lambda: make_schedule("step", steps=3),
    "schedule-step-size": lambda: make_schedule("step", step_size=0),
    "schedule-min-factor": lambda: make_schedule("cosine", min_factor=1.5),
    # fit
    "fit-compiled-unsupported": lambda: _fit_compiled(RMSprop),
    "fit-compiled-parallel": lambda: _fit(compiled=True, parallel=object()),
    "fit-epochs": lambda: _fit(epochs=0),
    "fit-batch-size": lambda: _fit(batch_size=0),
    "fit-patience-without-validation": lambda: _fit(patience=3),
    "fit-alpha": lambda: _fit(alpha=-1.0),
    "fit-X-ndim": lambda: _fit(X=np.ones(4)),
    "fit-X-nan": lambda: _fit(X=np.vstack([NAN_X, NAN_X])),
    "fit-length": lambda: _fit(y=np.array([0, 1, 0])),
    "fit-float-labels": lambda: _fit(y=np.array([0.0, 1.0, 0.0, 1.0])),
    "fit-labels-beyond-outputs": lambda: _fit(y=np.array([0, 1, 5, 1])),
    "fit-string-labels": lambda: _fit(y=np.array(["a", "b", "a", "b"])),
    "fit-foreign-optimizer": _fit_with_foreign_optimizer,
    "fit-validation-length": lambda: _fit(validation=(np.ones((3, 3)), np.array([0, 1]))),
    "fit-diverged": _diverge,
    "fit-sample-weight-length": lambda: _fit(sample_weight=np.ones(3)),
    "fit-sample-weight-own-loss": lambda: _fit_own_loss_with_weights(),
    "lbfgs-max-fun": lambda: _lbfgs(max_fun=0),
    # scikit-learn estimators
    "estimator-hyperparameter": lambda: _estimator("HandgradClassifier", learning_rate="cosine"),
    "estimator-partial-fit-classes": lambda: (
        _sklearn().HandgradClassifier().partial_fit(np.ones((4, 2)), np.array([0, 1, 0, 1]))
    ),
    "estimator-partial-fit-early-stopping": lambda: (
        _sklearn().HandgradRegressor(early_stopping=True).partial_fit(np.ones((4, 2)), np.ones(4))
    ),
    "estimator-warm-start-classes": _warm_start_new_class,
    "estimator-validation-too-small": lambda: _estimator(
        "HandgradRegressor", X=np.eye(4), y=np.arange(4.0), early_stopping=True
    ),
    "estimator-sample-weight-zero": lambda: (
        _sklearn().HandgradRegressor().fit(np.eye(4), np.arange(4.0), sample_weight=np.zeros(4))
    ),
    "estimator-non-finite": _overflowing_regressor,
    # data
    "dataset-unknown": lambda: load_dataset("mnist"),
    "csv-missing": lambda: load_csv("nope.csv", "label"),
    "csv-directory": lambda: load_csv(".", "label"),
    "csv-empty": lambda: load_csv(_csv("\n\n"), "label"),
    "csv-not-utf8": lambda: load_csv(_write("data.csv", b"a,b,label\n1,\xff,x\n"), "label"),
    "csv-bad-quote": lambda: load_csv(_csv('a,b,label\n1,"2"x,y\n'), "label"),
    "csv-separator": lambda: load_csv(_csv("a;b;label\n1,5;2;x\n3;4,5;y\n"), "label"),
    "csv-separator-hint": lambda: load_csv(_csv("1,5;2,5;x\n3,5;4,5;y\n"), 2),
    "csv-decimal-comma": lambda: load_csv(_csv("a;b;label\n1,5;2;x\n3;4;y\n"), "label", sep=";"),
    "csv-sep": lambda: load_csv(_csv(GOOD_CSV), "label", sep="ab"),
    "csv-missing-type": lambda: load_csv(_csv(GOOD_CSV), "label", missing="NA"),
    "csv-label-marked-missing": lambda: load_csv(
        _csv("a,b,label\n1,2,x\n3,4,NA\n"), "label", missing=["NA"]
    ),
    "csv-ragged": lambda: load_csv(_csv("a,b,label\n1,2,x\n3,4\n"), "label"),
    "csv-non-numeric": lambda: load_csv(_csv("a,b,label\n1,2,x\n3,abc,y\n"), "label"),
    "csv-missing-value": lambda: load_csv(_csv("a,b,label\n1,,x\n3,4,y\n"), "label"),
    "csv-not-finite": lambda: load_csv(_csv("a,b,label\n1,inf,x\n3,4,y\n"), "label"),
    "csv-unknown-target": lambda: load_csv(_csv(GOOD_CSV), "class"),
    "csv-target-index-range": lambda: load_csv(_csv("1,2,0\n3,4,1\n"), 5),
    "csv-target-name-without-header": lambda: load_csv(_csv("1,2,0\n3,4,1\n"), "label"),
    "csv-target-type": lambda: load_csv(_csv(GOOD_CSV), 1.5),
    "csv-one-class": lambda: load_csv(_csv("a,b,label\n1,2,x\n3,4,x\n"), "label"),
    "csv-missing-label": lambda: load_csv(_csv("a,b,label\n1,2,x\n3,4,\n"), "label"),
    "csv-duplicate-column": lambda: load_csv(_csv("a,a,label\n1,2,x\n3,4,y\n"), "label"),
    "csv-header-only": lambda: load_csv(_csv("a,b,label\n"), "label"),
    "csv-only-target": lambda: load_csv(_csv("label\nx\ny\n"), "label"),
    "split-too-few-per-class": lambda: split(np.ones((6, 2)), np.array([0, 0, 0, 0, 0, 1])),
    "split-sizes": lambda: split(np.ones((8, 2)), np.array([0, 1] * 4), test_size=1.5),
    "split-shapes": lambda: split(np.ones((8, 2)), np.array([0, 1] * 3)),
    "features-missing-column": lambda: load_features(_csv(GOOD_CSV), ["a", "c"]),
    "features-unknown-class": lambda: load_features(
        _csv(GOOD_CSV), ["a", "b"], target="label", class_names=["x", "z"]
    ),
    "features-width-without-header": lambda: load_features(_csv("1,2\n3,4\n"), ["a", "b", "c"]),
    "features-target-without-classes": lambda: load_features(
        _csv(GOOD_CSV), ["a", "b"], target="label"
    ),
    "standardizer-not-fitted": lambda: Standardizer().transform(np.ones((2, 3))),
    "standardizer-width": lambda: Standardizer().fit(np.ones((4, 3))).transform(np.ones((2, 2))),
    "standardizer-scale": lambda: Standardizer.from_arrays(np.zeros(2), np.array([1.0, 0.0])),
    "standardizer-overflow": lambda: Standardizer().fit(np.array([[1.0, 1e200], [2.0, -1e200]])),
    "batches-rng": lambda: batches(10, 3, rng=0),
    # data-parallel training
    "shard-rank": lambda: _distributed("shard")(np.arange(4), 2, 2),
    "shard-batches-rng": lambda: _distributed("shard_batches")(10, 4, None, rank=0, world_size=2),
    "distributed-no-group": lambda: _distributed("all_reduce_gradients")(hg.mlp([2, 2])),
    "all-reduce-count": lambda: _all_reduce(hg.mlp([2, 2]), count=-1),
    "all-reduce-missing-grad": lambda: _all_reduce(_Scale(), count=1),
    "all-reduce-library": lambda: _all_reduce(hg.mlp([2, 2], backend="array_api_strict")),
    "init-workers-environment": _without_torchrun_environment,
    "init-workers-backend": lambda: _distributed("init_workers")(backend="mpi"),
    "init-workers-timeout": lambda: _distributed("init_workers")(timeout=0),
    "worker-lost": _lost_worker,
    # model files
    "model-missing": lambda: load_classifier("nope.npz"),
    "model-not-zip": lambda: load_classifier(_write("model.npz", b"not a zip file")),
    "model-csv": lambda: load_classifier(_csv(GOOD_CSV)),
    "model-folder": lambda: load_classifier("."),
    "model-device": _device_as_model,
    "model-not-npy": lambda: load_classifier(_zip_model({"notes.txt": b"hello"})),
    "model-unknown-array": lambda: load_classifier(_zip_model({"other.npy": _npy(np.ones(2))})),
    "model-declared-size": lambda: load_classifier(
        _zip_model({"param/0.bias.npy": _npy(np.zeros(5000))})
    ),
    "model-zip-bomb": lambda: load_classifier(
        _zip_model({"param/0.weight.npy": _npy(np.zeros((4, 2**20)))}, zipfile.ZIP_DEFLATED)
    ),
    "model-header-size": lambda: load_classifier(_header_claims_more()),
    "model-object-arrays": lambda: load_classifier(
        _edited_model_file(
            edit_arrays=lambda a: a.update({"param/0.weight": np.array([{}], dtype=object)})
        )
    ),
    "model-no-meta": lambda: load_classifier(_npz(x=np.ones(2))),
    "model-meta-not-json": lambda: load_classifier(_npz(meta=np.array("{not json"))),
    "model-other-format": lambda: load_classifier(
        _edited_model_file(edit_meta=lambda m: m.update(format="keras"))
    ),
    "model-newer-version": lambda: load_classifier(
        _edited_model_file(edit_meta=lambda m: m.update(version=99))
    ),
    "model-shape-mismatch": lambda: load_classifier(
        _edited_model_file(edit_arrays=lambda a: a.update({"param/0.weight": np.ones((4, 5))}))
    ),
    "model-unknown-layer": lambda: load_classifier(
        _edited_model_file(edit_meta=lambda m: m["architecture"].append({"type": "Teleport"}))
    ),
    "model-bad-scaler": lambda: load_classifier(
        _edited_model_file(edit_arrays=lambda a: a.update({"scaler/scale": np.zeros(3)}))
    ),
    # files
    "write-no-folder": lambda: atomic_write("nodir/x.csv", "w").__enter__(),
    "write-folder": lambda: atomic_write(".", "w").__enter__(),
    "folder-in-use": _folder_in_use,
    # the command line
    "cli-train-lr": _cli("train", "--lr", "-1"),
    "cli-train-epochs": _cli("train", "--epochs", "0"),
    "cli-train-activation": _cli("train", "--activation", "sine"),
    "cli-train-data-without-target": _cli("train", "--data", "data.csv"),
    "cli-train-target-without-data": _cli("train", "--target", "label"),
    "cli-train-missing-csv": _cli("train", "--data", "nope.csv", "--target", "label"),
    "cli-train-unknown-dataset": _cli("train", "--dataset", "mnist"),
    "cli-train-alpha": _cli("train", "--alpha", "-1"),
    "cli-train-model": _cli("train", "--model", "resnet"),
    "cli-train-cnn-not-square": _cli("train", "--model", "cnn", "--quiet"),
    "cli-train-cnn-hidden": _cli("train", "--model", "cnn", "--hidden", "8"),
    "cli-train-sep": _cli("train", "--data", "data.csv", "--target", "label", "--sep", "ab"),
    "cli-train-csv-option-without-data": _cli("train", "--sep", ";"),
    "cli-train-patience-without-validation": _cli("train", "--patience", "3", "--val-size", "0"),
    "cli-train-too-large": lambda: _train(
        data=_write("data.csv", CHANGING.replace("3,3,", "3,1e308,"))
    ),
    "cli-train-memory": _cli("train", "--hidden", "100000000000"),
    "cli-train-folder-in-use": _train_into_folder_in_use,
    "cli-train-resume-no-folder": _cli("train", "--resume", "nope"),
    "cli-train-resume-foreign": _resume_foreign,
    "cli-train-resume-data-changed": _resume_changed_data,
    "cli-train-resume-options": _resume_other_options,
    "cli-train-resume-no-identity": _resume_without_identity,
    "cli-predict-csv-as-model": lambda: main(["predict", "--model", _csv(GOOD_CSV), "data.csv"]),
    "cli-predict-output-no-folder": lambda: main(
        [
            "predict",
            "--model",
            _model_file(),
            _write("new.csv", "a,b,c\n1,2,3\n"),
            "--output",
            "nodir/x.csv",
        ]
    ),
    "cli-predict-too-large": _predict_too_large,
    "cli-predict-missing-model": _cli("predict", "--model", "nope.npz", "new.csv"),
    "cli-predict-missing-feature": _predict_without_feature,
    "cli-evaluate-missing-target": _evaluate_without_target,
    "cli-train-nproc": _cli("train", "--nproc", "0"),
    "cli-train-worker-timeout": _cli("train", "--worker-timeout", "0"),
    "cli-train-nproc-under-torchrun": _nproc_under_torchrun,
    "cli-check-import": _cli("check", "nosuchmodule:Layer"),
    "cli-check-target-form": _cli("check", "nosuchmodule"),
    "cli-check-input-shape-without-target": _cli("check", "--input-shape", "8,10"),
    "cli-check-method-rows": _cli("check", "--method", "rows"),
    "cli-check-torch-method": _cli("check", "--torch", "math:sin", "--method", "batched"),
    "cli-check-torch-and-layer": _cli("check", "math:sin", "--torch", "math:sin"),
    "cli-gpt-text-missing": _cli("gpt", "train", "--text", "nope.txt"),
    "cli-gpt-heads": _cli("gpt", "train", "--n-embd", "10", "--n-head", "4"),
    "cli-gpt-lr": _cli("gpt", "train", "--lr", "0"),
    "cli-gpt-sample-missing": _cli("gpt", "sample", "--model", "nope.npz"),
    # sequence layers, the GPT and its training
    "embedding-float-idx": lambda: hg.Embedding(4, 2).forward(np.zeros((2, 3))),
    "embedding-index-range": lambda: hg.Embedding(4, 2).forward(np.array([[0, 4]])),
    "attention-heads": lambda: hg.MultiheadSelfAttention(6, 4),
    "attention-qkv-width": lambda: hg.ScaledDotProductAttention(1).forward(np.ones((1, 2, 10))),
    "rnn-nonlinearity": lambda: hg.RNN(2, 3, nonlinearity="gelu"),
    "rnn-input-size": lambda: hg.GRU(2, 3).forward(np.ones((1, 4, 3))),
    "residual-shape": lambda: hg.Residual(hg.Linear(3, 2)).forward(np.ones((2, 3))),
    "moduledict-forward": lambda: hg.ModuleDict(a=hg.Tanh()).forward(np.ones((1, 2))),
    "seq-ce-shape": lambda: hg.SequenceCrossEntropyLoss().forward(
        np.zeros((2, 3, 4)), np.zeros((2, 2), dtype=np.int64)
    ),
    "seq-ce-class-range": lambda: hg.SequenceCrossEntropyLoss().forward(
        np.zeros((2, 3, 4)), np.full((2, 3), 4)
    ),
    "seq-ce-nothing-counts": lambda: hg.SequenceCrossEntropyLoss().forward(
        np.zeros((2, 3, 4)), np.full((2, 3), -100)
    ),
    "seq-ce-mask": lambda: hg.SequenceCrossEntropyLoss().forward(
        np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=np.int64), np.ones((2, 3))
    ),
    "huber-delta": lambda: hg.HuberLoss(delta=0),
    "adamw-decay": lambda: AdamW(hg.mlp([2, 2]).params, decay="biases"),
    "rmsprop-alpha": lambda: RMSprop(hg.mlp([2, 2]).params, alpha=1.0),
    "clip-max-norm": lambda: clip_grad_norm({"w": np.ones(2)}, 0),
    "schedule-warmup": lambda: make_schedule("warmup_cosine", warmup=5, total=5),
    "gpt-context": lambda: hg.GPT(11, 8).forward(np.zeros((1, 9), dtype=np.int64)),
    "gpt-tied-head": _gpt_untied_head,
    "gpt-run-missing": lambda: load_gpt_run("nope.npz"),
    "text-too-short": lambda: read_text(_write("short.txt", "x" * 20)),
    "text-unknown-char": lambda: CharVocabulary.from_text("abc").encode("zab"),
    **_JAX_TRIGGERS,
}


# --- the tests ------------------------------------------------------------------------------


def test_the_table_and_the_triggers_match():
    ids = [row.id for row in ROWS]
    assert len(ids) == len(set(ids)), "ids in docs/errors.md must be unique"
    assert len(ids) >= 45
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-zA-Z0-9]+)*", i) for i in ids), ids
    assert sorted(set(ids) - set(TRIGGERS)) == [], "rows without a trigger"
    assert sorted(set(TRIGGERS) - set(ids)) == [], "triggers without a row"


def test_every_row_is_filled_in():
    for row in ROWS:
        assert row.where and row.bad_input and row.error_type and row.message, row


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input_gets_the_documented_error(row, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    trigger = TRIGGERS[row.id]
    if row.error_type == "exit 2":  # main returns 2, or its argument parser exits with 2
        try:
            status = trigger()
        except SystemExit as exited:
            status = exited.code
        assert status == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert len(err.splitlines()) == 1, err
        assert matches(row.message, err.strip()), err
    else:
        with pytest.raises(Exception) as caught:
            trigger()
        assert type(caught.value).__name__ == row.error_type, repr(caught.value)
        assert matches(row.message, message(caught.value)), message(caught.value)


def test_the_types_in_the_table_are_documented_ones():
    known = {
        "ValueError",
        "TypeError",
        "KeyError",
        "RuntimeError",
        "DataError",
        "ModelFileError",
        "NonFiniteLossError",
        "RandomLayerError",
        "TrainingDivergedError",
        "GradientCheckError",
        "FileNotFoundError",
        "IsADirectoryError",
        "WorkerLostError",
        "ImportError",
        *CLI_TYPES,
    }
    assert {row.error_type for row in ROWS} <= known


def test_handgrad_errors_share_a_base_and_a_standard_type():
    for error in (DataError, ModelFileError, NonFiniteLossError, GradientCheckError):
        assert issubclass(error, HandgradError) and issubclass(error, ValueError)
    assert issubclass(TrainingDivergedError, HandgradError)
    assert issubclass(TrainingDivergedError, RuntimeError)


def test_a_failed_gradient_check_is_caught_as_a_handgrad_error():
    with pytest.raises(HandgradError, match="gradient check failed for 'x'"):
        hg.check_layer(_Square(), np.ones((2, 3)))


def test_debug_shows_the_traceback(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--debug", "train", "--data", "nope.csv", "--target", "label"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert matches(
        "handgrad train: error: no file at ...nope.csv; check the path", err.splitlines()[-1]
    )


# --- a refused call changes nothing --------------------------------------------------------


def test_a_refused_load_state_dict_changes_no_parameter():
    model = hg.mlp([3, 4, 2], rng=0)
    before = model.state_dict()
    state = {k: np.zeros(v.shape) for k, v in before.items()}
    state["2.bias"] = np.zeros(5)  # the last entry does not fit: the others must not land
    kept = {k: v.copy() for k, v in state.items()}
    with pytest.raises(ValueError, match=r"state\['2.bias'\] has shape \(5,\)"):
        model.load_state_dict(state)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    for k, v in state.items():
        np.testing.assert_array_equal(v, kept[k])


@pytest.mark.parametrize(
    "x", [NAN_X, np.ones((2, 4)), np.ones((2, 3), dtype=np.float32)], ids=["nan", "4", "f32"]
)
def test_a_refused_forward_changes_neither_input_nor_layer(x):
    layer = _linear(np.full((5, 3), 0.5))
    params = {k: v.copy() for k, v in layer.params.items()}
    cached, x_before = layer._y, x.copy()
    with pytest.raises((ValueError, TypeError)):
        layer.forward(x)
    np.testing.assert_array_equal(x, x_before)
    assert layer._y is cached  # the cache of the last good forward is kept
    for k, v in layer.params.items():
        np.testing.assert_array_equal(v, params[k])


def test_a_refused_fit_changes_neither_the_model_nor_the_data():
    model = hg.mlp([3, 2], rng=0)
    optimizer = Adam(model.params, lr=0.1)
    before = model.state_dict()
    X, y = np.ones((4, 3)), np.array([0, 1, 5, 1])
    X_before, y_before = X.copy(), y.copy()
    with pytest.raises(ValueError, match="y holds class index 5"):
        fit(model, hg.CrossEntropyLoss(), optimizer, X, y, epochs=2)
    for k, v in model.params.items():
        np.testing.assert_array_equal(v, before[k])
    assert optimizer.t == 0
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)


class _Kink(_Scale):
    """Infinite as soon as a weight rises above 2: a gradient check steps over the edge."""

    def forward(self, x):
        self.x = x
        return np.where(self.params["w"] > 2.0, np.inf, x * self.params["w"])


def test_a_refused_gradient_check_leaves_parameters_and_input_bit_for_bit():
    layer, x = _Kink(), np.random.default_rng(0).standard_normal((2, 3))
    w_before, x_before = layer.params["w"].copy(), x.copy()
    refused = r"the loss is (nan|-?inf) when w\[0\] moves by \+1e-06"
    with np.errstate(invalid="ignore"), pytest.raises(NonFiniteLossError, match=refused):
        hg.check_layer(layer, x, method="loop", rng=0)
    np.testing.assert_array_equal(layer.params["w"], w_before)
    np.testing.assert_array_equal(x, x_before)
