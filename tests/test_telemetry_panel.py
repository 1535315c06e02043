"""The live panel as a person sees it: rendered, and drawn on a pseudo-terminal by a running process."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from llmctl.telemetry.panel import render, sparkline, summary_lines

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "telemetry_fakes.py"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _snapshot(**extra: object) -> dict:
    return {
        "step": 120,
        "total_steps": 1000,
        "loss": 3.2457,
        "accuracy": 0.283,
        "lr": 1e-3,
        "grad_norm": 0.84,
        "tokens_per_sec": 12300.0,
        "tokens_total": 819200,
        "flops_batch": 2.34e12,
        "flops_total": 23.4e12,
        "tflops_per_sec": 0.61,
        "mfu": None,
        "rss_bytes": 1.5 * 2**30,
        "elapsed_s": 95.0,
        "eta_s": 37 * 60,
        "losses": (4.0, 3.8, 3.5, 3.3, 3.2457),
        "objective": "pretrain",
        "run": "demo",
        "device_label": "cpu · fp32",
        "eval": {"step": 100, "loss": 3.31, "perplexity": 27.4, "accuracy": 0.27},
        "sample": {"step": 100, "prompt": "Once upon a time", "output": " there was a little robot"},
        **extra,
    }


def _text(renderable: object, width: int = 130) -> str:
    console = Console(width=width, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(renderable)
    return console.export_text()


def test_render_shows_every_field() -> None:
    text = _text(render(_snapshot()))
    for expected in (
        "step 120/1000",
        "12.0%",
        "eta 37m",
        "loss 3.2457",
        "acc",
        "28.3%",
        "lr",
        "1.00e-03",
        "tokens/s",
        "12.3K",
        "819.2K",
        "2.34 TFLOPs",
        "23.4 TFLOPs",
        "610 GFLOP/s",
        "MFU",
        "n/a",
        "1.5 GiB RSS",
        "eval @100",
        "ppl 27.40",
        "sample @100",
        "little robot",
        "pretrain · demo",
    ):
        assert expected in text, expected


def test_render_gpu_fields() -> None:
    text = _text(
        render(
            _snapshot(
                mfu=0.412,
                gpu_util_pct=97.0,
                power_w=612.0,
                energy_j=3.6e6,
                mem_peak_alloc_bytes=30 * 2**30,
                gpu_mem_used_bytes=35 * 2**30,
            )
        )
    )
    for expected in ("41.2%", "97%", "612 W", "1 kWh", "30 GiB peak / 35 GiB used"):
        assert expected in text, expected


def test_sparkline_follows_the_trend() -> None:
    assert sparkline([4, 3, 2, 1]) == "█▆▃▁"
    assert sparkline([2.0, 2.0]) == "▄▄"
    assert sparkline([]) == ""


def test_end_of_run_report_spells_out_each_efficientllm_acronym() -> None:
    summary = {
        "status": "completed",
        "steps": 20,
        "tokens": 40960,
        "flops": 1.2e12,
        "wall_time_s": 3.0,
        "efficientllm": {"amu_gb": 0.5, "pcu_ratio": 0.9, "al_seconds": 0.1, "it_tokens_per_sec": 80.0},
    }
    lines = summary_lines(summary)
    figures = lines[-2]
    assert figures.startswith(
        "[EfficientLLM] AMU 0.50 GB | PCU 0.900 | AL 0.1000 s | TT n/a | ST n/a | IT 80 tok/s"
    )
    legend = lines[-1]
    for acronym, words in {
        "AMU": "average memory utilization",
        "PCU": "compute utilization",
        "AL": "average latency",
        "TT": "token throughput",
        "ST": "sample throughput",
        "IT": "inference throughput",
        "AEC": "average energy consumption",
    }.items():
        assert f" {acronym} {words}" in legend and f" {acronym} " in figures, acronym


def _run_on_pty(command: list[str], env_extra: dict[str, str]) -> str:
    """Run `command` with all three streams on a pseudo-terminal; return everything it drew."""
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update({"COLUMNS": "130", "LINES": "40", "TERM": "xterm-256color", **env_extra})
    proc = subprocess.Popen(command, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            proc.kill()
            raise AssertionError("no output for 120 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))[-3000:]
    return b"".join(chunks).decode("utf-8", "replace")


def _driver(run_dir: Path, steps: int) -> list[str]:
    return [sys.executable, str(DRIVER), str(run_dir), str(steps), "--sleep", "0.04"]


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine_fixtures import make_token_dir

    return make_token_dir(tmp_path_factory.mktemp("panel-data"))


@pytest.mark.slow
def test_live_panel_of_a_real_pretrain_on_a_terminal_updates_in_place(
    token_dir: Path, tmp_path: Path
) -> None:
    from engine_fixtures import tiny_args

    args = tiny_args(
        **{
            "train.steps": 32,
            "train.log_every": 8,
            "telemetry.enabled": True,
            "telemetry.panel": "auto",
            "train.eval_every": 16,
            "train.sample_every": 16,
            "train.sample_tokens": 8,
            "checkpoint.every": 16,
            "telemetry.interval": 0.2,
        }
    )
    raw = _run_on_pty(
        [
            sys.executable,
            "-m",
            "llmctl",
            "pretrain",
            "--data",
            str(token_dir),
            "--out",
            str(tmp_path / "run"),
            *args,
        ],
        {},
    )
    screen = ANSI.sub("", raw)
    assert "\x1b[2K" in raw  # Rich Live erasing and redrawing lines in place
    frames = [int(n) for n in re.findall(r"step (\d+)/32", screen)]
    # Redrawn as training went (at most 4 times a second, so a fast tiny run shows a few), ending at the last step.
    assert len({n for n in frames if 0 < n < 32}) >= 1 and frames[-1] == 32 and frames == sorted(frames)
    for field in (
        "loss",
        "acc",
        "lr",
        "grad norm",
        "tokens/s",
        "FLOPs/batch",
        "FLOPs total",
        "FLOP/s",
        "MFU",
        "n/a",
        "memory",
        "RSS",
        "energy",
        "eval @32",
        "ppl",
        "sample @32",
        "elapsed",
        "eta",
    ):
        assert field in screen, field
    assert "[Iter" not in screen  # plain lines are for non-terminals
    assert "checkpoint saved" in screen  # logs print above the panel
    assert "run completed at step 32" in screen and "[EfficientLLM] AMU" in screen
    assert (tmp_path / "run" / "metrics.jsonl").exists()


def test_synthetic_steps_on_a_terminal_draw_the_panel(tmp_path: Path) -> None:
    screen = ANSI.sub("", _run_on_pty(_driver(tmp_path / "run", 20), {}))
    assert len(set(re.findall(r"step (\d+)/20", screen))) >= 3
    assert "eval @20" in screen and "there was a cat" in screen and "[Iter" not in screen


def test_no_color_on_a_terminal_prints_plain_lines(tmp_path: Path) -> None:
    screen = ANSI.sub("", _run_on_pty(_driver(tmp_path / "run", 10), {"NO_COLOR": "1"}))
    assert "[Iter 5] Tokens: 2.048K tokens (batch), 10.24K tokens (total) | FLOPs:" in screen
    assert "╭" not in screen


def test_pipe_gets_one_plain_line_per_logged_step(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path / "run"), "20", "--sleep", "0.01"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    iters = [line for line in lines if line.startswith("[Iter ")]
    assert [line.split("]")[0] for line in iters] == ["[Iter 5", "[Iter 10", "[Iter 15", "[Iter 20"]
    assert all(" | loss " in line and " tok/s | lr " in line and "| eta " in line for line in iters)
    assert "[Eval 10] loss 4.0000 | ppl 54.60 | acc 25.0%" in lines
    assert "\x1b[" not in proc.stderr
    figures = [i for i, line in enumerate(lines) if line.startswith("[EfficientLLM] AMU ")]
    legends = [i for i, line in enumerate(lines) if line.startswith("[EfficientLLM legend] ")]
    assert len(figures) == 1 and legends == [figures[0] + 1]  # spelled out once per run, under the figures
