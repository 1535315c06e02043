"""Prompts for `generate --prompts FILE`: one per line, or JSON Lines with a `prompt` field.

    prompts = read_prompts("prompts.txt")      # [(line number, text), ...]

A file whose name ends in .jsonl, or whose first non-blank line starts with `{`, is read as JSON Lines;
otherwise every non-blank line is a prompt, as written (no escapes). Blank lines are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmctl.errors import LlmctlError


def _jsonl_prompt(line: str, number: int, path: Path) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        raise LlmctlError(
            f"{path}, line {number}: not valid JSON ({err.msg})",
            'write one JSON object per line, e.g. {"prompt": "def main("}, or plain text with one prompt per line',
        ) from None
    if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
        raise LlmctlError(
            f'{path}, line {number}: no "prompt" text field',
            'give every line a "prompt" string, e.g. {"prompt": "def main("}',
        )
    return row["prompt"]


def read_prompts(path: str | Path) -> list[tuple[int, str]]:
    """(line number, prompt) for every prompt in the file; an error names a line that is not one."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LlmctlError(
            f"--prompts: {path} does not exist", "pass a text file with one prompt per line"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise LlmctlError(
            f"--prompts: cannot read {path} ({err})", "pass a UTF-8 text or JSONL file"
        ) from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise LlmctlError(
            f"--prompts: {path} holds no prompts",
            "write one prompt per line (or JSON Lines with a prompt field)",
        )
    as_json = path.suffix == ".jsonl" or lines[0][1].lstrip().startswith("{")
    if not as_json:
        return lines
    return [(n, _jsonl_prompt(line, n, path)) for n, line in lines]
