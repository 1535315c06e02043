"""The root command: --version, --help, error lines and exit codes, and no heavy imports where none belong.

Exit codes and stderr are checked in a subprocess (`python -m llmctl`), the way a shell sees them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl import __version__

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "tokenizers", "pyarrow", "matplotlib", "pydantic")

# Commands that must start without torch, tokenizers, pyarrow or matplotlib (docs/ARCHITECTURE.md), nor
# pydantic (Typer converts through it; llmctl.cli._coerce avoids it for plain values).
# Helpers adding such a command append it here.
NO_TORCH_COMMANDS: list[list[str]] = [
    ["--help"],
    [
        "flops",
        "estimate",
        "--model",
        "124m",
        "--seq-len",
        "1024",
        "--batch-size",
        "8",
        "--gpu",
        "H100",
        "--mfu",
        "0.4",
    ],
    ["flops", "estimate", "--model", "examples/configs/124m.yaml", "--json"],
    ["budget", "--gpu", "L4", "--hours", "24", "--tokens-per-param", "100"],
    ["budget", "--model", "124m", "--tokens", "2.5B", "--gpu", "A100-80GB", "--json"],
    ["budget", "--list-gpus"],
    ["tokenize", "--help"],
    ["count", "--help"],
    ["inspect", "--help"],
    ["config", "show", "-c", "examples/configs/124m.yaml", "--section", "optim", "--optim.lr=3e-4"],
    ["config", "show", "--model=tiny", "--json"],
]


def llmctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("LLMCTL_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version() -> None:
    result = llmctl("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"llmctl {__version__}"


def test_help_lists_the_planning_commands() -> None:
    result = llmctl("--help")
    assert result.returncode == 0
    assert "flops" in result.stdout and "budget" in result.stdout


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (["flops", "estimate", "--model", "125m"], "unknown model preset '125m'", "did you mean '124m'?"),
        (["budget", "--gpu", "L4", "--hours", "-2"], "--hours must be positive, got -2", "--hours 24"),
        (
            ["flops", "estimate", "--dim", "768", "--layers", "12", "--heads", "5", "--vocab-size", "50304"],
            "model.n_heads=5 does not divide model.dim=768",
            "choose n_heads among",
        ),
        (["budget", "--gpu", "Z100", "--hours", "1"], "unknown GPU 'Z100'", "known GPUs: H200-NVL, H200"),
        (
            ["flops", "estimate", "--model", "124m", "--kv-heads", "5"],
            "model.n_kv_heads=5 does not divide model.n_heads=12",
            "choose n_kv_heads among",
        ),
        (["budget", "--gpu", "L4"], "nothing to plan", "--hours 24"),
    ],
)
def test_bad_input_exits_2_with_error_and_hint(args: list[str], error: str, hint: str) -> None:
    result = llmctl(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {error}" or lines[0].startswith(f"error: {error}")
    assert lines[1].startswith("hint: ") and hint in lines[1]
    assert len(lines) == 2  # no traceback
    assert result.stdout == ""


def test_unknown_gpu_hint_lists_every_known_gpu() -> None:
    from llmctl.plan.hardware import GPUS

    result = llmctl("budget", "--gpu", "Z100", "--hours", "1")
    assert all(g.name in result.stderr for g in GPUS)


@pytest.mark.parametrize("args", NO_TORCH_COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_no_heavy_imports(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from llmctl.cli.app import main\n"
        f"sys.argv = ['llmctl', *{args!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    status = exc.code\n"
        "else:\n"
        "    status = 0\n"
        f"print(json.dumps({{'status': status, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] in (0, None), result.stderr
    assert report["heavy"] == []
