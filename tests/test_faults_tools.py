"""Faults and typed values of the tool commands: pretrain/sft flags, tokenizer train, export, generate,
flops estimate, budget, --help, and the CLI root's exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import make_token_dir, tiny_args
from typer.testing import CliRunner

from llmctl.cli.app import app


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


# --- typed CLI values (issue 13) -------------------------------------------------------------------


class _Captured(Exception):
    def __init__(self, cfg: Any) -> None:
        super().__init__("captured")
        self.cfg = cfg


@pytest.fixture
def captured_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run `pretrain`/`sft` as a user would, up to the core call, and return the Config it got."""
    import llmctl.engine.run as run_module
    import llmctl.engine.sft as sft_module

    def stop(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(cfg)

    monkeypatch.setattr(run_module, "run_training", stop)
    monkeypatch.setattr(sft_module, "run_sft", stop)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def config(command: str, *args: str) -> Any:
        extra = ["--init", "runs/base/checkpoints/latest"] if command == "sft" else []
        result = _invoke(command, *extra, *args)
        assert isinstance(result.exception, _Captured), result.output
        return result.exception.cfg

    return config


@pytest.mark.parametrize("command", ["pretrain", "sft"])
@pytest.mark.parametrize(("args", "field", "expected"), [
    (["--out", "2024-01-01"], "train.name", "2024-01-01"),
    (["--out", "runs/2024-01-01"], "train.out_dir", "runs"),
    (["--data", "yes"], "data.path", "yes"),
    (["--data", "no"], "data.path", "no"),
    (["--data", "~"], "data.path", "{home}"),
    (["--data", "~/x"], "data.path", "{home}/x"),
    (["--data", "tokens #1/py"], "data.path", "tokens #1/py"),
    (["--data", "a#b"], "data.path", "a#b"),
    (["--out", "~/runs/r #2"], "train.out_dir", "{home}/runs"),
    (["--out", "~/runs/r #2"], "train.name", "r #2"),
    (["--resume", "2024-01-01/checkpoints/step-000002"], "checkpoint.resume", "2024-01-01/checkpoints/step-000002"),
    (["--steps", "7", "--train.steps=3"], "train.steps", 7),
    (["--data.path=on"], "data.path", "on"),
    (["--train.name=2024-01-01"], "train.name", "2024-01-01"),
])
def test_flags_reach_the_config_typed(captured_config: Any, tmp_path: Path, command: str, args: list[str],
                                      field: str, expected: Any) -> None:
    cfg = captured_config(command, *args)
    section, key = field.split(".")
    if isinstance(expected, str):
        expected = expected.format(home=tmp_path / "home")
    assert getattr(getattr(cfg, section), key) == expected


def test_sft_init_path_with_tilde_and_hash(captured_config: Any, tmp_path: Path) -> None:
    cfg = captured_config("sft", "--init", "~/runs/base #1/checkpoints/latest")
    assert cfg.checkpoint.init == str(tmp_path / "home" / "runs" / "base #1" / "checkpoints" / "latest")


@pytest.fixture(scope="module")
def token_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("typed-data"))


def _pretrain_json(*args: str) -> dict[str, Any]:
    result = _invoke("pretrain", *args, "--json", *tiny_args(**{"train.steps": 2}))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_pretrain_runs_with_data_yes_into_out_named_by_a_date(token_source: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    shutil.copytree(token_source, tmp_path / "yes")
    monkeypatch.chdir(tmp_path)
    doc = _pretrain_json("--data", "yes", "--out", "2024-01-01")
    assert doc["status"] == "completed" and Path(doc["run_dir"]) == Path("2024-01-01")
    config = (tmp_path / "2024-01-01" / "config.yaml").read_text()
    assert "path: 'yes'" in config and "name: '2024-01-01'" in config


def test_pretrain_runs_from_a_home_path_with_a_hash(token_source: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(token_source, home / "tok #1")
    monkeypatch.setenv("HOME", str(home))
    doc = _pretrain_json("--data", "~/tok #1", "--out", "~/runs/a #b")
    assert doc["status"] == "completed" and doc["run_dir"] == str(home / "runs" / "a #b")
    assert (home / "runs" / "a #b" / "checkpoints" / "latest" / "checkpoint.json").is_file()
