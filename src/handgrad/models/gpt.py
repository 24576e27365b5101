"""A GPT in nanoGPT's layout, every backward pass written by hand: token and position
embeddings, ``n_layer`` pre-norm blocks (causal self-attention and a GELU MLP, each with a
residual connection), a final layer norm and a language-model head tied to the token
embedding.

Its ``state_dict`` keys and shapes are nanoGPT's (``transformer.wte.weight``,
``transformer.h.0.attn.c_attn.weight``, ..., ``lm_head.weight``), so the weights of a
PyTorch GPT of that layout load with ``load_state_dict``; its ``params`` and ``grads`` list
the tied weight once, as torch's ``named_parameters`` does, the gradient being the sum of
the embedding's and the head's."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import array_api_compat
import numpy as np

from handgrad.core.arrays import convert, namespace, to_numpy
from handgrad.core.random import make_rng
from handgrad.core.validation import Options, check_array, check_positive_int
from handgrad.nn.containers import Container, ModuleDict, Sequential
from handgrad.nn.layers.activations import GELU
from handgrad.nn.layers.attention import ScaledDotProductAttention
from handgrad.nn.layers.embedding import Embedding, check_indices
from handgrad.nn.layers.linear import Linear
from handgrad.nn.layers.normalization import LayerNorm
from handgrad.nn.protocol import check_upstream
from handgrad.nn.registry import register_layer

__all__ = ["GPT", "MLP", "Block", "CausalSelfAttention"]

GELU_APPROXIMATIONS = Options(("none", "tanh"))
_INIT_STD = 0.02  # nanoGPT's (and GPT-2's) initial weights: N(0, 0.02^2)


def _normal(std: float) -> Any:
    return lambda shape, rng: rng.standard_normal(shape) * std


def _where(options: dict[str, Any]) -> dict[str, Any]:
    """The array options (backend, dtype, device) that every part is built with."""
    return {k: options[k] for k in ("backend", "dtype", "device") if k in options}


def _check_sizes(n_embd: Any, n_head: Any) -> tuple[int, int]:
    n_embd, n_head = check_positive_int(n_embd, "n_embd"), check_positive_int(n_head, "n_head")
    if n_embd % n_head:
        raise ValueError(
            f"n_embd ({n_embd}) must be a multiple of n_head ({n_head}): each head takes "
            "n_embd / n_head features"
        )
    return n_embd, n_head


class _Part(Container):
    """A part of the GPT: ``forward`` checks its input, then runs ``forward_unchecked``."""

    def forward(self, x: Any) -> Any:
        """Return the part's output for ``x`` (batch, time, n_embd)."""
        check_array(x, "x", min_ndim=2, layout="(batch, time, n_embd)")
        if x.shape[-1] != self.n_embd:
            raise ValueError(
                f"x must have {self.n_embd} features (last axis) for {type(self).__name__}, "
                f"got shape {tuple(x.shape)}"
            )
        return self.forward_unchecked(x)

    def backward(self, dy: Any) -> Any:
        """Return dL/dx and overwrite the gradients of every parameter in the part."""
        check_upstream(dy, self._y, self)
        return self.backward_unchecked(dy)

    def forward_unchecked(self, x: Any) -> Any:
        raise NotImplementedError

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        raise NotImplementedError

    def torch_module(self) -> Any:
        """Not offered: compare a GPT with a PyTorch GPT of nanoGPT's layout through
        ``state_dict`` instead."""
        raise TypeError(
            f"{type(self).__name__} has no torch.nn counterpart; load the GPT's state_dict "
            "into a PyTorch GPT of nanoGPT's layout to compare"
        )


