"""Preference rows -> `prompt` (messages), `chosen` and `rejected` (assistant messages).

    mapping = preference_mapping(["prompt", "chosen", "rejected"], "prefs.jsonl")
    mapping.convert({"prompt": ["2+2?"], "chosen": ["4"], "rejected": ["5"]})
    # [{'prompt': [{'role': 'user', 'content': '2+2?'}],
    #   'chosen': [{'role': 'assistant', 'content': '4'}], 'rejected': [{'role': 'assistant', 'content': '5'}]}]

Layouts understood (each side a string or a list of {role, content} / {from, value} turns):
- `prompt` + `chosen` + `rejected`, as written by hand or by TRL's "standard" preference format;
- `chosen`/`rejected` whole conversations sharing their first turns (HuggingFaceH4/ultrafeedback_binarized):
  the shared turns are the prompt, what follows is each side;
- `question` + `chosen` + `rejected` (+ `system`), as in Intel/orca_dpo_pairs;
- "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts in `chosen`/`rejected` (Anthropic/hh-rlhf).

A row whose two sides are identical, or whose prompt or a side is empty, becomes None (dropped) and is
counted in `PreferenceCounts`, which download records in dataset.json.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import LlmctlError

PREFERENCE_TRANSFORMS = ("preference", "hh-rlhf")
Message = dict[str, str]
Pair = dict[str, list[Message]]

_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "system": "system",
}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


@dataclass
class PreferenceCounts:
    """Rows dropped while normalising, by reason."""

    identical: int = 0
    """Chosen and rejected were the same."""
    empty: int = 0
    """The prompt, the chosen or the rejected side had no content."""
    unreadable: int = 0
    """A side was neither a string nor a list of role/content turns, or a side held a non-assistant turn."""

    def as_dict(self) -> dict[str, int]:
        """The counts as dataset.json records them."""
        return {"identical": self.identical, "empty": self.empty, "unreadable": self.unreadable}


def is_preference(columns: list[str]) -> bool:
    """True when the columns look like preference pairs (both a chosen and a rejected column)."""
    return {"chosen", "rejected"} <= set(columns)


def _turns(value: Any) -> list[Message] | None:
    if not isinstance(value, list):
        return None
    out: list[Message] = []
    for turn in value:
        if not isinstance(turn, dict):
            return None
        role = _ROLES.get(str(turn.get("role") or turn.get("from") or "").lower())
        content = turn.get("content", turn.get("value"))
        if role is None or not isinstance(content, str):
            return None
        out.append({"role": role, "content": content})
    return out


def hh_transcript(text: str) -> list[Message] | None:
    """An Anthropic HH "\\n\\nHuman: ... \\n\\nAssistant: ..." transcript as messages; None when it is not one."""
    pieces = _HH_TURN.split(text if text.startswith("\n\n") else "\n\n" + text)
    if len(pieces) < 3 or pieces[0].strip():
        return None
    return [
        {"role": "user" if who == "Human" else "assistant", "content": said.strip()}
        for who, said in zip(pieces[1::2], pieces[2::2], strict=True)
    ]


def _as_messages(value: Any, role: str, transcripts: bool) -> list[Message] | None:
    if isinstance(value, str):
        if transcripts and "\n\nAssistant:" in value:
            return hh_transcript(value)
        return [{"role": role, "content": value}]
    return _turns(value)


def _blank(messages: list[Message]) -> bool:
    return not messages or not any(m["content"].strip() for m in messages)


def normalise_pair(
    prompt: Any,
    chosen: Any,
    rejected: Any,
    system: Any = None,
    *,
    transcripts: bool = True,
    counts: PreferenceCounts | None = None,
) -> Pair | None:
    """One preference row as {prompt, chosen, rejected} message lists, or None (counted) to drop it."""
    counts = counts if counts is not None else PreferenceCounts()
    c = _as_messages(chosen, "assistant", transcripts)
    r = _as_messages(rejected, "assistant", transcripts)
    if c is None or r is None:
        counts.unreadable += 1
        return None
    # Whole conversations: the turns both sides share are the prompt.
    shared = 0
    while shared < min(len(c), len(r)) - 1 and c[shared] == r[shared]:
        shared += 1
    while shared and c[shared - 1]["role"] == "assistant" and c[shared]["role"] == "assistant":
        shared -= 1  # a split inside consecutive assistant turns: keep the replies whole
    head, c, r = c[:shared], c[shared:], r[shared:]
    p = head
    if not head and prompt is not None:
        # A separate prompt column; when the sides are whole conversations (ultrafeedback) their shared
        # turns already hold the prompt, so the column is only a copy and the turns win.
        given = _as_messages(prompt, "user", transcripts=False)
        if given is None:
            counts.unreadable += 1
            return None
        p = given
    if isinstance(system, str) and system.strip() and not any(m["role"] == "system" for m in p):
        p = [{"role": "system", "content": system}, *p]
    if any(m["role"] != "assistant" for m in c + r):
        counts.unreadable += 1
        return None
    if _blank(p) or _blank(c) or _blank(r):
        counts.empty += 1
        return None
    if c == r:
        counts.identical += 1
        return None
    return {"prompt": p, "chosen": c, "rejected": r}


@dataclass
class PreferenceConverter:
    """Callable batch converter for RowMapping: columns -> pairs, counting the rows it drops."""

    prompt_column: str | None
    system_column: str | None
    transcripts: bool
    counts: PreferenceCounts = field(default_factory=PreferenceCounts)

    def __call__(self, batch: dict[str, list[Any]]) -> list[Pair | None]:
        n = len(batch["chosen"])
        prompts = batch[self.prompt_column] if self.prompt_column else [None] * n
        systems = batch[self.system_column] if self.system_column else [None] * n
        return [
            normalise_pair(p, c, r, s, transcripts=self.transcripts, counts=self.counts)
            for p, c, r, s in zip(prompts, batch["chosen"], batch["rejected"], systems, strict=True)
        ]


def preference_reads(
    columns: list[str], file_name: str, transform: str | None
) -> tuple[tuple[str, ...], PreferenceConverter, str]:
    """(columns to read, converter, description) for a preference file."""
    if not is_preference(columns):
        raise LlmctlError(
            f"{file_name} has no chosen/rejected columns for preference data (columns found: {', '.join(columns) or 'none'})",
            "preference rows need 'chosen' and 'rejected' (and 'prompt' or 'question' unless they are whole conversations)",
        )
    prompt = next((c for c in ("prompt", "question", "instruction") if c in columns), None)
    system = "system" if "system" in columns else None
    reads = tuple(c for c in (prompt, system, "chosen", "rejected") if c)
    converter = PreferenceConverter(prompt, system, transcripts=True)
    how = (
        "preference: "
        + (f"'{prompt}' -> prompt, " if prompt else "shared turns -> prompt, ")
        + ("'system' -> system turn, " if system else "")
        + "chosen/rejected -> assistant replies"
    )
    if transform == "hh-rlhf":
        how = (
            "preference: Human/Assistant transcripts, shared turns -> prompt, last replies -> chosen/rejected"
        )
    return reads, converter, how
