"""What a compute budget buys, and what a training run costs: the core of `llmctl budget`.

    plan = plan_budget(gpu="L4", hours=24, tokens_per_param=100)         # forward: GPU time -> N, D, shape
    plan = plan_budget(gpu="A100-80GB", model="124m", tokens="2.5B")      # inverse: model + tokens -> GPU-hours

Forward: C = peak x GPUs x hours x MFU; compute-optimal N and D from C = 6ND with D = r N (r = 20 is
Chinchilla's ratio, Hoffmann et al. 2022); a concrete shape near N. Here N is the 6N count (weights in
matmuls plus the output head), the count C = 6ND is true for. Pure Python: no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmctl.config import ModelConfig
from llmctl.errors import LlmctlError
from llmctl.plan.finetune import (
    FINETUNE_METHODS,
    FinetunePlan,
    MethodRow,
    MethodSetup,
    adapter_alternatives,
    memory_json,
    plan_finetune,
)
from llmctl.plan.flops import FlopsBreakdown, ParamCounts, flops_per_token, param_counts
from llmctl.plan.hardware import GpuSpec, gpu_by_name, gpu_json, require_peak_flops, resolve_dtype
from llmctl.plan.lora import LoraSpec, adapters_valid, check_lora_spec
from llmctl.plan.memory import MemoryEstimate, training_memory
from llmctl.plan.ranges import check_range
from llmctl.plan.shapes import resolve_model, shape_json, suggest_shape
from llmctl.units import fmt_count, parse_count

CHINCHILLA_RATIO = 20.0
"""Tokens per parameter at the compute-optimal point (Hoffmann et al. 2022)."""

# Hoffmann et al. 2022, approach 3 (eq. 10): L(N, D) = E + A / N^alpha + B / D^beta, fitted to their
# runs on MassiveText with their tokenizer; N counts all parameters.
CHINCHILLA_FIT = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def chinchilla_loss(params: float, tokens: float) -> float:
    """Predicted loss (nats per token) of the Chinchilla approach-3 fit; valid for the paper's data only."""
    f = CHINCHILLA_FIT
    return f["E"] + f["A"] / params ** f["alpha"] + f["B"] / tokens ** f["beta"]


def compute_optimal(flops: float, tokens_per_param: float) -> tuple[float, float]:
    """(N, D) with 6 N D = flops and D = tokens_per_param x N."""
    n = math.sqrt(flops / (6 * tokens_per_param))
    return n, tokens_per_param * n


def shape_within_budget(
    compute: float, tokens_per_param: float, vocab_size: int, seq_len: int
) -> ModelConfig:
    """A shape whose training on r N tokens costs `compute` FLOPs by the PaLM count.

    C = 6ND leaves attention out; at short widths and long sequences attention adds 10-30%, so a
    shape picked at the 6ND optimum would overrun the budget. Scale N by the shape's
    PaLM / 6N ratio k (C = 6 k N D) and pick again; two or three rounds settle it.
    """
    n = compute_optimal(compute, tokens_per_param)[0]
    cfg = suggest_shape(n, vocab_size)
    for _ in range(4):
        fl = flops_per_token(cfg, seq_len)
        n = math.sqrt(compute / (tokens_per_param * fl.train_palm / fl.n))
        nxt = suggest_shape(n, vocab_size)
        if nxt == cfg:
            break
        cfg = nxt
    return cfg


@dataclass(frozen=True)
class CostRow:
    """Cost of the run under one FLOPs convention."""

    convention: str
    flops: float
    gpu_hours_at_peak: float
    gpu_hours_at_mfu: float
    wall_hours_at_mfu: float
    """On num_gpus GPUs."""


@dataclass(frozen=True)
class PeakRow:
    """What one way of counting the budget gives (forward mode): the notes' way next to ours."""

    label: str
    peak_flops_per_gpu: float
    utilisation: float
    flops: float
    params: float
    tokens: float


