# %% [markdown]
# # The seed notebook, cell by cell, with handgrad
#
# handgrad grew out of a notebook that derives backpropagation for a two-layer network,
# checks it by finite differences and compares it with PyTorch autograd. This walkthrough
# goes through each of its cells with handgrad. Run it as a script
# (`python examples/seed_walkthrough.py`) or open `seed_walkthrough.ipynb`, which has the
# same cells (`examples/make_notebook.py` writes it from this file).

# %%
import tempfile
from pathlib import Path

import numpy as np
import torch

import handgrad as hg
from handgrad.app.plots import plot_curves
from handgrad.app.trainer import TrainConfig, train_classifier
from handgrad.data import batches, load_dataset, split

torch.manual_seed(0)


def show(png: Path) -> None:
    """Show a picture in a notebook; a script has printed its path already."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:
        return
    if get_ipython() is not None:
        display(Image(filename=str(png)))


# %% [markdown]
# ## A simple function
#
# $y = \sum_i (x_i^2 + 2 x_i)$ has the gradient $2x + 2$. The seed checks autograd against
# it; handgrad's `numerical_gradient` (central differences, one element at a time) gives
# the same numbers up to its truncation and rounding error.

# %%
x = torch.arange(10, dtype=torch.float64, requires_grad=True)
y = torch.sum(x**2 + 2 * x)
y.backward()
dy_dx_analytic = 2 * x.detach() + 2
print("autograd equals 2x + 2:", bool(torch.all(x.grad == dy_dx_analytic)))

dy_dx_numeric = hg.numerical_gradient(lambda v: torch.sum(v**2 + 2 * v), x.detach().clone())
print("numerical gradient:", [round(float(g), 6) for g in dy_dx_numeric])
print("central differences agree to 1e-8:", bool(torch.allclose(dy_dx_numeric, dy_dx_analytic)))

# %% [markdown]
# ## The softmax gradient
#
# $p = \mathrm{softmax}(W h)$ and $J = -\log p_5$. The gradient with respect to $W$ is
# $(p - \mathrm{label})\, h^\top$. handgrad's `CrossEntropyLoss` is softmax and the negative
# log-likelihood fused; its `backward()` returns $p - \mathrm{label}$ (its rows are examples,
# so the logits are $(W h)^\top$).

# %%
w = torch.randn(10, 20, dtype=torch.float64, requires_grad=True)
h = torch.randint(3, (20, 1)).to(torch.float64)
p = torch.softmax(torch.matmul(w, h), dim=0)
label = torch.zeros_like(p)
label[5] = 1.0
loss = -torch.sum(label * torch.log(p))
loss.backward()
w_analytic_grad = torch.matmul(p - label, h.view(1, -1))
print("autograd equals (p - label) h^T:", torch.allclose(w_analytic_grad, w.grad))

ce = hg.CrossEntropyLoss()
value = ce.forward((w @ h).detach().T, torch.tensor([5]))
print("handgrad's loss equals the seed's:", bool(torch.isclose(value, loss.detach())))
print("dJ/dlogits = p - label:", torch.allclose(ce.backward().T, (p - label).detach()))

# %% [markdown]
# ## The network in NumPy
#
# `hg.SimpleNN` is the seed's network with its attributes and methods: $h_1 = w_1 x$,
# $z_1 = \sigma(h_1)$, $h_2 = w_2 z_1$, $z_2 = \log\mathrm{softmax}(h_2)$, loss
# $J = -\mathrm{label} \cdot z_2$. Arrays are in the seed's column layout: `x` is
# (input_size, k). The seed's first test cell runs unchanged.

# %%
nn = hg.SimpleNN(10, 20, 3, rng=0)  # backend="numpy" is the default
x = np.arange(10, dtype=np.float64).reshape(10, 1)
label = np.array([0, 0, 1.0]).reshape(3, 1)

log_pred = nn.forward(x)
pred = np.exp(log_pred)
assert pred.shape == label.shape == (3, 1)
assert abs(pred.sum() - 1.0) < 1e-6

loss = nn.loss(x, label)
assert loss == -log_pred[2, 0]

dw_1, dw_2 = nn.backward(x, label)
assert dw_1.shape == nn.w_1.shape == (20, 10)
assert dw_2.shape == nn.w_2.shape == (3, 20)
print("Shapes are correct.")
print("loss:", round(float(loss), 6))

# %% [markdown]
# ## The network in PyTorch
#
# The same network computes in PyTorch with `backend="torch"`; the same `rng` draws the
# same weights, so both give the same loss and gradients. Arrays go in and come back in
# the caller's library.

# %%
nn_torch = hg.SimpleNN(10, 20, 3, backend="torch", rng=0)
x_t = torch.arange(10, dtype=torch.float64).view(10, 1)
label_t = torch.tensor([0, 0, 1.0], dtype=torch.float64).reshape(3, 1)
dw_1_t, dw_2_t = nn_torch.backward(x_t, label_t)
print("type of dw_1:", type(dw_1_t).__name__)
print("same loss:", bool(np.isclose(float(nn_torch.loss(x_t, label_t)), float(loss), rtol=1e-12)))
print("same gradients:", np.allclose(dw_1_t.numpy(), dw_1, rtol=1e-12, atol=0))

# %% [markdown]
# ## Numerical gradients
#
# The seed's `numerical_gradients` moves each weight by $\pm\varepsilon$ and takes
# $(J(w + \varepsilon) - J(w - \varepsilon)) / 2\varepsilon$, element by element.

# %%
num_1, num_2 = nn.numerical_gradients(x, label, epsilon=1e-6)
for name, analytic, numeric in (("w_1", dw_1, num_1), ("w_2", dw_2, num_2)):
    worst = float(np.max(hg.relative_difference(analytic, numeric)))
    print(f"{name}: largest relative difference {worst:.0e}")

# %% [markdown]
# ## The gradient check
#
# `gradient_check` prints the seed's lines and raises on the first failure. Its test is
# handgrad's: an element fails only when its difference is above both the relative
# threshold and the rounding noise of a central difference (see the guide on eps and
# thresholds).
#
# The seed's markdown wrote
#
# $$\frac{\partial J}{\partial h_1} = (w_1^\top (z_2 - \mathrm{label})) \odot z_1 (1 - z_1)$$
#
# where $w_2^\top$ belongs (its code has $w_2^\top$). The slip only type-checks when the
# sizes are equal. `SeedNet` below is the seed's network as a handgrad
# layer (rows layout, logits out, so that `CrossEntropyLoss` adds the softmax), with the
# slip as an option; `check_gradients` passes the right one and names `w_1` in the other.

# %%
nn.gradient_check(x, label)


class SeedNet:
    """The seed's network as a layer: logits = sigmoid(x w_1^T) w_2^T."""

    def __init__(self, size, rng, slip=False):
        self.params = {
            "w_1": rng.standard_normal((size, size)),
            "w_2": rng.standard_normal((size, size)),
        }
        self.grads = {}
        self.slip = slip

    def forward(self, x):
        self.x, self.z_1 = x, 1 / (1 + np.exp(-x @ self.params["w_1"].T))
        return self.z_1 @ self.params["w_2"].T

    def backward(self, dh_2):
        w = self.params["w_1" if self.slip else "w_2"]  # the markdown's slip: w_1 for w_2
        dh_1 = (dh_2 @ w) * self.z_1 * (1 - self.z_1)
        self.grads = {"w_1": dh_1.T @ self.x, "w_2": dh_2.T @ self.z_1}
        return dh_1 @ self.params["w_1"]


