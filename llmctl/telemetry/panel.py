"""What a person watching a run sees: the Rich live panel on terminals, plain lines elsewhere.

`render(snapshot)` and `plain_line(record)` are pure functions of a dict of figures (as in
metrics.jsonl), so they are tested without a terminal. `PanelSink` holds one Rich `Live` that
redraws from the newest snapshot at most 4 times a second on Rich's own thread; the training loop
only replaces a reference. `PlainSink` prints one line every logged step, in the shape of the
user's notes:

    [Iter 10] Tokens: 81.92K tokens (batch), 819.2K tokens (total) | FLOPs: 2.34 TFLOPs (batch), 23.4 TFLOPs (total) | loss 3.2457 | acc 28.3% | 12.3K tok/s | lr 1.00e-03 | eta 37m
"""

from __future__ import annotations

import math
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmctl.telemetry.efficiency import LEGEND
from llmctl.telemetry.sinks import Sink
from llmctl.units import fmt_bytes, fmt_count, fmt_flops

NA = "n/a"
_BARS = "▁▂▃▄▅▆▇█"


def _ok(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and not math.isfinite(value))


def pct(value: float | None, digits: int = 1) -> str:
    """0.283 -> '28.3%'; None -> 'n/a'."""
    return f"{100 * value:.{digits}f}%" if _ok(value) else NA


def eta_text(seconds: float | None) -> str:
    """Compact remaining time: '45s', '37m', '2h05m', '3d04h'."""
    if not _ok(seconds):
        return NA
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def energy_text(joules: float | None) -> str:
    """'850 J', '2.5 Wh', '1.2 kWh'."""
    if not _ok(joules):
        return NA
    wh = joules / 3600
    if wh < 1:
        return f"{joules:.0f} J"
    return f"{wh:.3g} Wh" if wh < 1000 else f"{wh / 1000:.3g} kWh"


def sparkline(values: list[float] | tuple[float, ...], width: int = 24) -> str:
    """A small trend line of the last `width` finite values, scaled between their min and max."""
    points = [v for v in values if _ok(v)][-width:]
    if not points:
        return ""
    low, high = min(points), max(points)
    span = high - low
    if span <= 0:
        return _BARS[3] * len(points)
    return "".join(_BARS[min(len(_BARS) - 1, int((v - low) / span * (len(_BARS) - 1) + 0.5))] for v in points)


def _fmt(value: Any, fn: Any) -> str:
    return fn(value) if _ok(value) else NA


def plain_line(r: dict[str, Any]) -> str:
    """One log line for a metrics record (pipes, SLURM logs, CI, NO_COLOR)."""
    parts = [
        f"[Iter {r['step']}] Tokens: {fmt_count(r['tokens_batch'])} tokens (batch), "
        f"{fmt_count(r['tokens_total'])} tokens (total)",
        f"FLOPs: {fmt_flops(r['flops_batch'])} (batch), {fmt_flops(r['flops_total'])} (total)",
        f"loss {r['loss']:.4f}" if _ok(r.get("loss")) else "loss n/a",
        *([] if grpo_text(r) else [f"acc {pct(r.get('accuracy'))}"]),  # GRPO trains no target tokens
        f"{_fmt(r.get('tokens_per_sec'), fmt_count)} tok/s",
        f"lr {r['lr']:.2e}" if _ok(r.get("lr")) else "lr n/a",
        f"eta {eta_text(r.get('eta_s'))}",
    ]
    if _ok(r.get("mfu")):
        parts.append(f"mfu {pct(r['mfu'])}")
    if r.get("mix_fractions"):
        parts.append(f"mix {mix_text(r['mix_fractions'])}")
    return " | ".join(parts) + dpo_text(r) + grpo_text(r)


def grpo_text(r: dict[str, Any]) -> str:
    """The GRPO view: ` | reward 0.750 ± 0.433 | len 12.3 | rollout 812 tok/s` when the record holds GRPO
    figures, else ''."""
    if not _ok(r.get("reward")) or not _ok(r.get("completions/mean_length")):
        return ""
    return (
        f" | reward {r['reward']:.3f} ± {r.get('reward_std', 0.0):.3f} | len {r['completions/mean_length']:.1f}"
        f" | rollout {_fmt(r.get('rollout_tokens_per_sec'), fmt_count)} tok/s"
    )


