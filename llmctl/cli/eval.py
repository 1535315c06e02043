"""`llmctl eval`: judge checkpoints by bits per byte on token shards or a text file, and by accuracy on tasks.

    llmctl eval runs/py/checkpoints/latest --data tokens/py --split validation
    llmctl eval runs/py/checkpoints/latest --text notes.txt
    llmctl eval runs/sft/checkpoints/latest --task arc_easy --num-fewshot 5 --output-format lm-eval --output r.json
    llmctl eval runs/base/checkpoints/latest runs/cpt/checkpoints/latest runs/sft/checkpoints/latest --task hellaswag
    llmctl eval runs/sft/checkpoints/latest --task gsm8k.jsonl --regex '#### (\\-?[0-9.,]+)'
    llmctl eval runs/sft/checkpoints/latest --task gsm8k.jsonl --reward number --num-samples 8 --temperature 0.8

Task files and folders are read from disk; a named task (llmctl's `arc-easy` or lm-eval's `arc_easy`) is
downloaded into llmctl's cache on first use. Several checkpoints give one table, a column per checkpoint
and its difference from the first. Results: Rich tables on stdout, or one JSON document with `--json`
(`--output FILE` writes it to a file, `--output-format lm-eval` as lm-eval's results JSON); progress on stderr.
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
    gen = {name: r for name, r in tasks.items() if r["kind"] == "generate"}
    if gen:
        passes = sorted(
            {key for r in gen.values() for key in r if key.startswith("pass@")}, key=lambda k: int(k[5:])
        )
        rewarded = any("reward" in r for r in gen.values())
        rows = [
            [name, r["n"], f"{r['exact_match']:.4f} ± {r['exact_match_stderr']:.4f}"]
            + [_fmt(r.get(key)) for key in passes]
            + ([_fmt(r.get("reward"))] if rewarded else [])
            + [f"{r['seconds']:.1f}"]
            for name, r in gen.items()
        ]
        columns = ["task", "n", "exact_match", *passes, *(["reward"] if rewarded else []), "seconds"]
        out().print(table("generative", columns, rows))


def _label(checkpoint: str, step: Any) -> str:
    """A column title: the run's name (the folder above checkpoints/) and the step."""
    parts = Path(checkpoint).parts
    name = parts[parts.index("checkpoints") - 1] if "checkpoints" in parts[1:] else Path(checkpoint).name
    return f"{name} @{step}" if step is not None else name


def _render_comparison(comparison: dict[str, Any]) -> None:
    labels = [_label(c, s) for c, s in zip(comparison["checkpoints"], comparison["steps"], strict=True)]
    columns = ["metric", labels[0]]
    for label in labels[1:]:
        columns += [label, "Δ"]
    rows = []
    for row in comparison["rows"]:
        cells = [row["metric"]]
        for k, (value, err, delta) in enumerate(
            zip(row["values"], row["stderr"], row["deltas"], strict=True)
        ):
            cells.append(_fmt(value) + (f" ± {err:.4f}" if err is not None and value is not None else ""))
            if k:
                cells.append("n/a" if delta is None else f"{delta:+.4f}")
        rows.append(cells)
    out().print(
        table(
            "checkpoints compared",
            columns,
            rows,
            caption="Δ: difference from the first checkpoint (acc: higher is better; bpb, loss, ppl: lower)",
        )
    )


def _write_items(path: Path, reports: list[dict[str, Any]]) -> None:
    import json

    from llmctl.files import atomic_write_text

    lines = [
        json.dumps({**({"checkpoint": r["checkpoint"]} if len(reports) > 1 else {}), "task": name, **item})
        for r in reports
        for name, record in (r.get("tasks") or {}).items()
        for item in record.pop("items")
    ]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def _document(reports: list[dict[str, Any]], request: Any, output_format: str) -> Any:
    from llmctl.errors import LlmctlError

    if output_format == "lm-eval":
        from llmctl.eval.lmeval_results import lm_eval_results

        if len(reports) > 1:
            raise LlmctlError(
                "--output-format lm-eval writes one checkpoint's results",
                "evaluate one checkpoint per lm-eval file, or use --json for the comparison",
            )
        return lm_eval_results(reports[0], request)
    if len(reports) == 1:
        return reports[0]
    from llmctl.eval.compare import compare_reports

    return {"reports": reports, "comparison": compare_reports(reports)}


