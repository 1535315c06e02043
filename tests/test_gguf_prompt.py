"""The GGUF of a model llmctl pretrained carries the prompt convention it was trained with: llama.cpp puts
`<|bos|>` first for BOS-first shards (the `<|eos|>` document prefix for old `eos`-policy shards) and no EOS
after, as `llmctl generate` and the HF export do. Read back with gguf.GGUFReader always; decoded by
llama.cpp itself where llama-cpp-python is installed (`pip install llama-cpp-python` compiles llama.cpp;
not a dev extra)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chat_fixtures import pretrain_tiny, torch_threads
from token_fixtures import stdlib_texts, train_tokenizer
from typer.testing import CliRunner

from llmctl.cli.app import app

gguf = pytest.importorskip("gguf")
runner = CliRunner()
PROMPT = "def main():\n    "


def _pretrained(tmp_path: Path, tokenizer: Path | None, steps: int) -> Path:
    texts = [t[:2000] for t in stdlib_texts(limit=40, step=7)]
    if tokenizer is None:  # no post-processor: `tokenize` falls back to the old `eos` policy
        tokenizer = train_tokenizer(tmp_path / "old.json", texts, 400)
    with torch_threads(1):
        return pretrain_tiny(tmp_path, tokenizer, texts, steps=steps)


def _export(ckpt: Path, out: Path, *extra: str) -> dict[str, Any]:
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("style", ["bos-first", "old-eos"])
def test_pretrained_gguf_carries_the_prompt_convention(
    trained_tokenizer: Path, tmp_path: Path, style: str
) -> None:
    from tokenizers import Tokenizer

    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.tokenizer.template import prompt_ids

    ckpt = _pretrained(tmp_path, trained_tokenizer if style == "bos-first" else None, steps=2)
    opened = open_checkpoint(ckpt)
    tok = opened.tokenizer()
    ours = prompt_ids(tok, opened.manifest, PROMPT)
    first = tok.token_to_id("<|bos|>" if style == "bos-first" else "<|eos|>")
    assert ours[0] == first

    report = _export(ckpt, tmp_path / "m.gguf", "--format", "gguf")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(tmp_path / "m.gguf").fields.items()}
    assert fields["tokenizer.ggml.add_bos_token"] is True
    assert fields["tokenizer.ggml.bos_token_id"] == first == report["bos_id"]
    assert fields["tokenizer.ggml.add_eos_token"] is False and report["add_eos"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == tok.eos_id
    # What llama.cpp feeds: its BOS, then the text; the HF export's tokenizer.json agrees.
    assert [fields["tokenizer.ggml.bos_token_id"], *tok.encode(PROMPT)] == ours
    _export(ckpt, tmp_path / "hf", "--format", "hf")
    assert Tokenizer.from_file(str(tmp_path / "hf" / "tokenizer.json")).encode(PROMPT).ids == ours


@pytest.mark.parametrize("style", ["bos-first", "old-eos"])
def test_llama_cpp_decodes_the_export_like_llmctl(
    trained_tokenizer: Path, tmp_path: Path, style: str
) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.generate import generate
    from llmctl.tokenizer.template import prompt_ids, stop_ids

    # 300 steps: greedy text that varies (fewer repeat one token), where a missing BOS shows within 16 tokens.
    ckpt = _pretrained(tmp_path, trained_tokenizer if style == "bos-first" else None, steps=300)
    _export(ckpt, tmp_path / "m.gguf", "--format", "gguf", "--dtype", "float32")
    model, tok, manifest = load_for_inference(ckpt)
    ours = prompt_ids(tok, manifest, PROMPT)
    with torch_threads(1):
        mine = generate(model, ours, max_new_tokens=16, temperature=0, stop_ids=stop_ids(tok, manifest)).ids

    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, verbose=False)
    theirs_prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=False)
    assert theirs_prompt == ours
    theirs: list[int] = []
    for token in llm.generate(theirs_prompt, temp=0.0, top_k=1):
        theirs.append(token)
        if token in stop_ids(tok, manifest) or len(theirs) == len(mine):
            break
    assert theirs == mine
