"""Where figures go: one `Sink` interface, one class per destination (docs/ARCHITECTURE.md).

Files in the run directory: `metrics.jsonl` (one object per logged step, evals and samples carry a
`kind`), `samples.jsonl`, `loss.csv`, TensorBoard events under `tb/`, and `summary.json` at the end.
A sink only stores or shows what it is handed; the experiment trackers (wandb_sink.py, mlflow_sink.py)
are sinks too, so adding one touches telemetry only, never the training loop.

On resume the file sinks drop the records an interrupted process wrote after the checkpoint it
resumes from, so every step appears once; TensorBoard does the same through `purge_step`.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from llmctl.files import atomic_write_text

# TensorBoard tags: the user's notes (tokens/*, flops/*, efficientllm/*) plus loss, LR, throughput.
TB_TAGS: dict[str, str] = {
    "tokens_batch": "tokens/batch",
    "tokens_total": "tokens/total",
    "flops_batch": "flops/batch",
    "flops_total": "flops/total",
    "amu_gb": "efficientllm/amu_gb",
    "pcu_ratio": "efficientllm/pcu_ratio",
    "al_seconds": "efficientllm/al_seconds",
    "tt_tokens_per_param_per_sec": "efficientllm/tt_tokens_per_param_per_sec",
    "st_samples_per_param_per_sec": "efficientllm/st_samples_per_param_per_sec",
    "aec_watts": "efficientllm/aec_watts",
    "loss": "train/loss",
    "accuracy": "train/accuracy",
    "lr": "train/lr",
    "grad_norm": "train/grad_norm",
    "tokens_per_sec": "throughput/tokens_per_sec",
    "samples_per_sec": "throughput/samples_per_sec",
    "tflops_per_sec": "throughput/tflops_per_sec",
    "mfu": "throughput/mfu",
    "gpu_util_pct": "hardware/gpu_util_pct",
    "gpu_mem_used_bytes": "hardware/gpu_mem_used_bytes",
    "mem_peak_alloc_bytes": "hardware/mem_peak_alloc_bytes",
    "rss_bytes": "hardware/rss_bytes",
    "cpu_util_pct": "hardware/cpu_util_pct",
    "power_w": "hardware/power_w",
    "energy_j": "energy/total_j",
    "tokens_per_joule": "energy/tokens_per_joule",
}
TB_EVAL_TAGS: dict[str, str] = {
    "loss": "eval/loss",
    "perplexity": "eval/perplexity",
    "reply_perplexity": "eval/reply_perplexity",
    "accuracy": "eval/accuracy",
    "bpb": "eval/bpb",
}
TASK_FIGURES = ("acc", "acc_norm")
"""Per-task figures of a task_eval record logged as eval/<task>/<figure>; eval/centered_acc is the mean."""

OBJECTIVE_PREFIXES = ("rewards/", "logps/", "logits/")
"""Objective figures (DPO, TRL's names) logged as train/<name> and eval/<name>."""


def _objective_tags(kind: str, record: dict[str, Any]) -> dict[str, str]:
    return {k: f"{kind}/{k}" for k in record if k.startswith(OBJECTIVE_PREFIXES)}


def task_eval_scalars(record: dict[str, Any]) -> dict[str, float]:
    """A task_eval record as {tag: value}: eval/<task>/acc, eval/<task>/acc_norm and eval/centered_acc."""
    flat = {"centered_acc": record.get("centered_acc")}
    tags = {"centered_acc": "eval/centered_acc"}
    for name, figures in (record.get("tasks") or {}).items():
        for key in TASK_FIGURES:
            flat[f"{name}/{key}"] = figures.get(key)
            tags[f"{name}/{key}"] = f"eval/{name}/{key}"
    return scalars(tags, flat)


def scalars(tags: dict[str, str], record: dict[str, Any]) -> dict[str, float]:
    """{tag: value} for the finite numbers of `record` that `tags` names: what TensorBoard and the trackers log."""
    out: dict[str, float] = {}
    for key, tag in tags.items():
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = value
    return out


class Sink:
    """Receives figures from Telemetry. Every method is optional; the defaults do nothing.

    `every_step = True` asks for `live_update(snapshot)` after every optimizer step (the panel);
    it is called on the training thread and must only store a reference. The other methods run on
    Telemetry's writer thread, never on the training thread.
    """

    every_step = False

    def start(self, info: Any, resume_step: int) -> None:
        """Open files; `resume_step` > 0 means records after that step are stale."""

    def live_update(self, snapshot: dict[str, Any]) -> None:
        """The newest figures, every step (only for sinks with every_step = True)."""

    def step(self, record: dict[str, Any]) -> None:
        """One metrics record (a logged step)."""

    def eval(self, record: dict[str, Any]) -> None:
        """One evaluation record."""

    def task_eval(self, record: dict[str, Any]) -> None:
        """One round of multiple-choice tasks (kind "task_eval")."""

    def samples(self, records: list[dict[str, Any]]) -> None:
        """One sampling round."""

    def log(self, message: str) -> None:
        """A line of information."""

    def close(self, summary: dict[str, Any]) -> None:
        """Flush and close; `summary` is what summary.json holds."""


def jsonable(value: Any) -> Any:
    """NaN and infinities become null, so every number in our JSON is a JSON number."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def _record_step(line: str) -> int | None:
    """The step of a metrics/samples JSONL line or a loss.csv row; None if unreadable."""
    line = line.strip()
    if not line:
        return None
    if line.startswith("{"):
        try:
            return int(json.loads(line).get("step"))
        except (ValueError, TypeError, AttributeError):
            return None
    try:
        return int(next(csv.reader([line]))[1])
    except (ValueError, IndexError, StopIteration):
        return None


def prepare_append(path: Path, resume_step: int, header: str | None = None) -> None:
    """Get `path` ready for appending: fresh run -> new file; resume -> keep steps <= resume_step.

    The kept part is rewritten atomically; a torn last line from a killed process is dropped.
    """
    if resume_step <= 0 or not path.exists():
        atomic_write_text(path, header or "")
        return
    kept = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if header and i == 0 and line == header.strip():
            continue
        step = _record_step(line)
        if step is not None and step <= resume_step:
            kept.append(line + "\n")
    atomic_write_text(path, (header or "") + "".join(kept))


class _AppendFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: io.TextIOWrapper | None = None

    def write(self, text: str) -> None:
        if self.handle is None:
            self.handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- kept open across calls
        self.handle.write(text)
        self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


class JsonlSink(Sink):
    """metrics.jsonl (train, eval and sample records, each with `kind`) and samples.jsonl."""

    def __init__(self, run_dir: Path) -> None:
        self.metrics = _AppendFile(run_dir / "metrics.jsonl")
        self.sample_file = _AppendFile(run_dir / "samples.jsonl")

    def start(self, info: Any, resume_step: int) -> None:
        prepare_append(self.metrics.path, resume_step)
        prepare_append(self.sample_file.path, resume_step)

    def _write(self, target: _AppendFile, record: dict[str, Any]) -> None:
        target.write(json.dumps(jsonable(record), ensure_ascii=False) + "\n")

    def step(self, record: dict[str, Any]) -> None:
        self._write(self.metrics, record)

    def eval(self, record: dict[str, Any]) -> None:
        self._write(self.metrics, record)

    def task_eval(self, record: dict[str, Any]) -> None:
        self._write(self.metrics, record)

    def samples(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._write(self.sample_file, {k: v for k, v in r.items() if k != "kind"})
            self._write(self.metrics, r)

    def close(self, summary: dict[str, Any]) -> None:
        self.metrics.close()
        self.sample_file.close()


LOSS_CSV_HEADER = "kind,step,tokens,loss,accuracy,lr\n"


class CsvSink(Sink):
    """loss.csv: one row per logged step (kind=train) and per evaluation (kind=eval)."""

    def __init__(self, run_dir: Path) -> None:
        self.file = _AppendFile(run_dir / "loss.csv")

    def start(self, info: Any, resume_step: int) -> None:
        prepare_append(self.file.path, resume_step, LOSS_CSV_HEADER)

    def _row(self, *values: Any) -> None:
        cells = [
            ""
            if v is None or (isinstance(v, float) and not math.isfinite(v))
            else repr(v)
            if isinstance(v, float)
            else str(v)
            for v in values
        ]
        self.file.write(",".join(cells) + "\n")

    def step(self, record: dict[str, Any]) -> None:
        self._row(
            "train", record["step"], record["tokens_total"], record["loss"], record["accuracy"], record["lr"]
        )

    def eval(self, record: dict[str, Any]) -> None:
        self._row(
            "eval", record["step"], record.get("tokens_total"), record["loss"], record["accuracy"], None
        )

    def close(self, summary: dict[str, Any]) -> None:
        self.file.close()


def _wait_for_a_later_second(log_dir: Path) -> None:
    """Make the next event file sort after the existing ones.

    TensorBoard reads event files in name order, and names are `events.out.tfevents.<unix seconds>.<host>.
    <pid>.<counter>`: a resume in the same second as the previous writer (in-process, as tests do) could sort
    first once the counter gains a digit, and its steps would be read before the older ones.
    """
    import time

    stamps = [
        int(f.name.split(".")[3])
        for f in log_dir.glob("events.out.tfevents.*")
        if f.name.split(".")[3].isdigit()
    ]
    if stamps and time.time() < max(stamps) + 1:
        time.sleep(max(stamps) + 1 - time.time())


class TensorBoardSink(Sink):
    """TensorBoard scalars under RUN/tb (torch's SummaryWriter, imported only when used)."""

    def __init__(self, run_dir: Path) -> None:
        self.log_dir = run_dir / "tb"
        self.writer: Any = None

    def start(self, info: Any, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if resume_step > 0:
            _wait_for_a_later_second(self.log_dir)
        # purge_step hides events an interrupted process wrote after the checkpoint we resume from.
        self.writer = SummaryWriter(
            log_dir=str(self.log_dir), purge_step=resume_step + 1 if resume_step > 0 else None
        )

    def _scalars(self, tags: dict[str, str], record: dict[str, Any]) -> None:
        for tag, value in scalars(tags, record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def step(self, record: dict[str, Any]) -> None:
        self._scalars({**TB_TAGS, **_objective_tags("train", record)}, record)

    def eval(self, record: dict[str, Any]) -> None:
        self._scalars({**TB_EVAL_TAGS, **_objective_tags("eval", record)}, record)

    def task_eval(self, record: dict[str, Any]) -> None:
        for tag, value in task_eval_scalars(record).items():
            self.writer.add_scalar(tag, value, record["step"])

    def samples(self, records: list[dict[str, Any]]) -> None:
        for i, r in enumerate(records):
            self.writer.add_text(f"samples/{i}", f"**{r['prompt']}** {r['output']}", r["step"])

    def close(self, summary: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
            self.writer = None


class SummarySink(Sink):
    """summary.json, written once at the end, atomically."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / "summary.json"

    def close(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.path, json.dumps(jsonable(summary), indent=2) + "\n")