@register_layer
class CausalSelfAttention(_Part):
    """nanoGPT's attention: ``c_attn`` (n_embd -> 3 n_embd, queries, keys and values side
    by side), causal multi-head attention, ``c_proj`` (n_embd -> n_embd).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.models.gpt import CausalSelfAttention
    >>> attn = CausalSelfAttention(8, 2, rng=0)
    >>> list(attn.params)
    ['c_attn.weight', 'c_attn.bias', 'c_proj.weight', 'c_proj.bias']
    >>> attn.forward(np.zeros((1, 5, 8))).shape
    (1, 5, 8)
    """

    def __init__(
        self, n_embd: int, n_head: int, bias: bool = True, n_layer: int = 1, **options: Any
    ) -> None:
        super().__init__()
        self.n_embd, self.n_head = _check_sizes(n_embd, n_head)
        self.n_layer = check_positive_int(n_layer, "n_layer")
        gen, where = make_rng(options.get("rng")), _where(options)
        self.c_attn = Linear(n_embd, 3 * n_embd, bias, init=_normal(_INIT_STD), rng=gen, **where)
        # nanoGPT scales the residual projections' weights by 1 / sqrt(2 n_layer)
        proj_std = _INIT_STD / math.sqrt(2 * self.n_layer)
        self.c_proj = Linear(n_embd, n_embd, bias, init=_normal(proj_std), rng=gen, **where)
        self.attention = ScaledDotProductAttention(n_head, causal=True)
        self._y = None

    @property
    def children(self) -> dict[str, Any]:
        return {"c_attn": self.c_attn, "c_proj": self.c_proj}

    def config(self) -> dict[str, Any]:
        return {
            "n_embd": self.n_embd,
            "n_head": self.n_head,
            "bias": "bias" in self.c_attn.params,
            "n_layer": self.n_layer,
        }

    @classmethod
    def array_shapes(
        cls, n_embd: int, n_head: int, bias: bool = True, n_layer: int = 1
    ) -> dict[str, tuple[int, ...]]:
        """``c_attn`` (3 n_embd, n_embd) and ``c_proj`` (n_embd, n_embd), with biases."""
        n_embd, _ = _check_sizes(n_embd, n_head)
        return {
            **{f"c_attn.{k}": s for k, s in Linear.array_shapes(n_embd, 3 * n_embd, bias).items()},
            **{f"c_proj.{k}": s for k, s in Linear.array_shapes(n_embd, n_embd, bias).items()},
        }

    def forward_unchecked(self, x: Any) -> Any:
        qkv = self.c_attn.forward_unchecked(x)  # B,T,3C
        self._y = self.c_proj.forward_unchecked(self.attention.forward_unchecked(qkv))
        return self._y

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        dqkv = self.attention.backward_unchecked(self.c_proj.backward_unchecked(dy))
        return self.c_attn.backward_unchecked(dqkv, input_grad)


@register_layer
class MLP(_Part):
    """nanoGPT's MLP: ``c_fc`` (n_embd -> 4 n_embd), GELU, ``c_proj`` (4 n_embd -> n_embd).

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.models.gpt import MLP
    >>> mlp = MLP(8, rng=0)
    >>> [(k, v.shape) for k, v in mlp.params.items() if k.endswith("weight")]
    [('c_fc.weight', (32, 8)), ('c_proj.weight', (8, 32))]
    """

    def __init__(
        self, n_embd: int, bias: bool = True, n_layer: int = 1, gelu: str = "none", **options: Any
    ) -> None:
        super().__init__()
        self.n_embd = check_positive_int(n_embd, "n_embd")
        self.n_layer = check_positive_int(n_layer, "n_layer")
        gen, where = make_rng(options.get("rng")), _where(options)
        self.c_fc = Linear(n_embd, 4 * n_embd, bias, init=_normal(_INIT_STD), rng=gen, **where)
        self.gelu = GELU(GELU_APPROXIMATIONS.check(gelu, "gelu"))
        proj_std = _INIT_STD / math.sqrt(2 * self.n_layer)
        self.c_proj = Linear(4 * n_embd, n_embd, bias, init=_normal(proj_std), rng=gen, **where)
        self._y = None

    @property
    def children(self) -> dict[str, Any]:
        return {"c_fc": self.c_fc, "gelu": self.gelu, "c_proj": self.c_proj}

    def config(self) -> dict[str, Any]:
        return {
            "n_embd": self.n_embd,
            "bias": "bias" in self.c_fc.params,
            "n_layer": self.n_layer,
            "gelu": self.gelu.approximate,
        }

    @classmethod
    def array_shapes(
        cls, n_embd: int, bias: bool = True, n_layer: int = 1, gelu: str = "none"
    ) -> dict[str, tuple[int, ...]]:
        """``c_fc`` (4 n_embd, n_embd) and ``c_proj`` (n_embd, 4 n_embd), with biases."""
        n = check_positive_int(n_embd, "n_embd")
        return {
            **{f"c_fc.{k}": s for k, s in Linear.array_shapes(n, 4 * n, bias).items()},
            **{f"c_proj.{k}": s for k, s in Linear.array_shapes(4 * n, n, bias).items()},
        }

    def forward_unchecked(self, x: Any) -> Any:
        hidden = self.gelu.forward_unchecked(self.c_fc.forward_unchecked(x))  # B,T,4C
        self._y = self.c_proj.forward_unchecked(hidden)
        return self._y

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        dhidden = self.gelu.backward_unchecked(self.c_proj.backward_unchecked(dy))
        return self.c_fc.backward_unchecked(dhidden, input_grad)


