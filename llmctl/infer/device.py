"""The device and precision inference runs in: one definition for generate, chat, samples and eval.

device = choose_device("auto")          # this rank's GPU when CUDA is there, else the CPU
with inference_autocast(device)():      # bf16 on GPUs that have it, fp16 on older ones, fp32 on CPU
    logits = model(ids)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from llmctl.errors import LlmctlError


def choose_device(setting: str, local_rank: int = 0, flag: str = "--device") -> Any:
    """auto: this rank's GPU when CUDA is there, else the CPU; cuda/cuda:N/cpu as given.

    `flag` is how the user set it (`--device` for generate, chat and eval; `--train.device` for training),
    named in errors."""
    import torch

    if setting == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise LlmctlError(
            f"{flag} {setting} is not a device", f"use {flag} auto, cpu, cuda or cuda:N"
        ) from exc
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise LlmctlError(f"{flag} {setting} but CUDA is not available", f"use {flag} cpu or {flag} auto")
        if device.index is None:
            device = torch.device(f"cuda:{local_rank}")
    elif device.type != "cpu":
        raise LlmctlError(f"{flag} {setting} is not supported", f"use {flag} auto, cpu, cuda or cuda:N")
    return device


def inference_dtype(device: Any) -> str:
    """'bf16' on CUDA GPUs that have it, 'fp16' on older ones, 'fp32' on CPU (bf16 CPU matmuls are slow)."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast_for(device: Any, dtype: str) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of mixed-precision contexts for `dtype` on `device` (a no-op in fp32)."""
    import torch

    if dtype == "fp32":
        return contextlib.nullcontext
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    kind = getattr(device, "type", str(device))
    return lambda: torch.autocast(kind, dtype=torch_dtype)


def inference_autocast(device: Any) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The autocast factory inference uses on `device`."""
    return autocast_for(device, inference_dtype(device))


def inference_weights(model: Any) -> contextlib.AbstractContextManager[None]:
    """Within the block, no-grad forwards of `model` reuse its fused q|k|v and w1|w3 weights instead of
    concatenating them on every forward (freed on exit): eval's scoring loops, as generation does."""
    from llmctl.model.llama import fused_weights_for_inference

    return fused_weights_for_inference(model)
