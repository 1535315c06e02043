"""`data download`: fetch a source and write the raw dataset layout (llmctl/raw/dataset.py).

    result = download_dataset("pystdlib", Path("data/py"))
    result.info["splits"]["train"]["rows"]

Rows stream from each input file into normalized parquet parts under DIR/.llmctl-incomplete/; only
when every split is complete are the parts moved into DIR/<split>/ and dataset.json written, last.
A rerun whose dataset.json records the same request, and whose parts still match their recorded
sizes and SHA-256, is skipped without touching the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmctl import __version__
from llmctl.errors import LlmctlError, LlmctlIOError
from llmctl.files import atomic_write_json, ensure_inside, io_error
from llmctl.raw.dataset import DATASET_JSON, PART_GLOB
from llmctl.raw.http_download import file_sha256
from llmctl.raw.normalize import RowMapping, Value, WikitextArticles, choose_mapping, value_bytes
from llmctl.raw.parts import SplitWriter, carve_score, carve_split
from llmctl.raw.readers import RecordFile
from llmctl.raw.resolve import InputFile, ResolvedSource, resolve_source, split_order
from llmctl.raw.sources import DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, SourceSpec, parse_source
from llmctl.raw.transfer import NoProgress, TransferProgress, TransferTask

DEFAULT_MAX_ROW_BYTES = 64 << 20
"""64 MiB: far above any document a language model trains on (a long book is a few MB), far below
what would exhaust memory when one row is read, converted and written."""
FORMAT_NAME = "llmctl-raw-dataset"
FORMAT_VERSION = 1
STAGE_DIR = ".llmctl-incomplete"


@dataclass(frozen=True)
class DownloadOptions:
    """What to take from a source and how to split it."""

    splits: tuple[str, ...] = ()
    """Splits to write; empty: all the source has plus the carved ones."""
    val_fraction: float | None = None
    """Share of train carved into validation when the source has none (None: the source's default)."""
    test_fraction: float | None = None
    """Share of train carved into test when the source has none (None: the source's default)."""
    seed: int = 0
    """Seed of the carving hash."""
    max_rows: int | None = None
    """Documents read from each source split at most (a sample of a huge corpus)."""
    max_bytes: int | None = None
    """UTF-8 bytes of text read from each source split at most."""
    max_row_bytes: int = DEFAULT_MAX_ROW_BYTES
    """A row (document, conversation or pair) over this many UTF-8 bytes is skipped and counted."""
    text_column: str | None = None
    format: str | None = None
    txt_delimiter: str | None = None
    """Plain text: split documents on this string (default: one document per file)."""
    sha256: str | None = None
    """Expected SHA-256 of a single URL or local file."""
    cache_dir: str | None = None
    force: bool = False


@dataclass
class DownloadResult:
    """What download_dataset did: the dataset.json contents, and whether it was already complete."""

    out: Path
    info: dict[str, Any]
    skipped: bool = False
    notes: list[str] = field(default_factory=list)


def _request(spec: SourceSpec, options: DownloadOptions) -> dict[str, Any]:
    record = asdict(options)
    for key in ("force", "cache_dir"):
        record.pop(key)
    if record["max_row_bytes"] == DEFAULT_MAX_ROW_BYTES:
        record.pop("max_row_bytes")  # datasets written before the limit existed stay up to date
    record["splits"] = list(options.splits)
    record["source"] = spec.spec
    if spec.kind == "pystdlib":
        from llmctl.raw.pystdlib import stdlib_revision

        record["python"] = stdlib_revision()
    return record


def verified_dataset(out: Path, request: dict[str, Any]) -> dict[str, Any] | None:
    """dataset.json when it records `request` and every part matches its size and SHA-256; else None."""
    path = out / DATASET_JSON
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if info.get("format") != FORMAT_NAME or info.get("request") != request:
        return None
    for split in info.get("splits", {}).values():
        for part in split.get("parts", []):
            file = out / part["path"]
            if (
                not file.is_file()
                or file.stat().st_size != part["size"]
                or file_sha256(file) != part["sha256"]
            ):
                return None
    return info


def _fractions(spec: SourceSpec, options: DownloadOptions) -> tuple[float, float]:
    named = spec.named
    val = (
        options.val_fraction
        if options.val_fraction is not None
        else (named.val_fraction if named else DEFAULT_VAL_FRACTION)
    )
    test = (
        options.test_fraction
        if options.test_fraction is not None
        else (named.test_fraction if named else DEFAULT_TEST_FRACTION)
    )
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise LlmctlError(
            f"--val-fraction {val} and --test-fraction {test} must each be in [0, 1) and sum below 1",
            "use small shares such as --val-fraction 0.01 --test-fraction 0.01",
        )
    return val, test


class _SplitReader:
    """Reads one source split's files into the writers, within the row and byte limits."""

    def __init__(
        self,
        split: str,
        writers: dict[str, SplitWriter],
        carving: tuple[float, float] | None,
        options: DownloadOptions,
        transform: str | None,
    ) -> None:
        self.split = split
        self.writers = writers
        self.carving = carving
        self.options = options
        self.rows = 0
        self.bytes = 0
        self.dropped = 0
        self.oversized = 0
        """Rows over options.max_row_bytes once read (parquet, JSON documents, converted values)."""
        self.joiner = WikitextArticles() if transform == "wikitext-articles" else None
        # A carved split that no document falls into (a small corpus at --val-fraction 0.005) gets the train
        # document(s) of lowest carve score, the ones a slightly larger fraction would have carved: they are
        # held back until the end, when it is known whether they are needed.
        val, test = carving or (0.0, 0.0)
        self.slots = [s for s, f in (("validation", val), ("test", test)) if f > 0 and s in writers]
        self.held: dict[float, list[tuple[Value, int]]] = {}
        """Score -> the documents of that score (exact duplicates share one, and so one split)."""
        self.train_rows = 0
        self.topped_up: list[str] = []
        """Carved splits that got their one document this way."""

    @property
    def full(self) -> bool:
        o = self.options
        return (o.max_rows is not None and self.rows >= o.max_rows) or (
            o.max_bytes is not None and self.bytes >= o.max_bytes
        )

    def emit(self, values: list[Value]) -> None:
        if self.joiner is not None:
            values = self.joiner.feed(values)
        self._emit(values)

    def finish(self) -> None:
        if self.joiner is not None:
            self._emit(self.joiner.flush())
        for split in self.slots:
            # Each empty carved split takes the lowest-scoring held document while train keeps at least one.
            if self.held and not self.writers[split].rows:
                lowest = min(self.held)
                if self.train_rows - len(self.held[lowest]) >= 1:
                    docs = self.held.pop(lowest)
                    for value, nbytes in docs:
                        self.writers[split].add(value, nbytes)
                    self.train_rows -= len(docs)
                    self.topped_up.append(split)
        for score in sorted(self.held):
            self._to_train(self.held[score])
        self.held = {}

    def _to_train(self, docs: list[tuple[Value, int]]) -> None:
        train = self.writers.get("train")
        for value, nbytes in docs:
            if train is not None:
                train.add(value, nbytes)

    def _carve(self, value: Value, nbytes: int) -> str | None:
        """The split of a train document; None when it is held back as one of the lowest-scoring ones."""
        assert self.carving is not None
        u = carve_score(value, self.options.seed)
        target = carve_split(u, *self.carving)
        if target != "train" or not self.slots:
            return target
        self.train_rows += 1
        self.held.setdefault(u, []).append((value, nbytes))
        if len(self.held) > len(self.slots):
            self._to_train(self.held.pop(max(self.held)))
        return None

    def _emit(self, values: list[Value]) -> None:
        o = self.options
        for value in values:
            if value is None:
                self.dropped += 1
                continue
            if self.full:
                return
            nbytes = value_bytes(value)
            if nbytes > o.max_row_bytes:
                self.oversized += 1
                continue
            if o.max_bytes is not None and self.rows and self.bytes + nbytes > o.max_bytes:
                self.bytes = o.max_bytes  # the next document would overshoot: this split is full
                return
            self.rows += 1
            self.bytes += nbytes
            target: str | None = self.split
            if self.carving is not None:
                target = self._carve(value, nbytes)
                if target is None:
                    continue
            writer = self.writers.get(target)
            if writer is not None:
                writer.add(value, nbytes)


def _read_file(
    file: InputFile,
    reader: _SplitReader,
    options: DownloadOptions,
    task: TransferTask,
    transform: str | None,
    text_column: str | None,
    accept: Callable[[RowMapping, str], None],
) -> dict[str, Any]:
    path, sha256 = file.fetch()
    record_file = RecordFile(
        path,
        name=file.name,
        fmt=options.format,
        txt_delimiter=options.txt_delimiter,
        format_name=file.format_name,
        cached=file.cached,
        max_row_bytes=options.max_row_bytes,
    )
    mapping = choose_mapping(record_file.columns(), file.name, text_column, transform)
    accept(mapping, file.name)
    size = path.stat().st_size
    shown = 0
    columns = list(mapping.reads) if record_file.format == "parquet" else None
    batches = record_file.batches(columns)
    try:
        for batch in batches:
            reader.emit(mapping.convert(batch))
            done = int(size * record_file.done / record_file.total) if record_file.total else 0
            task.advance(done - shown)
            shown = done
            if reader.full:
                break
    finally:
        batches.close()  # settles the reader's counts (invalid UTF-8) even when stopped early
    task.advance(size - shown)
    return {
        "name": file.name,
        "split": file.split,
        "size": size,
        "sha256": sha256,
        "invalid_utf8_replaced": record_file.invalid_utf8,
        "oversized_rows": record_file.oversized,
    }


def download_dataset(
    source: str,
    out: str | Path,
    options: DownloadOptions | None = None,
    progress: TransferProgress | None = None,
) -> DownloadResult:
    """Fetch `source` and write DIR/<split>/part-*.parquet plus DIR/dataset.json (see the module doc)."""
    options = options or DownloadOptions()
    progress = progress or NoProgress()
    spec = parse_source(source)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LlmctlIOError(
            f"--out {out} is a file, not a folder", "choose another --out, or move that file away"
        )
    request = _request(spec, options)
    if not options.force:
        info = verified_dataset(out, request)
        if info is not None:
            return DownloadResult(out, info, skipped=True)
    val_fraction, test_fraction = _fractions(spec, options)
    resolved = resolve_source(spec, progress, options.cache_dir, options.format, options.sha256)
    source_splits = sorted({f.split for f in resolved.files}, key=split_order)
    carved = [
        s
        for s, fraction in (("validation", val_fraction), ("test", test_fraction))
        if s not in source_splits and "train" in source_splits and fraction > 0
    ]
    available = sorted([*source_splits, *carved], key=split_order)
    wanted = list(options.splits) or available
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise LlmctlError(
            f"split {', '.join(unknown)} is not available from {spec.label}",
            f"available splits: {', '.join(available)}",
        )
    carving = None
    if carved:
        carving = (
            val_fraction if "validation" in carved else 0.0,
            test_fraction if "test" in carved else 0.0,
        )
    to_read = [s for s in source_splits if s in wanted or (s == "train" and set(carved) & set(wanted))]

    stage = out / STAGE_DIR
    created = not out.exists()
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir(parents=True)
    except OSError as exc:
        raise io_error(exc, out, action="create") from None
    transform = spec.named.transform if spec.named else None
    text_column = options.text_column or (spec.named.text_column if spec.named else None)
    started = time.time()
    files: list[dict[str, Any]] = []
    chosen: list[RowMapping] = []
    mappings: list[RowMapping] = []
    dropped = oversized = 0
    topped_up: list[str] = []
    writers: dict[str, SplitWriter] = {}

    def accept(mapping: RowMapping, name: str) -> None:
        if chosen and mapping.column != chosen[0].column:
            raise LlmctlError(
                f"{name} holds {mapping.column} but earlier files hold {chosen[0].column}",
                "download text and chat data into separate datasets",
            )
        if not chosen:
            chosen.append(mapping)
        mappings.append(mapping)
        for w in writers.values():
            w.column = mapping.column

    try:
        for split in to_read:
            split_files = [f for f in resolved.files if f.split == split]
            writers_for = {
                s: SplitWriter(stage / s, "text")
                for s in wanted
                if s == split or (split == "train" and s in carved)
            }
            writers.update(writers_for)
            reader = _SplitReader(
                split, writers_for, carving if split == "train" else None, options, transform
            )
            known = sum(f.size or 0 for f in split_files)
            task = progress.task(
                f"{split}: reading {len(split_files)} file{'s' * (len(split_files) != 1)}", known or None
            )
            try:
                for file in split_files:
                    if reader.full:
                        break
                    files.append(_read_file(file, reader, options, task, transform, text_column, accept))
                reader.finish()
            finally:
                task.close()
            dropped += reader.dropped
            oversized += reader.oversized
            topped_up += reader.topped_up
            for w in writers_for.values():
                w.close()
        column, how = (chosen[0].column, chosen[0].how) if chosen else ("text", None)
        info = _info(
            spec,
            resolved,
            request,
            writers,
            files,
            column,
            how,
            dropped,
            carved,
            val_fraction,
            test_fraction,
            options,
        )
        # What the rows are, under its own key: source.kind already says where they came from.
        info["content"] = {"text": "text", "messages": "chat", "preference": "preference"}.get(column, column)
        # Rows over --max-row-bytes: those the reader skipped unread plus those found too big once read.
        info["max_row_bytes"] = options.max_row_bytes
        info["oversized_rows"] = oversized + sum(f["oversized_rows"] for f in files)
        pair_drops = [m.drop_counts for m in mappings if m.drop_counts is not None]
        if pair_drops:
            info["preference_dropped"] = {k: sum(d[k] for d in pair_drops) for k in pair_drops[0]}
        if not sum(w.rows for w in writers.values()):
            raise LlmctlError(
                f"no documents came out of {spec.label} (read {len(files)} file(s), {dropped} empty rows dropped, "
                f"{info['oversized_rows']} over --max-row-bytes)",
                "check --text-column, --split, --max-rows/--max-bytes/--max-row-bytes, and that the files hold text",
            )
        _refuse_empty_train(spec, writers, carved)
        notes = [
            f"{s} is empty: raise --{'val' if s == 'validation' else 'test'}-fraction"
            if s in carved
            else f"the source's {s} split holds no text"
            for s, w in writers.items()
            if not w.rows
        ]
        notes += [_topped_up_note(s, val_fraction if s == "validation" else test_fraction) for s in topped_up]
        for s in topped_up:
            info["splits"][s]["origin"] += ", at least 1 document"
        _publish(out, stage, writers, info)
    except BaseException:
        for w in writers.values():
            w.abort()
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a failed first run leaves no folder behind
        raise
    info["seconds"] = round(time.time() - started, 3)
    if info["oversized_rows"]:
        notes.append(
            f"{info['oversized_rows']:,} row(s) over --max-row-bytes {options.max_row_bytes:,} were skipped "
            "(oversized_rows in dataset.json; files[].oversized_rows names the files read past)"
        )
    if info["invalid_utf8_replaced"]:
        notes.append(
            f"{info['invalid_utf8_replaced']:,} invalid UTF-8 sequence(s) were replaced with U+FFFD "
            "(files[].invalid_utf8_replaced in dataset.json names the files)"
        )
    return DownloadResult(out, info, notes=notes)


def _topped_up_note(split: str, fraction: float) -> str:
    flag = "--val-fraction" if split == "validation" else "--test-fraction"
    return (
        f"no document fell within {flag} {fraction:g}, so {split} got the 1 train document nearest it "
        f"(at least one is carved; raise {flag} for more)"
    )


def _refuse_empty_train(spec: SourceSpec, writers: dict[str, SplitWriter], carved: list[str]) -> None:
    """A source so small that carving took every document leaves nothing to train on: say so, write nothing.

    Refusing beats quietly dropping the carved splits: the user asked for them, and a run with no
    validation split would surprise them later. The hint gives the one flag pair that keeps all in train.
    """
    train = writers.get("train")
    if train is None or train.rows or not carved:
        return
    taken = sum(writers[s].rows for s in carved if s in writers)
    raise LlmctlError(
        f"{spec.label} has only {taken} document(s) and carving {' and '.join(carved)} from it left train empty",
        "pass --val-fraction 0 --test-fraction 0 to keep every document in train, or use a larger source",
    )


def _info(
    spec: SourceSpec,
    resolved: ResolvedSource,
    request: dict[str, Any],
    writers: dict[str, SplitWriter],
    files: list[dict[str, Any]],
    column: str,
    how: str | None,
    dropped: int,
    carved: list[str],
    val_fraction: float,
    test_fraction: float,
    options: DownloadOptions,
) -> dict[str, Any]:
    named = spec.named
    splits = {}
    for name in sorted(writers, key=split_order):
        w = writers[name]
        splits[name] = {
            "rows": w.rows,
            "bytes": w.bytes,
            "origin": f"carved from train ({val_fraction if name == 'validation' else test_fraction:g})"
            if name in carved
            else "source",
            "parts": [asdict(p) for p in w.parts],
        }
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "source": {
            "spec": spec.spec,
            "kind": spec.kind,
            "name": spec.name,
            "repo": spec.repo,
            "subset": spec.subset,
            "url": spec.spec if spec.kind == "url" else None,
            "path": spec.path,
            "revision": resolved.revision,
            "resolved_revision": resolved.resolved_revision,
            "offline": resolved.offline,
            "licence": named.licence if named else None,
            "description": named.description if named else None,
            **resolved.extra,
        },
        "column": column,
        "conversion": how,
        "seed": options.seed,
        "request": request,
        "splits": splits,
        "dropped_rows": dropped,
        "invalid_utf8_replaced": sum(f.get("invalid_utf8_replaced", 0) for f in files),
        "files": files,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "llmctl_version": __version__,
    }


