"""`llmctl tokenize`: raw text -> token shards (.bin/.idx[/.mask] + meta.json), parallel and resumable.

    llmctl tokenize --data data/pystdlib --tokenizer tok/pystdlib.json --out tokens/pystdlib --num-proc 2
    llmctl tokenize --data data/alpaca --tokenizer tok/ts.json --out tokens/alpaca --mode sft --profile chat
    llmctl tokenize --data data/alpaca --tokenizer models/smollm2/tokenizer.json --out tokens/alpaca-smol --mode sft --template model

On a cluster, split the shards between array jobs, then merge:

    llmctl tokenize --data D --tokenizer T --out O --shard-index $SLURM_ARRAY_TASK_ID --num-shards 16
    llmctl tokenize --merge --out O
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from llmctl.errors import LlmctlError
from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count, fmt_duration, parse_count


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


EXIT_TERMINATED = 128 + signal.SIGTERM
"""143, the shell's code for a process ended by SIGTERM: the output is not complete (resume it)."""


class _Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so only clean-up code catches it."""


@contextlib.contextmanager
def _sigterm_stops() -> Iterator[None]:
    """While the block runs, SIGTERM unwinds it (workers stopped, partial shard removed), once."""

    def stop(_signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        raise _Terminated

    try:
        old = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _kept_line(how: str, out_dir: Path, last: Any) -> str:
    if last is None or not last.shards_total:
        return f"stopped by {how} before any shard was written; nothing to keep in {out_dir}"
    return (
        f"stopped by {how}: {last.shards_done} of {last.shards_total} shard(s) complete and kept in {out_dir} "
        "(the one in progress was removed); run the same command again to resume"
    )


def _split_rows(meta: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for name, s in meta["splits"].items():
        rows.append(
            [
                name,
                fmt_count(s["tokens"]),
                f"{s['documents']:,}",
                fmt_count(s["trained_tokens"]),
                len(s["shards"]),
                f"{s['empty_skipped']:,}",
                f"{s['invalid_utf8_replaced']:,}",
            ]
        )
    return rows


def tokenize_command(
    data: Path | None = typer.Option(
        None, "--data", help="Raw dataset directory (from `llmctl data download`)."
    ),
    tokenizer: Path | None = typer.Option(
        None, "--tokenizer", help="tokenizer.json or sentencepiece .model."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Token directory to write (or add to)."),
    mode: str = typer.Option(
        "pretrain",
        "--mode",
        help="pretrain (a text column), sft (a messages column) or dpo (preference pairs).",
    ),
    max_len: int = typer.Option(
        1024, "--max-len", help="--mode dpo: most tokens of prompt + one reply; longer replies are cut."
    ),
    profile: str = typer.Option(
        "chat", "--profile", help="Chat profile for --mode sft or dpo (llmctl/tokenizer/chat.py)."
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help="--mode sft or dpo: `model` renders conversations with the tokenizer's own chat template "
        "(imported models) instead of --profile.",
    ),
    separator: str | None = typer.Option(
        None,
        "--separator",
        help="Pretraining document separator: eos, bos or bos+eos. Default: bos+eos when the "
        "tokenizer's post-processor puts BOS first (llmctl's own tokenizers, Llama 3), else eos.",
    ),
    split: list[str] = typer.Option([], "--split", help="Split to tokenize (repeatable); default all."),
    column: str | None = typer.Option(
        None, "--column", help="Raw column; default text (pretrain) or messages (sft)."
    ),
    num_proc: int = typer.Option(0, "--num-proc", help="Worker processes; 0 = every usable core."),
    shard_size: str = typer.Option("256M", "--shard-size", help="Raw text bytes per shard, e.g. 256M."),
    shard_index: int = typer.Option(
        0, "--shard-index", help="This job's share when the work is split (0..K-1)."
    ),
    num_shards: int = typer.Option(
        1, "--num-shards", help="Number of jobs sharing the work (e.g. a SLURM array)."
    ),
    merge: bool = typer.Option(False, "--merge", help="Only write meta.json once every job has finished."),
    fast: bool = typer.Option(
        True, "--fast/--no-fast", help="Use the tiktoken fast path when it gives the same ids."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Tokenize a raw dataset into token shards, in parallel; reruns skip complete shards.

    Pretraining: each document followed by the end-of-document token. SFT: conversations rendered by
    the chat profile, with a loss mask on assistant replies. Split across machines with --shard-index
    and --num-shards, then run --merge.
    """
    from llmctl.tokens.worker_start import prestart_workers

    num_proc = num_proc or _cores()
    if not merge:
        prestart_workers(num_proc, data, tuple(split))
    if merge:
        _render_merge(out_dir, as_json)
        return
    if data is None or tokenizer is None:
        raise LlmctlError(
            "--data and --tokenizer are required", "pass both, or --merge --out DIR to finish a split-up run"
        )
    if template is not None:
        if template != "model":
            raise LlmctlError(
                f"unknown --template '{template}'", "use --template model (the tokenizer's own chat template)"
            )
        profile = "model"
    if mode == "dpo":
        from llmctl.cli._pairs import tokenize_pairs_command

        tokenize_pairs_command(data, tokenizer, out_dir, profile, max_len, tuple(split), as_json)
        return
    from llmctl.tokens.tokenize import TokenizeOptions

    opts = TokenizeOptions(
        data=data,
        tokenizer=tokenizer,
        out=out_dir,
        mode=mode,
        profile=profile,
        separator=separator,
        splits=tuple(split),
        column=column,
        num_proc=num_proc,
        shard_bytes=int(parse_count(shard_size, "--shard-size")),
        shard_index=shard_index,
        num_shards=num_shards,
        fast=fast,
    )
    _render_result(_run_tokenize(opts), opts, as_json)


