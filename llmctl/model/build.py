"""The one place a model is built from its config: training, references, inference, import and export.

    model = build_model(cfg.model, "cuda")                          # fresh weights (seed first)
    model = build_model(cfg.model, "cpu", state=weights)            # a checkpoint's weights, eval mode
    model = build_model(cfg.model, "cuda", lora=cfg.lora, base_state=weights)  # frozen base + LoRA adapters
    # cfg.lora.quantize == "nf4": the same, the frozen projections stored in 4-bit NF4 (QLoRA)

Later features hook in here and nowhere else: adapters (LoRA), quantized bases and new model families
(docs/ARCHITECTURE.md, "Adding a model family").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from llmctl.config import LoRAConfig, ModelConfig
from llmctl.model.llama import Transformer


def build_model(
    model_cfg: ModelConfig,
    device: torch.device | str = "cpu",
    *,
    state: Mapping[str, torch.Tensor] | None = None,
    lora: LoRAConfig | None = None,
    base_state: Mapping[str, torch.Tensor] | None = None,
) -> Transformer:
    """The decoder `model_cfg` describes, its parameters made on `device`; with `state`, those weights
    loaded (strictly) and the model put in eval mode, ready for inference or as a reference.

    With `lora` (rank > 0), the base weights are frozen and adapters added (llmctl/model/lora.py);
    `base_state` loads the base's weights before the adapters are added (training from --init), and
    `state` then holds base and adapters together. With `lora.quantize=nf4` (QLoRA) the model is built and
    loaded on the CPU, its block projections quantized to NF4 one by one on `device`
    (llmctl/model/quant.py), and the rest moved there: the device never holds the full-precision base."""
    quantized = lora is not None and lora.rank > 0 and lora.quantize != "none"
    if quantized:
        from llmctl.model.quant import require_nf4

        require_nf4()  # before anything is built or written
    with torch.device("cpu" if quantized else device):
        model = Transformer(model_cfg)
    if base_state is not None:
        model.load_state_dict(base_state)
    if lora is not None and lora.rank > 0:
        from llmctl.model.lora import apply_lora

        apply_lora(model, lora)
    if state is not None:
        model.load_state_dict(state)
        model.eval()
    if quantized:
        from llmctl.model.quant import quantize_base

        quantize_base(model, device)
        model.to(device)
    return model


def accepts_doc_ids(model: torch.nn.Module | type[Any] = Transformer) -> bool:
    """True when the model's (or model class's) forward takes doc_ids and position_ids: attention
    restricted to one packed document or conversation (SFT and DPO packing)."""
    params = inspect.signature(model.forward).parameters
    return "doc_ids" in params and "position_ids" in params