@register_layer
class Block(_Part):
    """nanoGPT's transformer block, pre-norm with two residual connections::

        x = x + attn(ln_1(x))
        x = x + mlp(ln_2(x))

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.models.gpt import Block
    >>> block = Block(8, 2, rng=0)
    >>> [name for name in block.params if name.endswith("weight")]  # doctest: +NORMALIZE_WHITESPACE
    ['ln_1.weight', 'attn.c_attn.weight', 'attn.c_proj.weight', 'ln_2.weight',
     'mlp.c_fc.weight', 'mlp.c_proj.weight']
    """

    def __init__(
        self,
        n_embd: int,
        n_head: int,
        bias: bool = True,
        n_layer: int = 1,
        gelu: str = "none",
        **options: Any,
    ) -> None:
        super().__init__()
        self.n_embd, self.n_head = _check_sizes(n_embd, n_head)
        gen, where = make_rng(options.get("rng")), _where(options)
        self.ln_1 = LayerNorm(n_embd, bias=bias, **where)
        self.attn = CausalSelfAttention(n_embd, n_head, bias, n_layer, rng=gen, **where)
        self.ln_2 = LayerNorm(n_embd, bias=bias, **where)
        self.mlp = MLP(n_embd, bias, n_layer, gelu, rng=gen, **where)
        self._y = None

    @property
    def children(self) -> dict[str, Any]:
        return {"ln_1": self.ln_1, "attn": self.attn, "ln_2": self.ln_2, "mlp": self.mlp}

    def config(self) -> dict[str, Any]:
        return {"n_head": self.n_head, **self.mlp.config()}

    @classmethod
    def array_shapes(
        cls, n_embd: int, n_head: int, bias: bool = True, n_layer: int = 1, gelu: str = "none"
    ) -> dict[str, tuple[int, ...]]:
        """The two layer norms', the attention's and the MLP's arrays."""
        norm = LayerNorm.array_shapes(n_embd, bias=bias)
        parts = {
            "ln_1": norm,
            "attn": CausalSelfAttention.array_shapes(n_embd, n_head, bias, n_layer),
            "ln_2": norm,
            "mlp": MLP.array_shapes(n_embd, bias, n_layer, gelu),
        }
        return {f"{part}.{k}": s for part, shapes in parts.items() for k, s in shapes.items()}

    def forward_unchecked(self, x: Any) -> Any:
        x = x + self.attn.forward_unchecked(self.ln_1.forward_unchecked(x))
        self._y = x + self.mlp.forward_unchecked(self.ln_2.forward_unchecked(x))
        return self._y

    def backward_unchecked(self, dy: Any, input_grad: bool = True) -> Any:
        # each residual: dL/dx = dL/dy + (the branch's dL/dx)
        dx = dy + self.ln_2.backward_unchecked(self.mlp.backward_unchecked(dy))
        return dx + self.ln_1.backward_unchecked(self.attn.backward_unchecked(dx))


