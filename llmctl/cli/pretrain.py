"""`llmctl pretrain`: train a language model on token shards.

    llmctl pretrain -c examples/configs/quickstart.yaml --data tokens/py
    llmctl pretrain -c examples/configs/quickstart.yaml --data tokens/py --out runs/py --resume auto
    llmctl pretrain -c examples/configs/124m.yaml --data tokens/ts --optim.lr=6e-4 --train.steps=5000
    torchrun --nproc_per_node 8 -m llmctl pretrain -c examples/configs/124m.yaml --data tokens/ts

Writes the run directory (config.yaml, metrics.jsonl, samples.jsonl, loss.csv, tb/, summary.json,
checkpoints/). SIGTERM or SIGUSR1 save a checkpoint after the current step and exit 0 (requeue with
`--resume auto`); Ctrl-C does the same and exits 130. Under SLURM, SIGUSR1 or the job's end time also
requeue the job (`scontrol requeue`, slurm.requeue) when steps are left.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.errors import EXIT_INTERRUPTED


def render_outcome(outcome: Any, as_json: bool) -> None:
    """The run's final figures: a table, or one JSON document."""
    from llmctl.cli._tables import render_run

    r = outcome.result
    s, ev = r.summary, r.last_eval
    evaluation = (
        {
            "step": ev.step,
            "loss": ev.loss,
            "perplexity": ev.perplexity,
            "accuracy": ev.accuracy,
            "bpb": ev.bpb,
            "eval_tokens": ev.tokens,
        }
        if ev
        else None
    )
    rows: list[list[Any]] = []
    if s.get("final_loss") is not None:
        rows.append(["train loss", f"{s['final_loss']:.4f}"])
    if ev is not None:
        rows += [
            ["val loss", f"{ev.loss:.4f}"],
            ["val perplexity", f"{ev.perplexity:.2f}"],
            ["val accuracy", f"{ev.accuracy:.1%}"],
        ]
        if ev.bpb is not None:
            rows.append(["val bits/byte", f"{ev.bpb:.4f}"])
    for m in s.get("data_mix") or []:
        share = m["tokens"] / max(1, sum(x["tokens"] for x in s["data_mix"]))
        rows.append(
            [
                f"data {m['path']}",
                f"{share:.1%} of tokens (weight {m['weight']:.1%}), {m['epochs']:.3g} epochs",
            ]
        )
    if s.get("tokens_per_sec") is not None:
        rows.append(["tokens/s", f"{s['tokens_per_sec']:,.0f}"])
    render_run(
        "pretrain", outcome, as_json, rows=rows, fields={"requeued": outcome.requeued, "eval": evaluation}
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl pretrain`."""

    @app.command(
        "pretrain",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        short_help="Train a model on token shards.",
        epilog="Every config key, its default and doc: llmctl config show",
        help="Train a model on token shards. Any config key can be overridden: --optim.lr=3e-4 --train.steps=200.",
    )
    def pretrain(
        ctx: typer.Context,
        config: Path | None = typer.Option(
            None, "-c", "--config", help="YAML config (see examples/configs/)."
        ),
        data: list[str] = typer.Option(
            [],
            "--data",
            metavar="PATH[:WEIGHT]",
            help="Token shard directory (data.path); repeat to mix sources by weight: --data web:0.7 --data code:0.3.",
        ),
        steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (train.steps)."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (train.out_dir / train.name)."),
        resume: str | None = typer.Option(
            None, "--resume", help="'auto' (latest checkpoint of the run) or a checkpoint path."
        ),
        init: str | None = typer.Option(
            None,
            "--init",
            help="Start from these weights (fresh optimizer, step 0; the "
            "model shape is the checkpoint's): continued pretraining (checkpoint.init).",
        ),
        test: bool = typer.Option(
            False, "--test", help="Smoke run: at most 50 steps, evaluation, samples and a checkpoint."
        ),
        force: bool = typer.Option(
            False, "--force", help="Start fresh over an earlier run in --out, replacing its files."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the final figures as one JSON document."),
    ) -> None:
        from llmctl.cli._config import build_config, flag_values
        from llmctl.cli._progress import report_requeue
        from llmctl.engine.pretrain import run_pretrain
        from llmctl.engine.run import smoke_test_config

        values = flag_values(data, steps, out, resume)
        if init is not None:
            values["checkpoint.init"] = str(Path(init).expanduser())
        cfg = build_config(config, list(ctx.args), values)
        if test:
            cfg = smoke_test_config(cfg)
        outcome = run_pretrain(cfg, force=force)
        if not outcome.is_rank0:
            return
        report_requeue(outcome)
        render_outcome(outcome, json_out)
        if outcome.result.signal == "SIGINT":
            raise typer.Exit(EXIT_INTERRUPTED)
