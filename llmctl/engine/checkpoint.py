"""Complete, atomic checkpoints: write, find the latest complete one, check it fits, load it.

    RUN/checkpoints/step-000500/
        model.safetensors     weights (a tied output head is stored once, as tok_embeddings.weight)
        optimizer.pt          AdamW state
        rng.pt                Python, NumPy, torch and CUDA generator states of every rank
        tokenizer.json        a copy of the tokenizer (or tokenizer.model), so the directory stands alone
        checkpoint.json       step, tokens, FLOPs, data position, schedule, reporter state, resolved config,
                              tokenizer fingerprint, and the size of every file above; written last
    RUN/checkpoints/latest -> step-000500

A checkpoint is written under a temporary name and renamed when complete; `latest` moves only after
that. A directory whose checkpoint.json is missing, unreadable or disagrees with its files' sizes is
never taken as a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from llmctl.config import Config, ModelConfig, from_dict
from llmctl.errors import LlmctlError

FORMAT_NAME = "llmctl-checkpoint"
FORMAT_VERSION = 1
MANIFEST = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"
LATEST = "latest"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir_name(step: int) -> str:
    """step-000500."""
    return f"step-{step:06d}"


def _fsync_write(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def model_state_to_save(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, without the output head when it is tied to the embedding."""
    out = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    if cfg.tied_embeddings:
        out.pop("output.weight", None)
    return out


def write_checkpoint(
    root: Path,
    step: int,
    *,
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    manifest: dict[str, Any],
    tokenizer_file: Path | None,
    keep: int,
) -> Path:
    """Write checkpoint `step` under root atomically, point `latest` at it, keep the newest `keep`."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(model_state, str(tmp / MODEL_FILE), metadata={"format": "pt"})
    torch.save(optimizer_state, tmp / OPTIMIZER_FILE)
    torch.save(rng_states, tmp / RNG_FILE)
    files = [MODEL_FILE, OPTIMIZER_FILE, RNG_FILE]
    if tokenizer_file is not None:
        name = "tokenizer.json" if tokenizer_file.suffix == ".json" else "tokenizer.model"
        shutil.copyfile(tokenizer_file, tmp / name)
        files.append(name)
    for name in files:
        with open(tmp / name, "rb+") as fh:
            os.fsync(fh.fileno())
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "step": step,
        "saved_at": time.time(),
        **manifest,
        "files": {name: (tmp / name).stat().st_size for name in files},
    }
    _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        # The same step saved again (a resumed run stopping where it started): swap the old one out.
        trash = root / f".trash-{final.name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _point_latest(root, final.name)
    prune(root, keep)
    return final


def _point_latest(root: Path, name: str) -> None:
    link = root / LATEST
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.symlink(name, tmp)
    except OSError:
        # Filesystems without symlinks: a one-line file naming the directory.
        _fsync_write(tmp, name + "\n")
    os.replace(tmp, link)


def read_manifest(path: Path) -> dict[str, Any] | None:
    """checkpoint.json of a complete checkpoint directory, else None."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT_NAME:
            return None
        for name, size in manifest["files"].items():
            if (path / name).stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return manifest


def is_complete(path: Path) -> bool:
    """True when `path` holds a complete checkpoint."""
    return read_manifest(path) is not None


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete step-* directories under root, oldest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and is_complete(p):
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _latest_target(root: Path) -> Path | None:
    link = root / LATEST
    if link.is_symlink():
        return root / os.readlink(link)
    if link.is_file():
        return root / link.read_text().strip()
    return None


def find_latest(root: Path) -> Path | None:
    """The checkpoint `latest` names when complete, else the newest complete one, else None."""
    target = _latest_target(root)
    if target is not None and is_complete(target):
        return target
    done = complete_checkpoints(root)
    return done[-1] if done else None


def prune(root: Path, keep: int) -> None:
    """Delete complete checkpoints beyond the newest `keep`, never the one `latest` names."""
    if keep <= 0:
        return
    protected = _latest_target(root)
    for path in complete_checkpoints(root)[:-keep]:
        if protected is None or path.resolve() != protected.resolve():
            shutil.rmtree(path, ignore_errors=True)


