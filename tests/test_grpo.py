"""`llmctl grpo` end to end on a tiny chat model: TRL-named metrics, exact resume, LoRA, bad input."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chat_fixtures import (
    conversation_text,
    instruction_rows,
    pretrain_tiny,
    torch_threads,
    train_chat_tokenizer,
)
from typer.testing import CliRunner

from llmctl.cli.app import app

runner = CliRunner()
METRICS = (
    "reward",
    "reward_std",
    "rewards/number/mean",
    "frac_reward_zero_std",
    "completions/mean_length",
    "completions/clipped_ratio",
    "completions/mean_terminated_length",
    "entropy",
    "clip_ratio/region_mean",
    "rollout_tokens_per_sec",
)


def addition_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        rows.append({"prompt": f"Add {a} and {b}.", "answer": str(a + b)})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("grpo")
    texts = [conversation_text(c) for c in instruction_rows(200, seed=3)]
    tokenizer = train_chat_tokenizer(tmp / "tok" / "tokenizer.json", texts)
    with torch_threads(1):
        init = pretrain_tiny(tmp, tokenizer, texts, steps=4)
    data = write_jsonl(tmp / "prompts.jsonl", addition_rows(16, seed=4))
    return SimpleNamespace(tmp=tmp, init=init, data=data)


def grpo_args(setup: Any, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "grpo",
        "--init",
        str(setup.init),
        "--data",
        str(setup.data),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--reward",
        "number",
        "--grpo.num_generations=4",
        "--grpo.prompts_per_step=2",
        "--grpo.max_new_tokens=6",
        "--train.micro_batch_size=4",
        "--train.device=cpu",
        "--train.log_every=1",
        "--train.eval_every=0",
        "--train.sample_every=1",
        "--optim.lr=1e-3",
        "--optim.warmup_steps=0",
        "--checkpoint.every=0",
        "--telemetry.panel=off",
        "--telemetry.tensorboard=false",
        *extra,
    ]


def run_grpo_cli(
    setup: Any, out: Path, steps: int, *extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with torch_threads(1):
        result = runner.invoke(app, [*grpo_args(setup, out, steps, *extra), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return report, records


def train_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind", "train") == "train" and "loss" in r and "reward" in r]


def test_runs_and_writes_trl_named_metrics_and_samples(setup: Any) -> None:
    out = setup.tmp / "runs" / "basic"
    report, records = run_grpo_cli(setup, out, 2)
    assert report["status"] == "completed" and report["step"] == 2
    assert report["data"]["num_generations"] == 4 and report["data"]["rollouts"] == 2
    train = train_records(records)
    assert len(train) == 2
    for name in METRICS:
        assert name in train[-1], name
    assert 0 <= train[-1]["reward"] <= 1 and train[-1]["completions/mean_length"] > 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and {"number", "total", "advantage"} <= set(samples[0]["rewards"])
