"""The ranges `flops estimate` and `budget` accept, one table for the checks, the --help texts and README.

    check_range("hours", 24.0)          # fine
    check_range("num-gpus", 0)          # LlmctlError: --num-gpus must be positive, got 0 (range: 1 to 100,000)

The bounds are wide enough for any real plan (a 1K-parameter toy to a 100T-parameter model, one minute
to ten years, one GPU to 100,000) and narrow enough that a slip (a missing suffix, 1e9 hours) is caught
instead of producing a confident table of nonsense. Pure Python: no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmctl.errors import LlmctlError

HOURS_PER_YEAR = 8766.0
"""365.25 days."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of one numeric flag, with how to write them for people."""

    low: float
    high: float
    text: str
    """The range in words, as --help and errors print it."""
    example: str
    """A sensible value, for the hint."""


RANGES: dict[str, Range] = {
    "params": Range(1e3, 1e14, "1K to 100T parameters", "--params 170M"),
    "tokens": Range(1e3, 1e17, "1K to 100P tokens", "--tokens 2.5B"),
    "hours": Range(1 / 60, 10 * HOURS_PER_YEAR, "1/60 (one minute) to 87,660 (ten years)", "--hours 24"),
    "num-gpus": Range(1, 100_000, "1 to 100,000", "--num-gpus 8"),
    "tokens-per-param": Range(0.01, 1e6, "0.01 to 1,000,000", "--tokens-per-param 20 (Chinchilla)"),
    "seq-len": Range(1, 16_777_216, "1 to 16,777,216 (16M)", "--seq-len 1024"),
    "batch-size": Range(1, 1e9, "1 to 1,000,000,000 sequences", "--batch-size 512"),
    "micro-batch": Range(1, 1_000_000, "1 to 1,000,000 sequences", "--micro-batch 8"),
    "vocab-size": Range(2, 16_777_216, "2 to 16,777,216", "--vocab-size 32768"),
    "dim": Range(1, 1_048_576, "1 to 1,048,576", "--dim 768"),
    "layers": Range(1, 100_000, "1 to 100,000", "--layers 12"),
    "heads": Range(1, 100_000, "1 to 100,000", "--heads 12"),
    "kv-heads": Range(1, 100_000, "1 to 100,000", "--kv-heads 4"),
    "ffn-dim": Range(1, 16_777_216, "1 to 16,777,216", "--ffn-dim 3072"),
}
"""Flag name (without --) -> accepted range. --mfu is checked on its own: (0, 1]."""


def _number(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:g}".replace("e+", "e")


def check_range(name: str, value: float | None) -> None:
    """Raise LlmctlError naming `--name` and its range when `value` (None: not given) falls outside it."""
    if value is None:
        return
    r = RANGES[name]
    if isinstance(value, bool) or not math.isfinite(value) or not r.low <= value <= r.high:
        shown = _number(value) if math.isfinite(value) else str(value)
        if value <= 0 < r.low:
            raise LlmctlError(
                f"--{name} must be positive, got {shown} (range: {r.text})", f"e.g. {r.example}"
            )
        raise LlmctlError(f"--{name} must be from {r.text}, got {shown}", f"e.g. {r.example}")


def range_help(name: str) -> str:
    """`Range: 1 to 100,000.` for a --help text."""
    return f"Range: {RANGES[name].text}."
