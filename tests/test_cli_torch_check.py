"""``handgrad check --torch module:function``: a user's custom autograd.Function, function
or nn.Module checked on random inputs, first and second order, and the bad uses refused."""

from __future__ import annotations

import json
import sys

import pytest

from handgrad.cli.main import main

pytest.importorskip("torch")

KERNELS = """
import torch


class Cube(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 3 * x * dy  # slip: 3 x^2 dy


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return 2 * x.detach() * dy  # right once, not when differentiated again


def attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2), -1) @ v


class Affine(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.linear(x))
"""


@pytest.fixture
def kernels(tmp_path, monkeypatch):
    (tmp_path / "userkernels.py").write_text(KERNELS)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("userkernels", None)


def test_a_wrong_function_fails_with_the_element_and_both_values(kernels, capsys):
    assert main(["check", "--torch", "userkernels:Cube", "--input-shape", "4,3"]) == 1
    out = capsys.readouterr().out
    assert "== gradcheck of userkernels:Cube on random float64 inputs of shape 4x3 ==" in out
    assert "FAILED: gradient check failed for 'inputs[0]' (shape (4, 3)): 12 of 12" in out


def test_second_order_catches_a_backward_right_only_once(kernels, capsys):
    assert main(["check", "--torch", "userkernels:Square", "--input-shape", "4,3"]) == 0
    assert main(["check", "--torch", "userkernels:Square", "--order", "2"]) == 1
    assert "gradgradcheck of userkernels:Square" in capsys.readouterr().out


def test_several_inputs_a_module_float32_and_json(kernels, capsys):
    shapes = ["--input-shape", "2,4,3"] * 3
    assert main(["check", "--torch", "userkernels:attention", *shapes, "--dtype", "float32"]) == 0
    capsys.readouterr()
    assert main(["check", "--torch", "userkernels:Affine", "--input-shape", "5,3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [c["name"] for c in data["report"]["checks"]]
    assert data["passed"] and names == ["inputs[0]", "linear.weight", "linear.bias"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--torch", "userkernels:Cube", "--method", "batched"], "--method batched goes with a"),
        (["userkernels:Cube", "--torch", "userkernels:Cube"], "give a LAYER or --torch"),
        (["--torch", "userkernels"], "--torch must look like module:Class"),
        (["--torch", "userkernels:Nope"], "module 'userkernels' has no 'Nope'"),
    ],
)
def test_bad_uses_are_refused_with_status_2(kernels, capsys, args, match):
    assert main(["check", *args]) == 2
    assert match in capsys.readouterr().err
