"""Process groups from torchrun or SLURM, model wrapping (DDP, FSDP2) and the few collectives the loop needs.

    dist = init_distributed("auto", device_type="cuda")     # reads RANK/WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS
    model = wrap_model(raw_model, dist, "ddp", device)
    total = all_reduce_sum(dist, tensor)

A single process (no launcher) needs no process group: every helper is then a no-op.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmctl.errors import LlmctlError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands among the ranks."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """None when running as a single process without a process group."""

    @property
    def is_rank0(self) -> bool:
        """Only rank 0 writes files and draws the panel."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """A process group exists."""
        return self.backend is not None


def _slurm_master_addr() -> str | None:
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
    if not nodes:
        return None
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, timeout=10
        )
        first = out.stdout.split()
        if first:
            return first[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # A single host, or "node[01-04]" without scontrol: the first name of the range.
    head = nodes.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        head = prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head


def launch_env(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables, else from srun's, else (0, 1, 0)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", 0))
    return 0, 1, 0


def init_distributed(backend: str, device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun or srun with several tasks; NCCL on GPU, gloo on CPU."""
    rank, world, local = launch_env()
    if world == 1:
        return DistInfo()
    import torch.distributed as dist

    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl" and device_type != "cuda":
        raise LlmctlError("dist.backend=nccl needs CUDA GPUs", "use --dist.backend=gloo (or auto) on CPU")
    if "RANK" not in os.environ:
        # srun without torchrun: publish what init_process_group's env:// method reads.
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(local))
        os.environ.setdefault("MASTER_ADDR", _slurm_master_addr() or "127.0.0.1")
        job = int(os.environ.get("SLURM_JOB_ID", "0"))
        os.environ.setdefault("MASTER_PORT", str(20000 + job % 20000))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world, local, backend)


def shutdown(info: DistInfo) -> None:
    """Leave the process group."""
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def wrap_model(model: nn.Module, info: DistInfo, strategy: str, device: torch.device) -> nn.Module:
    """DDP (replicas, gradients all-reduced) or FSDP2 (parameters sharded per block); unchanged alone."""
    if not info.enabled:
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.layers:
            fully_shard(block)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def all_reduce_sum(info: DistInfo, tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks, in place; returns it."""
    if info.enabled:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(info: DistInfo, value: int, device: torch.device) -> int:
    """The largest of an integer over ranks (so every rank agrees to stop)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_object(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
