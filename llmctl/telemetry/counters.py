"""Tokens, FLOPs, throughput and MFU from the raw counts the Trainer reports (docs/ARCHITECTURE.md).

Three time scopes, kept apart on purpose, because nanoGPT, nanochat and the transformers Trainer
each shipped throughput bugs by mixing them up:

- run totals (tokens, trained tokens, samples, FLOPs, steps, wall time) survive a resume through
  `state_dict()` / `load_state_dict()`;
- the process window (since this process started) gives the summary's averages and the ETA;
- the log window (since the previous metrics record) and a sliding window of recent steps give the
  rates shown in records and on the panel.

Rates only ever divide counts and seconds measured in the same window, so a resumed run never
divides restored totals by the new process's time. The Trainer already sums counts over
micro-steps and ranks, so gradient accumulation needs nothing here beyond taking a step as a step.

    counters = Counters(flops_per_token=6 * 85e6, peak_flops=None)
    figures = counters.update(counts)       # dict of the step's figures, rates included
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from llmctl.telemetry.events import StepCounts

STATE_VERSION = 1


@dataclass
class _Window:
    """Sums over a span of steps; a rate is a sum divided by the seconds of the same span."""

    steps: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    samples: int = 0
    flops: int = 0
    seconds: float = 0.0
    data_seconds: float = 0.0

    def add(self, counts: StepCounts, flops: int) -> None:
        self.steps += 1
        self.tokens += counts.tokens
        self.trained_tokens += counts.trained_tokens
        self.samples += counts.samples
        self.flops += flops
        self.seconds += counts.step_time
        self.data_seconds += counts.data_time


def _rate(amount: float, seconds: float) -> float | None:
    return amount / seconds if seconds > 0 else None


class RecentSteps:
    """Running sums over the last `size` steps, for the panel's smooth tokens/s and TFLOP/s."""

    def __init__(self, size: int = 20) -> None:
        self._items: deque[tuple[int, int, float]] = deque(maxlen=size)
        self.tokens = 0
        self.flops = 0
        self.seconds = 0.0

    def add(self, tokens: int, flops: int, seconds: float) -> None:
        if len(self._items) == self._items.maxlen:
            old_tokens, old_flops, old_seconds = self._items[0]
            self.tokens -= old_tokens
            self.flops -= old_flops
            self.seconds -= old_seconds
        self._items.append((tokens, flops, seconds))
        self.tokens += tokens
        self.flops += flops
        self.seconds += seconds