def dpo_text(r: dict[str, Any]) -> str:
    """The DPO view: ` | margin 0.412 | reward acc 71.9%` when the record holds DPO figures, else ''."""
    if not _ok(r.get("rewards/margins")):
        return ""
    return f" | margin {r['rewards/margins']:.3f} | reward acc {pct(r.get('rewards/accuracies'))}"


def mix_text(fractions: dict[str, float] | None) -> str:
    """Realised mixture fractions, `web 70.1% · code 29.9%` (each source by its folder name)."""
    return " · ".join(f"{Path(path).name or path} {pct(f)}" for path, f in (fractions or {}).items())


PERPLEXITY_LABELS = {"perplexity": "ppl", "reply_perplexity": "reply_ppl"}
"""How an eval record's perplexity is shown: of the text (pretraining) or of the replies only (SFT); a DPO
record has none (exp of a pair loss is no perplexity)."""


def ppl_text(r: dict[str, Any], sep: str) -> str:
    """`{sep}ppl 19.84` or `{sep}reply_ppl 1.78`, whichever perplexity the record holds; '' for none."""
    return "".join(
        f"{sep}{label} {r[key]:.2f}" for key, label in PERPLEXITY_LABELS.items() if r.get(key) is not None
    )


def eval_line(r: dict[str, Any]) -> str:
    """`[Eval 200] loss 2.9876 | ppl 19.84 | acc 31.2%` (SFT: `reply_ppl`; DPO: no perplexity)."""
    by_source = r.get("loss_by_source") or {}
    sources = "".join(f" | {Path(path).name or path} {loss:.4f}" for path, loss in by_source.items())
    return (
        (
            f"[Eval {r['step']}] loss {r['loss']:.4f}{' (weighted)' if sources else ''}{ppl_text(r, ' | ')} | "
            f"acc {pct(r.get('accuracy'))}{sources}"
        )
        + (f" | bpb {r['bpb']:.4f}" if r.get("bpb") is not None else "")
        + dpo_text(r)
    )


