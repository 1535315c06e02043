"""The house along the data flow: no import cycles between top-level parts, and the "never" rules.

Imports are read with `ast`, function-local ones included: a lazy import is still a dependency.
docs/ARCHITECTURE.md draws the same parts and arrows; keep the two in step when a part is added.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llmctl"

# Top-level parts: a package folder or a base module of llmctl, by the name the architecture uses.
PARTS = {
    "cli": "Face",
    "__main__": "Face",
    "__init__": "Ground",
    "errors": "Ground",
    "output": "Ground",
    "units": "Ground",
    "files": "Ground",
    "redact": "Ground",
    "config": "Config",
    "config_keys": "Config",
    "presets": "Config",
    "data_sources": "Config",
    "plan": "Plan",
    "raw": "Raw",
    "tokenizer": "Tok",
    "tokens": "Tokens",
    "model": "Model",
    "engine": "Engine",
    "infer": "Infer",
    "telemetry": "Telemetry",
    "export": "Export",
    "eval": "Eval",
}

# (importer, imported, why): dependencies that must never exist, directly.
NEVER = [
    ("Raw", "Tok", "raw text sits below the tokenizer"),
    ("Config", "Model", "config is pure data"),
    ("Plan", "Engine", "planning stays torch-free"),
    ("Plan", "Model", "planning stays torch-free"),
    ("Model", "Engine", "the model knows no loop"),
    ("Telemetry", "Engine", "sinks never reach into the loop"),
    ("Eval", "Engine", "evaluation needs no training loop"),
    ("Infer", "Engine", "inference opens checkpoints without the training loop"),
]
CORE_PARTS = set(PARTS.values()) - {"Face"}


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    key = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    return PARTS[key]


def _module_part(name: str) -> str | None:
    bits = name.split(".")
    if bits[0] != "llmctl" or len(bits) < 2:
        return None
    return PARTS.get(bits[1], "Ground")


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
            if node.module == "llmctl":
                found += [(f"llmctl.{a.name}", node.lineno) for a in node.names]
    return found


def _edges() -> dict[tuple[str, str], list[str]]:
    edges: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        src = _part(path)
        for name, line in _imports(path):
            dst = _module_part(name)
            if dst and dst != src:
                edges.setdefault((src, dst), []).append(
                    f"{path.relative_to(PKG.parent)}:{line} imports {name}"
                )
    return edges


def test_every_module_belongs_to_a_part() -> None:
    for path in PKG.rglob("*.py"):
        _part(path)  # KeyError names a folder the architecture does not know


def test_no_cycles_between_parts() -> None:
    edges = _edges()
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    cycles = [f"{a} <-> {b}: {edges[(a, b)][0]}" for (a, b) in edges if reaches(b, a)]
    assert not cycles, "import cycles between parts:\n" + "\n".join(sorted(cycles))


def test_never_rules() -> None:
    edges = _edges()
    broken = [f"{a} -> {b} ({why}): {edges[(a, b)][0]}" for a, b, why in NEVER if (a, b) in edges]
    assert not broken, "\n".join(broken)


def test_core_knows_no_command_line() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        if _part(path) not in CORE_PARTS:
            continue
        for name, line in _imports(path):
            if name.split(".")[0] in ("typer", "click") or name.startswith("llmctl.cli"):
                bad.append(f"{path.relative_to(PKG.parent)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_plan_imports_no_torch() -> None:
    bad = [
        f"{path.relative_to(PKG.parent)}:{line} imports {name}"
        for path in (PKG / "plan").rglob("*.py")
        for name, line in _imports(path)
        if name.split(".")[0] in ("torch", "numpy", "safetensors")
    ]
    assert not bad, "\n".join(bad)


def test_rules_fail_on_a_planted_cycle(tmp_path: Path, monkeypatch) -> None:
    # The checks above must be able to fail: plant a module whose import closes a cycle.
    fake = tmp_path / "llmctl"
    for part in ("model", "engine"):
        (fake / part).mkdir(parents=True)
    (fake / "model" / "m.py").write_text("def f():\n    from llmctl.engine.e import x\n")
    (fake / "engine" / "e.py").write_text("from llmctl.model.m import f\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    edges = _edges()
    assert ("Model", "Engine") in edges and ("Engine", "Model") in edges
