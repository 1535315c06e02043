"""`llmctl export --format hf`: transformers loads the directory and computes our logits; its chat
template yields the ids our chat profile renders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from chat_fixtures import (
    conversation_text,
    instruction_rows,
    pretrain_tiny,
    torch_threads,
    train_chat_tokenizer,
)
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.tokenizer.chat import get_profile, render
from llmctl.tokenizer.core import load_tokenizer

runner = CliRunner()

CONVERSATION = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Reverse the word: golf"},
    {"role": "assistant", "content": "flog"},
    {"role": "user", "content": "Add 3 and 4.  Then stop\n(twice)"},
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("export")
    rows = instruction_rows(200, seed=4)
    tok = train_chat_tokenizer(tmp / "tok" / "tokenizer.json", [m["content"] for c in rows for m in c])
    with torch_threads(1):
        # GQA (4 query heads, 2 key/value heads) and an untied head: the common Llama layout.
        return pretrain_tiny(tmp, tok, [conversation_text(c) for c in rows], steps=10), tmp


def _hf_logits(out: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        return model(ids).logits


def test_export_loads_in_transformers_with_our_logits_and_chat_ids(checkpoint: tuple[Path, Path]) -> None:
    from transformers import AutoTokenizer

    from llmctl.infer.checkpoint import load_for_inference

    ckpt, tmp = checkpoint
    out = tmp / "hf"
    result = runner.invoke(app, ["export", str(ckpt), "--format", "hf", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(report["files"]) == [
        "config.json",
        "generation_config.json",
        "llmctl-export.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    model, tok, _ = load_for_inference(ckpt)
    assert report["n_params"] == model.num_params() and report["chat_template"] is True

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["num_key_value_heads"] == 2
    assert config["intermediate_size"] == 128 and config["tie_word_embeddings"] is False
    assert "attention_bias" in config and config["attention_bias"] is False
    profile = get_profile("chat")
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tok.token_to_id(profile.end), tok.eos_id]

    ids = torch.randint(0, tok.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), torch_threads(1):
        ours = model(ids)
        theirs = _hf_logits(out, ids)
    assert (ours - theirs).abs().max().item() < 1e-4

    hf_tok = AutoTokenizer.from_pretrained(out)
    for messages, prompt in ((CONVERSATION[:3], False), (CONVERSATION, True), (CONVERSATION[1:2], True)):
        expected = render(messages, profile, tok.encode, tok.token_to_id, add_generation_prompt=prompt).ids
        got = hf_tok.apply_chat_template(messages, add_generation_prompt=prompt, return_dict=False)
        assert got == expected
    assert hf_tok.decode(expected[:3]) == tok.decode(expected[:3])


def test_export_refuses_to_overwrite_and_checks_the_tokenizer(
    checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    ckpt, _ = checkpoint
    out = tmp_path / "hf"
    out.mkdir()
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(out)])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--force", "--dtype", "bfloat16"])
    assert result.exit_code == 0, result.output
    assert "model.safetensors" in result.stdout and "bfloat16" in result.stdout
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left

    other = train_chat_tokenizer(tmp_path / "other.json", ["other words entirely"] * 5, 300)
    result = runner.invoke(
        app, ["export", str(ckpt), "--out", str(tmp_path / "x"), "--tokenizer", str(other)]
    )
    assert result.exit_code == 2 and "is not the one checkpoint" in result.output
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "x"), "--format", "onnx"])
    assert result.exit_code == 2 and "--format hf" in result.output


@pytest.mark.parametrize(
    "shape", [{"qkv_bias": True, "tied_embeddings": True}, {"n_kv_heads": 1, "dim": 96, "n_heads": 6}]
)
def test_rope_permutation_holds_for_biases_tied_heads_and_gqa(shape: dict[str, Any], tmp_path: Path) -> None:
    from llmctl.config import ModelConfig
    from llmctl.export.hf import write_hf
    from llmctl.model.llama import Transformer

    tok = load_tokenizer(train_chat_tokenizer(tmp_path / "tok.json", ["a few words to learn from"] * 5, 300))
    cfg = ModelConfig(
        **{
            "vocab_size": 320,
            "dim": 64,
            "n_layers": 2,
            "n_heads": 4,
            "ffn_dim": 96,
            "max_seq_len": 64,
            **shape,
        }
    )
    torch.manual_seed(0)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():  # biases and norms away from their zero/one init
            p.add_(0.05 * torch.randn_like(p))
    result = write_hf(model.state_dict(), cfg, tok, tmp_path / "hf")
    ids = torch.randint(0, 320, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), torch_threads(1):
        assert (model(ids) - _hf_logits(tmp_path / "hf", ids)).abs().max().item() < 1e-4
    assert result.n_params == model.num_params()
    if cfg.qkv_bias:
        from safetensors.torch import load_file

        weights = load_file(str(tmp_path / "hf" / "model.safetensors"))
        assert not weights["model.layers.0.self_attn.o_proj.bias"].any() and "lm_head.weight" not in weights
