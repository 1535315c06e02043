"""`llmctl sft` end to end: a tiny pretrained model learns a small instruction set; `generate --chat` answers."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from chat_fixtures import (
    conversation_text,
    instruction_rows,
    make_sft_tokens,
    pretrain_tiny,
    torch_threads,
    train_chat_tokenizer,
)
from typer.testing import CliRunner

from llmctl.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
pytestmark = pytest.mark.slow


def _sft_args(init: Path, tokens: Path, out: Path, steps: int) -> list[str]:
    return [
        "sft",
        "-c",
        str(ROOT / "examples" / "configs" / "sft.yaml"),
        "--init",
        str(init),
        "--data",
        str(tokens),
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--data.seq_len=64",
        "--optim.lr=3e-3",
        "--optim.min_lr=3e-4",
        "--optim.warmup_steps=10",
        "--train.eval_every=50",
        f"--train.sample_every={steps}",
        "--checkpoint.every=0",
        "--telemetry.tensorboard=false",
        "--json",
    ]


def _greedy_replies(checkpoint: Path, prompts: list[str]) -> list[str]:
    from llmctl.infer.chat import ChatSession

    replies = []
    for prompt in prompts:
        session = ChatSession(str(checkpoint), device="cpu", temperature=0.0, max_new_tokens=24)
        replies.append(session.reply(prompt)["text"])
    return replies


def _response_loss(checkpoint: Path, tokens: Path) -> float:
    """Mean cross-entropy on the held-out replies (the trained positions only)."""
    import torch
    import torch.nn.functional as F

    from llmctl.engine.sft import SFTObjective
    from llmctl.infer.checkpoint import load_for_inference

    model, tok, _ = load_for_inference(checkpoint)
    objective = SFTObjective(
        tokens, None, tok, seq_len=64, micro_batch=8, seed=0, eval_batches=10, prompts=[]
    )
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in objective.eval_batches():
            logits = model(batch.inputs)
            total += float(
                F.cross_entropy(
                    logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="sum"
                )
            )
            count += batch.trained_tokens
    return total / count


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("sft")
    train, validation = instruction_rows(400, seed=1), instruction_rows(40, seed=2)
    with torch_threads(1):
        tokens, tokenizer = make_sft_tokens(tmp, train, validation)
        init = pretrain_tiny(tmp, tokenizer, [conversation_text(c) for c in train])
        prompts = [c[0]["content"] for c in validation[:12]]
        references = [c[1]["content"] for c in validation[:12]]
        before = _greedy_replies(init, prompts)
        start_loss = _response_loss(init, tokens)
        result = runner.invoke(app, _sft_args(init, tokens, tmp / "runs" / "sft", steps=150))
    assert result.exit_code == 0, result.output
    return SimpleNamespace(
        tmp=tmp,
        tokens=tokens,
        tokenizer=tokenizer,
        init=init,
        report=json.loads(result.stdout),
        run=tmp / "runs" / "sft",
        prompts=prompts,
        references=references,
        before=before,
        start_loss=start_loss,
    )


def test_response_loss_falls_and_replies_move_toward_the_references(trained: Any) -> None:
    report = trained.report
    assert report["status"] == "completed" and report["step"] == 150
    assert report["data"]["used"] == 400 and report["data"]["packing"] is True
    # The held-out reply loss ends far below where the pretrained model started.
    assert report["eval"]["loss"] < 0.4 * trained.start_loss, (report["eval"]["loss"], trained.start_loss)
    summary = json.loads((trained.run / "summary.json").read_text())
    assert summary["objective"] == "sft" and summary["sft_data"]["truncated"] == 0
    assert 0 < summary["trained_tokens"] < summary["tokens"]
    assert summary["efficientllm"]["st_samples_per_param_per_sec"] > 0
    # Greedy replies to held-out prompts: before SFT none is right, after it most are.
    with torch_threads(1):
        after = _greedy_replies(trained.run / "checkpoints" / "latest", trained.prompts)
    right_before = sum(a == r for a, r in zip(trained.before, trained.references, strict=True))
    right_after = sum(a == r for a, r in zip(after, trained.references, strict=True))
    assert right_before <= 1 and right_after >= 7, list(
        zip(trained.prompts, after, trained.references, strict=True)
    )
    # samples.jsonl holds the model's replies to held-out prompts beside the reference replies.
    samples = [json.loads(line) for line in (trained.run / "samples.jsonl").read_text().splitlines()]
    held_out = [s for s in samples if s.get("source") == "validation"]
    assert held_out and all(s["reference"] for s in held_out)
    manifest = json.loads((trained.run / "checkpoints" / "latest" / "checkpoint.json").read_text())
    assert manifest["objective"] == "sft" and manifest["config"]["checkpoint"]["init"] == str(trained.init)


def test_generate_chat_answers_a_prompt_a_pipe_and_a_terminal(
    trained: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = str(trained.run / "checkpoints" / "latest")
    prompt = trained.prompts[0]
    with torch_threads(1):
        result = runner.invoke(
            app, ["generate", ckpt, "--chat", "--prompt", prompt, "--temperature", "0", "--json"]
        )
        assert result.exit_code == 0, result.output
        reply = json.loads(result.stdout)
        assert reply["stop_reason"] == "stop" and "<|end|>" not in reply["text"]
        piped = runner.invoke(app, ["generate", ckpt, "--chat", "--temperature", "0"], input=prompt + "\n")
        assert piped.exit_code == 0 and piped.stdout.strip() == reply["text"]

        from llmctl.cli._chat import run_chat

        lines = iter([prompt, "/reset", "", "/exit"])
        monkeypatch.setattr("builtins.input", lambda _prompt="": next(lines))
        monkeypatch.setattr(sys, "stdin", SimpleNamespace(isatty=lambda: True))
        run_chat(
            ckpt,
            None,
            system=None,
            json_out=False,
            device="cpu",
            max_new_tokens=24,
            temperature=0.0,
            top_k=None,
            top_p=None,
            seed=0,
        )
    out = capsys.readouterr()
    assert f"model> {reply['text']}\n" in out.out and "history cleared" in out.err
    assert reply["text"]


def test_hf_export_of_the_chat_model_replies_as_llmctl_does(trained: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = trained.tmp / "hf"
    result = runner.invoke(app, ["export", str(trained.run), "--format", "hf", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    hf_tok = AutoTokenizer.from_pretrained(out)
    hf_model = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch_threads(1):
        ours = _greedy_replies(trained.run / "checkpoints" / "latest", trained.prompts[:4])
        for prompt, reply in zip(trained.prompts[:4], ours, strict=True):
            ids = hf_tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, return_dict=False
            )
            with torch.no_grad():
                generated = hf_model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False)
            assert hf_tok.decode(generated[0, len(ids) :], skip_special_tokens=True) == reply


def test_sft_refuses_mismatched_tokenizer_pretraining_shards_and_missing_init(
    trained: Any, tmp_path: Path
) -> None:
    other_tok = train_chat_tokenizer(
        tmp_path / "other" / "tokenizer.json", ["completely different text"] * 10, 300
    )
    rows = instruction_rows(40, seed=3)
    other_tokens, _ = make_sft_tokens(tmp_path / "other", rows, rows[:8], tokenizer=other_tok)
    result = runner.invoke(app, _sft_args(trained.init, other_tokens, tmp_path / "runs" / "x", steps=2))
    assert result.exit_code == 2
    assert "was trained with tokenizer" in result.output and str(other_tok) in result.output
    assert not (tmp_path / "runs" / "x").exists()

    result = runner.invoke(
        app, _sft_args(trained.init, trained.tmp / "pt_tokens", tmp_path / "runs" / "y", steps=2)
    )
    assert result.exit_code == 2 and "not SFT shards" in result.output and "--mode sft" in result.output

    args = _sft_args(trained.init, trained.tokens, tmp_path / "runs" / "z", steps=2)
    args.remove("--init")
    args.remove(str(trained.init))
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--init" in result.output


def test_a_tokenizer_without_chat_tokens_is_named(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from llmctl.errors import LlmctlError
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.sft_batches import check_sft_compat

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["plain text only"], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|bos|>", "<|eos|>"])
    )
    tok.save(str(tmp_path / "plain.json"))
    plain = load_tokenizer(tmp_path / "plain.json")
    meta = {"tokenizer": {"fingerprint": plain.fingerprint}, "chat_profile": {"name": "chat", "version": 1}}
    with pytest.raises(LlmctlError, match=r"lacks the chat profile 'chat' tokens <\|system\|>"):
        check_sft_compat(meta, plain, plain.fingerprint, "tokens/x", "runs/x/checkpoints/latest")
