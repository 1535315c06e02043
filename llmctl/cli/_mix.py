"""The epochs a planned token count takes of each source of a mixture: shared by `budget` and `count`.

    doc = mix_plan(["tokens/web:0.7", "tokens/code:0.3"], 2e9)   # {"tokens", "data_mix", "warnings"}
    render_mix(doc)

Reads each source's meta.json only (no torch).
"""

from __future__ import annotations

from typing import Any

from llmctl.units import fmt_count


def mix_plan(
    texts: list[str], tokens: float | None, *, mix_by: str = "tokens", split: str = "train"
) -> dict[str, Any]:
    """Weights, sizes and (with `tokens`) the epochs of each `--data PATH[:WEIGHT]` source, with warnings for
    sources the plan repeats many times."""
    from llmctl.data_sources import parse_sources
    from llmctl.tokens.mix import load_mix, mix_table, repeat_warnings

    mix = load_mix(parse_sources(texts), mix_by=mix_by, split=split)
    return {
        "tokens": tokens,
        "mix_by": mix_by,
        "split": split,
        "data_mix": mix_table(mix, tokens),
        "warnings": repeat_warnings(mix, tokens) if tokens is not None else [],
    }


def render_mix(doc: dict[str, Any]) -> None:
    """The mixture table on stdout, warnings on stderr."""
    from llmctl.cli.flops import text_table
    from llmctl.output import log, out

    planned = doc["tokens"] is not None
    rows = []
    for r in doc["data_mix"]:
        row = [r["path"], f"{r['weight']:.3f}", fmt_count(r["source_tokens"]), f"{r['documents']:,}"]
        if planned:
            row += [fmt_count(r["planned_tokens"]), f"{r['epochs']:.2f}"]
        rows.append(row)
    columns = [
        "source",
        "weight",
        f"{doc['split']} tokens",
        "documents",
        *(["planned tokens", "epochs"] if planned else []),
    ]
    title = f"Mixture over {fmt_count(doc['tokens'])} tokens" if planned else "Mixture"
    out().print(
        text_table(
            title,
            columns,
            rows,
            numeric=tuple(range(1, len(columns))),
            caption=f"weights normalised to sum 1, by {doc['mix_by']}",
        )
    )
    for line in doc["warnings"]:
        log(f"warning: {line}")
