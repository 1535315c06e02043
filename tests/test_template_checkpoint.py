"""`tokenize --template model` takes the tokenizer of any llmctl checkpoint or run folder whose checkpoint.json
holds the chat template: a continued-pretraining checkpoint has no chat_template.jinja beside its tokenizer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from chat_fixtures import write_chat_parquet
from hf_fixtures import CHATML_TEMPLATE, SPECIALS, TEXT
from typer.testing import CliRunner

from llmctl.cli.app import app

CONV = [{"role": "user", "content": "Reverse: module"}, {"role": "assistant", "content": "eludom"}]


def _tokenizer_json() -> str:
    """A tiny byte-level BPE with Qwen2's special tokens, as tokenizer.json text (no transformers needed)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS["qwen2"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer)
    return tok.to_str()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An imported model's folder, and a run trained from it whose checkpoint carries the template only in
    checkpoint.json (as `pretrain --init` writes it: tokenizer.json and the `chat` section, nothing else)."""
    root = tmp_path_factory.mktemp("tpl")
    text = _tokenizer_json()
    im_end = json.loads(text)["added_tokens"][2]
    assert im_end["content"] == "<|im_end|>"
    imported = root / "imported"
    imported.mkdir()
    (imported / "tokenizer.json").write_text(text)
    (imported / "chat_template.jinja").write_text(CHATML_TEMPLATE)
    (imported / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    run = root / "run"
    step = run / "checkpoints" / "step-000002"
    step.mkdir(parents=True)
    chat = {"template_text": CHATML_TEMPLATE, "bos_token": None, "eos_token": "<|im_end|>"}
    (step / "checkpoint.json").write_text(
        json.dumps({"step": 2, "chat": chat | {"stop_ids": [im_end["id"]]}})
    )
    for where in (step, run):
        (where / "tokenizer.json").write_text(text)
    os.symlink("step-000002", run / "checkpoints" / "latest")
    plain = root / "plain"  # an llmctl checkpoint of a model that never had a chat template
    plain.mkdir()
    (plain / "tokenizer.json").write_text(text)
    (plain / "checkpoint.json").write_text(json.dumps({"step": 2, "chat": {"template_text": None}}))
    raw = write_chat_parquet(root / "raw", {"train": [CONV] * 4})
    return {"imported": imported, "run": run, "step": step, "plain": plain, "raw": raw, "root": root}


def _tokenize(folders: dict[str, Path], tokenizer: Path, out: str) -> tuple[int, str, dict]:
    args = ["tokenize", "--data", str(folders["raw"]), "--tokenizer", str(tokenizer), "--mode", "sft"]
    args += ["--template", "model", "--num-proc", "1", "--out", str(folders["root"] / out), "--json"]
    result = CliRunner().invoke(app, args)
    meta_path = folders["root"] / out / "meta.json"
    return result.exit_code, result.output, json.loads(meta_path.read_text()) if meta_path.is_file() else {}


def test_a_checkpoint_or_run_folder_renders_as_the_imported_model_does(folders: dict[str, Path]) -> None:
    code, output, reference = _tokenize(folders, folders["imported"] / "tokenizer.json", "ref")
    assert code == 0, output
    for i, tokenizer in enumerate(
        (
            folders["step"] / "tokenizer.json",
            folders["step"],
            folders["run"] / "checkpoints" / "latest",
            folders["run"],
        )
    ):
        code, output, meta = _tokenize(folders, tokenizer, f"ck{i}")
        assert code == 0, (tokenizer, output)
        assert meta["chat_profile"] == reference["chat_profile"] and meta["totals"] == reference["totals"]


def test_a_checkpoint_without_a_template_is_refused_naming_checkpoint_json(folders: dict[str, Path]) -> None:
    code, output, _ = _tokenize(folders, folders["plain"] / "tokenizer.json", "plain")
    assert code == 2 and "checkpoint.json" in output and "Traceback" not in output
