"""What the experiment trackers (W&B, MLflow) share: the base sink, the install check, what gets logged.

A tracker is a `Sink` like the others, with two additions the other sinks do not need:

- `connect(info, resume_step)` opens the tracker run on the training thread before the first step, so a
  refusal (package missing, MLflow file store, server down) is an `error:` before any training, not a
  sink silently dropped later;
- `state()` is what the checkpoint keeps (through `Telemetry.state_dict`), so a resumed or requeued job
  continues the same tracker run; `Telemetry` hands it back as `resume`.

RUN/trackers.json records each tracker's run id and the last step it logged; `last_step` is null
while a process is logging. A resume from step k where `last_step == k` means the previous process
stopped cleanly at its checkpoint; anything else means steps after k were already sent (kill -9).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.telemetry.sinks import TB_EVAL_TAGS, TB_TAGS, Sink, scalars, task_eval_scalars

TRACKERS_JSON = "trackers.json"

# (module to import, extra to install, name in messages)
PACKAGES: dict[str, tuple[str, str, str]] = {
    "wandb": ("wandb", "wandb", "Weights & Biases"),
    "mlflow": ("mlflow", "mlflow", "MLflow"),
}


def require_installed(tracker: str) -> None:
    """Raise the install command when `--telemetry.<tracker>=true` names a package that is not installed."""
    module, extra, label = PACKAGES[tracker]
    if importlib.util.find_spec(module) is None:
        raise LlmctlError(
            f"--telemetry.{tracker}=true needs the {label} package ({module}), which is not installed",
            f'pip install "llmctl[{extra}]"',
        )


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"dim": 64}} -> {"model.dim": 64}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def fingerprints(config: dict[str, Any]) -> dict[str, str]:
    """The data and tokenizer fingerprints of the run's token directory (data.path/meta.json).

    The data fingerprint is the sha256 of meta.json, which lists every shard with its token and
    document counts, the tokenizer's fingerprint and the tokenize settings: the same data gives the
    same fingerprint, re-tokenized or added-to data another.
    """
    path = (config.get("data") or {}).get("path")
    if not path:
        return {}
    meta_path = Path(path) / "meta.json"
    try:
        raw = meta_path.read_bytes()
        meta = json.loads(raw)
    except (OSError, ValueError):
        return {}
    found = {"data_fingerprint": hashlib.sha256(raw).hexdigest()}
    tokenizer = (meta.get("tokenizer") or {}).get("fingerprint") if isinstance(meta, dict) else None
    if tokenizer:
        found["tokenizer_fingerprint"] = str(tokenizer)
    return found


def start_params(config: dict[str, Any]) -> dict[str, Any]:
    """What a tracker records at start: the resolved config, flattened, and the fingerprints."""
    return {**flat_config(config), **fingerprints(config)}


def train_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A train record's figures under the TensorBoard tag names (train/loss, tokens/total, ...)."""
    return scalars(TB_TAGS, record)


def eval_scalars(record: dict[str, Any]) -> dict[str, float]:
    """An eval record's figures under the TensorBoard tag names (eval/loss, ...)."""
    return scalars(TB_EVAL_TAGS, record)


def task_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A task_eval record's figures under the TensorBoard tag names (eval/<task>/acc, eval/centered_acc)."""
    return task_eval_scalars(record)


def summary_scalars(summary: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of summary.json, flattened: {"summary/tokens": ..., "summary/efficientllm/amu_gb": ...}."""
    flat = flat_config(summary)
    names = {key: f"summary/{key.replace('.', '/')}" for key in flat}
    return scalars(names, flat)


def read_trackers_json(run_dir: Path | None) -> dict[str, Any]:
    """RUN/trackers.json, or {} when absent or unreadable."""
    if run_dir is None:
        return {}
    with contextlib.suppress(OSError, ValueError):
        doc = json.loads((run_dir / TRACKERS_JSON).read_text())
        if isinstance(doc, dict):
            return doc
    return {}


def write_trackers_json(run_dir: Path | None, tracker: str, entry: dict[str, Any]) -> None:
    """Replace this tracker's entry in RUN/trackers.json (atomically)."""
    if run_dir is None:
        return
    from llmctl.files import atomic_write_json

    doc = read_trackers_json(run_dir)
    doc[tracker] = entry
    atomic_write_json(run_dir / TRACKERS_JSON, doc)


def stopped_cleanly_at(run_dir: Path | None, tracker: str, run_id: str, resume_step: int) -> bool:
    """True when the previous process closed this tracker run with its last logged step = the checkpoint's."""
    entry = read_trackers_json(run_dir).get(tracker) or {}
    return entry.get("run_id") == run_id and entry.get("last_step") == resume_step


class TrackerSink(Sink):
    """Base of the W&B and MLflow sinks: connect() before training, state() into the checkpoint."""

    tracker = ""

    def __init__(self, settings: Any, run_dir: Path | None, resume: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.resume = dict(resume or {})
        self.run_id: str | None = None
        self.last_step: int | None = None

    def connect(self, info: Any, resume_step: int) -> list[str]:
        """Open (or continue) the tracker run; returns lines to show the user. Raises LlmctlError."""
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps to continue this tracker run after a resume."""
        return {"run_id": self.run_id} if self.run_id else {}

    def _mark(self, step: int) -> None:
        self.last_step = step if self.last_step is None else max(self.last_step, step)

    def _record_open(self, extra: dict[str, Any]) -> None:
        write_trackers_json(self.run_dir, self.tracker, {"run_id": self.run_id, "last_step": None, **extra})

    def _record_closed(self, extra: dict[str, Any]) -> None:
        write_trackers_json(
            self.run_dir, self.tracker, {"run_id": self.run_id, "last_step": self.last_step, **extra}
        )
