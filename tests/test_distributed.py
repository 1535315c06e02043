"""Two gloo processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_fixtures import make_token_dir, tiny_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("dist-data"))


def _losses(run: Path) -> dict[str, list[float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {kind: [r["loss"] for r in records if r.get("kind") == kind] for kind in ("train", "eval")}


def _pretrain(launcher: list[str], data: Path, run: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        "--json",
        *tiny_args(**{"train.steps": 6, "train.global_batch_size": 8, "train.eval_every": 3}),
        *extra,
    ]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([*launcher, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_gloo_ranks_match_one_process(data: Path, tmp_path: Path, strategy: str) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llmctl"]
    two = _pretrain(torchrun, data, tmp_path / "two", f"--dist.strategy={strategy}")
    # Only rank 0 prints the result (one JSON document) and writes files.
    assert json.loads(two.stdout)["summary"]["world_size"] == 2
    _pretrain([sys.executable, "-m", "llmctl"], data, tmp_path / "one")
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a["train"]) == 6 and len(a["eval"]) == 2
    assert a["train"] == pytest.approx(b["train"], rel=1e-5)
    assert a["eval"] == pytest.approx(b["eval"], rel=1e-5)
    # The sharded run's checkpoint resumes in a single process: files hold full tensors keyed by name.
    resumed = _pretrain(
        [sys.executable, "-m", "llmctl"], data, tmp_path / "two", "--resume", "auto", "--steps", "7"
    )
    assert json.loads(resumed.stdout)["step"] == 7


@pytest.fixture(scope="module")
def lora_base(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretrained checkpoint for LoRA runs to start from (one process, in this one)."""
    from typer.testing import CliRunner

    from llmctl.cli.app import app

    run = tmp_path_factory.mktemp("lora-base") / "base"
    args = tiny_args(**{"train.steps": 2, "train.global_batch_size": 8})
    result = CliRunner().invoke(app, ["pretrain", "--data", str(data), "--out", str(run), *args])
    assert result.exit_code == 0, result.output
    return run / "checkpoints" / "latest"


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "quantize"), [("fsdp", "none"), ("ddp", "nf4")])
def test_lora_under_two_gloo_ranks_matches_one_process(
    data: Path, lora_base: Path, tmp_path: Path, strategy: str, quantize: str
) -> None:
    """LoRA under FSDP2 and QLoRA under DDP: the losses of one process, and an adapter-only checkpoint."""
    from safetensors import safe_open
    from typer.testing import CliRunner

    from llmctl.cli.app import app

    if quantize != "none":
        pytest.importorskip("torchao")
    # --init gives the model's shape
    tiny = tiny_args(**{"train.steps": 4, "train.global_batch_size": 8, "optim.lr": 1e-2})
    lora = ["--init", str(lora_base), "--lora.rank=4", f"--lora.quantize={quantize}", "--json"]
    lora += [a for a in tiny if not a.startswith("--model.")]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llmctl"]
    args = [
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "two"),
        f"--dist.strategy={strategy}",
        *lora,
    ]
    two = subprocess.run([*torchrun, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads(two.stdout)["summary"]["world_size"] == 2
    one = CliRunner().invoke(app, ["pretrain", "--data", str(data), "--out", str(tmp_path / "one"), *lora])
    assert one.exit_code == 0, one.output
    a, b = _losses(tmp_path / "one")["train"], _losses(tmp_path / "two")["train"]
    assert len(a) == 4 and a == pytest.approx(b, rel=1e-5 if quantize == "none" else 1e-4)
    with safe_open(tmp_path / "two" / "checkpoints" / "latest" / "model.safetensors", "pt") as f:
        assert all(k.endswith((".lora_a", ".lora_b")) for k in f.keys())  # noqa: SIM118
