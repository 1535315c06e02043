"""UTF-8 bytes each token id stands for, so losses can be reported in bits per byte.

    lengths = token_byte_lengths(tokenizer)     # np.int64 [vocab]; 0 for special tokens
    bpb = loss_nats_sum / math.log(2) / lengths[targets].sum()

Byte-level BPE tokens (GPT-2 alphabet) map each character to one byte, so a token's bytes are exact
even when it holds part of a multi-byte character. Other tokenizers use the UTF-8 length of the
token decoded alone, with sentencepiece's byte pieces (`<0xNN>`) counted as one byte.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def _byte_level(tokenizer: Any) -> bool:
    if getattr(tokenizer, "kind", None) != "hf":
        return False
    try:
        data = json.loads(tokenizer.backend.to_str())
    except (AttributeError, ValueError):
        return False
    return (data.get("decoder") or {}).get("type") == "ByteLevel"


def token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """Bytes of text per token id, int64 [vocab_size]; special tokens count 0 (they are not text)."""
    from llmctl.tokenizer.fast import UNICODE_TO_BYTE

    vocab = tokenizer.vocab_size
    lengths = np.zeros(vocab, dtype=np.int64)
    specials = set(tokenizer.special_ids().values())
    byte_level = _byte_level(tokenizer)
    added: dict[int, str] = {}
    if byte_level:
        added = {i: t.content for i, t in tokenizer.backend.get_added_tokens_decoder().items()}
    for i in range(vocab):
        if i in specials:
            continue
        if i in added:
            lengths[i] = len(added[i].encode("utf-8"))
            continue
        piece = tokenizer.id_to_token(i)
        if byte_level and piece and all(c in UNICODE_TO_BYTE for c in piece):
            lengths[i] = len(piece)
        elif piece and _BYTE_PIECE.match(piece):
            lengths[i] = 1
        else:
            lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
    return lengths


def special_id_mask(tokenizer: Any, size: int) -> np.ndarray:
    """bool [size], True at the ids of special tokens (BOS, EOS, chat markers...)."""
    mask = np.zeros(size, dtype=bool)
    for i in tokenizer.special_ids().values():
        if 0 <= i < size:
            mask[i] = True
    return mask
