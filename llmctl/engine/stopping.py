"""Why a run stops early: a signal, a time limit, or the SLURM job's end time.

    stops = StopRequests()
    with stops.installed():                  # SIGTERM, SIGINT, SIGUSR1 set a flag; the step finishes
        ...
        stops.signal                         # 'SIGTERM' once one arrived
    deadline = Deadline(time_limit=3600, slurm_end=slurm_end_time(), margin=60)
    deadline.reached(now, step_seconds, save_seconds)
    warning = requeue_job("4242")            # None once `scontrol requeue 4242` accepted it

Schedulers send SIGTERM (or SIGUSR1 with `sbatch --signal=USR1@120`) before killing a job; the
trainer then saves a checkpoint after the current step and exits 0. SIGUSR1 or the job's end time
under SLURM are the time limit: run.py then asks SLURM to requeue the job (slurm.requeue), since
`sbatch --requeue` alone only acts on node failure or preemption. A second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR1")
TIME_LIMIT_SIGNAL = "SIGUSR1"
"""What `sbatch --signal=USR1@120` sends before the time limit; SIGTERM also means scancel, so never requeues."""
REQUEUE_TIMEOUT = 30.0
"""Seconds `scontrol requeue` may take before it counts as failed."""
SIGNAL_CODES = {name: i + 1 for i, name in enumerate(_SIGNALS)}
"""Small integers for agreeing on a stop across ranks (the largest wins)."""


class StopRequests:
    """Records the first stop signal; the loop checks `signal` between steps."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if name == "SIGINT" and self.signal == "SIGINT":
            raise KeyboardInterrupt
        if self.signal is None:
            self.signal = name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequests]:
        """Handle the stop signals while the block runs (only possible in the main thread)."""
        main = threading.current_thread() is threading.main_thread()
        if main:
            for name in _SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    @property
    def code(self) -> int:
        """0 when no signal arrived, else the signal's code in SIGNAL_CODES."""
        return SIGNAL_CODES.get(self.signal or "", 0)


def signal_of(code: int) -> str | None:
    """The signal name of a code from SIGNAL_CODES."""
    for name, c in SIGNAL_CODES.items():
        if c == code:
            return name
    return None


def slurm_end_time(environ: dict[str, str] | None = None) -> float | None:
    """The SLURM job's end time (Unix seconds): SLURM_JOB_END_TIME, else asked of squeue; None outside SLURM."""
    env = os.environ if environ is None else environ
    if env.get("SLURM_JOB_END_TIME", "").isdigit():
        return float(env["SLURM_JOB_END_TIME"])
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", job, "-o", "%e"], capture_output=True, text=True, timeout=10
        )
        stamp = out.stdout.strip()
        if stamp and stamp not in ("N/A", "NONE", "Unknown"):
            return time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    return None


class Deadline:
    """When to stop so the final checkpoint still fits: before `start + time_limit`, and `margin` seconds
    before the SLURM job's end, leaving room for one more step and one save."""

    def __init__(
        self, start: float, time_limit: float | None, slurm_end: float | None, margin: float
    ) -> None:
        self.ends: list[float] = []
        self.slurm_end = None if slurm_end is None else slurm_end - margin
        if time_limit is not None:
            self.ends.append(start + time_limit)
        if self.slurm_end is not None:
            self.ends.append(self.slurm_end)

    @property
    def is_slurm(self) -> bool:
        """True when the earliest deadline is the SLURM job's end (not train.time_limit)."""
        return self.slurm_end is not None and self.slurm_end <= min(self.ends)

    @property
    def active(self) -> bool:
        """True when there is a deadline at all."""
        return bool(self.ends)

    def reached(self, now: float, step_seconds: float, save_seconds: float) -> bool:
        """True when another step and a save would not finish before the earliest deadline."""
        return bool(self.ends) and now + 1.5 * step_seconds + save_seconds >= min(self.ends)


def requeue_job(job: str, timeout: float = REQUEUE_TIMEOUT) -> str | None:
    """Ask SLURM to requeue `job` (`scontrol requeue JOB`): None when it accepted, else a warning saying why not
    (scontrol missing, a non-zero exit with its message, or no answer within `timeout` seconds)."""
    why = f"could not requeue SLURM job {job}"
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        return f"{why}: scontrol is not on PATH"
    except subprocess.TimeoutExpired:
        return f"{why}: `scontrol requeue {job}` gave no answer within {timeout:g} s"
    except OSError as exc:
        return f"{why}: {exc.strerror or exc}"
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        return (
            f"{why}: `scontrol requeue {job}` exited {done.returncode}: {said[-1] if said else 'no message'}"
        )
    return None
