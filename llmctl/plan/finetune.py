"""What fine-tuning a model that already has weights costs: memory per method and time per 1M tokens.

    plan = plan_finetune(spec, "bf16", cfg, "models/smollm2", seq_len=2048, num_gpus=1, mfu=0.4)
    [m.name for m in plan.methods]      # ["full"]; LoRA and QLoRA are further entries of FINETUNE_METHODS

`llmctl budget --model DIR` (an imported or trained checkpoint) without --tokens shows this view: a model
with weights is fine-tuned on a data set of its own size, so a Chinchilla token count would answer the wrong
question. Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmctl.config import ModelConfig
from llmctl.plan.flops import FlopsBreakdown, ParamCounts, flops_per_token, param_counts
from llmctl.plan.hardware import GpuSpec, gpu_json
from llmctl.plan.memory import MemoryEstimate, training_memory
from llmctl.plan.shapes import shape_json

MILLION = 1_000_000


@dataclass(frozen=True)
class MethodSetup:
    """What a fine-tuning method is planned for."""

    cfg: ModelConfig
    seq_len: int
    dtype: str
    device_gib: float
    optim: str
    num_gpus: int
    flops: FlopsBreakdown


@dataclass(frozen=True)
class MethodRow:
    """One fine-tuning method: what it trains, the memory it takes, the FLOPs it spends per token."""

    name: str
    description: str
    trainable_params: int
    memory: MemoryEstimate
    flops_per_token: float
    """Training FLOPs per token (forward and backward), PaLM count."""


def full_finetuning(s: MethodSetup) -> MethodRow:
    """Every weight trained: the same states and FLOPs as pretraining the shape."""
    return MethodRow(
        name="full",
        description="full fine-tuning (every weight, "
        + ("Muon + AdamW" if s.optim == "muon" else "AdamW")
        + ")",
        trainable_params=param_counts(s.cfg).total,
        memory=training_memory(s.cfg, s.seq_len, s.dtype, s.device_gib, s.optim, s.num_gpus),
        flops_per_token=s.flops.train_palm,
    )


FINETUNE_METHODS: tuple[Callable[[MethodSetup], MethodRow], ...] = (full_finetuning,)
"""The rows of the fine-tuning view, in order: a method is one more function here."""


def memory_json(m: MemoryEstimate, micro_batch: int | None, verdict: str) -> dict[str, Any]:
    """A MemoryEstimate as `budget --json` prints it, judged at `micro_batch` when given."""
    return {
        "dtype": m.dtype,
        "weights_bytes": m.weights_bytes,
        "master_bytes": m.master_bytes,
        "grads_bytes": m.grads_bytes,
        "optimizer_bytes": m.optimizer_bytes,
        "optim": m.optim,
        "states_bytes": m.states_bytes,
        "activation_bytes_per_seq": m.activation_bytes_per_seq,
        "activation_bytes_per_seq_ckpt": m.activation_bytes_per_seq_ckpt,
        "device_bytes": m.device_bytes,
        "usable_bytes": m.usable_bytes,
        "max_micro_batch": m.max_micro_batch,
        "max_micro_batch_ckpt": m.max_micro_batch_ckpt,
        "fits": m.fits,
        "verdict": verdict,
        "micro_batch": None
        if micro_batch is None
        else {
            "size": micro_batch,
            "bytes": m.total_bytes(micro_batch),
            "bytes_ckpt": m.total_bytes(micro_batch, checkpointing=True),
            "fits": m.total_bytes(micro_batch) <= m.usable_bytes,
            "fits_ckpt": m.total_bytes(micro_batch, checkpointing=True) <= m.usable_bytes,
        },
    }


@dataclass(frozen=True)
class FinetunePlan:
    """Everything `llmctl budget --model DIR` prints without --tokens."""

    gpu: GpuSpec
    num_gpus: int
    dtype: str
    peak_flops: float
    """Dense peak of ONE GPU for dtype, FLOP/s."""
    mfu: float
    model: ModelConfig
    model_label: str
    seq_len: int
    params: ParamCounts
    flops: FlopsBreakdown
    methods: tuple[MethodRow, ...]
    micro_batch: int | None = None
    mode: str = "finetune"

    def verdict(self, row: MethodRow) -> str:
        """Whether `row` fits: at --micro-batch when given, else the largest micro-batch that does."""
        m = row.memory
        return m.verdict if self.micro_batch is None else m.micro_batch_verdict(self.micro_batch)

    def seconds_per_million(self, row: MethodRow) -> float:
        """Wall-clock seconds to train on 1M tokens on num_gpus GPUs at this MFU."""
        return row.flops_per_token * MILLION / (self.peak_flops * self.mfu * self.num_gpus)

    def to_json(self) -> dict[str, Any]:
        """One JSON document, stable keys, numbers as numbers."""
        return {
            "mode": self.mode,
            "gpu": gpu_json(self.gpu, self.num_gpus, self.dtype, self.peak_flops),
            "mfu": self.mfu,
            "model": self.model_label,
            "shape": shape_json(self.model),
            "seq_len": self.seq_len,
            "params_total": self.params.total,
            "params_6n": self.params.matmul,
            "tokens": None,
            "methods": [
                {
                    "method": r.name,
                    "description": r.description,
                    "trainable_params": r.trainable_params,
                    "flops_per_token_train": r.flops_per_token,
                    "seconds_per_million_tokens": self.seconds_per_million(r),
                    "gpu_hours_per_million_tokens": self.seconds_per_million(r) * self.num_gpus / 3600,
                    "memory": memory_json(r.memory, self.micro_batch, self.verdict(r)),
                }
                for r in self.methods
            ],
        }


def plan_finetune(
    spec: GpuSpec,
    dtype: str,
    peak: float,
    cfg: ModelConfig,
    label: str,
    *,
    seq_len: int,
    num_gpus: int,
    mfu: float,
    optim: str,
    micro_batch: int | None,
) -> FinetunePlan:
    """The fine-tuning view of `cfg` (a model with weights) on `num_gpus` GPUs of `spec`."""
    fl = flops_per_token(cfg, seq_len)
    setup = MethodSetup(cfg, seq_len, dtype, spec.memory_gib, optim, num_gpus, fl)
    return FinetunePlan(
        gpu=spec,
        num_gpus=num_gpus,
        dtype=dtype,
        peak_flops=peak,
        mfu=mfu,
        model=cfg,
        model_label=label,
        seq_len=seq_len,
        params=param_counts(cfg),
        flops=fl,
        methods=tuple(method(setup) for method in FINETUNE_METHODS),
        micro_batch=micro_batch,
    )
