"""Benchmark scripts that must run on any machine: gpu_check's no-CUDA plan, nanoGPT's FLOP count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU the script runs for minutes")
@pytest.mark.parametrize("smoke", [False, True])
def test_gpu_check_without_cuda_prints_its_plan_and_exits_0(tmp_path: Path, smoke: bool) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OUT": str(tmp_path)}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *(["--smoke"] if smoke else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device" in proc.stdout
    assert ("smoke: tiny preset" in proc.stdout) == smoke
    assert ("compiled: 124m seq 1024" in proc.stdout) != smoke
    plan = json.loads((tmp_path / "gpu_check.json").read_text())
    assert plan["cuda"] is False and plan["plan"]["cases"] == ["compiled", "eager", "no-fused"]
    assert "no CUDA device" in (tmp_path / "gpu_check.log").read_text()


def test_nanogpt_flops_count_matches_its_parameter_formula() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vs_nanogpt import llmctl_flops_per_token, nanogpt_flops_per_token

    # GPT-2 small (vocab 50304, no biases): 123.6M parameters without the position table, as nanoGPT prints.
    fpt = nanogpt_flops_per_token(12, 768, 12, 1024, 50304)
    n = (fpt - 12 * 12 * 12 * 64 * 1024) / 6
    assert abs(n - 123_587_328) < 1e3  # 50304*768 + 12*(12*768^2 + 2*768) + 768
    assert 30e6 < llmctl_flops_per_token(256, 8192) < 40e6


def test_gpu_check_tells_a_correct_resume_from_a_wrong_one() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import LOSS_TOLERANCE, compare_resume

    straight = [9.1, 8.7, 8.2, 7.9]
    same = compare_resume(list(straight), straight)
    assert same["resume_matches"] and same["resume_bitwise"] and same["max_loss_diff"] == 0
    last_bits = compare_resume([9.1, 8.7, 8.2 + LOSS_TOLERANCE / 10, 7.9], straight)
    assert last_bits["resume_matches"] and not last_bits["resume_bitwise"]
    reset = compare_resume([9.1, 8.7, 9.0, 8.6], straight)  # the optimizer or data restarted
    assert not reset["resume_matches"]
    lost_step = compare_resume([9.1, 8.7, 8.2], straight)
    assert not lost_step["resume_matches"]
    assert not compare_resume([], straight)["resume_matches"]


def test_gpu_check_smoke_sees_an_exact_resume_on_cpu(tmp_path: Path) -> None:
    # The --smoke flow itself (straight run; stop at half the tokens; resume), in fp32 eager on CPU, where
    # a resume is bitwise: the same records the GPU run will read.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_check import smoke_check

    shape = {"preset": "tiny", "seq": 64, "batch": 4, "steps": 12}
    cpu = ("--train.dtype=fp32", "--train.compile=false", "--train.device=cpu")
    result = smoke_check(tmp_path / "smoke", shape, cpu)  # a folder still to be made, as main() passes
    assert result["resumed_from_step"] == 6 and result["resume_steps"] == 12
    assert result["resume_matches"] and result["resume_bitwise"], result


def test_gpu_check_main_runs_through_on_a_pretend_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything main() does on a GPU (smoke, the three cases, budget's estimate, the table, the JSON, the
    # exit code), with torch told CUDA is there and every run made a small fp32 CPU run: a slip in the glue
    # costs minutes of scarce GPU time.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_check
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "pretend GPU")
    for key, value in {"preset": "tiny", "seq": 64, "batch": 4, "steps": 6, "warmup": 2}.items():
        monkeypatch.setitem(gpu_check.FULL, key, value)
    for key, value in {"preset": "tiny", "seq": 64, "batch": 4, "steps": 8}.items():
        monkeypatch.setitem(gpu_check.SMOKE, key, value)
    real = gpu_check.pretrain

    def on_cpu(data: Path, runs: Path, name: str, shape: dict, extra: list[str]) -> list[dict]:
        cpu = ["--train.dtype=fp32", "--train.compile=false", "--train.device=cpu"]
        return real(data, runs, name, shape, [e for e in extra if "compile" not in e] + cpu)

    monkeypatch.setattr(gpu_check, "pretrain", on_cpu)
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--out", str(tmp_path / "out")])
    assert gpu_check.main() == 0
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert result["device"] == "pretend GPU" and result["smoke"]["resume_matches"]
    assert set(result["rows"]) == {"compiled", "eager", "no-fused"}
    assert all(r["tokens_per_sec"] and r["budget_estimate_bytes"] > 0 for r in result["rows"].values())
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "compile speed-up" in log and "match" in log


def test_generate_throughput_races_llmctl_against_transformers_on_one_model() -> None:
    # The race itself on a tiny random model exported both ways: identical greedy tokens, a ratio printed.
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import dataclasses

    import torch
    from generate_throughput import hf_runner, llmctl_runner, race
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmctl.config import model_from_preset
    from llmctl.export.hf import to_hf_state_dict
    from llmctl.model.llama import Transformer

    torch.manual_seed(0)
    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=128, max_seq_len=64)
    ours = Transformer(cfg).eval()
    with torch.no_grad():  # sharper logits than the 0.02 init: no near-ties between the two
        for p in ours.parameters():
            p.mul_(4)
    hf_cfg = LlamaConfig(
        vocab_size=128,
        hidden_size=cfg.dim,
        intermediate_size=cfg.hidden_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.kv_heads,
        max_position_embeddings=64,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=cfg.rope_theta,
        tie_word_embeddings=False,
    )
    theirs = LlamaForCausalLM(hf_cfg).eval()
    theirs.load_state_dict(to_hf_state_dict(ours.state_dict(), cfg))
    prompts = [[1, 5, 9], [3, 4, 5, 6, 7, 8], [2]]
    assert race(llmctl_runner(ours, prompts, 8), hf_runner(theirs, prompts, 8), rounds=1) > 0


def test_gguf_quality_scores_each_type_in_llama_cpp_and_float32_as_llmctl(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    from engine_fixtures import make_token_dir, tiny_config

    from llmctl.engine.pretrain import run_pretrain

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gguf_quality import main

    tokens = make_token_dir(tmp_path / "data", files=12)
    run_pretrain(tiny_config(tokens, tmp_path / "runs", **{"train.steps": 1}))
    table = main(
        [
            "--checkpoint",
            str(tmp_path / "runs" / "run" / "checkpoints" / "latest"),
            "--tokens",
            str(tokens),
            "--max-tokens",
            "64",
            "--types",
            "float32",
            "q4_0",
            "--out",
            str(tmp_path / "gguf"),
        ]
    )
    ppl = {r["type"]: r["ppl"] for r in table}
    # The float32 file runs in llama.cpp as the checkpoint runs in llmctl; q4_0 is a smaller, other model.
    assert ppl["float32"] == pytest.approx(ppl["llmctl"], rel=1e-4)
    sizes = {r["type"]: r["bytes"] for r in table}
    assert sizes["q4_0"] < sizes["float32"] and ppl["q4_0"] != ppl["float32"]
