"""What fine-tuning a model that already has weights costs: memory per method and time per 1M tokens.

    plan = plan_finetune(spec, "bf16", cfg, "models/smollm2", seq_len=2048, num_gpus=1, mfu=0.4)
    [m.name for m in plan.methods]      # ["full", "lora", "qlora"]: the entries of FINETUNE_METHODS

`llmctl budget --model DIR` (an imported or trained checkpoint) without --tokens shows this view: a model
with weights is fine-tuned on a data set of its own size, so a Chinchilla token count would answer the wrong
question. Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from llmctl.config import LORA_GROUPS, ModelConfig
from llmctl.plan.flops import FlopsBreakdown, ParamCounts, flops_per_token, param_counts
from llmctl.plan.hardware import GpuSpec, gpu_json
from llmctl.plan.lora import LoraSpec, adapter_params, adapters_valid, lora_flops_per_token, lora_memory
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
    lora: LoraSpec = LoraSpec()
    """The adapters the LoRA and QLoRA rows are planned with (--lora.*)."""


@dataclass(frozen=True)
class MethodRow:
    """One fine-tuning method: what it trains, the memory it takes, the FLOPs it spends per token."""

    name: str
    description: str
    trainable_params: int
    memory: MemoryEstimate
    flops_per_token: float
    """Training FLOPs per token (forward and backward), PaLM count."""
    lora: LoraSpec | None = None
    """The adapters of a LoRA or QLoRA row."""

    @property
    def flags(self) -> str:
        """The training flags that choose this method."""
        if self.lora is None:
            return ""
        spec = self.lora
        targets = "" if spec.names == LORA_GROUPS["all-linear"] else f" --lora.targets {','.join(spec.names)}"
        dropout = f" --lora.dropout {spec.dropout:g}" if spec.dropout else ""
        q = f" --lora.quantize {spec.quantize}" if spec.quantize else ""
        return f"--lora.rank {spec.rank}{targets}{dropout}{q}"


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


def _adapter_row(s: MethodSetup, quantize: str | None) -> MethodRow:
    spec = replace(s.lora, quantize=quantize)
    base = "4-bit NF4 base" if quantize else "fp32 base"
    optim = "Muon" if s.optim == "muon" else "AdamW"
    return MethodRow(
        name="qlora" if quantize else "lora",
        description=f"{'QLoRA' if quantize else 'LoRA'} rank {spec.rank} on {' '.join(spec.names)} "
        f"({base} frozen, adapters with {optim})",
        trainable_params=adapter_params(s.cfg, spec),
        memory=lora_memory(s.cfg, s.seq_len, s.dtype, s.device_gib, spec, s.optim, s.num_gpus),
        flops_per_token=lora_flops_per_token(s.cfg, spec, s.flops.attention_palm),
        lora=spec,
    )


def lora_finetuning(s: MethodSetup) -> MethodRow:
    """Adapters on a frozen base held as the engine holds it (fp32 parameters, bf16 matmuls)."""
    return _adapter_row(s, None)


def qlora_finetuning(s: MethodSetup) -> MethodRow:
    """Adapters on a frozen base stored in 4-bit NF4 with double quantization."""
    return _adapter_row(s, "nf4")


FINETUNE_METHODS: tuple[Callable[[MethodSetup], MethodRow], ...] = (
    full_finetuning,
    lora_finetuning,
    qlora_finetuning,
)
"""The rows of the fine-tuning view, in order: a method is one more function here."""


def adapter_alternatives(rows: tuple[MethodRow, ...]) -> str:
    """What to add to a verdict of full fine-tuning that does not fit: the adapter rows that fit, with the
    largest micro-batch of each (never more GPUs)."""
    adapters = [r for r in rows if r.lora is not None]
    if not adapters:
        return ""
    fit = [r for r in adapters if r.memory.fits]
    if not fit:
        return f"; nor do LoRA or QLoRA at rank {adapters[0].lora.rank}"  # type: ignore[union-attr]
    parts = []
    for r in fit:
        m, label = r.memory, "QLoRA" if r.name == "qlora" else "LoRA"
        batch = (
            f"micro-batch up to {m.max_micro_batch}, {m.max_micro_batch_ckpt} with activation checkpointing"
            if m.max_micro_batch
            else f"micro-batch up to {m.max_micro_batch_ckpt} with activation checkpointing "
            "(--train.activation_checkpointing=true)"
        )
        parts.append(f"{label} ({r.flags}): {batch}")
    return "; fine-tuning with adapters fits: " + "; ".join(parts)


def memory_json(m: MemoryEstimate, micro_batch: int | None, verdict: str) -> dict[str, Any]:
    """A MemoryEstimate as `budget --json` prints it, judged at `micro_batch` when given."""
    return {
        "dtype": m.dtype,
        "method": m.method,
        "frozen_bytes": m.frozen_bytes,
        "weights_bytes": m.weights_bytes,
        "weights_bytes_ckpt": m.states(checkpointing=True) - m.states_bytes + m.weights_bytes,
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
        text = m.verdict if self.micro_batch is None else m.micro_batch_verdict(self.micro_batch)
        if text.startswith("does not fit"):
            # Name the methods that hold less (LoRA and QLoRA for full, QLoRA for LoRA) and fit.
            lighter = tuple(
                r for r in self.methods if r.lora is not None and r.memory.states_bytes < m.states_bytes
            )
            text += adapter_alternatives(lighter)
        return text

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
                    "lora": None
                    if r.lora is None
                    else {
                        "rank": r.lora.rank,
                        "alpha": r.lora.alpha,
                        "dropout": r.lora.dropout,
                        "targets": list(r.lora.names),
                        "quantize": r.lora.quantize,
                        "flags": r.flags,
                    },
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
    lora: LoraSpec | None = None,
) -> FinetunePlan:
    """The fine-tuning view of `cfg` (a model with weights) on `num_gpus` GPUs of `spec`; the LoRA and
    QLoRA rows use `lora` (default: rank 16 on every projection)."""
    fl = flops_per_token(cfg, seq_len)
    setup = MethodSetup(cfg, seq_len, dtype, spec.memory_gib, optim, num_gpus, fl, lora or LoraSpec())
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
        # A shape too small for the default rank gets no adapter rows unless --lora.rank asked for them.
        methods=tuple(
            m(setup)
            for m in FINETUNE_METHODS
            if m is full_finetuning or lora or adapters_valid(cfg, setup.lora)
        ),
        micro_batch=micro_batch,
    )