@register_layer
class GPT(Container):
    """A GPT language model in nanoGPT's layout: ``forward(idx)`` maps token indices
    (batch, time) to logits (batch, time, vocab_size); ``backward(dlogits)`` fills every
    gradient (and returns None: indices have no gradient).

    Parameters
    ----------
    vocab_size, block_size : int
        The number of tokens, and the longest context (the position table's rows).
    n_layer, n_head, n_embd : int
        Blocks, attention heads per block, and the width (a multiple of ``n_head``).
    bias : bool
        Biases in the Linear layers and layer norms, as nanoGPT's ``bias``.
    gelu : {"none", "tanh"}
        The MLP's GELU: exact (nanoGPT's ``nn.GELU()``) or the tanh approximation.
    rng : int, numpy.random.Generator or None
        Source of the initial weights (nanoGPT's: N(0, 0.02^2), the residual projections
        scaled by 1 / sqrt(2 n_layer)).
    backend, dtype, device
        Where the arrays live, as for :class:`~handgrad.Linear`.

    Examples
    --------
    >>> import numpy as np
    >>> from handgrad.models import GPT
    >>> model = GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, rng=0)
    >>> list(model.params)[:3]
    ['transformer.wte.weight', 'transformer.wpe.weight', 'transformer.h.0.ln_1.weight']
    >>> "lm_head.weight" in model.params, "lm_head.weight" in model.state_dict()  # tied
    (False, True)
    >>> idx = np.array([[1, 2, 3, 4]])
    >>> logits = model.forward(idx)
    >>> logits.shape
    (1, 4, 11)
    >>> model.backward(np.ones_like(logits)) is None
    True
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int = 2,
        n_head: int = 2,
        n_embd: int = 8,
        bias: bool = True,
        gelu: str = "none",
        *,
        rng: Any = None,
        backend: Any = "numpy",
        dtype: Any = "float64",
        device: Any = None,
    ) -> None:
        super().__init__()
        self.vocab_size = check_positive_int(vocab_size, "vocab_size")
        self.block_size = check_positive_int(block_size, "block_size")
        self.n_layer = check_positive_int(n_layer, "n_layer")
        self.n_embd, self.n_head = _check_sizes(n_embd, n_head)
        gen, where = make_rng(rng), {"backend": backend, "dtype": dtype, "device": device}
        wte = Embedding(vocab_size, n_embd, std=_INIT_STD, rng=gen, **where)
        wpe = Embedding(block_size, n_embd, std=_INIT_STD, rng=gen, **where)
        blocks = [
            Block(n_embd, n_head, bias, n_layer, gelu, rng=gen, **where) for _ in range(n_layer)
        ]
        ln_f = LayerNorm(n_embd, bias=bias, **where)
        self.transformer = ModuleDict(wte=wte, wpe=wpe, h=Sequential(*blocks), ln_f=ln_f)
        self.lm_head = Linear(n_embd, vocab_size, bias=False, init=_normal(_INIT_STD), **where)
        self.lm_head.params["weight"] = wte.params["weight"]  # tied: one array, two uses
        self._blocks = blocks
        self._positions: dict[tuple, Any] = {}
        self._y = None

    @property
    def children(self) -> dict[str, Any]:
        return {"transformer": self.transformer, "lm_head": self.lm_head}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"GPT({options})"

    def config(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "block_size": self.block_size,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "n_embd": self.n_embd,
            "bias": "bias" in self.transformer["ln_f"].params,
            "gelu": self._blocks[0].mlp.gelu.approximate,
        }

    @classmethod
    def array_shapes(
        cls,
        vocab_size: int,
        block_size: int,
        n_layer: int = 2,
        n_head: int = 2,
        n_embd: int = 8,
        bias: bool = True,
        gelu: str = "none",
    ) -> dict[str, tuple[int, ...]]:
        """Every parameter by name, the tied ``lm_head.weight`` listed once, as
        ``transformer.wte.weight``."""
        shapes = {
            "transformer.wte.weight": Embedding.array_shapes(vocab_size, n_embd)["weight"],
            "transformer.wpe.weight": Embedding.array_shapes(block_size, n_embd)["weight"],
        }
        block = Block.array_shapes(n_embd, n_head, bias, n_layer, gelu)
        for i in range(check_positive_int(n_layer, "n_layer")):
            shapes.update({f"transformer.h.{i}.{k}": s for k, s in block.items()})
        norm = LayerNorm.array_shapes(n_embd, bias=bias)
        shapes.update({f"transformer.ln_f.{k}": s for k, s in norm.items()})
        return shapes

    def torch_module(self) -> Any:
        """Not offered: load :meth:`state_dict` into a PyTorch GPT of nanoGPT's layout."""
        raise TypeError(
            "GPT has no torch.nn counterpart here; load its state_dict into a PyTorch GPT "
            "of nanoGPT's layout to compare"
        )

    def state_dict(self) -> dict[str, Any]:
        """Copies of the weights under nanoGPT's keys, ``lm_head.weight`` included (the same
        values as ``transformer.wte.weight``), as torch's ``state_dict`` lists both."""
        state = super().state_dict()
        wte = state["transformer.wte.weight"]
        state["lm_head.weight"] = namespace(wte).asarray(wte, copy=True)
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> GPT:
        """Copy a nanoGPT-layout ``state`` (arrays of any library, PyTorch tensors included)
        into the weights; ``lm_head.weight``, if given, must equal ``transformer.wte.weight``
        (they are one array here). Nothing changes unless everything fits."""
        state = dict(state)
        head = state.pop("lm_head.weight", None)
        if head is not None and "transformer.wte.weight" in state:
            wte = np.asarray(to_numpy(state["transformer.wte.weight"]))
            if tuple(head.shape) != wte.shape or not np.array_equal(to_numpy(head), wte):
                raise ValueError(
                    "state['lm_head.weight'] differs from state['transformer.wte.weight'], but "
                    "the GPT ties them (one array): give equal values or leave lm_head.weight out"
                )
        super().load_state_dict(state)
        return self

    def _position_idx(self, time: int, like: Any) -> Any:
        xp = namespace(like)
        key = (time, xp.__name__, str(array_api_compat.device(like)))
        if key not in self._positions:
            self._positions[key] = xp.arange(
                time, dtype=xp.int64, device=array_api_compat.device(like)
            )
        return self._positions[key]

    def forward(self, idx: Any) -> Any:
        """Return the logits (batch, time, vocab_size) for token indices ``idx`` (batch,
        time), time at most ``block_size``."""
        check_indices(idx, "idx", self.vocab_size, f"a GPT of vocab_size {self.vocab_size}")
        wte = self.transformer["wte"].params["weight"]
        namespace(idx, wte)  # refuses a mix of array libraries
        if idx.ndim < 1 or not 1 <= idx.shape[-1] <= self.block_size:
            raise ValueError(
                f"idx must be (batch, time) with 1 <= time <= block_size ({self.block_size}), "
                f"got shape {tuple(idx.shape)}"
            )
        return self.forward_unchecked(idx)

    def forward_unchecked(self, idx: Any) -> Any:
        """:meth:`forward` without checking ``idx``."""
        t = self.transformer
        pos = t["wpe"].forward_unchecked(self._position_idx(idx.shape[-1], idx))  # T,C
        x = t["wte"].forward_unchecked(idx) + pos  # B,T,C
        for block in self._blocks:
            x = block.forward_unchecked(x)
        self._y = self.lm_head.forward_unchecked(t["ln_f"].forward_unchecked(x))  # B,T,V
        return self._y

    def backward(self, dlogits: Any) -> None:
        """Overwrite every gradient from dL/dlogits (batch, time, vocab_size); return None."""
        check_upstream(dlogits, self._y, self)
        return self.backward_unchecked(dlogits)

    def backward_unchecked(self, dlogits: Any, input_grad: bool = True) -> None:
        """:meth:`backward` without checking ``dlogits``."""
        xp, t = namespace(dlogits), self.transformer
        dx = t["ln_f"].backward_unchecked(self.lm_head.backward_unchecked(dlogits))
        for block in reversed(self._blocks):
            dx = block.backward_unchecked(dx)
        t["wte"].backward_unchecked(dx)
        # the positions' rows are added to every sequence of the batch: their gradient sums it
        t["wpe"].backward_unchecked(xp.sum(xp.reshape(dx, (-1, *dx.shape[-2:])), axis=0))
        return None

    def generate(
        self,
        idx: Any,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        rng: Any = None,
    ) -> Any:
        """Extend ``idx`` (batch, time) by ``max_new_tokens`` tokens, each drawn from the
        softmax of the last position's logits / ``temperature`` (over the ``top_k`` largest
        only, if given), the context cropped to the last ``block_size`` tokens.

        Examples
        --------
        >>> import numpy as np
        >>> from handgrad.models import GPT
        >>> model = GPT(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4, rng=0)
        >>> model.generate(np.array([[0, 1]]), 6, rng=0).shape
        (1, 8)
        """
        max_new_tokens = check_positive_int(max_new_tokens, "max_new_tokens")
        if not (isinstance(temperature, int | float) and temperature > 0):
            raise ValueError(f"temperature must be a number greater than 0, got {temperature!r}")
        if top_k is not None:
            top_k = min(check_positive_int(top_k, "top_k"), self.vocab_size)
        gen, xp = make_rng(rng), namespace(idx)
        tokens = np.array(to_numpy(idx), dtype=np.int64)
        if tokens.ndim != 2:
            raise ValueError(f"idx must be (batch, time), got shape {tuple(idx.shape)}")
        device = array_api_compat.device(idx)
        for _ in range(max_new_tokens):
            context = convert(tokens[:, -self.block_size :], xp, device=device)
            logits = np.array(to_numpy(self.forward(context)[:, -1, :]), dtype=np.float64)
            logits = logits / temperature
            if top_k is not None:
                kth = np.sort(logits, axis=-1)[:, -top_k][:, None]
                logits = np.where(logits < kth, -np.inf, logits)
            p = np.exp(logits - logits.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            drawn = [gen.choice(self.vocab_size, p=row) for row in p]
            tokens = np.concatenate([tokens, np.array(drawn, dtype=np.int64)[:, None]], axis=1)
        return convert(tokens, xp, device=device)
