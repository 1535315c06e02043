"""The encoding half of `llmctl tokenize`: turns a chunk of raw rows into token ids, in a worker process.

A chunk is an Arrow array of one column (`text` strings or `messages` lists); the result is the flat
token stream of its documents, their lengths, the loss mask (SFT) and the counts the shard records.
Every worker runs one encoding thread, so N processes use N cores and no more.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.tokenizer.chat import get_profile, render
from llmctl.tokenizer.fast import BatchEncoder, EncoderSpec

SEPARATORS = {
    "eos": "each document is followed by the end-of-document token",
    "bos": "each document is preceded by the beginning-of-document token",
    "bos+eos": "each document is preceded by the beginning-of-document token and followed by the end-of-document token",
    "profile": "each conversation is rendered by the chat profile: it opens with the beginning-of-document token and every turn closes with the profile's end token",
}


@dataclass(frozen=True)
class EncodePolicy:
    """How rows become tokens: identical in every worker, recorded in meta.json."""

    mode: str
    """'pretrain' (a `text` column) or 'sft' (a `messages` column)."""
    column: str
    """Column read from the raw parts."""
    dtype: str
    """Token dtype on disk."""
    separator: str
    """One of SEPARATORS."""
    bos_id: int | None
    eos_id: int | None
    profile: str | None = None
    """Chat profile name (SFT)."""
    special_ids: dict[str, int] = field(default_factory=dict)
    """Special token string -> id, for the chat profile's markers."""
    chat_template: dict[str, Any] | None = None
    """profile 'model': the tokenizer's own chat template (template_text, bos/eos tokens, stop_ids)."""
    tokenizer_path: str | None = None
    """profile 'model': the tokenizer.json that encodes the rendered template text."""
    count_only: bool = False
    """Return document lengths only (`count --data`)."""


@dataclass
class ChunkResult:
    """The tokens of one chunk of rows, in row order, and what the shard's counters need."""

    tokens: np.ndarray | None
    lengths: np.ndarray
    mask: np.ndarray | None
    empty_rows: list[int]
    """Positions (within the chunk) of rows skipped because they were empty."""
    replaced: int
    """Rows whose invalid UTF-8 was replaced with U+FFFD."""
    text_bytes: int
    rows: int
    trained: int
    """Tokens the loss counts: all of them in pretraining, the mask's ones in SFT."""


@dataclass
class ChunkError:
    """An LlmctlError raised in a worker, carried back whole (exceptions lose their hint when pickled)."""

    message: str
    hint: str | None
    exit_code: int


def _decode_bytes(value: Any) -> tuple[Any, bool]:
    """Bytes -> str with U+FFFD for invalid UTF-8, recursively through lists and dicts; True when replaced."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8"), False
        except UnicodeDecodeError:
            return value.decode("utf-8", errors="replace"), True
    if isinstance(value, list):
        pairs = [_decode_bytes(v) for v in value]
        return [v for v, _ in pairs], any(r for _, r in pairs)
    if isinstance(value, dict):
        pairs = {k: _decode_bytes(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(r for _, r in pairs.values())
    return value, False


def _as_binary(arrow_type: Any) -> Any:
    """The same Arrow type with every string replaced by binary, so reading it never decodes UTF-8."""
    import pyarrow as pa

    if pa.types.is_string(arrow_type):
        return pa.binary()
    if pa.types.is_large_string(arrow_type):
        return pa.large_binary()
    if pa.types.is_list(arrow_type):
        return pa.list_(_as_binary(arrow_type.value_type))
    if pa.types.is_large_list(arrow_type):
        return pa.large_list(_as_binary(arrow_type.value_type))
    if pa.types.is_struct(arrow_type):
        return pa.struct([pa.field(f.name, _as_binary(f.type)) for f in arrow_type])
    return arrow_type


def column_values(array: Any) -> tuple[list[Any], int]:
    """Python values of an Arrow column with invalid UTF-8 replaced, and how many rows needed it."""
    import pyarrow as pa

    is_binary = pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type)
    if not is_binary:
        try:
            array.validate(full=True)
            return array.to_pylist(), 0
        except pa.ArrowInvalid:
            array = array.cast(_as_binary(array.type))
    values, replaced = [], 0
    for value in array.to_pylist():
        text, bad = _decode_bytes(value)
        values.append(text)
        replaced += bad
    return values, replaced


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def encode_rows(array: Any, encoder: BatchEncoder, policy: EncodePolicy) -> ChunkResult:
    """Encode one chunk of rows under `policy` (the worker's whole job)."""
    values, replaced = column_values(array)
    if policy.mode == "sft":
        return _encode_conversations(values, replaced, encoder, policy)
    empty = [i for i, v in enumerate(values) if not v]
    texts = [v for v in values if v]
    encoded = encoder.encode_batch(texts)
    head = [policy.bos_id] if policy.separator in ("bos", "bos+eos") else []
    tail = [policy.eos_id] if policy.separator in ("eos", "bos+eos") else []
    lengths = (
        np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded)) + len(head) + len(tail)
    )
    tokens = None
    if not policy.count_only:
        flat: list[int] = []
        for ids in encoded:
            flat += head
            flat += ids
            flat += tail
        tokens = np.array(flat, dtype=policy.dtype)
    nbytes = sum(_utf8_size(t) for t in texts)
    return ChunkResult(tokens, lengths, None, empty, replaced, nbytes, len(values), int(lengths.sum()))


