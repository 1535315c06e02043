"""The one place a model is built from its config: training, references, inference, import and export.

    model = build_model(cfg.model, "cuda")                          # fresh weights (seed first)
    model = build_model(cfg.model, "cpu", state=weights)            # a checkpoint's weights, eval mode

Later features hook in here and nowhere else: adapters (LoRA), quantized bases and new model families
(docs/ARCHITECTURE.md, "Adding a model family").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from llmctl.config import ModelConfig
from llmctl.model.llama import Transformer


def build_model(
    model_cfg: ModelConfig,
    device: torch.device | str = "cpu",
    *,
    state: Mapping[str, torch.Tensor] | None = None,
) -> Transformer:
    """The decoder `model_cfg` describes, its parameters made on `device`; with `state`, those weights
    loaded (strictly) and the model put in eval mode, ready for inference or as a reference."""
    with torch.device(device):
        model = Transformer(model_cfg)
    if state is not None:
        model.load_state_dict(state)
        model.eval()
    return model


def accepts_doc_ids(model: torch.nn.Module | type[Any] = Transformer) -> bool:
    """True when the model's (or model class's) forward takes doc_ids and position_ids: attention
    restricted to one packed document or conversation (SFT and DPO packing)."""
    params = inspect.signature(model.forward).parameters
    return "doc_ids" in params and "position_ids" in params
