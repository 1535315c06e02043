"""Named evaluation tasks for `llmctl data download`: a Hub file converted to the task JSONL, once.

    result = download_task("hellaswag", Path("evals/hellaswag"))
    # evals/hellaswag/items.jsonl   one multiple-choice item per line (llmctl/eval/tasks.py)
    # evals/hellaswag/fewshot.jsonl the split lm-eval draws few-shot examples from (train), as items
    # evals/hellaswag/eval.json     source repo, resolved commit, file SHA-256, split, item count

`llmctl eval --task evals/hellaswag` then reads the folder with no network. Each converter writes the
prompt lm-evaluation-harness uses for the task, with its target delimiter (" ") in each item's
`target_delimiter`, so that acc_norm divides by the choice's own length as lm-eval does (format 1
folded it into the choices; llmctl/eval/tasks.py still reads those folders right). Winogrande is scored the way
lm-eval scores it: one context per option (the sentence up to the blank, with the option filled in)
and the same continuation (the rest of the sentence, after the " " delimiter) for each.

`llmctl eval --task hellaswag` (or lm-eval's name, `arc_easy`) downloads a named task into llmctl's cache on
first use (llmctl/eval/named.py).

Repos, files and splits were checked on the Hub (tree pages and lm-eval task configs), see README.
"""

from __future__ import annotations

import fnmatch
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

Row = dict[str, Any]


def _hellaswag_text(text: str) -> str:
    # lm-eval's hellaswag preprocess: WikiHow markup out, double spaces collapsed.
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(row: Row) -> Row:
    """Rowan/hellaswag row -> {"context", "target_delimiter", "choices", "label", "id"}."""
    ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
    return {
        "context": _hellaswag_text(row["activity_label"] + ": " + ctx),
        "target_delimiter": " ",
        "choices": [_hellaswag_text(e) for e in row["endings"]],
        "label": int(row["label"]),
        "id": row.get("ind"),
    }


def arc_item(row: Row) -> Row:
    """allenai/ai2_arc row -> item; the answer key is a letter or a digit among choices.label."""
    choices = row["choices"]
    return {
        "context": f"Question: {row['question']}\nAnswer:",
        "target_delimiter": " ",
        "choices": list(choices["text"]),
        "label": list(choices["label"]).index(row["answerKey"]),
        "id": row.get("id"),
    }


def piqa_item(row: Row) -> Row:
    """baber/piqa row -> item."""
    return {
        "context": f"Question: {row['goal']}\nAnswer:",
        "target_delimiter": " ",
        "choices": [row["sol1"], row["sol2"]],
        "label": int(row["label"]),
        "id": row.get("id"),
    }


def winogrande_item(row: Row) -> Row:
    """allenai/winogrande row -> item with one context per option and the shared continuation."""
    sentence = row["sentence"]
    blank = sentence.index("_")
    rest = sentence[blank + 1 :].strip()
    return {
        "contexts": [sentence[:blank] + row["option1"], sentence[:blank] + row["option2"]],
        "target_delimiter": " ",
        "choices": [rest, rest],
        "label": int(row["answer"]) - 1,
        "id": row.get("id"),
    }


@dataclass(frozen=True)
class EvalSource:
    """Where a named task lives on the Hub and how its rows become items."""

    name: str
    description: str
    repo: str
    file_glob: str
    """Repository file holding the evaluated split (exactly one must match)."""
    split: str
    items: int
    """Items in that split, as the dataset card states."""
    convert: Callable[[Row], Row]
    fewshot_glob: str
    """Repository file holding the split lm-eval draws few-shot examples from (its training_split)."""
    lm_eval_name: str
    """The task's name in lm-evaluation-harness (also accepted by `llmctl eval --task`)."""
    fewshot_draws_extra: bool
    """lm-eval draws k + 1 examples and drops the evaluated item (then keeps k) for tasks whose config
    has no test_split (its few-shot split, None, then equals the test split); k for the others."""
    revision: str = "main"
    licence: str = ""
    lm_eval_version: float = 1.0


EVAL_SOURCES: dict[str, EvalSource] = {
    s.name: s
    for s in [
        EvalSource(
            "hellaswag",
            "HellaSwag sentence completion (Zellers et al. 2019), 4 choices",
            "Rowan/hellaswag",
            "data/validation-*.parquet",
            "validation",
            10042,
            hellaswag_item,
            "data/train-*.parquet",
            "hellaswag",
            True,
            licence="MIT",
        ),
        EvalSource(
            "arc-easy",
            "AI2 Reasoning Challenge, easy set (Clark et al. 2018), 3-5 choices",
            "allenai/ai2_arc",
            "ARC-Easy/test-*.parquet",
            "test",
            2376,
            arc_item,
            "ARC-Easy/train-*.parquet",
            "arc_easy",
            False,
            licence="CC-BY-SA-4.0",
        ),
        EvalSource(
            "arc-challenge",
            "AI2 Reasoning Challenge, challenge set, 3-5 choices",
            "allenai/ai2_arc",
            "ARC-Challenge/test-*.parquet",
            "test",
            1172,
            arc_item,
            "ARC-Challenge/train-*.parquet",
            "arc_challenge",
            False,
            licence="CC-BY-SA-4.0",
        ),
        EvalSource(
            "piqa",
            "Physical commonsense QA (Bisk et al. 2020), 2 choices",
            "baber/piqa",
            "piqa_validation.parquet",
            "validation",
            1838,
            piqa_item,
            "piqa_train.parquet",
            "piqa",
            True,
            licence="AFL-3.0",
        ),
        EvalSource(
            "winogrande",
            "WinoGrande XL fill-in-the-blank (Sakaguchi et al. 2019), 2 choices",
            "allenai/winogrande",
            "winogrande_xl/validation-*.parquet",
            "validation",
            1267,
            winogrande_item,
            "winogrande_xl/train-*.parquet",
            "winogrande",
            True,
            licence="CC-BY",
        ),
    ]
}


