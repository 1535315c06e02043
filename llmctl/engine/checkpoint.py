"""Writing complete, atomic checkpoints, pruning old ones, and the shape/tokenizer checks of a resume.

    RUN/checkpoints/step-000500/
        model.safetensors     weights (a tied output head is stored once, as tok_embeddings.weight)
        optimizer.pt          optimizer state: tensors and plain containers only (loads with weights_only=True)
        rng.safetensors       torch and CUDA generator states of every rank
        rng.json              Python and NumPy generator states of every rank
        tokenizer.json        a copy of the tokenizer (or tokenizer.model), so the directory stands alone
        checkpoint.json       step, tokens, data position, schedule, reporter state, resolved config,
                              tokenizer fingerprint, and the size and SHA-256 of every file above; written last
    RUN/checkpoints/latest -> step-000500

A checkpoint is written under a temporary name (llmctl/files.py) and renamed when complete; `latest`
moves only after that. Each file's SHA-256 is taken from the bytes as they are written, not by reading
them back. Reading, verifying and the typed manifest live in llmctl/infer/checkpoint.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from llmctl.config import ModelConfig
from llmctl.errors import DivergedError, LlmctlError
from llmctl.files import atomic_path, atomic_write_text, io_error, is_tmp_name
from llmctl.infer.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LATEST,
    MANIFEST,
    MODEL_FILE,
    OPTIMIZER_FILE,
    RNG_JSON,
    RNG_TENSORS,
    Manifest,
    OpenCheckpoint,
    complete_checkpoints,
    latest_target,
    read_manifest,
    sha256_hex,
)


def step_dir_name(step: int) -> str:
    """step-000500."""
    return f"step-{step:06d}"


def model_state_to_save(
    state: dict[str, torch.Tensor], cfg: ModelConfig, keep: Callable[[str], bool] | None = None
) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors (only the names `keep` accepts), without the output head when it is tied to
    the embedding. Filtering first means a LoRA run copies its adapters to the host, not its frozen base."""
    out = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if keep is None or keep(k)}
    if cfg.tied_embeddings:
        out.pop("output.weight", None)
    return out


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    """True when every floating tensor of a state dict is free of NaN and inf."""
    return all(bool(torch.isfinite(t).all()) for t in state.values() if t.is_floating_point())


