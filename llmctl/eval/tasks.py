"""Evaluation tasks on disk: a JSONL file of items, or a folder `llmctl data download` wrote.

    task = read_task(Path("evals/hellaswag"))    # folder: items.jsonl + eval.json (+ fewshot.jsonl)
    task = read_task(Path("my_task.jsonl"))      # name: my_task
    task.kind                                    # "choice" or "generate"

Multiple-choice items: {"context": str, "choices": [str, ...], "label": int, "id"?: any,
"target_delimiter"?: str}; or, for tasks scored lm-eval's "partial" way (Winogrande), "contexts": [str, ...]
with one context per choice. The delimiter (lm-eval's target_delimiter, "" when absent) goes between
context and choice but is not part of the choice's length for acc_norm.
Generative items: {"prompt": str | "messages": [{"role", "content"}, ...], "answer": str, "id"?: any}.
The kind is taken from the items; a file mixing both is an error naming the first odd line.
A folder may hold `fewshot.jsonl`, items of the same kind that few-shot examples are drawn from
(llmctl/eval/fewshot.py); `data download` writes the split lm-eval draws them from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from llmctl.errors import LlmctlError

ITEMS_JSONL = "items.jsonl"
FEWSHOT_JSONL = "fewshot.jsonl"
TASK_JSON = "eval.json"
TaskKind = Literal["choice", "generate"]


@dataclass(frozen=True)
class ChoiceItem:
    """One multiple-choice question."""

    context: str
    choices: list[str]
    label: int
    id: Any = None
    contexts: list[str] | None = None
    """One context per choice (Winogrande's partial scoring), replacing `context`."""
    delimiter: str = ""
    """Written between context and choice (lm-eval's target_delimiter); not counted in acc_norm's length."""

    def pairs(self) -> list[tuple[str, str]]:
        """(context, continuation) scored for each choice; the continuation starts with the delimiter."""
        contexts = self.contexts if self.contexts is not None else [self.context] * len(self.choices)
        return [(ctx, self.delimiter + c) for ctx, c in zip(contexts, self.choices, strict=True)]


@dataclass(frozen=True)
class GenerateItem:
    """One question answered by generating text."""

    answer: str
    prompt: str | None = None
    messages: list[dict[str, str]] | None = None
    id: Any = None


@dataclass
class Task:
    """A named list of items of one kind, with the options its folder records (e.g. an answer regex)."""

    name: str
    kind: TaskKind
    items: list[Any]
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    """The folder's eval.json (source, few-shot split, lm-eval's name and version); {} for a file."""

    def fewshot_pool(self) -> list[Any]:
        """The items few-shot examples are drawn from: the folder's fewshot.jsonl."""
        pool = self.path / FEWSHOT_JSONL
        if not (self.path.is_dir() and pool.is_file()):
            raise LlmctlError(
                f"task {self.name} has no few-shot examples ({pool} not found)",
                "few-shot needs a task folder with fewshot.jsonl (`llmctl data download` writes one; "
                "pass --force to refresh an older download), or drop --num-fewshot",
            )
        kind, items = read_items(pool)
        if kind != self.kind:
            raise LlmctlError(
                f"{pool} holds {kind} items, the task {self.kind} ones", "use items of one kind"
            )
        return [_unfold(i) for i in items] if _folded_delimiter(self.info) else items


def _bad(path: Path, line: int, what: str) -> LlmctlError:
    return LlmctlError(
        f"{path}:{line}: {what}",
        'multiple-choice lines are {"context": str, "choices": [str, ...], "label": int}; generative lines are '
        '{"prompt": str or "messages": [...], "answer": str}',
    )


def _choice(row: dict[str, Any], path: Path, line: int) -> ChoiceItem:
    context, choices, label = row.get("context"), row.get("choices"), row.get("label")
    contexts = row.get("contexts")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise _bad(path, line, "'choices' must be a list of at least two strings")
    if contexts is not None:
        if (
            not isinstance(contexts, list)
            or len(contexts) != len(choices)
            or not all(isinstance(c, str) for c in contexts)
        ):
            raise _bad(path, line, "'contexts' must be a list of strings, one per choice")
        context = ""
    elif not isinstance(context, str):
        raise _bad(path, line, "'context' must be a string")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise _bad(path, line, f"'label' must be an integer from 0 to {len(choices) - 1}")
    delimiter = row.get("target_delimiter", "")
    if not isinstance(delimiter, str):
        raise _bad(path, line, "'target_delimiter' must be a string")
    return ChoiceItem(
        context,
        list(choices),
        label,
        row.get("id"),
        list(contexts) if contexts is not None else None,
        delimiter,
    )


def _generate(row: dict[str, Any], path: Path, line: int) -> GenerateItem:
    answer, prompt, messages = row.get("answer"), row.get("prompt"), row.get("messages")
    if not isinstance(answer, str):
        raise _bad(path, line, "'answer' must be a string")
    if messages is not None:
        ok = (
            isinstance(messages, list)
            and messages
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages
            )
        )
        if not ok:
            raise _bad(path, line, '\'messages\' must be a non-empty list of {"role": str, "content": str}')
        return GenerateItem(answer, messages=list(messages), id=row.get("id"))
    if not isinstance(prompt, str):
        raise _bad(path, line, "a generative item needs 'prompt' (a string) or 'messages'")
    return GenerateItem(answer, prompt=prompt, id=row.get("id"))


