"""`llmctl eval` on generative tasks: batched decoding gives the answers one-at-a-time decoding gave, and
`--reward` / `--num-samples` score pass@1 and pass@k with eval/rewards.py's rewards."""

from __future__ import annotations

import json
from pathlib import Path
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
from llmctl.eval.generative import pass_at_k, score_generations
from llmctl.eval.model_io import open_model
from llmctl.eval.tasks import GenerateItem

runner = CliRunner()
QUESTIONS = ["Add 2 and 3.", "Name a colour.", "Say hi", "What is 7 times 6?", "Count to three.", "Why?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("evalgen")
    rows = instruction_rows(200, seed=7)
    texts = [conversation_text(c) for c in rows]
    tok = train_chat_tokenizer(tmp / "tok" / "tokenizer.json", [m["content"] for c in rows for m in c])
    with torch_threads(1):
        ckpt = pretrain_tiny(tmp, tok, texts, steps=30)
    return {"tmp": tmp, "ckpt": ckpt}


def _invoke(args: list[str]) -> Any:
    with torch_threads(1):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _one_at_a_time(loaded: Any, items: list[GenerateItem], max_new_tokens: int) -> list[str]:
    """Each item's greedy reply decoded alone, as eval did before batching."""
    from llmctl.eval.generative import _prompter
    from llmctl.infer.generate import generate

    to_ids, stops = _prompter(loaded)
    out = []
    for item in items:
        gen = generate(
            loaded.model, to_ids(item), max_new_tokens=max_new_tokens, temperature=0.0, stop_ids=stops
        )
        out.append(loaded.tokenizer.decode(gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids))
    return out


def test_batched_generative_eval_equals_one_item_at_a_time(tiny: dict[str, Any]) -> None:
    items = [GenerateItem(answer="x", prompt=q) for q in QUESTIONS]
    items.append(GenerateItem(answer="x", messages=[{"role": "user", "content": "Tell me more"}]))
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        want = _one_at_a_time(loaded, items, 12)
        batched = score_generations(loaded, items, max_new_tokens=12, batch_size=4)
        single = score_generations(loaded, items, max_new_tokens=12, batch_size=1)
    assert [r["output"] for r in batched.items] == want
    assert [r["output"] for r in single.items] == want
    assert len(set(want)) > 1  # the prompts are answered differently, so rows cannot be mixed up unseen


def _task(tmp: Path, tiny: dict[str, Any]) -> tuple[Path, list[str]]:
    """Four items whose answers make items 0 and 2 right at temperature 0 (their greedy replies)."""
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        probe = score_generations(
            loaded, [GenerateItem(answer="", prompt=q) for q in QUESTIONS[:4]], max_new_tokens=8
        )
    replies = [r["output"] for r in probe.items]
    answers = [replies[0], replies[1] + " no", replies[2], replies[3] + " no"]
    task = tmp / "gen.jsonl"
    task.write_text(
        "".join(
            json.dumps({"prompt": q, "answer": a}) + "\n" for q, a in zip(QUESTIONS[:4], answers, strict=True)
        )
    )
    return task, replies


def test_reward_pass_at_1_at_temperature_0(tiny: dict[str, Any], tmp_path: Path) -> None:
    task, _ = _task(tmp_path, tiny)
    base = [
        "eval",
        str(tiny["ckpt"]),
        "--task",
        str(task),
        "--device",
        "cpu",
        "--max-new-tokens",
        "8",
        "--json",
    ]
    report = _invoke([*base, "--reward", "exact", "--reward", r"format:[\s\S]*:0.5"])
    result = report["tasks"]["gen"]
    assert result["pass@1"] == pytest.approx(1.0)  # format:[\s\S]* scores every reply 0.5 > 0
    assert (
        result["rewards/exact/mean"] == pytest.approx(0.5) and result[r"rewards/format:[\s\S]*/mean"] == 1.0
    )
    assert result["reward"] == pytest.approx(0.5 + 0.5)
    only_exact = _invoke([*base, "--reward", "exact", "--batch-size", "3"])["tasks"]["gen"]
    assert only_exact["pass@1"] == pytest.approx(0.5) and only_exact["exact_match"] == pytest.approx(0.5)
    assert only_exact["num_samples"] == 1


def test_reward_pass_at_k_with_num_samples(tiny: dict[str, Any], tmp_path: Path) -> None:
    task, _ = _task(tmp_path, tiny)
    items_out = tmp_path / "items.jsonl"
    args = ["eval", str(tiny["ckpt"]), "--task", str(task), "--device", "cpu", "--max-new-tokens", "6"]
    args += ["--reward", "exact", "--num-samples", "4", "--temperature", "1.5", "--json"]
    result = _invoke([*args, "--items-out", str(items_out)])["tasks"]["gen"]
    rows = [json.loads(line) for line in items_out.read_text().splitlines()]
    assert all(len(r["samples"]) == 4 and len(r["scores"]) == 4 for r in rows)
    passed = [sum(s > 0 for s in r["scores"]) for r in rows]
    assert result["pass@1"] == pytest.approx(sum(c / 4 for c in passed) / 4)
    assert result["pass@4"] == pytest.approx(sum(c > 0 for c in passed) / 4)
    assert result["pass@4"] >= result["pass@1"]
    again = _invoke(args)["tasks"]["gen"]  # seeded: the same samples again
    assert again["pass@1"] == result["pass@1"] and again["reward"] == result["reward"]


def test_pass_at_k_is_chen_et_al_unbiased_estimate() -> None:
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0


def test_reward_bad_input_is_an_error_with_a_hint(tiny: dict[str, Any], tmp_path: Path) -> None:
    task = tmp_path / "g.jsonl"
    task.write_text(json.dumps({"prompt": "Say hi", "answer": "hi"}) + "\n")
    module = tmp_path / "bad_reward.py"
    module.write_text("def score(completion, answer, prompt):\n    raise RuntimeError('boom')\n")
    base = ["eval", str(tiny["ckpt"]), "--task", str(task), "--device", "cpu", "--max-new-tokens", "4"]
    cases = [
        (["--reward-module", f"{module}:score"], "item 1: reward bad_reward.py:score failed on row 0"),
        (["--reward", "nope"], "unknown reward 'nope'"),
        (["--num-samples", "3"], "--num-samples 3 at temperature 0"),
    ]
    for extra, message in cases:
        with torch_threads(1):
            result = runner.invoke(app, [*base, *extra])
        assert result.exit_code == 2, result.output
        assert message in result.stderr and "hint:" in result.stderr


def test_several_checkpoints_compare_pass_at_1_and_reward(tiny: dict[str, Any], tmp_path: Path) -> None:
    task, _ = _task(tmp_path, tiny)
    ckpt = str(tiny["ckpt"])
    args = ["eval", ckpt, ckpt, "--task", str(task), "--device", "cpu", "--max-new-tokens", "8"]
    doc = _invoke([*args, "--reward", "exact", "--json"])
    rows = {r["metric"]: r for r in doc["comparison"]["rows"]}
    assert rows["gen pass@1"]["values"] == [0.5, 0.5] and rows["gen pass@1"]["deltas"] == [None, 0.0]
    assert rows["gen reward"]["values"] == [0.5, 0.5]
