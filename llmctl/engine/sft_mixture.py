"""SFT on several chat data sets, each for its own number of epochs (`--data a:epochs=3 --data b:epochs=1`).

    objective = MixedSFTObjective(specs, metas, tokenizer, seq_len=512, micro_batch=8, seed=1337, ...)

Each source is an SFTObjective of its own (its own shuffled epochs and position, seeded by seed + its
index). Micro-batches are interleaved by a deterministic schedule in proportion to each source's planned
batches (epochs x batches per epoch), so every source reaches its epoch count at the same time: a
source of 3 epochs comes up three times as often per batch of its data as one of 1. All ranks follow
the same schedule, so they draw from the same source at each micro-step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from llmctl.data_sources import SourceSpec, sft_specs
from llmctl.engine.objectives import BaseObjective, Batch, SamplePrompt
from llmctl.engine.sft import SFTObjective
from llmctl.errors import LlmctlError
from llmctl.tokenizer.core import Tokenizer


@dataclass
class _Counts:
    counts: dict[str, int] = field(default_factory=dict)


class MixedSFTObjective(BaseObjective):
    """Several SFTObjectives interleaved micro-batch by micro-batch, each for its planned epochs."""

    name = "sft"

    def __init__(
        self,
        specs: list[SourceSpec],
        metas: list[dict[str, Any]],
        tokenizer: Tokenizer,
        *,
        seed: int,
        **kwargs: Any,
    ) -> None:
        self.specs = sft_specs(specs)
        self.parts = [
            SFTObjective(s.path, meta, tokenizer, seed=seed + i, **kwargs)
            for i, (s, meta) in enumerate(zip(self.specs, metas, strict=True))
        ]
        per_epoch = [p.stream.batches_per_epoch() for p in self.parts]
        planned = [s.epochs * n for s, n in zip(self.specs, per_epoch, strict=True)]  # type: ignore[operator]
        self.batch_weights = [p / sum(planned) for p in planned]
        self.epoch_tokens = [int((p.train.lengths - 1).sum()) for p in self.parts]
        planned_tokens = [s.epochs * t for s, t in zip(self.specs, self.epoch_tokens, strict=True)]  # type: ignore[operator]
        self.token_weights = [t / sum(planned_tokens) for t in planned_tokens]
        self.counts = [0] * len(self.parts)
        self.train = _Counts(
            {k: sum(p.train.counts.get(k, 0) for p in self.parts) for k in self.parts[0].train.counts}
        )
        self.packing = self.parts[0].packing

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Path, weight (share of the planned tokens), epochs asked for and tokens per epoch of each source."""
        return [
            {"path": s.path, "weight": w, "epochs_planned": s.epochs, "epoch_tokens": t}
            for s, w, t in zip(self.specs, self.token_weights, self.epoch_tokens, strict=True)
        ]

    def train_batch(self) -> Batch:
        slots = sum(self.counts) + 1
        pick = max(range(len(self.parts)), key=lambda i: (self.batch_weights[i] * slots - self.counts[i], -i))
        self.counts[pick] += 1
        batch = self.parts[pick].train_batch()
        return replace(
            batch, source_tokens=tuple(batch.tokens if i == pick else 0 for i in range(len(self.parts)))
        )

    def eval_batches(self) -> list[Batch]:
        return [replace(b, source=i) for i, p in enumerate(self.parts) for b in p.eval_batches()]

    def sample_prompts(self) -> list[SamplePrompt]:
        return self.parts[0].sample_prompts()

    def stop_ids(self) -> list[int]:
        return self.parts[0].stop_ids()

    def describe(self) -> dict[str, Any]:
        mix = " + ".join(f"{s.epochs:g} epoch(s) of {s.path}" for s in self.specs)
        return {
            "mix": mix,
            "conversations": self.train.counts.get("conversations"),
            "used": self.train.counts.get("used"),
            "eval_batches": sum(len(p.eval_batches()) for p in self.parts),
        }

    def summary_extra(self) -> dict[str, Any]:
        """Added to summary.json by the reporter: the conversation counts of all sources together."""
        first = self.parts[0].data_counts()
        return {"sft_data": {**first, **self.train.counts}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "mixture": [
                {"path": s.path, "epochs": s.epochs, "batches": c, "position": p.state_dict()}
                for s, c, p in zip(self.specs, self.counts, self.parts, strict=True)
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("mixture")
        if not isinstance(saved, list) or [(m.get("path"), m.get("epochs")) for m in saved] != [
            (s.path, s.epochs) for s in self.specs
        ]:
            raise LlmctlError(
                "the checkpoint's data position is for other SFT sources or epochs",
                "resume with the same --data sources and epochs the run started with",
            )
        for part, m in zip(self.parts, saved, strict=True):
            part.load_state_dict(m["position"])
        self.counts = [int(m["batches"]) for m in saved]
