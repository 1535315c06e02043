"""A hostile or damaged model folder given to `llmctl import`: nothing in it runs, nothing outside it is read,
`--force` deletes only a previous import, damaged files are an `error:` with the README's exit code, a full
disk is exit 4 with needed and free, and temporaries left by kill -9 are cleared by the next run (`import`
and `export --format gguf`). Each hostile case is a tiny folder made by tests/hf_fixtures.py.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hf_fixtures import make_hf_model
from test_faults_data import tmpfs
from typer.testing import CliRunner

from llmctl.cli.app import app

pytest.importorskip("transformers")

MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny Llama folder and its import (the checkpoint the GGUF tests export)."""
    root = tmp_path_factory.mktemp("safety")
    hf = make_hf_model(root / "hf", "llama")
    ck = root / "ck"
    result = CliRunner().invoke(app, ["import", str(hf), "--out", str(ck), "--json"])
    assert result.exit_code == 0, result.output
    return SimpleNamespace(hf=hf, ck=ck, report=json.loads(result.stdout))


def _copy(base: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copytree(base.hf, tmp_path / "src"))


def _import(src: Path, out: Path, *extra: str, **kwargs: Any) -> Any:
    return CliRunner().invoke(app, ["import", str(src), "--out", str(out), *extra], **kwargs)


def _refused(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "error: " in result.output and "hint: " in result.output, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), result.exception
    for word in words:
        assert word in result.output, result.output


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _no_output(tmp_path: Path) -> None:
    assert not (tmp_path / "ck").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".llmctl-tmp-")]


# --- 1. code in the folder never runs -----------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {
            "model_type": "evil",
            "auto_map": {
                "AutoConfig": "modeling_evil.EvilConfig",
                "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM",
            },
        },
        {"auto_map": {"AutoConfig": "modeling_evil.EvilConfig"}},
    ],
    ids=["unknown-model-type", "llama-model-type"],
)
def test_auto_map_is_refused_and_the_folders_code_never_runs(
    base: SimpleNamespace, tmp_path: Path, change: dict[str, Any]
) -> None:
    src = _copy(base, tmp_path)
    marker = tmp_path / "ran.txt"
    (src / "modeling_evil.py").write_text(MARKER_CODE.format(marker=str(marker)))
    _edit_json(src / "config.json", lambda c: {**c, **change})
    # "y" is what a user would answer to transformers' "run the custom code? [y/N]" prompt.
    result = _import(src, tmp_path / "ck", input="y\ny\n")
    _refused(result, 2, "never runs a model's own code")
    assert not marker.exists()
    _no_output(tmp_path)


def test_a_model_type_that_is_not_the_architectures_own_is_refused(
    base: SimpleNamespace, tmp_path: Path
) -> None:
    src = _copy(base, tmp_path)
    _edit_json(src / "config.json", lambda c: {**c, "model_type": "evil"})
    _refused(_import(src, tmp_path / "ck", input="y\n"), 2, "model_type 'evil'", "LlamaForCausalLM")
    _no_output(tmp_path)


# --- 2. pickles beside the weights are never loaded ---------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "ran"))


def test_parity_reads_only_the_verified_safetensors_never_a_pickle(
    base: SimpleNamespace, tmp_path: Path
) -> None:
    import pickle

    src = _copy(base, tmp_path)
    (src / "model.safetensors").rename(src / "model-00001-of-00001.safetensors")
    marker = tmp_path / "unpickled.txt"
    (src / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    result = _import(src, tmp_path / "ck", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["max_logit_diff"] is not None and report["max_logit_diff"] < 1e-4
    assert not marker.exists()
    files = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())["source"]["files"]
    assert "pytorch_model.bin" not in files and "model-00001-of-00001.safetensors" in files


# --- 3. nothing outside the folder is read ------------------------------------------------------------


def _link_special_tokens(src: Path, outside: Path) -> None:
    (src / "special_tokens_map.json").unlink(missing_ok=True)
    (src / "special_tokens_map.json").symlink_to(outside / "private.json")


def _link_weights(src: Path, outside: Path) -> None:
    shutil.move(src / "model.safetensors", outside / "model.safetensors")
    (src / "model.safetensors").symlink_to(outside / "model.safetensors")


def _index_to(name_of: Callable[[Path], str]) -> Callable[[Path, Path], None]:
    def make(src: Path, outside: Path) -> None:
        from safetensors.torch import load_file

        shutil.move(src / "model.safetensors", outside / "model.safetensors")
        names = load_file(str(outside / "model.safetensors"))
        weight_map = {k: name_of(outside) for k in names}
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    return make


@pytest.mark.parametrize(
    "make",
    [
        _link_special_tokens,
        _link_weights,
        _index_to(lambda outside: f"../{outside.name}/model.safetensors"),
        _index_to(lambda outside: str(outside / "model.safetensors")),
    ],
    ids=["symlinked-special-tokens", "symlinked-weights", "dotdot-in-index", "absolute-in-index"],
)
def test_files_outside_the_model_folder_are_refused(
    base: SimpleNamespace, tmp_path: Path, make: Callable[[Path, Path], None]
) -> None:
    src = _copy(base, tmp_path)
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "private.json").write_text('{"bos_token": "my-secret-token"}')
    make(src, outside)
    result = _import(src, tmp_path / "ck")
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "outside" in result.output and "Traceback" not in result.output
    _no_output(tmp_path)


