"""The seed notebook's cells, one test each, run on handgrad with at most the import changed."""

import functools

import numpy as np
import pytest
import torch

import handgrad

BACKENDS = ["numpy", "torch"]


def rel_err(got, want):
    """max |got - want| / max |want|, in float64 NumPy."""
    got = np.asarray(handgrad.core.arrays.to_numpy(got), dtype=np.float64)
    want = np.asarray(handgrad.core.arrays.to_numpy(want), dtype=np.float64)
    assert got.shape == want.shape
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-300)


def check_relative_difference(a: torch.Tensor, b: torch.Tensor, threshold: float) -> bool:
    """The seed's In[46]: True if (|a - b| / (|a| + |b|)) > threshold anywhere."""
    numeratore = torch.abs(a - b)
    denominatore = torch.abs(a) + torch.abs(b)
    result = numeratore / denominatore
    result[torch.isnan(result)] = 0
    return bool(torch.any(result > threshold))


# In[2]-In[6]: y = sum(x^2 + 2x), dy/dx = 2x + 2


def test_simple_function_autograd():
    x = torch.arange(10, dtype=torch.float64, requires_grad=True)
    y = torch.sum(x**2 + 2 * x)
    y.backward()
    assert torch.equal(x.grad, 2 * x.detach() + 2)


def test_simple_function_numerical_gradient():
    x = np.arange(10.0)
    grad = handgrad.numerical_gradient(lambda v: np.sum(v**2 + 2 * v), x)
    assert isinstance(grad, np.ndarray)
    assert grad.dtype == np.float64
    assert rel_err(grad, 2 * x + 2) < 1e-8
    assert np.array_equal(x, np.arange(10.0))  # restored after the in-place perturbations


# In[7]-In[11]: p = softmax(w h), loss = -log p[5], dL/dw = (p - label) h^T


@pytest.fixture
def softmax_cell():
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(10, 20, dtype=torch.float64, generator=gen, requires_grad=True)
    h = torch.randint(3, (20, 1), generator=gen).to(torch.float64)
    p = torch.softmax(torch.matmul(w, h), dim=0)
    label = torch.zeros_like(p)
    label[5] = 1.0
    loss = -torch.sum(label * torch.log(p))
    loss.backward()
    return w, h, p.detach(), label, loss.detach()


def test_softmax_cross_entropy_autograd(softmax_cell):
    w, h, p, label, _ = softmax_cell
    analytic = torch.matmul(p - label, h.view(1, -1))
    assert rel_err(analytic, w.grad) < 1e-12


def test_softmax_cross_entropy_by_hand(softmax_cell):
    w, h, _, _, loss = softmax_cell
    layer = handgrad.Linear(20, 10, bias=False)
    layer.params["weight"][...] = w.detach().numpy()
    criterion = handgrad.CrossEntropyLoss(reduction="sum")
    value = criterion.forward(layer.forward(h.numpy().T), np.array([5]))  # 1,10
    layer.backward(criterion.backward())
    assert rel_err(value, loss) < 1e-12
    assert rel_err(layer.grads["weight"], w.grad) < 1e-12


# In[254]: the seed's test cell, verbatim, with SimpleNN from handgrad

SEED_CELL_254 = r"""
print('Testing implementation.')

nn = SimpleNN(10, 20, 3)

x = torch.arange(10, dtype=torch.float64).view(10, 1)
label = torch.tensor([0, 0, 1.], dtype=torch.float64).reshape(3, 1)

log_pred = nn.forward(x)
pred = torch.exp(log_pred)

assert pred.shape == label.shape == (3, 1)
assert bool(abs(sum(pred) - 1.) < 1e-6)

loss = nn.loss(x, label)
assert torch.equal(loss, -log_pred[2, 0])

dw_1, dw_2 = nn.backward(x, label)
assert dw_1.shape == nn.w_1.shape == (20, 10)
assert dw_2.shape == nn.w_2.shape == (3, 20)

print('\nShapes are correct.')

nn.gradient_check(x, label, epsilon=1e-3, threshold=1e-4)
"""

SEED_CELL_254_OUTPUT = [
    "Testing implementation.",
    "Shapes are correct.",
    "Performing gradient check for parameter w_1 with size = 200.",
    "Gradient check for parameter w_1 is passed.",
    "Performing gradient check for parameter w_2 with size = 60.",
    "Gradient check for parameter w_2 is passed.",
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_cell_254_runs_unchanged(backend, capsys):
    namespace = {
        "torch": torch,
        "SimpleNN": functools.partial(handgrad.SimpleNN, backend=backend, rng=0),
    }
    exec(SEED_CELL_254, namespace)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines == SEED_CELL_254_OUTPUT
    assert isinstance(namespace["dw_1"], torch.Tensor)
    assert namespace["dw_1"].dtype == torch.float64


# In[34]-In[52]: the hand-written gradients equal autograd's


@pytest.mark.parametrize("backend", BACKENDS)
def test_manual_gradients_equal_autograd(backend):
    net = handgrad.SimpleNN(10, 20, 3, backend=backend, rng=1)
    w_1 = torch.tensor(handgrad.core.arrays.to_numpy(net.w_1), requires_grad=True)
    w_2 = torch.tensor(handgrad.core.arrays.to_numpy(net.w_2), requires_grad=True)
    x = torch.arange(10, dtype=torch.float64).view(10, 1)
    label = torch.tensor([0, 0, 1.0], dtype=torch.float64).reshape(3, 1)

    z_1 = torch.sigmoid(torch.matmul(w_1, x))
    log_pred = torch.log_softmax(torch.matmul(w_2, z_1), dim=0)
    loss = -torch.sum(label * log_pred)
    loss.backward()

    dw_1, dw_2 = net.backward(x, label)
    assert rel_err(net.loss(x, label), loss.detach()) < 1e-12
    assert rel_err(dw_1, w_1.grad) < 1e-12
    assert rel_err(dw_2, w_2.grad) < 1e-12
    assert not check_relative_difference(w_1.grad, dw_1, 1e-12)
    assert not check_relative_difference(w_2.grad, dw_2, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_check_catches_broken_backward(backend, monkeypatch, capsys):
    net = handgrad.SimpleNN(10, 20, 3, backend=backend, rng=2)
    monkeypatch.setattr(net.model[1], "_backward", lambda xp, y, dy: dy)  # drops y (1 - y)
    x = torch.arange(10, dtype=torch.float64).view(10, 1)
    label = torch.tensor([0, 0, 1.0], dtype=torch.float64).reshape(3, 1)
    with pytest.raises(handgrad.GradientCheckError, match="w_1") as info:
        net.gradient_check(x, label, epsilon=1e-3, threshold=1e-4)
    assert isinstance(info.value, ValueError)
    assert info.value.failure.name == "w_1"
    assert "Gradient check for parameter w_1 is passed." not in capsys.readouterr().out


def test_gradient_check_error_is_value_error(monkeypatch):
    net = handgrad.SimpleNN(10, 20, 3, rng=3)
    monkeypatch.setattr(net.model[1], "_backward", lambda xp, y, dy: dy)
    x = np.arange(10.0).reshape(10, 1)
    label = np.array([[0.0], [0.0], [1.0]])
    with pytest.raises(ValueError, match="w_1"):
        net.gradient_check(x, label, epsilon=1e-3, threshold=1e-4)


# In[22] and after: the breast-cancer data the seed goes on to train on


def test_breast_cancer_data_shape():
    datasets = pytest.importorskip("sklearn.datasets")
    data = datasets.load_breast_cancer()
    assert data["data"].shape == (569, 30)
    assert data["target"].shape == (569,)
