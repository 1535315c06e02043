"""The report behind `llmctl flops estimate`: parameters, FLOPs per token, per batch and per run, and time.

    report = estimate_flops("124m", {}, seq_len=1024, batch_size=512, gpu="H100", mfu=0.4)
    report.to_json()["flops_per_token_train"]

Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmctl.config import ModelConfig
from llmctl.errors import LlmctlError
from llmctl.plan.flops import EXCLUDED, FlopsBreakdown, ParamCounts, flops_per_token, param_counts
from llmctl.plan.hardware import GpuSpec, gpu_by_name, require_peak_flops, resolve_dtype
from llmctl.plan.ranges import RANGES, check_range
from llmctl.plan.shapes import FLAG_FIELDS, resolve_model, shape_json
from llmctl.units import parse_count


@dataclass(frozen=True)
class FlopsReport:
    """Everything `flops estimate` prints. Batch, run and time figures use the PaLM convention."""

    model: ModelConfig
    model_label: str
    seq_len: int
    params: ParamCounts
    flops: FlopsBreakdown
    batch_size: int | None
    tokens: float | None
    gpu: GpuSpec | None
    num_gpus: int
    dtype: str | None
    peak_flops: float | None
    """Dense peak of ONE GPU for dtype, FLOP/s."""
    mfu: float | None

    @property
    def tokens_per_batch(self) -> int | None:
        """batch_size sequences of seq_len tokens."""
        return None if self.batch_size is None else self.batch_size * self.seq_len

    def _seconds(self, flops: float, mfu: float) -> float | None:
        if self.peak_flops is None:
            return None
        return flops / (self.peak_flops * self.num_gpus * mfu)

    def times(self, flops: float) -> dict[str, float | None]:
        """Seconds to compute `flops` on num_gpus GPUs at 100% of peak and at the given MFU."""
        return {
            "at_peak_s": self._seconds(flops, 1.0),
            "at_mfu_s": self._seconds(flops, self.mfu) if self.mfu else None,
        }

    def to_json(self) -> dict[str, Any]:
        """One JSON document with stable keys; the flops_per_token_* keys are per token."""
        fl, p = self.flops, self.params
        doc: dict[str, Any] = {
            "model": self.model_label,
            "shape": shape_json(self.model),
            "seq_len": self.seq_len,
            "params_total": p.total,
            "params_embedding": p.embedding,
            "params_non_embedding": p.non_embedding,
            "params_attention": p.attention,
            "params_mlp": p.mlp,
            "params_norms": p.norms,
            "params_head": p.head,
            "params_6n": p.matmul,
            "flops_per_token_forward": fl.forward,
            "flops_per_token_backward": fl.backward,
            "flops_per_token_train": fl.train_palm,
            "flops_per_token_train_exact": fl.train_exact,
            "flops_per_token_6n": fl.six_n,
            "flops_per_token_forward_components": fl.components(),
            "causal_masking_counted": False,
            "causal_saving_per_token_train": fl.causal_saving,
            "excluded_ops": list(EXCLUDED),
            "conventions": {
                "flops_per_token_train": "PaLM: 6N + 12*layers*heads*head_dim*seq_len, N = params_6n (used for MFU)",
                "flops_per_token_train_exact": "3 x the exact forward matmul count, full seq_len x seq_len attention",
                "flops_per_token_6n": "6N, N = params_6n (non-embedding matmul weights + output head)",
            },
        }
        if self.batch_size is not None:
            per_batch = fl.train_palm * self.tokens_per_batch
            doc["batch"] = {
                "batch_size": self.batch_size,
                "tokens": self.tokens_per_batch,
                "flops_train": per_batch,
                **self.times(per_batch),
            }
        if self.tokens is not None:
            per_run = fl.train_palm * self.tokens
            doc["run"] = {"tokens": self.tokens, "flops_train": per_run, **self.times(per_run)}
        if self.gpu is not None:
            doc["gpu"] = {
                "name": self.gpu.name,
                "count": self.num_gpus,
                "dtype": self.dtype,
                "peak_flops_per_gpu": self.peak_flops,
                "mfu": self.mfu,
                "tokens_per_second_at_mfu": (self.peak_flops * self.num_gpus * self.mfu / fl.train_palm)
                if self.mfu
                else None,
            }
        return doc


def estimate_flops(
    model: str | None,
    fields: dict[str, Any],
    seq_len: int | None = None,
    batch_size: int | None = None,
    tokens: str | float | None = None,
    gpu: str | None = None,
    num_gpus: int = 1,
    mfu: float | None = None,
    dtype: str = "auto",
) -> FlopsReport:
    """Resolve the model (preset, YAML file or explicit `fields`) and count its parameters and FLOPs."""
    flags = {field: flag.replace("_", "-") for flag, field in FLAG_FIELDS.items()}
    for key, value in fields.items():
        if flags.get(key) in RANGES:
            check_range(flags[key], value)
    check_range("seq-len", seq_len)
    check_range("batch-size", batch_size)
    check_range("num-gpus", num_gpus)
    token_count = parse_count(tokens, "--tokens") if tokens is not None else None
    check_range("tokens", token_count)
    cfg, default_seq = resolve_model(model, fields)
    seq = seq_len if seq_len is not None else default_seq
    check_range("seq-len", seq)
    if mfu is not None and not 0 < mfu <= 1:
        raise LlmctlError(
            f"--mfu must be in (0, 1], got {mfu}", "e.g. --mfu 0.4 for 40% model FLOPs utilisation"
        )
    if mfu is not None and gpu is None:
        raise LlmctlError("--mfu needs --gpu", "e.g. --gpu H100 --mfu 0.4")
    spec = gpu_by_name(gpu) if gpu is not None else None
    resolved = resolve_dtype(spec, dtype) if spec is not None else None
    peak = require_peak_flops(spec, resolved) if spec is not None and resolved is not None else None
    label = model if model is not None else "explicit shape"
    if model is not None and fields and any(v is not None for v in fields.values()):
        label += " (with flags on top)"
    return FlopsReport(
        model=cfg,
        model_label=label,
        seq_len=seq,
        params=param_counts(cfg),
        flops=flops_per_token(cfg, seq),
        batch_size=batch_size,
        tokens=token_count,
        gpu=spec,
        num_gpus=num_gpus,
        dtype=resolved,
        peak_flops=peak,
        mfu=mfu,
    )
