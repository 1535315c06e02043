"""The tiktoken form of a tokenizer, kept between runs.

Converting a tokenizer.json to tiktoken ranks and checking that every token comes out the same takes
0.15 s for an 8K vocabulary, more for larger ones, on every `tokenize` and `count --data`: a quarter
of a whole `tokenize` of 12 MB. The checked result is kept under $LLMCTL_CACHE/tiktoken (default
~/.cache/llmctl), named by the tokenizer file's SHA-256 (its fingerprint), so an edited tokenizer is
never matched with another's form. Only forms that passed every check are kept. A missing, unreadable
or malformed entry means converting again, and a cache that cannot be written is skipped: the cache
only ever saves time. `choose_encoder` still checks a cached form against the tokenizer on its probe.
"""

from __future__ import annotations

import base64
import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmctl.files import atomic_write_text, cache_root

FORMAT = 1
"""Bumped whenever the conversion or this file's layout changes: older entries are then not read."""


@dataclass(frozen=True)
class KeptForm:
    """A kept tiktoken form: plain data, which `fast.kept_encoder` turns into an EncoderSpec."""

    pattern: str
    ranks: dict[bytes, int]
    rank_to_id: tuple[int, ...] | None


class _Form(Protocol):
    """What `store` reads of an EncoderSpec (llmctl/tokenizer/fast.py)."""

    backend: str
    pattern: str
    ranks: dict[bytes, int] | None
    rank_to_id: tuple[int, ...] | None


def entry_path(fingerprint: str) -> Path:
    """Where the tiktoken form of the tokenizer with this fingerprint is kept."""
    return cache_root() / "tiktoken" / f"v{FORMAT}-{fingerprint}.json"


def load(fingerprint: str) -> KeptForm | None:
    """The kept tiktoken form for this tokenizer, or None (never kept, unreadable or malformed)."""
    try:
        data = json.loads(entry_path(fingerprint).read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("fingerprint") != fingerprint:
            return None
        ranks = {base64.b64decode(token): int(rank) for token, rank in data["ranks"].items()}
        rank_to_id = data.get("rank_to_id")
        return KeptForm(
            str(data["pattern"]), ranks, tuple(int(i) for i in rank_to_id) if rank_to_id is not None else None
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def store(fingerprint: str, spec: _Form) -> None:
    """Keep `spec` (a checked tiktoken form) for the next run; any failure to write is ignored."""
    if spec.backend != "tiktoken" or spec.ranks is None:
        return
    entry: dict[str, Any] = {
        "format": FORMAT,
        "fingerprint": fingerprint,
        "pattern": spec.pattern,
        "ranks": {base64.b64encode(token).decode("ascii"): rank for token, rank in spec.ranks.items()},
        "rank_to_id": list(spec.rank_to_id) if spec.rank_to_id is not None else None,
    }
    with contextlib.suppress(Exception):  # the llmctl errors atomic writes raise included
        atomic_write_text(entry_path(fingerprint), json.dumps(entry, separators=(",", ":")))
