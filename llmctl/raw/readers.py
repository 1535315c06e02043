"""Rows out of parquet, JSON lines, JSON and plain text files, optionally .gz or .zst compressed.

    reader = RecordFile(Path("corpus.jsonl.zst"), name="corpus.jsonl.zst")
    reader.columns()                       # ['text', 'url']
    for batch in reader.batches(["text"]):  # {'text': [...]} column lists, a few thousand rows each
        ...

Batches are columnar (column -> list of values) so a multi-GB parquet file streams without building a
dict per row. A file that cannot be read (truncated, corrupt, not what its name says) is a
LlmctlRuntimeError naming it.

With `max_row_bytes`, a JSON line or a text document longer than that is skipped and counted in
`oversized` without ever being held whole: lines are read with a bounded readline, the rest of an
oversized one is read past in chunks. (Parquet and whole-JSON rows are checked after they are read.)
"""

from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from llmctl.errors import LlmctlError, LlmctlRuntimeError

_REPLACED = [0]
"""Invalid UTF-8 sequences replaced with U+FFFD so far, by every reader (one thread reads)."""


def _count_and_replace(exc: UnicodeError) -> tuple[str, int]:
    # Python's own "replace", plus a count the download report shows: silent repairs hide bad data.
    assert isinstance(exc, UnicodeDecodeError)
    _REPLACED[0] += 1
    return "\ufffd", exc.end


codecs.register_error("llmctl-count-replace", _count_and_replace)

FORMATS = ("parquet", "jsonl", "json", "txt")
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_EXTENSIONS = {
    ".parquet": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".txt": "txt",
    ".text": "txt",
    ".md": "txt",
    ".py": "txt",
}
_READ_CHUNK = 1 << 20

Batch = dict[str, list[Any]]


def detect_format(name: str, forced: str | None = None) -> tuple[str, str | None]:
    """(format, compression) of a file from its name, e.g. 'a.jsonl.zst' -> ('jsonl', 'zstd')."""
    lower = name.lower().split("?", 1)[0]
    compression = None
    for ext, comp in COMPRESSIONS.items():
        if lower.endswith(ext):
            compression = comp
            lower = lower[: -len(ext)]
            break
    if forced:
        if forced not in FORMATS:
            raise LlmctlError(f"unknown format '{forced}'", f"use one of {', '.join(FORMATS)}")
        return forced, compression
    suffix = Path(lower).suffix
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix], compression
    raise LlmctlError(
        f"cannot tell the format of '{name}' from its name",
        f"pass --format ({', '.join(FORMATS)}); .gz and .zst compression is recognised on top",
    )


def is_data_file(name: str) -> bool:
    """True for names whose format detect_format recognises."""
    try:
        detect_format(name)
    except LlmctlError:
        return False
    return True


