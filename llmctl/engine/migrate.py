"""`llmctl checkpoint migrate`: convert a format-1 checkpoint (pickled rng.pt) to the current format, once.

    report = migrate_checkpoint("runs/old/checkpoints/step-000500")

Format 1 stored the random generator states with a full pickle, and loading a full pickle can run
any code the file asks for. The conversion still never runs such code: rng.pt is read with
`weights_only=True`, allowing only the NumPy array types a generator state holds, so a file that
asks for anything else is refused. The states are rewritten as rng.safetensors + rng.json, every
file gets a SHA-256 in checkpoint.json, and rng.pt is removed. Only convert checkpoints you made
yourself: the conversion vouches for the files from then on.
"""

from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.engine.checkpoint import rng_to_plain
from llmctl.errors import LlmctlError
from llmctl.files import atomic_write_bytes, atomic_write_json, file_sha256, io_error
from llmctl.infer.checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    LEGACY_RNG_FILE,
    MANIFEST,
    RNG_JSON,
    RNG_TENSORS,
)


@dataclass
class MigrateResult:
    """What the conversion did."""

    path: str
    converted: bool
    """False when the checkpoint already had the current format."""
    files: list[str] = field(default_factory=list)


def _legacy_rng(path: Path) -> list[dict[str, Any]]:
    import numpy as np
    import torch

    allowed = [np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    core = getattr(np, "_core", None) or np.core
    allowed.append(core.multiarray._reconstruct)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise io_error(exc, path, action="read") from exc
    try:
        with torch.serialization.safe_globals(allowed):
            states = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(states, list) or not all(isinstance(s, dict) and "torch" in s for s in states):
            raise ValueError("not a list of generator states")
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise LlmctlError(
            f"refusing to convert {path}: it holds more than generator states (it may try to run code)",
            "this file was not loaded; use a checkpoint you made yourself, or start the run again",
        ) from exc
    return states


def migrate_checkpoint(path: str | Path) -> MigrateResult:
    """Convert one format-1 checkpoint directory in place; a current one is left as it is."""
    from safetensors.torch import save

    ckpt = Path(path)
    try:
        raw = json.loads((ckpt / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LlmctlError(
            f"{ckpt} is not a checkpoint directory (no readable {MANIFEST})",
            "pass a step-* directory under RUN/checkpoints",
        ) from exc
    if raw.get("format") != FORMAT_NAME or not isinstance(raw.get("files"), dict):
        raise LlmctlError(
            f"{ckpt / MANIFEST} is not an llmctl checkpoint manifest", "pass a step-* directory"
        )
    if int(raw.get("format_version", 1)) >= FORMAT_VERSION and LEGACY_RNG_FILE not in raw["files"]:
        return MigrateResult(str(ckpt), False)
    for name, size in raw["files"].items():
        expected = size["size"] if isinstance(size, dict) else size
        if not (ckpt / name).is_file() or (ckpt / name).stat().st_size != expected:
            raise LlmctlError(
                f"checkpoint file {ckpt / name} is missing or has the wrong size",
                "only a complete checkpoint can be converted",
            )
    rng_tensors, rng_plain = rng_to_plain(_legacy_rng(ckpt / LEGACY_RNG_FILE))
    atomic_write_bytes(ckpt / RNG_TENSORS, save(rng_tensors))
    atomic_write_bytes(ckpt / RNG_JSON, (json.dumps(rng_plain) + "\n").encode())
    files: dict[str, Any] = {}
    for name in [n for n in raw["files"] if n != LEGACY_RNG_FILE] + [RNG_TENSORS, RNG_JSON]:
        try:
            sha = file_sha256(ckpt / name)
        except OSError as exc:
            raise io_error(exc, ckpt / name, action="read") from exc
        files[name] = {"size": (ckpt / name).stat().st_size, "sha256": sha}
    # The manifest is replaced last and atomically: until then the checkpoint is still a format-1 one.
    atomic_write_json(ckpt / MANIFEST, {**raw, "format_version": FORMAT_VERSION, "files": files})
    try:
        (ckpt / LEGACY_RNG_FILE).unlink()
    except OSError as exc:
        raise io_error(exc, ckpt / LEGACY_RNG_FILE, action="remove") from exc
    return MigrateResult(str(ckpt), True, sorted(files))


def migrate_many(path: str | Path) -> list[MigrateResult]:
    """Convert one checkpoint, or every step-* directory of a checkpoints/ or run directory."""
    from llmctl.infer.checkpoint import step_dirs

    p = Path(path)
    if (p / MANIFEST).is_file():
        return [migrate_checkpoint(p)]
    dirs = step_dirs(p / "checkpoints") or step_dirs(p)
    if not dirs:
        raise LlmctlError(
            f"no checkpoint in {p}", "pass a step-* directory, a checkpoints/ directory or a run directory"
        )
    return [migrate_checkpoint(d) for d in dirs]