def task_eval_line(r: dict[str, Any]) -> str:
    """`[Tasks 200] hellaswag acc 0.3120 acc_norm 0.3340 | centered 0.0827 | 4.1s`."""
    parts = [
        f"{name} acc {t['acc']:.4f} acc_norm {t['acc_norm']:.4f}"
        for name, t in (r.get("tasks") or {}).items()
    ]
    centered = r.get("centered_acc")
    tail = f" | centered {centered:.4f}" if centered is not None else ""
    return f"[Tasks {r['step']}] " + " | ".join(parts) + tail + f" | {r.get('seconds') or 0.0:.1f}s"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def sample_line(r: dict[str, Any], limit: int = 160) -> str:
    """`[Sample 500] Once upon a time -> there was a ...`, on one line."""
    line = f"[Sample {r['step']}] {_one_line(r['prompt'], 40)} -> {_one_line(r['output'], limit)}"
    total = (r.get("rewards") or {}).get("total")
    return line + (f" (reward {total:g})" if _ok(total) else "")


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The end-of-run report: totals, rates, final eval, then the EfficientLLM figures and their legend."""
    if "steps" not in s:
        return [f"run {s.get('status', 'ended')}"]
    head = f"run {s['status']} at step {s['steps']}: {fmt_count(s['tokens'])} tokens, {fmt_flops(s['flops'])} in {eta_text(s['wall_time_s'])}"
    rate = (
        fmt_flops(s["tflops_per_sec"] * 1e12, per_second=True)
        if _ok(s.get("tflops_per_sec"))
        else "n/a FLOP/s"
    )
    lines = [f"{head} | {_fmt(s.get('tokens_per_sec'), fmt_count)} tok/s | {rate} | mfu {pct(s.get('mfu'))}"]
    ev = s.get("final_eval")
    if ev:
        lines.append(
            f"final eval (step {ev['step']}): loss {ev['loss']:.4f}{ppl_text(ev, ' | ')} | acc {pct(ev.get('accuracy'))}"
            + (f" | bpb {ev['bpb']:.4f}" if ev.get("bpb") is not None else "")
        )
    e = s.get("efficientllm") or {}

    def num(key: str, fmt: str) -> str:
        return format(e[key], fmt) if _ok(e.get(key)) else NA

    energy = (
        f"{s['energy_wh']:.3g} Wh ({s['energy_j']:.4g} J), {s['tokens_per_joule']:.4g} tokens/J"
        if _ok(s.get("energy_j")) and _ok(s.get("tokens_per_joule"))
        else NA
    )
    lines.append(
        f"[EfficientLLM] AMU {num('amu_gb', '.2f')} GB | PCU {num('pcu_ratio', '.3f')} | AL {num('al_seconds', '.4f')} s | "
        f"TT {num('tt_tokens_per_param_per_sec', '.3g')} | ST {num('st_samples_per_param_per_sec', '.3g')} | "
        f"IT {num('it_tokens_per_sec', '.4g')} tok/s | AEC {num('aec_watts', '.1f')} W | energy {energy}"
    )
    lines.append(LEGEND)
    return lines


def _memory(s: dict[str, Any]) -> str:
    if _ok(s.get("mem_peak_alloc_bytes")):
        used = f" / {fmt_bytes(s['gpu_mem_used_bytes'])} used" if _ok(s.get("gpu_mem_used_bytes")) else ""
        return f"{fmt_bytes(s['mem_peak_alloc_bytes'])} peak{used}"
    if _ok(s.get("gpu_mem_used_bytes")):
        return f"{fmt_bytes(s['gpu_mem_used_bytes'])} used"
    if _ok(s.get("rss_bytes")):
        return f"{fmt_bytes(s['rss_bytes'])} RSS"
    return NA


def _cells(s: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """The panel's figures as rows of (label, value) pairs."""
    loss = f"{s['loss']:.4f}" if _ok(s.get("loss")) else NA
    dpo = (
        [
            [
                ("margin", f"{s['rewards/margins']:.3f}"),
                ("reward acc", pct(s.get("rewards/accuracies"))),
                ("logp chosen", f"{s['logps/chosen']:.2f}" if _ok(s.get("logps/chosen")) else NA),
            ]
        ]
        if _ok(s.get("rewards/margins"))
        else []
    )
    grpo = (
        [
            [
                ("reward", f"{s['reward']:.3f} ± {s.get('reward_std', 0.0):.3f}"),
                ("length", f"{s['completions/mean_length']:.1f}"),
                ("rollout tok/s", _fmt(s.get("rollout_tokens_per_sec"), fmt_count)),
            ]
        ]
        if _ok(s.get("reward")) and _ok(s.get("completions/mean_length"))
        else []
    )
    return (
        dpo
        + grpo
        + [
            [
                ("loss", f"{loss} {sparkline(s.get('losses', ()), 16)}"),
                ("acc", pct(s.get("accuracy"))),
                ("lr", f"{s['lr']:.2e}" if _ok(s.get("lr")) else NA),
            ],
            [
                ("grad norm", f"{s['grad_norm']:.3f}" if _ok(s.get("grad_norm")) else NA),
                ("tokens/s", _fmt(s.get("tokens_per_sec"), fmt_count)),
                ("tokens", _fmt(s.get("tokens_total"), fmt_count)),
            ],
            [
                ("FLOPs/batch", _fmt(s.get("flops_batch"), fmt_flops)),
                ("FLOPs total", _fmt(s.get("flops_total"), fmt_flops)),
                (
                    "FLOP/s",
                    fmt_flops(s["tflops_per_sec"] * 1e12, per_second=True)
                    if _ok(s.get("tflops_per_sec"))
                    else NA,
                ),
            ],
            [
                ("MFU", pct(s.get("mfu"))),
                ("memory", _memory(s)),
                ("GPU util", f"{s['gpu_util_pct']:.0f}%" if _ok(s.get("gpu_util_pct")) else NA),
            ],
            [
                ("power", f"{s['power_w']:.0f} W" if _ok(s.get("power_w")) else NA),
                ("energy", energy_text(s.get("energy_j"))),
                ("CPU", f"{s['cpu_util_pct']:.0f}%" if _ok(s.get("cpu_util_pct")) else NA),
            ],
        ]
    )


