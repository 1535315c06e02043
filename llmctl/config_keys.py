"""Every config key with its type, default, current value and doc: what `llmctl config show` lists.

    cfg = load_config("examples/configs/124m.yaml", ["--optim.lr=3e-4"])
    for k in describe(cfg, ["optim"]):
        k.key, k.type, k.default, k.value, k.doc     # "optim.lr", "float", 0.001, 0.0003, "Peak learning rate ..."

Generic over the dataclasses: sections are the fields of the root `Config`, keys the fields of each section,
and each key's doc is the string literal written under the field in the source (read with `ast`, since
Python keeps no attribute docstrings at run time). A section or field added to `llmctl/config.py` shows up
here with nothing else to change.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import sys
import types
import typing
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from llmctl.errors import LlmctlError


@dataclass(frozen=True)
class KeyInfo:
    """One config key as a run would use it."""

    key: str
    """Dotted name, as overrides write it: `optim.lr`."""
    section: str
    """The section it belongs to: `optim`."""
    type: str
    """The field's type as written in llmctl/config.py (`int | None`; a closed choice as `adamw|muon`)."""
    default: Any
    """The dataclass default (before any preset, file or override)."""
    value: Any
    """The resolved value."""
    doc: str
    """The field's docstring on one line."""

    @property
    def changed(self) -> bool:
        """True when the file, a preset or an override moved it from the default."""
        return self.value != self.default


def _one_line(text: str) -> str:
    return " ".join(text.split())


@lru_cache(maxsize=8)
def _docs_in_file(path: str) -> dict[str, dict[str, str]]:
    """{class name: {field name: docstring}} for every class in a source file."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found: dict[str, dict[str, str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        body = node.body
        for stmt, after in zip(body, body[1:], strict=False):  # pairs: a field and what follows it
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = _one_line(after.value.value)
        found[node.name] = docs
    return found


def field_docs(cls: type) -> dict[str, str]:
    """{field name: its one-line docstring} of a dataclass; fields without one are left out."""
    path = getattr(sys.modules.get(cls.__module__), "__file__", None)
    if not path:
        return {}
    return _docs_in_file(path).get(cls.__name__, {})


def type_text(annotation: Any) -> str:
    """`int | None`, `list[str]`, `adamw|muon`: a field's type the way a reader of config.py would write it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    if annotation is Any:
        return "Any"
    return getattr(annotation, "__name__", str(annotation))


def sections(root: type) -> dict[str, type]:
    """{section name: its dataclass}, in the order the root config declares them."""
    hints = typing.get_type_hints(root)
    return {f.name: hints[f.name] for f in dataclasses.fields(root)}


def section_doc(cls: type) -> str:
    """The first paragraph of a section's docstring, on one line."""
    return _one_line((cls.__doc__ or "").strip().split("\n\n")[0])


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def check_sections(root: type, wanted: list[str]) -> list[str]:
    """`wanted`, checked against the root config's sections (all of them when empty)."""
    known = list(sections(root))
    for name in wanted:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise LlmctlError(f"unknown config section '{name}'", f"{hint}sections: {', '.join(known)}")
    return list(dict.fromkeys(wanted)) or known


def describe(cfg: Any, wanted: list[str] | None = None) -> list[KeyInfo]:
    """Every key of the chosen sections of a resolved config (all sections when `wanted` is empty), in
    declaration order; an unknown section name raises LlmctlError naming the closest one."""
    root = type(cfg)
    keys: list[KeyInfo] = []
    for name in check_sections(root, list(wanted or [])):
        value = getattr(cfg, name)
        cls = type(value)
        hints = typing.get_type_hints(cls)
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            keys.append(
                KeyInfo(
                    key=f"{name}.{f.name}",
                    section=name,
                    type=type_text(hints[f.name]),
                    default=_default(f),
                    value=getattr(value, f.name),
                    doc=docs.get(f.name, ""),
                )
            )
    return keys
