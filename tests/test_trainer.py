"""The training loop on a tiny model: exact resume, checkpoints, schedules, data order, config errors."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from engine_fixtures import RecordingReporter, make_token_dir, tiny_config

from llmctl.config import load_config
from llmctl.engine.pretrain import run_pretrain
from llmctl.engine.run import resolve_vocab
from llmctl.engine.schedule import LRSchedule
from llmctl.errors import LlmctlError
from llmctl.infer.checkpoint import find_latest, read_manifest, resolve_checkpoint
from llmctl.tokens.loader import PackedWindows, WindowStream, eval_rows
from llmctl.tokens.shards import open_split


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("engine-data"))


def _run(data: Path, out: Path, **overrides: object) -> tuple[object, RecordingReporter]:
    reporter = RecordingReporter()
    outcome = run_pretrain(tiny_config(data, out, **overrides), reporter=reporter)
    return outcome, reporter


def test_resumed_run_reproduces_the_uninterrupted_losses_exactly(data: Path, tmp_path: Path) -> None:
    _, straight = _run(data, tmp_path, **{"train.name": "straight"})
    # The first half stops through max_tokens after 4 of the 8 planned steps (same schedule), with a checkpoint.
    first, head = _run(data, tmp_path, **{"train.name": "split", "train.max_tokens": 4 * 4 * 32})
    assert first.result.step == 4 and Path(first.result.checkpoint).name == "step-000004"
    second, tail = _run(data, tmp_path, **{"train.name": "split", "checkpoint.resume": "auto"})
    assert second.resumed_from.endswith("step-000004")
    assert [s.step for s in tail.steps] == [5, 6, 7, 8]
    assert [s.loss for s in head.steps + tail.steps] == [s.loss for s in straight.steps]
    assert tail.loaded == {"steps_seen": 4}  # the reporter's counters travel in the checkpoint
    assert straight.steps[-1].loss < straight.steps[0].loss


def test_checkpoints_keep_k_and_latest_skips_broken_ones(data: Path, tmp_path: Path) -> None:
    outcome, rep = _run(data, tmp_path, **{"checkpoint.every": 2, "checkpoint.keep": 2, "train.steps": 6})
    root = outcome.run_dir / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000004", "step-000006"]
    assert (root / "latest").resolve().name == "step-000006"
    manifest = read_manifest(root / "step-000006")
    assert manifest["step"] == 6 and manifest["tokens"] == 6 * 4 * 32
    assert manifest["data"]["position"] == 6 * 4
    assert manifest["config"]["model"]["dim"] == 64 and manifest["tokenizer"]["fingerprint"]
    assert (root / "step-000006" / "tokenizer.json").is_file() and (outcome.run_dir / "config.yaml").is_file()
    # A truncated weights file makes the newest checkpoint incomplete: latest falls back to the one before.
    weights = root / "step-000006" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert find_latest(root).name == "step-000004"
    assert resolve_checkpoint(outcome.run_dir).name == "step-000004"
    with pytest.raises(LlmctlError, match="incomplete or corrupt"):
        resolve_checkpoint(root / "step-000006")
    # A directory left by a process killed mid-save is never a checkpoint.
    shutil.copytree(root / "step-000004", root / ".tmp-step-000008-999")
    (root / ".tmp-step-000008-999" / "checkpoint.json").unlink()
    assert find_latest(root).name == "step-000004"


def test_mismatched_checkpoint_is_a_clear_error(data: Path, tmp_path: Path) -> None:
    outcome, _ = _run(data, tmp_path, **{"train.steps": 2})
    ckpt = outcome.result.checkpoint
    with pytest.raises(LlmctlError, match=r"model.dim=64, this run's config has 96"):
        _run(data, tmp_path, **{"train.name": "other", "model.dim": 96, "checkpoint.resume": ckpt})
    manifest_path = Path(ckpt) / "checkpoint.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["tokenizer"]["fingerprint"] = "0" * 64
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(LlmctlError, match="trained with tokenizer 000000000000"):
        _run(data, tmp_path, **{"train.name": "other2", "checkpoint.resume": ckpt})


def test_eval_samples_and_time_limit(data: Path, tmp_path: Path) -> None:
    outcome, rep = _run(
        data,
        tmp_path,
        **{
            "train.steps": 4,
            "train.eval_every": 2,
            "train.sample_every": 4,
            "train.sample_tokens": 8,
            "train.sample_prompts": ["def f("],
        },
    )
    assert [e.step for e in rep.evals] == [2, 4]
    ev = rep.evals[-1]
    assert math.isclose(ev.perplexity, math.exp(ev.loss)) and 0 <= ev.accuracy <= 1 and ev.tokens > 0
    (round_,) = rep.sample_rounds
    assert round_[0].prompt == "def f(" and round_[0].source == "fixed" and round_[0].step == 4
    assert any(r.source == "validation" for r in round_)
    assert all(0 < r.new_tokens <= 8 for r in round_)
    limited, rep2 = _run(
        data, tmp_path, **{"train.name": "timed", "train.steps": 100000, "train.time_limit": 3}
    )
    assert limited.result.status == "time_limit" and 0 < limited.result.step < 100000
    assert Path(limited.result.checkpoint).name == f"step-{limited.result.step:06d}"


def test_gradient_accumulation_matches_a_bigger_micro_batch(data: Path, tmp_path: Path) -> None:
    _, big = _run(data, tmp_path, **{"train.name": "big", "train.micro_batch_size": 8, "train.steps": 3})
    _, accum = _run(
        data, tmp_path, **{"train.name": "acc", "train.global_batch_tokens": 8 * 32, "train.steps": 3}
    )
    assert [s.tokens for s in accum.steps] == [256, 256, 256]
    assert np.allclose([s.loss for s in big.steps], [s.loss for s in accum.steps], rtol=1e-5)


def test_windows_order_is_seeded_disjoint_across_ranks_and_resumable(data: Path) -> None:
    windows = PackedWindows(open_split(data, "train"), seq_len=32)
    one = WindowStream(windows, seed=7, micro_batch=4)
    rows = [one.next_rows() for _ in range(4)]
    ranks = [WindowStream(windows, seed=7, micro_batch=4, rank=r, world=2) for r in range(2)]
    two = [[s.next_rows() for _ in range(2)] for s in ranks]
    # Two ranks together read exactly what one process reads in the same number of windows.
    assert np.array_equal(np.concatenate([two[0][0], two[1][0], two[0][1], two[1][1]]), np.concatenate(rows))
    again = WindowStream(windows, seed=7, micro_batch=4)
    again.load_state_dict(one.state_dict() | {"position": 8})
    assert np.array_equal(again.next_rows(), rows[2])
    assert not np.array_equal(WindowStream(windows, seed=8, micro_batch=4).next_rows(), rows[0])
    assert rows[0].shape == (4, 33) and rows[0].dtype == np.int64
    # The validation set does not depend on the number of ranks.
    single = np.concatenate(eval_rows(windows, 3, 4, 0, 1))
    split = np.concatenate(eval_rows(windows, 3, 4, 0, 2) + eval_rows(windows, 3, 4, 1, 2))
    assert np.array_equal(single, split)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant", "wsd"])
def test_schedules_warm_up_then_reach_min_lr(kind: str) -> None:
    cfg = load_config(
        None, {"optim.schedule": kind, "optim.lr": 1.0, "optim.min_lr": 0.1, "optim.warmup_steps": 10}
    )
    s = LRSchedule.from_config(cfg.optim, total_steps=100)
    assert s(0) == pytest.approx(0.1) and s(9) == pytest.approx(1.0)
    assert s(99) == pytest.approx(1.0 if kind == "constant" else 0.1)
    if kind == "wsd":
        assert s(79) == 1.0 and s(90) < 1.0
    if kind == "cosine":
        assert s(54) == pytest.approx(0.55, abs=0.02)


def test_vocab_comes_from_the_data_unless_fixed(data: Path, tmp_path: Path) -> None:
    _, rep = _run(data, tmp_path, **{"train.steps": 1})
    assert (
        rep.info.config["model"]["vocab_size"] == json.loads((data / "meta.json").read_text())["vocab_size"]
    )
    with pytest.raises(LlmctlError, match="smaller than the data's tokenizer vocabulary"):
        resolve_vocab(
            tiny_config(data, tmp_path, **{"model.vocab_size": 100}),
            json.loads((data / "meta.json").read_text()),
        )


def test_quickstart_config_loads_and_is_a_small_model() -> None:
    from llmctl.plan.flops import param_counts

    cfg = load_config(Path(__file__).resolve().parents[1] / "examples" / "configs" / "quickstart.yaml")
    assert cfg.data.seq_len == 256 and cfg.model.max_seq_len >= cfg.data.seq_len
    assert 5e6 < param_counts(cfg.model).total < 10e6


def test_launchers_and_deadlines_are_read_from_the_environment() -> None:
    from llmctl.engine.distributed import launch_env
    from llmctl.engine.stopping import Deadline, slurm_end_time

    assert launch_env({}) == (0, 1, 0)
    assert launch_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == (3, 8, 1)
    assert launch_env({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "5"}) == (5, 16, 5)
    assert launch_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == (0, 1, 0)  # one task: no process group
    assert slurm_end_time({"SLURM_JOB_END_TIME": "1700000000"}) == 1700000000.0
    assert slurm_end_time({}) is None
    deadline = Deadline(start=1000.0, time_limit=100.0, slurm_end=1050.0, margin=20.0)
    assert not deadline.reached(now=1010.0, step_seconds=2.0, save_seconds=5.0)
    assert deadline.reached(now=1024.0, step_seconds=2.0, save_seconds=5.0)  # 1024 + 3 + 5 >= 1050 - 20
    assert not Deadline(start=0.0, time_limit=None, slurm_end=None, margin=0.0).active


_ALLOCATOR_PROBE = """
import ctypes, sys, torch
from llmctl.config import TrainConfig
from llmctl.engine.runtime import choose_runtime

libc = ctypes.CDLL("libc.so.6")


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


libc.mallinfo2.restype = MallInfo2


def mmapped_by(size: int) -> int:
    before = libc.mallinfo2().hblkhd
    x = torch.empty(size, dtype=torch.uint8)
    grew = libc.mallinfo2().hblkhd - before
    del x
    return grew


before = mmapped_by(64 << 20)
choose_runtime(TrainConfig(device="cpu"))
print(before, mmapped_by(64 << 20))
"""


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="glibc on Linux only")
def test_cpu_runs_keep_freed_memory_instead_of_a_fresh_mmap_per_tensor(tmp_path: Path) -> None:
    # A 64 MiB tensor (a step's logits at vocab 8192) is its own mmap under glibc's defaults, page-faulted
    # and zeroed again every step; a CPU run's runtime switches that off (see cpu_allocator_reuse).
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018
    except (OSError, AttributeError):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    default_grew, tuned_grew = map(int, out.stdout.split())
    assert default_grew >= 64 << 20 and tuned_grew == 0
    env["LLMCTL_CPU_ALLOCATOR"] = "default"
    out = subprocess.run([sys.executable, "-c", _ALLOCATOR_PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert list(map(int, out.stdout.split()))[1] >= 64 << 20
