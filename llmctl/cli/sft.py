"""`llmctl sft`: fine-tune a pretrained checkpoint on chat data, training on the assistant replies only.

    llmctl sft -c examples/configs/sft.yaml --init runs/py/checkpoints/latest --data tokens/instr
    llmctl sft -c examples/configs/sft.yaml --init runs/py/checkpoints/latest --data tokens/instr \
        --data.packing=true --optim.lr=1e-4 --steps 500 --out runs/py-sft --json

Starts from the checkpoint's weights with a fresh optimizer and schedule, on SFT token shards
(`llmctl tokenize --mode sft`), with the same Trainer as `pretrain`. Stops with an error before
training when the checkpoint's tokenizer is not the one the data was tokenized with. The run
directory holds the same files as a pretraining run; samples.jsonl shows the model's replies to
held-out prompts next to the reference replies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.errors import EXIT_INTERRUPTED


def render_sft(outcome: Any, as_json: bool) -> None:
    """The run's final figures and what happened to the conversations: a table or one JSON document."""
    from llmctl.cli._tables import render_run
    from llmctl.units import fmt_count

    r, data = outcome.run.result, outcome.data
    s, ev = r.summary, r.last_eval
    evaluation = (
        {
            "step": ev.step,
            "loss": ev.loss,
            "reply_perplexity": ev.perplexity,
            "accuracy": ev.accuracy,
            "eval_tokens": ev.tokens,
        }
        if ev
        else None
    )
    rows: list[list[Any]] = []
    if s.get("trained_tokens") is not None:
        rows.append(["trained tokens", fmt_count(s["trained_tokens"])])
    if data:
        rows.append(
            [
                "conversations",
                f"{data['used']:,} used of {data['conversations']:,}"
                f" ({'packed' if data['packing'] else 'padded'}, seq_len {data['seq_len']})",
            ]
        )
        rows.append(
            [
                "overlong",
                f"{data['truncated']:,} truncated, {data['dropped_overlong']:,} dropped"
                f" (data.overlong={data['overlong']})",
            ]
        )
        if data["dropped_untrained"]:
            rows.append(["no reply", f"{data['dropped_untrained']:,} dropped (nothing to train)"])
        if data.get("untrained_special_tokens"):
            names = ", ".join(data["untrained_special_tokens"])
            rows.append(
                [
                    "untrained rows",
                    f"{names}: set to the mean of the trained rows"
                    if data.get("untrained_rows") == "mean"
                    else f"{names}: left as they are (--untrained-rows mean trains them from the mean row)",
                ]
            )
    if s.get("final_loss") is not None:
        rows.append(["train loss", f"{s['final_loss']:.4f}"])
    if ev is not None:
        rows += [["val loss", f"{ev.loss:.4f}"], ["val accuracy", f"{ev.accuracy:.1%}"]]
    st = (s.get("efficientllm") or {}).get("st_samples_per_param_per_sec")
    if st is not None:
        rows.append(["ST (samples/param/s)", f"{st:.3g}"])
    render_run(
        "sft",
        outcome.run,
        as_json,
        rows=rows,
        fields={"eval": evaluation, "data": data},
        origin={"init": outcome.init},
        origin_rows=[["init", outcome.init]],
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl sft`."""

    @app.command(
        "sft",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        short_help="Fine-tune a checkpoint on chat data (loss on replies only).",
        epilog="Every config key, its default and doc: llmctl config show",
        help="Fine-tune a pretrained checkpoint on SFT token shards (loss on assistant replies only). "
        "Any config key can be overridden: --optim.lr=1e-4 --data.packing=true.",
    )
    def sft(
        ctx: typer.Context,
        config: Path | None = typer.Option(
            None, "-c", "--config", help="YAML config (examples/configs/sft.yaml)."
        ),
        init: str | None = typer.Option(
            None, "--init", help="Pretrained checkpoint to start from (checkpoint.init)."
        ),
        data: list[str] = typer.Option(
            [],
            "--data",
            metavar="PATH[:epochs=N]",
            help="SFT token shard directory (data.path); repeat to mix sets, each for N epochs: --data a:epochs=3 --data b.",
        ),
        steps: int | None = typer.Option(None, "--steps", help="Optimizer steps (train.steps)."),
        out: Path | None = typer.Option(None, "--out", help="Run directory (train.out_dir / train.name)."),
        resume: str | None = typer.Option(
            None, "--resume", help="'auto' (latest checkpoint of this SFT run) or a checkpoint path."
        ),
        force: bool = typer.Option(
            False, "--force", help="Start fresh over an earlier run in --out, replacing its files."
        ),
        untrained_rows: str | None = typer.Option(
            None,
            "--untrained-rows",
            metavar="warn|mean",
            help="Template tokens whose init row looks never trained (Qwen2.5 base's <|im_end|>): warn, or set them "
            "to the mean of the trained rows before training (checkpoint.untrained_rows).",
        ),
        json_out: bool = typer.Option(False, "--json", help="Print the final figures as one JSON document."),
    ) -> None:
        from llmctl.cli._config import build_config, flag_values
        from llmctl.cli._progress import report_requeue
        from llmctl.engine.sft import run_sft

        values = flag_values(data, steps, out, resume, epochs=True)
        if init is not None:
            values["checkpoint.init"] = init
        if untrained_rows is not None:
            values["checkpoint.untrained_rows"] = untrained_rows
        outcome = run_sft(build_config(config, list(ctx.args), values), force=force)
        if not outcome.run.is_rank0:
            return
        report_requeue(outcome.run)
        render_sft(outcome, json_out)
        if outcome.run.result.signal == "SIGINT":
            raise typer.Exit(EXIT_INTERRUPTED)