def _template_chat(policy: EncodePolicy) -> Any:
    """The model's chat template with its tokenizer, built once per process."""
    spec = policy.chat_template or {}
    key = ("template", policy.tokenizer_path, spec.get("template_text"))
    if key not in _WORKER:
        from llmctl.tokenizer.core import load_tokenizer
        from llmctl.tokenizer.template import TemplateChat

        _WORKER[key] = TemplateChat(
            spec["template_text"],
            load_tokenizer(policy.tokenizer_path or ""),
            spec.get("bos_token"),
            spec.get("eos_token"),
        )
    return _WORKER[key]


def _encode_conversations(
    values: list[Any], replaced: int, encoder: BatchEncoder, policy: EncodePolicy
) -> ChunkResult:
    if policy.profile == "model":
        return _encode_with_template(values, replaced, policy)
    profile = get_profile(policy.profile or "chat")
    empty = [i for i, v in enumerate(values) if not v]
    conversations = [v for v in values if v]
    contents = list(dict.fromkeys(m.get("content") or "" for conv in conversations for m in conv))
    cache = dict(zip(contents, encoder.encode_batch(contents), strict=True))
    token_to_id = policy.special_ids.get
    ids: list[int] = []
    mask: list[int] = []
    lengths = []
    trained = 0
    for conv in conversations:
        rendered = render(conv, profile, cache.__getitem__, token_to_id)
        lengths.append(len(rendered.ids))
        trained += sum(rendered.mask)
        if not policy.count_only:
            ids += rendered.ids
            mask += rendered.mask
    nbytes = sum(_utf8_size(m.get("content") or "") for conv in conversations for m in conv)
    tokens = None if policy.count_only else np.array(ids, dtype=policy.dtype)
    mask_arr = None if policy.count_only else np.array(mask, dtype=np.uint8)
    return ChunkResult(
        tokens, np.array(lengths, dtype=np.int64), mask_arr, empty, replaced, nbytes, len(values), trained
    )


def _encode_with_template(values: list[Any], replaced: int, policy: EncodePolicy) -> ChunkResult:
    chat = _template_chat(policy)
    ends = (policy.chat_template or {}).get("stop_ids") or []
    empty = [i for i, v in enumerate(values) if not v]
    ids: list[int] = []
    mask: list[int] = []
    lengths = []
    trained = 0
    for conv in (v for v in values if v):
        conv_ids, conv_mask = chat.render_masked(list(conv), ends)
        lengths.append(len(conv_ids))
        trained += sum(conv_mask)
        if not policy.count_only:
            ids += conv_ids
            mask += conv_mask
    nbytes = sum(_utf8_size(m.get("content") or "") for v in values if v for m in v)
    tokens = None if policy.count_only else np.array(ids, dtype=policy.dtype)
    mask_arr = None if policy.count_only else np.array(mask, dtype=np.uint8)
    return ChunkResult(
        tokens, np.array(lengths, dtype=np.int64), mask_arr, empty, replaced, nbytes, len(values), trained
    )


_WORKER: dict[str, Any] = {}


def init_worker(spec: EncoderSpec, policy: EncodePolicy, parent_pid: int | None = None) -> None:
    """Pool initializer: one encoding thread per process, encoder built once, signals left to the parent.

    Ctrl-C reaches the whole process group; the parent decides (it stops the pool and keeps complete
    shards). SIGTERM keeps its default, as the pool itself stops broken workers with it. A parent that
    dies without deciding (kill -9) takes the worker with it.
    """
    from llmctl.tokens.worker_start import exit_with_parent

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        exit_with_parent(parent_pid)
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _WORKER["encoder"] = spec.build()
    _WORKER["policy"] = policy


def encode_chunk(array: Any) -> ChunkResult | ChunkError:
    """Pool task: encode one chunk with this worker's encoder."""
    try:
        return encode_rows(array, _WORKER["encoder"], _WORKER["policy"])
    except LlmctlError as exc:
        return ChunkError(exc.message, exc.hint, exc.exit_code)
