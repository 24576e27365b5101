"""One training step on rows of the data, every method, array and target looked up once:
forward, loss, the hand-written backward, the L2 penalty, tied gradients added, and the
optimizer's update. ``fit``, L-BFGS and the data-parallel step share it."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from handgrad.core.arrays import convert, namespace, native
from handgrad.nn.containers import Sequential
from handgrad.nn.module import slots
from handgrad.nn.protocol import chain, in_mode
from handgrad.training.inputs import is_sparse, is_targets
from handgrad.training.optim import Optimizer

__all__ = ["Step"]


class Step:
    """One training step on the rows ``index`` of the data, with every method, array and
    target looked up once: the hot loop checks nothing that :func:`fit` checked before.

    handgrad's own layers and losses offer ``*_unchecked`` methods (and the first layer
    skips dL/dx, which nothing needs); a user's layer is called through the protocol.
    """

    def __init__(
        self,
        model: Sequential,
        loss: Any,
        optimizer: Optimizer | None,
        X: Any,
        y: Any,
        alpha: float,
        sample_weight: Any = None,
        order: list[int] | None = None,
    ) -> None:
        layers = chain(model)
        self.xp = xp = namespace(y)
        own_take = native(xp, "take_rows")  # torch: index_select, not the standard's wrapper
        self.take = (
            (lambda a, index: own_take(a, index=index))
            if own_take is not None
            else (lambda a, index: xp.take(a, index, axis=0))
        )
        self.X, self.y, self.alpha, self.sample_weight = X, y, alpha, sample_weight
        self.sparse, self._dense = is_sparse(X), None
        first = X[:1].toarray() if self.sparse else X[:1, ...]
        with in_mode(model, False):  # the model takes this data, checked
            outputs = model.forward(first).shape[-1]
        self.targets_given = is_targets(y)
        if self.targets_given and y.shape[1] != outputs:
            raise ValueError(
                f"y holds floating-point targets for {y.shape[1]} output(s) but the model has "
                f"{outputs}; class labels must be integers (y.astype(int))"
            )
        if not self.targets_given:
            low, high = int(xp.min(y)), int(xp.max(y))
            if low < 0 or high >= outputs:
                raise ValueError(
                    f"y holds class index {low if low < 0 else high} but the model "
                    f"has {outputs} outputs (valid indices 0 to {outputs - 1})"
                )
        self.forwards = [getattr(layer, "forward_unchecked", layer.forward) for layer in layers]
        # backpropagate down to the first layer with parameters, without its dL/dx: the
        # layers before it (a reshape of the input, say) have no gradient to fill
        start = next((i for i, layer in enumerate(layers) if layer.params), 0)
        backwards = [getattr(layer, "backward_unchecked", layer.backward) for layer in layers]
        if hasattr(layers[start], "backward_unchecked"):
            backwards[start] = functools.partial(layers[start].backward_unchecked, input_grad=False)
        self.backwards = backwards[start:][::-1]
        self.loss = loss
        self.fused = hasattr(loss, "forward_unchecked")
        self.targets = y if self.targets_given else None
        if self.fused and not self.targets_given:  # one-hot rows, made once
            columns = xp.arange(outputs, dtype=y.dtype, device=y.device)
            self.targets = xp.astype(y[:, None] == columns[None, :], first.dtype)
        places = list(slots(model).values())
        self.grads = [(owners[0][0].grads, owners[0][1]) for owners in places]
        self.tied = [  # an array held by several layers: the gradients of its uses add up
            (i, [(layer.grads, key) for layer, key in owners[1:]])
            for i, owners in enumerate(places)
            if len(owners) > 1
        ]
        self.weights = [
            (i, p) for i, (k, p) in enumerate(model.params.items()) if k.endswith("weight")
        ]
        if optimizer is not None:  # its arrays are the model's, maybe some, in its order
            self.update = (
                optimizer.update
                if order == list(range(len(places)))
                else lambda grads: optimizer.update([grads[i] for i in order])
            )

    def _index(self, index: Any) -> Any:
        """Row indices in the data's library (NumPy's pass as they are)."""
        if self.xp is namespace(index):
            return index
        return convert(index, self.xp, device=self.y.device)

    def indices(self, batches: list[Any]) -> list[Any]:
        """The row indices of an epoch's batches in the data's library, converted at once
        (NumPy's pass as they are), so that no batch converts its own."""
        if not batches or self.xp is namespace(batches[0]):
            return batches
        whole = self._index(np.concatenate(batches))
        ends = np.cumsum([len(b) for b in batches]).tolist()
        return [whole[end - len(b) : end] for b, end in zip(batches, ends, strict=True)]

    def rows(self, index: Any) -> Any:
        """The features of the rows ``index`` (all rows for None), dense."""
        if index is None:
            if self.sparse and self._dense is None:
                self._dense = self.X.toarray()
            return self._dense if self.sparse else self.X
        if self.sparse:
            return self.X[index].toarray()
        return self.take(self.X, index)

    def batch(self, index: Any) -> tuple[Any, Any]:
        """The features and labels (or targets) of the rows ``index``."""
        index = self._index(index)
        return self.rows(index), self.take(self.y, index)

    def __call__(self, index: Any) -> tuple[float, int]:
        """Forward, loss, backward and update on rows ``index``; the loss and the number of
        rows classified right."""
        value, right, grads = self.gradients(index)
        self.update(grads)
        return value, right

    def gradients(self, index: Any) -> tuple[float, int, list[Any]]:
        """Forward, loss and backward on rows ``index`` (all rows for None): the loss, the
        number of rows classified right (0 for targets) and the gradients, in the order of
        ``model.params``."""
        xp = self.xp
        if index is not None:
            index = self._index(index)
        out = self.rows(index)
        b = out.shape[0]
        labels = self.y if index is None else self.take(self.y, index)
        for forward in self.forwards:
            out = forward(out)
        extra, divisor = {}, b
        if self.sample_weight is not None:
            w = self.sample_weight if index is None else self.take(self.sample_weight, index)
            total = float(xp.sum(w))
            if total > 0:  # weights of mean 1: a 'mean' loss becomes the weighted mean
                w, divisor = w * (b / total), total
            extra = {"row_weight": w}
        if not self.fused:  # a loss of one's own, called through the protocol
            try:
                value = float(self.loss.forward(out, labels))
            except ValueError:
                if bool(xp.all(xp.isfinite(out))):
                    raise
                return math.nan, 0, []  # the model's output is no longer finite
        else:  # NaN or infinite outputs make a NaN or infinite loss, which fit reports
            targets = self.targets if index is None else self.take(self.targets, index)
            if not self.targets_given:
                extra["one_hot"] = True
            value = float(self.loss.forward_unchecked(out, targets, **extra))
        grad = self.loss.backward()
        for backward in self.backwards:
            grad = backward(grad)
        grads = [store[key] for store, key in self.grads]
        for i, others in self.tied:
            for store, key in others:
                grads[i] = grads[i] + store[key]
        if self.alpha:
            # L2 penalty: L += alpha / (2 b) |W|^2,  dL/dW += alpha W / b
            # (b is the batch's total weight when examples are weighted)
            for i, w in self.weights:
                value += self.alpha / (2 * divisor) * float(xp.sum(w * w))
                grads[i] = grads[i] + (self.alpha / divisor) * w
        right = 0 if self.targets_given else int(xp.count_nonzero(xp.argmax(out, axis=1) == labels))
        return value, right, grads
