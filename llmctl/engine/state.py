"""Gathering and restoring what a checkpoint holds: weights, optimizer state, random generators.

Weights and optimizer state go through torch.distributed.checkpoint's state-dict helpers, keyed by
parameter name, so the same files load into a single process, DDP replicas or FSDP2 shards.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from llmctl.config import ModelConfig
from llmctl.engine.checkpoint import model_state_to_save


def _options(fsdp: bool) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    # Sharded runs gather full tensors onto rank 0's CPU; single processes and DDP hold them already.
    return StateDictOptions(full_state_dict=True, cpu_offload=True) if fsdp else StateDictOptions()


def model_state(
    model: nn.Module, fsdp: bool, cfg: ModelConfig, keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """Full weights on the CPU (empty on ranks other than 0 under FSDP), tied head left out; with `keep`,
    only the tensors whose names it accepts."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return model_state_to_save(get_model_state_dict(model, options=_options(fsdp)), cfg, keep)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool) -> dict[str, Any]:
    """The optimizer state keyed by parameter name, on the CPU."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(model, optimizer, options=_options(fsdp))
    return _to_cpu(state)


def restore_optimizer(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], fsdp: bool
) -> None:
    """Load a saved optimizer state into this run's optimizer (sharding it under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True) if fsdp else StateDictOptions()
    set_optimizer_state_dict(model, optimizer, state, options=options)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


def capture_rng() -> dict[str, Any]:
    """This process's Python, NumPy, torch and CUDA generator states."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(states: list[dict[str, Any]], rank: int) -> None:
    """Restore this rank's generator states (rank 0's when the run had fewer ranks)."""
    state = states[rank] if rank < len(states) else states[0]
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
