"""The ``handgrad`` command line: the parser (its choices come from the library) and what
each command does."""

from handgrad.cli.main import main

__all__ = ["main"]
