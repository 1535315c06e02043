"""What fine-tuning runs report: SFT names its perplexity for the replies it is of, DPO prints none, SFT samples
its own data's prompts (not pretraining's defaults), and every run states its validation set in tokens."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from chat_fixtures import conversation_text, instruction_rows, make_sft_tokens, pretrain_tiny, torch_threads
from typer.testing import CliRunner

from llmctl.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    tmp = tmp_path_factory.mktemp("ftreports")
    train, validation = instruction_rows(150, seed=1), instruction_rows(12, seed=2)
    with torch_threads(1):
        tokens, tokenizer = make_sft_tokens(tmp, train, validation)
        init = pretrain_tiny(tmp, tokenizer, [conversation_text(c) for c in train], steps=2)
    return SimpleNamespace(tmp=tmp, tokens=tokens, tokenizer=tokenizer, init=init, validation=validation)


def _sft(setup: SimpleNamespace, name: str, *extra: str) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    out = setup.tmp / "runs" / name
    args = [
        "sft",
        "--init",
        str(setup.init),
        "--data",
        str(setup.tokens),
        "--out",
        str(out),
        "--steps",
        "2",
        "--data.seq_len=64",
        "--train.micro_batch_size=4",
        "--train.eval_every=2",
        "--train.eval_batches=2",
        "--train.sample_every=2",
        "--train.sample_tokens=2",
        "--checkpoint.every=0",
        "--train.device=cpu",
        "--telemetry.tensorboard=false",
        "--telemetry.enabled=false",
        "--telemetry.panel=off",
        "--json",
        *extra,
    ]
    with torch_threads(1):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads(result.stdout), records, result.stderr


def test_sft_names_its_reply_perplexity_samples_its_own_prompts_and_counts_eval_tokens(setup: Any) -> None:
    report, records, log = _sft(setup, "default")
    (ev,) = [r for r in records if r.get("kind") == "eval"]
    # exp(loss over reply tokens only): the replies' perplexity, not the text's.
    assert "perplexity" not in ev and ev["reply_perplexity"] > 1
    assert "reply_perplexity" in report["eval"] and "perplexity" not in report["eval"]
    eval_line = next(line for line in log.splitlines() if line.startswith("[Eval 2]"))
    assert " | reply_ppl " in eval_line and " ppl " not in eval_line
    # The validation set in tokens, the same figure the start line, the eval record and --json give.
    start = next(line for line in log.splitlines() if line.startswith("sft: "))
    assert "eval_batches" not in start and f"eval_tokens={ev['eval_tokens']}" in start
    assert report["eval"]["eval_tokens"] == ev["eval_tokens"] > 0
    # Pretraining's default prompts ("Once upon a time", "def main(") are not chat prompts.
    samples = [
        json.loads(line) for line in (setup.tmp / "runs/default/samples.jsonl").read_text().splitlines()
    ]
    users = {c[0]["content"] for c in setup.validation}
    assert samples and all(s["prompt"] in users and s["source"] == "validation" for s in samples), samples
    # Prompts the user sets are sampled, before the data's own.
    _, _, _ = _sft(setup, "set", "--train.sample_prompts=[Say hi]")
    samples = [json.loads(line) for line in (setup.tmp / "runs/set/samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"] == "Say hi" and samples[0]["source"] == "fixed"


def test_sft_without_validation_samples_training_prompts(setup: Any) -> None:
    from llmctl.engine.sft import SFTObjective
    from llmctl.tokenizer.core import load_tokenizer

    tok = load_tokenizer(setup.tokenizer)
    objective = SFTObjective(
        setup.tokens,
        None,
        tok,
        seq_len=64,
        micro_batch=4,
        seed=0,
        eval_batches=2,
        prompts=[],
        val_split="none",
    )
    prompts = objective.sample_prompts()
    assert len(prompts) == 3 and {p.source for p in prompts} == {"train"}
    assert all(p.text and p.reference for p in prompts)


def test_eval_lines_and_tags_name_each_objectives_perplexity() -> None:
    from llmctl.engine.dpo import DPOObjective
    from llmctl.engine.pretrain import PretrainObjective
    from llmctl.engine.sft import MixedSFTObjective, SFTObjective
    from llmctl.telemetry.panel import eval_line, summary_lines
    from llmctl.telemetry.trackers import eval_scalars

    assert PretrainObjective.perplexity_name == "perplexity"
    assert SFTObjective.perplexity_name == MixedSFTObjective.perplexity_name == "reply_perplexity"
    assert DPOObjective.perplexity_name is None  # exp(DPO loss) is no perplexity
    pretrain = {"step": 1, "loss": 3.0, "perplexity": 20.09, "accuracy": 0.3}
    sft = {"step": 1, "loss": 0.5, "reply_perplexity": 1.65, "accuracy": 0.9}
    dpo = {"step": 1, "loss": 0.6, "accuracy": 0.7, "rewards/margins": 0.2, "rewards/accuracies": 0.7}
    assert eval_line(pretrain) == "[Eval 1] loss 3.0000 | ppl 20.09 | acc 30.0%"
    assert eval_line(sft) == "[Eval 1] loss 0.5000 | reply_ppl 1.65 | acc 90.0%"
    assert eval_line(dpo) == "[Eval 1] loss 0.6000 | acc 70.0% | margin 0.200 | reward acc 70.0%"
    assert eval_scalars(sft) == {"eval/loss": 0.5, "eval/reply_perplexity": 1.65, "eval/accuracy": 0.9}
    summary = {"status": "completed", "steps": 1, "tokens": 1, "flops": 1.0, "wall_time_s": 1.0}
    assert "final eval (step 1): loss 0.5000 | reply_ppl 1.65 | acc 90.0%" in summary_lines(
        {**summary, "final_eval": sft}
    )


def test_eval_tokens_name_the_same_validation_set_for_one_source_or_two(setup: Any) -> None:
    import shutil

    copy = setup.tmp / "pt_tokens_copy"
    if not copy.exists():
        shutil.copytree(setup.tmp / "pt_tokens", copy)
    lines = {}
    for name, data in (
        ("one", [str(setup.tmp / "pt_tokens")]),
        ("two", [f"{setup.tmp / 'pt_tokens'}:0.5", f"{copy}:0.5"]),
    ):
        args = [
            "pretrain",
            *[a for d in data for a in ("--data", d)],
            "--out",
            str(setup.tmp / "runs" / name),
        ]
        args += ["--steps", "1", "--data.seq_len=64", "--train.eval_batches=2", "--train.micro_batch_size=4"]
        args += ["--model.dim=64", "--model.n_layers=1", "--model.n_heads=2", "--model.n_kv_heads=1"]
        args += [
            "--train.eval_every=0",
            "--train.sample_every=0",
            "--checkpoint.every=0",
            "--train.device=cpu",
        ]
        args += ["--telemetry.tensorboard=false", "--telemetry.enabled=false", "--telemetry.panel=off"]
        with torch_threads(1):
            result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        lines[name] = next(line for line in result.stderr.splitlines() if line.startswith("pretrain: "))
    one = lines["one"].split("eval_tokens=")[1]
    assert "eval_batches" not in lines["one"] + lines["two"] and int(one) > 0
    # Each source of the mixture scores the validation windows a single source scores; the total adds them.
    assert lines["two"].endswith(f"eval_tokens={2 * int(one)} (pt_tokens {one} + pt_tokens_copy {one})"), (
        lines
    )
