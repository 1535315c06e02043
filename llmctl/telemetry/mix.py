"""Realised data-mixture proportions: tokens taken from each source, run totals kept across resumes.

tally = MixTally()
tally.start(info.data_sources)           # None for a one-source run: everything below is then empty
figures = tally.add(counts.source_tokens)  # {"tokens_by_source": {...}, "mix_fractions": {...}}
tally.data_mix()                          # summary.json's data_mix
"""

from __future__ import annotations

from typing import Any


class MixTally:
    """Tokens per mixture source since the run began (the checkpoint carries them)."""

    def __init__(self) -> None:
        self.sources: list[dict[str, Any]] = []
        self.tokens: list[int] = []

    def start(self, sources: Any) -> None:
        """Take the run's sources (RunInfo.data_sources); keeps totals restored before."""
        self.sources = [dict(s) for s in sources or ()]
        if len(self.tokens) != len(self.sources):
            self.tokens = [0] * len(self.sources)

    def add(self, source_tokens: tuple[int, ...] | None) -> dict[str, Any]:
        """Count one step; the figures a train record carries (none without a mixture)."""
        if not self.sources or source_tokens is None:
            return {}
        self.tokens = [a + int(b) for a, b in zip(self.tokens, source_tokens, strict=True)]
        total = sum(self.tokens) or 1
        names = [s["path"] for s in self.sources]
        return {
            "tokens_by_source": dict(zip(names, self.tokens, strict=True)),
            "mix_fractions": {n: t / total for n, t in zip(names, self.tokens, strict=True)},
        }

    def data_mix(self) -> list[dict[str, Any]] | None:
        """[{"path", "weight", "tokens", "epochs"}] for summary.json; None without a mixture."""
        if not self.sources:
            return None
        return [
            {
                "path": s["path"],
                "weight": s["weight"],
                "tokens": t,
                "epochs": t / s["epoch_tokens"] if s.get("epoch_tokens") else None,
            }
            for s, t in zip(self.sources, self.tokens, strict=True)
        ]

    def state_dict(self) -> list[int]:
        """The per-source totals."""
        return list(self.tokens)

    def load_state_dict(self, tokens: Any) -> None:
        """Restore per-source totals saved by state_dict (absent in older checkpoints: start from 0)."""
        self.tokens = [int(t) for t in tokens] if isinstance(tokens, list) else []
