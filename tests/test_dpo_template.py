"""`tokenize --mode dpo --template model` and `llmctl dpo` on its shards: tiny Llama-3-style and ChatML models
imported with `llmctl import`; pair ids equal transformers' apply_chat_template ids, masks exact, a short run
samples with the template's prompts and stop ids."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hf_fixtures import make_hf_model
from typer.testing import CliRunner

from llmctl.cli.app import app

pytest.importorskip("transformers")

END = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}
PAIRS = [
    {
        "prompt": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Reverse the word: module"},
            {"role": "assistant", "content": "eludom"},
            {"role": "user", "content": "And fox?"},
        ],
        "chosen": [{"role": "assistant", "content": "xof"}],
        "rejected": [{"role": "assistant", "content": "The quick brown fox"}],
    },
    *[
        {
            "prompt": [{"role": "user", "content": f"What is {a} + {b}?"}],
            "chosen": [{"role": "assistant", "content": str(a + b)}],
            "rejected": [{"role": "assistant", "content": f"Numbers like {a + b + 3} appear in text."}],
        }
        for a, b in [(1, 2), (10, 20), (3, 4), (5, 6), (7, 8), (2, 9), (12, 30), (11, 4)]
    ],
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("dpo-template")
    ns = SimpleNamespace(root=root, hf={}, ck={}, tokens={})
    raw = root / "prefs.jsonl"
    raw.write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(
        app, ["data", "download", str(raw), "--out", str(root / "data"), "--val-fraction", "0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    for kind in ("llama", "qwen2"):
        ns.hf[kind] = make_hf_model(root / f"hf-{kind}", kind)
        ns.ck[kind] = root / f"ck-{kind}"
        result = runner.invoke(app, ["import", str(ns.hf[kind]), "--out", str(ns.ck[kind]), "--json"])
        assert result.exit_code == 0, result.output
        ns.tokens[kind] = root / f"tokens-{kind}"
        result = runner.invoke(app, tokenize_args(ns, kind, ns.tokens[kind], 128))
        assert result.exit_code == 0, result.output
    return ns


def hf_tokenizer(path: Path):  # noqa: ANN201
    """transformers' tokenizer of the tokenizer.json as saved. (AutoTokenizer would pick Qwen2Tokenizer for the
    qwen2 fixture, which rebuilds the pre-tokenizer with Qwen's digit splitting; the fixture's BPE has none.)"""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(path)


def template_ids(hf, conv: list[dict[str, str]], **kwargs) -> list[int]:  # noqa: ANN001
    """transformers' apply_chat_template ids (newer versions return a BatchEncoding)."""
    ids = hf.apply_chat_template(conv, tokenize=True, **kwargs)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def tokenize_args(ns: SimpleNamespace, kind: str, out: Path, max_len: int) -> list[str]:
    return [
        "tokenize",
        "--mode",
        "dpo",
        "--template",
        "model",
        "--data",
        str(ns.root / "data"),
        "--tokenizer",
        str(ns.ck[kind] / "tokenizer.json"),
        "--out",
        str(out),
        "--max-len",
        str(max_len),
        "--json",
    ]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_pair_ids_equal_apply_chat_template_and_masks_are_exact(setup: SimpleNamespace, kind: str) -> None:
    from llmctl.raw.dataset import split_parts
    from llmctl.tokens.pairs import open_pairs

    hf = hf_tokenizer(setup.hf[kind])
    end = hf.convert_tokens_to_ids(END[kind])
    meta = json.loads((setup.tokens[kind] / "meta.json").read_text())
    # Recorded as `--mode sft --template model` records it: the template, its specials and stop ids.
    info = meta["chat_profile"]
    assert info["name"] == "model" and info["template_text"] == hf.chat_template
    assert end in info["stop_ids"]
    import pyarrow.parquet as pq

    seen = 0
    for split in meta["splits"]:
        rows = [
            r for part in split_parts(setup.root / "data", split) for r in pq.read_table(part).to_pylist()
        ]
        pairs = open_pairs(setup.tokens[kind], split)
        assert len(pairs) == len(rows) > 0
        for i, row in enumerate(rows):
            (p_ids, p_mask), *sides = pairs.sides(i)
            prompt = template_ids(hf, row["prompt"], add_generation_prompt=True)
            assert p_ids.tolist() == prompt and not p_mask.any()
            for key, (ids, mask) in zip(("chosen", "rejected"), sides, strict=True):
                whole = template_ids(hf, [*row["prompt"], *row[key]])
                assert [*prompt, *ids.tolist()] == whole
                # Trained: the reply's content and its end-of-turn token; not ChatML's newline after it.
                content = hf(row[key][0]["content"], add_special_tokens=False)["input_ids"]
                expected = [1] * (len(content) + 1) + [0] * (len(ids) - len(content) - 1)
                assert mask.tolist() == expected
                assert ids[len(content)] == end
                seen += 1
    assert seen == 2 * len(PAIRS)