rng = np.random.default_rng(0)
xs, ys = rng.standard_normal((5, 4)), np.array([0, 1, 2, 3, 1])
report = hg.check_gradients(SeedNet(4, np.random.default_rng(1)), hg.CrossEntropyLoss(), xs, ys)
print(f"\nright backward: {report.passed}")
try:
    hg.check_gradients(
        SeedNet(4, np.random.default_rng(1), slip=True), hg.CrossEntropyLoss(), xs, ys
    )
except hg.GradientCheckError as err:
    print(f"with the slip: {err}")

# %% [markdown]
# ## Autograd
#
# The seed's last check: PyTorch autograd on the same weights gives the same gradients,
# to 1e-15. `hg.compare_with_autograd` does this for any handgrad model: `nn.model` is the
# network as a `Sequential` (rows layout), and the seed's loss is `NLLLoss` summed.

# %%
w_1 = torch.tensor(nn.w_1, requires_grad=True)
w_2 = torch.tensor(nn.w_2, requires_grad=True)
z_2 = torch.log_softmax(w_2 @ torch.sigmoid(w_1 @ torch.tensor(x)), dim=0)
loss_t = -torch.sum(torch.tensor(label) * z_2)
loss_t.backward()
print("dw_1 matches autograd:", torch.allclose(w_1.grad, torch.tensor(dw_1), atol=1e-15, rtol=0))
print("dw_2 matches autograd:", torch.allclose(w_2.grad, torch.tensor(dw_2), atol=1e-15, rtol=0))

