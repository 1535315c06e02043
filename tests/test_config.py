"""Configuration: precedence (defaults < YAML < overrides), validation errors, and every shipped YAML."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from llmctl.config import Config, load_config, model_from_preset, parse_overrides
from llmctl.errors import LlmctlError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_defaults_then_file_then_overrides(tmp_path: Path) -> None:
    defaults = Config()
    path = _write(tmp_path, "optim:\n  lr: 3.0e-4\n  warmup_steps: 20\ntrain:\n  steps: 50\n")
    from_file = load_config(path)
    assert from_file.optim.lr == 3e-4 and from_file.optim.warmup_steps == 20 and from_file.train.steps == 50
    assert from_file.optim.beta2 == defaults.optim.beta2  # untouched keys keep their defaults
    both = load_config(path, ["--optim.lr=1e-3", "--train.steps", "7", "--train.compile"])
    assert both.optim.lr == 1e-3 and both.train.steps == 7 and both.train.compile is True
    assert both.optim.warmup_steps == 20  # the file still wins over defaults where overrides are silent


def test_model_preset_then_field_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "model: 124m\ndata:\n  seq_len: 512\n")
    cfg = load_config(path, ["--model.n_layers=6"])
    assert cfg.model.preset == "124m" and cfg.model.dim == 768 and cfg.model.n_layers == 6
    # A preset given on the command line replaces the file's model section.
    # vocab_size stays None ("from the tokenizer"): a preset's vocabulary is only a planning figure.
    assert load_config(path, ["--model=10m"]).model == replace(model_from_preset("10m"), vocab_size=None)


def test_overrides_parse_yaml_scalars_and_counts() -> None:
    assert parse_overrides(["--optim.lr=3.0e-4", "--train.steps", "200", "--train.compile"]) == {
        "optim.lr": 3e-4,
        "train.steps": 200,
        "train.compile": True,
    }
    # YAML 1.1 reads `3e-4` (no dot) as text; the float field converts it.
    assert load_config(None, ["--optim.lr=3e-4"]).optim.lr == 3e-4
    assert load_config(None, ["--train.max_tokens=10M"]).train.max_tokens == 10_000_000


@pytest.mark.parametrize(
    ("overrides", "message", "hint"),
    [
        (["--optim.warmup_step=1"], "unknown config key 'optim.warmup_step'", "did you mean 'warmup_steps'"),
        (["--optimm.lr=1"], "unknown config section 'optimm'", "did you mean 'optim'"),
        (["--train.steps=many"], "train.steps must be", None),
        (["--optim.lr=fast"], "optim.lr must be a number", None),
        (["--train.compile=maybe"], "train.compile must be true or false", None),
        (["--optim.schedule=zigzag"], "optim.schedule must be one of", None),
        (
            ["--model.dim=64", "--model.n_heads=5"],
            "model.n_heads=5 does not divide model.dim=64",
            "choose n_heads",
        ),
        (
            ["--model.n_heads=4", "--model.n_kv_heads=3"],
            "model.n_kv_heads=3 does not divide model.n_heads=4",
            "choose n_kv_heads among [1, 2, 4]",
        ),
        (["--model=125m"], "unknown model preset '125m'", "did you mean '124m'"),
        (["--data.seq_len=4096"], "data.seq_len=4096 exceeds model.max_seq_len=1024", None),
    ],
)
def test_bad_values_name_the_key(overrides: list[str], message: str, hint: str | None) -> None:
    with pytest.raises(LlmctlError) as info:
        load_config(None, overrides)
    assert message in info.value.message
    if hint:
        assert hint in info.value.hint


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(LlmctlError, match="not valid YAML"):
        load_config(_write(tmp_path, "optim: [unclosed\n"))
    with pytest.raises(LlmctlError, match="unknown config key 'train.setps'") as info:
        load_config(_write(tmp_path, "train:\n  setps: 5\n"))
    assert "did you mean 'steps'" in info.value.hint


def test_example_configs_exist() -> None:
    names = {p.name for p in EXAMPLE_CONFIGS}
    assert {"124m.yaml", "llama3.2-1b.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_example_config_loads(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.model.dim % cfg.model.n_heads == 0
    assert cfg.data.seq_len <= cfg.model.max_seq_len


# Typed values (issue 13): typed dicts are used as they are; override text is read once, and string
# fields keep the text.


@pytest.mark.parametrize("text", ["2024-01-01", "yes", "no", "007", "1e3", "null-ish", "a #b", "0x1F"])
def test_string_overrides_keep_their_text(text: str) -> None:
    cfg = load_config(None, [f"--train.name={text}", f"--data.path={text}"])
    assert cfg.train.name == text and cfg.data.path == text


def test_typed_values_are_not_read_as_yaml() -> None:
    cfg = load_config(
        None, {"data.path": "yes", "train.name": "2024-01-01", "train.out_dir": "a #b", "train.steps": 5}
    )
    assert (cfg.data.path, cfg.train.name, cfg.train.out_dir, cfg.train.steps) == (
        "yes",
        "2024-01-01",
        "a #b",
        5,
    )


def test_yaml_file_date_is_text_for_a_string_field(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "train:\n  name: 2024-01-01\n")).train.name == "2024-01-01"


def test_null_override_clears_an_optional_field_and_others_still_read_yaml() -> None:
    cfg = load_config(
        None,
        [
            "--checkpoint.resume=null",
            "--train.compile=yes",
            "--train.sample_top_k=null",
            "--train.sample_prompts=[a, b]",
            "--telemetry.panel=off",
            "--model=tiny",
        ],
    )
    assert cfg.checkpoint.resume is None and cfg.train.compile is True and cfg.train.sample_top_k is None
    assert (
        cfg.train.sample_prompts == ["a", "b"] and cfg.telemetry.panel == "off" and cfg.model.preset == "tiny"
    )


@pytest.mark.parametrize("source", ["typed", "override", "yaml"])
def test_a_leading_tilde_in_a_path_is_the_home_folder(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    if source == "typed":
        cfg = load_config(None, {"data.path": "~/x", "checkpoint.init": "~"})
    elif source == "override":
        cfg = load_config(None, ["--data.path=~/x", "--checkpoint.init=~"])
    else:
        cfg = load_config(_write(tmp_path, "data:\n  path: ~/x\ncheckpoint:\n  init: '~'\n"))
    assert cfg.data.path == str(tmp_path / "x") and cfg.checkpoint.init == str(tmp_path)
    # Only paths: a run name is a name.
    assert load_config(None, {"train.name": "~x"}).train.name == "~x"


def test_vocab_size_is_none_unless_set(tmp_path: Path) -> None:
    assert load_config(None, ["--model=124m"]).model.vocab_size is None
    assert load_config(None, {}).model.vocab_size is None
    assert load_config(None, ["--model=124m", "--model.vocab_size=512"]).model.vocab_size == 512
    assert (
        load_config(_write(tmp_path, "model:\n  preset: tiny\n  vocab_size: 300\n")).model.vocab_size == 300
    )
    with pytest.raises(LlmctlError, match="model.vocab_size must be positive"):
        load_config(None, ["--model.vocab_size=0"])
