"""`llmctl grpo`: reinforcement learning with verifiable rewards (GRPO, DAPO, Dr. GRPO) on a chat checkpoint.

    llmctl grpo --init runs/sft/checkpoints/latest --data data/addition.jsonl --out runs/grpo --steps 100 \
        --reward number --grpo.num_generations=8 --grpo.prompts_per_step=4 --grpo.max_new_tokens=16

The data is JSONL (or a `data download` folder) of rows with `prompt` or `messages` and an `answer`; each
step samples --grpo.num_generations completions per prompt with the model's chat template, scores them
with the --reward specs (exact, number, regex:PATTERN, format:PATTERN, each :WEIGHT optional) and any
--reward-module FILE.py:function, and trains on their group-relative advantages. Metrics use TRL's names
(reward, reward_std, rewards/<name>/mean, frac_reward_zero_std, completions/mean_length, kl, entropy,
clip_ratio/region_mean) in metrics.jsonl, TensorBoard and the panel; completions go to samples.jsonl.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from llmctl.errors import EXIT_INTERRUPTED


def render_grpo(outcome: Any, as_json: bool) -> None:
    """The run's final figures and its rewards: a table or one JSON document."""
    from llmctl.cli._tables import render_run

    r, data = outcome.run.result, outcome.data
    s = r.summary
    last = {k: s[k] for k in ("reward", "reward_std", "completions/mean_length") if k in s}
    rows: list[list[Any]] = []
    if data:
        rows.append(
            [
                "rollouts",
                f"{data.get('rollouts', 0):,} of {data['prompts_per_step']} prompts x {data['num_generations']} "
                f"completions ({data['prompts']:,} prompts)",
            ]
        )
        rows.append(["rewards", data["rewards"]])
        rows.append(["loss", f"{data['loss_type']} (beta {data['beta']:g}, reference {data['reference']})"])
    if s.get("final_loss") is not None:
        rows.append(["train loss", f"{s['final_loss']:.4f}"])
    render_run(
        "grpo",
        outcome.run,
        as_json,
        rows=rows,
        fields={"data": data, "last": last},
        origin={"init": outcome.init},
        origin_rows=[["init", outcome.init]],
    )


def register(app: typer.Typer) -> None:
    """Add `llmctl grpo`."""

    @app.command(
        "grpo",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        short_help="Reinforce a chat checkpoint on checkable answers (GRPO).",
        epilog="Every config key, its default and doc: llmctl config show",
        help="Train a chat checkpoint with GRPO: sample several replies per prompt, score them with rewards, "
        "and push up the better ones. Any config key can be overridden: --grpo.num_generations=8 "
        "--grpo.beta=0.04 --grpo.loss_type=dr_grpo --lora.rank=16.",
    )
    def grpo(
        ctx: typer.Context,
        config: Path | None = typer.Option(None, "-c", "--config", help="YAML config."),
        init: str | None = typer.Option(
            None, "--init", help="Checkpoint to start from (checkpoint.init), a chat model."
        ),
        data: str | None = typer.Option(
            None, "--data", help="Prompts: FILE.jsonl or a `data download` folder (data.path)."
        ),
        reward: list[str] = typer.Option(
            [], "--reward", help="exact, number, regex:PATTERN or format:PATTERN, with :WEIGHT; repeatable."
        ),
        reward_module: list[str] = typer.Option(
            [], "--reward-module", help="Your own reward, FILE.py:function[:WEIGHT]; repeatable."
        ),
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
        from llmctl.cli._progress import report_requeue
        from llmctl.engine.grpo import run_grpo

        values = flag_values([data] if data is not None else [], steps, out, resume)
        if init is not None:
            values["checkpoint.init"] = init
        if reward:
            values["grpo.rewards"] = list(reward)
        if reward_module:
            values["grpo.reward_modules"] = list(reward_module)
        cfg = build_config(config, list(ctx.args), values)
        outcome = run_grpo(cfg, force=force)
        if not outcome.run.is_rank0:
            return
        report_requeue(outcome.run)
        render_grpo(outcome, json_out)
        if outcome.run.result.signal == "SIGINT":
            raise typer.Exit(EXIT_INTERRUPTED)