def _read_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise LlmctlError(
            f"cannot read {path.name} as parquet ({exc})", "run the download again with --force"
        ) from exc


def _same_download(out: Path, source: EvalSource, commit: str | None) -> dict[str, Any] | None:
    from llmctl.eval.tasks import FEWSHOT_JSONL, ITEMS_JSONL, TASK_JSON

    try:
        info = json.loads((out / TASK_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not (out / ITEMS_JSONL).is_file() or info.get("source", {}).get("name") != source.name:
        return None
    if commit is not None and info["source"].get("commit") != commit:
        return None
    if commit is not None and not (out / FEWSHOT_JSONL).is_file():
        return None  # written before few-shot pools were: the same commit, downloaded again
    return info


def _fetch_items(listing: Any, source: EvalSource, glob: str, progress: Any) -> tuple[str, str, list[Row]]:
    """(file, SHA-256, converted items) of the one repository file matching `glob`."""
    from llmctl.raw.hub import fetch_hub_file

    matches = sorted(f for f in listing.files if fnmatch.fnmatch(f, glob))
    if len(matches) != 1:
        raise LlmctlError(
            f"{source.repo}@{listing.commit[:12]} holds {len(matches)} files matching {glob}, expected one",
            "the dataset's layout changed on the Hub; download hf:"
            + source.repo
            + " and convert it yourself",
        )
    path, sha256 = fetch_hub_file(listing, matches[0], progress)
    rows = _read_rows(path)
    try:
        return matches[0], sha256, [source.convert(r) for r in rows]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise LlmctlError(
            f"{matches[0]} from {source.repo} does not have the columns {source.name} needs ({exc!r})",
            "the dataset's layout changed on the Hub; please report it",
        ) from exc


def download_task(
    name: str, out: Path, *, force: bool = False, cache_dir: str | None = None, progress: Any = None
) -> tuple[dict[str, Any], bool]:
    """Fetch and convert the named task into `out`; returns (eval.json contents, skipped)."""
    from llmctl.eval.tasks import FEWSHOT_JSONL, ITEMS_JSONL, TASK_JSON, read_items
    from llmctl.files import atomic_path, atomic_write_json, atomic_write_text
    from llmctl.raw.hub import list_hub_files

    source = EVAL_SOURCES[name]
    out = Path(out)
    start = time.perf_counter()
    listing = list_hub_files(source.repo, source.revision, cache_dir)
    if not force:
        info = _same_download(out, source, listing.commit)
        if info is not None:
            return info, True
    if out.exists() and not force and any(out.iterdir()):
        older = _same_download(out, source, None)
        if older is not None and older["source"].get("commit") == listing.commit:
            raise LlmctlError(
                f"{out} holds {name} without the few-shot examples (written by an older llmctl)",
                "pass --force to download it again with them",
            )
        if older is not None:
            raise LlmctlError(
                f"{out} holds {name} from commit {older['source'].get('commit', '?')[:12]}; "
                f"{source.repo} is now at {listing.commit[:12]}",
                "pass --force to replace it with the new commit, or keep evaluating the copy you have",
            )
        raise LlmctlError(
            f"{out} already exists and holds something else", "pass --force to replace it, or another --out"
        )
    evaluated, eval_sha, items = _fetch_items(listing, source, source.file_glob, progress)
    pool_file, pool_sha, pool = _fetch_items(listing, source, source.fewshot_glob, progress)
    info = {
        "format": "llmctl-eval-task",
        "format_version": 3,
        "kind": "choice",
        "items": len(items),
        "source": {
            "name": name,
            "repo": source.repo,
            "revision": source.revision,
            "commit": listing.commit,
            "file": evaluated,
            "sha256": eval_sha,
            "split": source.split,
            "offline": listing.offline,
        },
        "fewshot": {"file": pool_file, "sha256": pool_sha, "split": "train", "items": len(pool)},
        "lm_eval": {
            "task": source.lm_eval_name,
            "version": source.lm_eval_version,
            "fewshot_draws_extra": source.fewshot_draws_extra,
        },
        "seconds": time.perf_counter() - start,
    }
    with atomic_path(out, directory=True) as tmp:
        for file, rows in ((ITEMS_JSONL, items), (FEWSHOT_JSONL, pool)):
            atomic_write_text(tmp / file, "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in rows))
            read_items(tmp / file)  # the converter's output must load: fail here, not at eval time
        atomic_write_json(tmp / TASK_JSON, info)
    return info, False
