"""Data mixtures: `--data PATH[:WEIGHT]` specs, normalised weights, and the epochs a plan implies.

    specs = parse_sources(["tokens/web:0.7", "tokens/code:0.3"])
    mix = plan_mix(specs, [read_meta(s.path) for s in specs], mix_by="tokens", split="train")
    mix[0].weight, mix[0].tokens                     # 0.7, tokens of tokens/web's train split
    epochs_for(mix, 2_000_000_000)                   # [epochs of web, epochs of code] in 2B tokens

The text after a spec's last `:` is a weight only when it reads as one: a plain decimal number, or
`epochs=N` where epochs are allowed (SFT). Any other text is part of the path, so `runs/a:b` is a
folder. Weights are normalised to sum 1; a source without a weight takes a share in proportion to its
tokens (or documents with mix_by=documents) of what the given weights leave. Weights by documents are
turned into token weights through each source's mean document length, because batches are cut in tokens.

Reads meta.json only (numpy at most, never torch): `budget` and `count` plan with it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
REPEAT_WARNING_EPOCHS = 4.0
"""A source planned for more epochs than this gets a warning (repeated data gains less each time)."""


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


@dataclass(frozen=True)
class MixSource:
    """A source of a planned mixture: its normalised token weight and the size of its split."""

    path: str
    weight: float
    """Share of the trained tokens, summing to 1 over the mixture."""
    tokens: int
    """Tokens in the source's split (one epoch)."""
    documents: int
    epochs: float | None = None
    """SFT: passes over the source asked for (then `weight` is its share of the planned tokens)."""


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


def check_same_tokenizer(specs: list[SourceSpec], metas: list[dict[str, Any]]) -> None:
    """All sources must be tokenized with one tokenizer (same fingerprint) and the same mode."""
    first = metas[0].get("tokenizer") or {}
    for spec, meta in zip(specs[1:], metas[1:], strict=True):
        tok = meta.get("tokenizer") or {}
        if tok.get("fingerprint") != first.get("fingerprint"):
            raise LlmctlError(
                f"{spec.path} was tokenized with another tokenizer than {specs[0].path} "
                f"(fingerprint {str(tok.get('fingerprint'))[:12]}, not {str(first.get('fingerprint'))[:12]})",
                "re-run `llmctl tokenize` on every source with the same --tokenizer",
            )
        if meta.get("chat_profile") != metas[0].get("chat_profile"):
            raise LlmctlError(
                f"{spec.path} was tokenized with chat profile {meta.get('chat_profile')}, "
                f"{specs[0].path} with {metas[0].get('chat_profile')}",
                "tokenize every SFT source with the same --profile",
            )
        if meta.get("mode") != metas[0].get("mode"):
            raise LlmctlError(
                f"{spec.path} is {meta.get('mode')} data, {specs[0].path} is {metas[0].get('mode')}",
                "mix sources tokenized in the same mode",
            )


def split_size(meta: dict[str, Any], split: str, path: str) -> tuple[int, int]:
    """(tokens, documents) of one split from meta.json."""
    splits = meta.get("splits") or {}
    if split not in splits:
        raise LlmctlError(
            f"split '{split}' not found in {path}", f"splits found: {', '.join(splits) or 'none'}"
        )
    return int(splits[split].get("tokens", 0)), int(splits[split].get("documents", 0))


def plan_mix(
    specs: list[SourceSpec], metas: list[dict[str, Any]], *, mix_by: str = "tokens", split: str = "train"
) -> list[MixSource]:
    """Normalised token weights for the sources (see the module docstring for the rules)."""
    if not specs:
        raise LlmctlError(
            "no training data given", "pass --data DIR (a directory written by `llmctl tokenize`)"
        )
    check_same_tokenizer(specs, metas)
    sizes = [split_size(m, split, s.path) for s, m in zip(specs, metas, strict=True)]
    for spec, (tokens, _) in zip(specs, sizes, strict=True):
        if tokens <= 0:
            raise LlmctlError(
                f"the {split} split of {spec.path} holds no tokens",
                "tokenize some data into it, or leave it out",
            )
    # A source's size in the unit weights count: tokens, or documents.
    unit = [float(d if mix_by == "documents" else t) for t, d in sizes]
    given = sum(s.weight for s in specs if s.weight is not None)
    free = [i for i, s in enumerate(specs) if s.weight is None]
    if not free:
        raw = [float(s.weight) for s in specs]  # type: ignore[arg-type]
    elif len(free) == len(specs):
        raw = unit
    else:
        if given >= 1:
            raise LlmctlError(
                f"the given weights sum to {given:g}, leaving nothing for {specs[free[0]].path}, which has none",
                "with some sources unweighted, give the others fractions summing to less than 1, or weight every source",
            )
        rest = sum(unit[i] for i in free)
        raw = [
            s.weight if s.weight is not None else (1 - given) * unit[i] / rest for i, s in enumerate(specs)
        ]
    if mix_by == "documents":
        # Weights count documents; windows count tokens: scale by each source's mean document length.
        raw = [w * (t / max(1, d)) for w, (t, d) in zip(raw, sizes, strict=True)]
    total = sum(raw)
    return [
        MixSource(s.path, w / total, t, d, s.epochs) for s, w, (t, d) in zip(specs, raw, sizes, strict=True)
    ]


def epochs_for(mix: list[MixSource], tokens: float) -> list[float]:
    """Passes over each source that training on `tokens` tokens of this mixture takes."""
    return [tokens * m.weight / m.tokens for m in mix]


def repeat_warnings(mix: list[MixSource], tokens: float, limit: float = REPEAT_WARNING_EPOCHS) -> list[str]:
    """A line for each source the plan would repeat more than `limit` times."""
    lines = []
    for m, epochs in zip(mix, epochs_for(mix, tokens), strict=True):
        if epochs > limit:
            lines.append(
                f"{m.path} would be repeated {epochs:.1f} times ({m.weight:.0%} of the tokens from "
                f"{m.tokens:,} tokens); repeated data gains less each pass: lower its weight or add data"
            )
    return lines


def mix_table(mix: list[MixSource], tokens: float | None) -> list[dict[str, Any]]:
    """One row per source: path, weight, tokens in the source, planned tokens and epochs (with a plan)."""
    rows = []
    for i, m in enumerate(mix):
        row: dict[str, Any] = {
            "path": m.path,
            "weight": m.weight,
            "source_tokens": m.tokens,
            "documents": m.documents,
        }
        if tokens is not None:
            row["planned_tokens"] = tokens * m.weight
            row["epochs"] = epochs_for(mix, tokens)[i]
        rows.append(row)
    return rows


def load_mix(specs: list[SourceSpec], *, mix_by: str = "tokens", split: str = "train") -> list[MixSource]:
    """plan_mix over the sources' meta.json files."""
    from llmctl.tokens.shards import read_meta

    return plan_mix(specs, [read_meta(s.path) for s in specs], mix_by=mix_by, split=split)
