"""The modules of handgrad 0.1, before the subpackages: importing one still works, with a
DeprecationWarning that names where its contents live now. One table, nothing else."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

# old module -> the modules that hold its names now, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    "handgrad.backend": ("handgrad.core.arrays",),
    "handgrad.validation": ("handgrad.core.validation",),
    "handgrad.errors": ("handgrad.core.errors",),
    "handgrad.files": ("handgrad.core.files",),
    "handgrad.tables": ("handgrad.core.tables",),
    "handgrad.init": ("handgrad.nn.init", "handgrad.core.random"),
    "handgrad.layers": ("handgrad.nn.layers", "handgrad.nn.protocol"),
    "handgrad.losses": ("handgrad.nn.losses",),
    "handgrad.model": ("handgrad.nn.containers", "handgrad.nn.protocol"),
    "handgrad.presets": ("handgrad.models.mlp", "handgrad.app.seed_network"),
    "handgrad.finite_differences": ("handgrad.gradcheck.finite_differences",),
    "handgrad.gradcheck_report": ("handgrad.gradcheck.report", "handgrad.core.errors"),
    "handgrad.autograd": ("handgrad.interop.oracle",),
    "handgrad.optim": ("handgrad.training.optim", "handgrad.training.schedules"),
    "handgrad.train": ("handgrad.training.fit",),
    "handgrad.checkpoint": ("handgrad.training.checkpoint",),
    "handgrad.classifier": ("handgrad.app.classifier", "handgrad.app.trainer"),
    "handgrad.io": ("handgrad.app.model_files", "handgrad.core.archives"),
    "handgrad.metrics": ("handgrad.app.metrics",),
    "handgrad.plots": ("handgrad.app.plots",),
    "handgrad.commands": ("handgrad.cli.commands",),
}


class _MovedModule(types.ModuleType):
    """Stands for an old module: each name is looked up where it lives now."""

    def __init__(self, name: str, homes: tuple[str, ...]) -> None:
        super().__init__(name, f"Moved in handgrad 0.2 to {', '.join(homes)}.")
        self.__homes = homes

    def __getattr__(self, attribute: str) -> Any:
        for home in self.__homes:
            module = importlib.import_module(home)
            if hasattr(module, attribute):
                return getattr(module, attribute)
        raise AttributeError(f"module {self.__name__!r} has no attribute {attribute!r}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> types.ModuleType:
        homes = MOVED[spec.name]
        warnings.warn(
            f"{spec.name} is deprecated: import from {' or '.join(homes)} (or from handgrad)",
            DeprecationWarning,
            stacklevel=4,
        )
        return _MovedModule(spec.name, homes)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def install() -> None:
    """Let the old module names be imported."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
