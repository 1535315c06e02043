"""What a training run optimises: batches, their loss mask, evaluation data and sampling prompts.

The Trainer is the same for pretraining and SFT; an objective supplies what differs:

    objective.train_batch()      -> Batch     this rank's next micro-batch (resumable position)
    objective.eval_batches()     -> [Batch]   this rank's share of a fixed validation set
    objective.sample_prompts()   -> [SamplePrompt]
    objective.stop_ids()         -> ids that end a generated sample
    objective.state_dict() / load_state_dict()   the data position, a few numbers

The loss is cross-entropy over targets != IGNORE_INDEX, summed over the micro-batches of a step and
divided by the step's trained tokens over all ranks (llmctl/engine/trainer.py).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from llmctl.tokenizer.core import Tokenizer
from llmctl.tokenizer.template import document_prefix
from llmctl.tokens.loader import PackedWindows, WindowStream, eval_rows
from llmctl.tokens.shards import open_split

IGNORE_INDEX = -100
"""Target value the loss skips (padding, prompts in SFT)."""


@dataclass
class Batch:
    """One micro-batch, built on the host; `to(device)` moves it."""

    inputs: torch.Tensor
    """Token ids [B, T]."""
    targets: torch.Tensor
    """Next-token ids [B, T]; IGNORE_INDEX where not trained."""
    doc_ids: torch.Tensor | None = None
    """[B, T] document of each position (packed SFT): attention stays within a document."""
    position_ids: torch.Tensor | None = None
    """[B, T] RoPE positions restarting at 0 per document (packed SFT)."""
    tokens: int = 0
    """Non-padding tokens that go through the model."""
    samples: int = 0
    """Sequences (pretrain) or conversations (SFT)."""
    trained_tokens: int = -1
    """Targets the loss counts; computed from targets on the host when left at -1."""
    source: int = -1
    """Mixtures: the source of a validation batch (index into the objective's `sources`)."""
    source_tokens: tuple[int, ...] | None = None
    """Mixtures: tokens this micro-batch took from each source (this rank; the loop sums over ranks)."""

    def __post_init__(self) -> None:
        if self.trained_tokens < 0:
            self.trained_tokens = int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device`: pinned host memory and non-blocking copies on CUDA."""
        if device.type == "cpu":
            return self
        cuda = device.type == "cuda"

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return (t.pin_memory() if cuda else t).to(device, non_blocking=cuda)

        return replace(
            self,
            inputs=move(self.inputs),
            targets=move(self.targets),
            doc_ids=move(self.doc_ids),
            position_ids=move(self.position_ids),
        )


@dataclass(frozen=True)
class SamplePrompt:
    """A prompt the Trainer continues at each sampling round."""

    text: str
    """As shown in samples.jsonl."""
    ids: list[int]
    """As fed to the model (document prefix or chat markers included)."""
    reference: str | None = None
    """What the data continues with (SFT: the reference reply), shown beside the model's output."""
    source: str = "fixed"
    """'fixed' (config prompts) or 'validation'."""


class Objective(Protocol):
    """The interface the Trainer drives; PretrainObjective here, SFTObjective in llmctl/engine/sft.py."""

    name: str

    def train_batch(self) -> Batch:
        """This rank's next training micro-batch."""

    def eval_batches(self) -> list[Batch]:
        """This rank's share of the fixed validation set; the same list at every evaluation."""

    def sample_prompts(self) -> list[SamplePrompt]:
        """Prompts to continue at each sampling round, the same every round."""

    def stop_ids(self) -> list[int]:
        """Token ids that end a generated sample."""

    def describe(self) -> dict[str, Any]:
        """Facts for the start-of-run log line (windows, epochs, conversations...)."""

    def state_dict(self) -> dict[str, Any]:
        """The data position."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at a saved data position."""


def _shift(rows: np.ndarray) -> Batch:
    t = torch.from_numpy(rows)
    inputs, targets = t[:, :-1].contiguous(), t[:, 1:].contiguous()
    return Batch(
        inputs=inputs,
        targets=targets,
        tokens=inputs.numel(),
        samples=inputs.shape[0],
        trained_tokens=targets.numel(),
    )


class PretrainObjective:
    """Next-token prediction on packed windows of the pretraining shards; every target is trained."""

    name = "pretrain"

    def __init__(
        self,
        data_path: str | Path,
        meta: dict[str, Any],
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
        self.meta = meta
        self.tokenizer = tokenizer
        train = PackedWindows(open_split(data_path, train_split, meta), seq_len)
        self.stream = WindowStream(train, seed, micro_batch, rank, world)
        self.val: PackedWindows | None = None
        if val_split in meta.get("splits", {}):
            self.val = PackedWindows(open_split(data_path, val_split, meta), seq_len)
        self._eval_rows = eval_rows(self.val, eval_batches, micro_batch, rank, world) if self.val else []
        self._prefix = document_prefix(meta)
        self._prompts = [SamplePrompt(p, self._prefix + tokenizer.encode(p)) for p in prompts]
        if self.val is not None and len(self.val):
            # Evenly spaced validation windows, the same every round, so outputs compare across steps.
            for i in np.linspace(0, len(self.val) - 1, validation_prompts + 2)[1:-1].astype(int):
                window = self.val.window(int(i))
                ids = window[:prompt_tokens].tolist()
                ref = window[prompt_tokens : 2 * prompt_tokens].tolist()
                self._prompts.append(
                    SamplePrompt(tokenizer.decode(ids), ids, tokenizer.decode(ref), "validation")
                )

    def train_batch(self) -> Batch:
        return _shift(self.stream.next_rows())

    def eval_batches(self) -> list[Batch]:
        return [_shift(rows) for rows in self._eval_rows]

    def sample_prompts(self) -> list[SamplePrompt]:
        return list(self._prompts)

    def stop_ids(self) -> list[int]:
        eos = self.tokenizer.eos_id
        return [eos] if eos is not None else []

    def describe(self) -> dict[str, Any]:
        w = self.stream.windows
        return {
            "train_tokens": w.tokens,
            "train_windows": len(w),
            "val_windows": len(self.val) if self.val else 0,
            "eval_batches": len(self._eval_rows),
            "epoch": self.stream.epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)