class Counters:
    """Cumulative counts, per-window rates and MFU.

    `flops_per_token` is the training (forward + backward) figure from llmctl.plan.flops, the same
    one `flops estimate` prints. `peak_flops` is the dense peak of all devices together in FLOP/s,
    or None when unknown: MFU is then None (shown as n/a), never a guess.
    """

    def __init__(
        self,
        flops_per_token: float,
        peak_flops: float | None,
        total_steps: int = 0,
        start_step: int = 0,
        clock: Any = time.monotonic,
    ) -> None:
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self.total_steps = total_steps
        self._clock = clock
        # Run totals (restored on resume).
        self.step = start_step
        self.tokens = 0
        self.trained_tokens = 0
        self.samples = 0
        self.flops = 0
        self.train_seconds = 0.0
        self.wall_seconds_before = 0.0
        # This process.
        self.process = _Window()
        self.log_window = _Window()
        self.recent = RecentSteps()
        self.started_at = clock()

    def flops_of(self, tokens: int) -> int:
        """Model FLOPs of `tokens` tokens, as an exact integer so totals equal the sum of batches."""
        return int(round(self.flops_per_token * tokens))

    def mfu(self, flops_per_second: float | None) -> float | None:
        """Achieved model FLOP/s over the peak of all devices; None when either is unknown."""
        if flops_per_second is None or not self.peak_flops:
            return None
        return flops_per_second / self.peak_flops

    def update(self, counts: StepCounts) -> dict[str, Any]:
        """Add one optimizer step; return its figures (batch, totals, recent rates)."""
        flops = self.flops_of(counts.tokens)
        self.step = counts.step
        self.tokens += counts.tokens
        self.trained_tokens += counts.trained_tokens
        self.samples += counts.samples
        self.flops += flops
        self.train_seconds += counts.step_time
        self.process.add(counts, flops)
        self.log_window.add(counts, flops)
        self.recent.add(counts.tokens, flops, counts.step_time)
        recent_fps = _rate(self.recent.flops, self.recent.seconds)
        return {
            "step": counts.step,
            "total_steps": self.total_steps,
            "tokens_batch": counts.tokens,
            "tokens_total": self.tokens,
            "trained_tokens_batch": counts.trained_tokens,
            "trained_tokens_total": self.trained_tokens,
            "samples_batch": counts.samples,
            "samples_total": self.samples,
            "flops_per_token": self.flops_per_token,
            "flops_batch": flops,
            "flops_total": self.flops,
            "loss": counts.loss,
            "accuracy": counts.correct / counts.trained_tokens if counts.trained_tokens else None,
            "lr": counts.lr,
            "grad_norm": counts.grad_norm if math.isfinite(counts.grad_norm) else None,
            "step_time_s": counts.step_time,
            "data_time_s": counts.data_time,
            "skipped_steps": counts.skipped_steps,
            "tokens_per_sec": _rate(self.recent.tokens, self.recent.seconds),
            "tflops_per_sec": recent_fps / 1e12 if recent_fps is not None else None,
            "mfu": self.mfu(recent_fps),
            "elapsed_s": self.elapsed(),
            "eta_s": self.eta(),
        }

    def take_log_window(self) -> dict[str, Any]:
        """Rates over the steps since the previous call, then start a new log window."""
        w, self.log_window = self.log_window, _Window()
        fps = _rate(w.flops, w.seconds)
        return {
            "window_steps": w.steps,
            "window_seconds": w.seconds,
            "tokens_per_sec": _rate(w.tokens, w.seconds),
            "trained_tokens_per_sec": _rate(w.trained_tokens, w.seconds),
            "samples_per_sec": _rate(w.samples, w.seconds),
            "tflops_per_sec": fps / 1e12 if fps is not None else None,
            "mfu": self.mfu(fps),
            "al_seconds": w.seconds / w.steps if w.steps else None,
            "window_tokens": w.tokens,
            "window_samples": w.samples,
        }

    def elapsed(self) -> float:
        """Wall seconds since this process started counting (not since the run's first start)."""
        return self._clock() - self.started_at

    def eta(self) -> float | None:
        """Seconds left at this process's average wall time per step (evals and checkpoints included)."""
        if not self.total_steps or self.process.steps == 0:
            return None
        per_step = self.elapsed() / self.process.steps
        return max(0, self.total_steps - self.step) * per_step

    def process_averages(self) -> dict[str, Any]:
        """Averages over this process's steps, for summary.json."""
        p = self.process
        fps = _rate(p.flops, p.seconds)
        return {
            "steps_this_process": p.steps,
            "train_seconds_this_process": p.seconds,
            "data_seconds_this_process": p.data_seconds,
            "tokens_this_process": p.tokens,
            "tokens_per_sec": _rate(p.tokens, p.seconds),
            "samples_per_sec": _rate(p.samples, p.seconds),
            "tflops_per_sec": fps / 1e12 if fps is not None else None,
            "mfu": self.mfu(fps),
            "al_seconds": p.seconds / p.steps if p.steps else None,
        }

    def state_dict(self) -> dict[str, Any]:
        """Run totals for a checkpoint; rates are deliberately not stored."""
        return {
            "version": STATE_VERSION,
            "step": self.step,
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "samples": self.samples,
            "flops": self.flops,
            "train_seconds": self.train_seconds,
            "wall_seconds": self.wall_seconds_before + self.elapsed(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore run totals; this process's windows restart empty."""
        self.step = int(state.get("step", self.step))
        self.tokens = int(state.get("tokens", 0))
        self.trained_tokens = int(state.get("trained_tokens", 0))
        self.samples = int(state.get("samples", 0))
        self.flops = int(state.get("flops", 0))
        self.train_seconds = float(state.get("train_seconds", 0.0))
        self.wall_seconds_before = float(state.get("wall_seconds", 0.0))
        self.process = _Window()
        self.log_window = _Window()
        self.recent = RecentSteps()
        self.started_at = self._clock()
