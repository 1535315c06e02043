"""meta.json has one typed reader: format version checked, typed accessors, still a plain mapping."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmctl.errors import LlmctlError
from llmctl.tokens.shards import FORMAT_NAME, FORMAT_VERSION, TokenMeta, read_meta


def _write(root: Path, **fields: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **fields}
    (root / "meta.json").write_text(json.dumps(meta))


def test_typed_fields_and_plain_mapping(tmp_path: Path) -> None:
    _write(
        tmp_path,
        mode="sft",
        tokenizer={"fingerprint": "abc", "vocab_size": 4096},
        separator={"policy": "bos+eos"},
        splits={"train": {}, "validation": {}},
    )
    meta = read_meta(tmp_path)
    assert isinstance(meta, TokenMeta)
    assert (meta.mode, meta.vocab_size, meta.fingerprint, meta.separator_policy) == (
        "sft",
        4096,
        "abc",
        "bos+eos",
    )
    assert meta.split_names == ["train", "validation"]
    assert json.loads(json.dumps(meta))["mode"] == "sft"  # serialises as the file it came from


def test_newer_format_and_missing_file_are_errors(tmp_path: Path) -> None:
    with pytest.raises(LlmctlError, match="not a token directory"):
        read_meta(tmp_path)
    _write(tmp_path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(LlmctlError, match="re-create"):
        read_meta(tmp_path)
