"""An exclusive lock on a run directory, so two training processes never write one run at once.

    with RunLock(run_dir) as lock:     # error: RUN is in use by pid P on host H   (exit 2)
        for note in lock.notes: ...    # "took over a stale lock ..." when one was left behind
        train()

RUN/.llmctl.lock is created with O_EXCL and holds JSON: host, pid, SLURM job id, start time and a
heartbeat the owner refreshes every 30 s from a daemon thread. A lock is stale, and is taken over with
a note, when its owner's pid is dead on this host, when its heartbeat is older than 2 minutes (a
crashed node), or when an earlier run of this same SLURM job left it (a requeue, possibly on another
node). A live lock is never taken. Only rank 0 of a distributed run takes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.files import atomic_write_json, io_error, pid_alive

LOCK_NAME = ".llmctl.lock"
HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 120.0


def _slurm_job() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or None


def stale_reason(
    owner: dict[str, Any],
    *,
    now: float | None = None,
    host: str | None = None,
    job: str | None = None,
    pid: int | None = None,
) -> str | None:
    """Why a lock left by `owner` may be taken over, or None when its owner may still be running."""
    now = time.time() if now is None else now
    host = socket.gethostname() if host is None else host
    job = _slurm_job() if job is None else job
    pid = os.getpid() if pid is None else pid
    try:
        owner_pid, owner_host = int(owner["pid"]), str(owner["host"])
        beat = float(owner["heartbeat"])
    except (KeyError, TypeError, ValueError):
        return "its lock file is unreadable"
    if job and owner.get("slurm_job_id") == job and not (owner_host == host and owner_pid == pid):
        return f"it was left by an earlier run of SLURM job {job}"
    if owner_host == host and not pid_alive(owner_pid):
        return f"its owner (pid {owner_pid}) is no longer running"
    if now - beat > STALE_SECONDS:
        return f"its heartbeat is {now - beat:.0f} s old"
    return None


@dataclass
class RunLock:
    """Holds RUN/.llmctl.lock while a run writes its directory; released on exit."""

    run_dir: Path
    heartbeat_seconds: float = HEARTBEAT_SECONDS
    notes: list[str] = field(default_factory=list)
    """Messages for the run's log (a stale lock taken over)."""

    def __post_init__(self) -> None:
        self.path = Path(self.run_dir) / LOCK_NAME
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held = False

    def _record(self, started: float) -> dict[str, Any]:
        return {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job_id": _slurm_job(),
            "started": started,
            "heartbeat": time.time(),
        }

    def _create(self) -> bool:
        """Try to create the lock file exclusively; False when it exists."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise io_error(exc, self.path, action="create") from exc
        self._started = time.time()
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(self._record(self._started)) + "\n")
        return True

    def _owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def acquire(self) -> RunLock:
        """Take the lock, taking over a stale one; an error naming the owner when a live one is held."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise io_error(exc, self.path.parent, action="create") from exc
        for _ in range(5):
            if self._create():
                break
            owner = self._owner()
            if owner is None:
                continue  # released meanwhile: try again
            reason = stale_reason(owner)
            if reason is None:
                raise LlmctlError(
                    f"{self.run_dir} is in use by pid {owner.get('pid')} on host {owner.get('host')}",
                    "wait for that run to finish (or stop it), or write this run to another --out",
                )
            # Take it over: replace the file only if it is still the one we judged stale.
            with contextlib.suppress(FileNotFoundError):
                if self._owner() == owner:
                    self.path.unlink()
                    self.notes.append(
                        f"took over the lock of {self.run_dir} from pid {owner.get('pid')} on host "
                        f"{owner.get('host')}: {reason}"
                    )
        else:
            raise LlmctlError(
                f"could not take the lock {self.path}", "another process keeps taking it; try again"
            )
        self._held = True
        self._thread = threading.Thread(target=self._beat, name="llmctl-run-lock", daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            owner = self._owner()
            if not owner or owner.get("pid") != os.getpid() or owner.get("host") != socket.gethostname():
                return  # taken over (we were judged stale): never fight for it
            with contextlib.suppress(Exception):
                atomic_write_json(self.path, self._record(self._started))

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._held:
            owner = self._owner()
            if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
                with contextlib.suppress(OSError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
