"""`llmctl inspect`: look at tokenized documents, token boundaries and (SFT) the loss mask.

    llmctl inspect tokens/pystdlib --index 0
    llmctl inspect tokens/pystdlib --sample 3 --seed 1 --raw data/pystdlib
    llmctl inspect tokens/alpaca --split validation --json

Tokens alternate background colours; in SFT mode trained tokens are green, masked ones grey. Without
colour, tokens are separated by `¦` and masked runs are wrapped in `⟦ ⟧`. On a terminal, pages with
n(ext), p(revious), j(ump) N, q(uit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.cli._tables import render_tokens
from llmctl.output import out, print_json, stdout_is_plain


def _header(view: Any, total: int) -> Any:
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("document", f"{view.index:,} of {total:,} ({view.split}, {view.shard})")
    grid.add_row("tokens", f"{len(view.ids):,}")
    if view.mask is not None:
        grid.add_row(
            "trained tokens", f"{view.trained_tokens:,} (masked {len(view.ids) - view.trained_tokens:,})"
        )
    if view.raw_matches is not None:
        grid.add_row(
            "raw text",
            "decodes exactly" if view.raw_matches else f"DIFFERS at character {view.first_difference:,}",
        )
    return grid


def _excerpt(text: str, at: int, width: int = 40) -> str:
    return repr(text[max(at - width, 0) : at + width])


def _show(view: Any, total: int, max_tokens: int) -> None:
    plain = stdout_is_plain()
    console = out()
    console.print(_header(view, total))
    if view.raw_text is not None:
        covered = sum(len(p) for p in view.pieces[: max_tokens if max_tokens > 0 else None])
        console.print("raw:", style="bold")
        console.print(view.raw_text[:covered], markup=False, highlight=False)
        console.print("tokens:", style="bold")
    console.print(render_tokens(view, max_tokens, plain))
    shown = view.ids if max_tokens <= 0 else view.ids[:max_tokens]
    more = " \u2026" if len(shown) < len(view.ids) else ""
    console.print(f"ids: {' '.join(map(str, shown))}{more}", markup=False, highlight=False)
    if view.raw_matches is False:
        at = view.first_difference or 0
        console.print(f"decoded: {_excerpt(view.text, at)}", markup=False, highlight=False)
        console.print(f"raw:     {_excerpt(view.raw_text or '', at)}", markup=False, highlight=False)
    console.print()


def _page(directory: Any, start: int, raw: Path | None, max_tokens: int) -> None:
    from llmctl.tokens.inspection import load_document

    index = start
    while True:
        _show(load_document(directory, index, raw), directory.num_docs, max_tokens)
        answer = input("[n]ext [p]revious [j]ump N [q]uit > ").strip().lower()
        if answer in ("q", "quit", "exit"):
            return
        if answer in ("", "n", "next"):
            index = min(index + 1, directory.num_docs - 1)
        elif answer in ("p", "prev", "previous"):
            index = max(index - 1, 0)
        elif answer.startswith("j"):
            try:
                index = min(
                    max(int(answer.split()[-1] if " " in answer else answer[1:]), 0), directory.num_docs - 1
                )
            except ValueError:
                out().print("jump needs a number: j 42")


def inspect_command(
    directory_path: Path = typer.Argument(..., help="Token directory written by `llmctl tokenize`."),
    split: str | None = typer.Option(None, "--split", help="Split to show; default the first (train)."),
    index: int | None = typer.Option(None, "--index", help="Document to show (0-based, across shards)."),
    sample: int | None = typer.Option(None, "--sample", help="Show N documents picked at random."),
    seed: int = typer.Option(0, "--seed", help="Seed for --sample."),
    raw: Path | None = typer.Option(
        None, "--raw", help="Raw dataset: line raw text up with the tokens, check every document."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="Tokenizer to decode with; default the recorded one."
    ),
    max_tokens: int = typer.Option(512, "--max-tokens", help="Tokens shown per document; 0 = all."),
    interactive: bool | None = typer.Option(
        None, "--interactive/--no-interactive", help="Page through documents; default on a terminal."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Show tokenized documents with token boundaries, ids and (SFT) the loss mask."""
    import sys
    from dataclasses import asdict

    from llmctl.tokens.inspection import check_all, load_document, open_directory, select
    from llmctl.tokens.shards import read_meta

    if read_meta(directory_path).get("mode") == "dpo":  # pair shards: prompt, chosen and rejected
        from llmctl.cli._pairs import inspect_pairs

        inspect_pairs(directory_path, split, index, sample, seed, max_tokens, as_json)
        return
    directory = open_directory(directory_path, split, tokenizer)
    mismatches: list[int] = []
    checked = 0
    if raw is not None:
        for doc, difference in check_all(directory, raw):
            checked += 1
            if difference is not None:
                mismatches.append(doc)
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty() and not as_json and sample is None
    if interactive and not as_json and directory.num_docs:
        _report_raw(raw, checked, mismatches)
        _page(directory, index or 0, raw, max_tokens)
        return
    views = [load_document(directory, i, raw) for i in select(directory.num_docs, index, sample, seed)]
    if as_json:
        payload: dict[str, Any] = {
            "path": str(directory_path),
            "split": directory.split,
            "mode": directory.meta["mode"],
            "documents_total": directory.num_docs,
            "documents": [
                {**asdict(v), "tokens": len(v.ids), "trained_tokens": v.trained_tokens} for v in views
            ],
        }
        if raw is not None:
            payload["raw_check"] = {"checked": checked, "mismatches": mismatches}
        print_json(payload)
        return
    _report_raw(raw, checked, mismatches)
    for view in views:
        _show(view, directory.num_docs, max_tokens)


def _report_raw(raw: Path | None, checked: int, mismatches: list[int]) -> None:
    if raw is None:
        return
    if mismatches:
        shown = ", ".join(map(str, mismatches[:20])) + (" \u2026" if len(mismatches) > 20 else "")
        out().print(
            f"{len(mismatches):,} of {checked:,} documents differ from the raw text in {raw}: {shown}",
            markup=False,
        )
    else:
        out().print(f"all {checked:,} documents decode to exactly their raw text in {raw}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `inspect` to the root app."""
    app.command("inspect", short_help="Show tokenized documents: token boundaries, ids, loss mask.")(
        inspect_command
    )
