"""`budget --model DIR`: a model with weights is planned for fine-tuning (memory per method, time per 1M tokens),
and `--micro-batch N` says whether full fine-tuning of an imported (or Hugging Face) shape fits a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli.app import app

# Qwen2.5-0.5B's config.json (the fields that matter): 494,032,768 parameters, tied embeddings, QKV bias.
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "use_sliding_window": False,
    "sliding_window": 32768,
    "torch_dtype": "bfloat16",
}
N = 494_032_768


@pytest.fixture
def hf_dir(tmp_path: Path) -> Path:
    (tmp_path / "qwen").mkdir()
    (tmp_path / "qwen" / "config.json").write_text(json.dumps(QWEN25_05B))
    return tmp_path / "qwen"


def _plan(hf_dir: Path, gpu: str, micro_batch: int) -> dict:
    args = [
        "budget",
        "--model",
        str(hf_dir),
        "--gpu",
        gpu,
        "--seq-len",
        "2048",
        "--micro-batch",
        str(micro_batch),
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    full = json.loads(result.stdout)["methods"][0]
    assert full["method"] == "full"
    return full["memory"]


def test_states_are_bf16_weights_fp32_master_and_adamw(hf_dir: Path) -> None:
    m = _plan(hf_dir, "L4", 1)
    assert (m["weights_bytes"], m["master_bytes"], m["grads_bytes"], m["optimizer_bytes"]) == (
        2 * N,
        4 * N,
        4 * N,
        8 * N,
    )
    mb = m["micro_batch"]
    assert mb["size"] == 1 and mb["bytes"] == 18 * N + m["activation_bytes_per_seq"]
    assert mb["bytes_ckpt"] == 18 * N + m["activation_bytes_per_seq_ckpt"]


@pytest.mark.parametrize(
    ("gpu", "micro_batch", "start"),
    [
        ("H100", 4, "fits: micro-batch 4 x 2048"),
        ("L4", 3, "fits only with activation checkpointing"),
        ("L4", 16, "does not fit: micro-batch 16 x 2048"),
    ],
)
def test_the_verdict_is_for_the_chosen_micro_batch(
    hf_dir: Path, gpu: str, micro_batch: int, start: str
) -> None:
    m = _plan(hf_dir, gpu, micro_batch)
    mb = m["micro_batch"]
    assert m["verdict"].startswith(start), m["verdict"]
    assert mb["fits"] == (mb["bytes"] <= m["usable_bytes"]) and mb["fits_ckpt"] == (
        mb["bytes_ckpt"] <= m["usable_bytes"]
    )
    if not mb["fits_ckpt"]:
        assert f"--train.micro_batch_size={m['max_micro_batch'] or m['max_micro_batch_ckpt']}" in m["verdict"]


def test_budget_of_a_model_directory_does_not_import_torch(hf_dir: Path) -> None:
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom llmctl.cli.app import app\n"
        f"r = CliRunner().invoke(app, ['budget', '--model', {str(hf_dir)!r}, '--gpu', 'L4', '--micro-batch', '2'])\n"
        "assert r.exit_code == 0, r.output\nassert 'micro-batch 2' in r.output\n"
        "assert 'torch' not in sys.modules, 'budget imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def _budget(*args: str) -> tuple[str, dict]:
    """The human output and the JSON document of one `llmctl budget` call."""
    text = CliRunner().invoke(app, ["budget", *args])
    doc = CliRunner().invoke(app, ["budget", *args, "--json"])
    assert text.exit_code == 0 and doc.exit_code == 0, text.output + doc.output
    return " ".join(text.stdout.split()), json.loads(doc.stdout)


def test_a_model_directory_without_tokens_is_planned_for_fine_tuning(hf_dir: Path) -> None:
    text, doc = _budget("--model", str(hf_dir), "--gpu", "H100", "--seq-len", "2048")
    assert doc["mode"] == "finetune" and doc["tokens"] is None and "chinchilla_loss" not in doc
    full = doc["methods"][0]
    assert [m["method"] for m in doc["methods"]] == ["full", "lora", "qlora"]
    assert full["method"] == "full" and full["trainable_params"] == N
    assert full["memory"]["states_bytes"] == 18 * N and full["memory"]["fits"]
    # Time per 1M tokens: the training FLOPs of 1M tokens at 40% of one H100's dense bf16 peak.
    assert full["seconds_per_million_tokens"] == pytest.approx(
        full["flops_per_token_train"] * 1e6 / (doc["gpu"]["peak_flops_per_gpu"] * 0.4)
    )
    assert "per 1M tokens" in text and "full fine-tuning" in text
    # No pretraining plan: neither a token count nor the Chinchilla fit.
    assert "Chinchilla fit" not in text and "training tokens D" not in text


def test_tokens_or_tokens_per_param_still_plan_a_training_run(hf_dir: Path) -> None:
    _, doc = _budget("--model", str(hf_dir), "--gpu", "H100", "--tokens", "1B")
    assert doc["mode"] == "inverse" and doc["tokens"] == 1e9 and "chinchilla_loss" in doc
    _, doc = _budget("--model", str(hf_dir), "--gpu", "H100", "--tokens-per-param", "20")
    assert doc["mode"] == "inverse" and doc["tokens"] == pytest.approx(20 * doc["params_6n"])


def test_does_not_fit_on_one_gpu_never_suggests_more_gpus(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.mkdir()
    (big / "config.json").write_text(
        json.dumps(QWEN25_05B | {"num_hidden_layers": 96})
    )  # ~1.6B: 27 GiB of states
    text, doc = _budget("--model", str(big), "--gpu", "T4", "--num-gpus", "1")
    verdict = doc["methods"][0]["memory"]["verdict"]
    assert verdict.startswith("does not fit") and "alone need" in verdict
    assert "FSDP" not in text and "fsdp" not in text and "more GPUs" not in text
    _, doc = _budget("--model", str(big), "--gpu", "T4", "--num-gpus", "4")
    assert "--dist.strategy=fsdp" in doc["methods"][0]["memory"]["verdict"]
