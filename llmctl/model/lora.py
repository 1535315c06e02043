"""Low-rank adapters (LoRA, Hu et al. 2021) on the decoder's projections.

    model = build_model(cfg.model, "cpu", lora=cfg.lora, base_state=weights)   # via build_model only
    trainable, total = count_parameters(model)

A targeted `nn.Linear` becomes a `LoRALinear`: same `weight` (and `bias`) parameters under the same names,
frozen, plus `lora_a` [r, in] and `lora_b` [out, r]; its output is W x + b + (alpha / r) B A dropout(x).
Attention's fused q|k|v and FeedForward's fused w1|w3 matmuls keep using the base weights and add each
projection's low-rank term after the split (`lora_add`), so a model without adapters runs unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from llmctl.config import LoRAConfig, ModelConfig, check_lora_rank, lora_target_names
from llmctl.model.llama import Transformer, weight_shapes


class LoRALinear(nn.Linear):
    """A frozen linear layer plus a trainable low-rank update (alpha / r) B A."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        dev, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, device=dev, dtype=dtype))
        # B starts at zero, so the adapted model starts equal to the base (Hu et al. 2021).
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, device=dev, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True  # False inside `adapters_disabled`: the layer is its frozen base

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """The adapter's term (alpha / r) B A dropout(x) alone (zero while the adapters are disabled)."""
        if not self.enabled:
            return torch.zeros((), device=x.device, dtype=x.dtype)
        return F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.delta(x)


@contextmanager
def adapters_disabled(model: nn.Module) -> Iterator[None]:
    """Run `model` as its frozen base inside the block: the reference model of DPO and GRPO with LoRA,
    without a second copy of the weights."""
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    for layer in layers:
        layer.enabled = False
    try:
        yield
    finally:
        for layer in layers:
            layer.enabled = True


def apply_lora(model: Transformer, lora: LoRAConfig) -> Transformer:
    """Freeze every weight of `model` and put adapters on the projections `lora.targets` names (in place)."""
    check_lora_rank(model.cfg, lora)
    names = lora_target_names(lora.targets)
    model.requires_grad_(False)
    for block in model.layers:
        for owner in (block.attention, block.feed_forward):
            for name in names:
                linear = getattr(owner, name, None)
                if linear is None:
                    continue
                setattr(owner, name, LoRALinear(linear, lora.rank, lora.alpha, lora.dropout))
                owner.adapted = True
    return model


def adapter_shapes(cfg: ModelConfig, lora: LoRAConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every adapter tensor `apply_lora` adds for `lora` (none when rank is 0)."""
    if lora.rank <= 0:
        return {}
    names = lora_target_names(lora.targets)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in weight_shapes(cfg).items():
        parts = name.split(".")
        if len(parts) == 5 and parts[3] in names and parts[4] == "weight":
            stem, (out, inp) = name.removesuffix(".weight"), shape
            shapes[stem + ".lora_a"] = (lora.rank, inp)
            shapes[stem + ".lora_b"] = (out, lora.rank)
    return shapes


def merge_adapters(state: dict[str, torch.Tensor], lora: LoRAConfig) -> dict[str, torch.Tensor]:
    """A plain decoder's weights: each adapter folded into its base weight (W + alpha/r B A, computed in
    float32, stored in W's dtype), the adapter tensors left out. A QLoRA run's (lora.quantize=nf4) base is
    first replaced by the 4-bit values it trained against, dequantized (llmctl/model/quant.py)."""
    scale = lora.alpha / lora.rank if lora.rank > 0 else 0.0
    out = {k: v for k, v in state.items() if not is_adapter(k)}
    if lora.quantize != "none":
        from llmctl.model.quant import dequantized_base

        out = dequantized_base(out)
    for name, a in state.items():
        if name.endswith(".lora_a"):
            stem = name.removesuffix(".lora_a")
            w = out[stem + ".weight"]
            delta = state[stem + ".lora_b"].float() @ a.float()
            out[stem + ".weight"] = (w.float() + scale * delta).to(w.dtype)
    return out


def is_adapter(name: str) -> bool:
    """True for an adapter parameter's state-dict name (…lora_a / …lora_b)."""
    return name.endswith((".lora_a", ".lora_b"))


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, each tensor counted once (a tied embedding too)."""
    params = {id(p): p for p in model.parameters()}.values()
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def describe_trainable(model: nn.Module, lora: LoRAConfig | None = None) -> str:
    """One line for the start-of-run notes: trainable of total parameters, with a percentage."""
    trainable, total = count_parameters(model)
    line = f"training {trainable:,} of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)"
    if lora is not None and lora.quantize != "none":
        return f"QLoRA: {line}; the base weights are frozen, the block projections in 4-bit {lora.quantize.upper()}"
    return f"LoRA: {line}; the base weights are frozen"
