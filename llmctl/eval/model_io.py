"""The one place `llmctl eval` opens a checkpoint and decides how prompts start.

    loaded = open_model("runs/py/checkpoints/latest", device="auto")
    ids = prompt_prefix(loaded) + loaded.tokenizer.encode("def main(")

`open_model` goes through the one checkpoint reader (`infer/checkpoint.py`, files verified against their
SHA-256) and the one device choice (`infer/device.py`); `prompt_prefix` follows the model's prompt convention
(`tokenizer/template.py`: BOS first for BOS-first tokenizers and imported models).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class LoadedModel:
    """A checkpoint ready for inference: model (eval mode, on `device`), tokenizer and manifest."""

    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    device: torch.device
    checkpoint: str

    @property
    def seq_len(self) -> int:
        """The longest sequence the model takes in one forward pass."""
        return int(self.model.cfg.max_seq_len)

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The mixed precision inference uses on this device (llmctl/infer/device.py): logits stay float32."""
        from llmctl.infer.device import inference_autocast

        return inference_autocast(self.device)()

    def fused_weights(self) -> contextlib.AbstractContextManager[None]:
        """A scope whose forwards reuse the fused q|k|v and w1|w3 weights (llmctl/infer/device.py)."""
        from llmctl.infer.device import inference_weights

        return inference_weights(self.model)


def open_model(checkpoint: str, device: str = "auto") -> LoadedModel:
    """Load a checkpoint (directory, RUN/checkpoints/latest or a run directory) for evaluation."""
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.infer.device import choose_device

    dev = choose_device(device)
    model, tokenizer, manifest = load_for_inference(checkpoint, dev)
    return LoadedModel(model, tokenizer, manifest, dev, str(checkpoint))


def prompt_prefix(loaded: LoadedModel) -> list[int]:
    """Ids every prompt starts with, by the model's own convention (llmctl/tokenizer/template.py).

    A checkpoint that records `prompt.add_bos` (BOS-first llmctl tokenizers, imported models) gets what its
    tokenizer's post-processor puts first; an older one the token its training documents followed (EOS for
    the `eos` separator, BOS for `bos`/`bos+eos`), as `llmctl generate` does.
    """
    from llmctl.tokenizer.template import adds_bos, document_prefix

    tok = loaded.tokenizer
    if "add_bos" in (loaded.manifest.get("prompt") or {}):
        return [int(tok.bos_id)] if tok.bos_id is not None and adds_bos(tok) else []
    return document_prefix(loaded.manifest.get("data_meta") or {})
