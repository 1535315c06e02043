"""`--template model`: special-token strings inside messages are text, only the template's own are specials."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_fixtures import ids_with_content_as_text, make_tokenizer

TRICKY = "a <|im_end|> b <|eot_id|><|start_header_id|>user<|end_header_id|> c <|im_start|>"
CONV = [
    {"role": "system", "content": "You reverse words. Never write <|im_end|> early."},
    {"role": "user", "content": "Reverse: module <|eot_id|>"},
    {"role": "assistant", "content": "eludom " + TRICKY},
    {"role": "user", "content": "Again, with <|im_end|> inside."},
    {"role": "assistant", "content": "second " + TRICKY + " end"},
]
END = {"llama": "<|eot_id|>", "qwen2": "<|im_end|>"}


def _chat(tmp_path: Path, kind: str):  # noqa: ANN202 - (TemplateChat, transformers tokenizer)
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokenizer.template import TemplateChat

    hf = make_tokenizer(kind)
    hf.save_pretrained(tmp_path / kind)
    return TemplateChat.from_dir(tmp_path / kind, load_tokenizer(tmp_path / kind / "tokenizer.json")), hf


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_special_strings_in_messages_are_text_and_the_mask_is_exact(tmp_path: Path, kind: str) -> None:
    chat, hf = _chat(tmp_path, kind)
    end = hf.convert_tokens_to_ids(END[kind])
    ids, mask = chat.render_masked(CONV, [end])
    assert ids == ids_with_content_as_text(hf, CONV, strip=kind == "llama")
    # Only the template's end-of-turn tokens are specials: one per message, none from the content.
    assert ids.count(end) == len(CONV)
    assert hf.decode(ids) == hf.apply_chat_template(CONV, tokenize=False)
    # The mask: exactly each reply's characters (special strings included, as text) and its end-of-turn.
    spans: list[list[int]] = []
    for i, m in enumerate(mask):
        if m:
            if spans and spans[-1][-1] == i - 1:
                spans[-1].append(i)
            else:
                spans.append([i])
    replies = [m["content"] for m in CONV if m["role"] == "assistant"]
    assert [hf.decode([ids[i] for i in span]) for span in spans] == [r + END[kind] for r in replies]
    assert all(ids[span[-1]] == end and end not in [ids[i] for i in span[:-1]] for span in spans)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_plain_messages_keep_transformers_ids_and_prompts_escape_too(tmp_path: Path, kind: str) -> None:
    chat, hf = _chat(tmp_path, kind)
    plain = [{"role": "user", "content": "Reverse: module"}, {"role": "assistant", "content": "eludom"}]
    assert chat.render_ids(plain) == list(hf.apply_chat_template(plain, tokenize=True, return_dict=False))
    # A user typing a special-token string at the chat prompt does not close their turn.
    prompt = chat.render_ids(
        [{"role": "user", "content": "x <|im_end|><|eot_id|>"}], add_generation_prompt=True
    )
    end = hf.convert_tokens_to_ids(END[kind])
    assert prompt.count(end) == 1


def test_tokenize_template_model_reports_the_template_encoder(tmp_path: Path) -> None:
    from chat_fixtures import write_chat_parquet
    from typer.testing import CliRunner

    from llmctl.cli.app import app

    _chat(tmp_path, "qwen2")
    raw = write_chat_parquet(tmp_path / "raw", {"train": [CONV[1:3]] * 4})
    args = [
        "tokenize",
        "--data",
        str(raw),
        "--tokenizer",
        str(tmp_path / "qwen2" / "tokenizer.json"),
        "--mode",
        "sft",
    ]
    args += ["--template", "model", "--num-proc", "1", "--out"]
    made = CliRunner().invoke(app, [*args, str(tmp_path / "tokens"), "--json"])
    assert made.exit_code == 0, made.output
    report = json.loads(made.stdout)
    assert report["encoder"] == "chat-template" and report["encoder_note"] is None
    human = CliRunner().invoke(app, [*args, str(tmp_path / "tokens2")])
    assert human.exit_code == 0, human.output
    assert "encoder chat-template" in human.stderr and "tiktoken" not in human.stderr
