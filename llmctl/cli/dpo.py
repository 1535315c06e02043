"""`llmctl dpo`: preference tuning (DPO or IPO) of an SFT checkpoint on pair shards.

    llmctl data download prefs.jsonl --out data/prefs
    llmctl tokenize --mode dpo --profile chat --data data/prefs --tokenizer tok.json --out tokens/prefs --max-len 512
    llmctl dpo --init runs/sft/checkpoints/latest --data tokens/prefs --out runs/dpo --steps 200 \
        --dpo.beta=0.1 --dpo.loss=sigmoid --data.seq_len=512 --data.packing=true

Reference log-probs come from --ref (default --init), computed once before training and stored under
RUN/reference/ (`--dpo.ref_mode=live` keeps the reference model in memory instead). Metrics use TRL's
names (rewards/chosen, rewards/margins, logps/chosen, ...) in metrics.jsonl, TensorBoard and the panel.
This module also renders `tokenize --mode dpo`, and `count`/`inspect` of pair shards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.errors import EXIT_INTERRUPTED


def render_dpo(outcome: Any, as_json: bool) -> None:
    """The run's final figures and what happened to the pairs: a table or one JSON document."""
    from llmctl.cli._tables import render_run

    r, data = outcome.run.result, outcome.data
    s, ev = r.summary, r.last_eval
    evm = dict(ev.metrics) if ev is not None else {}
    rows: list[list[Any]] = []
    if data:
        rows.append(
            [
                "pairs",
                f"{data['used']:,} used of {data['pairs']:,} ({'packed' if data['packing'] else 'padded'},"
                f" seq_len {data['seq_len']}; {data['dropped_overlong']:,} too long)",
            ]
        )
        rows.append(["loss", f"{data['loss']} (beta {data['beta']:g})"])
    if s.get("final_loss") is not None:
        rows.append(["train loss", f"{s['final_loss']:.4f}"])
    if ev is not None:
        rows += [
            ["val loss", f"{ev.loss:.4f}"],
            ["val reward accuracy", f"{evm.get('rewards/accuracies', 0):.1%}"],
            ["val reward margin", f"{evm.get('rewards/margins', 0):.4f}"],
            [
                "val logps chosen / rejected",
                f"{evm.get('logps/chosen', 0):.3f} / {evm.get('logps/rejected', 0):.3f}",
            ],
        ]
    render_run(
        "dpo",
        outcome.run,
        as_json,
        rows=rows,
        fields={
            "eval": {"step": ev.step, "loss": ev.loss, "eval_tokens": ev.tokens, **evm} if ev else None,
            "data": data,
        },
        origin={"init": outcome.init, "ref": outcome.ref},
        origin_rows=[
            ["init", outcome.init],
            ["reference", f"{outcome.ref} ({data.get('reference', data.get('ref_mode'))})"],
        ],
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl dpo`."""

    @app.command(
        "dpo",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        short_help="Preference-tune a checkpoint (DPO or IPO) on pair shards.",
        epilog="Every config key, its default and doc: llmctl config show",
        help="Preference-tune a checkpoint (DPO or IPO) on pair shards from `tokenize --mode dpo`. "
        "Any config key can be overridden: --dpo.beta=0.1 --dpo.loss=ipo --dpo.ref_mode=live.",
    )
    def dpo(
        ctx: typer.Context,
        config: Path | None = typer.Option(None, "-c", "--config", help="YAML config."),
        init: str | None = typer.Option(
            None, "--init", help="Checkpoint to start from (checkpoint.init), usually SFT."
        ),
        data: str | None = typer.Option(None, "--data", help="Pair shard directory (data.path)."),
        ref: str | None = typer.Option(None, "--ref", help="Reference checkpoint (dpo.ref); default --init."),
        steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (train.steps)."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (train.out_dir / train.name)."),
        resume: str | None = typer.Option(
            None, "--resume", help="'auto' (latest checkpoint of this run) or a checkpoint path."
        ),
        force: bool = typer.Option(
            False, "--force", help="Start fresh over an earlier run in --out, replacing its files."
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the final figures as one JSON document."),
    ) -> None:
        from llmctl.cli._config import build_config, flag_values
        from llmctl.cli._progress import PairProgress, report_requeue
        from llmctl.engine.dpo import run_dpo
        from llmctl.output import log

        values = flag_values([data] if data is not None else [], steps, out, resume)
        if init is not None:
            values["checkpoint.init"] = init
        if ref is not None:
            values["dpo.ref"] = ref
        cfg = build_config(config, list(ctx.args), values)
        with PairProgress() as progress:
            outcome = run_dpo(
                cfg, force=force, on_progress=progress.update, on_warning=lambda w: log(f"warning: {w}")
            )
        if not outcome.run.is_rank0:
            return
        report_requeue(outcome.run)
        render_dpo(outcome, json_out)
        if outcome.run.result.signal == "SIGINT":
            raise typer.Exit(EXIT_INTERRUPTED)
