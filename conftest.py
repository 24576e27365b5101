"""Modules whose examples need an optional extra are not collected as doctests without it
(the test extra installs them all)."""

import importlib.util

collect_ignore = []
if importlib.util.find_spec("jax") is None:
    collect_ignore += [
        "src/handgrad/jax.py",
        "src/handgrad/interop/jax_check.py",
        "src/handgrad/interop/jax_evaluate.py",
        "src/handgrad/interop/jax_point.py",
    ]
