"""Telemetry counters, records and sinks: what a user reads in the run directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from telemetry_fakes import FLOPS_PER_TOKEN, FakeClock, counts, run_info
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import TelemetryConfig, load_config
from llmctl.errors import LlmctlError
from llmctl.telemetry import Telemetry, inference_metrics
from llmctl.telemetry.counters import Counters
from llmctl.telemetry.events import EvalResult, SampleRecord
from llmctl.telemetry.panel import plain_line
from llmctl.telemetry.settings import apply_env_aliases


def _cfg(*overrides: str):
    return load_config(None, ["--telemetry.panel=off", "--telemetry.interval=3600", *overrides])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- counters ---------------------------------------------------------------------------------


def test_gradient_accumulation_counts_one_optimizer_step_as_one_step() -> None:
    # 4 micro-batches x 2 ranks x 8 sequences x 256 tokens, summed by the Trainer into one StepCounts.
    tokens = 4 * 2 * 8 * 256
    clock = FakeClock()
    c = Counters(FLOPS_PER_TOKEN, peak_flops=None, total_steps=10, clock=clock)
    for step in range(1, 4):
        clock.advance(0.8)
        fig = c.update(counts(step, tokens=tokens, step_time=0.8, samples=64))
    assert fig["tokens_batch"] == tokens
    assert fig["tokens_total"] == 3 * tokens
    assert fig["flops_batch"] == FLOPS_PER_TOKEN * tokens
    assert fig["flops_total"] == 3 * FLOPS_PER_TOKEN * tokens
    assert fig["samples_total"] == 3 * 64
    window = c.take_log_window()
    assert window["tokens_per_sec"] == pytest.approx(tokens / 0.8)
    assert window["al_seconds"] == pytest.approx(0.8)
    assert window["tflops_per_sec"] == pytest.approx(FLOPS_PER_TOKEN * tokens / 0.8 / 1e12)
    assert fig["eta_s"] == pytest.approx(7 * 0.8)


def test_resume_restores_totals_and_rates_use_only_the_new_window() -> None:
    clock = FakeClock()
    first = Counters(FLOPS_PER_TOKEN, None, total_steps=20, clock=clock)
    for step in range(1, 11):
        clock.advance(0.1)
        first.update(counts(step, step_time=0.1))
    state = first.state_dict()
    assert state["tokens"] == 10 * 2048 and state["step"] == 10

    clock.advance(3600)  # the job waited an hour in the queue before resuming
    second = Counters(FLOPS_PER_TOKEN, None, total_steps=20, start_step=10, clock=clock)
    second.load_state_dict(state)
    for step in range(11, 16):
        clock.advance(0.5)
        fig = second.update(counts(step, step_time=0.5))
    assert fig["tokens_total"] == 15 * 2048
    assert fig["flops_total"] == 15 * FLOPS_PER_TOKEN * 2048
    window = second.take_log_window()
    # Over this process's five slower steps, not 15 steps' tokens over 5 steps' time.
    assert window["tokens_per_sec"] == pytest.approx(2048 / 0.5)
    assert second.process_averages()["tokens_per_sec"] == pytest.approx(2048 / 0.5)
    assert fig["eta_s"] == pytest.approx(5 * 0.5)  # not inflated by the hour in the queue
    assert second.state_dict()["wall_seconds"] == pytest.approx(1.0 + 2.5)


def test_mfu_needs_a_known_peak() -> None:
    c = Counters(1e9, peak_flops=None)
    assert c.update(counts(1, step_time=1.0))["mfu"] is None
    c = Counters(1e9, peak_flops=4e12)
    assert c.update(counts(1, step_time=1.0))["mfu"] == pytest.approx(2048e9 / 4e12)


# -- plain lines ------------------------------------------------------------------------------


def test_plain_line_has_the_shape_of_the_users_notes() -> None:
    record = {
        "step": 10,
        "tokens_batch": 81920,
        "tokens_total": 819200,
        "flops_batch": 2.34e12,
        "flops_total": 23.4e12,
        "loss": 3.2457,
        "accuracy": 0.283,
        "tokens_per_sec": 12300,
        "lr": 1e-3,
        "eta_s": 37 * 60 + 10,
        "mfu": None,
    }
    assert plain_line(record) == (
        "[Iter 10] Tokens: 81.92K tokens (batch), 819.2K tokens (total) | FLOPs: 2.34 TFLOPs (batch), "
        "23.4 TFLOPs (total) | loss 3.2457 | acc 28.3% | 12.3K tok/s | lr 1.00e-03 | eta 37m"
    )
    assert plain_line({**record, "mfu": 0.412}).endswith("| eta 37m | mfu 41.2%")


# -- settings ---------------------------------------------------------------------------------


def test_efficientllm_environment_variables_are_aliases() -> None:
    env = {
        "EFFICIENTLLM_METRICS_ENABLED": "false",
        "EFFICIENTLLM_COLLECTION_INTERVAL": "0.5",
        "EFFICIENTLLM_HISTORY_SIZE": "64",
        "EFFICIENTLLM_LOG_INTERVAL": "3",
    }
    t = apply_env_aliases(TelemetryConfig(), env)
    assert (t.enabled, t.interval, t.history_size, t.log_interval) == (False, 0.5, 64, 3)
    # A value set in the config file or on the command line wins over the environment.
    assert apply_env_aliases(TelemetryConfig(log_interval=7), env).log_interval == 7
    with pytest.raises(LlmctlError, match="EFFICIENTLLM_COLLECTION_INTERVAL"):
        apply_env_aliases(TelemetryConfig(), {"EFFICIENTLLM_COLLECTION_INTERVAL": "often"})


def test_log_interval_from_environment_sets_the_record_cadence(tmp_path: Path) -> None:
    tel = Telemetry(_cfg(), tmp_path, environ={"EFFICIENTLLM_LOG_INTERVAL": "4"})
    tel.start(run_info(tmp_path, total_steps=10))
    for step in range(1, 11):
        tel.step(counts(step))
    tel.close("completed")
    steps = [r["step"] for r in _read_jsonl(tmp_path / "metrics.jsonl")]
    assert steps == [4, 8, 10]  # and always the last step


# -- sinks ------------------------------------------------------------------------------------


def _train(run_dir: Path, steps: range, total: int, cfg=None, state=None, start_step=0):
    tel = Telemetry(cfg or _cfg("--train.log_every=1"), run_dir)
    if state is not None:
        tel.load_state_dict(state)
    tel.start(run_info(run_dir, total_steps=total, start_step=start_step))
    for step in steps:
        tel.step(counts(step, tokens=2048 - step))  # vary the batch so sums are a real check
        if step % 4 == 0:
            tel.eval(EvalResult(step=step, loss=4.0 - step / 10, perplexity=50.0, accuracy=0.2, tokens=1024))
            tel.samples(
                [
                    SampleRecord(
                        step=step, prompt="Once upon a time", output=" a cat sat", new_tokens=3, seconds=0.01
                    )
                ]
            )
            tel.log(f"checkpoint step {step}")
    return tel


def test_run_directory_files_are_consistent(tmp_path: Path) -> None:
    tel = _train(tmp_path, range(1, 13), total=12)
    summary = tel.close("completed").values

    records = _read_jsonl(tmp_path / "metrics.jsonl")
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert {r["kind"] for r in records} == {"train", "eval", "sample"}
    assert len({tuple(r) for r in train}) == 1  # stable keys: every train record has the same ones
    for r in train:
        assert r["flops_batch"] == round(FLOPS_PER_TOKEN * r["tokens_batch"])
        assert all(not isinstance(v, str) for k, v in r.items() if k != "kind")
        assert r["mfu"] is None and r["gpu_util_pct"] is None  # CPU: no peak, no GPU
        assert r["rss_bytes"] > 0 and r["amu_gb"] > 0
    assert train[-1]["tokens_total"] == sum(r["tokens_batch"] for r in train)
    assert train[-1]["flops_total"] == sum(r["flops_batch"] for r in train)
    assert train[-1]["flops_per_token"] == FLOPS_PER_TOKEN

    assert summary["tokens"] == train[-1]["tokens_total"] and summary["flops"] == train[-1]["flops_total"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["tokens"] == summary["tokens"] and on_disk["status"] == "completed"
    assert on_disk["final_eval"]["step"] == 12 and on_disk["mfu"] is None
    assert on_disk["efficientllm"]["it_tokens_per_sec"] == pytest.approx(300.0)
    assert set(on_disk["efficientllm"]) >= {
        "amu_gb",
        "pcu_ratio",
        "al_seconds",
        "tt_tokens_per_param_per_sec",
        "st_samples_per_param_per_sec",
        "aec_watts",
    }

    samples = _read_jsonl(tmp_path / "samples.jsonl")
    assert [s["step"] for s in samples] == [4, 8, 12]
    assert set(samples[0]) == {"step", "prompt", "output", "reference", "source"}

    rows = list(csv.DictReader((tmp_path / "loss.csv").open()))
    assert [r["step"] for r in rows if r["kind"] == "train"] == [str(s) for s in range(1, 13)]
    assert [float(r["loss"]) for r in rows if r["kind"] == "eval"] == pytest.approx([3.6, 3.2, 2.8])


def test_tensorboard_has_the_tags_of_the_users_notes(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, range(1, 9), total=8).close("completed")
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    expected = {
        "tokens/batch",
        "tokens/total",
        "flops/batch",
        "flops/total",
        "efficientllm/amu_gb",
        "efficientllm/pcu_ratio",
        "efficientllm/al_seconds",
        "efficientllm/tt_tokens_per_param_per_sec",
        "efficientllm/st_samples_per_param_per_sec",
        "train/loss",
        "train/accuracy",
        "train/lr",
        "throughput/tokens_per_sec",
        "eval/loss",
        "eval/perplexity",
    }
    assert expected <= tags
    assert "throughput/mfu" not in tags  # n/a on CPU: no point is better than a made-up one
    totals = acc.Scalars("tokens/total")
    assert [e.step for e in totals] == list(range(1, 9))
    assert totals[-1].value == sum(2048 - s for s in range(1, 9))


def test_resume_keeps_each_step_once_in_every_file(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first = _train(tmp_path, range(1, 9), total=12)
    state_at_6 = None
    # The checkpoint was taken at step 6; the process then ran to step 8 and died.
    replay = Telemetry(_cfg("--train.log_every=1"), None)
    replay.start(run_info(None, total_steps=12))
    for step in range(1, 7):
        replay.step(counts(step, tokens=2048 - step))
    state_at_6 = replay.state_dict()
    first.close("failed")

    second = _train(tmp_path, range(7, 13), total=12, state=state_at_6, start_step=6)
    second.close("completed")
    train = [r for r in _read_jsonl(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 13))
    assert train[-1]["tokens_total"] == sum(r["tokens_batch"] for r in train)
    assert [r["step"] for r in _read_jsonl(tmp_path / "samples.jsonl")] == [4, 8, 12]
    rows = [r for r in csv.DictReader((tmp_path / "loss.csv").open()) if r["kind"] == "train"]
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("tokens/total")] == list(range(1, 13))


def test_rank_other_than_zero_writes_nothing_but_keeps_counting(tmp_path: Path) -> None:
    tel = Telemetry(_cfg(), tmp_path, is_rank0=False)
    tel.start(run_info(tmp_path, total_steps=3))
    for step in range(1, 4):
        tel.step(counts(step))
    assert tel.state_dict()["tokens"] == 3 * 2048
    assert tel.close("completed").values["tokens"] == 3 * 2048
    assert list(tmp_path.iterdir()) == []


def test_mfu_uses_the_configured_peak(tmp_path: Path) -> None:
    tel = Telemetry(_cfg("--train.log_every=1", "--telemetry.peak_tflops=0.001"), None)
    tel.start(run_info(None, total_steps=2))
    tel.step(counts(1, step_time=0.5))
    summary = tel.close("completed").values
    assert summary["mfu"] == pytest.approx(FLOPS_PER_TOKEN * 2048 / 0.5 / 1e9)
    assert summary["peak_source"] == "telemetry.peak_tflops"


def test_inference_metrics() -> None:
    assert inference_metrics(128, 0.5) == {
        "generated_tokens": 128,
        "seconds": 0.5,
        "it_tokens_per_sec": 256.0,
    }
    assert inference_metrics(0, 0.0)["it_tokens_per_sec"] is None


# -- plots ------------------------------------------------------------------------------------


def test_plot_command_writes_png_for_one_and_several_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _train(a, range(1, 9), total=8).close("completed")
    _train(b, range(1, 5), total=4).close("completed")
    runner = CliRunner()
    result = runner.invoke(app, ["plot", str(a)])
    assert result.exit_code == 0, result.output
    png = a / "plots" / "metrics.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in result.output and "loss" in result.output

    out = tmp_path / "compare.png"
    result = runner.invoke(app, ["plot", str(a), str(b), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["records"] == [8, 4] and "loss" in doc["charts"] and "MFU" not in doc["charts"]
    assert out.stat().st_size > 10_000

    result = runner.invoke(app, ["plot", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "error: run directory not found" in result.output


def test_plot_every_refreshes_latest_png_during_training(tmp_path: Path) -> None:
    tel = _train(tmp_path, range(1, 7), total=6, cfg=_cfg("--train.log_every=1", "--telemetry.plot_every=3"))
    tel.close("completed")
    assert (tmp_path / "plots" / "latest.png").read_bytes()[:4] == b"\x89PNG"


# -- a real `llmctl pretrain` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def token_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine_fixtures import make_token_dir

    return make_token_dir(tmp_path_factory.mktemp("telemetry-data"))


def _pretrain(token_dir: Path, run: Path, steps: int, *extra: str):
    from engine_fixtures import tiny_args

    args = tiny_args(
        **{
            "train.steps": steps,
            "train.log_every": 1,
            "telemetry.enabled": True,
            "telemetry.tensorboard": True,
            "train.eval_every": 4,
            "train.sample_every": 4,
            "train.sample_tokens": 6,
            "checkpoint.every": 4,
        }
    )
    return CliRunner().invoke(app, ["pretrain", "--data", str(token_dir), "--out", str(run), *args, *extra])


@pytest.mark.slow
def test_real_pretrain_run_directory_is_consistent_and_survives_a_resume(
    token_dir: Path, tmp_path: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    result = _pretrain(token_dir, run, 6)
    assert result.exit_code == 0, result.output
    assert (
        "[Iter 6] Tokens: 128 tokens (batch), 768 tokens (total)" in result.output
    )  # plain lines off a terminal
    result = _pretrain(token_dir, run, 10, "--resume", "auto")  # continues from the final step-6 checkpoint
    assert result.exit_code == 0, result.output

    estimate = CliRunner().invoke(app, ["flops", "estimate", "--model", str(run / "config.yaml"), "--json"])
    expected_fpt = json.loads(estimate.stdout)["flops_per_token_train"]
    train = [r for r in _read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 11))
    assert train[-1]["tokens_total"] == sum(r["tokens_batch"] for r in train)
    assert train[-1]["flops_total"] == sum(r["flops_batch"] for r in train)
    assert all(
        r["flops_per_token"] == expected_fpt and r["flops_batch"] == expected_fpt * r["tokens_batch"]
        for r in train
    )
    assert all(r["mfu"] is None for r in train)  # CPU: n/a, never a guess
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 10 and summary["start_step"] == 6
    assert summary["tokens"] == train[-1]["tokens_total"] and summary["steps_this_process"] == 4
    assert summary["final_eval"]["step"] == 10 and summary["mfu"] is None
    assert summary["efficientllm"]["it_tokens_per_sec"] > 0
    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("tokens/total")] == list(range(1, 11))
    assert {"flops/batch", "efficientllm/tt_tokens_per_param_per_sec", "eval/loss"} <= set(
        acc.Tags()["scalars"]
    )
    plot = CliRunner().invoke(app, ["plot", str(run)])
    assert plot.exit_code == 0 and (run / "plots" / "metrics.png").stat().st_size > 10_000
