"""A report written as lm-evaluation-harness's results JSON, so dashboards that read lm-eval's files read ours.

    doc = lm_eval_results(report, request)
    doc["results"]["arc_easy"]["acc_norm,none"], doc["n-shot"]["arc_easy"], doc["versions"]["arc_easy"]

The keys are those of lm-eval 0.4's `results_*.json` (lm_eval/result_schema.py): results (metric,filter
keys "acc,none", "acc_stderr,none", ...; the stderr is the sample standard error sqrt(p(1-p)/(n-1)), "N/A"
for a single item, as lm-eval writes it), group_subtasks, configs, versions, n-shot, higher_is_better,
n-samples, config (model and run settings), git_hash, date. Named tasks take lm-eval's names (arc_easy) and
versions; other tasks keep their own name and version null. Token or text scoring adds a task named after
the split or file with lm-eval's perplexity-task metrics (bits_per_byte, byte_perplexity).
"""

from __future__ import annotations

import math
import time
from typing import Any


def _stderr(value: float | None) -> float | str:
    return "N/A" if value is None or not math.isfinite(value) else value


def _choice(record: dict[str, Any], alias: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "acc,none": record["acc"],
        "acc_stderr,none": _stderr(record["acc_stderr"]),
        "acc_norm,none": record["acc_norm"],
        "acc_norm_stderr,none": _stderr(record["acc_norm_stderr"]),
    }


def _generate(record: dict[str, Any], alias: str) -> dict[str, Any]:
    return {
        "alias": alias,
        "exact_match,none": record["exact_match"],
        "exact_match_stderr,none": _stderr(record["exact_match_stderr"]),
    }


def _task_config(name: str, record: dict[str, Any], version: Any, request: Any) -> dict[str, Any]:
    metrics = ["acc", "acc_norm"] if record["kind"] == "choice" else ["exact_match"]
    return {
        "task": name,
        "output_type": "multiple_choice" if record["kind"] == "choice" else "generate_until",
        "num_fewshot": record.get("num_fewshot", 0),
        "fewshot_delimiter": "\n\n",
        "target_delimiter": "" if request.apply_chat_template else " ",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics],
        "metadata": {"version": version},
    }


def lm_eval_results(report: dict[str, Any], request: Any) -> dict[str, Any]:
    """The report of one checkpoint as lm-eval's results document."""
    results: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    versions: dict[str, Any] = {}
    n_shot: dict[str, int] = {}
    better: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    for own, record in (report.get("tasks") or {}).items():
        source = record.get("lm_eval") or {}
        name = source.get("task") or own
        version = source.get("version")
        results[name] = (_choice if record["kind"] == "choice" else _generate)(record, name)
        configs[name] = _task_config(name, record, version, request)
        versions[name] = version
        n_shot[name] = record.get("num_fewshot", 0)
        metrics = ("acc", "acc_norm") if record["kind"] == "choice" else ("exact_match",)
        better[name] = {m: True for m in metrics}
        samples[name] = {"original": record.get("items_total", record["n"]), "effective": record["n"]}
    if "loss" in report:
        name = report.get("text") or report["split"]
        results[name] = {
            "alias": name,
            "bits_per_byte,none": report["bpb"],
            "bits_per_byte_stderr,none": "N/A",
            "byte_perplexity,none": 2.0 ** report["bpb"],
            "byte_perplexity_stderr,none": "N/A",
        }
        versions[name], n_shot[name] = None, 0
        better[name] = {"bits_per_byte": False, "byte_perplexity": False}
    return {
        "results": results,
        "group_subtasks": {name: [] for name in results},
        "configs": dict(sorted(configs.items())),
        "versions": dict(sorted(versions.items())),
        "n-shot": dict(sorted(n_shot.items())),
        "higher_is_better": dict(sorted(better.items())),
        "n-samples": samples,
        "config": {
            "model": "llmctl",
            "model_args": f"checkpoint={report['checkpoint']}",
            "model_num_parameters": None,
            "batch_size": request.batch_tokens,
            "device": report.get("device"),
            "limit": request.limit,
            "bootstrap_iters": 0,
            "fewshot_seed": request.fewshot_seed,
            "apply_chat_template": request.apply_chat_template,
            "step": report.get("step"),
        },
        "git_hash": None,
        "date": time.time(),
        "model_name": report["checkpoint"],
    }