def test_every_copied_file_is_the_one_hashed_in_provenance(base: SimpleNamespace) -> None:
    import hashlib

    manifest = json.loads((base.ck / "checkpoint.json").read_text())
    copied = set(manifest["files"]) - {"model.safetensors", "chat_template.jinja"}
    assert copied >= {"tokenizer.json", "tokenizer_config.json"}
    for name in copied:
        digest = hashlib.sha256((base.ck / name).read_bytes()).hexdigest()
        assert manifest["source"]["files"][name] == digest, name


# --- 4. --force replaces only a previous import -------------------------------------------------------


def _user_folder(out: Path) -> None:
    (out / "src").mkdir(parents=True)
    (out / "src" / "main.py").write_text("print(1)")


def _training_run(out: Path) -> None:
    (out / "checkpoints" / "step-000010").mkdir(parents=True)
    (out / "checkpoints" / "step-000010" / "checkpoint.json").write_text("{}")
    (out / ".llmctl.lock").write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))


def _previous_import_plus_notes(out: Path, ck: Path) -> None:
    shutil.copytree(ck, out)
    (out / "notes.txt").write_text("mine")


@pytest.mark.parametrize("kind", ["file", "user-folder", "training-run", "import-plus-notes"])
def test_import_force_never_deletes_what_it_did_not_write(
    base: SimpleNamespace, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
    elif kind == "user-folder":
        _user_folder(out)
    elif kind == "training-run":
        _training_run(out)
    else:
        _previous_import_plus_notes(out, base.ck)
    before = sorted(
        (str(p.relative_to(tmp_path)), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file()
    )
    _refused(_import(base.hf, out, "--force", "--no-verify"), 2)
    after = sorted((str(p.relative_to(tmp_path)), p.read_bytes()) for p in tmp_path.rglob("*") if p.is_file())
    assert after == before


def test_import_force_replaces_a_previous_import(base: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base.ck, out)
    (out / "model.safetensors").write_bytes(b"old")
    result = _import(base.hf, out, "--force", "--no-verify")
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").read_bytes() == (base.ck / "model.safetensors").read_bytes()


# --- 5. non-finite weights or logits ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "where", "message"),
    [
        (float("nan"), "model.layers.0.mlp.up_proj.weight", "NaN or infinite"),
        (float("inf"), "model.norm.weight", "NaN or infinite"),
        (3e38, "model.norm.weight", "not finite"),  # finite weights whose float32 logits overflow
    ],
    ids=["nan-weight", "inf-weight", "overflowing-logits"],
)
def test_non_finite_weights_or_logits_are_an_error(
    base: SimpleNamespace, tmp_path: Path, value: float, where: str, message: str
) -> None:
    from safetensors.torch import load_file, save_file

    src = _copy(base, tmp_path)
    state = load_file(str(src / "model.safetensors"))
    state[where][..., 0] = value
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    _refused(_import(src, tmp_path / "ck"), 2, message)
    _no_output(tmp_path)


# --- 6. malformed folders -----------------------------------------------------------------------------


def _safetensors_header(src: Path, change: Callable[[int, bytes, bytes], bytes]) -> None:
    raw = (src / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    (src / "model.safetensors").write_bytes(change(n, raw[8 : 8 + n], raw[8 + n :]))


def _offsets_past_the_end(n: int, header: bytes, data: bytes) -> bytes:
    doc = json.loads(header)
    name = next(k for k in doc if k != "__metadata__")
    doc[name]["data_offsets"] = [0, len(data) * 4]
    text = json.dumps(doc).encode()
    return struct.pack("<Q", len(text)) + text + data


def _wrong_shape(src: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(str(src / "model.safetensors"))
    state["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(60, 64)
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})


def _json_list(name: str) -> Callable[[Path], None]:
    return lambda src: (src / name).write_text("[1, 2, 3]")


def _index_without_weight_map(src: Path) -> None:
    (src / "model.safetensors.index.json").write_text('{"weight_map": ["model.safetensors"]}')


MALFORMED = {
    "header-too-large": (
        lambda s: _safetensors_header(s, lambda n, h, d: struct.pack("<Q", 1 << 60) + h + d),
        1,
    ),
    "offsets-past-the-end": (lambda s: _safetensors_header(s, _offsets_past_the_end), 1),
    "truncated-weights": (
        lambda s: _safetensors_header(s, lambda n, h, d: struct.pack("<Q", n) + h + d[:-100]),
        1,
    ),
    "wrong-tensor-shape": (_wrong_shape, 2),
    "config-is-a-list": (_json_list("config.json"), 2),
    "config-not-json": (lambda s: (s / "config.json").write_text('{"architectures": '), 2),
    "config-size-is-text": (lambda s: _edit_json(s / "config.json", lambda c: {**c, "hidden_size": "64"}), 2),
    "tokenizer-config-is-a-list": (_json_list("tokenizer_config.json"), 2),
    "generation-config-is-a-list": (_json_list("generation_config.json"), 2),
    "index-is-a-list": (_json_list("model.safetensors.index.json"), 2),
    "index-weight-map-is-a-list": (_index_without_weight_map, 2),
    "tokenizer-json-is-a-list": (_json_list("tokenizer.json"), 2),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_folder_is_an_error_with_the_readme_exit_code(
    base: SimpleNamespace, tmp_path: Path, case: str
) -> None:
    damage, code = MALFORMED[case]
    src = _copy(base, tmp_path)
    damage(src)
    result = _import(src, tmp_path / "ck")
    _refused(result, code)
    assert "sentencepiece" not in result.output
    _no_output(tmp_path)


# --- 7. a full disk -----------------------------------------------------------------------------------


def _assert_full_disk(result: Any) -> None:
    _refused(result, 4, "no space left on device", "needed", "free")


def test_import_onto_a_full_file_system(base: SimpleNamespace, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "64k") as small:
        _assert_full_disk(_import(base.hf, small / "ck", "--no-verify"))
        assert list(small.iterdir()) == []


def test_import_full_disk_while_writing_the_weights(
    base: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after the space check (another writer): safetensors' Rust error becomes exit 4."""
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*_args: object, **_kwargs: object) -> None:
        raise SafetensorError(
            "Error while serializing: IoError(Os { code: 28, kind: StorageFull }) (os error 28)"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    _assert_full_disk(_import(base.hf, tmp_path / "ck", "--no-verify"))
    _no_output(tmp_path)


def _gguf(ck: Path, out: Path) -> Any:
    return CliRunner().invoke(app, ["export", str(ck), "--format", "gguf", "--out", str(out)])


def test_gguf_export_onto_a_full_disk_says_needed_and_free(
    base: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0 and shutil.which("mount"):
        with tmpfs(tmp_path / "small", "64k") as small:
            _assert_full_disk(_gguf(base.ck, small / "m.gguf"))
            assert list(small.iterdir()) == []
        return
    import llmctl.files

    monkeypatch.setattr(llmctl.files, "free_bytes", lambda _path: 1000)
    _assert_full_disk(_gguf(base.ck, tmp_path / "m.gguf"))
    assert list(tmp_path.iterdir()) == []


def test_gguf_disk_filling_during_the_write_says_needed_and_free(
    base: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The space check passes (the disk fills after it): numpy's short write, without an errno, is exit 4 too."""
    import llmctl.files

    real, calls = llmctl.files.free_bytes, []

    def roomy_once(path: Path) -> int | None:
        calls.append(path)
        return 1 << 40 if len(calls) == 1 else real(path)

    with tmpfs(tmp_path / "small", "128k") as small:
        monkeypatch.setattr(llmctl.files, "free_bytes", roomy_once)
        result = CliRunner().invoke(
            app,
            [
                "export",
                str(base.ck),
                "--format",
                "gguf",
                "--out",
                str(small / "m.gguf"),
                "--dtype",
                "float32",
            ],
        )
        _assert_full_disk(result)
        assert list(small.iterdir()) == []


# --- 8. temporaries left by kill -9 -------------------------------------------------------------------


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def _leftovers(folder: Path, target: str) -> tuple[list[Path], list[Path]]:
    """(temporaries of `target` whose writer is dead, temporaries that are not ours to remove): what a
    kill -9 of the writer, of a live writer, and of another output's writer leave."""
    dead, live = _dead_pid(), os.getppid()
    stale = [folder / f".llmctl-tmp-{target}-{dead}", folder / f".llmctl-tmp-old-{target}-{dead}"]
    kept = [folder / f".llmctl-tmp-{target}-{live}", folder / f".llmctl-tmp-other-{dead}"]
    for path in (*stale, *kept):
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x" * 1000)
    return stale, kept


def test_import_rerun_clears_its_own_dead_temporaries_only(base: SimpleNamespace, tmp_path: Path) -> None:
    stale, kept = _leftovers(tmp_path, "ck")
    result = _import(base.hf, tmp_path / "ck", "--no-verify")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_gguf_rerun_clears_its_own_dead_temporaries_only(base: SimpleNamespace, tmp_path: Path) -> None:
    stale, kept = _leftovers(tmp_path, "m.gguf")
    result = _gguf(base.ck, tmp_path / "m.gguf")
    assert result.exit_code == 0, result.output
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
