"""`llmctl dpo` end to end on a tiny model: sanity losses, precompute = live, packed = padded, resume, metrics."""

from __future__ import annotations

import contextlib
import json
import math
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
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
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)


def corrupt(reply: str, rng: random.Random) -> str:
    """A wrong answer: digits changed, words reversed or shuffled."""
    if reply.isdigit():
        return str(int(reply) + rng.randint(1, 5))
    words = reply.split()
    return " ".join(reversed(words)) + "x" if len(words) > 1 else reply[::-1] + "x"


def preference_rows(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for conv in instruction_rows(count, seed=seed):
        reply = conv[1]["content"]
        rows.append(
            {
                "prompt": [conv[0]],
                "chosen": [conv[1]],
                "rejected": [{"role": "assistant", "content": corrupt(reply, rng)}],
            }
        )
    return rows


def write_pairs_parquet(root: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, rows in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows), root / split / "part-00000.parquet")
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("dpo")
    train, validation = preference_rows(96, seed=1), preference_rows(24, seed=2)
    texts = [conversation_text(r["prompt"] + r["chosen"] + r["rejected"]) for r in train + validation]
    tokenizer = train_chat_tokenizer(tmp / "tok" / "tokenizer.json", texts)
    raw = write_pairs_parquet(tmp / "raw", {"train": train, "validation": validation})
    result = runner.invoke(
        app,
        [
            "tokenize",
            "--mode",
            "dpo",
            "--profile",
            "chat",
            "--data",
            str(raw),
            "--tokenizer",
            str(tokenizer),
            "--out",
            str(tmp / "tokens"),
            "--max-len",
            "64",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    with torch_threads(1):
        init = pretrain_tiny(tmp, tokenizer, texts, steps=10)
    return SimpleNamespace(tmp=tmp, raw=raw, tokens=tmp / "tokens", tokenizer=tokenizer, init=init)


def dpo_args(setup: Any, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "dpo",
        "--init",
        str(setup.init),
        "--data",
        str(setup.tokens),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--data.seq_len=64",
        "--train.micro_batch_size=4",
        "--optim.lr=1e-3",
        "--optim.warmup_steps=0",
        "--train.eval_every=0",
        "--train.sample_every=0",
        "--train.eval_batches=2",
        "--checkpoint.every=0",
        "--train.log_every=1",
        "--train.device=cpu",
        "--telemetry.tensorboard=false",
        "--telemetry.enabled=false",
        "--telemetry.panel=off",
        "--json",
        *extra,
    ]


def run_dpo_cli(
    setup: Any, out: Path, steps: int, *extra: str
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    with torch_threads(1):
        result = runner.invoke(app, dpo_args(setup, out, steps, *extra))
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads(result.stdout), records


def train_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "train"]


def test_first_step_loss_is_ln2_and_metrics_have_trl_names(setup: Any) -> None:
    report, records = run_dpo_cli(setup, setup.tmp / "runs" / "ln2", 2, "--train.eval_every=2")
    first = train_records(records)[0]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    evals = [r for r in records if r.get("kind") == "eval"]
    assert evals, records
    assert evals[-1]["bpb"] is None  # bits per byte apply to pretraining text only
    for record in (first, evals[-1]):
        for key in METRICS:
            assert isinstance(record[key], float) and math.isfinite(record[key]), key
    assert report["data"]["reference_precompute"]["cached"] is False
    assert list((setup.tmp / "runs" / "ln2" / "reference").glob("*/train.npy"))


def test_first_step_ipo_loss_is_one_over_four_beta_squared(setup: Any) -> None:
    _, records = run_dpo_cli(setup, setup.tmp / "runs" / "ipo", 1, "--dpo.loss=ipo", "--dpo.beta=0.5")
    assert train_records(records)[0]["loss"] == pytest.approx(1 / (4 * 0.5**2), abs=1e-4)


def test_precomputed_and_live_reference_give_the_same_losses(setup: Any) -> None:
    _, pre = run_dpo_cli(setup, setup.tmp / "runs" / "pre", 4, "--data.packing=true")
    _, live = run_dpo_cli(setup, setup.tmp / "runs" / "live", 4, "--data.packing=true", "--dpo.ref_mode=live")
    a, b = [r["loss"] for r in train_records(pre)], [r["loss"] for r in train_records(live)]
    assert len(a) == 4 and a[-1] != pytest.approx(math.log(2), abs=1e-4)  # training moved the policy
    np.testing.assert_allclose(a, b, atol=1e-5)
    # The live reference's forward pass is counted: 4/3 of the policy's training FLOPs per token.
    per_token = [
        train_records(r)[0]["flops_batch"] / train_records(r)[0]["tokens_batch"] for r in (pre, live)
    ]
    assert per_token[1] == pytest.approx(per_token[0] * 4 / 3, rel=1e-6)


def test_packed_log_probs_equal_unpacked(setup: Any) -> None:
    import torch

    from llmctl.engine.dpo_loss import sequence_logps
    from llmctl.engine.dpo_reference import pair_batch
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.tokens.pair_batches import collate_pairs, padded_layout, plan_packed_pairs
    from llmctl.tokens.pairs import open_pairs

    model, _, _ = load_for_inference(setup.init)
    pairs = open_pairs(setup.tokens, "train")
    plan = plan_packed_pairs(pairs.sequence_lengths(), np.arange(12), 3, 64, np.random.default_rng(0))
    layout = next(b for b in plan if len({p for row in b for p, _ in row}) >= 3 and sum(map(len, b)) > 3)
    order = list(dict.fromkeys(p for row in layout for p, _ in row))
    packed = pair_batch(collate_pairs(pairs, layout, 0, 64), True, None)
    padded = pair_batch(collate_pairs(pairs, padded_layout(order), 0, None), False, None)
    assert packed.inputs.shape[0] == 3 and padded.inputs.shape[0] == 2 * len(order)
    assert packed.pair_ids.tolist() == padded.pair_ids.tolist()
    with torch.no_grad():
        a, ca, _ = sequence_logps(model, packed, contextlib.nullcontext, 2 * len(order))
        b, cb, _ = sequence_logps(model, padded, contextlib.nullcontext, 2 * len(order))
    assert torch.equal(ca, cb) and (ca > 0).all()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_resume_continues_exactly(setup: Any) -> None:
    # A constant learning rate: the 2-step run's schedule is then the 4-step run's first half.
    flags = ("--data.packing=true", "--optim.schedule=constant", "--checkpoint.every=2")
    _, straight = run_dpo_cli(setup, setup.tmp / "runs" / "straight", 4, *flags)
    run_dpo_cli(setup, setup.tmp / "runs" / "halves", 2, *flags)
    _, resumed = run_dpo_cli(setup, setup.tmp / "runs" / "halves", 4, *flags, "--resume=auto")
    assert (
        "resumed" in (setup.tmp / "runs" / "halves" / "metrics.jsonl").read_text()
        or len(train_records(resumed)) >= 4
    )
    a = [r["loss"] for r in train_records(straight)]
    b = {r["step"]: r["loss"] for r in train_records(resumed)}
    assert [b[s] for s in (1, 2, 3, 4)] == pytest.approx(a, abs=1e-6)


def test_bad_beta_is_an_error(setup: Any) -> None:
    result = runner.invoke(app, dpo_args(setup, setup.tmp / "runs" / "bad", 1, "--dpo.beta=0"))
    assert result.exit_code == 2
    assert "dpo.beta must be positive" in result.output


def test_count_and_inspect_read_the_mode(setup: Any) -> None:
    result = runner.invoke(app, ["count", str(setup.tokens), "--json"])
    assert result.exit_code == 0, result.output
    counted = json.loads(result.stdout)
    assert counted["mode"] == "dpo" and counted["splits"]["train"]["pairs"] == 96
    assert counted["total"]["chosen_tokens"] > 0 and counted["total"]["prompt_tokens"] > 0
    result = runner.invoke(app, ["inspect", str(setup.tokens), "--index", "3", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)["pairs"][0]
    assert shown["prompt"]["trained_tokens"] == 0 and shown["chosen"]["trained_tokens"] > 0
    assert shown["chosen"]["text"] != shown["rejected"]["text"]
    result = runner.invoke(app, ["inspect", str(setup.tokens), "--index", "3", "--no-interactive"])
    assert result.exit_code == 0 and "rejected" in result.output


def test_tokenize_reports_dropped_and_unequal_pairs(setup: Any, tmp_path: Path) -> None:
    long_prompt = "alpha bravo charlie delta " * 20
    rows = [
        {
            "prompt": [{"role": "user", "content": long_prompt}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
        {
            "prompt": [{"role": "user", "content": "Say it."}],
            "chosen": [{"role": "assistant", "content": "ok"}],
            "rejected": [{"role": "assistant", "content": "echo foxtrot golf hotel india " * 8}],
        },
        {
            "prompt": [{"role": "user", "content": "Short."}],
            "chosen": [{"role": "assistant", "content": "yes"}],
            "rejected": [{"role": "assistant", "content": "no"}],
        },
    ]
    raw = write_pairs_parquet(tmp_path / "raw", {"train": rows})
    result = runner.invoke(
        app,
        [
            "tokenize",
            "--mode",
            "dpo",
            "--data",
            str(raw),
            "--tokenizer",
            str(setup.tokenizer),
            "--out",
            str(tmp_path / "tok"),
            "--max-len",
            "24",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "tok" / "meta.json").read_text())
    s = meta["splits"]["train"]
    assert s["pairs"] == 2 and s["dropped_prompt_too_long"] == 1 and s["dropped_rows"] == [0]
    assert s["truncated_unequally"] == 1 and s["unequal_rows"] == [1]
    assert "cut by different amounts" in result.output and "prompt alone fills" in result.output
    from llmctl.tokens.pairs import open_pairs

    (p, pm), (c, cm), (r, rm) = open_pairs(tmp_path / "tok", "train").sides(0)  # row 0 was dropped
    assert len(p) + len(r) == 24 and pm.sum() == 0 and cm[0] == 0 and cm[1:].all()


def test_falling_chosen_warning_rule() -> None:
    from llmctl.engine.dpo_loss import falling_chosen

    assert falling_chosen([(-1.0, 0.1), (-1.5, 0.2), (-2.0, 0.4), (-2.6, 0.7)])
    assert not falling_chosen([(-1.0, 0.1), (-0.9, 0.2), (-2.0, 0.4), (-2.6, 0.7)])
    assert not falling_chosen([(-1.0, 0.1), (-1.5, 0.2)])


def test_matches_trl_dpo_computation(setup: Any, tmp_path: Path) -> None:
    """llmctl's per-pair log-probs, loss and reward metrics equal TRL's on the same token ids, for sigmoid and
    IPO. TRL's DPOTrainer._compute_loss runs as is, on the exported transformers models with TRL's fused LM
    head; only DPOTrainer.__init__ (datasets, accelerate, a Trainer) is skipped by setting its attributes."""
    trl = pytest.importorskip("trl")
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from llmctl.engine.dpo_loss import preference_losses, sequence_logps
    from llmctl.engine.dpo_reference import pair_batch
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.tokens.pair_batches import collate_pairs, padded_layout
    from llmctl.tokens.pairs import open_pairs

    run_dpo_cli(setup, tmp_path / "policy", 3, "--optim.lr=3e-3", "--checkpoint.every=0")
    policy_ckpt, ref_ckpt = tmp_path / "policy" / "checkpoints" / "latest", setup.init
    hf = {}
    for name, ckpt in (("policy", policy_ckpt), ("ref", ref_ckpt)):
        result = runner.invoke(
            app,
            [
                "export",
                str(ckpt),
                "--format",
                "hf",
                "--out",
                str(tmp_path / f"hf-{name}"),
                "--dtype",
                "float32",
            ],
        )
        assert result.exit_code == 0, result.output
        hf[name] = AutoModelForCausalLM.from_pretrained(tmp_path / f"hf-{name}", dtype=torch.float32).eval()
    add_fused_lm_head(hf["policy"], outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    add_fused_lm_head(hf["ref"])

    pairs = open_pairs(setup.tokens, "train")
    order = list(range(6))
    batch = pair_batch(collate_pairs(pairs, padded_layout(order), 0, None), False, None)
    # TRL's batch: [chosen rows; rejected rows] of whole sequences, right-padded, completion_mask on the reply.
    width = batch.inputs.shape[1] + 1
    input_ids = torch.zeros((2 * len(order), width), dtype=torch.long)
    attention = torch.zeros_like(input_ids)
    completion = torch.zeros_like(input_ids)
    for row, (p, side) in enumerate([(p, 0) for p in order] + [(p, 1) for p in order]):
        (pi, pm), chosen, rejected = pairs.sides(p)
        ids, mask = (
            np.concatenate([pi, (chosen, rejected)[side][0]]),
            np.concatenate([pm, (chosen, rejected)[side][1]]),
        )
        input_ids[row, : len(ids)] = torch.from_numpy(ids)
        attention[row, : len(ids)] = 1
        completion[row, : len(ids)] = torch.from_numpy(mask)
    inputs = {"input_ids": input_ids, "attention_mask": attention, "completion_mask": completion}

    with torch.no_grad():
        labels = input_ids.masked_fill(completion == 0, -100)
        trl_logps = hf["policy"](
            input_ids=input_ids, attention_mask=attention, labels=labels, fused_lm_head=True
        ).log_probs.sum(1)
        policy, _, _ = load_for_inference(policy_ckpt)
        ref, _, _ = load_for_inference(ref_ckpt)
        ours, counts, logit_sums = sequence_logps(policy, batch, contextlib.nullcontext, 2 * len(order))
        ref_ours, _, _ = sequence_logps(ref, batch, contextlib.nullcontext, 2 * len(order))
    # Ours interleave (chosen, rejected) per pair; TRL stacks chosen rows then rejected rows.
    torch.testing.assert_close(torch.cat([ours[0::2], ours[1::2]]), trl_logps.float(), atol=1e-4, rtol=0)

    class Accelerator:
        device = torch.device("cpu")

        @staticmethod
        def gather(x: Any) -> Any:
            return x

        gather_for_metrics = gather

    for loss, beta in (("sigmoid", 0.1), ("ipo", 0.5)):
        trainer = object.__new__(trl.DPOTrainer)
        for key, value in {
            "model": hf["policy"],
            "ref_model": hf["ref"],
            "accelerator": Accelerator(),
            "beta": beta,
            "loss_types": [loss],
            "loss_weights": [1.0],
            "ld_alpha": None,
            "f_divergence_type": "reverse_kl",
            "precompute_ref_logps": False,
            "aux_loss_enabled": False,
            "use_weighting": False,
            "label_smoothing": 0.0,
            "_metrics": {
                "train": __import__("collections").defaultdict(list),
                "eval": __import__("collections").defaultdict(list),
            },
            "_total_train_tokens": 0,
            "_tp_size": 1,
            "args": SimpleNamespace(gradient_checkpointing_kwargs=None),
        }.items():
            object.__setattr__(trainer, key, value)
        with torch.no_grad():
            trl_loss = trainer._compute_loss(hf["policy"], inputs, return_outputs=False)
        metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}
        losses, chosen_r, rejected_r = preference_losses(
            ours[0::2],
            ours[1::2],
            ref_ours[0::2],
            ref_ours[1::2],
            beta=beta,
            loss=loss,
            chosen_tokens=counts[0::2],
            rejected_tokens=counts[1::2],
        )
        mine = {
            "rewards/chosen": chosen_r.mean(),
            "rewards/rejected": rejected_r.mean(),
            "rewards/margins": (chosen_r - rejected_r).mean(),
            "rewards/accuracies": (chosen_r > rejected_r).float().mean(),
            "logps/chosen": ours[0::2].mean(),
            "logps/rejected": ours[1::2].mean(),
            "logits/chosen": logit_sums[0] / logit_sums[1],
            "logits/rejected": logit_sums[2] / logit_sums[3],
        }
        assert float(losses.mean()) == pytest.approx(float(trl_loss), abs=1e-4), loss
        for key in METRICS:
            assert float(mine[key]) == pytest.approx(metrics[key], abs=1e-4), (loss, key)
        assert abs(float(mine["rewards/margins"])) > 1e-3  # the policy moved: the comparison is not of zeros


def test_dpo_figures_reach_tensorboard_tags_and_the_panel() -> None:
    from llmctl.telemetry.panel import eval_line, plain_line
    from llmctl.telemetry.sinks import _objective_tags

    record = {
        "step": 5,
        "loss": 0.6,
        "perplexity": 1.8,
        "accuracy": 0.75,
        "rewards/margins": 0.25,
        "rewards/accuracies": 0.75,
        "logps/chosen": -3.0,
        "tokens_batch": 10,
        "tokens_total": 50,
        "flops_batch": 1e9,
        "flops_total": 5e9,
        "lr": 1e-4,
    }
    assert _objective_tags("eval", record) == {
        "rewards/margins": "eval/rewards/margins",
        "rewards/accuracies": "eval/rewards/accuracies",
        "logps/chosen": "eval/logps/chosen",
    }
    assert plain_line(record).endswith("| margin 0.250 | reward acc 75.0%")
    assert "reward acc 75.0%" in eval_line(record)
    assert "margin" not in eval_line({k: v for k, v in record.items() if "/" not in k})


def _pair_needs(setup: Any) -> np.ndarray:
    from llmctl.tokens.pairs import open_pairs

    return np.sort(open_pairs(setup.tokens, "train").sequence_lengths().max(axis=1) - 1)


def test_most_pairs_too_long_is_an_error_naming_the_seq_len(setup: Any) -> None:
    needs = _pair_needs(setup)
    seq_len = int(needs[len(needs) // 3]) - 1  # two thirds or more cannot fit
    dropped = int((needs > seq_len).sum())
    result = runner.invoke(app, dpo_args(setup, setup.tmp / "runs" / "short", 1, f"--data.seq_len={seq_len}"))
    assert result.exit_code == 2, result.output
    assert f"error: {dropped} of {len(needs)} training pairs are longer than --data.seq_len={seq_len}" in (
        result.stderr
    )
    assert f"--data.seq_len={int(needs[-1])}" in result.stderr and "Traceback" not in result.output
    assert not (setup.tmp / "runs" / "short" / "reference").exists()  # refused before the reference pass


def test_some_pairs_too_long_warn_and_the_reference_pass_shows_progress(
    setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import llmctl.cli._progress as progress

    monkeypatch.setattr(progress, "TOKEN_PLAIN_EVERY_S", 0.0)  # a plain line per micro-batch
    needs = _pair_needs(setup)
    seq_len = int(needs[-8]) - 1
    dropped = int((needs > seq_len).sum())
    out = setup.tmp / "runs" / "warned"
    with torch_threads(1):
        result = runner.invoke(app, dpo_args(setup, out, 1, f"--data.seq_len={seq_len}"))
    assert result.exit_code == 0, result.output
    assert (
        f"warning: {dropped} of {len(needs)} training pairs are longer than --data.seq_len={seq_len}"
        f" (prompt + reply) and will not be trained; --data.seq_len={int(needs[-1])} would keep them all"
    ) in result.stderr
    lines = result.stderr.splitlines()
    usable = len(needs) - dropped
    assert f"reference log-probs: train, {usable} pairs (forward passes of the reference, once)" in lines
    assert f"reference log-probs: train 8/{usable} pairs" in result.stderr
    assert any(line.startswith("reference log-probs: done in") for line in lines)
    assert "reference log-probs" not in result.stdout


def test_a_huge_reply_is_cut_before_encoding(setup: Any, tmp_path: Path) -> None:
    from peak_memory import run_llmctl_measured

    rows = preference_rows(6, seed=3)
    huge = "the cat sat on the mat " * (50_000_000 // 23)  # about 50 MB of one reply
    rows[2]["chosen"] = [{"role": "assistant", "content": huge}]
    raw = write_pairs_parquet(tmp_path / "raw", {"train": rows})
    del huge, rows
    args = ["tokenize", "--mode", "dpo", "--profile", "chat", "--data", str(raw), "--tokenizer"]
    args += [str(setup.tokenizer), "--out", str(tmp_path / "tokens"), "--max-len", "64", "--json"]
    code, stderr, peak_mib = run_llmctl_measured(args)
    assert code == 0, stderr
    split = json.loads((tmp_path / "tokens" / "meta.json").read_text())["splits"]["train"]
    assert split["pairs"] == 6 and split["cut_before_encoding"] == 1 and split["truncated"] >= 1
    # About 325 MiB: the row is still read whole (~50 MB as Arrow data, again as a Python string). Encoding it
    # whole, as before, took 2 GiB for a 10 MB reply, so about 10 GiB here.
    assert peak_mib < 600, peak_mib
    from llmctl.tokens.pairs import open_pairs

    (p, _), (chosen, mask), _ = open_pairs(tmp_path / "tokens", "train").sides(2)
    assert len(p) + len(chosen) == 64 and mask[-1] == 1
    # The kept tokens are the reply's first ones, exactly as encoding a long (not huge) copy whole gives them.
    from llmctl.tokenizer.chat import get_profile
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.pairs import encode_pair, text_bound

    tok = load_tokenizer(setup.tokenizer)
    long = "the cat sat on the mat " * (2 * text_bound(64, tok) // 23)
    pair = {
        "prompt": preference_rows(6, seed=3)[2]["prompt"],
        "chosen": [{"role": "assistant", "content": long}],
    }
    pair["rejected"] = pair["chosen"]
    _, (whole, _), _ = encode_pair(pair, tok, get_profile("chat"))
    assert chosen.tolist() == whole[: len(chosen)]


def test_reference_progress_is_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import llmctl.cli._progress as progress
    from llmctl.engine.dpo_reference import ReferenceProgress

    monkeypatch.setattr(progress, "stderr_is_plain", lambda: False)
    with progress.PairProgress() as bar:
        bar.update(ReferenceProgress("train", 8, 96, 0.5))
        task = bar._bar.tasks[0]
        assert (task.completed, task.total) == (8, 96) and "train" in task.description
        bar.update(ReferenceProgress("train", 96, 96, 1.0, finished=True))
        assert bar._bar is None  # closed before the training panel takes the terminal


def test_every_usable_pair_is_in_each_epoch_on_any_world_size(setup: Any) -> None:
    from llmctl.tokens.pair_batches import PairBatches
    from llmctl.tokens.pairs import open_pairs

    pairs = open_pairs(setup.tokens, "train")
    for packing, world in ((False, 1), (False, 3), (True, 2)):
        seen: set[int] = set()
        plans = [PairBatches(pairs, 5, 64, packing, 7, r, world)._epoch_plan(0) for r in range(world)]
        for plan in plans:
            seen |= {p for layout in plan for row in layout for p, _ in row}
        assert seen == set(range(len(pairs))) and len({len(p) for p in plans}) == 1


def test_lora_dpo_reference_is_the_policys_base_without_a_second_model(setup: Any, monkeypatch: Any) -> None:
    import torch
    from safetensors import safe_open

    from llmctl.engine.dpo_reference import reference_logps
    from llmctl.infer.checkpoint import load_for_inference
    from llmctl.model.llama import Transformer
    from llmctl.tokens.pairs import open_pairs

    built: list[int] = []
    init = Transformer.__init__

    def counting(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(Transformer, "__init__", counting)
    lora = ("--lora.rank=4", "--optim.lr=1e-2", "--data.packing=true")
    report, pre = run_dpo_cli(setup, setup.tmp / "runs" / "lora-pre", 4, *lora)
    assert len(built) == 1  # the policy only: the reference was the policy with its adapters off
    live_report, live = run_dpo_cli(setup, setup.tmp / "runs" / "lora-live", 4, *lora, "--dpo.ref_mode=live")
    assert len(built) == 2 and live_report["data"]["reference"] == "live (the policy with its adapters off)"
    monkeypatch.undo()
    # The precomputed reference log-probs are the --init model's, without adapters.
    table = np.load(next((setup.tmp / "runs" / "lora-pre" / "reference").glob("*/train.npy")))
    model, _, _ = load_for_inference(setup.init)
    pairs = open_pairs(setup.tokens, "train")
    with torch.no_grad():
        want = reference_logps(model, pairs, 64, 4, torch.device("cpu"), contextlib.nullcontext)
    got = {p: tuple(table[p]) for p in want}
    np.testing.assert_allclose(np.array(list(got.values())), np.array(list(want.values())), atol=1e-4)
    # Live (adapters switched off each step) gives the precomputed run's losses, and the run trains.
    a, b = [r["loss"] for r in train_records(pre)], [r["loss"] for r in train_records(live)]
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert a[0] == pytest.approx(math.log(2), abs=1e-5) and a[-1] < a[0] - 0.01, a
    with safe_open(Path(report["checkpoint"]) / "model.safetensors", "pt") as f:
        names = list(f.keys())
    assert names and all(k.endswith((".lora_a", ".lora_b")) for k in names)  # adapters only
