"""The tiktoken fast path gives exactly the ids of `tokenizers`, or is not used."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from token_fixtures import SPECIALS, UNICODE_DOCS, stdlib_texts, train_tokenizer

from llmctl.tokenizer import fast, fast_cache
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokenizer.fast import EncoderSpec, bytes_to_unicode, choose_encoder


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return stdlib_texts(step=6) + UNICODE_DOCS


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory: pytest.TempPathFactory, corpus: list[str]) -> Path:
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json", corpus[::2], vocab_size=2048)


def _same_ids(path: Path, texts: list[str]) -> str:
    tok = load_tokenizer(path)
    spec, note = choose_encoder(tok)
    assert spec.backend == "tiktoken", note
    fast = spec.build().encode_batch(texts)
    reference = tok.encode_batch(texts)
    for text, a, b in zip(texts, fast, reference, strict=True):
        assert a == b, f"ids differ on {text[:80]!r}"
    return spec.backend


def test_byte_alphabet_is_a_bijection() -> None:
    mapping = bytes_to_unicode()
    assert sorted(mapping) == list(range(256))
    assert len(set(mapping.values())) == 256
    assert mapping[ord("A")] == "A" and mapping[ord(" ")] == "\u0120"


def test_fast_path_matches_tokenizers_on_stdlib_and_unicode(tok_path: Path, corpus: list[str]) -> None:
    # Held-out files too: every 6th file trained on alternately, all encoded.
    _same_ids(tok_path, corpus + stdlib_texts(step=7)[:60])


def test_special_token_strings_stay_text(tok_path: Path) -> None:
    tok = load_tokenizer(tok_path)
    spec, _ = choose_encoder(tok)
    text = "<|bos|>hello<|eos|> <|user|><|assistant|><|end|>"
    ids = spec.build().encode_batch([text])[0]
    special_ids = {tok.token_to_id(s) for s in SPECIALS}
    assert not special_ids & set(ids)
    assert ids == tok.encode(text)
    assert tok.decode(ids) == text


def test_ids_out_of_merge_order_are_remapped(tmp_path: Path, tok_path: Path, corpus: list[str]) -> None:
    data = json.loads(tok_path.read_text())
    vocab = data["model"]["vocab"]
    merged = [t for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i >= 7 + 256]
    # Swap the ids of the first and last merged tokens: same tokenizer, ids no longer in merge order.
    first, last = merged[0], merged[-1]
    vocab[first], vocab[last] = vocab[last], vocab[first]
    path = tmp_path / "permuted.json"
    path.write_text(json.dumps(data))
    tok = load_tokenizer(path)
    spec, note = choose_encoder(tok)
    assert spec.backend == "tiktoken" and spec.rank_to_id is not None, note
    texts = corpus[:40] + UNICODE_DOCS
    assert spec.build().encode_batch(texts) == tok.encode_batch(texts)
    assert vocab[last] in {i for ids in tok.encode_batch(texts) for i in ids}


def test_split_then_byte_level_pre_tokenizer(tmp_path: Path, corpus: list[str]) -> None:
    from tokenizers import Regex, pre_tokenizers

    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    path = train_tokenizer(tmp_path / "split.json", corpus[:60], vocab_size=1024, pre_tokenizer=pre)
    _same_ids(path, corpus[:80] + UNICODE_DOCS)


def test_normalizer_falls_back_with_reason(tmp_path: Path, tok_path: Path) -> None:
    data = json.loads(tok_path.read_text())
    data["normalizer"] = {"type": "NFC"}
    path = tmp_path / "nfc.json"
    path.write_text(json.dumps(data))
    spec, note = choose_encoder(load_tokenizer(path))
    assert spec.backend == "reference"
    assert note is not None and "normalizer" in note


def _hand_built(tmp_path: Path, merges: list[list[str]]) -> Path:
    alphabet = sorted(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {
                "id": i,
                "content": s,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for i, s in enumerate(SPECIALS)
        ],
        "normalizer": None,
        "pre_tokenizer": {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": True,
        },
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(data))
    return path


def test_merges_tiktoken_cannot_reproduce_fall_back(tmp_path: Path) -> None:
    # "abc" is listed as a + bc, but tiktoken's own loop builds it from ab + c (ab ranks before bc):
    # the two libraries would follow different merge paths, so the converter must refuse.
    path = _hand_built(tmp_path, [["a", "b"], ["b", "c"], ["a", "bc"]])
    tok = load_tokenizer(path)
    spec, note = choose_encoder(tok)
    assert spec.backend == "reference"
    assert note is not None and "abc" in note
    # The fallback is the reference itself.
    assert spec.build().encode_batch(["abcabc ab bc"]) == tok.encode_batch(["abcabc ab bc"])


def test_consistent_hand_built_merges_convert(tmp_path: Path) -> None:
    path = _hand_built(tmp_path, [["a", "b"], ["b", "c"], ["ab", "c"], ["\u0120", "ab"]])
    _same_ids(path, ["abc abcabc ab bc cab", "xabcx \u00e9abc"])


@pytest.mark.slow
def test_fast_path_matches_on_the_whole_stdlib(tok_path: Path) -> None:
    _same_ids(tok_path, stdlib_texts())


def _no_conversion(*args: object, **kwargs: object) -> EncoderSpec:
    raise AssertionError("converted again instead of using the kept form")


@pytest.fixture
def kept(tmp_path: Path, tok_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, EncoderSpec]:
    """A private cache, and the tokenizer whose tiktoken form a first run converted and kept there."""
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path / "cache"))
    tok = load_tokenizer(tok_path)
    spec, note = choose_encoder(tok)
    assert spec.backend == "tiktoken", note
    return tok, spec


def test_the_checked_tiktoken_form_is_kept_and_reused(
    kept: tuple[Any, EncoderSpec], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok, first = kept
    entry = fast_cache.entry_path(tok.fingerprint)
    assert entry.parent == tmp_path / "cache" / "tiktoken" and entry.is_file()
    monkeypatch.setattr(fast, "convert", _no_conversion)
    again, note = choose_encoder(tok)
    assert note is None and again == first


def test_a_broken_or_foreign_entry_is_converted_again(kept: tuple[Any, EncoderSpec]) -> None:
    tok, good = kept
    entry = fast_cache.entry_path(tok.fingerprint)
    stored = json.loads(entry.read_text())
    for broken in (
        "{not json",
        json.dumps({**stored, "fingerprint": "0" * 64}),
        json.dumps({**stored, "ranks": 3}),
    ):
        entry.write_text(broken)
        spec, note = choose_encoder(tok)
        assert note is None and spec == good
        assert json.loads(entry.read_text()) == stored  # written again, whole


def test_a_kept_form_that_disagrees_with_the_tokenizer_is_replaced(kept: tuple[Any, EncoderSpec]) -> None:
    tok, good = kept
    ranks = good.ranks or {}
    # Every id off by one: the kept form of some other tokenizer under this one's name.
    order = sorted(ranks.values())
    wrong = EncoderSpec(
        "tiktoken", good.path, pattern=good.pattern, ranks=ranks, rank_to_id=tuple(order[1:] + order[:1])
    )
    fast_cache.store(tok.fingerprint, wrong)
    assert fast.kept_encoder(tok.fingerprint, good.path) == wrong
    spec, note = choose_encoder(tok)
    assert note is None and spec == good
    assert fast.kept_encoder(tok.fingerprint, good.path) == good


def test_ids_out_of_merge_order_survive_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path / "cache"))
    spec = EncoderSpec(
        "tiktoken", "t.json", pattern="x+", ranks={b"a": 0, b"b": 1, b"ab": 2}, rank_to_id=(1, 0, 2)
    )
    fast_cache.store("f" * 64, spec)
    assert fast.kept_encoder("f" * 64, "t.json") == spec
    assert fast.kept_encoder("e" * 64, "t.json") is None


def test_an_unwritable_cache_only_costs_time(
    tmp_path: Path, tok_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LLMCTL_CACHE", str(blocker))
    spec, note = choose_encoder(load_tokenizer(tok_path))
    assert spec.backend == "tiktoken" and note is None
    assert blocker.read_text() == "not a folder"
