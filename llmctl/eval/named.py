"""Named tasks by llmctl's or lm-eval's name, downloaded into llmctl's cache on first use.

    folder = named_task_folder("arc_easy")   # $LLMCTL_CACHE/evals/arc-easy (~/.cache/llmctl/...), fetched once

A name is llmctl's (`arc-easy`) or lm-evaluation-harness's (`arc_easy`). Once downloaded, the folder is read
with no network; when the download cannot be made (no network, HF_HUB_OFFLINE and nothing cached), the error
names the exact `llmctl data download` command to run where the Hub is reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from llmctl.errors import LlmctlError


def canonical_name(spec: str) -> str | None:
    """llmctl's name of a named task given by either name, or None for anything else."""
    from llmctl.eval.sources import EVAL_SOURCES

    if spec in EVAL_SOURCES:
        return spec
    return next((s.name for s in EVAL_SOURCES.values() if s.lm_eval_name == spec), None)


def cached_folder(name: str) -> Path:
    """Where `eval` keeps a named task it downloaded itself."""
    from llmctl.files import cache_root

    return cache_root() / "evals" / name


def named_task_folder(spec: str, on_note: Callable[[str], None] | None = None) -> Path | None:
    """The folder of the named task `spec` (downloaded now if it is not yet), or None if `spec` names none."""
    from llmctl.eval.sources import download_task
    from llmctl.eval.tasks import FEWSHOT_JSONL, ITEMS_JSONL

    name = canonical_name(spec)
    if name is None:
        return None
    folder = cached_folder(name)
    if (folder / ITEMS_JSONL).is_file() and (folder / FEWSHOT_JSONL).is_file():
        return folder
    if on_note is not None:
        on_note(f"task {spec} is not downloaded yet: downloading it into {folder}")
    try:
        # --force only replaces what a download wrote (an older one without few-shot examples).
        download_task(name, folder, force=folder.exists())
    except LlmctlError as exc:
        raise LlmctlError(
            f"task '{spec}' is not downloaded and could not be downloaded now ({exc.message})",
            f"where the Hugging Face Hub is reachable run `llmctl data download {name} --out {folder}` "
            "(the same cache folder), then evaluate again",
        ) from exc
    return folder