@dataclass(frozen=True)
class BudgetPlan:
    """Everything `llmctl budget` prints, both modes."""

    mode: str
    """`forward` (hours -> model) or `inverse` (model + tokens -> hours)."""
    gpu: GpuSpec
    num_gpus: int
    dtype: str
    peak_flops: float
    """Dense peak of ONE GPU for dtype, FLOP/s."""
    mfu: float
    tokens_per_param: float
    hours: float | None
    """Forward mode: the budget's wall-clock hours."""
    compute_flops: float | None
    """Forward mode: C, the FLOPs the budget delivers at this MFU."""
    optimal_params: float | None
    optimal_tokens: float | None
    model: ModelConfig
    model_label: str
    seq_len: int
    params: ParamCounts
    flops: FlopsBreakdown
    n: float
    """The N of C = 6ND for this plan: the model's 6N count, or --params as given."""
    tokens: float
    """Training tokens D for the model."""
    costs: tuple[CostRow, ...]
    peaks: tuple[PeakRow, ...]
    memory: MemoryEstimate
    loss: float
    micro_batch: int | None = None
    """--micro-batch: the memory verdict is for this many sequences per forward pass."""
    adapters: tuple[MethodRow, ...] = ()
    """LoRA and QLoRA fine-tuning of the model (inverse mode with --model): what the verdict names when
    full training does not fit."""

    @property
    def memory_verdict(self) -> str:
        """Whether training fits the GPU: at --micro-batch when given, else the largest micro-batch that does."""
        m = self.memory
        text = m.verdict if self.micro_batch is None else m.micro_batch_verdict(self.micro_batch)
        return text + adapter_alternatives(self.adapters) if text.startswith("does not fit") else text

    @property
    def budget_tokens_for_shape(self) -> float | None:
        """Forward mode: tokens the budget buys for the concrete shape, at its PaLM FLOPs per token."""
        return None if self.compute_flops is None else self.compute_flops / self.flops.train_palm

    def to_json(self) -> dict[str, Any]:
        """One JSON document, stable keys, numbers as numbers."""
        m = self.memory
        return {
            "mode": self.mode,
            "gpu": gpu_json(self.gpu, self.num_gpus, self.dtype, self.peak_flops),
            "mfu": self.mfu,
            "hours": self.hours,
            "compute_flops": self.compute_flops,
            "tokens_per_param": self.tokens_per_param,
            "optimal_params": self.optimal_params,
            "optimal_tokens": self.optimal_tokens,
            "model": self.model_label,
            "shape": shape_json(self.model),
            "seq_len": self.seq_len,
            "params_total": self.params.total,
            "params_6n": self.params.matmul,
            "n": self.n,
            "tokens": self.tokens,
            "budget_tokens_for_shape": self.budget_tokens_for_shape,
            "flops_per_token_train": self.flops.train_palm,
            "costs": [asdict(c) for c in self.costs],
            "peak_conventions": [asdict(p) for p in self.peaks],
            "memory": memory_json(m, self.micro_batch, self.memory_verdict),
            "chinchilla_loss": self.loss,
        }


def _costs(
    plan_n: float, tokens: float, fl: FlopsBreakdown, shape_note: str, peak: float, mfu: float, num_gpus: int
) -> tuple[CostRow, ...]:
    def row(label: str, flops: float) -> CostRow:
        at_peak = flops / peak / 3600
        return CostRow(label, flops, at_peak, at_peak / mfu, at_peak / mfu / num_gpus)

    return (
        row("6ND", 6 * plan_n * tokens),
        row(f"PaLM{shape_note}", fl.train_palm * tokens),
    )


