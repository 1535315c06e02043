"""Checkpoint and training-loop faults, driven like a user: hostile pickles, corruption, old formats,
divergence, two processes on one run, resume rules, I/O errors while saving."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from chat_fixtures import instruction_rows, make_sft_tokens, pretrain_tiny, torch_threads
from engine_fixtures import make_token_dir, tiny_args, tiny_config

from llmctl.errors import DivergedError, LlmctlError, LlmctlIOError

ROOT = Path(__file__).resolve().parents[1]


class _Evil:
    """Unpickling this creates a marker file: proof that a load ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _rehash(ckpt: Path, name: str, *, drop: tuple[str, ...] = ()) -> None:
    """Record `name`'s current size and SHA-256 in checkpoint.json, as an attacker who edits both would."""
    path = ckpt / "checkpoint.json"
    manifest = json.loads(path.read_text())
    data = (ckpt / name).read_bytes()
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for gone in drop:
        manifest["files"].pop(gone, None)
    path.write_text(json.dumps(manifest))


def _make_legacy(ckpt: Path, rng_payload: Any) -> None:
    """Turn a checkpoint into what llmctl wrote before format 2: a pickled rng.pt, sizes only."""
    torch.save(rng_payload, ckpt / "rng.pt")
    for name in ("rng.safetensors", "rng.json"):
        (ckpt / name).unlink()
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    files = {n: (ckpt / n).stat().st_size for n in manifest["files"] if (ckpt / n).exists()}
    files["rng.pt"] = (ckpt / "rng.pt").stat().st_size
    manifest.update(format_version=1, files=files)
    manifest.pop("finite", None)
    (ckpt / "checkpoint.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("faults-data"))


@pytest.fixture(scope="module")
def base(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-step pretraining run with checkpoints at steps 2 and 4."""
    from llmctl.engine.pretrain import run_pretrain

    out = tmp_path_factory.mktemp("faults-base")
    with torch_threads(1):
        outcome = run_pretrain(tiny_config(data, out, **{"train.steps": 4, "checkpoint.every": 2}))
    return outcome.run_dir


@pytest.fixture(scope="module")
def sft_inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(SFT token dir, pretrained init checkpoint) with a chat tokenizer."""
    tmp = tmp_path_factory.mktemp("faults-sft")
    train, validation = instruction_rows(60, seed=1), instruction_rows(12, seed=2)
    with torch_threads(1):
        tokens, tokenizer = make_sft_tokens(tmp, train, validation)
        init = pretrain_tiny(
            tmp, tokenizer, [c[0]["content"] + " " + c[1]["content"] for c in train], steps=2
        )
    return tokens, init


def _copy_ckpt(src: Path, tmp: Path) -> Path:
    dst = tmp / "copy" / "checkpoints" / src.resolve().name
    shutil.copytree(src.resolve(), dst)
    return dst


def _resume_args(data: Path, ckpt: Path, out: Path, **extra: Any) -> list[str]:
    return [
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(out),
        "--resume",
        str(ckpt),
        *tiny_args(**{"train.steps": 6, **extra}),
    ]


def _sft_args(tokens: Path, init: Path, out: Path) -> list[str]:
    return [
        "sft",
        "--init",
        str(init),
        "--data",
        str(tokens),
        "--out",
        str(out),
        "--steps",
        "2",
        "--data.seq_len=64",
        "--train.micro_batch_size=4",
        "--train.eval_every=0",
        "--train.sample_every=0",
        "--checkpoint.every=0",
        "--telemetry.enabled=false",
        "--telemetry.tensorboard=false",
        "--telemetry.panel=off",
        "--train.device=cpu",
    ]


# -- no pickles ---------------------------------------------------------------------------------


def test_checkpoint_holds_no_pickle_but_optimizer_tensors(base: Path) -> None:
    ckpt = base / "checkpoints" / "step-000004"
    manifest = json.loads((ckpt / "checkpoint.json").read_text())
    assert manifest["format_version"] == 2 and manifest["finite"] is True
    assert sorted(manifest["files"]) == [
        "model.safetensors",
        "optimizer.pt",
        "rng.json",
        "rng.safetensors",
        "tokenizer.json",
    ]
    for name, entry in manifest["files"].items():
        data = (ckpt / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt / "optimizer.pt")) == []
    rng = json.loads((ckpt / "rng.json").read_text())
    assert len(rng["ranks"]) == 1 and len(rng["ranks"][0]["python"]["state"]) == 625


@pytest.mark.parametrize("kind", ["torch", "raw"])
def test_crafted_optimizer_pickle_is_refused_by_resume_and_sft(
    data: Path, base: Path, sft_inputs: tuple[Path, Path], tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "PWNED"
    evil = [_Evil(marker)]
    tokens, init = sft_inputs
    for ckpt_src, args in (
        (base / "checkpoints" / "step-000004", lambda c: _resume_args(data, c, tmp_path / "resumed")),
        (init, lambda c: _sft_args(tokens, c, tmp_path / "sft")),
    ):
        ckpt = _copy_ckpt(ckpt_src, tmp_path / kind / ckpt_src.resolve().parent.parent.name)
        if kind == "torch":
            torch.save(evil, ckpt / "optimizer.pt")
        else:
            (ckpt / "optimizer.pt").write_bytes(pickle.dumps(evil))
        _rehash(ckpt, "optimizer.pt")
        result = _cli(*args(ckpt), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "error: refusing to load" in result.stderr and "optimizer.pt" in result.stderr
        assert "Traceback" not in result.stderr
        assert not marker.exists()


def test_legacy_pickled_rng_points_at_migrate_which_converts_it(
    data: Path, base: Path, tmp_path: Path
) -> None:
    import random

    import numpy as np

    ckpt = _copy_ckpt(base / "checkpoints" / "step-000004", tmp_path)
    states = [{"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}]
    _make_legacy(ckpt, states)
    result = _cli(*_resume_args(data, ckpt, tmp_path / "resumed"), cwd=tmp_path)
    assert result.returncode == 2 and "stores its random state as a pickle" in result.stderr
    assert f"llmctl checkpoint migrate {ckpt}" in result.stderr and "run code" in result.stderr
    assert not (tmp_path / "resumed").exists()  # a refused resume writes nothing

    result = _cli("checkpoint", "migrate", str(ckpt), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["converted"] is True
    assert not (ckpt / "rng.pt").exists() and (ckpt / "rng.safetensors").is_file()
    again = _cli("checkpoint", "migrate", str(ckpt.parent.parent), "--json", cwd=tmp_path)
    assert json.loads(again.stdout)[0]["converted"] is False
    result = _cli(
        *_resume_args(data, ckpt, tmp_path / "resumed", **{"train.steps": 5}), "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["step"] == 5


def test_legacy_crafted_rng_is_never_run_not_even_by_migrate(
    data: Path, base: Path, sft_inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    marker = tmp_path / "PWNED"
    ckpt = _copy_ckpt(base / "checkpoints" / "step-000004", tmp_path)
    _make_legacy(ckpt, [_Evil(marker)])
    result = _cli(*_resume_args(data, ckpt, tmp_path / "resumed"), cwd=tmp_path)
    assert result.returncode == 2 and "checkpoint migrate" in result.stderr
    tokens, init = sft_inputs
    sft_ckpt = _copy_ckpt(init, tmp_path / "sft")
    _make_legacy(sft_ckpt, [_Evil(marker)])
    result = _cli(*_sft_args(tokens, sft_ckpt, tmp_path / "sft-out"), cwd=tmp_path)
    assert result.returncode == 2 and "checkpoint migrate" in result.stderr
    result = _cli("checkpoint", "migrate", str(ckpt), cwd=tmp_path)
    assert (
        result.returncode == 2 and "refusing to convert" in result.stderr and "Traceback" not in result.stderr
    )
    assert (ckpt / "rng.pt").exists() and json.loads((ckpt / "checkpoint.json").read_text())[
        "format_version"
    ] == 1
    assert not marker.exists()


# -- integrity ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.pt", "rng.json"])
def test_same_size_corruption_is_an_error_naming_the_file(
    data: Path, base: Path, tmp_path: Path, name: str
) -> None:
    ckpt = _copy_ckpt(base / "checkpoints" / "step-000004", tmp_path)
    raw = bytearray((ckpt / name).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (ckpt / name).write_bytes(bytes(raw))
    result = _cli(*_resume_args(data, ckpt, tmp_path / "resumed"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"checkpoint file {ckpt / name} is corrupt" in result.stderr and "Traceback" not in result.stderr
    if name == "model.safetensors":
        gen = _cli("generate", str(ckpt), "-p", "x", "-n", "2", cwd=tmp_path)
        assert gen.returncode == 2 and "model.safetensors is corrupt" in gen.stderr


def test_corrupt_checkpoint_hint_names_the_others_not_earlier(base: Path, tmp_path: Path) -> None:
    from llmctl.infer.checkpoint import resolve_checkpoint

    root = tmp_path / "checkpoints"
    shutil.copytree(base / "checkpoints", root, symlinks=True)
    (root / "step-000002" / "model.safetensors").write_bytes(b"short")
    with pytest.raises(LlmctlError) as err:
        resolve_checkpoint(root / "step-000002")
    assert "earlier" not in (err.value.hint or "") and "step-000004" in (err.value.hint or "")


# -- divergence ---------------------------------------------------------------------------------


def test_divergence_stops_with_exit_3_naming_the_last_good_checkpoint(
    data: Path, base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "diverged"
    result = _cli(
        *_resume_args(
            data,
            base / "checkpoints" / "step-000002",
            out,
            **{"train.steps": 12, "optim.lr": 1e30, "checkpoint.every": 1},
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 3, result.stderr
    assert "error: training diverged at step" in result.stderr and "Traceback" not in result.stderr
    last = result.stderr.split("Last good checkpoint: ")[1].split()[0]
    kept = sorted((out / "checkpoints").glob("step-*"))
    assert kept and str(kept[-1]) == last
    from safetensors.torch import load_file

    for ckpt in kept:  # no checkpoint with non-finite weights was written
        assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"


def _nan_at(calls: set[int]) -> Any:
    """A Transformer whose forward returns NaN logits on the given (1-based) training calls."""
    from llmctl.model.llama import Transformer

    class Poisoned(Transformer):
        count = 0

        def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            out = super().forward(*args, **kwargs)
            if self.training:
                Poisoned.count += 1
                if Poisoned.count in calls:
                    return out * float("nan")
            return out

    return Poisoned


def test_skip_nonfinite_skips_bad_steps_and_counts_them(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmctl.model.build as build_mod
    from llmctl.engine.pretrain import run_pretrain

    monkeypatch.setattr(build_mod, "Transformer", _nan_at({3}))
    cfg = tiny_config(
        data, tmp_path, **{"train.steps": 5, "train.skip_nonfinite": 1, "telemetry.enabled": True}
    )
    with torch_threads(1):
        outcome = run_pretrain(cfg)
    assert outcome.result.status == "completed" and outcome.result.summary["skipped_steps"] == 1
    metrics = [json.loads(x) for x in (outcome.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = {m["step"]: m for m in metrics if m["kind"] == "train"}
    assert (
        train[2]["skipped_steps"] == 0 and train[3]["skipped_steps"] == 1 and train[5]["skipped_steps"] == 1
    )
    assert json.loads((outcome.run_dir / "summary.json").read_text())["skipped_steps"] == 1

    monkeypatch.setattr(build_mod, "Transformer", _nan_at({2, 4}))
    cfg = tiny_config(data, tmp_path, **{"train.steps": 5, "train.skip_nonfinite": 1, "train.name": "two"})
    with torch_threads(1), pytest.raises(DivergedError, match="diverged at step 4"):
        run_pretrain(cfg)


def test_prune_never_deletes_the_newest_finite_checkpoint(base: Path, tmp_path: Path) -> None:
    from llmctl.engine.checkpoint import point_latest, prune

    root = tmp_path / "checkpoints"
    for step in (2, 4, 6, 8):
        shutil.copytree(base / "checkpoints" / "step-000004", root / f"step-{step:06d}")
    for step in (6, 8):  # as if written non-finite (never by llmctl itself)
        path = root / f"step-{step:06d}" / "checkpoint.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "finite": False}))
    point_latest(root, "step-000008")
    prune(root, keep=1)
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000004", "step-000008"]


# -- I/O errors while saving ---------------------------------------------------------------------


def test_disk_full_while_saving_is_exit_4_and_leaves_no_temporary(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import llmctl.engine.checkpoint as ck
    from llmctl.engine.pretrain import run_pretrain

    real = ck._write_hashed

    def full(path: Path, data: bytes) -> dict[str, Any]:
        if path.name == "optimizer.pt":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ck, "_write_hashed", full)
    with torch_threads(1), pytest.raises(LlmctlIOError, match="no space left") as err:
        run_pretrain(tiny_config(data, tmp_path, **{"train.steps": 2}))
    assert err.value.exit_code == 4 and "needed" in err.value.message
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []


# -- concurrent runs -----------------------------------------------------------------------------


def test_second_process_on_a_run_is_refused_while_the_first_trains(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "shared"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmctl",
            "pretrain",
            "--data",
            str(data),
            "--out",
            str(out),
            *tiny_args(**{"train.steps": 100000, "train.log_every": 1000}),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / ".llmctl.lock").exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        owner = json.loads((out / ".llmctl.lock").read_text())
        assert owner["pid"] == first.pid and owner["host"] == socket.gethostname() and owner["heartbeat"] > 0
        second = _cli(
            "pretrain",
            "--data",
            str(data),
            "--out",
            str(out),
            "--resume",
            "auto",
            *tiny_args(**{"train.steps": 2}),
            cwd=tmp_path,
        )
        assert second.returncode == 2
        assert f"error: {out} is in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    assert first.returncode == 0 and not (out / ".llmctl.lock").exists()


def test_stale_locks_are_taken_over_and_live_ones_never(data: Path, tmp_path: Path) -> None:
    from llmctl.engine.lock import RunLock, stale_reason

    now, host = time.time(), socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    assert "no longer running" in stale_reason({"pid": dead_pid, "host": host, "heartbeat": now}, job=None)
    assert "heartbeat" in stale_reason({"pid": 1, "host": "elsewhere", "heartbeat": now - 600}, job=None)
    assert "SLURM job 77" in stale_reason(
        {"pid": 1, "host": "elsewhere", "heartbeat": now, "slurm_job_id": "77"}, job="77"
    )
    assert (
        stale_reason({"pid": 1, "host": "elsewhere", "heartbeat": now, "slurm_job_id": "76"}, job="77")
        is None
    )
    assert stale_reason({"pid": os.getppid(), "host": host, "heartbeat": now - 60}, job=None) is None

    run = tmp_path / "run"
    run.mkdir()
    (run / ".llmctl.lock").write_text(
        json.dumps({"pid": 4242, "host": "elsewhere", "heartbeat": time.time()})
    )
    with pytest.raises(LlmctlError, match="in use by pid 4242 on host elsewhere"):
        RunLock(run).acquire()
    # Left by an earlier run of the same SLURM job (a requeue onto another node): taken over, with a note.
    (run / ".llmctl.lock").write_text(
        json.dumps({"pid": 4242, "host": "elsewhere", "heartbeat": time.time(), "slurm_job_id": "991"})
    )
    result = _cli(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(**{"train.steps": 1}),
        cwd=tmp_path,
        env={"SLURM_JOB_ID": "991"},
    )
    assert result.returncode == 0, result.stderr
    assert "took over the lock" in result.stderr and "earlier run of SLURM job 991" in result.stderr
    assert not (run / ".llmctl.lock").exists()


# -- resume rules --------------------------------------------------------------------------------


def test_resume_rules_refuse_without_writing(data: Path, base: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(base, run, symlinks=True)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    # A fresh start over an existing run: refused, nothing touched.
    result = _cli(
        "pretrain", "--data", str(data), "--out", str(run), *tiny_args(**{"train.steps": 1}), cwd=tmp_path
    )
    assert result.returncode == 2 and "already holds a run" in result.stderr and "--force" in result.stderr
    # A resume whose checks fail (another model shape): refused, config.yaml not rewritten.
    result = _cli(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        "--resume",
        "auto",
        *tiny_args(**{"model.dim": 96}),
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "model.dim=64, this run's config has 96" in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    # Checkpoints exist but none is complete: an error naming them, never a silent restart.
    for ckpt in (run / "checkpoints").glob("step-*"):
        (ckpt / "optimizer.pt").write_bytes(b"cut")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    result = _cli(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        "--resume",
        "auto",
        *tiny_args(**{"train.steps": 1}),
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "none is complete: step-000002, step-000004" in result.stderr and "--force" in result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before

    # A requeue before the first checkpoint (--resume auto, no checkpoints at all) restarts the run.
    shutil.rmtree(run / "checkpoints")
    result = _cli(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        "--resume",
        "auto",
        "--json",
        *tiny_args(**{"train.steps": 1}),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["resumed_from"] is None

    # --force starts over, replacing the old run's files.
    result = _cli(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        "--force",
        "--json",
        *tiny_args(**{"train.steps": 1}),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000001"]
