"""Weights & Biases sink (`--telemetry.wandb=true`, `pip install "llmctl[wandb]"`).

- WANDB_MODE is honoured (online, offline, disabled). Without it, the W&B host (WANDB_BASE_URL or
  https://api.wandb.ai) is probed first; when it cannot be reached the run logs offline under RUN/wandb
  and the `wandb sync` command is printed at the end, so a cluster node without internet trains anyway.
- The run id is kept in the checkpoint: `--resume auto` and SLURM requeues continue the same run.
- After a crash (kill -9) the previous process had sent steps past the checkpoint. Online, the run is
  rewound to the checkpoint's step with `resume_from` (W&B's rewind) where the installed wandb has it;
  otherwise W&B keeps the first values of those steps and ignores the re-sent ones.
- Metrics carry the TensorBoard tag names (train/loss, tokens/total, eval/loss, ...); the W&B step is
  the optimizer step.
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmctl.errors import LlmctlError
from llmctl.telemetry.trackers import (
    TrackerSink,
    eval_scalars,
    flat_config,
    start_params,
    stopped_cleanly_at,
    task_scalars,
    train_scalars,
)

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_SECONDS = 3.0


def reachable(url: str, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the host of `url` opens within `timeout` seconds."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode(environ: dict[str, str] | os._Environ[str] | None = None) -> tuple[str, str | None]:
    """(mode, note): WANDB_MODE when set, else online when the W&B host answers, else offline."""
    env = os.environ if environ is None else environ
    mode = env.get("WANDB_MODE", "").strip().lower()
    if mode:
        return ("offline" if mode == "dryrun" else mode), None
    base = env.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    if reachable(base):
        return "online", None
    return "offline", f"W&B: {base} cannot be reached; logging offline under RUN/wandb"


class WandbSink(TrackerSink):
    """Logs to one W&B run, continued across resumes."""

    tracker = "wandb"

    def __init__(self, settings: Any, run_dir: Path | None, resume: dict[str, Any] | None = None) -> None:
        super().__init__(settings, run_dir, resume)
        self.run: Any = None
        self.mode = "online"
        self.sync_dir: str | None = None
        self._state: dict[str, Any] = {}

    def connect(self, info: Any, resume_step: int) -> list[str]:
        """Start or continue the W&B run (rewinding it after a crash where possible)."""
        import wandb

        s = self.settings
        notes: list[str] = []
        self.mode, note = choose_mode()
        if note:
            notes.append(note.replace("RUN", str(self.run_dir or ".")))
        name = s.wandb_name or (Path(info.run_dir).name if info.run_dir else None)
        base: dict[str, Any] = {
            "project": s.wandb_project
            or self.resume.get("project")
            or os.environ.get("WANDB_PROJECT")
            or "llmctl",
            "entity": s.wandb_entity or self.resume.get("entity") or None,
            "name": name,
            "tags": list(s.wandb_tags) or None,
            "dir": str(self.run_dir) if self.run_dir else None,
            "mode": self.mode,
            # No console capture: llmctl's stdout (--json) and stderr (panel) stay as they are.
            "settings": wandb.Settings(console="off", silent=True),
        }
        previous = self.resume.get("run_id") if resume_step > 0 else None
        attempts: list[dict[str, Any]] = []
        if previous:
            clean = stopped_cleanly_at(self.run_dir, self.tracker, previous, resume_step)
            can_rewind = "resume_from" in inspect.signature(wandb.init).parameters
            if not clean and self.mode == "online" and can_rewind:
                attempts.append({"resume_from": f"{previous}?_step={resume_step}"})
            attempts.append({"id": previous, "resume": "allow"})
        else:
            attempts.append({})
        error: Exception | None = None
        for extra in attempts:
            try:
                self.run = wandb.init(**base, **extra)
                if "resume_from" in extra:
                    notes.append(
                        f"W&B: run {previous} rewound to step {resume_step} (steps after it were sent "
                        "by the process that stopped without a checkpoint)"
                    )
                elif error is not None:  # the rewind was refused; W&B ignores the re-sent steps instead
                    notes.append(
                        f"W&B: rewinding run {previous} was refused ({error}); steps {resume_step + 1} and "
                        "later keep the values the stopped process sent until this process passes them"
                    )
                break
            except Exception as exc:  # wandb raises its own error types; the next attempt or an error: line
                error = exc
        if self.run is None:
            raise LlmctlError(
                f"W&B could not start a run: {error}",
                "run `wandb login` (or set WANDB_API_KEY), or export WANDB_MODE=offline and `wandb sync` later",
            )
        self.run_id = str(self.run.id)
        self.last_step = resume_step
        self.sync_dir = str(getattr(self.run.settings, "sync_dir", "") or "") or None
        self._state = {"run_id": self.run_id, "project": self.run.project, "entity": self.run.entity or None}
        self.run.config.update(start_params(info.config), allow_val_change=True)
        if previous and previous == self.run_id:
            notes.append(f"W&B: continuing run {self.run_id} from step {resume_step}")
        url = getattr(self.run, "url", None) if self.mode == "online" else None  # offline: wandb warns
        if url:
            notes.append(f"W&B: {url}")
        self._record_open({"mode": self.mode, "sync_dir": self.sync_dir})
        return notes

    def state(self) -> dict[str, Any]:
        return dict(self._state or self.resume)

    def step(self, record: dict[str, Any]) -> None:
        self.run.log(train_scalars(record), step=int(record["step"]))
        self._mark(int(record["step"]))

    def eval(self, record: dict[str, Any]) -> None:
        self.run.log(eval_scalars(record), step=int(record["step"]))
        self._mark(int(record["step"]))

    def task_eval(self, record: dict[str, Any]) -> None:
        self.run.log(task_scalars(record), step=int(record["step"]))
        self._mark(int(record["step"]))

    def close(self, summary: dict[str, Any]) -> None:
        if self.run is None:
            return
        values = {
            k: v
            for k, v in flat_config(summary).items()
            if isinstance(v, (int, float, str, bool)) or v is None
        }
        self.run.summary.update(values)
        failed = summary.get("status") == "failed"
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None
        self._record_closed({"mode": self.mode, "sync_dir": self.sync_dir})
        if self.mode == "offline" and self.sync_dir:
            # Printed after the panel has closed (tracker sinks come last): the one command to upload.
            print(f"W&B: offline run saved; upload it with:\n  wandb sync {self.sync_dir}", file=sys.stderr)
