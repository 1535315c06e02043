"""`--data PATH[:WEIGHT]` and `data.sources` entries, parsed and checked: pure data, no files read.

    parse_sources(["tokens/web:0.7", "tokens/code:0.3"])    # [SourceSpec(path, weight), ...]
    parse_source("runs/a:b")                                 # a folder with a colon: no weight
    specs_from_config(None, [{"path": "tokens/web", "weight": 0.7}])

The text after a spec's last `:` is a weight only when it reads as one: a plain decimal number, or
`epochs=N` where epochs are allowed (SFT). Any other text is part of the path. The mixture these specs
describe is planned from the sources' meta.json in llmctl/tokens/mix.py.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


@dataclass(frozen=True)
class SourceSpec:
    """One `--data` entry as given: a path and an optional weight or epoch count."""

    path: str
    weight: float | None = None
    epochs: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """The data.sources entry of this spec."""
        entry: dict[str, Any] = {"path": self.path}
        if self.weight is not None:
            entry["weight"] = self.weight
        if self.epochs is not None:
            entry["epochs"] = self.epochs
        return entry


def _positive(value: float, what: str, spec: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise LlmctlError(
            f"the {what} in --data {spec} must be a positive number, got {value:g}",
            f"write PATH:0.3 (weights are normalised to sum 1){', or PATH:epochs=2' if what == 'epochs' else ''}",
        )
    return value


def parse_source(text: str, *, allow_epochs: bool = False) -> SourceSpec:
    """`PATH`, `PATH:WEIGHT` or (allow_epochs) `PATH:epochs=N`; a tail that is neither stays in the path."""
    head, sep, tail = text.rpartition(":")
    if not sep or not head:
        return SourceSpec(text)
    tail = tail.strip()
    if tail.startswith("epochs="):
        if not allow_epochs:
            raise LlmctlError(
                f"--data {text}: epochs=N is for `llmctl sft`",
                "pretraining mixes by weight: write PATH:0.3, or train.steps / train.max_tokens for the length",
            )
        number = tail[len("epochs=") :]
        if not _NUMBER.fullmatch(number):
            raise LlmctlError(
                f"--data {text}: epochs must be a number, got {number!r}", "write PATH:epochs=2"
            )
        return SourceSpec(head, epochs=_positive(float(number), "epochs", text))
    if _NUMBER.fullmatch(tail):
        return SourceSpec(head, weight=_positive(float(tail), "weight", text))
    return SourceSpec(text)


def parse_sources(texts: list[str], *, allow_epochs: bool = False) -> list[SourceSpec]:
    """Each `--data` value parsed; the same path twice is an error."""
    specs = [parse_source(t, allow_epochs=allow_epochs) for t in texts]
    check_unique(specs)
    return specs


def sft_specs(specs: list[SourceSpec]) -> list[SourceSpec]:
    """SFT sources mix by epochs: a number weight is refused; no epochs means 1."""
    for s in specs:
        if s.weight is not None:
            raise LlmctlError(
                f"sft mixes sources by epochs, not weights: --data {s.path}:{s.weight:g}",
                f"write --data {s.path}:epochs=N (N passes over that source; 1 when left out)",
            )
    return [SourceSpec(s.path, None, s.epochs or 1.0) for s in specs]


def check_unique(specs: list[SourceSpec]) -> None:
    """Refuse a path given twice (its weight would be ambiguous)."""
    seen: set[str] = set()
    for s in specs:
        key = str(Path(s.path).expanduser())
        if key in seen:
            raise LlmctlError(
                f"--data {s.path} is given twice", "give each source once, with the sum of its weights"
            )
        seen.add(key)


def specs_from_config(path: str | None, sources: list[dict[str, Any]]) -> list[SourceSpec]:
    """The sources of a data config: data.sources entries, or data.path as the one source."""
    if not sources:
        return [SourceSpec(path)] if path else []
    specs = []
    for i, entry in enumerate(sources):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not entry.get("path"):
            raise LlmctlError(
                f"data.sources[{i}] must be a mapping with a path, got {entry!r}",
                "in YAML write sources: [{path: tokens/web, weight: 0.7}, {path: tokens/code, weight: 0.3}]",
            )
        unknown = set(entry) - {"path", "weight", "epochs"}
        if unknown:
            raise LlmctlError(
                f"data.sources[{i}] has unknown key(s): {', '.join(sorted(unknown))}",
                "keys: path, weight, epochs",
            )
        weight, epochs = entry.get("weight"), entry.get("epochs")
        try:
            weight = None if weight is None else _positive(float(weight), "weight", str(entry["path"]))
            epochs = None if epochs is None else _positive(float(epochs), "epochs", str(entry["path"]))
        except (TypeError, ValueError) as exc:
            raise LlmctlError(
                f"data.sources[{i}]: weight and epochs must be numbers, got {entry!r}", "e.g. weight: 0.3"
            ) from exc
        specs.append(SourceSpec(str(Path(str(entry["path"])).expanduser()), weight, epochs))
    check_unique(specs)
    return specs
