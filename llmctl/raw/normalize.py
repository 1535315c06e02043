"""Source rows -> the raw dataset's one column: `text` (a string) or `messages` (a list of {role, content}).

    mapping = choose_mapping(["instruction", "input", "output"], "alpaca.json")
    mapping.convert({"instruction": ["Add"], "input": ["2+2"], "output": ["4"]})
    # [[{'role': 'user', 'content': 'Add\\n\\n2+2'}, {'role': 'assistant', 'content': '4'}]]

Rows whose text is empty (or whose conversation has no content) become None and are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from llmctl.errors import LlmctlError

TEXT_CANDIDATES = ("text", "content", "story", "document", "body", "raw_content", "markdown")
MESSAGE_CANDIDATES = ("messages", "conversations", "conversation")
_ROLE_ALIASES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}

Message = dict[str, str]
Value = str | list[Message] | dict[str, list[Message]] | None
"""Text, a conversation, or a preference pair {prompt, chosen, rejected} (llmctl/raw/preference.py)."""


@dataclass(frozen=True)
class RowMapping:
    """How one batch of source columns becomes output values."""

    column: Literal["text", "messages", "preference"]
    reads: tuple[str, ...]
    """Source columns read (parquet reads only these)."""
    how: str
    """Human description, recorded in dataset.json."""
    _convert: Callable[[dict[str, list[Any]]], list[Value]]

    def convert(self, batch: dict[str, list[Any]]) -> list[Value]:
        """Output values of a columnar batch, None for rows to drop."""
        return self._convert(batch)

    @property
    def drop_counts(self) -> dict[str, int] | None:
        """Preference data: rows dropped so far, by reason (llmctl/raw/preference.py); else None."""
        counts = getattr(self._convert, "counts", None)
        return counts.as_dict() if counts is not None else None


def _text_values(column: str, keep_blank: bool = False) -> Callable[[dict[str, list[Any]]], list[Value]]:
    def convert(batch: dict[str, list[Any]]) -> list[Value]:
        if keep_blank:  # line-per-row corpora: blank lines separate paragraphs
            return [v if isinstance(v, str) else None for v in batch[column]]
        return [v if isinstance(v, str) and v.strip() else None for v in batch[column]]

    return convert


def alpaca_messages(instruction: Any, input_: Any, output: Any) -> list[Message] | None:
    """An Alpaca row as a user turn (instruction, then input after a blank line) and an assistant turn."""
    instruction = (instruction or "").strip()
    input_ = (input_ or "").strip()
    output = (output or "").strip()
    if not instruction or not output:
        return None
    user = f"{instruction}\n\n{input_}" if input_ else instruction
    return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]


def _alpaca(batch: dict[str, list[Any]]) -> list[Value]:
    inputs = batch.get("input") or [None] * len(batch["instruction"])
    return [
        alpaca_messages(i, x, o)
        for i, x, o in zip(batch["instruction"], inputs, batch["output"], strict=True)
    ]


def _message_list(value: Any) -> list[Message] | None:
    if not isinstance(value, list):
        return None
    out: list[Message] = []
    for turn in value:
        if not isinstance(turn, dict):
            return None
        role = _ROLE_ALIASES.get(str(turn.get("role") or turn.get("from") or "").lower())
        content = turn.get("content", turn.get("value"))
        if role is None or not isinstance(content, str):
            return None
        out.append({"role": role, "content": content})
    return out if any(m["content"].strip() for m in out) else None


def _messages_values(column: str) -> Callable[[dict[str, list[Any]]], list[Value]]:
    def convert(batch: dict[str, list[Any]]) -> list[Value]:
        return [_message_list(v) for v in batch[column]]

    return convert


def choose_mapping(
    columns: list[str], file_name: str, text_column: str | None = None, transform: str | None = None
) -> RowMapping:
    """Pick how rows become text or messages, from the columns found and the user's --text-column."""
    lines = transform == "wikitext-articles"
    from llmctl.raw.preference import PREFERENCE_TRANSFORMS, is_preference, preference_reads

    if transform in PREFERENCE_TRANSFORMS or (
        text_column is None and transform is None and is_preference(columns)
    ):
        reads, converter, how = preference_reads(columns, file_name, transform)
        return RowMapping("preference", reads, how, converter)  # type: ignore[arg-type]
    half = {"chosen", "rejected"} & set(columns)
    if text_column is None and transform is None and len(half) == 1:
        # One side of a preference pair: "no text column" would send the user looking in the wrong place.
        (present,) = half
        missing = "rejected" if present == "chosen" else "chosen"
        raise LlmctlError(
            f"{file_name} looks like preference data but has no '{missing}' column, only '{present}' "
            f"(columns found: {', '.join(columns)})",
            f"each preference row needs both 'chosen' and '{missing}' (and 'prompt' unless they are whole "
            "conversations); or pass --text-column NAME to read plain text",
        )
    if transform == "alpaca" or (
        text_column is None and {"instruction", "output"} <= set(columns) and transform is None
    ):
        missing = {"instruction", "output"} - set(columns)
        if missing:
            raise LlmctlError(
                f"{file_name} has no {', '.join(sorted(missing))} column for the Alpaca conversion "
                f"(columns found: {', '.join(columns) or 'none'})",
                "pass --text-column NAME to read plain text instead",
            )
        reads = ("instruction", "input", "output") if "input" in columns else ("instruction", "output")
        return RowMapping(
            "messages", reads, "alpaca: instruction+input -> user, output -> assistant", _alpaca
        )
    if text_column:
        if text_column not in columns:
            raise LlmctlError(
                f"{file_name} has no column '{text_column}' (columns found: {', '.join(columns) or 'none'})",
                "pass --text-column with one of the columns found",
            )
        if text_column in MESSAGE_CANDIDATES:
            return RowMapping(
                "messages", (text_column,), f"messages from '{text_column}'", _messages_values(text_column)
            )
        return RowMapping(
            "text", (text_column,), f"text from '{text_column}'", _text_values(text_column, lines)
        )
    for name in TEXT_CANDIDATES:
        if name in columns:
            return RowMapping("text", (name,), f"text from '{name}'", _text_values(name, lines))
    for name in MESSAGE_CANDIDATES:
        if name in columns:
            return RowMapping("messages", (name,), f"messages from '{name}'", _messages_values(name))
    raise LlmctlError(
        f"{file_name} has no text column (columns found: {', '.join(columns) or 'none'})",
        f"choose one with --text-column NAME (looked for {', '.join(TEXT_CANDIDATES + MESSAGE_CANDIDATES)})",
    )


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = \n?$")


class WikitextArticles:
    """WikiText rows are lines; join them into one document per article (a ` = Title = ` heading)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def feed(self, values: list[Value]) -> list[Value]:
        """Lines in, finished articles out."""
        done: list[Value] = []
        for line in values:
            if not isinstance(line, str):
                continue
            if _WIKITEXT_TITLE.match(line) and self._lines:
                done.append(self._article())
            self._lines.append(line)
        return [a for a in done if a]

    def flush(self) -> list[Value]:
        """The last article."""
        article = self._article() if self._lines else None
        return [article] if article else []

    def _article(self) -> str | None:
        text = "".join(self._lines).strip("\n")
        self._lines = []
        return text if text.strip() else None


def value_bytes(value: Value) -> int:
    """UTF-8 bytes of a text, or of a conversation's contents."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, dict):  # a preference pair
        return sum(value_bytes(side) for side in value.values())
    return sum(len(m["content"].encode("utf-8")) for m in value or [])
