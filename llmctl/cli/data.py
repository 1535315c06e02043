"""`llmctl data`: fetch corpora into the raw dataset layout, and list the named sources.

llmctl data sources
llmctl data download pystdlib --out data/py
llmctl data download tinystories --out data/ts --max-rows 100K
llmctl data download hf:Salesforce/wikitext@main:wikitext-2-raw-v1 --out data/wt2
llmctl data download 'corpus/*.jsonl.zst' --out data/mine --text-column body --val-fraction 0.01
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.errors import LlmctlError
from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count, fmt_duration, parse_count

data_app = typer.Typer(
    help="Download corpora (named, Hugging Face Hub, URLs, local files) as normalized parquet.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@data_app.command("sources")
def sources_command(
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """List the named sources `data download` knows."""
    from llmctl.raw.sources import source_rows

    rows = source_rows()
    if as_json:
        print_json({"sources": rows})
        return
    body = [
        [
            r["name"],
            r["kind"],
            r["size"],
            ", ".join(f"{x}*" if x in r["carved"] else x for x in r["splits"]),
            r["licence"],
            f"{r['repo']}@{r['revision']}" if r["repo"] else "this Python's stdlib",
        ]
        for r in rows
    ]
    out().print(
        table("Named sources", ["name", "kind", "size", "splits", "licence", "from (Hub dataset)"], body)
    )
    out().print(
        "* carved from train by --val-fraction/--test-fraction. Also: hf:owner/name[@revision][:subset], "
        "http(s) URLs, local files or globs (parquet, jsonl, json, txt; .gz/.zst). Files per source: --json.",
        markup=False,
    )


def _limit(value: str | None, what: str) -> int | None:
    if value is None:
        return None
    number = int(parse_count(value, what))
    if number <= 0:
        raise LlmctlError(f"{what} must be positive, got {value}", f"for example {what} 100M")
    return number


def _splits(values: list[str]) -> tuple[str, ...]:
    return tuple(s.strip() for v in values for s in v.split(",") if s.strip())


@data_app.command("download")
def download_command(
    source: str = typer.Argument(
        ...,
        help="Named source (see `data sources`), hf:owner/name\\[@rev]\\[:subset], URL, or local file/glob.",
    ),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Dataset directory to write."),
    split: list[str] = typer.Option([], "--split", help="Only these splits (repeatable or comma-separated)."),
    val_fraction: float | None = typer.Option(
        None,
        "--val-fraction",
        help="Share of train carved into validation when the source has none (default 0.005, or the named "
        "source's); at least one document while train keeps one.",
    ),
    test_fraction: float | None = typer.Option(
        None, "--test-fraction", help="Share of train carved into test when the source has none."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the deterministic carving."),
    max_rows: str | None = typer.Option(
        None, "--max-rows", help="At most this many documents per source split (e.g. 100K)."
    ),
    max_bytes: str | None = typer.Option(
        None, "--max-bytes", help="At most this many bytes of text per source split (e.g. 500M)."
    ),
    max_row_bytes: str | None = typer.Option(
        None,
        "--max-row-bytes",
        help="Skip (and count) any row over this many bytes (e.g. 16M; default 64 MiB), read past unheld.",
    ),
    text_column: str | None = typer.Option(
        None, "--text-column", help="Column holding the text (or the messages)."
    ),
    fmt: str | None = typer.Option(
        None, "--format", help="parquet, jsonl, json or txt, when the file name does not say."
    ),
    txt_delimiter: str | None = typer.Option(
        None, "--txt-delimiter", help="Plain text: split documents on this string (default: one per file)."
    ),
    sha256: str | None = typer.Option(
        None, "--sha256", help="Expected SHA-256 of a single URL or local file."
    ),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="Download cache (default: the Hugging Face cache and ~/.cache/llmctl)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the output is complete."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Download SOURCE into --out as normalized parquet parts per split plus dataset.json."""
    from llmctl.cli._progress import TransferBars
    from llmctl.eval.sources import EVAL_SOURCES

    if source in EVAL_SOURCES:  # an evaluation task (hellaswag, arc-easy...): items.jsonl, not parquet parts
        from llmctl.cli._tasks import download_task_command

        download_task_command(source, out_dir, cache_dir=cache_dir, force=force, as_json=as_json)
        return
    from llmctl.raw.download import DEFAULT_MAX_ROW_BYTES, DownloadOptions, download_dataset

    options = DownloadOptions(
        splits=_splits(split),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        max_rows=_limit(max_rows, "--max-rows"),
        max_bytes=_limit(max_bytes, "--max-bytes"),
        max_row_bytes=_limit(max_row_bytes, "--max-row-bytes") or DEFAULT_MAX_ROW_BYTES,
        text_column=text_column,
        format=fmt,
        txt_delimiter=txt_delimiter.encode("latin-1", "backslashreplace").decode("unicode_escape")
        if txt_delimiter
        else None,
        sha256=sha256,
        cache_dir=str(cache_dir) if cache_dir else None,
        force=force,
    )
    with TransferBars() as bars:
        result = download_dataset(source, out_dir, options, bars)
    for note in result.notes:
        log(f"note: {note}")
    info = result.info
    if as_json:
        print_json({"out": str(out_dir), "skipped": result.skipped, **info})
        return
    _render(out_dir, info, result.skipped)


def _render(out_dir: Path, info: dict[str, Any], skipped: bool) -> None:
    src = info["source"]
    revision = src.get("resolved_revision") or src.get("revision") or "-"
    origin = src.get("repo") or src.get("url") or src.get("path") or src.get("root") or src["spec"]
    rows = [
        [name, f"{s['rows']:,}", fmt_bytes(s["bytes"]), len(s["parts"]), s["origin"]]
        for name, s in info["splits"].items()
    ]
    total_rows = sum(s["rows"] for s in info["splits"].values())
    total_bytes = sum(s["bytes"] for s in info["splits"].values())
    rows.append(
        [
            "total",
            f"{total_rows:,}",
            fmt_bytes(total_bytes),
            sum(len(s["parts"]) for s in info["splits"].values()),
            "",
        ]
    )
    status = (
        "up to date, nothing to do" if skipped else f"written in {fmt_duration(info.get('seconds', 0.0))}"
    )
    out().print(f"{out_dir}: {status}", markup=False)
    out().print(table(None, ["split", "rows", "text", "parts", "origin"], rows))
    read = fmt_bytes(sum(f["size"] for f in info["files"]))
    offline = " (from the offline cache)" if src.get("offline") else ""
    out().print(f"source: {src['spec']} = {origin} @ {revision}{offline}", markup=False)
    out().print(
        f"read {len(info['files'])} file(s), {read}; column '{info['column']}' ({info.get('conversion')}); "
        f"{fmt_count(info.get('dropped_rows', 0))} empty rows dropped"
        + (
            f", {info['oversized_rows']:,} over --max-row-bytes {fmt_bytes(info['max_row_bytes'])} skipped"
            if info.get("oversized_rows")
            else ""
        ),
        markup=False,
    )
    pairs = info.get("preference_dropped")
    if pairs:  # preference data: why pairs were dropped (llmctl/raw/preference.py)
        out().print(
            f"preference pairs dropped: {pairs['identical']:,} identical chosen and rejected, "
            f"{pairs['empty']:,} with an empty side, {pairs['unreadable']:,} unreadable",
            markup=False,
        )


def register(app: typer.Typer) -> None:
    """Add the `data` group (download, sources) to the root app."""
    app.add_typer(data_app, name="data", short_help="Download corpora as normalized parquet.")
