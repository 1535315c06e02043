"""Command-line values converted without importing pydantic, where the conversion is plain.

Typer 0.29 converts every value, defaults included, through a pydantic TypeAdapter, and importing
pydantic alone takes 0.12-0.19 s here: most of a small `tokenize`, `count` or `budget` run. The plain
cases (text, a decimal integer, a decimal number, a path, a flag) are converted here to exactly what
Typer would return. Anything else (a malformed number, an unreadable path, a bounded or custom-parsed
option) goes to Typer's own converter, so values and error messages stay Typer's. Against a Typer
whose internals differ from what this expects, nothing is changed: Typer converts everything, slower.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:  # Typer >= 0.29: per-parameter runtime converters, built lazily
    from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param
except ImportError:  # older or newer Typer: leave conversion to it
    RuntimeParam = None  # type: ignore[assignment,misc]

_DELEGATE = object()
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
_LEAVES = (str, int, float, bool, Path)


def _leaf(annotation: Any, value: Any) -> Any:
    """`value` converted to `annotation` as Typer would, or _DELEGATE when that is not plain."""
    if annotation is str:
        return value if isinstance(value, str) else _DELEGATE
    if annotation is bool:
        return value if isinstance(value, bool) else _DELEGATE
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return int(value) if isinstance(value, str) and _INT.match(value) else _DELEGATE
    if annotation is float:
        if isinstance(value, float):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return float(value) if isinstance(value, str) and _FLOAT.match(value) else _DELEGATE
    if annotation is Path:
        if not isinstance(value, (str, Path)) or value == "":
            return _DELEGATE
        # Typer refuses an existing path this process cannot read: let it say so in its own words.
        if os.path.exists(value) and not os.access(value, os.R_OK):
            return _DELEGATE
        return Path(value)
    return _DELEGATE


def _plain(annotation: Any, value: Any) -> Any:
    if typing.get_origin(annotation) is list:
        if not isinstance(value, (list, tuple)):
            return _DELEGATE
        (item,) = typing.get_args(annotation)
        items = [_leaf(item, v) for v in value]
        return _DELEGATE if any(v is _DELEGATE for v in items) else items
    return _leaf(annotation, value)


if RuntimeParam is not None:

    @dataclass(frozen=True)
    class _PlainRuntimeParam(RuntimeParam):  # type: ignore[misc,valid-type]
        """Converts plain values itself; hands every other value to the converter Typer would build."""

        descriptor: TypeDescriptor

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            out = _plain(self.annotation, value)
            if out is _DELEGATE:
                return build_runtime_param(self.descriptor)._coerce_value(value, param=param, ctx=ctx)
            return out


def _convertible(descriptor: Any) -> bool:
    """Only unbounded, unparsed text, numbers, flags and paths; never files, choices or path checks."""
    info = descriptor.parameter_info
    annotation = descriptor.annotation
    if typing.get_origin(annotation) is list:
        (annotation,) = typing.get_args(annotation)
    if annotation not in _LEAVES or descriptor.file_annotation is not None:
        return False
    if descriptor.choices is not None:
        return False
    if info.parser is not None or info.min is not None or info.max is not None or info.clamp:
        return False
    path_checks = (info.exists, info.resolve_path, info.allow_dash, info.writable, info.path_type)
    return not any(path_checks) and info.file_okay and info.dir_okay and info.readable


def plain_coercion(param: Any) -> None:
    """Give `param` (a Typer parameter) the plain converter when its type allows; else leave it as is."""
    if RuntimeParam is None or getattr(param, "_runtime_param", "absent") is not None:
        return
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None or not _convertible(descriptor):
        return
    try:
        plain = _PlainRuntimeParam(
            parameter_info=descriptor.parameter_info, annotation=descriptor.annotation, descriptor=descriptor
        )
    except TypeError:  # a Typer whose converter base class asks for more: leave conversion to it
        return
    param._runtime_param = plain


def plain_coercion_everywhere(command: Any, ctx: Any) -> None:
    """plain_coercion for every parameter of `command` and its subcommands, help options included
    (click makes those on first use, from the help option names `ctx` carries down to subcommands)."""
    for param in command.get_params(ctx):
        plain_coercion(param)
    for sub in getattr(command, "commands", {}).values():
        plain_coercion_everywhere(sub, ctx)
