"""Preference-pair shards in the shared commands: `tokenize --mode dpo`, `count` and `inspect` of pair shards.

llmctl tokenize --mode dpo --profile chat --data data/prefs --tokenizer tok.json --out tokens/prefs
llmctl count tokens/prefs          llmctl inspect tokens/prefs
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError


def tokenize_pairs_command(
    data: Path | None,
    tokenizer: Path | None,
    out_dir: Path,
    profile: str,
    max_len: int,
    splits: tuple[str, ...],
    as_json: bool,
) -> None:
    """`llmctl tokenize --mode dpo`: write pair shards and report dropped and unequally cut pairs."""
    from llmctl.output import log, out, print_json, table
    from llmctl.tokens.pairs import tokenize_pairs
    from llmctl.units import fmt_count

    if data is None or tokenizer is None:
        raise LlmctlError(
            "--data and --tokenizer are required", "pass the preference dataset and the tokenizer"
        )
    meta = tokenize_pairs(data, tokenizer, out_dir, profile=profile, max_len=max_len, splits=splits)
    if as_json:
        print_json({"out": str(out_dir), "meta": meta})
        return
    rows = [
        [
            name,
            f"{s['pairs']:,}",
            fmt_count(s["prompt_tokens"]),
            fmt_count(s["chosen_tokens"]),
            fmt_count(s["rejected_tokens"]),
            f"{s['dropped_prompt_too_long']:,}",
            f"{s['truncated']:,}",
            f"{s['truncated_unequally']:,}",
        ]
        for name, s in meta["splits"].items()
    ]
    out().print(
        table(
            f"{out_dir}: preference pairs (max_len {max_len})",
            ["split", "pairs", "prompt", "chosen", "rejected", "dropped", "cut", "cut unequally"],
            rows,
        )
    )
    for name, s in meta["splits"].items():
        if s["dropped_prompt_too_long"]:
            log(
                f"{name}: {s['dropped_prompt_too_long']:,} pair(s) dropped, the prompt alone fills --max-len {max_len} "
                f"(rows {', '.join(map(str, s['dropped_rows'][:10]))}{' ...' if s['dropped_prompt_too_long'] > 10 else ''})"
            )
        if s.get("cut_before_encoding"):
            log(
                f"{name}: {s['cut_before_encoding']:,} pair(s) held a message far longer than --max-len "
                f"{max_len}; its text was cut before encoding"
            )
        if s["truncated_unequally"]:
            log(
                f"{name}: {s['truncated_unequally']:,} pair(s) had chosen and rejected cut by different amounts "
                f"(rows {', '.join(map(str, s['unequal_rows'][:10]))}{' ...' if s['truncated_unequally'] > 10 else ''}); "
                "raise --max-len to compare whole replies"
            )


def render_pair_counts(result: dict[str, Any], as_json: bool) -> None:
    """`llmctl count` of pair shards."""
    from llmctl.output import out, print_json, table
    from llmctl.units import fmt_count

    if as_json:
        print_json(result)
        return
    rows = [
        [
            name,
            f"{s['pairs']:,}",
            fmt_count(s["prompt_tokens"]),
            fmt_count(s["chosen_tokens"]),
            fmt_count(s["rejected_tokens"]),
            fmt_count(s["trained_tokens"]),
            f"{s['max_sequence_tokens']:,}",
        ]
        for name, s in [*result["splits"].items(), ("total", result["total"])]
    ]
    out().print(
        table(
            f"{result['path']} (dpo pairs, max_len {result['max_len']})",
            ["split", "pairs", "prompt", "chosen", "rejected", "trained", "longest seq"],
            rows,
        )
    )


def inspect_pairs(
    root: Path,
    split: str | None,
    index: int | None,
    sample: int | None,
    seed: int,
    max_tokens: int,
    as_json: bool,
) -> None:
    """`llmctl inspect` of pair shards: prompt, chosen and rejected, trained tokens styled."""
    from types import SimpleNamespace

    from llmctl.cli._tables import render_tokens
    from llmctl.output import out, print_json, stdout_is_plain
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.inspection import select, token_pieces
    from llmctl.tokens.pairs import open_pairs
    from llmctl.tokens.shards import read_meta

    meta = read_meta(root)
    split = split or next(iter(meta["splits"]))
    pairs = open_pairs(root, split, meta)
    tok = load_tokenizer(meta["tokenizer"]["path"])
    chosen_rows = select(len(pairs), index, sample, seed)
    shown: list[dict[str, Any]] = []
    for i in chosen_rows:
        sides = {}
        for name, (ids, mask) in zip(("prompt", "chosen", "rejected"), pairs.sides(i), strict=True):
            ids_list = ids.tolist()
            sides[name] = {
                "ids": ids_list,
                "mask": mask.tolist(),
                "text": tok.decode(ids_list),
                "pieces": token_pieces(tok, ids_list),
                "trained_tokens": int(mask.sum()),
            }
        shown.append({"index": i, **sides})
    if as_json:
        print_json(
            {
                "path": str(root),
                "split": split,
                "mode": "dpo",
                "pairs_total": len(pairs),
                "pairs": [
                    {
                        "index": p["index"],
                        **{
                            k: {kk: vv for kk, vv in p[k].items() if kk != "pieces"}
                            for k in ("prompt", "chosen", "rejected")
                        },
                    }
                    for p in shown
                ],
            }
        )
        return
    console, plain = out(), stdout_is_plain()
    for p in shown:
        console.print(f"pair {p['index']:,} of {len(pairs):,} ({split})", style="bold")
        for name in ("prompt", "chosen", "rejected"):
            side = p[name]
            console.print(
                f"{name}: {len(side['ids']):,} tokens, {side['trained_tokens']:,} trained", style="bold"
            )
            view = SimpleNamespace(ids=side["ids"], pieces=side["pieces"], mask=side["mask"])
            console.print(render_tokens(view, max_tokens, plain))
        console.print()