def _render_merge(out_dir: Path, as_json: bool) -> None:
    """`--merge`: write meta.json once every job is done, and show its splits."""
    from llmctl.tokens.tokenize import merge as merge_shards

    meta = merge_shards(out_dir)
    if as_json:
        print_json({"out": str(out_dir), "meta": meta})
        return
    out().print(
        table(
            f"{out_dir}: meta.json written",
            ["split", "tokens", "documents", "trained", "shards", "empty", "bad utf-8"],
            _split_rows(meta),
        )
    )


def _run_tokenize(opts: Any) -> Any:
    """The core tokenize with a progress bar; SIGTERM and Ctrl-C say what was kept before they end it."""
    from llmctl.cli._progress import TokenProgress
    from llmctl.tokens.tokenize import tokenize

    bar = TokenProgress("tokenize")
    seen: list[Any] = [None]

    def update(p: Any) -> None:
        seen[0] = p
        bar.update(p)

    try:
        with bar, _sigterm_stops():
            return tokenize(opts, on_progress=update, on_note=lambda note: log(f"note: {note}"))
    except _Terminated:
        log(_kept_line("SIGTERM", opts.out, seen[0]))
        raise typer.Exit(EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        log(_kept_line("Ctrl-C", opts.out, seen[0]))
        raise


def _render_result(result: Any, opts: Any, as_json: bool) -> None:
    """What a tokenize run did: one JSON document, or log lines on stderr and the splits' table."""
    out_dir = opts.out
    rate = result.tokens_per_second
    summary = {
        "out": result.out,
        "encoder": result.encoder,
        "encoder_note": result.encoder_note,
        "num_proc": opts.num_proc,
        "processes": result.processes,
        "shards": result.shards_total,
        "shards_written": result.shards_written,
        "shards_skipped": result.shards_skipped,
        "documents": result.documents,
        "tokens": result.tokens,
        "empty_skipped": result.empty_skipped,
        "invalid_utf8_replaced": result.invalid_utf8_replaced,
        "text_bytes": result.text_bytes,
        "seconds": round(result.seconds, 3),
        "tokens_per_second": round(rate, 1),
        "bytes_per_second": round(result.text_bytes / result.seconds if result.seconds else 0.0, 1),
        "peak_rss_main_bytes": result.peak_rss_main,
        "meta_written": result.meta is not None,
    }
    if as_json:
        print_json({**summary, "meta": result.meta})
        return
    if result.invalid_utf8_replaced:
        log(
            f"note: {result.invalid_utf8_replaced:,} row(s) held invalid UTF-8, replaced with U+FFFD (the 'bad utf-8' column)"
        )
    if result.shards_written == 0:
        log(f"all {result.shards_total} shard(s) already complete; nothing to tokenize")
    else:
        log(
            f"{result.shards_written} shard(s) written, {result.shards_skipped} already complete: "
            f"{fmt_count(result.tokens)} tokens, {result.documents:,} documents in {fmt_duration(result.seconds)}"
        )
        log(
            f"{fmt_count(rate)} tokens/s, {fmt_bytes(summary['bytes_per_second'])}/s of text, "
            f"encoder {result.encoder}, {result.processes} process(es)"
            + (" (the input is small: encoded here, no workers)" if result.processes < opts.num_proc else "")
        )
    if result.meta is None:
        log(
            f"job {opts.shard_index} of {opts.num_shards} done; when all are, run `llmctl tokenize --merge --out {out_dir}`"
        )
        return
    meta = result.meta
    caption = f"dtype {meta['dtype']}, mode {meta['mode']}, separator {meta['separator']['policy']}, tokenizer {Path(meta['tokenizer']['path']).name} ({meta['tokenizer']['fingerprint'][:12]})"
    out().print(
        table(
            str(out_dir),
            ["split", "tokens", "documents", "trained", "shards", "empty", "bad utf-8"],
            _split_rows(meta),
        )
    )
    out().print(caption, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `tokenize` to the root app."""
    app.command("tokenize", short_help="Tokenize a raw dataset into token shards, in parallel.")(
        tokenize_command
    )
