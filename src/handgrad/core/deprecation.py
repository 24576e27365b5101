"""Names that changed: the old name still works, with a DeprecationWarning that gives the new
one."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["renamed"]


def renamed(module: str, names: Mapping[str, str], scope: Mapping[str, Any]) -> Callable:
    """A module ``__getattr__`` that answers each old name in ``names`` with the object the
    new name has in ``scope`` (the module's globals), warning once per use.

    Examples
    --------
    >>> import warnings
    >>> from handgrad.core.deprecation import renamed
    >>> lookup = renamed("mymodule", {"colour": "color"}, {"color": "red"})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     print(lookup("colour"), str(caught[0].message))
    red mymodule.colour is deprecated: use mymodule.color
    """

    def lookup(name: str) -> Any:
        if name in names:
            warnings.warn(
                f"{module}.{name} is deprecated: use {module}.{names[name]}",
                DeprecationWarning,
                stacklevel=2,
            )
            return scope[names[name]]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return lookup
