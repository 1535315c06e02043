"""llmctl.cli._coerce: plain values converted without pydantic, to exactly what Typer itself returns."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from llmctl.cli import _coerce
from llmctl.cli.app import app

ROOT = Path(__file__).resolve().parents[1]

VALUES: list[Any] = [
    "0",
    "7",
    "-3",
    "+5",
    "007",
    "1_000",
    " 12",
    "12 ",
    "1e3",
    "1.5",
    ".5",
    "5.",
    "-2.5e-3",
    "inf",
    "nan",
    "abc",
    "",
    "~/x",
    "a#b",
    "2024-01-01",
    "yes",
    "true",
    7,
    2.0,
    True,
    False,
    None,
]


def _params_by_type() -> dict[str, Any]:
    """One real llmctl parameter per annotation the plain converter takes, with its click context."""
    root = typer.main.get_command(app)
    ctx = root.make_context("llmctl", ["--help"], resilient_parsing=True)
    found: dict[str, Any] = {}

    def walk(command: Any) -> None:
        for param in command.get_params(ctx):
            desc = param.type_descriptor
            if _coerce._convertible(desc):
                found.setdefault(repr(desc.annotation) + ("*" if param.multiple else ""), param)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(root)
    return {"ctx": ctx, **found}


PARAMS = _params_by_type()


def _typer_result(param: Any, ctx: Any, value: Any) -> tuple[str, Any]:
    from typer._coercion import build_runtime_param

    try:
        return "ok", build_runtime_param(param.type_descriptor).coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as exc:
        return "error", exc.message


def _plain_result(param: Any, ctx: Any, value: Any) -> tuple[str, Any]:
    desc = param.type_descriptor
    plain = _coerce._PlainRuntimeParam(
        parameter_info=desc.parameter_info, annotation=desc.annotation, descriptor=desc
    )
    try:
        return "ok", plain.coerce(value, param=param, ctx=ctx)
    except typer.BadParameter as exc:
        return "error", exc.message


def test_every_annotation_llmctl_uses_is_covered() -> None:
    kinds = set(PARAMS) - {"ctx"}
    assert {"<class 'str'>", "<class 'int'>", "<class 'float'>", "<class 'bool'>"} <= kinds
    assert "<class 'pathlib.Path'>" in kinds
    assert any(k.startswith("list[") for k in kinds)


@pytest.mark.parametrize("kind", sorted(set(PARAMS) - {"ctx"}))
def test_same_value_or_same_error_as_typer(kind: str) -> None:
    param, ctx = PARAMS[kind], PARAMS["ctx"]
    values = VALUES if not kind.startswith("list[") else [tuple(), ("a", "b"), ("1", "x#y"), ("~",)]
    for value in values:
        if param.multiple and isinstance(value, str):
            continue  # click never hands a multiple option a bare string
        expected = _typer_result(param, ctx, value)
        got = _plain_result(param, ctx, value)
        # repr: nan equals nan, and 7 is not 7.0
        assert repr(got) == repr(expected) and type(got[1]) is type(expected[1]), (kind, value, got, expected)


def test_plain_values_are_converted_here_and_others_by_typer() -> None:
    assert _coerce._plain(int, "42") == 42
    assert _coerce._plain(float, "0.5") == 0.5
    assert _coerce._plain(Path, "a#b") == Path("a#b")
    assert _coerce._plain(list[str], ("a", "b")) == ["a", "b"]
    # Not plain: Typer (pydantic) decides, in its own words.
    assert _coerce._plain(int, " 12") is _coerce._DELEGATE
    assert _coerce._plain(int, "1.0") is _coerce._DELEGATE
    assert _coerce._plain(bool, "yes") is _coerce._DELEGATE


def test_an_unreadable_path_is_still_refused_by_typer(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    secret.chmod(0)
    param, ctx = PARAMS["<class 'pathlib.Path'>"], PARAMS["ctx"]
    assert _plain_result(param, ctx, str(secret)) == _typer_result(param, ctx, str(secret))
    assert _plain_result(param, ctx, str(secret))[0] == "error"


def test_a_bad_number_gets_typers_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llmctl", "flops", "estimate", "--model", "124m", "--seq-len", "abc"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 2
    assert "Invalid value for '--seq-len'" in result.stderr
    assert "valid integer" in result.stderr


def test_an_unreadable_path_goes_to_typer_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # root reads every file, so the check above cannot fail for it; here os.access says no.
    existing = tmp_path / "data"
    existing.mkdir()
    monkeypatch.setattr(_coerce.os, "access", lambda path, mode: False)
    assert _coerce._plain(Path, str(existing)) is _coerce._DELEGATE
    assert _coerce._plain(Path, str(tmp_path / "not-yet")) == tmp_path / "not-yet"  # an output to be made
