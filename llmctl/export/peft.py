"""`export --format peft`: a LoRA run's adapters as a PEFT adapter folder.

    result = export_peft("runs/lora/checkpoints/latest", "exports/lora-adapter")

The folder holds `adapter_config.json` and `adapter_model.safetensors` with Hugging Face module names
(`base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`), so PEFT's `PeftModel.from_pretrained`
loads it onto the base model's Hugging Face export or import source. q and k adapters' B rows are reordered
from llmctl's RoPE pairs to Hugging Face's rotate-half order, as the base weights are on export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.config import LORA_HF_NAMES
from llmctl.errors import LlmctlError
from llmctl.export.hf import check_out, permute_for_rotate_half, save_safetensors
from llmctl.files import atomic_path

FILES = ("adapter_config.json", "adapter_model.safetensors")
_HF_PART = {"wq": "self_attn", "wk": "self_attn", "wv": "self_attn", "wo": "self_attn"}


@dataclass
class PeftExportResult:
    """What `export --format peft` wrote."""

    out: str
    checkpoint: str
    rank: int
    alpha: float
    target_modules: list[str]
    n_adapter_params: int
    files: dict[str, int] = field(default_factory=dict)


def _previous_peft_export(path: Path) -> set[str] | None:
    """The files of an earlier `export --format peft` in `path`, or None when it is not one."""
    try:
        config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return set(FILES) if isinstance(config, dict) and config.get("peft_type") == "LORA" else None


def peft_state(state: dict[str, Any], cfg: Any) -> dict[str, Any]:
    """llmctl adapter tensors (`layers.N.attention.wq.lora_a`) -> PEFT's names and Hugging Face row order."""
    hf_names = {ours: theirs for theirs, ours in LORA_HF_NAMES.items()}
    out: dict[str, Any] = {}
    for name, tensor in state.items():
        if not name.endswith((".lora_a", ".lora_b")):
            continue
        _, layer, _, proj, kind = name.split(".")
        if kind == "lora_b" and proj in ("wq", "wk"):
            heads = cfg.n_heads if proj == "wq" else cfg.kv_heads
            tensor = permute_for_rotate_half(tensor, heads, cfg.head_size)
        part = _HF_PART.get(proj, "mlp")
        suffix = "lora_A" if kind == "lora_a" else "lora_B"
        key = f"base_model.model.model.layers.{layer}.{part}.{hf_names[proj]}.{suffix}.weight"
        out[key] = tensor.contiguous()
    return out


def export_peft(checkpoint: str | Path, out: str | Path, force: bool = False) -> PeftExportResult:
    """Write a LoRA checkpoint's adapters as a PEFT folder at `out` (atomically)."""
    from llmctl.config import lora_target_names
    from llmctl.infer.checkpoint import open_checkpoint

    out = Path(out)
    opened = open_checkpoint(checkpoint)
    lora = opened.config.lora
    if lora.rank <= 0:
        raise LlmctlError(
            f"checkpoint {opened.path} is not a LoRA run (lora.rank=0): it has no adapters to export",
            "export it with --format hf or gguf, or train adapters with --lora.rank R",
        )
    check_out(out, force, owned=_previous_peft_export, what="PEFT export (its adapter_config.json)")
    state = peft_state(opened.model_state(), opened.config.model)
    hf_names = {ours: theirs for theirs, ours in LORA_HF_NAMES.items()}
    targets = [hf_names[n] for n in lora_target_names(lora.targets)]
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": None,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": False,
        "use_rslora": False,
        "inference_mode": True,
    }
    needed = sum(v.numel() * v.element_size() for v in state.values()) + 4096
    with atomic_path(out, directory=True, needed=needed) as tmp:
        save_safetensors(state, tmp / FILES[1])
        (tmp / FILES[0]).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    files = {name: (out / name).stat().st_size for name in FILES}
    return PeftExportResult(
        out=str(out),
        checkpoint=str(opened.path),
        rank=lora.rank,
        alpha=lora.alpha,
        target_modules=targets,
        n_adapter_params=sum(v.numel() for v in state.values()),
        files=files,
    )
