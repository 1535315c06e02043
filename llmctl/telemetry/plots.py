"""PNG charts of one or more runs' metrics.jsonl, overlaid for comparison (matplotlib, Agg).

    plot_runs([Path("runs/a"), Path("runs/b")], Path("compare.png"))
    python -m llmctl.telemetry.plots runs/a runs/a/plots/latest.png    # what --telemetry.plot_every runs

Eight charts: train and eval loss, token accuracy, tokens/s, learning rate, MFU, memory, power and
TFLOP/s, against the optimizer step. A chart with no data for any run says so instead of drawing
an empty axis.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.files import atomic_path

# (title, record kind, key, scale, y label)
CHARTS: list[tuple[str, str, str, float, str]] = [
    ("loss", "train", "loss", 1.0, "loss"),
    ("token accuracy", "train", "accuracy", 100.0, "%"),
    ("throughput", "train", "tokens_per_sec", 1.0, "tokens/s"),
    ("learning rate", "train", "lr", 1.0, "lr"),
    ("MFU", "train", "mfu", 100.0, "%"),
    ("memory", "train", "_memory", 1 / 2**30, "GiB"),
    ("power", "train", "power_w", 1.0, "W"),
    ("achieved TFLOP/s", "train", "tflops_per_sec", 1.0, "TFLOP/s"),
]


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Records of RUN/metrics.jsonl; a torn last line (a run still writing) is skipped."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise LlmctlError(
            f"no metrics.jsonl in {run_dir}",
            "pass a run directory written by `llmctl pretrain` or `llmctl sft`",
        )
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _value(record: dict[str, Any], key: str) -> float | None:
    if key == "_memory":
        for k in ("mem_peak_alloc_bytes", "gpu_mem_used_bytes", "rss_bytes"):
            if record.get(k) is not None:
                return record[k]
        return None
    value = record.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _series(
    records: list[dict[str, Any]], kind: str, key: str, scale: float
) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        if r.get("kind", "train") != kind:
            continue
        v = _value(r, key)
        if v is not None:
            xs.append(r["step"])
            ys.append(v * scale)
    return xs, ys


def plot_runs(run_dirs: list[Path], out: Path) -> dict[str, Any]:
    """Draw the charts for `run_dirs` into `out` (PNG, written atomically); returns what was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    runs = [(Path(d), read_metrics(Path(d))) for d in run_dirs]
    labels = [d.name or str(d) for d, _ in runs]
    fig = Figure(figsize=(16, 8), layout="constrained")
    axes = fig.subplots(2, 4).flatten()
    drawn: list[str] = []
    for ax, (title, kind, key, scale, ylabel) in zip(axes, CHARTS, strict=True):
        any_data = False
        for (_, records), label in zip(runs, labels, strict=True):
            xs, ys = _series(records, kind, key, scale)
            if xs:
                (line,) = ax.plot(xs, ys, label=label, linewidth=1.2)
                any_data = True
                if key == "loss":
                    ex, ey = _series(records, "eval", "loss", 1.0)
                    if ex:
                        ax.plot(ex, ey, "o--", color=line.get_color(), label=f"{label} (eval)", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        if any_data:
            drawn.append(title)
            if len(runs) > 1 or key == "loss":
                ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes, color="gray")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(" vs ".join(labels) if len(labels) > 1 else labels[0])
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    return {
        "out": str(out),
        "runs": [str(d) for d, _ in runs],
        "records": [sum(1 for r in recs if r.get("kind", "train") == "train") for _, recs in runs],
        "charts": drawn,
    }


if __name__ == "__main__":
    # Used by Telemetry's plot refresher: python -m llmctl.telemetry.plots RUN_DIR OUT.png
    plot_runs([Path(sys.argv[1])], Path(sys.argv[2]))
