"""Pretraining: next-token prediction on packed windows of token shards, from one source or a weighted
mixture (`--data A:0.7 --data B:0.3`), and `run_pretrain`, what `llmctl pretrain` calls.

    outcome = run_pretrain(load_config("examples/configs/quickstart.yaml", {"data.path": "tokens/py"}))
    objective = PretrainObjective(["tokens/py"], [meta], tokenizer, seq_len=256, micro_batch=8, seed=1337,
                                  eval_batches=8, prompts=["def main("])

One source draws its windows from llmctl.tokens.loader.WindowStream; a mixture (weights given) from
MixedStream, and each batch then carries the tokens it took from every source, so the loop can report
realised proportions. A mixture's validation batches are tagged with their source: the Trainer reports a
loss per source and, overall, their weight-averaged loss.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from llmctl.config import Config
from llmctl.engine import distributed as D
from llmctl.engine.objectives import BaseObjective, Batch, SamplePrompt, shift_rows
from llmctl.engine.run import RunInputs, RunOutcome, run_training
from llmctl.tokenizer.core import Tokenizer
from llmctl.tokenizer.template import document_prefix
from llmctl.tokens.loader import MixedStream, PackedWindows, WindowStream, eval_rows
from llmctl.tokens.shards import open_split


class PretrainObjective(BaseObjective):
    """Next-token prediction on packed windows of one source or of several drawn by weight; every target
    is trained."""

    name = "pretrain"
    scores_bytes = True

    def __init__(
        self,
        paths: list[str],
        metas: list[dict[str, Any]],
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        micro_batch: int,
        seed: int,
        eval_batches: int,
        prompts: list[str],
        weights: list[float] | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        rank: int = 0,
        world: int = 1,
        validation_prompts: int = 2,
        prompt_tokens: int = 32,
    ) -> None:
        self.paths, self.weights = list(paths), weights
        self.meta, self.tokenizer, self.seq_len = metas[0], tokenizer, seq_len
        trains = [
            PackedWindows(open_split(p, train_split, meta), seq_len)
            for p, meta in zip(paths, metas, strict=True)
        ]
        self.stream: WindowStream | MixedStream = (
            WindowStream(trains[0], seed, micro_batch, rank, world)
            if weights is None
            else MixedStream(trains, weights, seed, micro_batch, rank, world, names=self.paths)
        )
        self._windows = trains
        self.vals: list[PackedWindows | None] = [
            PackedWindows(open_split(p, val_split, meta), seq_len)
            if val_split in meta.get("splits", {})
            else None
            for p, meta in zip(paths, metas, strict=True)
        ]
        # Source -1: a single source's batches are not tagged (the Trainer keeps no per-source rows).
        self._eval: list[tuple[int, np.ndarray]] = [
            (i if weights is not None else -1, rows)
            for i, val in enumerate(self.vals)
            if val is not None
            for rows in eval_rows(val, eval_batches, micro_batch, rank, world)
        ]
        prefix = document_prefix(self.meta)
        self._prompts = [SamplePrompt(p, prefix + tokenizer.encode(p)) for p in prompts]
        first_val = next((v for v in self.vals if v is not None and len(v)), None)
        if first_val is not None:
            # Evenly spaced validation windows, the same every round, so outputs compare across steps.
            for i in np.linspace(0, len(first_val) - 1, validation_prompts + 2)[1:-1].astype(int):
                window = first_val.window(int(i))
                ids, ref = window[:prompt_tokens].tolist(), window[prompt_tokens : 2 * prompt_tokens].tolist()
                self._prompts.append(
                    SamplePrompt(tokenizer.decode(ids), ids, tokenizer.decode(ref), "validation")
                )

    @property
    def sources(self) -> list[dict[str, Any]]:
        """A mixture's path, normalised weight and tokens per epoch (windows x seq_len) of each source."""
        if self.weights is None:
            return []
        return [
            {"path": p, "weight": w, "epoch_tokens": len(win) * self.seq_len}
            for p, w, win in zip(self.paths, self.weights, self._windows, strict=True)
        ]

    def train_batch(self) -> Batch:
        batch = shift_rows(self.stream.next_rows())
        if isinstance(self.stream, MixedStream):
            return replace(batch, source_tokens=tuple(c * self.seq_len for c in self.stream.last_counts))
        return batch

    def eval_batches(self) -> list[Batch]:
        return [replace(shift_rows(rows), source=i) for i, rows in self._eval]

    def sample_prompts(self) -> list[SamplePrompt]:
        return list(self._prompts)

    def stop_ids(self) -> list[int]:
        eos = self.tokenizer.eos_id
        return [eos] if eos is not None else []

    def describe(self) -> dict[str, Any]:
        if self.weights is not None:
            return {
                "mix": " + ".join(f"{w:.3f} {p}" for p, w in zip(self.paths, self.weights, strict=True)),
                "train_windows": sum(len(w) for w in self._windows),
            }
        val = self.vals[0]
        return {
            "train_tokens": self._windows[0].tokens,
            "train_windows": len(self._windows[0]),
            "val_windows": len(val) if val else 0,
            "epoch": self.stream.epoch,  # type: ignore[union-attr]
        }

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


def pretrain_objective(cfg: Config, inputs: RunInputs, dist: D.DistInfo) -> PretrainObjective:
    """The PretrainObjective a config describes: data.sources mix by weight (data.mix_by), data.path is one."""
    from llmctl.tokens.mix import plan_mix

    weights = None
    paths = [s.path for s in inputs.specs]
    if cfg.data.sources:
        mix = plan_mix(inputs.specs, inputs.metas, mix_by=cfg.data.mix_by, split=cfg.data.train_split)
        paths, weights = [m.path for m in mix], [m.weight for m in mix]
    return PretrainObjective(
        paths,
        inputs.metas,
        inputs.tokenizer,
        weights=weights,
        seq_len=cfg.data.seq_len,
        micro_batch=cfg.train.micro_batch_size,
        seed=cfg.train.seed,
        eval_batches=cfg.train.eval_batches,
        prompts=list(cfg.train.sample_prompts),
        train_split=cfg.data.train_split,
        val_split=cfg.data.val_split,
        rank=dist.rank,
        world=dist.world_size,
    )


def run_pretrain(cfg: Config, reporter: Any = None, *, force: bool = False) -> RunOutcome:
    """Pretrain (or, with checkpoint.init, continue pretraining) as the config says; returns when the run
    completes or stops. `force` lets a fresh start replace an earlier run's files in the same directory."""
    return run_training(cfg, pretrain_objective, reporter=reporter, force=force)