def _publish(out: Path, stage: Path, writers: dict[str, SplitWriter], info: dict[str, Any]) -> None:
    """Move complete parts into place and write dataset.json last; a disk fault is an `error:` + hint."""
    try:
        _move_parts(out, stage, writers, info)
    except OSError as exc:
        raise io_error(exc, exc.filename or out) from None


def _move_parts(out: Path, stage: Path, writers: dict[str, SplitWriter], info: dict[str, Any]) -> None:
    old: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        old = json.loads((out / DATASET_JSON).read_text())
    (out / DATASET_JSON).unlink(missing_ok=True)
    stale = set(old.get("splits", {}) if isinstance(old.get("splits"), dict) else []) | set(writers)
    for split in stale:
        directory = out / split
        if directory.is_dir():
            for part in [*directory.glob(PART_GLOB), *directory.glob("part-*.parquet.tmp")]:
                part.unlink()
            if not any(directory.iterdir()):
                directory.rmdir()
    for split, writer in writers.items():
        if not writer.parts:
            continue
        (out / split).mkdir(parents=True, exist_ok=True)
        for part in writer.parts:
            os.replace(stage / part.path, ensure_inside(out, out / part.path))
    atomic_write_json(out / DATASET_JSON, info)
    shutil.rmtree(stage, ignore_errors=True)