class _Counting(io.RawIOBase):
    """A binary file that counts the bytes read from disk, for progress through compressed files."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._fh.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def close(self) -> None:
        self._fh.close()
        super().close()


class RecordFile:
    """One input file, read as batches of rows. `done`/`total` track progress in `unit`s."""

    def __init__(
        self,
        path: Path,
        name: str | None = None,
        fmt: str | None = None,
        txt_delimiter: str | None = None,
        format_name: str | None = None,
        cached: bool = False,
        max_row_bytes: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.name
        self.cached = cached
        self.invalid_utf8 = 0
        """Invalid UTF-8 sequences the last `batches()` replaced with U+FFFD."""
        self.max_row_bytes = max_row_bytes
        self.oversized = 0
        """JSON lines and text documents the last `batches()` skipped for being over max_row_bytes."""
        self.format, self.compression = detect_format(format_name or self.name, fmt)
        self.txt_delimiter = txt_delimiter
        self.total = self.path.stat().st_size
        self.done = 0
        self.unit = "bytes"
        self._counter: _Counting | None = None
        self._json: Any = None

    def _corrupt(self, exc: BaseException) -> LlmctlRuntimeError:
        if self.cached:
            hint = f"it is a download: delete {self.path} and run the command again to fetch it afresh"
        else:
            hint = "the file itself is damaged; write it again, or copy it again from where it came from"
        return LlmctlRuntimeError(f"{self.name} is corrupt or truncated ({type(exc).__name__}: {exc})", hint)

    def _open_binary(self) -> IO[bytes]:
        self._counter = _Counting(open(self.path, "rb"))  # noqa: SIM115 (closed with the reader it feeds)
        raw = io.BufferedReader(self._counter, _READ_CHUNK)
        if self.compression == "gzip":
            import gzip

            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        if self.compression == "zstd":
            import zstandard

            return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)  # type: ignore[return-value]
        return raw

    def _text(self) -> IO[str]:
        return io.TextIOWrapper(
            self._open_binary(), encoding="utf-8", errors="llmctl-count-replace", newline=""
        )

    def columns(self) -> list[str]:
        """Column names, from the schema (parquet) or the first record."""
        if self.format == "parquet":
            return list(self._parquet().schema_arrow.names)
        if self.format == "txt":
            return ["text"]
        for batch in self.batches(None, batch_rows=1):
            return list(batch)
        return []

    def batches(self, columns: list[str] | None, batch_rows: int = 4096) -> Iterator[Batch]:
        """Column lists of at most batch_rows rows; columns=None reads every column."""
        self.done = 0
        self.invalid_utf8 = 0
        self.oversized = 0
        replaced_before = _REPLACED[0]
        readers = {"parquet": self._parquet_batches, "jsonl": self._jsonl_batches, "json": self._json_batches}
        inner = readers.get(self.format, self._txt_batches)(columns, batch_rows)
        try:
            yield from inner
        except LlmctlError:
            raise
        except (OSError, EOFError, ValueError, UnicodeError) as exc:
            raise self._corrupt(exc) from exc
        except Exception as exc:  # zstandard.ZstdError and pyarrow's ArrowException have no common base
            if type(exc).__module__.startswith(("zstandard", "pyarrow")):
                raise self._corrupt(exc) from exc
            raise
        finally:
            inner.close()
            self.done = self.total
            self.invalid_utf8 = _REPLACED[0] - replaced_before

    def _parquet(self) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            if self.compression:
                with self._open_binary() as fh:
                    return pq.ParquetFile(pa.BufferReader(fh.read()))
            return pq.ParquetFile(self.path)
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise self._corrupt(exc) from exc

    def _parquet_batches(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        pf = self._parquet()
        self.total, self.unit = pf.metadata.num_rows, "rows"
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            self.done += batch.num_rows
            yield {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)}

    def _rows_to_batch(self, rows: list[Any], columns: list[str] | None, line: int | None = None) -> Batch:
        records = []
        for offset, row in enumerate(rows):
            if isinstance(row, str):
                row = {"text": row}
            if not isinstance(row, dict):
                where = f"line {line + offset}" if line is not None else f"record {offset}"
                raise LlmctlRuntimeError(
                    f"{self.name}: {where} is a JSON {type(row).__name__}, not an object",
                    'each record must be a JSON object such as {"text": ...}',
                )
            records.append(row)
        names = columns or list(dict.fromkeys(k for r in records for k in r))
        return {c: [r.get(c) for r in records] for c in names}

    def _too_long(self, text: str) -> bool:
        """True (and counted) when a row's text is over max_row_bytes (a character is at least one byte)."""
        limit = self.max_row_bytes
        if limit is None or len(text) <= limit // 4 or len(text.encode("utf-8", "surrogatepass")) <= limit:
            return False
        self.oversized += 1
        return True

    def _lines(self, fh: IO[str]) -> Iterator[str]:
        """The file's lines; with max_row_bytes, one longer than that is read past in chunks and skipped."""
        limit = self.max_row_bytes
        if limit is None:
            yield from fh
            return
        while line := fh.readline(limit + 1):
            if len(line) > limit and line[-1] not in "\r\n":
                while (rest := fh.readline(_READ_CHUNK)) and rest[-1] not in "\r\n":
                    pass
                self.oversized += 1
                yield ""  # still a line: the numbers of the lines after it stay right
                continue
            yield "" if self._too_long(line.rstrip("\r\n")) else line

    def _jsonl_batches(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        rows: list[Any] = []
        first = 1
        with self._text() as fh:
            for number, line in enumerate(self._lines(fh), start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise LlmctlRuntimeError(
                        f"{self.name}: line {number} is not valid JSON ({exc.msg})",
                        "JSON lines files hold one JSON object per line; a truncated last line means a truncated file",
                    ) from exc
                if len(rows) >= batch_rows:
                    self.done = self._counter.count if self._counter else self.done
                    yield self._rows_to_batch(rows, columns, first)
                    rows, first = [], number + 1
        if rows:
            yield self._rows_to_batch(rows, columns, first)

    def _json_batches(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        # A JSON document is parsed whole; keep it so columns() and the read that follows parse it once.
        if self._json is None:
            self._json = self._parse_json()
        if self._json == "jsonl":
            self.format = "jsonl"
            yield from self._jsonl_batches(columns, batch_rows)
            return
        data = self._json
        for start in range(0, len(data), batch_rows):
            yield self._rows_to_batch(data[start : start + batch_rows], columns)

    def _parse_json(self) -> Any:
        with self._text() as fh:
            text = fh.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg == "Extra data":  # one object per line under a .json name
                return "jsonl"
            raise LlmctlRuntimeError(
                f"{self.name} is not valid JSON ({exc.msg} at line {exc.lineno})",
                "a truncated download ends mid-document: delete the file and fetch it again",
            ) from exc
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
            data = lists[0] if lists else [data]
        if not isinstance(data, list):
            raise LlmctlRuntimeError(f"{self.name} holds a JSON {type(data).__name__}, not a list of records")
        return data

    def _txt_batches(self, columns: list[str] | None, batch_rows: int) -> Iterator[Batch]:
        limit = self.max_row_bytes
        with self._text() as fh:
            if not self.txt_delimiter:
                text = fh.read() if limit is None else fh.read(limit + 1)
                yield {"text": [] if self._too_long(text) else [text]}
                return
            carry = ""
            skipping = False  # inside a document already counted as oversized: drop up to its delimiter
            pending: list[str] = []
            while True:
                chunk = fh.read(_READ_CHUNK)
                if not chunk:
                    break
                pieces = (carry + chunk).split(self.txt_delimiter)
                carry = pieces.pop()
                if skipping and pieces:
                    pieces, skipping = pieces[1:], False
                pending.extend(p for p in pieces if not self._too_long(p))
                if limit is not None and len(carry) > limit:
                    # No delimiter within the limit: count it once, keep only what may start a delimiter.
                    self.oversized += not skipping
                    skipping, carry = True, carry[len(carry) - len(self.txt_delimiter) + 1 :]
                if len(pending) >= batch_rows:
                    self.done = self._counter.count if self._counter else self.done
                    yield {"text": pending}
                    pending = []
            if not skipping and not self._too_long(carry):
                pending.append(carry)
            yield {"text": pending}
