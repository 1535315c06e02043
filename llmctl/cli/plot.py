"""`llmctl plot`: PNG charts of one run, or several runs overlaid for comparison.

    llmctl plot runs/ts-10m                          writes runs/ts-10m/plots/metrics.png
    llmctl plot runs/a runs/b --out compare.png      both runs on the same axes

Charts: train and eval loss, token accuracy, tokens/s, learning rate, MFU, memory, power and
TFLOP/s, read from each run's metrics.jsonl (matplotlib with the Agg backend, no display needed).
"""

from __future__ import annotations

from pathlib import Path

import typer

from llmctl.errors import LlmctlError
from llmctl.output import out, print_json, table


def plot_command(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (each holds metrics.jsonl)."),
    out_path: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG to write. Default: RUN/plots/metrics.png for one run, compare.png for several.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Draw loss, accuracy, throughput, LR, MFU, memory and power charts as a PNG."""
    for d in run_dirs:
        if not d.is_dir():
            raise LlmctlError(
                f"run directory not found: {d}",
                "pass the directory a pretrain or sft run wrote, e.g. runs/<name>",
            )
    if out_path is None:
        out_path = run_dirs[0] / "plots" / "metrics.png" if len(run_dirs) == 1 else Path("compare.png")
    if out_path.suffix.lower() != ".png":
        raise LlmctlError(
            f"--out must end in .png, got {out_path}", f"use --out {out_path.with_suffix('.png')}"
        )
    from llmctl.telemetry.plots import plot_runs

    result = plot_runs(run_dirs, out_path)
    if as_json:
        print_json(result)
        return
    rows = [[run, f"{n:,}"] for run, n in zip(result["runs"], result["records"], strict=True)]
    console = out()
    console.print(table(None, ["run", "train records"], rows))
    console.print(f"charts: {', '.join(result['charts']) or 'none yet (no records)'}", markup=False)
    console.print(f"wrote {result['out']}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `plot` to the root app."""
    app.command("plot", short_help="Draw a run's loss, throughput, MFU and power charts.")(plot_command)
