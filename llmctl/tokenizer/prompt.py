"""The prompt prefix: what a model saw before every document in training, so inference starts the same way."""

from __future__ import annotations

from typing import Any


def document_prefix(meta: dict[str, Any]) -> list[int]:
    """The token a document starts after in the shards: BOS when documents are preceded by it, EOS when
    they follow one. Prompts get it so the model sees a document start the way it saw them in training."""
    sep = meta.get("separator") or {}
    tok = meta.get("tokenizer") or {}
    policy = sep.get("policy")
    if policy in ("bos", "bos+eos") and tok.get("bos_id") is not None:
        return [int(tok["bos_id"])]
    if policy == "eos" and tok.get("eos_id") is not None:
        return [int(tok["eos_id"])]
    return []
