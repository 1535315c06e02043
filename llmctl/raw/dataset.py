"""The raw dataset layout written by `data download` and read by `tokenizer train` and `tokenize`.

    DIR/dataset.json                      source, revision, files, rows and bytes per split
    DIR/<split>/part-00000.parquet ...    a `text` column, or a `messages` column (list of {role, content})

Readers stream record batches, so memory stays flat however large the corpus is.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError

DATASET_JSON = "dataset.json"
PART_GLOB = "part-*.parquet"


def read_info(root: str | Path) -> dict[str, Any]:
    """dataset.json of a downloaded dataset, or a clear error when DIR is not one."""
    path = Path(root) / DATASET_JSON
    if not path.is_file():
        raise LlmctlError(
            f"{root} is not a llmctl dataset (no {DATASET_JSON})",
            "create one with `llmctl data download SOURCE --out DIR`",
        )
    return json.loads(path.read_text())


def list_splits(root: str | Path) -> list[str]:
    """Split names that have at least one parquet part, train first."""
    root = Path(root)
    splits = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and any(p.glob(PART_GLOB)))
        if root.is_dir()
        else []
    )
    order = {"train": 0, "validation": 1, "test": 2}
    return sorted(splits, key=lambda s: (order.get(s, 3), s))


def split_parts(root: str | Path, split: str) -> list[Path]:
    """The parquet parts of one split, in order; a clear error naming the splits found when missing."""
    parts = sorted((Path(root) / split).glob(PART_GLOB))
    if not parts:
        found = list_splits(root)
        raise LlmctlError(
            f"split '{split}' not found in {root}",
            f"splits found: {', '.join(found) or 'none'}; pick one with --split",
        )
    return parts


def column_kind(root: str | Path, split: str = "train") -> str:
    """'text' or 'messages': which column the split's parts hold."""
    import pyarrow.parquet as pq

    names = pq.read_schema(split_parts(root, split)[0]).names
    for kind in ("text", "messages"):
        if kind in names:
            return kind
    raise LlmctlError(
        f"{root}/{split} has neither a 'text' nor a 'messages' column (found: {', '.join(names)})",
        "re-create it with `llmctl data download ... --text-column NAME`",
    )


def iter_batches(
    root: str | Path, split: str, column: str = "text", batch_size: int = 1024
) -> Iterator[list[Any]]:
    """Stream one column of a split as Python lists of at most batch_size rows, part by part."""
    import pyarrow.parquet as pq

    for part in split_parts(root, split):
        pf = pq.ParquetFile(part)
        if column not in pf.schema_arrow.names:
            raise LlmctlError(
                f"{part} has no '{column}' column (found: {', '.join(pf.schema_arrow.names)})",
                "use a dataset written by `llmctl data download`, or pass --text-column",
            )
        for batch in pf.iter_batches(batch_size=batch_size, columns=[column]):
            yield batch.column(0).to_pylist()
