"""`llmctl tokenizer train`: train a tokenizer on a downloaded dataset and report how well it compresses.

llmctl tokenizer train --data data/py --vocab-size 8192 --out tok/py.json
llmctl tokenizer train --data data/alpaca --vocab-size 32K --profile chat --out tok/chat.json
llmctl tokenizer train --data data/ts --vocab-size 8192 --backend sentencepiece --model unigram --out tok/ts.model
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.output import log, out, print_json, table
from llmctl.units import fmt_bytes, fmt_count, fmt_duration, parse_count

tokenizer_app = typer.Typer(
    help="Train tokenizers (Hugging Face tokenizers or sentencepiece).",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@tokenizer_app.command("train")
def train_command(
    data: Path = typer.Option(..., "--data", help="Dataset directory written by `llmctl data download`."),
    vocab_size: str = typer.Option(
        ..., "--vocab-size", help="Vocabulary size, special tokens included (e.g. 8192, 32K)."
    ),
    out_path: Path = typer.Option(
        ..., "--out", "-o", help="tokenizer.json to write (a .model for sentencepiece)."
    ),
    backend: str = typer.Option(
        "auto", "--backend", help="hf (Hugging Face tokenizers), sentencepiece, or auto (by --out suffix)."
    ),
    model: str = typer.Option("bpe", "--model", help="bpe or unigram."),
    profile: str | None = typer.Option(
        None, "--profile", help="Add this chat profile's role markers as special tokens (chat)."
    ),
    max_bytes: str | None = typer.Option(
        None, "--max-bytes", help="Train on a deterministic sample of this many bytes (e.g. 1G)."
    ),
    split: str = typer.Option("train", "--split", help="Split to train on."),
    eval_split: str | None = typer.Option(
        None, "--eval-split", help="Split to evaluate on (default: validation, else test)."
    ),
    eval_max_bytes: str = typer.Option(
        "32M", "--eval-max-bytes", help="Evaluate on at most this many bytes."
    ),
    min_frequency: int = typer.Option(
        2, "--min-frequency", help="BPE: pairs seen fewer times are not merged."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the --max-bytes sample."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it exists."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Train a tokenizer on --data and write it to --out."""
    from llmctl.cli._progress import TransferBars
    from llmctl.raw.dataset import read_info
    from llmctl.tokenizer.train import train_tokenizer

    size = int(parse_count(vocab_size, "--vocab-size"))
    limit = int(parse_count(max_bytes, "--max-bytes")) if max_bytes else None
    info = read_info(data)
    total = (info.get("splits", {}).get(split) or {}).get("bytes")
    with TransferBars() as bars:
        task = bars.task(f"training on {split}", min(total, limit) if total and limit else (total or limit))
        report = train_tokenizer(
            data,
            out_path,
            size,
            backend=backend,
            model=model,
            profile=profile,
            max_bytes=limit,
            split=split,
            eval_split=eval_split,
            eval_max_bytes=int(parse_count(eval_max_bytes, "--eval-max-bytes")),
            min_frequency=min_frequency,
            seed=seed,
            on_bytes=task.advance,
            on_phase=lambda _: task.close(),
            force=force,
        )
    for note in report["notes"]:
        log(f"note: {note}")
    if as_json:
        print_json(report)
        return
    _render(report)


def _render(report: dict[str, Any]) -> None:
    ev = report["eval"]
    rows = [
        ["vocab size", f"{report['vocab_size']:,}"],
        ["backend / model", f"{report['backend']} {report['model']} ({report['pre_tokenizer']})"],
        ["special tokens", ", ".join(f"{t}={i}" for t, i in report["special_tokens"].items())],
        [
            "trained on",
            f"{report['split']}: {report['train_documents']:,} docs, {fmt_bytes(report['train_bytes'])}"
            + (" (sample)" if report["sampled"] else ""),
        ],
        ["training time", f"{fmt_duration(report['training_seconds'])} on {report['threads']} threads"],
        [
            f"{ev['split']}: documents",
            f"{ev['documents']:,} ({fmt_bytes(ev['bytes'])}, {fmt_count(ev['tokens'])} tokens)",
        ],
        [f"{ev['split']}: bytes per token", f"{ev['bytes_per_token']:.3f}"],
        [f"{ev['split']}: tokens per word", f"{ev['tokens_per_word']:.3f}"],
        [
            f"{ev['split']}: decode(encode(x)) == x",
            "yes, every document"
            if ev["roundtrip_exact"]
            else f"NO: {ev['roundtrip_failures']:,} of {ev['documents']:,} documents differ",
        ],
    ]
    out().print(table(f"{report['tokenizer']} (sha256 {report['fingerprint'][:12]})", ["", "value"], rows))


def register(app: typer.Typer) -> None:
    """Add the `tokenizer` group (train) to the root app."""
    app.add_typer(
        tokenizer_app,
        name="tokenizer",
        short_help="Train tokenizers (Hugging Face tokenizers or sentencepiece).",
    )