def plan_budget(
    gpu: str,
    num_gpus: int = 1,
    hours: float | None = None,
    mfu: float = 0.4,
    tokens_per_param: float | None = None,
    dtype: str = "auto",
    model: str | None = None,
    params: str | float | None = None,
    tokens: str | float | None = None,
    seq_len: int | None = None,
    vocab_size: int = 32768,
    optim: str = "adamw",
    micro_batch: int | None = None,
    lora: LoraSpec | None = None,
) -> BudgetPlan | FinetunePlan:
    """Forward mode with `hours`; inverse mode with `model` or `params` (and `tokens` or `tokens_per_param`).

    `model` may be a checkpoint or Hugging Face model directory (an imported model): its shape is read from
    checkpoint.json or config.json, and without `tokens` or `tokens_per_param` the plan is the fine-tuning
    view (memory per method, time per 1M tokens), not a pretraining run; so is a preset with `lora` (the
    adapters of the LoRA and QLoRA rows, which a verdict of full training that does not fit also names).
    `micro_batch` judges memory at that many sequences per pass."""
    spec = gpu_by_name(gpu)
    resolved = resolve_dtype(spec, dtype)
    peak = require_peak_flops(spec, resolved)
    check_range("hours", hours)
    check_range("num-gpus", num_gpus)
    check_range("tokens-per-param", tokens_per_param)
    check_range("seq-len", seq_len)
    check_range("vocab-size", vocab_size)
    if optim not in ("adamw", "muon"):
        raise LlmctlError(f"--optim must be adamw or muon, got {optim!r}", "e.g. --optim muon")
    check_range("micro-batch", micro_batch)
    if not 0 < mfu <= 1:
        raise LlmctlError(
            f"--mfu must be in (0, 1], got {mfu:g}", "e.g. --mfu 0.4 for 40% model FLOPs utilisation"
        )
    token_count = parse_count(tokens, "--tokens") if tokens is not None else None
    param_count = parse_count(params, "--params") if params is not None else None
    check_range("tokens", token_count)
    check_range("params", param_count)
    inverse = model is not None or param_count is not None
    if inverse and hours is not None:
        raise LlmctlError(
            "--hours plans forward and --model/--params plan inverse; give one of them",
            "--gpu L4 --hours 24, or --gpu L4 --model 124m --tokens 2.5B",
        )
    if not inverse and hours is None:
        raise LlmctlError(
            "nothing to plan: give --hours, or --model/--params with --tokens",
            "--gpu L4 --hours 24 (what a budget buys), --gpu L4 --model 124m --tokens 2.5B (what a run costs)",
        )
    if model is not None and param_count is not None:
        raise LlmctlError("give --model or --params, not both", "drop one of them")
    if token_count is not None and tokens_per_param is not None:
        raise LlmctlError("give --tokens or --tokens-per-param, not both", "drop one of them")
    if not inverse and token_count is not None:
        raise LlmctlError(
            "--tokens is for inverse mode (--model/--params)", "use --tokens-per-param with --hours"
        )

    if lora is not None and model is None:
        raise LlmctlError("--lora.* plans adapters on a model's weights", "add --model DIR or a preset name")
    finetune = model is not None and (Path(model).is_dir() or lora is not None)
    if finetune and token_count is None and tokens_per_param is None:
        # A model with weights is fine-tuned: a Chinchilla token count for it answers the wrong question.
        assert model is not None
        cfg, default_seq = resolve_model(model, {})
        if lora is not None:
            check_lora_spec(cfg, lora)
        return plan_finetune(
            spec,
            resolved,
            peak,
            cfg,
            model,
            seq_len=seq_len if seq_len is not None else default_seq,
            num_gpus=num_gpus,
            mfu=mfu,
            optim=optim,
            micro_batch=micro_batch,
            lora=lora,
        )
    r = tokens_per_param if tokens_per_param is not None else CHINCHILLA_RATIO
    per_gpu_second = peak * num_gpus
    compute = optimal_n = optimal_d = None
    peaks: tuple[PeakRow, ...] = ()
    if inverse:
        if model is not None:
            cfg, default_seq = resolve_model(model, {})
            label, n = model, float(param_counts(cfg).matmul)
        else:
            assert param_count is not None
            cfg = suggest_shape(param_count, vocab_size)
            default_seq, label, n = 1024, f"a shape near --params {fmt_count(param_count)}", param_count
        d = token_count if token_count is not None else r * n
        r = d / n
    else:
        assert hours is not None
        seconds = hours * 3600
        compute = per_gpu_second * seconds * mfu
        optimal_n, optimal_d = compute_optimal(compute, r)
        seq_for_shape = seq_len if seq_len is not None else 1024
        cfg = shape_within_budget(compute, r, vocab_size, seq_for_shape)
        default_seq, label = (
            1024,
            "sized so r N tokens at its PaLM FLOPs (attention included) fill the budget",
        )
        n = float(param_counts(cfg).matmul)
        d = r * n
        rows = []
        if resolved != "fp32":
            # Datasheets print tensor-core peaks with 2:4 sparsity first: twice the dense rate.
            rows.append(("datasheet headline (2:4 sparsity), 100% of it", 2 * peak, 1.0))
        rows += [("dense peak, 100% of it", peak, 1.0), (f"dense peak at MFU {mfu:g} (this plan)", peak, mfu)]
        peaks = tuple(
            PeakRow(lab, p, u, p * num_gpus * seconds * u, *compute_optimal(p * num_gpus * seconds * u, r))
            for lab, p, u in rows
        )
    seq = seq_len if seq_len is not None else default_seq
    fl = flops_per_token(cfg, seq)
    shape_note = "" if model is not None else " (this shape)"
    return BudgetPlan(
        mode="inverse" if inverse else "forward",
        gpu=spec,
        num_gpus=num_gpus,
        dtype=resolved,
        peak_flops=peak,
        mfu=mfu,
        tokens_per_param=r,
        hours=hours,
        compute_flops=compute,
        optimal_params=optimal_n,
        optimal_tokens=optimal_d,
        model=cfg,
        model_label=label,
        seq_len=seq,
        params=param_counts(cfg),
        flops=fl,
        n=n,
        tokens=d,
        costs=_costs(n, d, fl, shape_note, peak, mfu, num_gpus),
        peaks=peaks,
        memory=training_memory(cfg, seq, resolved, spec.memory_gib, optim, num_gpus),
        loss=chinchilla_loss(param_counts(cfg).total, d),
        micro_batch=micro_batch,
        adapters=_adapter_rows(cfg, seq, resolved, spec, optim, num_gpus, fl, lora) if model else (),
    )


def _adapter_rows(
    cfg: ModelConfig,
    seq_len: int,
    dtype: str,
    spec: GpuSpec,
    optim: str,
    num_gpus: int,
    fl: FlopsBreakdown,
    lora: LoraSpec | None,
) -> tuple[MethodRow, ...]:
    """The LoRA and QLoRA rows of the fine-tuning view, for the verdict of a training run of `cfg`; none
    where the default rank does not suit a tiny shape and no --lora.rank was given."""
    if lora is not None:
        check_lora_spec(cfg, lora)
    elif not adapters_valid(cfg, LoraSpec()):
        return ()
    setup = MethodSetup(cfg, seq_len, dtype, spec.memory_gib, optim, num_gpus, fl, lora or LoraSpec())
    rows = (method(setup) for method in FINETUNE_METHODS)
    return tuple(r for r in rows if r.lora is not None)
