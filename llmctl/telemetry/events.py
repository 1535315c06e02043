"""What the training loop hands to telemetry (docs/ARCHITECTURE.md sections 6 and 7).

The loop reports raw counts through a `Reporter`; telemetry turns them into rates, FLOPs, MFU and
energy, and sinks display or store them. The loop never computes a rate and never prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RunInfo:
    """Facts fixed for a run, given once at start."""

    run_dir: str | None
    """Where files go; None for runs that keep nothing (rank != 0, dry tests)."""
    config: dict[str, Any]
    """The resolved config (llmctl.config.to_dict)."""
    objective: str
    """'pretrain' or 'sft'."""
    n_params: int
    """Total parameters of the model."""
    n_params_non_embedding: int
    """Parameters minus the token embedding (and minus the head when tied)."""
    flops_per_token: float
    """Training FLOPs per token, PaLM convention (llmctl.plan.flops), used for FLOPs and MFU."""
    seq_len: int
    """Tokens per sequence."""
    device: str
    """torch device string, e.g. 'cpu' or 'cuda:0'."""
    device_name: str
    """Human device name (torch.cuda.get_device_name or the CPU model)."""
    dtype: str
    """'fp32', 'bf16' or 'fp16': the compute dtype in use."""
    world_size: int
    """Number of ranks."""
    total_steps: int
    """Planned optimizer steps (train.steps)."""
    start_step: int
    """Steps already done before this process started (resume), else 0."""
    tokens_per_step: int
    """Planned tokens per optimizer step (all ranks, all micro-steps)."""
    summary_extra: dict[str, Any] = field(default_factory=dict)
    """Figures the objective adds to summary.json as they are (SFT: `sft_data`, the conversation counts)."""
    data_sources: tuple[dict[str, Any], ...] | None = None
    """Mixtures: {"path", "weight", "epoch_tokens"} per source, in the order of StepCounts.source_tokens."""


@dataclass(frozen=True)
class StepCounts:
    """Raw counts of one optimizer step, already summed over ranks and micro-steps."""

    step: int
    """The optimizer step just finished, 1-based, counting from the run's very start (resume included)."""
    tokens: int
    """Non-padding tokens that went through the model."""
    trained_tokens: int
    """Tokens the loss counted."""
    samples: int
    """Sequences (pretrain) or conversations (SFT) in the step."""
    loss: float
    """Mean loss over trained tokens."""
    correct: int
    """Trained tokens whose top-1 prediction was right (token accuracy = correct / trained_tokens)."""
    lr: float
    """Learning rate used for this step."""
    grad_norm: float
    """Global gradient norm before clipping."""
    step_time: float
    """Wall seconds of the step (data, forward, backward, optimizer), measured after a device sync."""
    data_time: float = 0.0
    """Of which seconds spent waiting for the batch."""
    skipped_steps: int = 0
    """Steps of the run so far whose update was skipped for a non-finite loss or gradient norm."""
    source_tokens: tuple[int, ...] | None = None
    """Mixtures: tokens the step took from each source (RunInfo.data_sources order)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Objective-specific figures under their own names (DPO: `rewards/margins`, `logps/chosen`, ...)."""


@dataclass(frozen=True)
class EvalResult:
    """One evaluation on the validation split."""

    step: int
    loss: float
    perplexity: float
    accuracy: float
    tokens: int
    by_source: dict[str, float] | None = None
    """Mixtures: validation loss of each source; `loss` is then their weight-averaged loss."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Objective-specific figures, the same names as in train records (DPO: `rewards/accuracies`, ...)."""
    bpb: float | None = None
    """Bits per UTF-8 byte of the scored targets, special tokens left out (as `llmctl eval --data`);
    None where it does not apply (SFT, DPO)."""
    bytes: int | None = None
    """UTF-8 bytes of the non-special targets behind `bpb`."""
    perplexity_name: str | None = "perplexity"
    """The eval record's key for `perplexity`: 'reply_perplexity' for SFT (replies only), None for DPO
    (exp of a pair loss is no perplexity, so it is not recorded)."""


@dataclass(frozen=True)
class TaskEvalResult:
    """One round of multiple-choice tasks scored on the live model (train.eval_tasks)."""

    step: int
    tasks: dict[str, dict[str, Any]]
    """{task name: {"n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "centered_acc"}}."""
    centered_acc: float | None
    """Mean over tasks of (acc - chance) / (1 - chance)."""
    seconds: float
    """Wall seconds the round took (every task)."""


@dataclass(frozen=True)
class SampleRecord:
    """One generated continuation: the model's own output, not the targets."""

    step: int
    prompt: str
    output: str
    reference: str | None = None
    """SFT: the reference reply from the data, shown beside the model's."""
    source: str = "fixed"
    """'fixed' (config prompts) or 'validation' (drawn from the validation split)."""
    new_tokens: int | None = None
    """Tokens generated for this sample; with `seconds`, gives IT (generated tokens/s) in the summary."""
    seconds: float | None = None
    """Wall seconds spent generating this sample."""
    rewards: dict[str, float] | None = None
    """GRPO: each reward's score of this completion, their weighted `total` and its `advantage`."""


@dataclass
class RunSummary:
    """Figures a reporter returns at the end; written to summary.json by telemetry."""

    values: dict[str, Any] = field(default_factory=dict)


class Reporter(Protocol):
    """What the Trainer calls. Telemetry implements it; tests may pass a recording fake."""

    def start(self, info: RunInfo) -> None:
        """Called once before the first step."""

    def step(self, counts: StepCounts) -> None:
        """Called after every optimizer step; must return fast (no device syncs, no blocking I/O)."""

    def eval(self, result: EvalResult) -> None:
        """Called after each evaluation."""

    def task_eval(self, result: TaskEvalResult) -> None:
        """Called after each round of train.eval_tasks."""

    def samples(self, records: list[SampleRecord]) -> None:
        """Called after each sampling round."""

    def log(self, message: str) -> None:
        """A line of information (checkpoint saved, resumed from, stopping because...)."""

    def state_dict(self) -> dict[str, Any]:
        """Cumulative counters to store in a checkpoint."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore cumulative counters after a resume (rates restart from the new window)."""

    def close(self, status: str) -> RunSummary:
        """Called once at the end ('completed', 'interrupted', 'time_limit', 'failed')."""
