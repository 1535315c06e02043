"""The token shard format (docs/ARCHITECTURE.md): writer and reader. Needs numpy only.

    DIR/meta.json                       format, dtype, tokenizer, mode, separator, counts per split and shard
    DIR/<split>/plan.json               which rows of which raw part each shard holds (written before any shard)
    DIR/<split>/shard-00000.bin         flat token stream, little-endian uint16 (vocab <= 65536) or uint32
    DIR/<split>/shard-00000.idx         int64 document start offsets plus the end: idx[i]:idx[i+1] is document i
    DIR/<split>/shard-00000.mask        SFT only: uint8 per token, 1 where the loss counts it
    DIR/<split>/shard-00000.json        the shard's counts and source rows; renamed last, so it marks completion

Reading, for the training loader and anything else:

    meta = read_meta("tokens/ts")
    for shard in open_split("tokens/ts", "train"):
        shard.tokens          # np.memmap, dtype from meta, shape (num_tokens,)
        shard.offsets         # np.ndarray int64, shape (num_docs + 1,)
        shard.mask            # np.memmap uint8 (SFT) or None
        shard.document(i)     # tokens of document i (a view)
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.files import atomic_path, atomic_write_json, tmp_name

FORMAT_NAME = "llmctl-tokens"
FORMAT_VERSION = 1
META_JSON = "meta.json"
PLAN_JSON = "plan.json"
SUFFIXES = (".bin", ".idx", ".mask", ".json")


def dtype_for_vocab(vocab_size: int) -> str:
    """'uint16' when every id fits in 16 bits, else 'uint32'."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def shard_name(index: int) -> str:
    """File stem of shard `index` within its split: shard-00000."""
    return f"shard-{index:05d}"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON atomically (llmctl.files); a disk fault is an `LlmctlIOError` and leaves no temporary."""
    atomic_write_json(path, data)


def remove_shard(split_dir: Path, name: str) -> None:
    """Delete a shard's files, complete or not, including temporaries left by a killed run."""
    # Temporaries of llmctl.files (".llmctl-tmp-shard-00000.bin-PID"), and of earlier versions
    # ("shard-00000.bin.tmp-PID"), left by a killed run.
    tmp_stem = tmp_name(split_dir / name).name.rsplit("-", 1)[0]
    for path in [*split_dir.glob(f"{name}.*"), *split_dir.glob(f"{tmp_stem}.*")]:
        path.unlink(missing_ok=True)


class _Aborted(Exception):
    """Thrown into the writer's atomic_path blocks so that they remove their temporaries."""