def remove_partial(root: Path) -> None:
    """Remove temporary directories left by a process killed while saving."""
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)
        for p in root.glob(".trash-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def resolve_checkpoint(path: str | Path) -> Path:
    """A complete checkpoint directory from a checkpoint path, a `latest` link, a checkpoints/ directory
    or a run directory; a clear error otherwise."""
    p = Path(path)
    if p.name == LATEST and (p.is_symlink() or p.is_file()):
        found = find_latest(p.parent)
        if found is None:
            raise LlmctlError(f"{p} names no complete checkpoint", "pick a step-* directory that has a checkpoint.json")
        return found
    if (p / MANIFEST).is_file():
        if not is_complete(p):
            raise LlmctlError(
                f"checkpoint {p} is incomplete or corrupt (its files do not match {MANIFEST})",
                f"use an earlier checkpoint: {', '.join(c.name for c in complete_checkpoints(p.parent)) or 'none found'}",
            )
        return p
    for root in (p / "checkpoints", p):
        if root.is_dir() and ((root / LATEST).exists() or any(root.glob("step-*"))):
            found = find_latest(root)
            if found is not None:
                return found
    if not p.exists():
        raise LlmctlError(f"checkpoint not found: {p}", "pass RUN/checkpoints/latest, a step-* directory or a run directory")
    raise LlmctlError(f"no complete checkpoint in {p}", "pass RUN/checkpoints/latest, a step-* directory or a run directory")


def checkpoint_config(path: Path) -> Config:
    """The resolved config saved in a checkpoint."""
    manifest = read_manifest(path)
    if manifest is None:
        raise LlmctlError(f"checkpoint {path} is incomplete or corrupt", "pick another checkpoint")
    return from_dict(manifest["config"])


_SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "multiple_of",
                 "ffn_dim_multiplier", "tied_embeddings", "qkv_bias", "rope_theta", "norm_eps")


def check_compatible(path: Path, manifest: dict[str, Any], model: ModelConfig, fingerprint: str | None) -> None:
    """Raise a clear error when a checkpoint's model shape or tokenizer differs from this run's."""
    saved = ModelConfig(**{k: v for k, v in manifest["config"]["model"].items()})
    for name in _SHAPE_FIELDS:
        a, b = getattr(saved, name), getattr(model, name)
        if name == "n_kv_heads":
            a, b = saved.kv_heads, model.kv_heads
        if name in ("ffn_dim", "multiple_of", "ffn_dim_multiplier"):
            a, b, name = saved.hidden_dim, model.hidden_dim, "hidden_dim"
        if a != b:
            raise LlmctlError(
                f"checkpoint {path} has model.{name}={a}, this run's config has {b}",
                "use the config the checkpoint was trained with (its run's config.yaml), or start a new run",
            )
    saved_fp = (manifest.get("tokenizer") or {}).get("fingerprint")
    if fingerprint and saved_fp and saved_fp != fingerprint:
        raise LlmctlError(
            f"checkpoint {path} was trained with tokenizer {saved_fp[:12]}, the data's tokenizer is {fingerprint[:12]}",
            "use token shards made with the checkpoint's tokenizer (a copy is in the checkpoint directory)",
        )


def load_model_state(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint on the CPU, the tied head restored under its own name."""
    from safetensors.torch import load_file

    state = load_file(str(path / MODEL_FILE))
    if cfg.tied_embeddings and "output.weight" not in state:
        state["output.weight"] = state["tok_embeddings.weight"]
    return state


def load_optimizer_state(path: Path) -> dict[str, Any]:
    """The saved optimizer state dict."""
    return torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)


def load_rng_states(path: Path) -> list[dict[str, Any]]:
    """Every rank's saved generator states."""
    return torch.load(path / RNG_FILE, map_location="cpu", weights_only=False)


def load_for_inference(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode on device, its tokenizer, checkpoint.json) for generate and export."""
    from llmctl.model.llama import Transformer
    from llmctl.tokenizer.core import load_tokenizer

    ckpt = resolve_checkpoint(path)
    manifest = read_manifest(ckpt)
    assert manifest is not None
    cfg = from_dict(manifest["config"])
    with torch.device(device):
        model = Transformer(cfg.model)
    model.load_state_dict(load_model_state(ckpt, cfg.model))
    model.eval()
    tok_dir = ckpt if any((ckpt / n).is_file() for n in ("tokenizer.json", "tokenizer.model")) else None
    tok_path = tok_dir or (manifest.get("tokenizer") or {}).get("path")
    if tok_path is None:
        raise LlmctlError(f"checkpoint {ckpt} has no tokenizer", "copy the run's tokenizer.json into the checkpoint directory")
    return model, load_tokenizer(tok_path), manifest
