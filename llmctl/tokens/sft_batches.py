"""SFT batches from SFT token shards: whole conversations, padded by length bucket or packed.

    convs = load_conversations("tokens/instr", "train", seq_len=512, overlong="truncate")
    batches = SFTBatches(convs, micro_batch=8, seq_len=512, packing=False, seed=1337, pad_id=2, batching="random")
    rows = batches.next_rows()          # one micro-batch: numpy inputs, targets, doc_ids, position_ids

Each conversation is shifted on its own (inputs ids[:-1], targets ids[1:] where the mask is 1, else
-100), so no target ever belongs to another conversation, packed or not. A conversation of n tokens
therefore fills n - 1 positions, and one of up to seq_len + 1 tokens fits a sequence.

Padded, `batching="random"`: a shuffled epoch cut into micro-batches, each padded only to its own
longest conversation (rounded up to a multiple of 8). Padded, `batching="length"`: the shuffled epoch is
cut into windows of `BUCKET_BATCHES` micro-batches, each window sorted by length so a batch holds
conversations of similar length (less padding), and the batches' order shuffled again. Packed: in each
window, conversations are placed best-fit by decreasing length into sequences of seq_len positions, with
doc_ids and position_ids that restart per conversation (the model then attends within a conversation only).

Every conversation is trained at least once per epoch: when the conversations (padded) or packed rows
do not fill a whole number of micro-batches on every rank, the first few of the shuffled order fill the
last ones a second time (epoch_plan.fill_to_multiple). The order depends only on the seed, the epoch and
the world size; rank r takes every world-th batch of the epoch, all ranks the same number. The position
(epoch, batch) is the whole state: resuming re-plans the epoch and continues at the same batch.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.tokenizer.chat import require_profile
from llmctl.tokens.epoch_plan import EpochPlan, fill_to_multiple
from llmctl.tokens.shards import Shard, open_split, read_meta

IGNORE = -100
BUCKET_BATCHES = 64
"""Micro-batches per length-sorting (padded) or packing (packed) window: larger wastes less padding,
smaller keeps the order more random."""
PAD_MULTIPLE = 8
BATCHINGS = ("random", "length")
"""Padded SFT batch orders (`data.batching`): random micro-batches, or length-sorted windows."""


@dataclass
class Conversations:
    """The usable conversations of one split, across its shards, after the overlong policy."""

    shards: list[Shard]
    shard_of: np.ndarray
    """Shard index of each conversation."""
    local: np.ndarray
    """Index of each conversation within its shard."""
    lengths: np.ndarray
    """Tokens of each conversation after truncation (at most seq_len + 1)."""
    counts: dict[str, int] = field(default_factory=dict)
    """conversations, truncated, dropped_overlong, dropped_untrained (no trained token left)."""

    def __len__(self) -> int:
        return len(self.lengths)

    def ids_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Token ids (int64) and loss mask (uint8) of conversation i, truncated to its recorded length."""
        shard = self.shards[int(self.shard_of[i])]
        j, n = int(self.local[i]), int(self.lengths[i])
        ids = np.asarray(shard.document(j)[:n], dtype=np.int64)
        mask = shard.document_mask(j)
        return ids, np.asarray(mask[:n], dtype=np.uint8)


