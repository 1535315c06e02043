"""QLoRA's 4-bit base (Dettmers et al. 2023): the frozen projections of a LoRA model stored as NF4.

    quantize_base(model, "cuda")        # every block's wq wk wv wo w1 w3 w2 weight -> NF4 on the device
    w = nf4_roundtrip(weight)           # the values a QLoRA run computes with (what --merge folds into)

NF4 ("normal float 4") gives each block of 64 weights 16 levels at the quantiles of a normal
distribution, scaled by the block's absolute maximum; double quantization stores those per-block scales
in 8 bits (in blocks of up to 256) instead of 32. The tensor type is torchao's `NF4Tensor`: pure PyTorch,
so it runs on the CPU as well as on a GPU. Its matmul (F.linear) dequantizes the weight to the input's
dtype (bf16 under a GPU's autocast, fp32 on the CPU), and its backward keeps only the 4-bit weight.

Every weight is quantized from its bf16 rounding, wherever the run is, so a CPU run, a GPU run, a resume
and a merge all see the same 4-bit values. Embeddings, the output head, norms and biases stay as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmctl.errors import LlmctlError
from llmctl.output import quiet_library_logs

NF4_BLOCK = 64
"""Weights per NF4 block (the paper's block size)."""
NF4_SCALER_BLOCK = 256
"""Most block scales per double-quantization block (the paper's; smaller where a tensor has fewer)."""
QLORA_INSTALL = "pip install 'llmctl[qlora]'   (or: pip install 'torchao>=0.18,<0.19')"
QUANTIZED_NAMES = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")


def _torchao_nf4() -> Any:
    """torchao's `to_nf4`, or an LlmctlError naming the install command."""
    try:
        with quiet_library_logs():
            from torchao.quantization import to_nf4
    except ImportError as exc:
        raise LlmctlError(
            "lora.quantize=nf4 needs torchao (its NF4 tensor), which is not installed",
            QLORA_INSTALL,
        ) from exc
    return to_nf4


def require_nf4() -> None:
    """Raise an LlmctlError with the install command when torchao's NF4 tensor cannot be imported."""
    _torchao_nf4()


def _scaler_block(numel: int, name: str) -> int:
    """The double-quantization block: the largest divisor of the block count up to NF4_SCALER_BLOCK."""
    if numel % NF4_BLOCK:
        raise LlmctlError(
            f"{name} has {numel:,} weights, not a multiple of NF4's block of {NF4_BLOCK}",
            "train this model with LoRA on an unquantized base (drop --lora.quantize)",
        )
    blocks = numel // NF4_BLOCK
    return max(d for d in range(1, min(blocks, NF4_SCALER_BLOCK) + 1) if blocks % d == 0)


def to_nf4(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """`weight` as an NF4Tensor (double-quantized scales), quantized from its bf16 rounding."""
    to_nf4_fn = _torchao_nf4()
    w = weight.detach().to(torch.bfloat16).contiguous()
    return to_nf4_fn(w, NF4_BLOCK, _scaler_block(w.numel(), name))


def nf4_roundtrip(weight: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """The values a QLoRA run computes with for `weight` (dequantized NF4), in `weight`'s dtype."""
    return to_nf4(weight, name).get_original_weight().to(weight.dtype)


def is_projection(name: str) -> bool:
    """True for a block projection's weight (`layers.N.attention.wq.weight`): what QLoRA stores in 4 bits."""
    parts = name.split(".")
    return len(parts) == 5 and parts[0] == "layers" and parts[3] in QUANTIZED_NAMES and parts[4] == "weight"


def dequantized_base(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with every block projection replaced by its NF4 round trip (in its own dtype)."""
    return {k: nf4_roundtrip(v, k) if is_projection(k) else v for k, v in state.items()}


def quantize_base(model: nn.Module, device: torch.device | str) -> int:
    """Replace each block projection's frozen weight with its NF4 form on `device` (in place); returns the
    number of weights quantized. Attention and FeedForward then run their projections one by one."""
    count = 0
    for i, block in enumerate(model.layers):
        for owner in (block.attention, block.feed_forward):
            for proj in QUANTIZED_NAMES:
                linear = getattr(owner, proj, None)
                if linear is None:
                    continue
                # One projection at a time goes to the device, so peak memory there is the 4-bit model
                # plus one full-precision weight.
                weight = linear.weight.detach().to(device=device, dtype=torch.bfloat16)
                q = to_nf4(weight, f"layers.{i}.{proj}.weight")
                linear.weight = nn.Parameter(q, requires_grad=False)
                count += weight.numel()
                owner.quantized = True
    return count


def is_quantized(tensor: torch.Tensor) -> bool:
    """True for an NF4 weight (a QLoRA model's frozen projection)."""
    return type(tensor).__name__ == "NF4Tensor"
