"""`llmctl eval`: judge a checkpoint by bits per byte on token shards and by accuracy on tasks.

    llmctl eval runs/py/checkpoints/latest --data tokens/py --split validation
    llmctl eval runs/py/checkpoints/latest --task evals/hellaswag --task my_task.jsonl --json
    llmctl eval runs/sft/checkpoints/latest --task gsm8k.jsonl --regex '#### (\\-?[0-9.,]+)'

Tasks are read from disk only (JSONL files, or folders `llmctl data download hellaswag` wrote), so
evaluation never needs the network. Results: one Rich table per kind on stdout, or one JSON document
with `--json`; progress on stderr.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from llmctl.output import log, out, print_json, table


class _Progress:
    """Throttled `what: done/total` lines on stderr."""

    def __init__(self, every: float = 2.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self.last.get(what, 0.0) < self.every:
            return
        self.last[what] = now
        log(f"{what}: {done:,}/{total:,}")


def _fmt(value: Any, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _render(report: dict[str, Any]) -> None:
    if "loss" in report:
        rows = [
            [
                report["split"],
                f"{report['tokens']:,}",
                f"{report['bytes']:,}",
                _fmt(report["loss"]),
                _fmt(report["perplexity"], 2),
                _fmt(report["accuracy"]),
                _fmt(report["bpb"]),
                f"{report['seconds']:.1f}",
            ]
        ]
        out().print(
            table(
                f"{report['checkpoint']} (step {report['step']})",
                ["split", "tokens", "bytes", "loss", "ppl", "accuracy", "bpb", "seconds"],
                rows,
            )
        )
    tasks = report.get("tasks") or {}
    choice = [
        [
            name,
            r["n"],
            f"{r['acc']:.4f} ± {r['acc_stderr']:.4f}",
            f"{r['acc_norm']:.4f} ± {r['acc_norm_stderr']:.4f}",
            _fmt(r["centered_acc"]),
            f"{r['seconds']:.1f}",
        ]
        for name, r in tasks.items()
        if r["kind"] == "choice"
    ]
    if choice:
        agg = report["aggregate"]["centered_acc"]
        out().print(
            table(
                "multiple choice",
                ["task", "n", "acc", "acc_norm", "centered", "seconds"],
                choice,
                caption=f"mean centred accuracy over {len(choice)} task(s): {_fmt(agg)}",
            )
        )
    gen = [
        [name, r["n"], f"{r['exact_match']:.4f} ± {r['exact_match_stderr']:.4f}", f"{r['seconds']:.1f}"]
        for name, r in tasks.items()
        if r["kind"] == "generate"
    ]
    if gen:
        out().print(table("generative", ["task", "n", "exact_match", "seconds"], gen))


def eval_command(
    checkpoint: Annotated[
        str, typer.Argument(help="A checkpoint directory, RUN/checkpoints/latest, or a run directory.")
    ],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Token directory to score (loss, perplexity, accuracy, bits per byte)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --data to score.")] = "validation",
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Score only the first N targets (a quick estimate)."),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option("--task", help="JSONL task file or downloaded task folder; repeatable."),
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Items per task at most (the first ones).")
    ] = None,
    regex: Annotated[
        str | None,
        typer.Option("--regex", help="Generative tasks: extract the answer with this regex's last match."),
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="Generative tasks: tokens per answer at most.")
    ] = 256,
    batch_tokens: Annotated[
        int, typer.Option("--batch-tokens", min=1, help="Multiple choice: padded tokens per forward pass.")
    ] = 8192,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="--data: windows per forward pass.")
    ] = 8,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    items_out: Annotated[
        Path | None,
        typer.Option("--items-out", help="Write every item's scores and outputs to this JSONL file."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Evaluate a checkpoint: bits per byte on token shards, accuracy on multiple-choice and generative tasks."""
    from llmctl.eval.run import EvalRequest, run_eval

    request = EvalRequest(
        checkpoint=checkpoint,
        data=data,
        split=split,
        max_tokens=max_tokens,
        tasks=list(task or []),
        limit=limit,
        batch_tokens=batch_tokens,
        batch_size=batch_size,
        regex=regex,
        max_new_tokens=max_new_tokens,
        device=device,
    )
    report = run_eval(request, on_progress=_Progress(), keep_items=items_out is not None)
    if items_out is not None:
        import json

        from llmctl.files import atomic_write_text

        lines = [
            json.dumps({"task": name, **item})
            for name, r in report["tasks"].items()
            for item in r.pop("items")
        ]
        atomic_write_text(items_out, "".join(line + "\n" for line in lines))
    if json_out:
        print_json(report)
        return
    _render(report)


def register(app: typer.Typer) -> None:
    """Add `llmctl eval`."""
    app.command(
        "eval",
        short_help="Evaluate a checkpoint: bits per byte, task accuracy.",
        help="Evaluate a checkpoint: bits per byte on token shards, accuracy on tasks.",
    )(eval_command)
