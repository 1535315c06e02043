"""What a training run optimises: the Objective interface, its defaults, and the batches it hands over.

The Trainer is the same for pretraining, SFT and DPO; an objective supplies what differs:

    objective.train_batch()      -> Batch     this rank's next micro-batch (resumable position)
    objective.eval_batches()     -> [Batch]   this rank's share of a fixed validation set
    objective.sample_prompts()   -> [SamplePrompt]
    objective.stop_ids()         -> ids that end a generated sample
    objective.state_dict() / load_state_dict()   the data position, a few numbers
    objective.loss_sum(model, batch, autocast)  -> (loss sum, correct)   default: masked cross-entropy
    objective.take_metrics(kind, dist, device)  -> (metrics, log lines)  default: none
    objective.summary_extra()                   -> figures for summary.json (default: none)
    objective.attach(model, autocast)           the policy, for objectives that sample from it (GRPO)
    objective.take_samples(step)                -> [SampleRecord] of its own (GRPO's rollouts; default: none)
    objective.scores_bytes, extra_forward_passes, sources                 defaults: False, 0.0, []

The loss is cross-entropy over targets != IGNORE_INDEX, summed over the micro-batches of a step and
divided by the step's trained tokens over all ranks (llmctl/engine/trainer.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from llmctl.config import TrainConfig

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
    """'fixed' (config prompts), 'validation', or 'train' (SFT data without a validation split)."""


def config_prompts(train: TrainConfig) -> list[str]:
    """`train.sample_prompts` where the user set them; none where they are the defaults, which are
    pretraining prompts (`Once upon a time`): a fine-tuning objective samples its own data's prompts then."""
    prompts = list(train.sample_prompts)
    return [] if prompts == TrainConfig().sample_prompts else prompts


class Objective(Protocol):
    """The whole interface the Trainer drives; BaseObjective supplies the defaults of the last six members.

    Objectives: PretrainObjective (llmctl/engine/pretrain.py), SFTObjective (sft.py), DPOObjective (dpo.py),
    GRPOObjective (grpo.py).
    """

    name: str
    """'pretrain', 'sft', 'dpo', 'grpo': the run log's and checkpoint.json's name for it."""
    scores_bytes: bool
    """Evaluation reports bits per byte (a text stream is scored, not replies)."""
    extra_forward_passes: float
    """Forward passes beyond the policy's per trained token (DPO's live reference: 1), for FLOPs and MFU."""
    sources: list[dict[str, Any]]
    """Mixtures: path, weight and tokens per epoch of each source, in order; empty for a single source."""
    perplexity_name: str | None
    """What exp(eval loss) is called in eval records and logs: 'perplexity' (of the text), 'reply_perplexity'
    (SFT: of the replies only), None where it is no perplexity (DPO: exp of a pair loss)."""

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

    def loss_sum(
        self, model: torch.nn.Module, batch: Batch, autocast: Callable[[], Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss over the batch's trained units, correct predictions among them)."""

    def take_metrics(self, kind: str, dist: Any, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """Figures gathered since the last call for `kind` ('train' or 'eval'), summed over ranks, and
        lines for the run log."""

    def summary_extra(self) -> dict[str, Any]:
        """Figures added to summary.json (SFT: what happened to the conversations)."""

    def attach(self, model: torch.nn.Module, autocast: Callable[[], Any]) -> None:
        """The model being trained (unwrapped), once its weights are loaded: GRPO samples from it."""

    def take_samples(self, step: int) -> list[Any]:
        """Sample records of the objective's own after `step` (GRPO: rollout completions with rewards)."""


def token_loss_sum(
    model: torch.nn.Module, batch: Batch, autocast: Callable[[], Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy over targets != IGNORE_INDEX, correct top-1 predictions among them)."""
    with autocast():
        logits = model(batch.inputs, batch.doc_ids, batch.position_ids)
    loss = F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    with torch.no_grad():
        correct = ((logits.argmax(-1) == batch.targets) & (batch.targets != IGNORE_INDEX)).sum()
    return loss, correct


class BaseObjective:
    """Defaults for an objective: masked cross-entropy, no metrics of its own, nothing added to the
    summary, no extra forward passes, no bits per byte, one source."""

    name = "objective"
    scores_bytes = False
    extra_forward_passes = 0.0
    perplexity_name: str | None = "perplexity"

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Mixtures override this; a single source lists none."""
        return []

    def loss_sum(
        self, model: torch.nn.Module, batch: Batch, autocast: Callable[[], Any]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The masked cross-entropy sum and correct predictions (`token_loss_sum`)."""
        return token_loss_sum(model, batch, autocast)

    def take_metrics(self, kind: str, dist: Any, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """No figures of its own."""
        return {}, []

    def summary_extra(self) -> dict[str, Any]:
        """Nothing added to summary.json."""
        return {}

    def attach(self, model: torch.nn.Module, autocast: Callable[[], Any]) -> None:
        """Nothing: batches come from data, not from the model."""

    def take_samples(self, step: int) -> list[Any]:
        """None of its own: the Trainer's sample rounds continue `sample_prompts`."""
        return []


def weighted_eval(
    sources: list[dict[str, Any]], rows: list[list[float]]
) -> tuple[float, float, dict[str, float]]:
    """(weight-averaged loss, weight-averaged accuracy, loss per source) from per-source
    [loss sum, correct, trained tokens] rows; sources without validation data are left out of both."""
    by_source: dict[str, float] = {}
    loss = accuracy = weight = 0.0
    for source, (loss_sum, correct, trained) in zip(sources, rows, strict=True):
        if trained <= 0:
            continue
        by_source[source["path"]] = loss_sum / trained
        loss += source["weight"] * loss_sum / trained
        accuracy += source["weight"] * correct / trained
        weight += source["weight"]
    return loss / weight, accuracy / weight, by_source


def shift_rows(rows: np.ndarray) -> Batch:
    """Token windows [B, T + 1] as a batch of inputs and next-token targets, every target trained."""
    t = torch.from_numpy(rows)
    inputs, targets = t[:, :-1].contiguous(), t[:, 1:].contiguous()
    return Batch(
        inputs=inputs,
        targets=targets,
        tokens=inputs.numel(),
        samples=inputs.shape[0],
        trained_tokens=targets.numel(),
    )
