"""`llmctl eval` as one function: open the checkpoint once, score shards, texts and tasks, aggregate.

request = EvalRequest(checkpoint="runs/py/checkpoints/latest", data="tokens/py", tasks=["hellaswag"])
report = run_eval(request)
report["bpb"], report["tasks"]["hellaswag"]["acc"], report["aggregate"]["centered_acc"]
reports = run_evals(request, ["runs/base/checkpoints/latest", "runs/sft/checkpoints/latest"])

Tasks are read (and named ones downloaded) once, limited and given their few-shot examples once, then
scored by each checkpoint in turn, so every checkpoint answers exactly the same prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from llmctl.errors import LlmctlError

Progress = Callable[[str, int, int], None]
"""on_progress(what, done, total)."""
Note = Callable[[str], None]
"""on_note(message): what the caller should show on stderr (a named task being downloaded)."""


@dataclass(frozen=True)
class EvalRequest:
    """What `llmctl eval` was asked to do."""

    checkpoint: str
    data: str | None = None
    """Token directory for language-model scoring."""
    split: str = "validation"
    max_tokens: int | None = None
    text: str | None = None
    """A text, JSONL or parquet file scored like --data, tokenized on the fly."""
    text_column: str = "text"
    tasks: list[str] = field(default_factory=list)
    """JSONL files, folders a download wrote, or task names (llmctl's or lm-eval's)."""
    limit: float | None = None
    """Items per task at most (the first ones); below 1, that fraction of them (rounded up)."""
    num_fewshot: int = 0
    fewshot_seed: int = 1234
    apply_chat_template: bool = False
    """Multiple choice: render each context as a user turn of the model's chat template."""
    batch_tokens: int = 8192
    """Padded tokens per forward pass for multiple-choice scoring."""
    batch_size: int = 8
    """Windows per forward pass for token scoring."""
    regex: str | None = None
    """Answer extraction for generative tasks (overrides a task folder's own)."""
    max_new_tokens: int = 256
    device: str = "auto"
    rewards: list[str] = field(default_factory=list)
    """Generative tasks: reward specs (eval/rewards.py), scored as pass@1 and pass@num_samples."""
    reward_modules: list[str] = field(default_factory=list)
    """Generative tasks: the user's own rewards, FILE.py:function[:WEIGHT]."""
    num_samples: int = 1
    """Generative tasks: replies per item (pass@k; needs temperature above 0)."""
    temperature: float = 0.0
    seed: int = 0
    """Generative tasks: sample j of every item is drawn with seed + j."""


@dataclass
class PreparedTask:
    """A task's items as every checkpoint scores them: limited, few-shot examples prepended."""

    name: str
    kind: str
    items: list[Any]
    total: int
    """Items the task holds (before --limit)."""
    options: dict[str, Any]
    info: dict[str, Any]


def prepare_tasks(request: EvalRequest, on_note: Note | None = None) -> list[PreparedTask]:
    """Load, limit and few-shot every task of the request once."""
    from llmctl.eval.fewshot import add_fewshot, limit_items
    from llmctl.eval.load import load_task

    tasks = [load_task(spec, on_note) for spec in request.tasks]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise LlmctlError(
            f"two tasks share a name: {', '.join(names)}",
            "task names come from file or folder names; rename one",
        )
    prepared = []
    for task in tasks:
        items = limit_items(task.items, request.limit)
        if request.num_fewshot and task.kind != "choice":
            raise LlmctlError(
                f"--num-fewshot applies to multiple-choice tasks; {task.name} is generative",
                "write the examples into the generative task's prompts, or drop --num-fewshot",
            )
        if request.num_fewshot:
            extra = bool((task.info.get("lm_eval") or {}).get("fewshot_draws_extra", False))
            items = add_fewshot(
                items,
                task.fewshot_pool(),
                k=request.num_fewshot,
                seed=request.fewshot_seed,
                draws_extra=extra,
            )
        prepared.append(PreparedTask(task.name, task.kind, items, len(task.items), task.options, task.info))
    return prepared


def run_eval(
    request: EvalRequest,
    on_progress: Progress | None = None,
    keep_items: bool = False,
    on_note: Note | None = None,
) -> dict[str, Any]:
    """Everything the request asks for, as the `--json` document (per-item records with keep_items)."""
    (report,) = run_evals(request, [request.checkpoint], on_progress, keep_items, on_note)
    return report