def rng_to_plain(states: list[dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every rank's generator states as (tensors for safetensors, JSON-able Python/NumPy states)."""
    tensors: dict[str, torch.Tensor] = {}
    ranks = []
    for rank, state in enumerate(states):
        tensors[f"torch.{rank}"] = state["torch"].contiguous()
        for i, t in enumerate(state.get("cuda") or []):
            tensors[f"cuda.{rank}.{i}"] = t.contiguous()
        version, internal, gauss = state["python"]
        name, keys, pos, has_gauss, cached = state["numpy"]
        ranks.append(
            {
                "python": {"version": version, "state": list(internal), "gauss": gauss},
                "numpy": {
                    "name": name,
                    "keys": [int(k) for k in keys],
                    "pos": int(pos),
                    "has_gauss": int(has_gauss),
                    "cached_gaussian": float(cached),
                },
                "cuda_devices": len(state.get("cuda") or []),
            }
        )
    return tensors, {"ranks": ranks}


def rng_from_plain(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> list[dict[str, Any]]:
    """Inverse of rng_to_plain: the states capture_rng returns, one per rank."""
    import numpy as np

    states = []
    for rank, entry in enumerate(plain["ranks"]):
        py, npy = entry["python"], entry["numpy"]
        state: dict[str, Any] = {
            "python": (int(py["version"]), tuple(int(x) for x in py["state"]), py["gauss"]),
            "numpy": (
                str(npy["name"]),
                np.asarray(npy["keys"], dtype=np.uint32),
                int(npy["pos"]),
                int(npy["has_gauss"]),
                float(npy["cached_gaussian"]),
            ),
            "torch": tensors[f"torch.{rank}"],
        }
        if entry.get("cuda_devices"):
            state["cuda"] = [tensors[f"cuda.{rank}.{i}"] for i in range(int(entry["cuda_devices"]))]
        states.append(state)
    return states


def load_rng_states(ckpt: OpenCheckpoint) -> list[dict[str, Any]]:
    """Every rank's saved generator states, from plain data (nothing is unpickled)."""
    from safetensors.torch import load

    try:
        tensors = load(ckpt.read_verified(RNG_TENSORS))
        plain = json.loads(ckpt.read_verified(RNG_JSON))
        return rng_from_plain(tensors, plain)
    except LlmctlError:
        raise
    except Exception as exc:
        raise LlmctlError(
            f"cannot read the random state of {ckpt.path}: {exc}", "use another checkpoint of the run"
        ) from exc


def load_optimizer_state(ckpt: OpenCheckpoint) -> dict[str, Any]:
    """The saved optimizer state dict (verified, weights_only)."""
    return ckpt.load_pt(OPTIMIZER_FILE)


def _write_hashed(path: Path, data: bytes | memoryview) -> dict[str, Any]:
    """Write bytes and return their manifest entry (size and SHA-256 of exactly these bytes)."""
    with open(path, "wb") as fh:
        fh.write(data)
    return {"size": len(data), "sha256": sha256_hex(data)}


def checkpoint_files(
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    tokenizer_file: Path | None,
) -> dict[str, bytes]:
    """The bytes of each file of a checkpoint, serialized in memory so they are hashed as written."""
    from safetensors.torch import save

    buf = io.BytesIO()
    torch.save(optimizer_state, buf)
    rng_tensors, rng_plain = rng_to_plain(rng_states)
    files = {
        MODEL_FILE: save(model_state, metadata={"format": "pt"}),
        OPTIMIZER_FILE: buf.getvalue(),
        RNG_TENSORS: save(rng_tensors),
        RNG_JSON: (json.dumps(rng_plain) + "\n").encode(),
    }
    if tokenizer_file is not None:
        name = "tokenizer.json" if tokenizer_file.suffix == ".json" else "tokenizer.model"
        try:
            files[name] = tokenizer_file.read_bytes()
        except OSError as exc:
            raise io_error(exc, tokenizer_file, action="read") from exc
    return files


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
    """Write checkpoint `step` under root atomically, point `latest` at it, keep the newest `keep`.

    Non-finite weights are refused: such a checkpoint would replace a good one as `latest`.
    """
    if not all_finite(model_state):
        raise DivergedError(
            f"refusing to write checkpoint {step}: its weights hold NaN or inf",
            f"the run diverged; the checkpoints already in {root} are kept",
        )
    files = checkpoint_files(model_state, optimizer_state, rng_states, tokenizer_file)
    final = root / step_dir_name(step)
    with atomic_path(final, directory=True) as tmp:
        try:
            entries = {name: _write_hashed(tmp / name, data) for name, data in files.items()}
        except OSError as exc:
            # Named with the whole checkpoint's size, so a full disk says how much room it needs.
            raise io_error(exc, final, needed=sum(len(d) for d in files.values())) from exc
        full = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "step": step,
            "saved_at": time.time(),
            **manifest,
            "finite": True,
            "files": entries,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(full, indent=2) + "\n")
    point_latest(root, final.name)
    prune(root, keep)
    return final


def point_latest(root: Path, name: str) -> None:
    """Move root/latest to `name` atomically (a symlink, or a one-line file where there are none)."""
    link = root / LATEST
    tmp = root / f".{LATEST}.tmp-{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.symlink(name, tmp)
        except OSError:
            atomic_write_text(link, name + "\n")
            return
        os.replace(tmp, link)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise io_error(exc, link) from exc


def prune(root: Path, keep: int) -> None:
    """Delete complete checkpoints beyond the newest `keep`: never the one `latest` names, never the
    newest finite one (older manifests that lack the flag count as finite)."""
    if keep <= 0:
        return
    protected = {p.resolve() for p in [latest_target(root)] if p is not None}
    done = complete_checkpoints(root)
    finite = [p for p in done if (read_manifest(p) or Manifest(0, 0, 0, {}, {}, finite=False)).finite]
    if finite:
        protected.add(finite[-1].resolve())
    for path in done[:-keep]:
        if path.resolve() not in protected:
            shutil.rmtree(path, ignore_errors=True)


def remove_partial(root: Path) -> None:
    """Remove temporary directories left by a process killed while saving."""
    if root.is_dir():
        for p in root.iterdir():
            if is_tmp_name(p) or p.name.startswith((".tmp-step-", ".trash-step-")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


_SHAPE_FIELDS = (
    "vocab_size",
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "ffn_dim",
    "multiple_of",
    "ffn_dim_multiplier",
    "tied_embeddings",
    "qkv_bias",
    "rope_theta",
    "norm_eps",
)


def check_compatible(
    path: Path, manifest: Manifest | dict[str, Any], model: ModelConfig, fingerprint: str | None
) -> None:
    """Raise a clear error when a checkpoint's model shape or tokenizer differs from this run's."""
    config = manifest.config if isinstance(manifest, Manifest) else manifest["config"]
    tokenizer = manifest.tokenizer if isinstance(manifest, Manifest) else (manifest.get("tokenizer") or {})
    saved = ModelConfig(**dict(config["model"].items()))
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
    saved_fp = tokenizer.get("fingerprint")
    if fingerprint and saved_fp and saved_fp != fingerprint:
        raise LlmctlError(
            f"checkpoint {path} was trained with tokenizer {saved_fp[:12]}, the data's tokenizer is {fingerprint[:12]}",
            "use token shards made with the checkpoint's tokenizer (a copy is in the checkpoint directory)",
        )


def training_manifest(
    *,
    tokens: int,
    flops: float,
    objective: str,
    data: dict[str, Any],
    schedule: dict[str, Any],
    reporter: dict[str, Any],
    config: dict[str, Any],
    tokenizer: Any,
    data_meta: dict[str, Any],
    world_size: int,
    skipped_steps: int = 0,
) -> dict[str, Any]:
    """The fields of checkpoint.json a training run provides (write_checkpoint adds format, step and files)."""
    return {
        "tokens": tokens,
        "flops": flops,
        "objective": objective,
        "data": data,
        "schedule": schedule,
        "reporter": reporter,
        "config": config,
        "tokenizer": {
            "fingerprint": tokenizer.fingerprint,
            "path": str(tokenizer.path),
            "kind": tokenizer.kind,
        },
        "data_meta": {
            k: data_meta.get(k) for k in ("mode", "separator", "tokenizer", "chat_profile", "vocab_size")
        },
        "world_size": world_size,
        "skipped_steps": skipped_steps,
        "torch": torch.__version__,
    }
