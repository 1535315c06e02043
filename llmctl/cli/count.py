"""`llmctl count`: tokens, documents and document lengths, per split and in total.

    llmctl count tokens/pystdlib                     from meta.json and the .idx files: instant
    llmctl count --data data/pystdlib --tokenizer tok/pystdlib.json --num-proc 2
                                                     a raw corpus, tokenized in parallel, nothing written

Reading shards imports numpy only: no torch, tokenizers or pyarrow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from llmctl.errors import LlmctlError
from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count


def _rows(result: dict[str, Any], sft: bool) -> list[list[Any]]:
    rows = []
    for name, s in [*result["splits"].items(), ("total", result["total"])]:
        row = [name, fmt_count(s["tokens"]), f"{s['documents']:,}"]
        if sft:
            row.append(fmt_count(s["trained_tokens"]))
        row += [f"{s['mean_doc_tokens']:,.1f}", f"{s['median_doc_tokens']:,.0f}", f"{s['max_doc_tokens']:,}"]
        if "text_bytes" in s and s["text_bytes"]:
            row.append(fmt_bytes(s["text_bytes"]))
        rows.append(row)
    return rows


def count_command(
    directory: Path | None = typer.Argument(None, help="Token directory written by `llmctl tokenize`."),
    split: list[str] = typer.Option([], "--split", help="Only these splits (repeatable)."),
    data: Path | None = typer.Option(
        None, "--data", help="Count a raw dataset instead (tokenizes it, writes nothing)."
    ),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Tokenizer for --data."),
    mode: str = typer.Option("pretrain", "--mode", help="--data: pretrain or sft."),
    profile: str = typer.Option("chat", "--profile", help="--data --mode sft: chat profile."),
    num_proc: int = typer.Option(0, "--num-proc", help="--data: worker processes; 0 = every usable core."),
    mix: list[str] = typer.Option(
        [],
        "--mix",
        metavar="PATH[:WEIGHT]",
        help="Token directories of a mixture (repeatable): weights, sizes, and with --tokens the epochs of each.",
    ),
    tokens: str | None = typer.Option(
        None, "--tokens", metavar="N", help="--mix: planned training tokens (2B, 5e8)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Count tokens and documents of a token directory, or of a raw dataset with --data --tokenizer."""
    if mix:
        from llmctl.cli._mix import mix_plan, render_mix
        from llmctl.units import parse_count

        doc = mix_plan(mix, parse_count(tokens, "--tokens") if tokens is not None else None)
        print_json(doc) if as_json else render_mix(doc)
        return
    if tokens is not None:
        raise LlmctlError(
            "--tokens goes with --mix",
            "e.g. llmctl count --mix tokens/web:0.7 --mix tokens/code:0.3 --tokens 2B",
        )
    if data is not None:
        if tokenizer is None:
            raise LlmctlError(
                "--data needs --tokenizer", "pass the tokenizer the corpus will be tokenized with"
            )
        from llmctl.tokens.worker_start import prestart_workers

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        prestart_workers(num_proc or cores, data, tuple(split))
        from llmctl.cli._progress import TokenProgress
        from llmctl.tokens.tokenize import count_raw

        with TokenProgress("count") as progress:
            result = count_raw(
                data,
                tokenizer,
                tuple(split),
                mode=mode,
                profile=profile,
                num_proc=num_proc or cores,
                on_progress=progress.update,
                on_note=lambda note: log(f"note: {note}"),
            )
        title = f"{data} with {Path(result['tokenizer']).name} (tokenized, not written)"
    elif directory is not None:
        from llmctl.tokens.shards import read_meta
        from llmctl.tokens.stats import count_shards

        if read_meta(directory).get("mode") == "dpo":  # pair shards: pairs and prompt/chosen/rejected tokens
            from llmctl.cli._pairs import render_pair_counts
            from llmctl.tokens.pairs import count_pairs

            render_pair_counts(count_pairs(directory, list(split) or None), as_json)
            return

        result = count_shards(directory, list(split) or None)
        title = str(directory)
    else:
        raise LlmctlError("nothing to count", "pass a token directory, or --data RAW_DIR --tokenizer PATH")
    if as_json:
        print_json(result)
        return
    sft = result["mode"] == "sft"
    columns = [
        "split",
        "tokens",
        "documents",
        *(["trained"] if sft else []),
        "mean len",
        "median len",
        "max len",
    ]
    if result["total"].get("text_bytes"):
        columns.append("text")
    out().print(table(title, columns, _rows(result, sft)))


def register(app: typer.Typer) -> None:
    """Add `count` to the root app."""
    app.command("count", short_help="Count tokens and documents of token shards or raw data.")(count_command)