def read_items(path: Path) -> tuple[TaskKind, list[Any]]:
    """The items of a JSONL file and their kind; blank lines are skipped."""
    kind: TaskKind | None = None
    items: list[Any] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        from llmctl.files import io_error

        raise io_error(exc, path, action="read") from exc
    except UnicodeDecodeError as exc:
        raise LlmctlError(f"{path} is not UTF-8 text", "write task files as UTF-8 JSON lines") from exc
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError as exc:
            raise _bad(path, number, f"not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise _bad(path, number, "each line must be a JSON object")
        this: TaskKind = "choice" if "choices" in row else "generate"
        if kind is not None and this != kind:
            raise _bad(path, number, f"a {this} item in a file of {kind} items")
        kind = this
        items.append(_choice(row, path, number) if this == "choice" else _generate(row, path, number))
    if kind is None:
        raise LlmctlError(f"{path} holds no items", "write one JSON object per line")
    return kind, items


# Named downloads whose first format put lm-eval's " " target delimiter at the start of every choice
# (Winogrande's until format 3).
_FOLDED_SOURCES = {"hellaswag": 1, "arc-easy": 1, "arc-challenge": 1, "piqa": 1, "winogrande": 2}


def _folded_delimiter(info: dict[str, Any]) -> bool:
    """True for a folder `data download` wrote, with a task's " " delimiter folded into its choices."""
    source = info.get("source") if isinstance(info.get("source"), dict) else {}
    version = info.get("format_version")
    return (
        info.get("format") == "llmctl-eval-task"
        and isinstance(version, int)
        and version <= _FOLDED_SOURCES.get(source.get("name"), 0)
    )


def _unfold(item: ChoiceItem) -> ChoiceItem:
    """A format-1 item with its folded " " taken off the choices as the delimiter, so acc_norm counts only
    the choice's own characters (as lm-eval does); the scored text is unchanged."""
    if item.delimiter or not all(c.startswith(" ") for c in item.choices):
        return item
    return replace(item, choices=[c[1:] for c in item.choices], delimiter=" ")


def read_task(path: Path) -> Task | None:
    """A task from a JSONL file (named after the file) or a folder a download wrote (named after the
    folder); None when nothing is at `path` (llmctl/eval/load.py's `load_task` then says what to do)."""
    if path.is_dir():
        items_path = path / ITEMS_JSONL
        if not items_path.is_file():
            raise LlmctlError(
                f"{path} holds no {ITEMS_JSONL}",
                "pass a JSONL file, or a folder written by `llmctl data download hellaswag --out DIR`",
            )
        info: dict[str, Any] = {}
        options: dict[str, Any] = {}
        if (path / TASK_JSON).is_file():
            try:
                info = dict(json.loads((path / TASK_JSON).read_text(encoding="utf-8")))
                options = dict(info.get("options") or {})
            except (ValueError, TypeError, AttributeError) as exc:
                raise LlmctlError(
                    f"{path / TASK_JSON} is not valid JSON", "download the task again with --force"
                ) from exc
        kind, items = read_items(items_path)
        if _folded_delimiter(info):
            items = [_unfold(item) for item in items]
        return Task(path.resolve().name, kind, items, path, options, info)
    if path.is_file():
        kind, items = read_items(path)
        return Task(path.stem, kind, items, path)
    return None
