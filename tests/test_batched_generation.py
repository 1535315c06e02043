"""Batched generation (llmctl/infer/batch.py) against batch-1 decoding, its samplers on logits, the
inference-time fused weights, and `generate --prompts` through the CLI."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_fixtures import make_token_dir, tiny_args
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.config import model_from_preset
from llmctl.infer.batch import Request, generate_batch
from llmctl.infer.sampling import Sampling, filter_logits, penalize_repeats
from llmctl.model.llama import Transformer, fused_weights_for_inference


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    # Many tiny forwards: one thread avoids the pool's hand-offs on a shared 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


LENGTHS = (3, 17, 1, 40, 9, 25, 5, 12, 30, 2, 8, 21, 14, 6, 11, 33)


def _model(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(dataclasses.replace(model_from_preset("tiny"), vocab_size=300, max_seq_len=96))
    with torch.no_grad():  # sharper distributions than the 0.02 init, so greedy text varies
        for p in model.parameters():
            p.mul_(4)
    return model.eval()


def _prompts() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(1, 300, (n,), generator=g).tolist() for n in LENGTHS]


def assert_same_or_near_tie(model: Transformer, prompt: list[int], got: list[int], want: list[int]) -> None:
    """got == want, or at their first difference the two tokens' logits (full forward over the common
    prefix) are within 1e-4: a near-tie that summation order may flip, reported rather than failed."""
    if got == want:
        return
    k = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
    assert k < min(len(got), len(want)), f"one output is a prefix of the other: {got} vs {want}"
    with torch.no_grad():
        logits = model(torch.tensor([prompt + want[:k]]))[0, -1]
    gap = abs(float(logits[got[k]] - logits[want[k]]))
    assert gap < 1e-4, f"tokens differ at {k}: {got[k]} vs {want[k]}, logit gap {gap:.3g}"
    warnings.warn(f"near-tie at token {k} (logit gap {gap:.2g}): not a failure", stacklevel=2)


@pytest.mark.parametrize("max_batch", [16, 5])
def test_greedy_batch_16_equals_batch_1_token_for_token(max_batch: int) -> None:
    # 16 prompts of 1-40 tokens: left padding, masks and per-row positions; max_batch 5 also has rows
    # finish, the cache compact, and waiting prompts join a running batch of another length.
    model, prompts = _model(), _prompts()
    budgets = [6 + (i * 5) % 15 for i in range(len(prompts))]
    greedy = Sampling(temperature=0.0)
    batched = generate_batch(
        model, [Request(p, n, greedy) for p, n in zip(prompts, budgets, strict=True)], max_batch=max_batch
    )
    for p, n, got in zip(prompts, budgets, batched, strict=True):
        (alone,) = generate_batch(model, [Request(p, n, greedy)], max_batch=1)
        assert len(got.ids) == n and got.stop_reason == "length"
        assert_same_or_near_tie(model, p, got.ids, alone.ids)


def test_a_seeded_sample_does_not_depend_on_its_batch_companions() -> None:
    model, prompts = _model(), _prompts()
    params = Sampling(temperature=1.0, top_k=40, top_p=0.95)
    mine = Request(prompts[4], 16, params, seed=7)
    (alone,) = generate_batch(model, [mine])
    others = [Request(p, 4 + i, params, seed=100 + i) for i, p in enumerate(prompts[:9])]
    crowded = generate_batch(model, [*others[:5], mine, *others[5:]], max_batch=4)
    assert crowded[5].ids == alone.ids
    other_seed = generate_batch(model, [dataclasses.replace(mine, seed=8)])[0]
    assert other_seed.ids != alone.ids  # the seed, not luck, fixes the sample


def _decode(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_ids_and_stop_strings_end_each_row_on_its_own() -> None:
    model, prompts = _model(), _prompts()
    greedy = Sampling(temperature=0.0)
    free = generate_batch(model, [Request(p, 40, greedy) for p in prompts[:3]], decode=_decode)
    stop_id = free[0].ids[6]
    stop_text = free[1].text[9:12]
    rows = [
        Request(prompts[0], 40, greedy, stop_ids=[stop_id]),
        Request(prompts[1], 40, greedy, stop_strings=["not there", stop_text]),
        Request(prompts[2], 40, greedy),
    ]
    a, b, c = generate_batch(model, rows, decode=_decode)
    first = free[0].ids.index(stop_id)
    assert a.stop_reason == "stop" and a.ids == free[0].ids[: first + 1] and a.text == _decode(a.ids[:-1])
    cut = free[1].text.index(stop_text)
    assert b.stop_reason == "stop_string" and b.text == free[1].text[:cut]
    assert len(b.ids) == cut + len(stop_text)  # one character per token here: stopped as the text completed
    assert c.stop_reason == "length" and c.ids == free[2].ids


def test_max_time_ends_every_row() -> None:
    model = _model()
    out = generate_batch(
        model, [Request([1, 2], 80, Sampling(temperature=0.0))] * 3, max_batch=2, max_time=0.0
    )
    assert [g.stop_reason for g in out] == ["time"] * 3 and len(out[0].ids) == 1 and out[2].ids == []


def test_min_p_top_p_top_k_and_repetition_penalty_on_logits() -> None:
    from transformers import MinPLogitsWarper, RepetitionPenaltyLogitsProcessor

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    kept = lambda out: (~torch.isinf(out)).tolist()[0]  # noqa: E731
    assert kept(filter_logits(logits, top_k=2)) == [True, True, False, False, False]
    # probabilities 0.63, 0.23, 0.086, 0.032, 0.004: the nucleus reaching 0.9 holds the first three
    assert kept(filter_logits(logits, top_p=0.9)) == [True, True, True, False, False]
    # min-p 0.1 keeps p >= 0.063 and min-p 0.2 p >= 0.126, as transformers' MinPLogitsWarper
    assert kept(filter_logits(logits, min_p=0.1)) == [True, True, True, False, False]
    assert kept(filter_logits(logits, min_p=0.2)) == [True, True, False, False, False]
    theirs = MinPLogitsWarper(min_p=0.1)(torch.zeros(1, 1, dtype=torch.long), logits.clone())
    assert kept(theirs) == kept(filter_logits(logits, min_p=0.1))
    assert kept(filter_logits(logits, min_p=1.0)) == [True, False, False, False, False]
    seen = torch.tensor([0, 3, 3])
    ours = penalize_repeats(logits[0], seen, 1.5)
    assert ours.tolist() == pytest.approx([2.0 / 1.5, 1.0, 0.0, -1.5, -3.0])
    hf = RepetitionPenaltyLogitsProcessor(1.5)(seen[None], logits.clone())[0]
    assert torch.equal(ours, hf)


def test_fused_weights_are_rebuilt_when_the_weights_change() -> None:
    model, tokens = _model(), torch.tensor([[5, 9, 2, 7]])
    reference = _model(seed=1)
    with torch.no_grad(), fused_weights_for_inference(model):
        model(tokens)
        assert "_fused_cache" in model.layers[0].attention.__dict__
        model.load_state_dict(reference.state_dict())  # in place: new versions, same storage
        assert torch.equal(model(tokens), reference(tokens))
        model.layers[1].feed_forward.w3.weight.mul_(0.5)
        reference.layers[1].feed_forward.w3.weight.mul_(0.5)
        assert torch.equal(model(tokens), reference(tokens))
    assert "_fused_cache" not in model.layers[0].attention.__dict__  # freed with the scope
    assert set(model.state_dict()) == set(reference.state_dict())  # checkpoints keep wq, wk, wv, w1, w3


def test_generation_after_an_optimizer_step_uses_the_new_weights() -> None:
    # Fused AdamW writes parameters without bumping their versions: a cache outliving one generation
    # call (as between the Trainer's sample rounds) would go stale. Each call builds its own.
    model, prompt = _model(), [3, 1, 4, 1, 5]
    greedy = [Request(prompt, 12, Sampling(temperature=0.0))]
    generate_batch(model, greedy)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    model(torch.tensor([prompt])).logsumexp(-1).mean().backward()
    optimizer.step()
    fresh = _model()
    fresh.load_state_dict(model.state_dict())
    assert generate_batch(model, greedy)[0].ids == generate_batch(fresh, greedy)[0].ids
    assert model.training  # the caller's mode is restored


# --- the CLI ---------------------------------------------------------------------------------------


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("batched")
    data = make_token_dir(root / "data")
    result = _invoke(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(root / "run"),
        "--json",
        *tiny_args(**{"train.steps": 2}),
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["checkpoint"]


def test_generate_prompts_file_gives_one_record_per_prompt_and_sample(
    checkpoint: str, tmp_path: Path
) -> None:
    text = tmp_path / "prompts.txt"
    text.write_text("def main(\n\nimport os\nclass A:\n")
    settings = ("-n", "6", "-t", "0.9", "--seed", "3", "--min-p", "0.05", "--stop", "\\n")
    result = _invoke(
        "generate", checkpoint, "--prompts", str(text), *settings, "--num-samples", "2", "--json"
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    seeds = [(r["line"], r["sample"], r["seed"]) for r in records]
    assert seeds == [(1, 0, 3), (1, 1, 4), (3, 0, 3), (3, 1, 4), (4, 0, 3), (4, 1, 4)]
    assert records[2]["prompt"] == "import os" and all(0 < r["new_tokens"] <= 6 for r in records)
    assert not any("\n" in r["text"] for r in records)  # --stop '\n' is a newline
    # sample 0 of a prompt is `generate --prompt`'s text for the same seed, whatever else is in the file
    alone = _invoke("generate", checkpoint, "--prompt", "import os", *settings, "--json")
    assert json.loads(alone.stdout)["text"] == records[2]["text"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text(json.dumps({"prompt": "import os", "id": 1}) + "\n")
    plain = _invoke("generate", checkpoint, "--prompts", str(jsonl), *settings)
    assert plain.exit_code == 0 and plain.stdout == f"### line 1, sample 1\nimport os{records[2]['text']}\n"


def test_generate_streams_nothing_of_a_stop_string(checkpoint: str) -> None:
    greedy = ("--prompt", "import os", "-n", "12", "-t", "0")
    free = json.loads(_invoke("generate", checkpoint, *greedy, "--json").stdout)["text"]
    # a stop string spanning tokens, so that it completes while earlier pieces wait to be printed
    stop = next(free[i : i + 3] for i in range(1, len(free) - 2) if "\ufffd" not in free[i : i + 3])
    cut = json.loads(_invoke("generate", checkpoint, *greedy, "--stop", stop, "--json").stdout)
    assert cut["stop_reason"] == "stop_string" and cut["text"] == free[: free.index(stop)]
    streamed = _invoke("generate", checkpoint, *greedy, "--stop", stop)
    assert streamed.exit_code == 0 and streamed.stdout == "import os" + cut["text"] + "\n"


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (("--prompts", "{empty}"), "holds no prompts", "one prompt per line"),
        (("--prompts", "{long}"), "prompt on line 2: the prompt is", "--truncate-left"),
        (("--prompt", "x", "--min-p", "1.5"), "--min-p is 1.5", "[0, 1]"),
        (("--prompts", "{bad_json}"), "line 1: not valid JSON", "one JSON object per line"),
    ],
)
def test_generate_bad_prompts_and_settings_are_errors_with_hints(
    checkpoint: str, tmp_path: Path, args: tuple[str, ...], message: str, hint: str
) -> None:
    files = {"empty": "\n  \n", "long": "short\n" + "x " * 400 + "\n", "bad_json": "{oops\n"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    result = _invoke(
        "generate", checkpoint, *(a.format(**{k: str(tmp_path / k) for k in files}) for a in args)
    )
    assert result.exit_code == 2
    assert "error:" in result.output and message in result.output
    assert "hint:" in result.output and hint in result.output and "Traceback" not in result.output


def test_trainer_sample_round_is_one_batch_with_each_prompts_text_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every sample prompt (a fixed one and validation ones) goes into one generate_batch call; at
    # temperature 0 each reply is the one the prompt gets decoded alone, as the sample rounds did before.
    from engine_fixtures import RecordingReporter, tiny_config

    import llmctl.engine.trainer as trainer_module
    from llmctl.engine.pretrain import run_pretrain
    from llmctl.infer.checkpoint import open_checkpoint

    calls: list[tuple[list[Request], list[Any]]] = []

    def spy(model: Transformer, requests: list[Request], **kwargs: Any) -> list[Any]:
        gens = generate_batch(model, requests, **kwargs)
        calls.append((list(requests), gens))
        return gens

    monkeypatch.setattr(trainer_module, "generate_batch", spy)
    settings = {"train.steps": 2, "train.sample_every": 2, "train.sample_tokens": 10}
    settings.update({"train.sample_temperature": 0.0, "train.sample_prompts": ["def f(", "x ="]})
    reporter = RecordingReporter()
    outcome = run_pretrain(
        tiny_config(make_token_dir(tmp_path / "data"), tmp_path, **settings), reporter=reporter
    )
    (round_,) = reporter.sample_rounds
    ((requests, gens),) = calls
    assert len(requests) == len(round_) >= 3
    opened = open_checkpoint(outcome.result.checkpoint)
    model, tokenizer = opened.load_model(torch.device("cpu")), opened.tokenizer()
    for request, gen, record in zip(requests, gens, round_, strict=True):
        (alone,) = generate_batch(model, [request], max_batch=1)
        assert_same_or_near_tie(model, list(request.prompt_ids), gen.ids, alone.ids)
        ids = gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids
        assert record.output == tokenizer.decode(ids) and record.new_tokens == len(gen.ids)