comparison = hg.compare_with_autograd(nn.model, hg.NLLLoss("sum"), x.T, label.T)
print(comparison)

# %% [markdown]
# ## The SGD step
#
# The seed left `sgd_step` as `pass`. In handgrad it is one step of gradient descent,
# $w \leftarrow w - \eta\, \partial J / \partial w$ for $w_1$ and $w_2$, and returns the loss
# before the step. Ten steps on the one example:

# %%
losses = [float(nn.sgd_step(x, label, lr=0.1)) for _ in range(10)]
print("loss over 10 steps:", " ".join(f"{v:.3f}" for v in losses))
print("after the steps:", round(float(nn.loss(x, label)), 4))

# %% [markdown]
# ## Training on breast cancer
#
# The seed's last cells load scikit-learn's breast-cancer data: 569 examples, 30 features,
# 2 classes. First the seed's own network (30-20-2, no biases) trained with `sgd_step` on
# mini-batches of 32 columns, inputs standardised on the training part; then handgrad's
# training path, which `handgrad train` uses (biases, Adam, L2 penalty, validation curves).

# %%
data = load_dataset("breast_cancer")
parts = split(data.X, data.y, test_size=0.25, val_size=0.1, rng=0)
mean, scale = parts.X_train.mean(axis=0), parts.X_train.std(axis=0)


def columns(X, y):
    """The seed's layout: features by examples, and one-hot labels by examples."""
    return ((X - mean) / scale).T, np.eye(2)[y].T


X_train, Y_train = columns(parts.X_train, parts.y_train)
X_test, Y_test = columns(parts.X_test, parts.y_test)
seed_net = hg.SimpleNN(30, 20, 2, rng=0)
order = np.random.default_rng(0)
epoch_losses = []
for _ in range(30):
    total = 0.0
    for batch in batches(X_train.shape[1], 32, order):
        total += float(seed_net.sgd_step(X_train[:, batch], Y_train[:, batch], lr=0.01))
    epoch_losses.append(total / X_train.shape[1])
predicted = np.argmax(seed_net.forward(X_test), axis=0)
print(f"seed network, 30 epochs of sgd_step: training loss {epoch_losses[-1]:.4f}")
print(f"seed network test accuracy: {np.mean(predicted == parts.y_test):.4f}")

classifier, history = train_classifier(
    parts.X_train,
    parts.y_train,
    data.class_names,
    config=TrainConfig(epochs=100, seed=0),
    validation=(parts.X_val, parts.y_val),
)
accuracy = np.mean(classifier.predict(parts.X_test) == parts.y_test)
print(f"train_classifier (handgrad train's defaults) test accuracy: {accuracy:.4f}")
curves = plot_curves(
    history.as_dict(),
    Path(tempfile.mkdtemp()) / "curves.png",
    title="breast cancer: 30-20-2 sigmoid, Adam",
)
print(f"training curves: {curves}")
show(curves)