def test_truncation_rules_hold_with_a_template(setup: SimpleNamespace) -> None:
    from llmctl.tokens.pairs import open_pairs

    hf = hf_tokenizer(setup.hf["qwen2"])
    long_prompt = len(template_ids(hf, PAIRS[0]["prompt"], add_generation_prompt=True))
    out = setup.root / "short"
    # Room for exactly one token after the longest prompt: it is kept, its replies cut to their first token.
    result = CliRunner().invoke(app, tokenize_args(setup, "qwen2", out, long_prompt + 1))
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["totals"]["dropped_prompt_too_long"] == 0
    for split in meta["splits"]:
        pairs = open_pairs(out, split)
        for i in range(len(pairs)):
            (p, _), (c, cm), (r, rm) = pairs.sides(i)
            assert len(p) + len(c) <= long_prompt + 1 and cm[0] == rm[0] == 1
    result = CliRunner().invoke(app, tokenize_args(setup, "qwen2", setup.root / "shorter", long_prompt))
    assert result.exit_code == 0, result.output
    meta = json.loads((setup.root / "shorter" / "meta.json").read_text())
    assert meta["totals"]["dropped_prompt_too_long"] == 1


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_dpo_runs_on_template_pairs_with_the_models_stop_ids_and_prompts(
    setup: SimpleNamespace, kind: str, tmp_path: Path
) -> None:
    from llmctl.config import load_config
    from llmctl.engine.dpo import DPOObjective
    from llmctl.engine.run import read_inputs

    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "dpo",
            "--init",
            str(setup.ck[kind]),
            "--data",
            str(setup.tokens[kind]),
            "--out",
            str(out),
            "--steps",
            "2",
            "--data.seq_len=128",
            "--train.micro_batch_size=2",
            "--train.eval_every=2",
            "--train.eval_batches=1",
            "--train.sample_every=2",
            "--train.sample_tokens=3",
            "--train.log_every=1",
            "--checkpoint.every=0",
            "--train.device=cpu",
            "--telemetry.tensorboard=false",
            "--telemetry.panel=off",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("kind") == "train"]
    # Policy = reference at step 1: the sigmoid loss is ln 2.
    assert [r["step"] for r in train] == [1, 2] and abs(train[0]["loss"] - 0.693147) < 1e-4
    assert any(r.get("kind") == "eval" and "rewards/accuracies" in r for r in records)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples
    hf = hf_tokenizer(setup.hf[kind])
    cfg = load_config(
        None, {"data.path": str(setup.tokens[kind]), "data.seq_len": 128, "train.sample_prompts": ["Hi"]}
    )
    _, inputs = read_inputs(cfg)
    objective = DPOObjective(setup.tokens[kind], inputs.meta, inputs.tokenizer, cfg)
    end = hf.convert_tokens_to_ids(END[kind])
    assert end in objective.stop_ids()
    prompts = objective.sample_prompts()
    assert prompts[0].ids == template_ids(hf, [{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    # Held-out prompts end with the template's generation prompt; their reference reply has no end-of-turn.
    held_out = [p for p in prompts if p.source == "validation"]
    assert held_out and all(p.ids[-len(prompts[0].ids[-2:]) :] == prompts[0].ids[-2:] for p in held_out)
