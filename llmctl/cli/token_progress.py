"""Progress on stderr for `tokenize` and `count --data`: documents, tokens, tokens/s and ETA.

    llmctl tokenize --data data/ts --tokenizer tok/ts.json --out tokens/ts --num-proc 8

A Rich bar on a terminal; without one (or with NO_COLOR) a plain line every 10 seconds, which a log
file or SLURM output keeps well.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from llmctl.output import err, log, stderr_is_plain
from llmctl.units import fmt_bytes, fmt_count, fmt_duration

PLAIN_EVERY_S = 10.0


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
            self._task = self._bar.add_task(self.label, total=None, docs="0", tokens="0", rate="-", mbs="-", eta="-")
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
        elif now - self._last >= PLAIN_EVERY_S:
            if self._last:
                log(
                    f"{self.label}: {fields['docs']} docs, {fields['tokens']} tokens, {fields['rate']} tok/s, "
                    f"{fields['mbs']}/s, {p.rows}/{p.rows_total} rows, ETA {fields['eta']}"
                )
            self._last = now

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)
