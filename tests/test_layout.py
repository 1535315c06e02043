"""The house along the data flow: no import cycles between top-level parts, and the "never" rules.

Imports are read with `ast`, function-local ones included: a lazy import is still a dependency.
docs/ARCHITECTURE.md draws the same parts and arrows; keep the two in step when a part is added.
"""

from __future__ import annotations

import ast
import re
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


# -- the allowed arrows of docs/ARCHITECTURE.md section 2, and import cycles between files ----------------

DOC = PKG.parent / "docs" / "ARCHITECTURE.md"
ARROW = "──>"


def _doc_section(number: str) -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index(f"## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _names(text: str) -> list[str]:
    """'Infer, Tok, Telemetry (inference metrics)' -> ['Infer', 'Tok', 'Telemetry']."""
    return [n.strip() for n in re.sub(r"\([^)]*\)", "", text).split(",") if n.strip()]


def allowed_arrows(section: str | None = None) -> tuple[set[tuple[str, str]], list[tuple[str, str]]]:
    """(every allowed (importer, imported) pair, the explicit arrows) read from section 2's arrow block."""
    section = section if section is not None else _doc_section("2")
    block = section.split("Allowed dependencies", 1)[1].split("```")[1]
    parts = set(PARTS.values())
    allowed: set[tuple[str, str]] = set()
    explicit: list[tuple[str, str]] = []
    for line in block.strip().splitlines():
        left, right = line.split(ARROW)
        sources = parts if left.strip() == "every part" else set(_names(left))
        targets = CORE_PARTS if right.strip() == "every core part" else set(_names(right))
        unknown = (sources | targets) - parts
        assert not unknown, f"ARCHITECTURE.md section 2 names unknown parts {unknown} in: {line}"
        allowed |= {(a, b) for a in sources for b in targets if a != b}
        if left.strip() != "every part" and right.strip() != "every core part":
            explicit += [(a, b) for a in sources for b in targets]
    return allowed, explicit


def test_every_import_between_parts_is_an_allowed_arrow_of_the_doc() -> None:
    allowed, _ = allowed_arrows()
    edges = _edges()
    bad = [f"{a} -> {b}: {edges[(a, b)][0]}" for (a, b) in sorted(edges) if (a, b) not in allowed]
    assert not bad, (
        "imports ARCHITECTURE.md section 2 does not allow (add the arrow or remove the import):\n"
        + ("\n".join(bad))
    )


def test_every_arrow_of_the_doc_is_used() -> None:
    _, explicit = allowed_arrows()
    edges = _edges()
    unused = [f"{a} -> {b}" for a, b in explicit if (a, b) not in edges]
    assert not unused, "ARCHITECTURE.md section 2 draws arrows no import uses:\n" + "\n".join(unused)


def _module_files() -> dict[str, Path]:
    found = {}
    for path in PKG.rglob("*.py"):
        bits = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if bits[-1] == "__init__":
            bits = bits[:-1]
        found[".".join(bits)] = path
    return found


def file_graph() -> dict[str, set[str]]:
    """module -> the llmctl modules (files) it imports; `from pkg import mod` counts as importing mod."""
    files = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def file_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one file (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_no_import_cycle_between_any_two_files() -> None:
    cycles = file_cycles(file_graph())
    assert not cycles, "import cycles between files:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def engine_layers() -> dict[str, int]:
    """engine/ file stem -> its layer (0 = parts), from the table in ARCHITECTURE.md section 7."""
    order = {"parts": 0, "loop": 1, "set-up": 2, "objective": 3}
    layers = {}
    for row in re.findall(r"^\| (objective|set-up|loop|parts) \| (.+) \|$", _doc_section("7"), re.M):
        for stem in re.findall(r"`([a-z_]+)\.py`", row[1]):
            layers[stem] = order[row[0]]
    return layers


def test_engine_files_import_only_lower_layers() -> None:
    layers = engine_layers()
    stems = {p.stem for p in (PKG / "engine").glob("*.py")} - {"__init__"}
    assert stems == set(layers), (
        f"engine files missing from / extra in section 7's table: {stems ^ set(layers)}"
    )
    bad = []
    for name, imported in file_graph().items():
        if not name.startswith("llmctl.engine.") or name == "llmctl.engine":
            continue
        mine = layers[name.rsplit(".", 1)[1]]
        for target in imported:
            if target.startswith("llmctl.engine."):
                theirs = layers[target.rsplit(".", 1)[1]]
                if theirs > mine or (theirs == mine and mine != 0):
                    bad.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not bad, "engine/ imports against section 7's layers:\n" + "\n".join(sorted(bad))


def test_the_file_rules_can_fail(tmp_path: Path, monkeypatch) -> None:
    # A planted file circle (one side lazy) and an objective that imports a sibling are both caught.
    fake = tmp_path / "llmctl"
    (fake / "engine").mkdir(parents=True)
    (fake / "tokens").mkdir()
    (fake / "tokens" / "a.py").write_text("def f():\n    from llmctl.tokens import b\n")
    (fake / "tokens" / "b.py").write_text("from llmctl.tokens.a import f\n")
    (fake / "engine" / "sft.py").write_text("from llmctl.engine.pretrain import x\n")
    (fake / "engine" / "pretrain.py").write_text("x = 1\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    graph = file_graph()
    assert file_cycles(graph) == [["llmctl.tokens.a", "llmctl.tokens.b"]]
    assert "llmctl.engine.pretrain" in graph["llmctl.engine.sft"]
    layers = {"sft": 3, "pretrain": 3}
    assert layers["sft"] == layers["pretrain"] != 0  # the same-layer rule test_engine_files_... applies
    # An import no arrow allows is reported: Raw -> Tokens is not drawn.
    allowed, _ = allowed_arrows("Allowed dependencies\n```\nTok ──> Raw\n```\n")
    assert ("Raw", "Tokens") not in allowed and ("Tok", "Raw") in allowed
