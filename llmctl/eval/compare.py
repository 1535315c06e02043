"""Several checkpoints' reports as one table: a row per metric, a column per checkpoint, and each one's
difference from the first (base -> continued pretraining -> SFT -> DPO -> GRPO).

    table = compare_reports(run_evals(request, ["runs/base/...", "runs/cpt/...", "runs/sft/..."]))
    table["rows"][0]   # {"metric": "hellaswag acc_norm", "values": [0.26, 0.28, 0.29],
                       #  "deltas": [None, 0.02, 0.03], "stderr": [0.004, 0.004, 0.004], "higher_is_better": True}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_LM_METRICS = (("bpb", False), ("loss", False), ("perplexity", False), ("accuracy", True))
_CHOICE_METRICS = (("acc", True), ("acc_norm", True), ("centered_acc", True))


def _rows_of(report: dict[str, Any]) -> list[tuple[str, float | None, float | None, bool]]:
    """(metric, value, standard error, higher is better) of one report, in table order."""
    rows = []
    if "loss" in report:
        source = report.get("split")  # the file name for --text
        rows += [(f"{source} {m}", report.get(m), None, up) for m, up in _LM_METRICS]
    for name, r in (report.get("tasks") or {}).items():
        if r["kind"] == "choice":
            rows += [(f"{name} {m}", r.get(m), r.get(f"{m}_stderr"), up) for m, up in _CHOICE_METRICS]
        else:
            rows.append((f"{name} exact_match", r.get("exact_match"), r.get("exact_match_stderr"), True))
            # With --reward or --num-samples: pass@1, pass@k and the mean reward (GRPO before and after).
            scored = [k for k in r if k.startswith("pass@")] + (["reward"] if "reward" in r else [])
            rows += [(f"{name} {k}", r[k], None, True) for k in scored]
    aggregate = (report.get("aggregate") or {}).get("centered_acc")
    if aggregate is not None and (report.get("aggregate") or {}).get("choice_tasks", 0) > 1:
        rows.append(("mean centered_acc", aggregate, None, True))
    return rows


def compare_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The comparison table of `reports` (same data and tasks, one per checkpoint)."""
    per_report = [{m: (v, e, up) for m, v, e, up in _rows_of(r)} for r in reports]
    order = [m for m, *_ in _rows_of(reports[0])] if reports else []
    rows = []
    for metric in order:
        values = [p.get(metric, (None, None, True))[0] for p in per_report]
        first = values[0]
        rows.append(
            {
                "metric": metric,
                "values": values,
                "stderr": [p.get(metric, (None, None, True))[1] for p in per_report],
                "deltas": [None] + [None if v is None or first is None else v - first for v in values[1:]],
                "higher_is_better": per_report[0][metric][2],
            }
        )
    return {
        "checkpoints": [r["checkpoint"] for r in reports],
        "steps": [r.get("step") for r in reports],
        "rows": rows,
    }
