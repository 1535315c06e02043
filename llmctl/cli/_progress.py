"""Progress on stderr, shared by the commands that move bytes or tokens.

    llmctl data download pystdlib --out data/py        # TransferBars: size, speed and ETA per file
    llmctl tokenize --data data/py --tokenizer tok.json --out tokens/py   # TokenProgress
    llmctl dpo --init runs/sft/checkpoints/latest --data tokens/prefs     # PairProgress: the reference pass

A Rich bar on a terminal; without one (or with NO_COLOR) a plain line every 10 s (30 s for transfers), which a log
file or SLURM output keeps well.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from llmctl.output import err, log, stderr_is_plain
from llmctl.raw.transfer import TransferTask
from llmctl.units import fmt_bytes, fmt_count, fmt_duration

TOKEN_PLAIN_EVERY_S = 10.0


def _eta(p: Any) -> float:
    rate = p.rows / p.seconds if p.seconds else 0.0
    return (p.rows_total - p.rows) / rate if rate else float("inf")


class TokenProgress:
    """Context manager; pass `update` as the core function's on_progress callback."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0

    def __enter__(self) -> TokenProgress:
        if not stderr_is_plain():
            from rich.progress import BarColumn, Progress, TextColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[docs]} docs"),
                TextColumn("{task.fields[tokens]} tokens"),
                TextColumn("{task.fields[rate]} tok/s"),
                TextColumn("{task.fields[mbs]}/s"),
                TextColumn("ETA {task.fields[eta]}"),
                console=err(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.label, total=None, docs="0", tokens="0", rate="-", mbs="-", eta="-"
            )
        return self

    def update(self, p: Any) -> None:
        """Show a Progress snapshot (throttled)."""
        now = time.monotonic()
        rate = p.tokens / p.seconds if p.seconds else 0.0
        fields = {
            "docs": fmt_count(p.documents),
            "tokens": fmt_count(p.tokens),
            "rate": fmt_count(rate),
            "mbs": fmt_bytes(p.text_bytes / p.seconds if p.seconds else 0.0),
            "eta": fmt_duration(_eta(p)),
        }
        if self._bar is not None:
            if now - self._last >= 0.1:
                self._bar.update(self._task, total=p.rows_total, completed=p.rows, **fields)
                self._last = now
        elif now - self._last >= TOKEN_PLAIN_EVERY_S:
            if self._last:
                log(
                    f"{self.label}: {fields['docs']} docs, {fields['tokens']} tokens, {fields['rate']} tok/s, "
                    f"{fields['mbs']}/s, {p.rows}/{p.rows_total} rows, ETA {fields['eta']}"
                )
            self._last = now

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)


class PairProgress:
    """Context manager for `dpo`'s reference log-prob pass; pass `update` as run_dpo's on_progress.

    The bar (or the plain lines) lives only while the pass runs: the report marked finished closes it
    with one summary line, before the training panel takes the terminal."""

    def __init__(self, label: str = "reference log-probs") -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None
        self._last = 0.0
        self._open = False

    def __enter__(self) -> PairProgress:
        return self

    def _start(self) -> None:
        self._open = True
        self._last = time.monotonic()
        if not stderr_is_plain():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("pairs"),
                TimeRemainingColumn(),
                console=err(),
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None)

    def update(self, p: Any) -> None:
        """Show a ReferenceProgress snapshot (throttled); the finished one closes the bar."""
        if not self._open and not p.finished:
            self._start()
            log(f"{self.label}: {p.split}, {p.pairs_total:,} pairs (forward passes of the reference, once)")
        if p.finished:
            self._close()
            log(f"{self.label}: done in {fmt_duration(p.seconds)}")
            return
        now = time.monotonic()
        if self._bar is not None:
            self._bar.update(
                self._task, total=p.pairs_total, completed=p.pairs, description=f"{self.label} ({p.split})"
            )
        elif now - self._last >= TOKEN_PLAIN_EVERY_S:
            rate = p.pairs / p.seconds if p.seconds else 0.0
            eta = (p.pairs_total - p.pairs) / rate if rate else float("inf")
            log(f"{self.label}: {p.split} {p.pairs:,}/{p.pairs_total:,} pairs, ETA {fmt_duration(eta)}")
            self._last = now

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None
        self._open = False

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()


# Transfers log less often: a download's plain line carries several files.
TRANSFER_PLAIN_EVERY_S = 30.0
_MIN_LOGGED_BYTES = 1 << 20


class _RichTask:
    def __init__(self, bar: Any, task_id: Any) -> None:
        self._bar, self._id = bar, task_id

    def advance(self, n: int) -> None:
        self._bar.advance(self._id, n)

    def set_total(self, total: int | None) -> None:
        self._bar.update(self._id, total=total)

    def close(self) -> None:
        # A file of unknown size is finished: show it as complete rather than as a spinner.
        for task in self._bar.tasks:
            if task.id == self._id and task.total is None:
                self._bar.update(self._id, total=task.completed)


class _PlainTask:
    def __init__(self, description: str, total: int | None, completed: int) -> None:
        self.description, self.total, self.done = description, total, completed
        self.start = time.monotonic()
        self.first = completed
        self.last_line = self.start
        self.closed = False

    def _line(self, final: bool) -> str:
        seconds = max(time.monotonic() - self.start, 1e-9)
        speed = (self.done - self.first) / seconds
        size = fmt_bytes(self.done) + (f" / {fmt_bytes(self.total)}" if self.total and not final else "")
        tail = f" in {fmt_duration(seconds)}" if final else ""
        if not final and self.total and speed > 0:
            tail = f", ETA {fmt_duration((self.total - self.done) / speed)}"
        return f"{self.description}: {size}, {fmt_bytes(speed)}/s{tail}"

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_line >= TRANSFER_PLAIN_EVERY_S:
            self.last_line = now
            log(self._line(final=False))

    def set_total(self, total: int | None) -> None:
        self.total = total

    def close(self) -> None:
        if not self.closed and self.done - self.first >= _MIN_LOGGED_BYTES:
            log(self._line(final=True))
        self.closed = True


class TransferBars:
    """Context manager implementing llmctl.raw.transfer.TransferProgress for the terminal or a log."""

    def __init__(self) -> None:
        self._bar: Any = None

    def __enter__(self) -> TransferBars:
        if not stderr_is_plain():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn("{task.description}", style="bold"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=err(),
            )
            self._bar.__enter__()
        return self

    def task(self, description: str, total: int | None, completed: int = 0) -> TransferTask:
        """A new bar (or plain log lines)."""
        if self._bar is None:
            return _PlainTask(description, total, completed)
        return _RichTask(self._bar, self._bar.add_task(description, total=total, completed=completed))

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)


def report_requeue(outcome: Any) -> None:
    """On stderr: the SLURM job this run requeued, and `warning:` for a requeue that failed or was skipped."""
    from llmctl.output import log

    for line in outcome.warnings:
        log(f"warning: {line}")
    if outcome.requeued:
        log(
            f"requeued SLURM job {outcome.requeued}: it starts again and continues from "
            f"{outcome.result.checkpoint} with --resume auto"
        )
