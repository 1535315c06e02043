"""`llmctl tokenize`: raw parquet parts -> token shards, in parallel, streaming and resumable.

The parent process reads raw rows in chunks of about 1 MiB and hands them to N worker processes
(one encoding thread each); results come back in submission order and are appended to the shard
being written, so the output depends on the data and the options only, never on N. At most a few
chunks per worker are in flight, so memory stays flat however large the corpus. Shards that are
complete on disk are skipped; `--shard-index I --num-shards K` runs every K-th shard so K machines
share the work, and `merge` writes meta.json once all are done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError, LlmctlIOError
from llmctl.files import io_error
from llmctl.raw.dataset import list_splits
from llmctl.tokenizer.chat import BOS, require_profile
from llmctl.tokenizer.core import Tokenizer, load_tokenizer
from llmctl.tokenizer.fast import EncoderSpec, choose_encoder
from llmctl.tokens.meta import merge, refuse_other_tokenizer, settings_id, settings_of, write_plan
from llmctl.tokens.plan import ShardPlan, plan_split, resolve_column
from llmctl.tokens.pool import pipeline
from llmctl.tokens.shards import ShardWriter, dtype_for_vocab, read_shard_record, remove_shard, shard_name
from llmctl.tokens.stats import summarize
from llmctl.tokens.worker_start import FAST_PATH_MIN_BYTES, prestart_workers, small_input, worker_processes
from llmctl.tokens.workers import SEPARATORS, ChunkResult, EncodePolicy

__all__ = ["TokenizeOptions", "TokenizeResult", "Progress", "tokenize", "merge", "count_raw"]


@dataclass(frozen=True)
class TokenizeOptions:
    """Everything `llmctl tokenize` is asked to do."""

    data: Path
    tokenizer: Path
    out: Path
    mode: str = "pretrain"
    profile: str = "chat"
    separator: str | None = None
    """Document separator policy (SEPARATORS); default 'eos' for pretraining, 'profile' for SFT."""
    splits: tuple[str, ...] = ()
    column: str | None = None
    num_proc: int = 1
    shard_bytes: int = 256_000_000
    """Target raw text bytes per shard (from parquet metadata)."""
    shard_index: int = 0
    num_shards: int = 1
    fast: bool = True


@dataclass
class Progress:
    """A snapshot for the progress bar."""

    rows: int = 0
    rows_total: int = 0
    documents: int = 0
    tokens: int = 0
    text_bytes: int = 0
    seconds: float = 0.0
    shards_done: int = 0
    """Shards complete on disk (this run's and earlier runs'): what an interrupted run keeps."""
    shards_total: int = 0
    out: str = ""


@dataclass
class TokenizeResult:
    """What a `tokenize` run did."""

    out: str
    encoder: str
    encoder_note: str | None
    shards_total: int
    shards_written: int
    shards_skipped: int
    documents: int
    tokens: int
    empty_skipped: int
    invalid_utf8_replaced: int
    text_bytes: int
    seconds: float
    processes: int
    """Processes that encoded: the requested number, or 1 when the input is small."""
    peak_rss_main: int
    """Peak resident memory of this (the reading and writing) process; workers are separate processes."""
    meta: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def tokens_per_second(self) -> float:
        """Tokens written per second of this run."""
        return self.tokens / self.seconds if self.seconds else 0.0


def _policy(
    tok: Tokenizer, mode: str, profile: str, separator: str | None, column: str, count_only: bool
) -> EncodePolicy:
    if mode not in ("pretrain", "sft"):
        raise LlmctlError(f"unknown mode '{mode}'", "use --mode pretrain or --mode sft")
    if separator is None and mode == "pretrain":
        from llmctl.tokenizer.template import adds_bos

        # The tokenizer decides: BOS + text + EOS when its post-processor puts BOS first (llmctl's own
        # tokenizers since 0.x, Llama 3), else text + EOS (older llmctl tokenizers, GPT-2, Qwen2).
        separator = "bos+eos" if adds_bos(tok) and tok.bos_id is not None else "eos"
    separator = separator or ("profile" if mode == "sft" else "eos")
    if separator not in SEPARATORS or (separator == "profile") != (mode == "sft"):
        allowed = "profile" if mode == "sft" else "eos, bos or bos+eos"
        raise LlmctlError(f"separator '{separator}' does not apply to --mode {mode}", f"use {allowed}")
    template = None
    if mode == "sft" and profile == "model":
        template = model_template(tok)
    elif mode == "sft":
        chat = require_profile(
            profile, tok, "train one with `llmctl tokenizer train`, which adds the chat markers"
        )
    for needed, present, what in (("eos", tok.eos_id, "end"), ("bos", tok.bos_id, "beginning")):
        if needed in separator and present is None:
            raise LlmctlError(
                f"the tokenizer {tok.path} has no {what}-of-document token (separator '{separator}' needs one)",
                "train it with `llmctl tokenizer train` (which adds <|bos|> and <|eos|>), or pick another --separator",
            )
    specials = {**tok.special_ids()}
    if mode == "sft" and template is None:
        specials.update({t: tok.token_to_id(t) for t in [BOS, *chat.special_tokens]})
    return EncodePolicy(
        mode=mode,
        column=column,
        dtype=dtype_for_vocab(tok.vocab_size),
        separator=separator,
        bos_id=tok.bos_id,
        eos_id=tok.eos_id,
        profile=profile if mode == "sft" else None,
        special_ids=specials,
        count_only=count_only,
        chat_template=template,
        tokenizer_path=str(Path(tok.path).resolve()) if template is not None else None,
    )


def model_template(tok: Tokenizer) -> dict[str, Any]:
    """`--template model`: the chat template beside the tokenizer (an imported checkpoint, a HF model dir, or
    any llmctl checkpoint or run folder whose checkpoint.json carries one), as recorded in meta.json's
    `chat_profile` (template_text, bos/eos tokens, stop_ids)."""
    from llmctl.tokenizer.template import TemplateChat, checkpoint_chat_record, stop_ids_for

    folder = Path(tok.path).parent
    chat = TemplateChat.from_dir(folder, tok)
    if chat is not None:
        return chat.describe(stop_ids_for(folder, tok, chat.template))
    # A checkpoint trained from an import (continued pretraining, SFT) holds the template in checkpoint.json only.
    record = checkpoint_chat_record(folder)
    if record is None:
        raise LlmctlError(
            f"no chat template beside {tok.path} (chat_template.jinja, tokenizer_config.json, or the chat "
            "section of an llmctl checkpoint's checkpoint.json)",
            "pass the tokenizer.json of a model imported with `llmctl import` or of a checkpoint or run trained "
            "from one, or use --profile chat",
        )
    chat = TemplateChat.from_manifest({"chat": record}, tok)
    assert chat is not None
    stops = record.get("stop_ids")
    if not (isinstance(stops, list) and stops and all(type(i) is int for i in stops)):
        stops = stop_ids_for(folder, tok, chat.template)
    return chat.describe(stops)


def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _prepare(
    tok_path: Path,
    fast: bool,
    on_note: Callable[[str], None] | None,
    template: bool = False,
    small: bool = False,
) -> tuple[Tokenizer, EncoderSpec, str | None]:
    tok = load_tokenizer(tok_path)
    if template:
        # `--template model`: each worker renders and encodes conversations with the tokenizer's own library
        # (TemplateChat), never with the batch encoder, so no tiktoken form is built, noted or reported.
        return tok, EncoderSpec("chat-template", str(tok.path)), None
    if small and fast:
        # Same ids either way; not worth a note on stderr, only the --json report says why.
        kib = FAST_PATH_MIN_BYTES >> 10
        return tok, EncoderSpec("reference", str(tok.path)), f"input under {kib} KiB: no tiktoken form built"
    spec, note = choose_encoder(tok, allow_fast=fast)
    if note and on_note:
        on_note(f"encoding with the tokenizer's own library (slower than the tiktoken fast path): {note}")
    return tok, spec, note


def _selected_splits(data: Path, splits: tuple[str, ...]) -> list[str]:
    found = list_splits(data)
    if not found:
        raise LlmctlError(
            f"{data} holds no split with parquet parts",
            "download one with `llmctl data download SOURCE --out DIR`",
        )
    return list(splits) or found


def tokenize(
    opts: TokenizeOptions,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> TokenizeResult:
    """Tokenize the raw dataset into shards under opts.out; writes meta.json unless split across jobs.

    on_note receives, before any text is encoded, why the fast path is not used (when it is not).
    """
    if not 0 <= opts.shard_index < opts.num_shards:
        raise LlmctlError(
            f"--shard-index {opts.shard_index} is not in 0..{opts.num_shards - 1}", "pass 0 <= I < K"
        )
    started = time.perf_counter()
    prestart_workers(opts.num_proc, opts.data, opts.splits)
    tok, spec, note = _prepare(
        opts.tokenizer,
        opts.fast,
        on_note,
        opts.mode == "sft" and opts.profile == "model",
        small_input(opts.data, opts.splits),
    )
    out = opts.out
    if out.exists() and not out.is_dir():
        raise LlmctlIOError(
            f"--out {out} is a file, not a folder", "choose another --out, or move that file away"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, out, action="create") from None
    refuse_other_tokenizer(out, tok.fingerprint)
    plans: list[ShardPlan] = []
    policy = None
    for split in _selected_splits(opts.data, opts.splits):
        column = resolve_column(opts.data, split, opts.mode, opts.column)
        policy = _policy(tok, opts.mode, opts.profile, opts.separator, column, count_only=False)
        settings = settings_of(tok, policy, opts.shard_bytes)
        split_plans = plan_split(opts.data, split, column, opts.shard_bytes)
        write_plan(out, opts.data, split, settings, split_plans)
        plans += split_plans
    assert policy is not None
    stamp_id = settings_id(settings_of(tok, policy, opts.shard_bytes))
    mine = [p for k, p in enumerate(plans) if k % opts.num_shards == opts.shard_index]
    todo = [p for p in mine if read_shard_record(out / p.split, shard_name(p.index), policy.dtype) is None]
    progress = Progress(
        rows_total=sum(p.rows for p in todo),
        shards_done=len(mine) - len(todo),
        shards_total=len(mine),
        out=str(out),
    )
    if on_progress:
        on_progress(progress)
    assembler = _ShardAssembler(out, policy, {"fingerprint": tok.fingerprint, "settings_id": stamp_id})
    processes = worker_processes(opts.num_proc, sum(p.est_bytes for p in todo))
    try:
        for plan in todo:
            remove_shard(out / plan.split, shard_name(plan.index))
        with closing(pipeline(todo, policy.column, spec, policy, processes)) as stream:
            for plan, position, result in stream:
                if result is None:
                    assembler.finish(plan)
                    progress.shards_done += 1
                    if on_progress:
                        on_progress(progress)
                    continue
                assembler.add(plan, position, result)
                progress.rows += result.rows
                progress.documents, progress.tokens = (
                    assembler.totals["documents"],
                    assembler.totals["tokens"],
                )
                progress.text_bytes = assembler.totals["text_bytes"]
                progress.seconds = time.perf_counter() - started
                if on_progress:
                    on_progress(progress)
    except OSError as exc:
        assembler.abort()
        left = todo[progress.shards_done - (len(mine) - len(todo)) :]
        raise io_error(exc, exc.filename or out, needed=_bytes_needed(left, progress, policy)) from None
    except BaseException:
        assembler.abort()
        # Interrupted (Ctrl-C, SIGTERM): count what is complete on disk, as a signal may land between
        # a shard's last rename and the counter; the caller reports it from this snapshot.
        progress.shards_done = sum(
            read_shard_record(out / p.split, shard_name(p.index), policy.dtype) is not None for p in mine
        )
        raise
    meta = merge(out) if opts.num_shards == 1 else None
    totals = assembler.totals
    return TokenizeResult(
        out=str(out),
        encoder=spec.backend,
        encoder_note=note,
        shards_total=len(mine),
        shards_written=len(todo),
        shards_skipped=len(mine) - len(todo),
        documents=totals["documents"],
        tokens=totals["tokens"],
        empty_skipped=totals["empty_skipped"],
        invalid_utf8_replaced=totals["invalid_utf8_replaced"],
        text_bytes=totals["text_bytes"],
        seconds=time.perf_counter() - started,
        processes=processes,
        peak_rss_main=_peak_rss(),
        meta=meta,
    )


def _bytes_needed(left: list[ShardPlan], progress: Progress, policy: EncodePolicy) -> int:
    """About how much disk the shards still to write take: their text at this run's tokens per byte."""
    per_byte = progress.tokens / progress.text_bytes if progress.text_bytes else 0.3  # ~3.3 bytes a token
    per_token = np.dtype(policy.dtype).itemsize + (1 if policy.mode == "sft" else 0)
    return int(sum(p.est_bytes for p in left) * per_byte * per_token)


