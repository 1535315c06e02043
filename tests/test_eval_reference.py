"""`llmctl eval` against lm-evaluation-harness: the same items, the same exported model, the same numbers.

The tiny model is exported with `llmctl export`, and lm-eval's HF backend scores two local JSONL tasks:
one with `target_delimiter: ""`, and one with lm-eval's usual `" "` (the named downloads' hellaswag, arc and
piqa), whose items carry it as `target_delimiter` so that acc_norm divides by the choice's own length.
llmctl puts its prompt prefix before every context; the exported tokenizer gets a post-processor that adds
the same token, so lm-eval's `tok_encode` adds it as llmctl does. Then the same with 3-shot contexts drawn
by lm-eval's seeded sampler from a train split, for a task with a test split (k draws) and one with only a
validation split (k + 1 draws, the item left out). Skipped when lm_eval (dev extra) is not installed.
"""

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

lm_eval = pytest.importorskip("lm_eval")
runner = CliRunner()


def _items(texts: list[str]) -> list[dict[str, Any]]:
    items = []
    for i, text in enumerate(texts[:12]):
        head, _, tail = text.partition("\n")
        others = [t.partition("\n")[2] for t in texts[40 + 3 * i : 43 + 3 * i]]
        label = i % 4
        # A context ending in a space exercises lm-eval's move of trailing whitespace onto the choice.
        context = head + ("\n" if i % 2 else " ")
        items.append(
            {"context": context, "choices": [*others[:label], tail, *others[label:]], "label": label, "id": i}
        )
    return items


def _delimited_items(texts: list[str]) -> list[dict[str, Any]]:
    """Choices of one to a dozen characters after a " " delimiter: where one more character in the length
    moves acc_norm most."""
    items = []
    for i, text in enumerate(texts[12:24]):
        words = text.split()
        choices = [w[: 1 + (3 * k + i) % 12] for k, w in enumerate(words[1:5])]
        label = i % len(choices)
        items.append(
            {"context": words[0], "target_delimiter": " ", "choices": choices, "label": label, "id": i}
        )
    return items


def _lm_eval_task(
    folder: Path, name: str, data: Path, delimiter: str, train: Path | None = None, split: str = "test"
) -> None:
    files = f"    {split}: {data}\n" + (f"    train: {train}\n" if train else "")
    (folder / f"{name}.yaml").write_text(
        f"task: llmctl_{name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n{files}"
        f"{split}_split: {split}\n" + ("training_split: train\n" if train else "") + ""
        "output_type: multiple_choice\n"
        "doc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\n"
        f"target_delimiter: {json.dumps(delimiter)}\n"
        "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
    )


def _prefix_post_processor(hf_dir: Path, token: str, token_id: int) -> None:
    path = hf_dir / "tokenizer.json"
    data = json.loads(path.read_text())
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [
            {"SpecialToken": {"id": token, "type_id": 0}},
            {"Sequence": {"id": "A", "type_id": 0}},
            {"Sequence": {"id": "B", "type_id": 1}},
        ],
        "special_tokens": {token: {"id": token, "ids": [token_id], "tokens": [token]}},
    }
    path.write_text(json.dumps(data))


@pytest.mark.slow
def test_loglikelihoods_match_lm_eval_hf_backend(tmp_path: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from llmctl.eval.model_io import open_model, prompt_prefix

    rows = instruction_rows(200, seed=11)
    texts = [conversation_text(c) for c in rows]
    tok = train_chat_tokenizer(tmp_path / "tok" / "tokenizer.json", [m["content"] for c in rows for m in c])
    with torch_threads(1):
        ckpt = pretrain_tiny(tmp_path, tok, texts, steps=20)
    tasks = {"ref": (_items(texts), ""), "ref_delim": (_delimited_items(texts), " ")}
    for name, (items, _) in tasks.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))

    ours_items = tmp_path / "ours.jsonl"
    with torch_threads(1):
        result = runner.invoke(
            app,
            [
                "eval",
                str(ckpt),
                *[a for name in tasks for a in ("--task", str(tmp_path / f"{name}.jsonl"))],
                "--device",
                "cpu",
                "--json",
                "--items-out",
                str(ours_items),
            ],
        )
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)["tasks"]
    records = {(r["task"], r["id"]): r for r in map(json.loads, ours_items.read_text().splitlines())}

    hf_dir = tmp_path / "hf"
    exported = runner.invoke(
        app, ["export", str(ckpt), "--format", "hf", "--out", str(hf_dir), "--dtype", "float32"]
    )
    assert exported.exit_code == 0, exported.output
    loaded = open_model(str(ckpt), "cpu")
    (prefix_id,) = prompt_prefix(loaded)
    _prefix_post_processor(hf_dir, loaded.tokenizer.id_to_token(prefix_id), prefix_id)

    tasks_dir = tmp_path / "lm_eval_tasks"
    tasks_dir.mkdir()
    for name, (_, delimiter) in tasks.items():
        _lm_eval_task(tasks_dir, name, tmp_path / f"{name}.jsonl", delimiter)
    with torch_threads(1):
        lm = HFLM(pretrained=str(hf_dir), device="cpu", batch_size=8, dtype="float32")
        out = simple_evaluate(
            model=lm,
            tasks=[f"llmctl_{name}" for name in tasks],
            task_manager=TaskManager(include_path=str(tasks_dir)),
            log_samples=True,
        )
    for name, (items, _) in tasks.items():
        theirs = out["results"][f"llmctl_{name}"]
        samples = out["samples"][f"llmctl_{name}"]
        assert len(samples) == len(items) == ours[name]["n"]
        for sample in samples:
            mine = records[(name, sample["doc"]["id"])]
            lls = [float(resp[0][0]) for resp in sample["resps"]]
            assert lls == pytest.approx(mine["loglikelihoods"], abs=1e-4)
            # Item for item: the choice acc_norm picks is right exactly when lm-eval's is.
            assert float(mine["pred_norm"] == mine["label"]) == sample["acc_norm"]
        assert ours[name]["acc"] == theirs["acc,none"]
        assert ours[name]["acc_norm"] == theirs["acc_norm,none"]
    _fewshot_matches_lm_eval(tmp_path, ckpt, lm, texts)


