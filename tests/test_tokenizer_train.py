"""`llmctl tokenizer train`: byte-level BPE / unigram (tokenizers) and sentencepiece, on tiny corpora."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.errors import LlmctlError
from llmctl.raw.download import DownloadOptions, download_dataset
from llmctl.tokenizer.chat import get_profile
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokenizer.train import train_tokenizer

runner = CliRunner()
CHAT = ["<|bos|>", "<|eos|>", "<|pad|>", *get_profile("chat").special_tokens]
TRICKY = "Caf\u00e9 \u5317\u4eac \U0001f600  tabs\t\tand\r\nlines\n\n <|user|> 12345 it's\u00a0x"


def test_cli_trains_byte_level_bpe_with_chat_specials(
    trained_tokenizer: Path, raw_dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tok" / "bpe.json"
    result = runner.invoke(
        app,
        [
            "tokenizer",
            "train",
            "--data",
            str(raw_dataset),
            "--vocab-size",
            "600",
            "--profile",
            "chat",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["vocab_size"] == 600 and report["backend"] == "hf" and report["model"] == "bpe"
    assert list(report["special_tokens"]) == CHAT and list(report["special_tokens"].values()) == list(
        range(len(CHAT))
    )
    ev = report["eval"]
    assert ev["split"] == "validation" and ev["roundtrip_exact"] and ev["roundtrip_failures"] == 0
    assert 2.0 < ev["bytes_per_token"] < 6.0 and ev["tokens_per_word"] > 1.0

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer.from_file(str(out))
    # BOS first (Llama 3's convention) for transformers users; llmctl's own encode adds nothing.
    assert raw.encode("x").ids[0] == tok_bos(raw) and raw.encode("x", add_special_tokens=False).ids[
        0
    ] != tok_bos(raw)
    added = {t.content: t.special for t in raw.get_added_tokens_decoder().values()}
    assert added == dict.fromkeys(CHAT, True)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(out))
    tok = load_tokenizer(out)
    assert fast("def f(x):\n    return x")["input_ids"] == [
        tok.bos_id,
        *tok.encode("def f(x):\n    return x"),
    ]
    assert tok.decode(tok.encode(TRICKY)) == TRICKY
    assert tok.token_to_id("<|user|>") not in tok.encode("<|user|>")  # typed specials stay text

    human = runner.invoke(
        app,
        [
            "tokenizer",
            "train",
            "--data",
            str(raw_dataset),
            "--vocab-size",
            "400",
            "--out",
            str(tmp_path / "h.json"),
        ],
    )
    assert (
        human.exit_code == 0 and "yes, every document" in human.stdout and "bytes per token" in human.stdout
    )


def tok_bos(raw: object) -> int:
    return raw.token_to_id("<|bos|>")  # type: ignore[attr-defined]


def test_fixture_tokenizer_takes_the_tiktoken_fast_path(trained_tokenizer: Path) -> None:
    from llmctl.tokenizer.fast import convert

    spec = convert(trained_tokenizer)
    assert spec.backend == "tiktoken" and "\\p{N}{1,3}" in spec.pattern
    tok = load_tokenizer(trained_tokenizer)
    assert tok.vocab_size == 512 and tok.bos_id == 0 and tok.eos_id == 1 and tok.pad_id == 2


def test_hf_unigram_round_trips(raw_dataset: Path, tmp_path: Path) -> None:
    report = train_tokenizer(
        raw_dataset, tmp_path / "uni.json", vocab_size=500, model="unigram", max_bytes=400_000
    )
    assert report["eval"]["roundtrip_exact"] and report["model"] == "unigram"
    tok = load_tokenizer(tmp_path / "uni.json")
    assert tok.decode(tok.encode(TRICKY)) == TRICKY


@pytest.mark.parametrize("model", ["bpe", "unigram"])
def test_sentencepiece_model_with_byte_fallback_and_control_symbols(
    raw_dataset: Path, tmp_path: Path, model: str
) -> None:
    out = tmp_path / f"sp-{model}.model"
    report = train_tokenizer(raw_dataset, out, vocab_size=700, model=model, profile="chat", max_bytes=300_000)
    assert report["backend"] == "sentencepiece" and report["eval"]["roundtrip_exact"]
    tok = load_tokenizer(out)
    assert tok.kind == "sentencepiece" and (tok.bos_id, tok.eos_id, tok.pad_id) == (1, 2, 3)
    assert set(CHAT) <= set(tok.special_ids())
    assert tok.decode(tok.encode(TRICKY)) == TRICKY  # unseen characters fall back to bytes


def test_max_bytes_sample_is_deterministic(raw_dataset: Path, tmp_path: Path) -> None:
    a = train_tokenizer(raw_dataset, tmp_path / "a.json", vocab_size=400, max_bytes=200_000)
    b = train_tokenizer(raw_dataset, tmp_path / "b.json", vocab_size=400, max_bytes=200_000)
    assert a["sampled"] and a["train_bytes"] <= 200_000 and a["train_bytes"] == b["train_bytes"]
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    c = train_tokenizer(raw_dataset, tmp_path / "c.json", vocab_size=400, max_bytes=200_000, seed=3)
    assert c["train_documents"] != a["train_documents"] or c["fingerprint"] != a["fingerprint"]


def test_chat_dataset_trains_on_message_contents(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"Question {i} about cats?", "input": "", "output": f"Answer {i}: cats purr."}
        for i in range(200)
    ]
    (tmp_path / "alpaca.json").write_text(json.dumps(rows))
    download_dataset(
        str(tmp_path / "alpaca.json"), tmp_path / "chat", DownloadOptions(val_fraction=0.1, test_fraction=0)
    )
    report = train_tokenizer(tmp_path / "chat", tmp_path / "chat.json", vocab_size=300, profile="chat")
    assert report["train_documents"] > 300 and report["eval"]["roundtrip_exact"]


def test_errors_name_the_fix(raw_dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="leaves no room for merges"):
        train_tokenizer(raw_dataset, tmp_path / "x.json", vocab_size=200, profile="chat")
    with pytest.raises(LlmctlError, match="sentencepiece writes a .model"):
        train_tokenizer(raw_dataset, tmp_path / "x.json", vocab_size=400, backend="sentencepiece")
    missing = runner.invoke(
        app,
        [
            "tokenizer",
            "train",
            "--data",
            str(tmp_path),
            "--vocab-size",
            "400",
            "--out",
            str(tmp_path / "y.json"),
        ],
    )
    assert missing.exit_code == 2 and "not a llmctl dataset" in missing.stderr
    assert not list(tmp_path.glob("*.json"))
