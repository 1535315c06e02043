"""Everything llmctl prints goes through here (docs/ARCHITECTURE.md).

Results go to stdout (Rich tables for people, one JSON document with `--json`); progress, logs and
live panels go to stderr. Colour, progress bars and live panels are off when the stream is not a
terminal or NO_COLOR is set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def _plain(stream: Any) -> bool:
    if os.environ.get("NO_COLOR"):
        return True
    try:
        return not stream.isatty()
    except (AttributeError, ValueError):
        return True


def stdout_is_plain() -> bool:
    """True when stdout is not a terminal or NO_COLOR is set."""
    return _plain(sys.stdout)


def stderr_is_plain() -> bool:
    """True when stderr is not a terminal or NO_COLOR is set: no live panel, no progress bars."""
    return _plain(sys.stderr)


def _console(stderr: bool) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    plain = _plain(stream)
    # Fixed width when not a terminal so tables in logs and README examples do not wrap at 80 columns.
    return Console(
        file=stream,
        no_color=plain,
        force_terminal=None if not plain else False,
        highlight=False,
        width=None if not plain else 120,
        soft_wrap=False,
    )


@lru_cache(maxsize=1)
def _cached(stderr: bool, stream_id: int) -> Console:
    return _console(stderr)


def out() -> Console:
    """The stdout console, for results."""
    return _cached(False, id(sys.stdout))


def err() -> Console:
    """The stderr console, for progress and logs."""
    return _cached(True, id(sys.stderr))


def log(message: str) -> None:
    """One line of progress or information on stderr."""
    err().print(message, markup=False, highlight=False, soft_wrap=True)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return _jsonable(asdict(value))
    return value


def print_json(data: Any) -> None:
    """One JSON document on stdout: stable keys, numbers as numbers, NaN/inf as null."""
    sys.stdout.write(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: list[str], rows: list[list[Any]], caption: str | None = None) -> Any:
    """A Rich table with right-aligned numeric columns (all but the first)."""
    from rich.table import Table

    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i == 0 else "right", overflow="fold")
    for row in rows:
        t.add_row(*[str(c) for c in row])
    return t


@contextlib.contextmanager
def quiet_library_logs(*names: str) -> Iterator[None]:
    """Within the block, the named libraries' loggers report errors only.

    torchao logs a warning for every compiled kernel it cannot load (CUDA-only ones on a CPU build), and
    torch one for each enum it registers, whenever torchao is imported: by llmctl's QLoRA and by
    transformers' model classes (import's parity check). Neither concerns the user."""
    loggers = [logging.getLogger(n) for n in names or ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
