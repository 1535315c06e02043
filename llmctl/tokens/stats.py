"""Token and document counts of a shard directory, from meta.json and the .idx files only.

Nothing is re-tokenized and no token is read: document lengths come from the offsets (8 bytes per
document), so counting billions of tokens takes as long as reading their document index. Needs numpy
only (no tokenizers, no pyarrow), so `llmctl count` starts instantly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmctl.tokens.shards import open_split, read_meta, split_names


def length_stats(lengths: np.ndarray) -> dict[str, float | int]:
    """Mean, median and max document length (0 for no documents)."""
    if len(lengths) == 0:
        return {"mean_doc_tokens": 0.0, "median_doc_tokens": 0.0, "max_doc_tokens": 0}
    return {
        "mean_doc_tokens": float(np.mean(lengths)),
        "median_doc_tokens": float(np.median(lengths)),
        "max_doc_tokens": int(np.max(lengths)),
    }


def summarize(per_split: dict[str, dict[str, Any]], lengths: dict[str, np.ndarray]) -> dict[str, Any]:
    """Add length statistics per split and a `total` row over all splits."""
    for split, row in per_split.items():
        row.update(length_stats(lengths[split]))
    total: dict[str, Any] = {
        key: sum(row[key] for row in per_split.values())
        for key in (
            "tokens",
            "documents",
            "trained_tokens",
            "empty_skipped",
            "invalid_utf8_replaced",
            "text_bytes",
        )
        if all(key in row for row in per_split.values())
    }
    total.update(length_stats(np.concatenate(list(lengths.values())) if lengths else np.zeros(0, np.int64)))
    return {"splits": per_split, "total": total}


def count_shards(root: str | Path, splits: list[str] | None = None) -> dict[str, Any]:
    """Counts per split and in total for a token directory written by `llmctl tokenize`."""
    meta = read_meta(root)
    per_split: dict[str, dict[str, Any]] = {}
    lengths: dict[str, np.ndarray] = {}
    for split in splits or split_names(meta):
        shards = open_split(root, split, meta)
        info = meta["splits"][split]
        per_split[split] = {
            "tokens": int(info["tokens"]),
            "documents": int(info["documents"]),
            "trained_tokens": int(info["trained_tokens"]),
            "empty_skipped": int(info.get("empty_skipped", 0)),
            "invalid_utf8_replaced": int(info.get("invalid_utf8_replaced", 0)),
            "text_bytes": int(info.get("text_bytes", 0)),
            "shards": len(shards),
        }
        lengths[split] = (
            np.concatenate([np.diff(s.offsets) for s in shards]) if shards else np.zeros(0, dtype=np.int64)
        )
    result = summarize(per_split, lengths)
    result["total"]["shards"] = sum(row["shards"] for row in per_split.values())
    return {
        "path": str(root),
        "mode": meta["mode"],
        "dtype": meta["dtype"],
        "tokenizer": meta["tokenizer"]["path"],
        "fingerprint": meta["tokenizer"]["fingerprint"],
        **result,
    }
