"""BOS first: a llmctl tokenizer puts <|bos|> before every text for transformers, `tokenize` writes BOS + text + EOS
by default, and an exported model gives the same greedy text under `AutoTokenizer(prompt)` + `generate` as
`llmctl generate --temperature 0`. Shards and models made with the old `eos` policy keep theirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_fixtures import pretrain_tiny, torch_threads
from token_fixtures import stdlib_texts, train_tokenizer
from typer.testing import CliRunner

from llmctl.cli.app import app

pytest.importorskip("transformers")


@pytest.mark.parametrize("style", ["bos-first", "old-eos"])
def test_exported_model_generates_what_llmctl_generates(
    trained_tokenizer: Path, tmp_path: Path, style: str
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [t[:2000] for t in stdlib_texts(limit=40, step=7)]
    tokenizer = (
        trained_tokenizer if style == "bos-first" else train_tokenizer(tmp_path / "old.json", texts, 400)
    )
    with torch_threads(1):
        ckpt = pretrain_tiny(tmp_path, tokenizer, texts, steps=6)
    meta = json.loads((tmp_path / "pt_tokens" / "meta.json").read_text())
    assert meta["separator"]["policy"] == ("bos+eos" if style == "bos-first" else "eos")
    runner = CliRunner()
    prompt = "def main():\n    "
    ours = runner.invoke(
        app, ["generate", str(ckpt), "--prompt", prompt, "--temperature", "0", "-n", "24", "--json"]
    )
    assert ours.exit_code == 0, ours.output
    ours_report = json.loads(ours.stdout)
    exported = runner.invoke(app, ["export", str(ckpt), "--out", str(tmp_path / "hf")])
    assert exported.exit_code == 0, exported.output
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    enc = tok(prompt, return_tensors="pt")
    first = enc.input_ids[0, 0].item()
    assert first == tok.convert_tokens_to_ids("<|bos|>" if style == "bos-first" else "<|eos|>")
    assert enc.input_ids.shape[1] == ours_report["prompt_tokens"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    out = model.generate(**enc, max_new_tokens=24, do_sample=False, eos_token_id=gen["eos_token_id"])
    new = out[0, enc.input_ids.shape[1] :].tolist()
    if new and new[-1] in gen["eos_token_id"]:
        new = new[:-1]
    assert tok.decode(new) == ours_report["text"]