def render(s: dict[str, Any]) -> Any:
    """The panel for one snapshot: progress, training figures, throughput, hardware, eval, sample.

    Built from pre-padded Text rather than Rich tables: a table layout costs ~5 ms of Python per
    refresh, time the training thread would wait for the GIL.
    """
    from rich.console import Group
    from rich.panel import Panel
    from rich.text import Text

    total = s.get("total_steps") or 0
    step = s.get("step", 0)
    filled = int(40 * min(step, total) / total) if total else 0
    head = Text()
    head.append("━" * filled, style="green")
    head.append("━" * (40 - filled), style="grey30")
    head.append(
        f"  step {step}/{total}  {pct(step / total if total else None)}" if total else f"  step {step}"
    )
    head.append(f"  elapsed {eta_text(s.get('elapsed_s'))}  eta {eta_text(s.get('eta_s'))}")
    body = Text(no_wrap=True, overflow="crop")
    for i, row in enumerate(_cells(s)):
        if i:
            body.append("\n")
        for label, value in row:
            body.append(f"{label:>11} ", style="dim")
            body.append(f"{value:<30}")
    rows: list[Any] = [head, body]
    if s.get("mix_fractions"):
        rows.append(Text(f"mix (realised)  {mix_text(s['mix_fractions'])}"))
    ev = s.get("eval")
    if ev:
        rows.append(
            Text(
                f"eval @{ev['step']}  loss {ev['loss']:.4f}{ppl_text(ev, '  ')}  acc {pct(ev.get('accuracy'))}"
                + (f"  bpb {ev['bpb']:.4f}" if ev.get("bpb") is not None else "")
                + dpo_text(ev)
            )
        )
    tasks = s.get("task_eval")
    if tasks:
        figures = "  ".join(f"{name} {pct(t.get('acc'))}" for name, t in (tasks.get("tasks") or {}).items())
        centered = tasks.get("centered_acc")
        rows.append(
            Text(
                f"tasks @{tasks['step']}  {_one_line(figures, 100)}"
                + (f"  centered {centered:.3f}" if centered is not None else "")
            )
        )
    sample = s.get("sample")
    if sample:
        rows.append(
            Text(
                f"sample @{sample['step']}  {_one_line(sample['prompt'], 30)} → {_one_line(sample['output'], 100)}"
            )
        )
    title = " · ".join(str(x) for x in (s.get("objective"), s.get("run"), s.get("device_label")) if x)
    return Panel(Group(*rows), title=title or "llmctl", title_align="left", border_style="cyan")


class PanelSink(Sink):
    """The live panel on stderr (rank 0, terminals only); logs print above it.

    A daemon thread redraws when a new snapshot has arrived, at most 4 times a second, and at
    least once a second so elapsed time moves during an evaluation. Drawing costs about 1 ms of
    Python, so skipping unchanged frames keeps it off the training thread's back.
    """

    every_step = True
    max_fps = 4.0
    idle_redraw_s = 1.0

    def __init__(self, console: Any = None) -> None:
        self.console = console
        self.snapshot: dict[str, Any] = {}
        self.live: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, info: Any, resume_step: int) -> None:
        from rich.live import Live

        from llmctl.output import err

        self.live = Live(
            render(self.snapshot),
            console=self.console or err(),
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self.live.start()
        self._thread = threading.Thread(target=self._redraw_loop, name="llmctl-panel", daemon=True)
        self._thread.start()

    def _redraw_loop(self) -> None:
        drawn: dict[str, Any] | None = None
        last = 0.0
        while not self._stop.wait(1.0 / self.max_fps):
            snapshot, now = self.snapshot, time.monotonic()
            if snapshot is drawn and now - last < self.idle_redraw_s:
                continue
            live = self.live
            if live is None:
                return
            live.update(render(snapshot), refresh=True)
            drawn, last = snapshot, now

    def live_update(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot

    def _print(self, text: str) -> None:
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def eval(self, record: dict[str, Any]) -> None:
        self._print(eval_line(record))

    def task_eval(self, record: dict[str, Any]) -> None:
        self._print(task_eval_line(record))

    def samples(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self._print(sample_line(r))

    def log(self, message: str) -> None:
        self._print(message)

    def close(self, summary: dict[str, Any]) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.live is not None:
            self.live.update(render(self.snapshot), refresh=True)
            self.live.stop()
            for line in summary_lines(summary):
                self.live.console.print(line, markup=False, highlight=False, soft_wrap=True)
            self.live = None


def _stderr_line(text: str) -> None:
    # Straight to the stream, never wrapped: log files and grep want one record per line.
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


class PlainSink(Sink):
    """One plain line per logged step on stderr, for log files that keep text well."""

    def __init__(self, write: Any = None) -> None:
        self.write = write or _stderr_line

    def step(self, record: dict[str, Any]) -> None:
        self.write(plain_line(record))

    def eval(self, record: dict[str, Any]) -> None:
        self.write(eval_line(record))

    def task_eval(self, record: dict[str, Any]) -> None:
        self.write(task_eval_line(record))

    def samples(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            self.write(sample_line(r))

    def log(self, message: str) -> None:
        self.write(message)

    def close(self, summary: dict[str, Any]) -> None:
        for line in summary_lines(summary):
            self.write(line)
