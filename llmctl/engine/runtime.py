"""Device, compute dtype, autocast and grad scaler: one decision, made once per run.

    rt = choose_runtime(cfg.train, local_rank=0)
    with rt.autocast():
        logits = model(tokens)

auto picks the precision inference uses (llmctl/infer/device.py): bf16 autocast on CUDA GPUs that
have bf16, fp16 (here with a grad scaler) on older ones, and fp32 on CPU (bf16 matmuls on most CPUs
run far slower than fp32 ones). TF32 matmuls are on for CUDA. On CPU, glibc is told to keep freed memory
for reuse (`cpu_allocator_reuse`), which makes each step faster.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from llmctl.config import TrainConfig
from llmctl.errors import LlmctlError


@dataclass
class Runtime:
    """The device and precision a run computes in."""

    device: torch.device
    dtype: str
    """'fp32', 'bf16' or 'fp16'."""
    scaler: Any = None
    """torch.amp.GradScaler for fp16, else None."""

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        from llmctl.infer.device import autocast_for

        return autocast_for(self.device, self.dtype)()

    @property
    def device_name(self) -> str:
        """A human name for the device: the GPU's, or the CPU model."""
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return cpu_name()


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4


def cpu_allocator_reuse() -> bool:
    """Have glibc keep freed memory for the next step instead of handing it back to the kernel.

    By default every activation above glibc's mmap threshold (a few MiB; the logits are 64 MiB) is a
    fresh mmap, and each step page-faults and zeroes all of it again: on a 2-core CPU that is 15-20%
    of a training step (benchmarks/vs_nanogpt.py). Serving every block from the heap (no mmap) and
    trimming it only above 1 GiB of free space lets freed blocks be reused, as jemalloc/tcmalloc
    would; the cost is that the process keeps its peak memory until it exits. Returns whether it
    applied (glibc on Linux only; LLMCTL_CPU_ALLOCATOR=default leaves malloc as it is)."""
    if os.environ.get("LLMCTL_CPU_ALLOCATOR", "reuse") == "default" or platform.system() != "Linux":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's, when it is glibc
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    settings = (
        (_M_MMAP_THRESHOLD, 32 << 20),
        (_M_MMAP_MAX, 0),
        (_M_TRIM_THRESHOLD, 1 << 30),
        (_M_TOP_PAD, 256 << 20),
    )
    return all([mallopt(key, value) == 1 for key, value in settings])


def choose_device(setting: str, local_rank: int = 0, flag: str = "--train.device") -> torch.device:
    """auto: this rank's GPU when CUDA is there, else the CPU; cuda/cuda:N/cpu as given (llmctl/infer/device.py)."""
    from llmctl.infer.device import choose_device as pick

    return pick(setting, local_rank, flag)


def choose_runtime(train: TrainConfig, local_rank: int = 0) -> Runtime:
    """Resolve train.device and train.dtype; turn TF32 on for CUDA matmuls and convolutions, and on CPU
    let freed memory be reused (`cpu_allocator_reuse`)."""
    from llmctl.infer.device import inference_dtype

    device = choose_device(train.device, local_rank)
    dtype = train.dtype
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        cpu_allocator_reuse()
    if dtype == "auto":
        dtype = inference_dtype(device)
    if device.type != "cuda" and dtype == "fp16":
        raise LlmctlError("train.dtype=fp16 needs a CUDA GPU", "use --train.dtype=fp32 (or bf16) on CPU")
    scaler = torch.amp.GradScaler("cuda") if dtype == "fp16" else None
    return Runtime(device, dtype, scaler)
