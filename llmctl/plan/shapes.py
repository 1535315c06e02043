"""Which model a planning command is about: a preset, a config file's `model:` section, explicit
dimensions, or a shape chosen to reach a parameter count.

    cfg, seq_len = resolve_model("124m", {"vocab_size": 8192})
    cfg, seq_len = resolve_model("examples/configs/124m.yaml", {})
    suggest_shape(170e6, vocab_size=32768)      # dim 896, 14 layers, 14 heads of 64

Pure Python: no torch.
"""

from __future__ import annotations

import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from llmctl.config import ModelConfig, load_config
from llmctl.errors import LlmctlError
from llmctl.plan.flops import param_counts
from llmctl.presets import PRESETS

PLAN_DEFAULT_VOCAB = 8192
"""Vocabulary planned with when a config leaves model.vocab_size to the tokenizer and names no preset."""
MAX_DEFAULT_SEQ_LEN = 8192
"""Presets of published models carry their long-context max_seq_len (131072 for Llama 3.2); planning
defaults to at most this, the length they were pretrained at."""

# Flag names of `flops estimate` -> ModelConfig fields, for messages that name what the user typed.
FLAG_FIELDS = {
    "dim": "dim",
    "layers": "n_layers",
    "heads": "n_heads",
    "kv_heads": "n_kv_heads",
    "ffn_dim": "ffn_dim",
    "vocab_size": "vocab_size",
    "tied": "tied_embeddings",
}


def _is_file(model: str) -> bool:
    return model.endswith((".yaml", ".yml")) or Path(model).is_file()


def _model_of_directory(path: Path) -> dict[str, Any]:
    """The model section of a checkpoint directory (an imported model included), a run directory's latest
    checkpoint, or a Hugging Face model directory's config.json; read as JSON, without torch."""
    import dataclasses
    import json

    for manifest in (path / "checkpoint.json", path / "checkpoints" / "latest" / "checkpoint.json"):
        if manifest.is_file():
            return dict(json.loads(manifest.read_text(encoding="utf-8"))["config"]["model"])
    if (path / "config.json").is_file():
        from llmctl.config import model_config_from_hf

        cfg, _ = model_config_from_hf(json.loads((path / "config.json").read_text(encoding="utf-8")))
        return dataclasses.asdict(cfg)
    raise LlmctlError(
        f"{path} is neither a checkpoint nor a Hugging Face model directory",
        "pass a preset, a config YAML, a checkpoint directory or a model imported by `llmctl import`",
    )


def resolve_model(model: str | None, fields: dict[str, Any]) -> tuple[ModelConfig, int]:
    """The ModelConfig named by `model` (preset, YAML file or checkpoint directory) with `fields` (ModelConfig field -> value,
    None meaning unset) on top, validated; and the default sequence length for it.

    Without `model`, dim, n_layers, n_heads and vocab_size must all be given.
    """
    overrides = {f"model.{k}": v for k, v in fields.items() if v is not None}
    if model is None:
        missing = [
            flag
            for flag, key in FLAG_FIELDS.items()
            if key in ("dim", "n_layers", "n_heads", "vocab_size") and fields.get(key) is None
        ]
        if missing:
            raise LlmctlError(
                f"no model given: need --model, or all of --dim --layers --heads --vocab-size (missing "
                f"{', '.join('--' + m.replace('_', '-') for m in missing)})",
                "e.g. --model 124m, --model examples/configs/124m.yaml or --dim 768 --layers 12 --heads 12 --vocab-size 50304",
            )
        cfg = load_config(None, overrides)
        return cfg.model, min(cfg.model.max_seq_len, MAX_DEFAULT_SEQ_LEN)
    if _is_file(model):
        cfg = load_config(model, overrides)
        return _with_vocab(cfg.model), cfg.data.seq_len
    if Path(model).is_dir():
        shape = _model_of_directory(Path(model))
        cfg = load_config(None, {**{f"model.{k}": v for k, v in shape.items()}, **overrides})
        return _with_vocab(cfg.model), min(cfg.model.max_seq_len, MAX_DEFAULT_SEQ_LEN)
    cfg = load_config(None, {"model": model, **overrides})
    return _with_vocab(cfg.model), min(cfg.model.max_seq_len, MAX_DEFAULT_SEQ_LEN)


def _with_vocab(cfg: ModelConfig) -> ModelConfig:
    """Planning needs a vocabulary where training would take the tokenizer's: the preset's, else 8192."""
    if cfg.vocab_size is not None:
        return cfg
    vocab = PRESETS.get(cfg.preset or "", {}).get("vocab_size", PLAN_DEFAULT_VOCAB)
    return replace(cfg, vocab_size=vocab)


def shape_for(dim: int, n_layers: int, vocab_size: int, max_seq_len: int = 2048) -> ModelConfig:
    """The house shape at a width and depth: head_dim 64 up to dim 1024 and 128 above, grouped-query
    attention with 4 query heads per KV head from dim 2048 (as Llama 3), the Llama SwiGLU width rule."""
    head_dim = 64 if dim <= 1024 else 128
    heads = dim // head_dim
    kv_heads = heads if dim < 2048 else max(1, heads // 4)
    return ModelConfig(
        vocab_size=vocab_size,
        dim=dim,
        n_layers=n_layers,
        n_heads=heads,
        n_kv_heads=kv_heads,
        max_seq_len=max_seq_len,
    )


def suggest_shape(target_params: float, vocab_size: int, max_seq_len: int = 2048) -> ModelConfig:
    """A shape whose 6N parameter count (ParamCounts.matmul) is near `target_params`.

    dim is a multiple of 64 (of 128 above 1024, of 512 from 2048), depth between dim/128 and dim/32 layers. Among
    shapes within 2% of the target, the one whose width-to-depth ratio is nearest 64 (below 1B
    parameters, as GPT-2 small's 768/12) or 128 (above, as Llama 2 7B's 4096/32) wins; with none that
    close, the nearest count wins. Kaplan et al. (2020) found loss nearly flat over ratios 20 to 200.
    """
    if not math.isfinite(target_params) or target_params <= 0:
        raise LlmctlError(
            f"target parameter count must be positive, got {target_params}", "e.g. --params 170M"
        )
    ideal_ratio = 64 if target_params < 1e9 else 128
    best: tuple[float, float, int, int] | None = None
    near: list[tuple[float, float, int, int]] = []
    for dim in range(128, 16384 + 1, 64):
        if (dim > 1024 and dim % 128) or (dim >= 2048 and dim % 512):
            continue  # head_dim 128, and from 2048 a head count that 4-way GQA divides
        for layers in range(max(2, math.ceil(dim / 128)), math.floor(dim / 32) + 1):
            n = param_counts(shape_for(dim, layers, vocab_size)).matmul
            miss = abs(math.log(n / target_params))
            entry = (miss, abs(math.log(dim / layers / ideal_ratio)), dim, layers)
            if best is None or miss < best[0]:
                best = entry
            if miss <= 0.02:
                near.append(entry)
            if n > target_params * 1.05:
                break
    assert best is not None
    choice = min(near, key=lambda e: (e[1], e[0])) if near else best
    return shape_for(choice[2], choice[3], vocab_size, max_seq_len)


def shape_json(model: ModelConfig) -> dict[str, Any]:
    """A model shape as planning commands' `--json` gives it: its fields plus the derived sizes."""
    return asdict(model) | {
        "head_dim": model.head_size,
        "hidden_dim": model.hidden_dim,
        "kv_heads": model.kv_heads,
    }
