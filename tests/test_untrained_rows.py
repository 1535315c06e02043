"""`sft --untrained-rows mean`: template tokens whose rows were never trained start from the mean row and train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_fixtures import make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app


def _sft(tmp_path: Path, ck: Path, tokens: Path, name: str, *extra: str) -> Path:
    result = CliRunner().invoke(
        app,
        [
            "sft",
            "--init",
            str(ck),
            "--data",
            str(tokens),
            "--out",
            str(tmp_path / name),
            "--steps",
            "3",
            "--data.seq_len=64",
            "--train.device=cpu",
            "--train.eval_every=0",
            "--train.sample_every=0",
            "--optim.warmup_steps=0",
            "--telemetry.tensorboard=false",
            "--telemetry.panel=off",
            "--json",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["data"]["untrained_special_tokens"] == ["<|im_end|>"]
    return Path(out["checkpoint"])


@pytest.mark.parametrize("tied", [True, False])
def test_untrained_im_end_rows_start_from_the_mean_and_receive_gradient(tmp_path: Path, tied: bool) -> None:
    import torch
    from chat_fixtures import write_chat_parquet
    from safetensors.torch import load_file, save_file

    src = make_hf_model(tmp_path / "hf", "qwen2", seed=7, tied=tied)
    state = load_file(str(src / "model.safetensors"))
    tok = json.loads((src / "tokenizer.json").read_text())
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        if key in state:
            state[key] += 0.3  # real embeddings share a mean direction; random ones average to nearly zero
            state[key][im_end] = 0.0  # Qwen2.5 base: a row pretraining never touched
    save_file(state, str(src / "model.safetensors"), metadata={"format": "pt"})
    runner = CliRunner()
    ck = tmp_path / "ck"
    assert runner.invoke(app, ["import", str(src), "--out", str(ck)]).exit_code == 0
    rows = [
        [{"role": "user", "content": f"Reverse {w}"}, {"role": "assistant", "content": w[::-1]}]
        for w in ("module", "python", "token", "fox") * 4
    ]
    raw = write_chat_parquet(tmp_path / "raw", {"train": rows})
    made = runner.invoke(
        app,
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(ck / "tokenizer.json"),
            "--out",
            str(tmp_path / "tokens"),
            "--mode",
            "sft",
            "--template",
            "model",
            "--num-proc",
            "1",
        ],
    )
    assert made.exit_code == 0, made.output

    init = load_file(str(ck / "model.safetensors"))
    mats = ["tok_embeddings.weight"] + ([] if tied else ["output.weight"])
    fixed = load_file(
        str(_sft(tmp_path, ck, tmp_path / "tokens", "mean", "--untrained-rows", "mean") / "model.safetensors")
    )
    warned = load_file(str(_sft(tmp_path, ck, tmp_path / "tokens", "warn") / "model.safetensors"))
    for key in mats:
        w = init[key].float()
        trained = torch.ones(w.shape[0], dtype=torch.bool)
        trained[im_end] = False
        trained &= w.norm(dim=1) > 0  # the vocabulary's padding rows (none here) are not "trained"
        mean = w[trained].mean(dim=0)
        row = fixed[key][im_end].float()
        # Started at the mean (3 AdamW steps of lr 1e-3 move each coordinate by at most ~3e-3) ...
        assert float((row - mean).abs().max()) < 5e-3, key
        # ... and trained from there: the row received gradient and moved.
        assert not torch.allclose(row, mean, atol=1e-6), key
        assert float(row.norm()) > 0.9 * float(mean.norm()), key
        # Without the option the row stays (near) zero: the model could hardly learn to emit <|im_end|>.
        assert float(warned[key][im_end].float().norm()) < 0.1 * float(mean.norm()), key