def eval_command(
    checkpoints: Annotated[
        list[str],
        typer.Argument(
            help="Checkpoint directories, RUN/checkpoints/latest or run directories; several give one table."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Token directory to score (loss, perplexity, accuracy, bits per byte)."),
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --data to score.")] = "validation",
    text: Annotated[
        str | None,
        typer.Option(
            "--text", help="Text, JSONL or parquet file to score like --data, tokenized on the fly."
        ),
    ] = None,
    text_column: Annotated[
        str, typer.Option("--text-column", help="--text: the column holding the text (JSONL, parquet).")
    ] = "text",
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Score only the first N targets (a quick estimate)."),
    ] = None,
    task: Annotated[
        list[str] | None,
        typer.Option(
            "--task",
            help="JSONL task file, task folder, or a named task (hellaswag, arc_easy, arc-challenge, piqa, "
            "winogrande...: downloaded on first use); repeatable.",
        ),
    ] = None,
    limit: Annotated[
        float | None,
        typer.Option("--limit", help="Items per task at most (the first ones); below 1, a fraction of them."),
    ] = None,
    num_fewshot: Annotated[
        int, typer.Option("--num-fewshot", min=0, help="Multiple choice: solved examples before each item.")
    ] = 0,
    fewshot_seed: Annotated[
        int, typer.Option("--fewshot-seed", help="Seed of the few-shot sampler (lm-eval's default).")
    ] = 1234,
    apply_chat_template: Annotated[
        bool,
        typer.Option(
            "--apply-chat-template", help="Multiple choice: each context as a user turn of the chat template."
        ),
    ] = False,
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
        int,
        typer.Option(
            "--batch-size",
            min=1,
            help="--data/--text: windows per forward pass; generative tasks: replies decoded together.",
        ),
    ] = 8,
    reward: Annotated[
        list[str] | None,
        typer.Option(
            "--reward",
            metavar="SPEC",
            help="Generative tasks: score replies with NAME[:WEIGHT] (exact, number, regex:PATTERN, "
            "format:PATTERN); repeatable; reports pass@1 and pass@k.",
        ),
    ] = None,
    reward_module: Annotated[
        list[str] | None,
        typer.Option(
            "--reward-module",
            metavar="SPEC",
            help="Generative tasks: your own reward, FILE.py:function[:WEIGHT] (runs that file).",
        ),
    ] = None,
    num_samples: Annotated[
        int,
        typer.Option(
            "--num-samples", min=1, help="Generative tasks: replies per item, for pass@k (k = this)."
        ),
    ] = 1,
    temperature: Annotated[
        float,
        typer.Option("--temperature", min=0.0, help="Generative tasks: sampling temperature (0: greedy)."),
    ] = 0.0,
    seed: Annotated[
        int, typer.Option("--seed", help="Generative tasks: sample j of every item is drawn with seed + j.")
    ] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    items_out: Annotated[
        Path | None,
        typer.Option("--items-out", help="Write every item's scores and outputs to this JSONL file."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the JSON document to this file.")
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--output-format", help="JSON of --json/--output: llmctl, or lm-eval (lm-eval's results JSON)."
        ),
    ] = "llmctl",
) -> None:
    """Evaluate checkpoints: bits per byte on token shards or a text file, accuracy on tasks."""
    from llmctl.errors import LlmctlError
    from llmctl.eval.run import EvalRequest, run_evals

    if output_format not in ("llmctl", "lm-eval"):
        raise LlmctlError(f"unknown --output-format '{output_format}'", "use llmctl or lm-eval")
    request = EvalRequest(
        checkpoint=checkpoints[0],
        data=data,
        split=split,
        max_tokens=max_tokens,
        text=text,
        text_column=text_column,
        tasks=list(task or []),
        limit=limit,
        num_fewshot=num_fewshot,
        fewshot_seed=fewshot_seed,
        apply_chat_template=apply_chat_template,
        batch_tokens=batch_tokens,
        batch_size=batch_size,
        regex=regex,
        max_new_tokens=max_new_tokens,
        device=device,
        rewards=list(reward or []),
        reward_modules=list(reward_module or []),
        num_samples=num_samples,
        temperature=temperature,
        seed=seed,
    )
    reports = run_evals(
        request, checkpoints, on_progress=_Progress(), keep_items=items_out is not None, on_note=log
    )
    if items_out is not None:
        _write_items(items_out, reports)
    if output is not None or json_out:
        document = _document(reports, request, output_format)
        if output is not None:
            import json

            from llmctl.files import atomic_write_json

            # NaN (a standard error of one item) becomes null, as on stdout: strict JSON readers take it.
            atomic_write_json(output, json.loads(json.dumps(document), parse_constant=lambda _: None))
        if json_out:
            print_json(document)
            return
    if len(reports) > 1:
        from llmctl.eval.compare import compare_reports

        _render_comparison(compare_reports(reports))
        return
    _render(reports[0])


def register(app: typer.Typer) -> None:
    """Add `llmctl eval`."""
    app.command(
        "eval",
        short_help="Evaluate checkpoints: bits per byte, task accuracy, side by side.",
        help="Evaluate checkpoints: bits per byte on token shards or text, accuracy on tasks; several "
        "checkpoints give one table with differences from the first.",
    )(eval_command)
