"""Evaluation inside a training run reaches telemetry: task_eval records, TensorBoard tags, the panel and
the trackers, and periodic evaluation's bits per byte equal `llmctl eval --data` on the same windows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from chat_fixtures import torch_threads
from engine_fixtures import make_token_dir, tiny_args
from telemetry_fakes import counts, run_info
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import load_config
from llmctl.telemetry.events import EvalResult, TaskEvalResult
from llmctl.telemetry.reporter import Telemetry
from llmctl.telemetry.sinks import Sink

runner = CliRunner()
TASK_KEYS = {"n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "centered_acc"}


def _write_task(path: Path, n: int = 6) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {"context": f"x = {i}\n", "choices": ["def f():", "import os", "return x"], "label": i % 3}
            )
            + "\n"
            for i in range(n)
        )
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("evalloop")
    data = make_token_dir(tmp / "data")
    task = _write_task(tmp / "mini.jsonl")
    out = tmp / "run"
    args = tiny_args(
        **{
            "train.steps": 4,
            "train.eval_every": 2,
            "train.eval_batches": 1000,  # every full validation window, as `llmctl eval` scores them
            "train.eval_tasks": f"[{task}]",
            "telemetry.tensorboard": True,
        }
    )
    with torch_threads(1):
        result = runner.invoke(app, ["pretrain", "--data", str(data), "--out", str(out), *args, "--json"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {
        "data": data,
        "out": out,
        "records": records,
        "stderr": result.stderr,
        "report": json.loads(result.stdout),
    }


def test_task_evals_are_metrics_records_and_plain_lines(run: dict[str, Any]) -> None:
    tasks = [r for r in run["records"] if r["kind"] == "task_eval"]
    assert [r["step"] for r in tasks] == [2, 4]
    for r in tasks:
        assert set(r["tasks"]) == {"mini"}
        assert set(r["tasks"]["mini"]) == TASK_KEYS
        assert r["tasks"]["mini"]["n"] == 6
        assert 0.0 <= r["tasks"]["mini"]["acc"] <= 1.0
        assert r["centered_acc"] == pytest.approx(r["tasks"]["mini"]["centered_acc"])
        assert r["seconds"] > 0
    lines = [line for line in run["stderr"].splitlines() if line.startswith("[Tasks ")]
    assert [line.split("]")[0] for line in lines] == ["[Tasks 2", "[Tasks 4"]
    assert f"mini acc {tasks[0]['tasks']['mini']['acc']:.4f}" in lines[0] and "centered" in lines[0]


def test_tensorboard_has_task_and_bpb_tags(run: dict[str, Any]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run["out"] / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"eval/mini/acc", "eval/mini/acc_norm", "eval/centered_acc", "eval/bpb", "eval/loss"} <= tags
    tasks = [r for r in run["records"] if r["kind"] == "task_eval"]
    assert [e.step for e in acc.Scalars("eval/mini/acc")] == [2, 4]
    assert acc.Scalars("eval/mini/acc_norm")[-1].value == pytest.approx(
        tasks[-1]["tasks"]["mini"]["acc_norm"]
    )
    evals = [r for r in run["records"] if r["kind"] == "eval"]
    assert acc.Scalars("eval/bpb")[-1].value == pytest.approx(evals[-1]["bpb"], rel=1e-6)


def test_bpb_in_training_equals_llmctl_eval_on_the_same_windows(run: dict[str, Any]) -> None:
    from llmctl.tokens.shards import open_split, read_meta

    evals = [r for r in run["records"] if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    last = evals[-1]
    assert last["bpb"] > 0 and last["eval_bytes"] > 0
    assert run["report"]["eval"]["bpb"] == last["bpb"]
    # Training evaluates whole windows of seq_len + 1 tokens; `llmctl eval` also scores the shard's
    # partial tail window. --max-tokens stops it after the whole windows, so both see the same targets.
    shards = open_split(run["data"], "validation", read_meta(run["data"]))
    assert len(shards) == 1
    whole = (shards[0].num_tokens - 1) // 32
    with torch_threads(1):
        result = runner.invoke(
            app,
            [
                "eval",
                str(run["out"] / "checkpoints" / "latest"),
                "--data",
                str(run["data"]),
                "--split",
                "validation",
                "--device",
                "cpu",
                "--max-tokens",
                str(whole * 32),
                "--json",
            ],
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["windows"] == whole
    assert report["bytes"] == last["eval_bytes"]
    assert abs(report["bpb"] - last["bpb"]) < 1e-6
    # The training loss counts every target, the EOS between documents included; bpb leaves specials out.
    assert last["eval_tokens"] == whole * 32 > report["tokens"]


class _Recorder(Sink):
    def __init__(self) -> None:
        self.task_evals: list[dict[str, Any]] = []

    def task_eval(self, record: dict[str, Any]) -> None:
        self.task_evals.append(record)


def _result(step: int = 4) -> TaskEvalResult:
    figures = {"n": 10, "acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.6, "acc_norm_stderr": 0.1}
    return TaskEvalResult(
        step=step,
        tasks={"hellaswag": {**figures, "centered_acc": 1 / 3}, "piqa": {**figures, "centered_acc": 0.0}},
        centered_acc=1 / 6,
        seconds=1.5,
    )


def test_reporter_hands_task_evals_to_sinks_panel_and_trackers(tmp_path: Path) -> None:
    from rich.console import Console

    from llmctl.telemetry.panel import PlainSink, render
    from llmctl.telemetry.trackers import task_scalars

    lines: list[str] = []
    recorder = _Recorder()
    tel = Telemetry(
        load_config(None, ["--telemetry.panel=off"]), None, sinks=[recorder, PlainSink(lines.append)]
    )
    tel.start(run_info(None, total_steps=8))
    tel.step(counts(4))
    tel.eval(EvalResult(step=4, loss=2.0, perplexity=7.4, accuracy=0.3, tokens=64, bpb=1.25, bytes=200))
    tel.task_eval(_result())
    tel.flush()
    (record,) = recorder.task_evals
    assert record["kind"] == "task_eval" and record["step"] == 4
    assert record["tasks"]["piqa"]["acc_norm"] == 0.6 and record["centered_acc"] == pytest.approx(1 / 6)
    assert any(line.startswith("[Eval 4]") and "bpb 1.2500" in line for line in lines)
    assert "[Tasks 4] hellaswag acc 0.5000 acc_norm 0.6000 | piqa acc 0.5000" in "\n".join(lines)
    assert task_scalars(record) == {
        "eval/centered_acc": pytest.approx(1 / 6),
        "eval/hellaswag/acc": 0.5,
        "eval/hellaswag/acc_norm": 0.6,
        "eval/piqa/acc": 0.5,
        "eval/piqa/acc_norm": 0.6,
    }
    console = Console(width=160, record=True, color_system=None)
    console.print(render(tel._snapshot({})))
    text = console.export_text()
    assert "tasks @4" in text and "hellaswag 50.0%" in text and "bpb 1.2500" in text
    tel.close("completed")
