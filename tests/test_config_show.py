"""`llmctl config show`: every key of the resolved config with its type, default, value and doc; the
pointers to it from the training commands' --help; and a top-level --help that cuts no description."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli.app import _COMMANDS, app
from llmctl.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG_124M = str(ROOT / "examples" / "configs" / "124m.yaml")


def _run(*args: str, columns: int | None = None) -> tuple[int, str, str]:
    env = {"NO_COLOR": "1", "LLMCTL_DEBUG": ""}
    if columns:
        env["COLUMNS"] = str(columns)
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def _shown(*args: str) -> dict[str, dict]:
    code, stdout, stderr = _run("config", "show", *args, "--json")
    assert code == 0, stderr
    return {k["key"]: k for k in json.loads(stdout)["keys"]}


def test_every_config_field_is_shown_with_its_type_default_and_doc() -> None:
    keys = _shown()
    expected = [
        f"{section.name}.{f.name}"
        for section in dataclasses.fields(Config)
        for f in dataclasses.fields(getattr(Config(), section.name))
    ]
    assert list(keys) == expected  # every key, in the order config.py declares them
    assert len(keys) > 90
    for name, k in keys.items():
        assert k["doc"].strip() and "\n" not in k["doc"], f"{name} has no one-line doc in llmctl/config.py"
        assert k["type"] and k["value"] == k["default"] and k["changed"] is False, name
    assert keys["optim.lr"]["type"] == "float" and keys["optim.lr"]["doc"].startswith("Peak learning rate")
    assert keys["model.n_kv_heads"]["type"] == "int | None" and keys["model.n_kv_heads"]["default"] is None
    assert keys["optim.schedule"]["type"] == "cosine|linear|constant|wsd"
    assert keys["train.sample_prompts"]["type"] == "list[str]"


def test_file_sections_and_overrides_resolve_as_a_training_run_would() -> None:
    keys = _shown("-c", CONFIG_124M, "--section", "optim", "--section", "model", "--optim.lr=3e-4")
    assert {k["section"] for k in keys.values()} == {"optim", "model"}
    cfg = load_config(CONFIG_124M, ["--optim.lr=3e-4"])
    assert keys["optim.lr"]["value"] == 3e-4 == cfg.optim.lr and keys["optim.lr"]["changed"] is True
    assert keys["model.preset"]["value"] == "124m" and keys["model.dim"]["value"] == cfg.model.dim == 768
    assert keys["model.dim"]["default"] == Config().model.dim
    assert {name for name, k in keys.items() if k["changed"]} == {
        name
        for name in keys
        if getattr(getattr(cfg, name.split(".")[0]), name.split(".")[1])
        != getattr(getattr(Config(), name.split(".")[0]), name.split(".")[1])
    }


def test_table_lists_the_section_with_values_docs_and_what_changed() -> None:
    code, stdout, stderr = _run("config", "show", "--section", "dpo", "--dpo.beta=0.25")
    assert code == 0, stderr
    assert "\x1b[" not in stdout  # no colours off a terminal
    assert stdout.startswith("dpo: Preference tuning")
    row = next(line for line in stdout.splitlines() if "dpo.beta " in line)
    assert [cell.strip() for cell in row.strip("│ ").split("│")][:4] == ["dpo.beta", "float", "0.1", "0.25"]
    assert "Strength of the pull towards the reference model" in stdout
    assert "optim.lr" not in stdout
    assert stdout.rstrip().endswith("5 keys; 1 differ from the default: dpo.beta")


def test_table_shows_brackets_as_text() -> None:
    code, stdout, stderr = _run("config", "show", "--section", "telemetry", "--section", "train")
    assert code == 0, stderr
    flat = " ".join(stdout.replace("│", " ").split())
    assert "--telemetry.wandb_tags=[baseline,124m]" in flat and 'pip install "llmctl[wandb]"' in flat
    assert "train.sample_prompts list[str]" in flat
    assert '["Once upon a time",' in flat


@pytest.mark.parametrize(
    ("args", "error", "hint"),
    [
        (["--section", "optm"], "unknown config section 'optm'", "did you mean 'optim'?"),
        (["--optim.lrr=1e-3"], "unknown config key 'optim.lrr'", "did you mean 'lr'?"),
        (["--optimm.lr=1e-3"], "unknown config section 'optimm' in --optimm.lr", "did you mean 'optim'?"),
        (["--sectoin", "optim"], "unknown option '--sectoin'", "did you mean '--section'?"),
        (["--model.n_heads=5"], "model.n_heads=5 does not divide model.dim=256", "choose n_heads among"),
        (["BAD_YAML"], "is not valid YAML: line 3, column 1: expected ',' or ']'", "at line 3"),
        (["YAML_TYPO"], "unknown config key 'train.setps'", "did you mean 'steps'?"),
        (["-c", "missing.yaml"], "config file not found: missing.yaml", "-c/--config"),
    ],
)
def test_bad_input_is_an_error_and_a_hint(tmp_path: Path, args: list[str], error: str, hint: str) -> None:
    files = {"BAD_YAML": "optim:\n  lr: [1e-3\n", "YAML_TYPO": "train:\n  setps: 5\n"}
    if args[0] in files:
        path = tmp_path / "run.yaml"
        path.write_text(files[args[0]])
        args = ["-c", str(path)]
    code, stdout, stderr = _run("config", "show", *args)
    assert code == 2 and stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and error in lines[0], stderr
    assert lines[1].startswith("hint: ") and hint in lines[1], stderr


@pytest.mark.parametrize("command", ["pretrain", "sft", "dpo"])
def test_training_help_ends_with_a_pointer_to_config_show(command: str) -> None:
    code, stdout, _ = _run(command, "--help")
    assert code == 0
    assert (
        stdout.strip().splitlines()[-1].strip() == "Every config key, its default and doc: llmctl config show"
    )


def test_top_level_help_gives_each_command_one_whole_line_at_80_columns() -> None:
    code, stdout, _ = _run("--help", columns=80)
    assert code == 0
    listing = stdout.split("Commands:\n", 1)[1].rstrip("\n").splitlines()
    assert [line.split()[0] for line in listing] == _COMMANDS  # one line per command: nothing wrapped
    assert all(line.startswith("  ") and len(line) <= 80 for line in listing)
    assert not [line for line in listing if "..." in line or "…" in line]