def require_sft(meta: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """meta itself when it describes SFT shards; pretraining shards are refused with the command that makes SFT ones."""
    if meta.get("mode") != "sft":
        raise LlmctlError(
            f"{root} holds '{meta.get('mode')}' token shards, not SFT shards (no loss mask)",
            "tokenize a chat dataset with `llmctl tokenize --mode sft --profile chat --data RAW --tokenizer TOK --out DIR`",
        )
    return meta


def check_sft_compat(
    meta: dict[str, Any],
    tokenizer: Any,
    checkpoint_fingerprint: str | None,
    data_path: str | Path,
    checkpoint: str | Path | None,
) -> str:
    """The data's chat profile name, after checking the tokenizers match and hold the profile's tokens.

    A model fine-tuned on ids from another tokenizer would learn garbage without any error, so a
    mismatch stops the run before it starts, naming both files.
    """
    data_tok = meta.get("tokenizer") or {}
    if checkpoint_fingerprint is not None and data_tok.get("fingerprint") != checkpoint_fingerprint:
        raise LlmctlError(
            f"the checkpoint {checkpoint} was trained with tokenizer {checkpoint_fingerprint[:12]} but the SFT data "
            f"{data_path} was tokenized with {data_tok.get('path')} ({str(data_tok.get('fingerprint'))[:12]})",
            "re-tokenize the chat data with the checkpoint's tokenizer: `llmctl tokenize --mode sft --tokenizer <the pretraining tokenizer>`",
        )
    profile_info = meta.get("chat_profile") or {}
    if profile_info.get("name") == "model":
        return "model"  # `tokenize --template model`: the tokenizer's own template, nothing to check here
    profile = require_profile(
        profile_info.get("name", "chat"),
        tokenizer,
        "train the tokenizer with `llmctl tokenizer train --profile chat` before pretraining, so SFT can use it",
    )
    return profile.name


def sft_meta(root: str | Path) -> dict[str, Any]:
    """meta.json of SFT shards (see require_sft)."""
    return require_sft(read_meta(root), root)


def load_conversations(
    root: str | Path, split: str, seq_len: int, overlong: str, meta: dict[str, Any] | None = None
) -> Conversations:
    """Index a split's conversations; longer than seq_len + 1 tokens: truncated or dropped per `overlong`.

    A conversation left with no trained token (no assistant reply, or one cut off by truncation) is
    dropped and counted, since it would add nothing but padding.
    """
    meta = meta or sft_meta(root)
    shards = open_split(root, split, meta)
    limit = seq_len + 1
    shard_of, local, lengths = [], [], []
    truncated = dropped_long = dropped_untrained = total = 0
    for s, shard in enumerate(shards):
        if shard.mask is None:
            raise LlmctlError(
                f"shard {split}/{shard.name} of {root} has no loss mask", "re-tokenize with --mode sft"
            )
        n = np.diff(shard.offsets)
        total += len(n)
        # Trained tokens a conversation keeps after truncation; position 0 is never a target.
        cum = (
            np.concatenate([[0], np.cumsum(shard.mask, dtype=np.int64)])
            if len(shard.mask)
            else np.zeros(1, np.int64)
        )
        start = shard.offsets[:-1]
        kept = np.minimum(n, limit)
        trained = cum[start + kept] - cum[np.minimum(start + 1, start + kept)]
        long = n > limit
        usable = trained > 0
        if overlong == "drop":
            dropped_long += int(np.count_nonzero(long))
            usable &= ~long
        else:
            truncated += int(np.count_nonzero(long & usable))
            dropped_long += int(np.count_nonzero(long & ~usable))
        dropped_untrained += int(np.count_nonzero(~long & ~usable))
        idx = np.flatnonzero(usable)
        shard_of.append(np.full(len(idx), s, dtype=np.int32))
        local.append(idx.astype(np.int64))
        lengths.append(kept[idx].astype(np.int64))
    conv = Conversations(
        shards=shards,
        shard_of=np.concatenate(shard_of) if shard_of else np.zeros(0, np.int32),
        local=np.concatenate(local) if local else np.zeros(0, np.int64),
        lengths=np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
        counts={
            "conversations": total,
            "truncated": truncated,
            "dropped_overlong": dropped_long,
            "dropped_untrained": dropped_untrained,
        },
    )
    conv.counts["used"] = len(conv)
    return conv


def _windows(order: np.ndarray, size: int) -> list[np.ndarray]:
    return [order[i : i + size] for i in range(0, len(order), size)]


def plan_padded(
    lengths: np.ndarray,
    batch: int,
    rng: np.random.Generator,
    bucket: int = BUCKET_BATCHES,
    world: int = 1,
) -> list[list[list[int]]]:
    """Micro-batches of `batch` single-conversation rows, length-sorted within windows of `bucket`
    micro-batches (1: plain random batches), order shuffled; a multiple of `world` of them, holding
    every conversation (a few twice, to fill the last)."""
    order = fill_to_multiple(rng.permutation(len(lengths)), batch * world)
    batches: list[list[list[int]]] = []
    # Windows are multiples of `batch` and so is the filled order: every window cuts into whole batches.
    for window in _windows(order, batch * bucket):
        window = window[np.argsort(lengths[window], kind="stable")]
        batches += [[[int(c)] for c in window[i : i + batch]] for i in range(0, len(window), batch)]
    rng.shuffle(batches)
    return batches


def plan_packed(
    lengths: np.ndarray, batch: int, seq_len: int, rng: np.random.Generator, world: int = 1
) -> list[list[list[int]]]:
    """Micro-batches of `batch` packed rows, a multiple of `world` of them; each row's conversations fill
    at most seq_len positions, and every conversation is in a row (a few rows twice, to fill the last)."""
    order = rng.permutation(len(lengths))
    rows: list[list[int]] = []
    # Enough conversations per window to fill about BUCKET_BATCHES micro-batches.
    per_window = (
        max(1, int(batch * BUCKET_BATCHES * seq_len / max(1.0, float(lengths.mean() - 1))))
        if len(lengths)
        else 1
    )
    for window in _windows(order, per_window):
        window = window[np.argsort(-lengths[window], kind="stable")]
        # Best fit, decreasing: each conversation goes to the pack with the least room that still holds it.
        free: list[tuple[int, int]] = []
        packs: list[list[int]] = []
        for c in window:
            need = int(lengths[c]) - 1
            i = bisect.bisect_left(free, (need, -1))
            if i < len(free):
                room, k = free.pop(i)
                packs[k].append(int(c))
                bisect.insort(free, (room - need, k))
            else:
                packs.append([int(c)])
                bisect.insort(free, (seq_len - need, len(packs) - 1))
        rows += packs
    rng.shuffle(rows)
    rows = [rows[i] for i in fill_to_multiple(np.arange(len(rows)), batch * world)]
    return [rows[i : i + batch] for i in range(0, len(rows), batch)]


@dataclass
class Rows:
    """One micro-batch as numpy arrays [B, T]."""

    inputs: np.ndarray
    targets: np.ndarray
    doc_ids: np.ndarray
    position_ids: np.ndarray
    tokens: int
    """Non-padding input positions."""
    samples: int
    """Conversations."""


def collate(convs: Conversations, rows: list[list[int]], pad_id: int, width: int | None = None) -> Rows:
    """Build a micro-batch; rows are lists of conversation indices. Width: given, else the longest row
    rounded up to a multiple of 8. Padding: pad_id inputs, -100 targets, a doc id of its own."""
    pieces = [[convs.ids_and_mask(c) for c in row] for row in rows]
    longest = max(sum(len(ids) - 1 for ids, _ in row) for row in pieces)
    width = width or -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    B = len(rows)
    inputs = np.full((B, width), pad_id, dtype=np.int64)
    targets = np.full((B, width), IGNORE, dtype=np.int64)
    doc_ids = np.zeros((B, width), dtype=np.int64)
    positions = np.zeros((B, width), dtype=np.int64)
    tokens = samples = 0
    for b, row in enumerate(pieces):
        at = 0
        for d, (ids, mask) in enumerate(row):
            n = len(ids) - 1
            inputs[b, at : at + n] = ids[:-1]
            targets[b, at : at + n] = np.where(mask[1:] == 1, ids[1:], IGNORE)
            doc_ids[b, at : at + n] = d
            positions[b, at : at + n] = np.arange(n)
            at += n
        # Padding is a document of its own, so no real token attends to it and its rows are never empty.
        doc_ids[b, at:] = len(row)
        positions[b, at:] = np.arange(width - at)
        tokens += at
        samples += len(row)
    return Rows(inputs, targets, doc_ids, positions, tokens, samples)


class SFTBatches(EpochPlan):
    """Endless, resumable stream of this rank's SFT micro-batches (epochs re-shuffled by seed)."""

    def __init__(
        self,
        convs: Conversations,
        micro_batch: int,
        seq_len: int,
        packing: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        pad_id: int = 0,
        batching: str = "random",
    ) -> None:
        if batching not in BATCHINGS:
            raise LlmctlError(f"unknown data.batching '{batching}'", f"use one of {', '.join(BATCHINGS)}")
        self.convs, self.micro_batch, self.seq_len, self.packing = convs, micro_batch, seq_len, packing
        self.seed, self.rank, self.world, self.pad_id = seed, rank, world, pad_id
        self.batching = batching
        self.epoch, self.index = 0, 0
        self._plan: list[list[list[int]]] | None = None
        if self.batches_per_epoch() == 0:
            raise LlmctlError(
                f"{len(convs)} usable conversations make no micro-batch of {micro_batch} per rank on {world} rank(s)",
                "lower --train.micro_batch_size, use more data, or raise --data.seq_len if conversations were dropped",
            )

    def _epoch_plan(self, epoch: int) -> list[list[list[int]]]:
        rng = np.random.default_rng([self.seed, epoch])
        lengths = self.convs.lengths
        if self.packing:
            plan = plan_packed(lengths, self.micro_batch, self.seq_len, rng, self.world)
        else:
            bucket = BUCKET_BATCHES if self.batching == "length" else 1
            plan = plan_padded(lengths, self.micro_batch, rng, bucket, self.world)
        return plan[self.rank :: self.world]

    def _collate(self, layout: Any) -> Rows:
        return collate(self.convs, layout, self.pad_id, self.seq_len if self.packing else None)


def fixed_rows(
    convs: Conversations, micro_batch: int, count: int, pad_id: int, rank: int = 0, world: int = 1
) -> list[Rows]:
    """Evaluation micro-batches: the split's conversations in order, padded, this rank's share of `count`."""
    order = np.arange(len(convs))
    batches = [order[i : i + micro_batch] for i in range(0, len(order), micro_batch)][:count]
    return [collate(convs, [[int(c)] for c in b], pad_id) for b in batches[rank::world]]
