"""Which raw rows go into which token shard, and streaming those rows in chunks.

Shards are cut from parquet metadata alone (rows and uncompressed bytes per row group), never from
the number of processes, so every run of the same command over the same data plans the same shards:
that is what makes the output byte-identical for any --num-proc, lets a rerun skip complete shards,
and lets `--shard-index I --num-shards K` split the work between machines. A shard never spans two
parts; a row group larger than the target is divided into equal row ranges.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.raw.dataset import split_parts

CHUNK_BYTES = 1 << 19
"""Raw text per worker task: small enough to keep every worker busy, large enough to amortise a task."""
READ_BATCH_BYTES = 16 << 20
"""Raw text decoded from parquet at a time (the batch's rows follow from the average row size)."""


@dataclass(frozen=True)
class ShardPlan:
    """One shard: rows [row_start, row_stop) of one raw part."""

    split: str
    index: int
    part: Path
    row_start: int
    row_stop: int
    est_bytes: int

    @property
    def rows(self) -> int:
        """Raw rows (documents, empty ones included) the shard reads."""
        return self.row_stop - self.row_start

    def source(self) -> dict[str, Any]:
        """Where the shard's rows come from, as recorded in plan.json and the shard's .json."""
        return {"part": self.part.name, "rows": [self.row_start, self.row_stop]}


def resolve_column(data: Path, split: str, mode: str, column: str | None) -> str:
    """The raw column to read, or a clear error naming the columns the data has."""
    import pyarrow.parquet as pq

    names = pq.read_schema(split_parts(data, split)[0]).names
    wanted = column or ("messages" if mode == "sft" else "text")
    if wanted in names:
        return wanted
    found = ", ".join(names) or "none"
    if column:
        raise LlmctlError(
            f"{data}/{split} has no '{column}' column (found: {found})",
            "pass one of the columns found to --column",
        )
    if mode == "sft":
        hint = "SFT needs conversations: download a chat dataset, or pass --column NAME" + (
            "; this one has `text`: drop --mode sft" if "text" in names else ""
        )
    else:
        hint = "pass the text column with --column NAME" + (
            "; this one holds conversations: add --mode sft --profile chat" if "messages" in names else ""
        )
    raise LlmctlError(f"{data}/{split} has no '{wanted}' column (found: {found})", hint)


def _row_group_sizes(part: Path, column: str) -> list[tuple[int, int]]:
    """(rows, uncompressed bytes of `column`) per row group, from the footer only."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(part).metadata
    if column not in meta.schema.to_arrow_schema().names:
        raise LlmctlError(
            f"{part} has no '{column}' column (found: {', '.join(meta.schema.to_arrow_schema().names)})",
            "every part of a split must have the same columns: re-create the dataset with `llmctl data download`",
        )
    sizes = []
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        nbytes = sum(
            rg.column(j).total_uncompressed_size
            for j in range(rg.num_columns)
            if rg.column(j).path_in_schema == column or rg.column(j).path_in_schema.startswith(column + ".")
        )
        sizes.append((rg.num_rows, nbytes))
    return sizes


def plan_split(data: Path, split: str, column: str, target_bytes: int) -> list[ShardPlan]:
    """Cut a split into shards of about target_bytes of raw text each."""
    plans: list[ShardPlan] = []

    def emit(part: Path, start: int, stop: int, nbytes: int) -> None:
        if stop > start:
            plans.append(ShardPlan(split, len(plans), part, start, stop, nbytes))

    for part in split_parts(data, split):
        start = row = acc = 0
        for rows, nbytes in _row_group_sizes(part, column):
            if nbytes > target_bytes:
                emit(part, start, row, acc)
                pieces = min(rows, math.ceil(nbytes / target_bytes))
                bounds = [row + rows * k // pieces for k in range(pieces + 1)]
                for a, b in zip(bounds, bounds[1:], strict=False):
                    emit(part, a, b, nbytes * (b - a) // max(rows, 1))
                start, acc = row + rows, 0
            else:
                if acc and acc + nbytes > target_bytes:
                    emit(part, start, row, acc)
                    start, acc = row, 0
                acc += nbytes
            row += rows
        emit(part, start, row, acc)
    return plans


def source_identity(data: Path, split: str) -> list[dict[str, Any]]:
    """Name, size and rows of every raw part: a changed dataset changes this."""
    import pyarrow.parquet as pq

    return [
        {"name": p.name, "bytes": p.stat().st_size, "rows": pq.ParquetFile(p).metadata.num_rows}
        for p in split_parts(data, split)
    ]


def _byte_lengths(array: Any) -> np.ndarray:
    """Bytes per row: exact from the offsets of string/binary arrays, the average for nested ones."""
    import pyarrow as pa

    t = array.type
    if (
        pa.types.is_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_string(t)
        or pa.types.is_large_binary(t)
    ):
        wide = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int64 if wide else np.int32)
        return np.diff(offsets[array.offset : array.offset + len(array) + 1])
    return np.full(len(array), max(1, array.nbytes // max(len(array), 1)), dtype=np.int64)


def iter_chunks(plan: ShardPlan, column: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, Any]]:
    """Stream a shard's rows as (first row's position in the shard, Arrow array of at most ~chunk_bytes).

    Only the row groups overlapping the shard are read; chunks are compact copies, so sending one to a
    worker sends its rows and nothing more.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(plan.part)
    groups, first_row, row = [], None, 0
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if row + rows > plan.row_start and row < plan.row_stop:
            groups.append(g)
            first_row = row if first_row is None else first_row
        row += rows
    if not groups:
        return
    row = first_row or 0
    position = 0
    batch_rows = max(1, min(65536, READ_BATCH_BYTES * max(plan.rows, 1) // max(plan.est_bytes, 1)))
    for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=[column]):
        array = batch.column(0)
        lo = max(plan.row_start - row, 0)
        hi = min(plan.row_stop - row, len(array))
        row += len(array)
        if hi <= lo:
            continue
        array = array.slice(lo, hi - lo)
        start, acc = 0, 0
        for i, n in enumerate(_byte_lengths(array).tolist()):
            if acc and acc + n > chunk_bytes:
                yield position, pa.concat_arrays([array.slice(start, i - start)])
                position += i - start
                start, acc = i, 0
            acc += n
        yield position, pa.concat_arrays([array.slice(start, len(array) - start)])
        position += len(array) - start