def run_evals(
    request: EvalRequest,
    checkpoints: Sequence[str],
    on_progress: Progress | None = None,
    keep_items: bool = False,
    on_note: Note | None = None,
) -> list[dict[str, Any]]:
    """One report per checkpoint, all on the same data, texts and prepared tasks."""
    from llmctl.eval.model_io import open_model

    if request.data is None and request.text is None and not request.tasks:
        raise LlmctlError(
            "nothing to evaluate",
            "pass --data TOKENS or --text FILE (bits per byte) and/or --task NAME or PATH",
        )
    if request.data is not None and request.text is not None:
        raise LlmctlError("pass --data or --text, not both", "evaluate them in two runs")
    tasks = prepare_tasks(request, on_note)
    rewards = load_rewards(request, tasks)
    reports = []
    for checkpoint in checkpoints:
        loaded = open_model(checkpoint, request.device)
        reports.append(
            evaluate_loaded(
                loaded, replace(request, checkpoint=checkpoint), tasks, on_progress, keep_items, rewards
            )
        )
    return reports


def load_rewards(request: EvalRequest, tasks: Sequence[PreparedTask]) -> list[Any]:
    """The request's rewards, parsed (and reward modules imported) once, before any checkpoint loads."""
    from llmctl.eval.rewards import load_reward_module, parse_reward

    asked = request.rewards or request.reward_modules or request.num_samples > 1
    if asked and not any(t.kind == "generate" for t in tasks):
        raise LlmctlError(
            "--reward, --reward-module and --num-samples score generative tasks, and none was given",
            "pass a generative --task (items with 'prompt' or 'messages' and 'answer')",
        )
    if request.num_samples < 1:
        raise LlmctlError(f"--num-samples is {request.num_samples}", "pass --num-samples 1 or more")
    return [parse_reward(s) for s in request.rewards] + [
        load_reward_module(s) for s in request.reward_modules
    ]


def _score_lm(loaded: Any, request: EvalRequest, progress: Callable[[str], Any]) -> dict[str, Any]:
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
        return lm.to_dict()
    from llmctl.eval.text_lm import score_text

    assert request.text is not None
    lm = score_text(
        loaded,
        request.text,
        column=request.text_column,
        max_tokens=request.max_tokens,
        batch_size=request.batch_size,
        on_progress=progress("text tokens"),
    )
    return {**lm.to_dict(), "text": request.text}


def _score_task(
    loaded: Any, request: EvalRequest, task: PreparedTask, on_progress: Any, rewards: Sequence[Any] = ()
) -> Any:
    if task.kind == "choice":
        from llmctl.eval.choice import score_choices

        items, pair_ids = task.items, None
        if request.apply_chat_template:
            from llmctl.eval.chat_prompt import chat_pairs, without_delimiter

            items, pair_ids = [without_delimiter(i) for i in items], chat_pairs(loaded)
        return score_choices(
            loaded, items, batch_tokens=request.batch_tokens, on_progress=on_progress, pair_ids=pair_ids
        )
    from llmctl.eval.generative import score_generations

    return score_generations(
        loaded,
        task.items,
        regex=request.regex or task.options.get("regex"),
        max_new_tokens=request.max_new_tokens,
        on_progress=on_progress,
        batch_size=request.batch_size,
        rewards=rewards,
        num_samples=request.num_samples,
        temperature=request.temperature,
        seed=request.seed,
    )


def evaluate_loaded(
    loaded: Any,
    request: EvalRequest,
    tasks: Sequence[PreparedTask],
    on_progress: Progress | None = None,
    keep_items: bool = False,
    rewards: Sequence[Any] = (),
) -> dict[str, Any]:
    """The report of one opened checkpoint on the request's data or text and the prepared tasks."""
    report: dict[str, Any] = {
        "checkpoint": request.checkpoint,
        "step": loaded.manifest.get("step"),
        "device": str(loaded.device),
    }

    def progress(what: str) -> Callable[[int, int], None] | None:
        if on_progress is None:
            return None
        return lambda done, total: on_progress(what, done, total)

    if request.data is not None or request.text is not None:
        report.update(_score_lm(loaded, request, progress))
    results: dict[str, Any] = {}
    centered: list[float] = []
    for task in tasks:
        res = _score_task(loaded, request, task, progress(task.name), rewards)
        if task.kind == "choice":
            centered.append(res.centered_acc)
        record = {
            "kind": task.kind,
            **res.to_dict(),
            "num_fewshot": request.num_fewshot,
            "items_total": task.total,
            "lm_eval": task.info.get("lm_eval"),
        }
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
