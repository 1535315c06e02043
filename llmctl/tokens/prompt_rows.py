"""Prompts with answers, the data of `llmctl grpo`: a JSONL file or a dataset folder, read into typed rows.

    rows = read_prompt_rows("data/addition.jsonl")     # [PromptRow(messages=[...], answer="42"), ...]

Each row has `messages` (a list of {"role", "content"}, the conversation to continue) or `prompt` (a string,
one user turn), and an optional `answer` (a string or a number, what rewards such as `number` compare with).
A dataset folder (`llmctl data download`) is read from its `train` split's parquet parts, with the same
columns. Rows are numbered from 0 in file order; every error names the row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

_HINT = (
    'write one JSON object per line: {"prompt": "What is 2 + 3?", "answer": "5"} or '
    '{"messages": [{"role": "user", "content": "..."}], "answer": "5"}'
)


@dataclass(frozen=True)
class PromptRow:
    """One prompt: the conversation to continue, and the answer rewards compare with (None: none given)."""

    messages: list[dict[str, str]]
    answer: str | None

    @property
    def text(self) -> str:
        """The last user turn's text: the `prompt` a user's reward function is called with."""
        users = [m["content"] for m in self.messages if m["role"] == "user"]
        return users[-1] if users else self.messages[-1]["content"]


def _row(raw: Any, where: str) -> PromptRow:
    """A PromptRow from one decoded record, or an error naming `where`."""
    if not isinstance(raw, dict):
        raise LlmctlError(f"{where} is not a JSON object", _HINT)
    messages, prompt, answer = raw.get("messages"), raw.get("prompt"), raw.get("answer")
    if messages is not None:
        ok = isinstance(messages, list) and bool(messages)
        ok = ok and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
        if not ok:
            raise LlmctlError(
                f"{where}: 'messages' must be a non-empty list of {{role, content}} strings", _HINT
            )
        turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    elif isinstance(prompt, str):
        turns = [{"role": "user", "content": prompt}]
    else:
        raise LlmctlError(f"{where} has neither 'messages' nor a 'prompt' string", _HINT)
    if isinstance(answer, bool) or not (answer is None or isinstance(answer, (str, int, float))):
        raise LlmctlError(f"{where}: 'answer' must be a string or a number, got {answer!r}", _HINT)
    return PromptRow(turns, None if answer is None else str(answer))


def _read_jsonl(path: Path) -> list[PromptRow]:
    from llmctl.files import io_error

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise io_error(exc, path, action="read") from exc
    except UnicodeDecodeError as exc:
        raise LlmctlError(f"{path} is not UTF-8 text", _HINT) from exc
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {number} (row {len(rows)})"
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmctlError(f"{where} is not JSON ({exc.msg})", _HINT) from exc
        rows.append(_row(raw, where))
    return rows


def _read_dataset(root: Path, split: str) -> list[PromptRow]:
    import pyarrow.parquet as pq

    from llmctl.raw.dataset import read_info, split_parts

    read_info(root)
    rows: list[PromptRow] = []
    for part in split_parts(root, split):
        for raw in pq.read_table(part).to_pylist():
            rows.append(_row(raw, f"{root} {split} row {len(rows)}"))
    return rows


def read_prompt_rows(path: str | Path, split: str = "train") -> list[PromptRow]:
    """Every row of a JSONL file, or of a dataset folder's `split`; an error when there is none."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LlmctlError(
            f"{path} does not exist", "pass --data FILE.jsonl or a folder from `llmctl data download`"
        )
    rows = _read_dataset(path, split) if path.is_dir() else _read_jsonl(path)
    if not rows:
        raise LlmctlError(f"{path} holds no prompts", _HINT)
    return rows