class _ShardAssembler:
    """Appends chunk results, in order, to the shard they belong to; finishes it at its end marker."""

    def __init__(self, out: Path, policy: EncodePolicy, stamp: dict[str, Any]) -> None:
        self.out, self.policy, self.stamp = out, policy, stamp
        self.writer: ShardWriter | None = None
        self.skipped: list[int] = []
        self.counts = {"invalid_utf8_replaced": 0, "text_bytes": 0}
        self.totals = {
            "documents": 0,
            "tokens": 0,
            "empty_skipped": 0,
            "invalid_utf8_replaced": 0,
            "text_bytes": 0,
        }

    def _open(self, plan: ShardPlan) -> ShardWriter:
        if self.writer is None:
            self.writer = ShardWriter(
                self.out / plan.split, shard_name(plan.index), self.policy.dtype, self.policy.mode == "sft"
            )
        return self.writer

    def add(self, plan: ShardPlan, position: int, result: ChunkResult) -> None:
        self._open(plan).append(result.tokens, result.lengths, result.mask)
        self.skipped += [position + i for i in result.empty_rows]
        self.counts["invalid_utf8_replaced"] += result.replaced
        self.counts["text_bytes"] += result.text_bytes
        for key, value in (
            ("documents", len(result.lengths)),
            ("tokens", int(result.lengths.sum())),
            ("empty_skipped", len(result.empty_rows)),
            ("invalid_utf8_replaced", result.replaced),
            ("text_bytes", result.text_bytes),
        ):
            self.totals[key] += value

    def finish(self, plan: ShardPlan) -> None:
        self._open(plan).finish(
            {
                "source": plan.source(),
                "skipped_rows": self.skipped,
                "empty_skipped": len(self.skipped),
                **self.counts,
                **self.stamp,
            }
        )
        self.writer, self.skipped = None, []
        self.counts = {"invalid_utf8_replaced": 0, "text_bytes": 0}

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def count_raw(
    data: Path,
    tokenizer: Path,
    splits: tuple[str, ...] = (),
    mode: str = "pretrain",
    profile: str = "chat",
    separator: str | None = None,
    column: str | None = None,
    num_proc: int = 1,
    fast: bool = True,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Token and document counts of a raw dataset, tokenized in parallel but never written."""
    started = time.perf_counter()
    prestart_workers(num_proc, data, splits)
    tok, spec, note = _prepare(
        tokenizer, fast, on_note, mode == "sft" and profile == "model", small_input(data, splits)
    )
    per_split: dict[str, dict[str, Any]] = {}
    lengths: dict[str, np.ndarray] = {}
    progress = Progress()
    processes = 1
    for split in _selected_splits(data, splits):
        col = resolve_column(data, split, mode, column)
        policy = _policy(tok, mode, profile, separator, col, count_only=True)
        plans = plan_split(data, split, col, 1 << 62)
        progress.rows_total += sum(p.rows for p in plans)
        split_procs = worker_processes(num_proc, sum(p.est_bytes for p in plans))
        processes = max(processes, split_procs)
        parts: list[np.ndarray] = []
        row = {
            "tokens": 0,
            "trained_tokens": 0,
            "documents": 0,
            "empty_skipped": 0,
            "invalid_utf8_replaced": 0,
            "text_bytes": 0,
        }
        with closing(pipeline(plans, col, spec, policy, split_procs)) as stream:
            for _plan, _position, result in stream:
                if result is None:
                    continue
                n = int(result.lengths.sum())
                parts.append(result.lengths)
                for key, value in (
                    ("tokens", n),
                    ("trained_tokens", result.trained),
                    ("documents", len(result.lengths)),
                    ("empty_skipped", len(result.empty_rows)),
                    ("invalid_utf8_replaced", result.replaced),
                    ("text_bytes", result.text_bytes),
                ):
                    row[key] += value
                progress.rows += result.rows
                progress.documents += len(result.lengths)
                progress.tokens += n
                progress.text_bytes += result.text_bytes
                progress.seconds = time.perf_counter() - started
                if on_progress:
                    on_progress(progress)
        per_split[split] = row
        lengths[split] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    result = summarize(per_split, lengths)
    return {
        "path": str(data),
        "tokenizer": str(tok.path),
        "fingerprint": tok.fingerprint,
        "mode": mode,
        "encoder": spec.backend,
        "encoder_note": note,
        "processes": processes,
        "seconds": time.perf_counter() - started,
        **result,
    }
