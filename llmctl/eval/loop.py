"""Task evaluation inside a training run: the same scorers as `llmctl eval`, on the live model.

    hook = TaskEvalHook(["evals/hellaswag", "mine.jsonl"], tokenizer, data_meta, limit=500)   # at start
    result = hook.run(model, device)      # {"tasks": {name: {"n", "acc", ...}}, "centered_acc": ..., "seconds": ...}

Tasks are loaded (and checked) once, when the hook is built, so a bad path fails before step 1. `run`
switches the model to eval mode and back, and scores multiple-choice tasks only: generation in the
loop would cost too much and the objective's sample rounds already show it. Run it on one rank.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from llmctl.errors import LlmctlError
from llmctl.eval.model_io import LoadedModel


class TaskEvalHook:
    """Multiple-choice tasks, loaded once, scored on demand."""

    def __init__(
        self,
        specs: Sequence[str],
        tokenizer: Any,
        data_meta: dict[str, Any],
        *,
        limit: int | None = None,
        batch_tokens: int = 8192,
    ) -> None:
        from llmctl.eval.load import load_task

        self.tasks = [load_task(s) for s in specs]
        generative = [t.name for t in self.tasks if t.kind != "choice"]
        if generative:
            raise LlmctlError(
                f"train.eval_tasks takes multiple-choice tasks only; {', '.join(generative)} is generative",
                "evaluate generative tasks after training with `llmctl eval CHECKPOINT --task PATH`",
            )
        self.tokenizer = tokenizer
        self.manifest = {"data_meta": data_meta}
        self.limit = limit
        self.batch_tokens = batch_tokens

    @torch.no_grad()
    def run(self, model: Any, device: torch.device) -> dict[str, Any]:
        """Score every task on `model` (left in the mode it was in)."""
        from llmctl.eval.choice import score_choices

        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            loaded = LoadedModel(model, self.tokenizer, self.manifest, device, "training")
            results = {}
            for task in self.tasks:
                items = task.items[: self.limit] if self.limit else task.items
                results[task.name] = score_choices(loaded, items, batch_tokens=self.batch_tokens).to_dict()
        finally:
            model.train(was_training)
        centered = [r["centered_acc"] for r in results.values()]
        return {
            "tasks": results,
            "centered_acc": sum(centered) / len(centered) if centered else None,
            "seconds": time.perf_counter() - start,
        }
