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
    import llmctl.engine.pretrain as pretrain_module
    import llmctl.engine.sft as sft_module

    def stop(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        raise _Captured(cfg)

    monkeypatch.setattr(pretrain_module, "run_pretrain", stop)
    monkeypatch.setattr(sft_module, "run_sft", stop)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))

    def config(command: str, *args: str) -> Any:
        extra = ["--init", "runs/base/checkpoints/latest"] if command == "sft" else []
        result = _invoke(command, *extra, *args)
        assert isinstance(result.exception, _Captured), result.output
        return result.exception.cfg

    return config


@pytest.mark.parametrize("command", ["pretrain", "sft"])
@pytest.mark.parametrize(
    ("args", "field", "expected"),
    [
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
        (
            ["--resume", "2024-01-01/checkpoints/step-000002"],
            "checkpoint.resume",
            "2024-01-01/checkpoints/step-000002",
        ),
        (["--steps", "7", "--train.steps=3"], "train.steps", 7),
        (["--data.path=on"], "data.path", "on"),
        (["--train.name=2024-01-01"], "train.name", "2024-01-01"),
    ],
)
def test_flags_reach_the_config_typed(
    captured_config: Any, tmp_path: Path, command: str, args: list[str], field: str, expected: Any
) -> None:
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


def test_pretrain_runs_with_data_yes_into_out_named_by_a_date(
    token_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    shutil.copytree(token_source, tmp_path / "yes")
    monkeypatch.chdir(tmp_path)
    doc = _pretrain_json("--data", "yes", "--out", "2024-01-01")
    assert doc["status"] == "completed" and Path(doc["run_dir"]) == Path("2024-01-01")
    config = (tmp_path / "2024-01-01" / "config.yaml").read_text()
    assert "path: 'yes'" in config and "name: '2024-01-01'" in config


def test_pretrain_runs_from_a_home_path_with_a_hash(
    token_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    home = tmp_path / "home"
    shutil.copytree(token_source, home / "tok #1")
    monkeypatch.setenv("HOME", str(home))
    doc = _pretrain_json("--data", "~/tok #1", "--out", "~/runs/a #b")
    assert doc["status"] == "completed" and doc["run_dir"] == str(home / "runs" / "a #b")
    assert (home / "runs" / "a #b" / "checkpoints" / "latest" / "checkpoint.json").is_file()


# --- helpers for faults -----------------------------------------------------------------------------


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """Make every atomic write fail as the file system would, after the temporary was written."""
    import os

    import llmctl.files

    def fail(path: Path) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(llmctl.files, "fsync_file", fail)


@pytest.fixture
def small_fs(tmp_path: Path) -> Any:
    """A real 4 KiB tmpfs (root only, as in CI); yields (mount point, remount read-only)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)

    yield mount, read_only
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if p.name.startswith(".llmctl-tmp-") or ".tmp" in p.name]


FAULTS = [(28, "no space left on device"), (13, "permission denied"), (30, "read-only file system")]


def _assert_io_error(result: Any, message: str) -> None:
    assert result.exit_code == 4, result.output
    assert f"error: {message}" in result.output and "hint: " in result.output
    assert "Traceback" not in result.output


# --- tokenizer train ----------------------------------------------------------------------------------


def _train(raw: Path, out: Path, *extra: str) -> Any:
    return _invoke("tokenizer", "train", "--data", str(raw), "--vocab-size", "300", "--out", str(out), *extra)


def test_tokenizer_train_refuses_to_overwrite_without_force(raw_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "tok.json"
    out.write_text("mine")
    result = _train(raw_dataset, out)
    assert (
        result.exit_code == 2
        and f"error: {out} already exists" in result.output
        and "--force" in result.output
    )
    assert out.read_text() == "mine"
    result = _train(raw_dataset, out, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["model"]["type"] == "BPE"


def test_tokenizer_train_out_under_a_regular_file(raw_dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = _train(raw_dataset, tmp_path / "file" / "tok.json")
    _assert_io_error(result, "cannot create")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize(("code", "message"), FAULTS)
def test_tokenizer_train_write_fault_is_exit_4_and_leaves_nothing(
    raw_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    _fail_fsync(monkeypatch, code)
    out = tmp_path / "tok" / "tok.json"
    _assert_io_error(_train(raw_dataset, out), message)
    assert not out.exists() and _no_temporaries(tmp_path)


def test_tokenizer_train_on_a_full_and_a_read_only_file_system(raw_dataset: Path, small_fs: Any) -> None:
    mount, read_only = small_fs
    result = _train(raw_dataset, mount / "tok.json")
    _assert_io_error(result, "no space left on device")
    assert "free" in result.output and list(mount.iterdir()) == []
    read_only()
    _assert_io_error(_train(raw_dataset, mount / "tok.json"), "read-only file system")


# --- a tiny checkpoint for export and generate ----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_checkpoint(token_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("tiny-run") / "run"
    doc = _pretrain_json("--data", str(token_source), "--out", str(run))
    return Path(doc["checkpoint"])


# --- export -------------------------------------------------------------------------------------------


def _export(ckpt: Path, out: Path, *extra: str) -> Any:
    return _invoke("export", str(ckpt), "--out", str(out), *extra)


def test_export_force_replaces_only_a_previous_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert _export(tiny_checkpoint, out).exit_code == 0
    marker = json.loads((out / "llmctl-export.json").read_text())
    assert marker["format"] == "llmctl-hf-export" and "model.safetensors" in marker["files"]
    result = _export(tiny_checkpoint, out)
    assert result.exit_code == 2 and "already exists" in result.output
    result = _export(tiny_checkpoint, out, "--force", "--dtype", "bfloat16")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"

    (out / "notes.txt").write_text("my notes")  # something the export did not write
    result = _export(tiny_checkpoint, out, "--force")
    assert result.exit_code == 2 and "notes.txt" in result.output and (out / "notes.txt").is_file()


def test_export_force_never_deletes_an_arbitrary_folder_or_file(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    home = tmp_path / "project"
    (home / "src").mkdir(parents=True)
    (home / "src" / "main.py").write_text("print(1)")
    result = _export(tiny_checkpoint, home, "--force")
    assert result.exit_code == 2 and "not one" in result.output and "llmctl-export.json" in result.output
    assert (home / "src" / "main.py").read_text() == "print(1)"
    a_file = tmp_path / "weights.bin"
    a_file.write_text("x")
    result = _export(tiny_checkpoint, a_file, "--force")
    assert result.exit_code == 2 and "not a folder" in result.output and a_file.read_text() == "x"


@pytest.mark.parametrize(("code", "message"), FAULTS)
def test_export_write_fault_keeps_the_previous_export(
    tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    out = tmp_path / "hf"
    assert _export(tiny_checkpoint, out).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _fail_fsync(monkeypatch, code)
    _assert_io_error(_export(tiny_checkpoint, out, "--force", "--dtype", "bfloat16"), message)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]


def test_export_on_a_full_file_system(tiny_checkpoint: Path, small_fs: Any) -> None:
    mount, _ = small_fs
    result = _export(tiny_checkpoint, mount / "hf")
    _assert_io_error(result, "no space left on device")
    assert list(mount.iterdir()) == []


# --- generate -----------------------------------------------------------------------------------------

LONG_PROMPT = "def main(x):\n    return x + 1\n" * 40  # far more than the tiny model's 64-token context


def test_generate_refuses_a_prompt_longer_than_the_context(tiny_checkpoint: Path) -> None:
    result = _invoke("generate", str(tiny_checkpoint), "--prompt", LONG_PROMPT, "-n", "4")
    assert result.exit_code == 2 and "model's context is 64" in result.output
    assert "--truncate-left" in result.output and "Traceback" not in result.output


def test_generate_truncate_left_keeps_the_end_and_says_how_much(tiny_checkpoint: Path) -> None:
    result = _invoke(
        "generate",
        str(tiny_checkpoint),
        "--prompt",
        LONG_PROMPT,
        "-n",
        "4",
        "-t",
        "0",
        "--truncate-left",
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["prompt_dropped_tokens"] > 0 and doc["prompt_tokens"] + doc["new_tokens"] <= 64
    assert f"dropped the first {doc['prompt_dropped_tokens']:,} prompt tokens" in result.stderr
    short = json.loads(_invoke("generate", str(tiny_checkpoint), "-p", "def", "-n", "2", "--json").stdout)
    assert short["prompt_dropped_tokens"] == 0


def test_generate_device_hint_names_its_own_flag(tiny_checkpoint: Path) -> None:
    result = _invoke("generate", str(tiny_checkpoint), "--prompt", "x", "--device", "tpu")
    assert result.exit_code == 2 and "--device" in result.output and "train.device" not in result.output


def test_fit_prompt_keeps_the_prefix_and_the_end() -> None:
    from llmctl.errors import LlmctlError
    from llmctl.infer.generate import fit_prompt

    assert fit_prompt([1], [5, 6], 8, 4, False) == ([1], [5, 6], 0)
    with pytest.raises(LlmctlError, match="prompt is 9 tokens"):
        fit_prompt([1], list(range(8)), 8, 4, False)
    prefix, body, dropped = fit_prompt([1], list(range(20)), 8, 100, True)
    assert (
        prefix == [1] and body == [17, 18, 19] and dropped == 17
    )  # room for min(100, 8 // 2) = 4 new tokens


# --- flops estimate / budget ranges ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["budget", "--gpu", "L4", "--params", "1e15", "--tokens", "1B"],
            "--params must be from 1K to 100T parameters",
        ),
        (["budget", "--gpu", "L4", "--params", "100", "--tokens", "1B"], "--params must be from 1K"),
        (["budget", "--gpu", "L4", "--params", "-5M", "--tokens", "1B"], "--params must be positive"),
        (
            ["budget", "--gpu", "L4", "--hours", "0.001"],
            "--hours must be from 1/60 (one minute) to 87,660 (ten years)",
        ),
        (["budget", "--gpu", "L4", "--hours", "1e9"], "--hours must be from 1/60"),
        (["budget", "--gpu", "L4", "--hours", "-3"], "--hours must be positive"),
        (
            ["budget", "--gpu", "L4", "--hours", "3", "--num-gpus", "200000"],
            "--num-gpus must be from 1 to 100,000",
        ),
        (["budget", "--gpu", "L4", "--hours", "3", "--num-gpus", "0"], "--num-gpus must be positive"),
        (
            ["budget", "--gpu", "L4", "--hours", "3", "--tokens-per-param", "1e9"],
            "--tokens-per-param must be from",
        ),
        (["budget", "--gpu", "L4", "--hours", "3", "--seq-len", "0"], "--seq-len must be positive"),
        (["flops", "estimate", "--model", "124m", "--tokens", "-5"], "--tokens must be positive"),
        (
            ["flops", "estimate", "--model", "124m", "--tokens", "1e20"],
            "--tokens must be from 1K to 100P tokens",
        ),
        (["flops", "estimate", "--model", "124m", "--batch-size", "0"], "--batch-size must be positive"),
        (
            ["flops", "estimate", "--model", "124m", "--num-gpus", "1000000", "--gpu", "H100"],
            "--num-gpus must be from",
        ),
        (
            ["flops", "estimate", "--dim", "-5", "--layers", "2", "--heads", "1", "--vocab-size", "100"],
            "--dim must be positive",
        ),
        (
            ["flops", "estimate", "--model", "124m", "--layers", "1000000"],
            "--layers must be from 1 to 100,000",
        ),
    ],
)
def test_planning_values_outside_their_range_are_errors(args: list[str], message: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2 and f"error: {message}" in result.output, result.output
    assert "hint: e.g. --" in result.output or "hint: write it like" in result.output
    assert "must be a number" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["budget", "--gpu", "L4", "--hours", str(1 / 60)],
        ["budget", "--gpu", "H100", "--num-gpus", "100000", "--hours", "87660"],
        ["budget", "--gpu", "L4", "--params", "1e3", "--tokens", "1e3"],
        ["budget", "--gpu", "L4", "--params", "100T", "--tokens-per-param", "20"],
    ],
)
def test_planning_range_bounds_are_accepted(args: list[str]) -> None:
    result = _invoke(*args, "--json")
    assert result.exit_code == 0, result.output


# --- the CLI root: exit codes ---------------------------------------------------------------------


def _budget_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> Any:
    import llmctl.plan.budget

    def boom(**kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(llmctl.plan.budget, "plan_budget", boom)
    return _invoke("budget", "--gpu", "L4", "--hours", "1")


def test_root_maps_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmctl.errors import DivergedError, LlmctlError, LlmctlIOError

    for exc, code in (
        (LlmctlError("bad", "fix"), 2),
        (DivergedError("nan at step 3", "lower lr"), 3),
        (LlmctlIOError("disk full", "free space"), 4),
        (KeyboardInterrupt(), 130),
    ):
        result = _budget_raises(monkeypatch, exc)
        assert result.exit_code == code, (exc, result.output)
        assert "Traceback" not in result.output


@pytest.mark.parametrize(("code", "message"), FAULTS)
def test_an_uncaught_oserror_is_exit_4_with_a_hint(
    monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    import os

    result = _budget_raises(monkeypatch, OSError(code, os.strerror(code), "/data/x.bin"))
    _assert_io_error(result, message)
    assert "/data/x.bin" in result.output


def test_an_uncaught_oserror_in_a_real_process_is_exit_4() -> None:
    """The real entry point in its own process: exit status 4, two lines on stderr, no traceback."""
    import os
    import subprocess
    import sys

    code = (
        "import errno, llmctl.plan.budget as b\n"
        "def full(**kwargs):\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device', '/data/plan.json')\n"
        "b.plan_budget = full\n"
        "from llmctl.cli.app import main\n"
        "main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("LLMCTL_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-c", code, "budget", "--gpu", "L4", "--hours", "1"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith("error: no space left on device") and "/data/plan.json" in lines[0]
    assert lines[1].startswith("hint: ") and len(lines) == 2


# --- --help of every command ----------------------------------------------------------------------


def _command_paths() -> list[list[str]]:
    import typer

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: Any, path: list[str]) -> None:
        paths.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(root, [])
    return paths


HELP_ARTEFACTS = [
    (r"<[a-z_]+(\[[a-z_|\[\]]+\])?>", "a Python type name as a metavar (<str>, <list[str]>)"),
    (r"\{[a-z_]+\}", "a Typer-style {argument}"),
    (r"\\\[", "a Rich markup escape (\\[)"),
    (r"\b(INTEGER|FLOAT)\b", "click's type name instead of N / NUMBER"),
    (r"list\[", "a Python list type"),
]


def test_every_command_is_found() -> None:
    names = {" ".join(p) for p in _command_paths()}
    assert {
        "pretrain",
        "sft",
        "generate",
        "export",
        "tokenizer train",
        "flops estimate",
        "budget",
        "data download",
    } <= names


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "llmctl")
def test_help_shows_readable_metavars_and_plain_text(path: list[str]) -> None:
    import re

    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    for pattern, what in HELP_ARTEFACTS:
        found = re.search(pattern, result.output)
        assert found is None, f"`llmctl {' '.join(path)} --help` shows {what}: {found.group(0)!r}"
    assert "Usage: llmctl" in result.output


def test_help_names_the_planning_ranges() -> None:
    text = _invoke("budget", "--help").output
    assert "1/60 (one minute) to 87,660 (ten years)" in text and "1 to 100,000" in text
    assert "1K to 100T parameters" in text
    assert "PATH" in _invoke("tokenizer", "train", "--help").output
    assert "Usage: llmctl generate [OPTIONS] CHECKPOINT" in _invoke("generate", "--help").output


@pytest.mark.gpu
def test_generate_on_cuda_with_truncate_left(tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    result = _invoke(
        "generate",
        str(tiny_checkpoint),
        "--prompt",
        LONG_PROMPT,
        "-n",
        "4",
        "-t",
        "0",
        "--truncate-left",
        "--device",
        "cuda",
        "--json",
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["device"].startswith("cuda") and doc["prompt_dropped_tokens"] > 0
