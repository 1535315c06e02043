"""The progress interface fetching and normalizing report to; the CLI supplies a Rich or plain renderer.

Core code calls `progress.task(description, total)` and `task.advance(n)`; it never draws anything.
"""

from __future__ import annotations

from typing import Protocol


class TransferTask(Protocol):
    """One bar: bytes of one file downloaded or read."""

    def advance(self, n: int) -> None:
        """n more bytes done (negative when a restarted download discards bytes)."""

    def set_total(self, total: int | None) -> None:
        """The size, once known."""

    def close(self) -> None:
        """The file is done (or abandoned)."""


class TransferProgress(Protocol):
    """Makes one TransferTask per file."""

    def task(self, description: str, total: int | None, completed: int = 0) -> TransferTask:
        """A new bar starting at `completed` bytes of `total` (None: unknown)."""
        ...


class _NoTask:
    def advance(self, n: int) -> None:
        pass

    def set_total(self, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass


class NoProgress:
    """Progress that shows nothing (library use, tests)."""

    def task(self, description: str, total: int | None, completed: int = 0) -> TransferTask:
        return _NoTask()
