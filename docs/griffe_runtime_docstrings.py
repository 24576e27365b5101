"""Griffe extension for the reference pages, two fixes to what griffe reads:

- A module-level function whose module adds to its docstring after the definition
  (``handgrad.gradcheck`` appends the options that ``check_gradients`` and
  ``check_layer`` share) is documented with the docstring it has at run time, its
  Examples section kept last and the added Parameters merged into its own. Griffe reads
  the source, and would miss the added part.
- A Parameters entry that names several parameters (``backend, dtype, device``) is split
  into one entry per name, so that each shows its own default and type from the
  signature (griffe gives them all the first one's).
- A paragraph that ends with reStructuredText's ``::`` before an indented block ends with
  ``:``, as Sphinx shows it; the indented block is shown as code either way.
- An attribute without a docstring that ``__init__`` sets to the parameter of the same
  name (``self.alpha = alpha``, as scikit-learn's estimators must) is left out: the
  class's Parameters section documents it, and an entry reading ``alpha = alpha`` says
  nothing."""

from __future__ import annotations

import importlib
import inspect
import re

import griffe

SECTION = re.compile(r"^(\w[\w ]*)\n-{3,}$", flags=re.MULTILINE)
LITERAL = re.compile(r"(?<=\S)::$", flags=re.MULTILINE)
GROUP = re.compile(r"^([A-Za-z_]\w*(?:, [A-Za-z_]\w*)+)( : .*)?$")


def _examples_last(doc: str) -> str:
    starts = [(m.start(), m[1]) for m in SECTION.finditer(doc)]
    for i, (start, name) in enumerate(starts):
        if name == "Examples" and i + 1 < len(starts):
            end = starts[i + 1][0]
            return doc[:start] + doc[end:].rstrip() + "\n\n" + doc[start:end].rstrip()
    return doc


def _sections_merged(doc: str) -> str:
    """A section named twice (Parameters, then more Parameters added at run time) as one,
    where it first appears."""
    starts = [(m.start(), m[1]) for m in SECTION.finditer(doc)]
    if len({name for _, name in starts}) == len(starts):
        return doc
    bounds = [start for start, _ in starts] + [len(doc)]
    bodies: dict[str, list[str]] = {}
    for (start, name), end in zip(starts, bounds[1:], strict=True):
        body = doc[start:end].rstrip()
        if name in bodies:
            bodies[name].append(body.split("\n", 2)[2])  # without its heading
        else:
            bodies[name] = [body]
    return doc[: starts[0][0]] + "\n\n".join("\n".join(parts) for parts in bodies.values())


def _one_name_per_entry(doc: str) -> str:
    lines, out, section, i = doc.splitlines(), [], None, 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1]) and line.strip():
            section = line.strip()
        group = GROUP.match(line) if section in ("Parameters", "Other Parameters") else None
        if not group:
            out.append(line)
            i += 1
            continue
        end = i + 1
        while end < len(lines) and (not lines[end] or lines[end].startswith(" ")):
            end += 1
        body = lines[i + 1 : end]
        for name in group[1].split(", "):
            out += [name + (group[2] or ""), *body]
        i = end
    return "\n".join(out)


def _echoes_a_parameter(member: griffe.Object) -> bool:
    return (
        member.is_attribute
        and member.docstring is None
        and "instance-attribute" in member.labels
        and str(member.value) == member.name
    )


class RuntimeDocstrings(griffe.Extension):
    def on_class_members(self, *, cls: griffe.Class, **kwargs) -> None:
        for name, member in list(cls.members.items()):
            if not member.is_alias and _echoes_a_parameter(member):
                del cls.members[name]

    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = LITERAL.sub(":", obj.docstring.value)
        if obj.docstring is not None and ", " in obj.docstring.value:
            obj.docstring.value = _one_name_per_entry(obj.docstring.value)

    def on_function(self, *, func: griffe.Function, loader: griffe.GriffeLoader, **kwargs) -> None:
        if func.docstring is None or func.parent is not func.module:
            return
        try:
            live = getattr(importlib.import_module(func.module.path), func.name, None)
        except ImportError:
            return
        doc = inspect.cleandoc(getattr(live, "__doc__", None) or "")
        if doc and doc != inspect.cleandoc(func.docstring.value):
            doc = _sections_merged(_examples_last(LITERAL.sub(":", doc)))
            func.docstring.value = _one_name_per_entry(doc)
