"""Pretraining on a weighted mixture of token directories (`--data A:0.7 --data B:0.3`).

    objective = MixedPretrainObjective(mix, metas, tokenizer, seq_len=256, micro_batch=8, seed=1337, ...)

Batches come from llmctl.tokens.loader.MixedStream; each carries the tokens it took from every source,
so the loop can report realised proportions. Validation batches are tagged with their source: the
Trainer reports a loss per source and, overall, their weight-averaged loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from llmctl.engine.objectives import BaseObjective, Batch, SamplePrompt, _shift
from llmctl.tokenizer.core import Tokenizer
from llmctl.tokenizer.template import document_prefix
from llmctl.tokens.loader import MixedStream, PackedWindows, eval_rows
from llmctl.tokens.mix import MixSource
from llmctl.tokens.shards import open_split


class MixedPretrainObjective(BaseObjective):
    """Next-token prediction on packed windows drawn from several sources by weight."""

    name = "pretrain"
    scores_bytes = True

    def __init__(
        self,
        mix: list[MixSource],
        metas: list[dict[str, Any]],
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        micro_batch: int,
        seed: int,
        eval_batches: int,
        prompts: list[str],
        train_split: str = "train",
        val_split: str = "validation",
        rank: int = 0,
        world: int = 1,
        validation_prompts: int = 2,
        prompt_tokens: int = 32,
    ) -> None:
        self.mix = mix
        self.meta = metas[0]
        self.tokenizer = tokenizer
        self.seq_len = seq_len
        trains = [
            PackedWindows(open_split(m.path, train_split, meta), seq_len)
            for m, meta in zip(mix, metas, strict=True)
        ]
        self.stream = MixedStream(
            trains, [m.weight for m in mix], seed, micro_batch, rank, world, names=[m.path for m in mix]
        )
        self._eval: list[tuple[int, np.ndarray]] = []
        first_val: PackedWindows | None = None
        for i, (m, meta) in enumerate(zip(mix, metas, strict=True)):
            if val_split in meta.get("splits", {}):
                val = PackedWindows(open_split(m.path, val_split, meta), seq_len)
                first_val = first_val or (val if len(val) else None)
                self._eval += [(i, rows) for rows in eval_rows(val, eval_batches, micro_batch, rank, world)]
        prefix = document_prefix(self.meta)
        self._prompts = [SamplePrompt(p, prefix + tokenizer.encode(p)) for p in prompts]
        if first_val is not None:
            for i in np.linspace(0, len(first_val) - 1, validation_prompts + 2)[1:-1].astype(int):
                window = first_val.window(int(i))
                ids, ref = window[:prompt_tokens].tolist(), window[prompt_tokens : 2 * prompt_tokens].tolist()
                self._prompts.append(
                    SamplePrompt(tokenizer.decode(ids), ids, tokenizer.decode(ref), "validation")
                )

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Path, normalised weight and tokens per epoch (windows x seq_len) of each source, in order."""
        return [
            {"path": m.path, "weight": m.weight, "epoch_tokens": len(w) * self.seq_len}
            for m, w in zip(self.mix, self.stream.sources, strict=True)
        ]

    def train_batch(self) -> Batch:
        batch = _shift(self.stream.next_rows())
        return replace(batch, source_tokens=tuple(c * self.seq_len for c in self.stream.last_counts))

    def eval_batches(self) -> list[Batch]:
        return [replace(_shift(rows), source=i) for i, rows in self._eval]

    def sample_prompts(self) -> list[SamplePrompt]:
        return list(self._prompts)

    def stop_ids(self) -> list[int]:
        eos = self.tokenizer.eos_id
        return [eos] if eos is not None else []

    def describe(self) -> dict[str, Any]:
        parts = " + ".join(f"{m.weight:.3f} {m.path}" for m in self.mix)
        return {
            "mix": parts,
            "train_windows": sum(len(w) for w in self.stream.sources),
            "eval_batches": len(self._eval),
        }

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
