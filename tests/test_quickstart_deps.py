"""README's first set-up command installs only llmctl's base dependencies (`pip install -e .`) and runs the
quickstart: nothing the quickstart's commands import, at the top or inside a function, may need a package that
only the `dev` extra brings (transformers, lm_eval, trl, mlflow, wandb, pytest, ruff)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "llmctl"
# The commands examples/quickstart.sh runs.
QUICKSTART = ["data", "tokenizer", "tokenize", "count", "flops", "pretrain", "generate", "plot"]
# Experiment trackers load only with --telemetry.wandb / --telemetry.mlflow, and QLoRA's 4-bit base only with
# --lora.quantize nf4, which need their own extras.
OPT_IN = {"llmctl.telemetry.wandb_sink", "llmctl.telemetry.mlflow_sink", "llmctl.model.quant"}


def _names(extra: str) -> set[str]:
    """Import names of pyproject's base dependencies (extra '') or of one optional extra."""
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(
        r"^dependencies = \[(.*?)\]" if not extra else rf"^{extra} = \[(.*?)\]$", text, re.S | re.M
    )
    assert block, extra
    found = re.findall(r'"([A-Za-z0-9_.-]+)', block.group(1))
    return {n.lower().replace("-", "_") for n in found}


def _module_file(name: str) -> Path | None:
    path = ROOT / Path(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(name: str) -> set[str]:
    """Every module `name` imports, function-local imports included."""
    tree = ast.parse(_module_file(name).read_text())  # type: ignore[union-attr]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {
                f"{node.module}.{a.name}" for a in node.names if _module_file(f"{node.module}.{a.name}")
            }
    return found


def test_the_quickstart_needs_no_dev_only_package() -> None:
    dev_only = _names("dev") - _names("")
    assert {"transformers", "lm_eval", "trl", "mlflow", "wandb"} <= dev_only
    todo = [f"llmctl.cli.{c}" for c in QUICKSTART]
    seen: set[str] = set()
    offenders: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen or name in OPT_IN or _module_file(name) is None:
            continue
        seen.add(name)
        for imported in _imports(name):
            if imported.split(".")[0] == "llmctl":
                todo.append(imported)
            elif imported.split(".")[0].lower() in dev_only:
                offenders.append(f"{name} imports {imported}")
    assert len(seen) > 40  # the walk reached the engine, the model, telemetry and the tokenizer
    assert not offenders, offenders
