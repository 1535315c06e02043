"""Writing a split's normalized parquet parts, and carving validation/test out of train.

Parts are written under a temporary name (llmctl.files.atomic_path) and renamed when closed, each up
to PART_BYTES of text or PART_ROWS rows, in row groups of about ROW_GROUP_BYTES so readers can stream
and parallelise.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.files import atomic_path, io_error
from llmctl.raw.http_download import file_sha256
from llmctl.raw.normalize import Value

PART_BYTES = 128 << 20
PART_ROWS = 1_000_000
ROW_GROUP_BYTES = 8 << 20
ROW_GROUP_ROWS = 16_384


def carve_score(value: Value, seed: int) -> float:
    """A document's place in [0, 1) for carving: a seeded hash of its content."""
    data = (
        value.encode("utf-8") if isinstance(value, str) else json.dumps(value, sort_keys=True).encode("utf-8")
    )
    digest = hashlib.blake2b(data, digest_size=8, key=str(seed).encode()[:64]).digest()
    return int.from_bytes(digest, "little") / 2.0**64


def carve(value: Value, seed: int, val_fraction: float, test_fraction: float) -> str:
    """'train', 'validation' or 'test' for a train document, from a seeded hash of its content.

    Hashing content (not position) keeps the assignment stable under --max-rows and puts exact
    duplicates in the same split, so no document of validation or test also appears in train.
    """
    return carve_split(carve_score(value, seed), val_fraction, test_fraction)


def carve_split(u: float, val_fraction: float, test_fraction: float) -> str:
    """The split of a document whose carve_score is `u`."""
    if u < val_fraction:
        return "validation"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


@dataclass
class PartInfo:
    """One finished part, as recorded in dataset.json."""

    path: str
    rows: int
    bytes: int
    size: int
    sha256: str


class _Aborted(Exception):
    """Thrown into an open part's atomic_path so that it removes the temporary."""


@dataclass
class SplitWriter:
    """Appends values to a split directory's parts; `close()` returns what was written."""

    directory: Path
    column: str
    rows: int = 0
    bytes: int = 0
    parts: list[PartInfo] = field(default_factory=list)
    _buffer: list[Value] = field(default_factory=list)
    _buffer_bytes: int = 0
    _writer: Any = None
    _stack: Any = None
    _tmp: Any = None
    _part_rows: int = 0
    _part_bytes: int = 0

    def _schema(self) -> Any:
        import pyarrow as pa

        if self.column in ("messages", "preference"):
            message = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
            if self.column == "preference":
                return pa.schema([("prompt", message), ("chosen", message), ("rejected", message)])
            return pa.schema([("messages", message)])
        return pa.schema([("text", pa.string())])

    def _part_path(self, index: int) -> Path:
        return self.directory / f"part-{index:05d}.parquet"

    def add(self, value: Value, nbytes: int) -> None:
        """One document (text or messages) of nbytes UTF-8 bytes."""
        self._buffer.append(value)
        self._buffer_bytes += nbytes
        self.rows += 1
        self.bytes += nbytes
        if self._buffer_bytes >= ROW_GROUP_BYTES or len(self._buffer) >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        try:
            self._write_buffer()
        except OSError as exc:
            # The stage folder is temporary as a whole: download_dataset removes it.
            raise io_error(
                exc, self.directory / "part-*.parquet", needed=self._buffer_bytes or None
            ) from None

    def _write_buffer(self) -> None:
        if not self._buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._writer is None:
            # The part is written under llmctl.files' temporary name and renamed when complete.
            self._stack = contextlib.ExitStack()
            self._tmp = self._stack.enter_context(atomic_path(self._part_path(len(self.parts))))
            self._writer = pq.ParquetWriter(self._tmp, self._schema(), compression="zstd")
        if self.column == "preference":  # one dict per row, three columns
            table = pa.Table.from_pylist(self._buffer, schema=self._schema())
        else:
            table = pa.Table.from_pydict({self.column: self._buffer}, schema=self._schema())
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._part_rows += len(self._buffer)
        self._part_bytes += self._buffer_bytes
        self._buffer, self._buffer_bytes = [], 0
        if self._part_bytes >= PART_BYTES or self._part_rows >= PART_ROWS:
            self._finish_part()

    def _finish_part(self) -> None:
        self._writer.close()
        self._writer = None
        final = self._part_path(len(self.parts))
        sha256 = file_sha256(self._tmp)
        self._stack.close()  # fsync and rename into place
        self._stack = None
        self.parts.append(
            PartInfo(
                path=f"{self.directory.name}/{final.name}",
                rows=self._part_rows,
                bytes=self._part_bytes,
                size=final.stat().st_size,
                sha256=sha256,
            )
        )
        self._part_rows = self._part_bytes = 0

    def close(self) -> list[PartInfo]:
        """Flush and finish the last part."""
        self._flush()
        if self._writer is not None:
            try:
                self._finish_part()
            except OSError as exc:
                raise io_error(exc, self.directory / "part-*.parquet") from None
        return self.parts

    def abort(self) -> None:
        """Close an open part file without publishing it; never raises (it runs while another error does)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()  # flushing onto a full disk fails again
            self._writer = None
        if self._stack is not None:
            with contextlib.suppress(Exception):
                self._stack.__exit__(_Aborted, _Aborted(), None)  # removes the temporary
            self._stack = None
