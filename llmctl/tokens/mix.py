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

from dataclasses import dataclass
from typing import Any

from llmctl.data_sources import SourceSpec
from llmctl.errors import LlmctlError

REPEAT_WARNING_EPOCHS = 4.0
"""A source planned for more epochs than this gets a warning (repeated data gains less each time)."""


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