def _fewshot_matches_lm_eval(tmp_path: Path, ckpt: Path, lm: Any, texts: list[str]) -> None:
    """3-shot: llmctl's task folders (items.jsonl + fewshot.jsonl) against lm-eval's train split."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    pool = [
        {**item, "id": 100 + i} for i, item in enumerate(_delimited_items(texts[24:]) + _items(texts[60:]))
    ]
    for item in pool:
        item.setdefault("target_delimiter", " ")
    items = _delimited_items(texts)
    tasks_dir = tmp_path / "lm_eval_fewshot"
    tasks_dir.mkdir()
    for name, split, extra in (("fs_test", "test", False), ("fs_val", "validation", True)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
        (folder / "fewshot.jsonl").write_text("".join(json.dumps(i) + "\n" for i in pool))
        (folder / "eval.json").write_text(json.dumps({"lm_eval": {"fewshot_draws_extra": extra}}))
        _lm_eval_task(tasks_dir, name, folder / "items.jsonl", " ", folder / "fewshot.jsonl", split)
    ours_items = tmp_path / "ours_fs.jsonl"
    with torch_threads(1):
        result = runner.invoke(
            app,
            ["eval", str(ckpt), "--task", str(tmp_path / "fs_test"), "--task", str(tmp_path / "fs_val")]
            + ["--num-fewshot", "3", "--device", "cpu", "--json", "--items-out", str(ours_items)],
        )
        out = simple_evaluate(
            model=lm,
            tasks=["llmctl_fs_test", "llmctl_fs_val"],
            num_fewshot=3,
            task_manager=TaskManager(include_path=str(tasks_dir)),
            log_samples=True,
        )
    assert result.exit_code == 0, result.output
    ours = json.loads(result.stdout)["tasks"]
    records = {(r["task"], r["id"]): r for r in map(json.loads, ours_items.read_text().splitlines())}
    for name in ("fs_test", "fs_val"):
        assert out["n-shot"][f"llmctl_{name}"] == 3
        for sample in out["samples"][f"llmctl_{name}"]:
            assert sample["arguments"][0][0].count("\n\n") >= 3  # three examples before the item
            mine = records[(name, sample["doc"]["id"])]
            lls = [float(resp[0][0]) for resp in sample["resps"]]
            assert lls == pytest.approx(mine["loglikelihoods"], abs=1e-4)
        assert ours[name]["acc"] == out["results"][f"llmctl_{name}"]["acc,none"]
        assert ours[name]["acc_norm"] == out["results"][f"llmctl_{name}"]["acc_norm,none"]


@pytest.mark.slow
def test_chat_template_pairs_of_an_import_equal_lm_eval_encoding(tmp_path: Path) -> None:
    """An imported chat model (Jinja template): the pair ids are lm-eval's HFLM ones under
    --apply_chat_template (rendered user turn with the generation prompt, no delimiter)."""
    from hf_fixtures import make_hf_model
    from lm_eval.models.huggingface import HFLM

    from llmctl.eval.chat_prompt import chat_pairs
    from llmctl.eval.model_io import open_model

    hf = make_hf_model(tmp_path / "hf", "qwen2")
    imported = runner.invoke(app, ["import", str(hf), "--out", str(tmp_path / "ck"), "--no-verify"])
    assert imported.exit_code == 0, imported.output
    pair_ids = chat_pairs(open_model(str(tmp_path / "ck"), "cpu"))
    with torch_threads(1):
        lm = HFLM(pretrained=str(hf), device="cpu", batch_size=1, dtype="float32")
    for context, choice in [
        ("Question: Which is a gas?\nAnswer:", "steam"),
        ("Say <|im_end|> then stop ", "ok"),
    ]:
        rendered = lm.apply_chat_template([{"role": "user", "content": context}])
        assert pair_ids(context, choice) == tuple(lm._encode_pair(rendered, choice))
