"""Human numbers both ways: `170M` -> 170_000_000 and 2.34e12 -> `2.34 TFLOPs` (docs/ARCHITECTURE.md).

Pure Python, imported by the planning commands and by telemetry alike.
"""

from __future__ import annotations

import math
import re

from llmctl.errors import LlmctlError

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12, "p": 1e15, "e": 1e18}
_NUMBER = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMbBgGtTpPeE]?)\s*$")


def parse_count(text: str | int | float, what: str = "value") -> float:
    """Parse `170M`, `17B`, `2.5e9`, `1_000` or a plain number into a float.

    K/M/B(=G)/T/P/E are powers of 1000. Raises LlmctlError naming `what` when it cannot.
    """
    if isinstance(text, bool):
        raise LlmctlError(f"{what} must be a number, got {text!r}", "write it like 170M, 17B or 2.5e9")
    if isinstance(text, (int, float)):
        return float(text)
    cleaned = str(text).replace("_", "").replace(",", "").strip()
    match = _NUMBER.match(cleaned)
    if not match:
        if cleaned.startswith("-") and _NUMBER.match(cleaned[1:]):
            raise LlmctlError(f"{what} must be positive, got {text!r}", "write it like 170M, 17B or 2.5e9")
        raise LlmctlError(f"{what} must be a number, got {text!r}", "write it like 170M, 17B or 2.5e9")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def _si(value: float, prefixes: str, base: float = 1000.0) -> tuple[float, str]:
    if value == 0 or not math.isfinite(value):
        return value, ""
    exponent = min(int(math.floor(math.log(abs(value), base))), len(prefixes) - 1)
    exponent = max(exponent, 0)
    return value / base**exponent, prefixes[exponent].strip()


def _trim(x: float, digits: int = 3) -> str:
    """Three significant figures, no trailing zeros: 2.34, 23.4, 234."""
    if x == 0:
        return "0"
    if not math.isfinite(x):
        return str(x)
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def fmt_count(value: float) -> str:
    """Tokens, parameters, samples: `819.2K`, `124M`, `1.5B`, `2T`."""
    scaled, prefix = _si(value, " KMBT")
    return f"{_trim(scaled, 4 if prefix else 3)}{prefix}"


def fmt_flops(value: float, per_second: bool = False) -> str:
    """`2.34 TFLOPs`, or with per_second `312 TFLOP/s`."""
    scaled, prefix = _si(value, " KMGTPEZY")
    return f"{_trim(scaled)} {prefix}{'FLOP/s' if per_second else 'FLOPs'}"


def fmt_bytes(value: float) -> str:
    """Binary units: `512 B`, `1.5 KiB`, `23.4 GiB`."""
    scaled, prefix = _si(value, " KMGTP", base=1024.0)
    return f"{_trim(scaled)} {prefix + 'iB' if prefix else 'B'}"


def fmt_duration(seconds: float) -> str:
    """`45s`, `3m05s`, `1h02m`, `2d03h`."""
    if not math.isfinite(seconds):
        return "n/a"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{sec:02d}s"