class ShardWriter:
    """Streams one shard to temporary files (llmctl.files.atomic_path); `finish` renames them, the .json last.

    A run killed at any point leaves only temporaries or a shard without its .json: neither is taken
    as complete, and the next run rewrites the shard.
    """

    def __init__(self, split_dir: Path, name: str, dtype: str, with_mask: bool) -> None:
        self.split_dir, self.name = split_dir, name
        self.dtype = np.dtype(dtype).newbyteorder("<")
        # One stack holds the temporaries and their open files across append() calls. Closing it
        # closes the files, then renames mask, idx and bin into place, in that order; an exception
        # thrown into it removes every temporary instead.
        self._stack = contextlib.ExitStack()
        suffixes = [".bin", ".idx", ".mask"] if with_mask else [".bin", ".idx"]
        try:
            paths = {s: self._stack.enter_context(atomic_path(split_dir / f"{name}{s}")) for s in suffixes}
            files = {s: self._stack.enter_context(open(paths[s], "wb")) for s in suffixes}  # noqa: SIM115
            self._bin, self._idx, self._mask = files[".bin"], files[".idx"], files.get(".mask")
            self._idx.write(np.zeros(1, dtype="<i8").tobytes())
        except BaseException:
            self.abort()
            raise
        self.num_tokens = 0
        self.num_docs = 0
        self.trained_tokens = 0

    def append(self, tokens: np.ndarray, lengths: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add documents: their tokens back to back, each document's length, and the mask when SFT."""
        if len(lengths) == 0:
            return
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype).tobytes())
        ends = self.num_tokens + np.cumsum(lengths, dtype=np.int64)
        self._idx.write(ends.astype("<i8").tobytes())
        if self._mask is not None:
            assert mask is not None and len(mask) == len(tokens)
            self._mask.write(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
            self.trained_tokens += int(np.count_nonzero(mask))
        else:
            self.trained_tokens += len(tokens)
        self.num_tokens += len(tokens)
        self.num_docs += len(lengths)

    def finish(self, info: dict[str, Any]) -> dict[str, Any]:
        """Flush, fsync and rename into place; returns the sidecar record written."""
        record = {
            "name": self.name,
            "tokens": self.num_tokens,
            "documents": self.num_docs,
            "trained_tokens": self.trained_tokens,
            "has_mask": self._mask is not None,
            **info,
        }
        self._stack.close()  # closes, fsyncs and renames; a failure removes the temporaries left
        # The sidecar is written last: its presence is what marks the shard complete.
        atomic_write_json(self.split_dir / f"{self.name}.json", record)
        return record

    def abort(self) -> None:
        """Close and delete the temporary files; never raises, as it runs while another error does.

        Closing flushes what is buffered, which fails again on a full disk: the file is closed anyway
        and removed, so a failed run never leaves a disk-filling temporary behind.
        """
        with contextlib.suppress(Exception):
            self._stack.__exit__(_Aborted, _Aborted(), None)


def read_shard_record(split_dir: Path, name: str, dtype: str) -> dict[str, Any] | None:
    """The shard's .json when the shard is complete and its files have the sizes it records, else None."""
    path = split_dir / f"{name}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        itemsize = np.dtype(dtype).itemsize
        sizes = {".bin": record["tokens"] * itemsize, ".idx": (record["documents"] + 1) * 8}
        if record.get("has_mask"):
            sizes[".mask"] = record["tokens"]
        for suffix, size in sizes.items():
            if (split_dir / f"{name}{suffix}").stat().st_size != size:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record


def shard_sidecar(root: str | Path, split: str, name: str) -> dict[str, Any]:
    """The full .json record of a shard, including the raw rows skipped as empty (not copied to meta.json)."""
    return json.loads((Path(root) / split / f"{name}.json").read_text(encoding="utf-8"))


class TokenMeta(dict):  # type: ignore[type-arg]
    """meta.json of a token directory, typed where it is read: the version-checked record itself (a dict, so
    it serialises and passes on as it is) with typed accessors for the fields every reader needs."""

    @property
    def mode(self) -> str:
        """pretrain, sft or dpo."""
        return str(self.get("mode") or "pretrain")

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary: the model needs at least this many embedding rows."""
        return int(self.get("vocab_size") or self.tokenizer["vocab_size"])

    @property
    def tokenizer(self) -> dict[str, Any]:
        """path, fingerprint, vocab_size and special ids of the tokenizer the shards were made with."""
        return dict(self.get("tokenizer") or {})

    @property
    def fingerprint(self) -> str | None:
        """SHA-256 of the tokenizer file: shards, models and other sources must agree on it."""
        return self.tokenizer.get("fingerprint")

    @property
    def separator_policy(self) -> str | None:
        """How documents are joined in the stream (bos, eos, bos+eos), which decides a prompt's prefix."""
        return (self.get("separator") or {}).get("policy")

    @property
    def split_names(self) -> list[str]:
        """Splits recorded, in order."""
        return list(self.get("splits", {}))


def read_meta(root: str | Path) -> TokenMeta:
    """meta.json of a token directory (format version checked), or a clear error when there is none."""
    path = Path(root) / META_JSON
    if not path.is_file():
        hint = "create it with `llmctl tokenize --data RAW --tokenizer TOK --out DIR`"
        if Path(root).is_dir() and any(Path(root).glob(f"*/{PLAN_JSON}")):
            hint = "a split-up run is not merged yet: run `llmctl tokenize --merge --out DIR`"
        raise LlmctlError(f"{root} is not a token directory (no {META_JSON})", hint)
    meta = json.loads(path.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT_NAME or meta.get("format_version", 0) > FORMAT_VERSION:
        raise LlmctlError(
            f"{path} is format {meta.get('format')} v{meta.get('format_version')}, not {FORMAT_NAME} v{FORMAT_VERSION}",
            "re-create it with this version of `llmctl tokenize`",
        )
    return TokenMeta(meta)


def split_names(meta: dict[str, Any]) -> list[str]:
    """Splits recorded in meta.json, in order."""
    return list(meta.get("splits", {}))


@dataclass
class Shard:
    """One shard of one split, memory-mapped: nothing is read until used."""

    split: str
    name: str
    tokens: np.ndarray
    offsets: np.ndarray
    mask: np.ndarray | None
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def num_docs(self) -> int:
        """Documents in the shard."""
        return len(self.offsets) - 1

    @property
    def num_tokens(self) -> int:
        """Tokens in the shard."""
        return int(self.offsets[-1])

    def document(self, i: int) -> np.ndarray:
        """Tokens of document i (a view into the memmap)."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def document_mask(self, i: int) -> np.ndarray | None:
        """Loss mask of document i (SFT), None in pretraining shards."""
        return None if self.mask is None else self.mask[self.offsets[i] : self.offsets[i + 1]]


def _memmap(path: Path, dtype: Any, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


def open_split(root: str | Path, split: str, meta: dict[str, Any] | None = None) -> list[Shard]:
    """The shards of `split` listed in meta.json, memory-mapped, in order."""
    meta = meta or read_meta(root)
    if split not in meta["splits"]:
        raise LlmctlError(
            f"split '{split}' not found in {root}",
            f"splits found: {', '.join(split_names(meta)) or 'none'}; pick one with --split",
        )
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    split_dir = Path(root) / split
    shards = []
    for record in meta["splits"][split]["shards"]:
        name = record["name"]
        try:
            offsets = np.fromfile(split_dir / f"{name}.idx", dtype="<i8")
            tokens = _memmap(split_dir / f"{name}.bin", dtype, record["tokens"])
            mask = (
                _memmap(split_dir / f"{name}.mask", np.uint8, record["tokens"])
                if record.get("has_mask")
                else None
            )
        except (OSError, ValueError) as exc:
            raise LlmctlRuntimeError(
                f"shard {split}/{name} in {root} is missing or damaged: {exc}",
                "rerun the same `llmctl tokenize` command: complete shards are kept, damaged ones rewritten",
            ) from exc
        if len(offsets) != record["documents"] + 1 or (len(offsets) and offsets[-1] != record["tokens"]):
            raise LlmctlRuntimeError(
                f"shard {split}/{name} in {root} does not match meta.json",
                "rerun the same `llmctl tokenize` command to rewrite it",
            )
        shards.append(Shard(split, name, tokens, offsets, mask, record))
    return shards
