"""The data of a training run, checked once and moved once to the model's library, dtype
and device: features (dense or SciPy sparse), class indices or floating-point targets,
sample weights."""

from __future__ import annotations

from typing import Any

from handgrad.core.arrays import convert, namespace
from handgrad.core.validation import check_array
from handgrad.nn.containers import Sequential

__all__ = ["check_data", "is_sparse", "is_targets", "moved", "on_model", "sample_weights"]


def on_model(model: Sequential, X: Any, y: Any, keep_sparse: bool = False) -> tuple[Any, Any]:
    """X and y moved once to the library, dtype and device of the model's parameters (not
    copied when they are there already); y as int64 class indices, or as floating-point
    targets of the weights' dtype, (examples, outputs). A SciPy sparse X stays sparse (rows
    are made dense one batch at a time) when ``keep_sparse`` and the model is NumPy's."""
    weight = next(iter(model.params.values()))
    xp = namespace(weight)
    if is_sparse(X):
        if keep_sparse and xp.__name__.endswith("numpy"):
            X = X.tocsr().astype(weight.dtype, copy=False)
        else:
            X = X.toarray()
    if not is_sparse(X):
        X = moved(X, xp, weight.dtype, weight.device)
    if is_targets(y):
        y = moved(y, xp, weight.dtype, weight.device)
        return X, (xp.reshape(y, (-1, 1)) if y.ndim == 1 else y)
    return X, moved(y, xp, xp.int64, weight.device)


def moved(a: Any, xp: Any, dtype: Any, device: Any) -> Any:
    """``a`` in namespace ``xp`` with ``dtype`` on ``device``: itself if it is there."""
    try:
        if namespace(a) is xp and a.dtype == dtype and a.device == device:
            return a
    except TypeError:  # a list, or another library's array
        pass
    return convert(a, xp, dtype=dtype, device=device)


def is_sparse(X: Any) -> bool:
    return type(X).__module__.startswith("scipy.sparse")


def is_targets(y: Any) -> bool:
    """Whether ``y`` holds floating-point targets (regression, multi-label) rather than
    class indices."""
    return hasattr(y, "dtype") and namespace(y).isdtype(y.dtype, "real floating")


def check_data(X: Any, y: Any, prefix: str) -> None:
    kind = getattr(getattr(y, "dtype", None), "kind", "")
    if kind in ("U", "S", "O", "V"):
        raise TypeError(
            f"{prefix}y must hold integer class indices, got labels of dtype {y.dtype}; turn "
            "them into indices first, e.g. classes, y = np.unique(labels, return_inverse=True)"
        )
    if is_sparse(X):
        if len(X.shape) != 2:
            raise ValueError(f"{prefix}X must be 2-D (examples, features), got {X.shape}")
    else:
        check_array(X, f"{prefix}X", ndim=2, layout="(examples, features)")
    if hasattr(y, "dtype") and is_targets(y):
        if y.ndim not in (1, 2):
            raise ValueError(
                f"{prefix}y of floating-point targets must be (examples,) or (examples, "
                f"outputs), got shape {tuple(y.shape)}"
            )
        check_array(y, f"{prefix}y")
    else:
        check_array(y, f"{prefix}y", ndim=1, layout="(examples,) of class indices", floating=False)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"{prefix}X has {X.shape[0]} rows but {prefix}y has {y.shape[0]} labels")
    if X.shape[0] == 0:
        raise ValueError(
            f"{prefix}X must hold at least one row (example), got shape {tuple(X.shape)}"
        )


def sample_weights(sample_weight: Any, model: Sequential, y: Any) -> Any:
    """The weights as an array of the model's library and dtype, checked against y's rows."""
    param = next(iter(model.params.values()))
    weight = moved(sample_weight, namespace(param), param.dtype, param.device)
    check_array(weight, "sample_weight", ndim=1, layout="(examples,)")
    if weight.shape[0] != y.shape[0]:
        raise ValueError(f"sample_weight has {weight.shape[0]} weights but y has {y.shape[0]} rows")
    return weight
