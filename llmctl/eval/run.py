"""`llmctl eval` as one function: open the checkpoint once, score shards and tasks, aggregate.

request = EvalRequest(checkpoint="runs/py/checkpoints/latest", data="tokens/py", tasks=["evals/hellaswag"])
report = run_eval(request)
report["bpb"], report["tasks"]["hellaswag"]["acc"], report["aggregate"]["centered_acc"]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import LlmctlError

Progress = Callable[[str, int, int], None]
"""on_progress(what, done, total)."""


@dataclass(frozen=True)
class EvalRequest:
    """What `llmctl eval` was asked to do."""

    checkpoint: str
    data: str | None = None
    """Token directory for language-model scoring."""
    split: str = "validation"
    max_tokens: int | None = None
    tasks: list[str] = field(default_factory=list)
    """JSONL files or folders a download wrote."""
    limit: int | None = None
    """Items per task at most (the first ones)."""
    batch_tokens: int = 8192
    """Padded tokens per forward pass for multiple-choice scoring."""
    batch_size: int = 8
    """Windows per forward pass for token scoring."""
    regex: str | None = None
    """Answer extraction for generative tasks (overrides a task folder's own)."""
    max_new_tokens: int = 256
    device: str = "auto"


def run_eval(
    request: EvalRequest, on_progress: Progress | None = None, keep_items: bool = False
) -> dict[str, Any]:
    """Everything the request asks for, as the `--json` document (per-item records with keep_items)."""
    from llmctl.eval.load import load_task
    from llmctl.eval.model_io import open_model

    if request.data is None and not request.tasks:
        raise LlmctlError("nothing to evaluate", "pass --data TOKENS (bits per byte) and/or --task PATH")
    tasks = [load_task(spec) for spec in request.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise LlmctlError(
            f"two tasks share a name: {', '.join(names)}",
            "task names come from file or folder names; rename one",
        )
    loaded = open_model(request.checkpoint, request.device)
    report: dict[str, Any] = {
        "checkpoint": request.checkpoint,
        "step": loaded.manifest.get("step"),
        "device": str(loaded.device),
    }

    def progress(what: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        return lambda done, total: on_progress(what, done, total)

    if request.data is not None:
        from llmctl.eval.lm import score_tokens

        lm = score_tokens(
            loaded,
            request.data,
            request.split,
            max_tokens=request.max_tokens,
            batch_size=request.batch_size,
            on_progress=progress(f"{request.split} tokens"),
        )
        report.update(lm.to_dict())
    results: dict[str, Any] = {}
    centered: list[float] = []
    for task in tasks:
        items = task.items[: request.limit] if request.limit else task.items
        if task.kind == "choice":
            from llmctl.eval.choice import score_choices

            res = score_choices(
                loaded, items, batch_tokens=request.batch_tokens, on_progress=progress(task.name)
            )
            centered.append(res.centered_acc)
        else:
            from llmctl.eval.generative import score_generations

            res = score_generations(
                loaded,
                items,
                regex=request.regex or task.options.get("regex"),
                max_new_tokens=request.max_new_tokens,
                on_progress=progress(task.name),
            )
        record = {"kind": task.kind, **res.to_dict()}
        if keep_items:
            record["items"] = res.items
        results[task.name] = record
    if tasks:
        report["tasks"] = results
        report["aggregate"] = {
            "centered_acc": sum(centered) / len(centered) if centered else None,
            "choice_tasks": len(centered),
        }
    return report
