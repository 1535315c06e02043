"""The one place `llmctl eval` opens a checkpoint and decides how prompts start.

    loaded = open_model("runs/py/checkpoints/latest", device="auto")
    ids = prompt_prefix(loaded) + loaded.tokenizer.encode("def main(")

Both functions stand in for code that lives elsewhere today: `open_model` for the checkpoint reader
(`infer/checkpoint.py:open_checkpoint` once it lands), `prompt_prefix` for the tokenizer's prompt
convention (BOS first, per the Hugging Face issue). Swapping either changes nothing else in eval/.
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
        """bf16 (or fp16) autocast on CUDA, nothing on the CPU: logits stay float32 either way."""
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)


def choose_device(setting: str) -> torch.device:
    """auto: the GPU when CUDA is there, else the CPU; cpu, cuda, cuda:N as given."""
    from llmctl.errors import LlmctlError

    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except RuntimeError as exc:
        raise LlmctlError(f"--device {setting} is not a device", "use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LlmctlError(f"--device {setting} but CUDA is not available", "use --device cpu or auto")
    if device.type not in ("cpu", "cuda"):
        raise LlmctlError(f"--device {setting} is not supported", "use auto, cpu, cuda or cuda:N")
    return device


def open_model(checkpoint: str, device: str = "auto") -> LoadedModel:
    """Load a checkpoint (directory, RUN/checkpoints/latest or a run directory) for evaluation."""
    # INTEGRATOR: the only engine import of eval/; replace with llmctl.infer.checkpoint.open_checkpoint.
    from llmctl.engine.checkpoint import load_for_inference

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
