"""Micro-batches of preference pairs for `llmctl dpo`: packed rows with per-sequence attention, or padded.

    stream = PairBatches(pairs, micro_batch=8, seq_len=512, packing=True, seed=1337)
    rows = stream.next_rows()        # PairRows: inputs, targets, doc_ids, position_ids, seq_index, pair_ids

Every pair gives two sequences, prompt + chosen and prompt + rejected. Packed: whole pairs (both
sequences) are placed best-fit into rows of seq_len positions, each sequence a document of its own
(attention and RoPE positions restart), `micro_batch` rows per micro-batch. Padded: `micro_batch`
pairs per micro-batch, one sequence per row (chosen rows first), padded to the longest. `seq_index`
names the sequence (2k: chosen of the batch's k-th pair, 2k+1: rejected) of every trained target,
-1 elsewhere, so per-sequence log-probs are one scatter-add whatever the layout. Every usable pair is
in each epoch's plan, on any number of ranks: a few are repeated to fill the last micro-batches
(epoch_plan.fill_to_multiple).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.tokens.epoch_plan import EpochPlan, fill_to_multiple
from llmctl.tokens.pairs import PairShard

IGNORE = -100
PAD_MULTIPLE = 8


@dataclass
class PairRows:
    """One micro-batch as numpy arrays [B, T], plus which pairs it holds."""

    inputs: np.ndarray
    targets: np.ndarray
    doc_ids: np.ndarray
    position_ids: np.ndarray
    seq_index: np.ndarray
    pair_ids: np.ndarray
    """Pair indices within the split, in batch order (k-th pair: sequences 2k and 2k+1)."""
    tokens: int
    """Non-padding input positions."""


def usable_pairs(pairs: PairShard, seq_len: int) -> np.ndarray:
    """Indices of pairs whose longer sequence fits seq_len + 1 tokens (inputs and targets are shifted by one)."""
    lengths = pairs.sequence_lengths()
    return np.flatnonzero(lengths.max(axis=1) - 1 <= seq_len) if len(lengths) else np.zeros(0, np.int64)


Layout = list[list[tuple[int, int]]]
"""Rows of (pair, side) sequences: side 0 is prompt + chosen, 1 is prompt + rejected."""


def padded_layout(order: list[int]) -> Layout:
    """One sequence per row: every pair's chosen rows first, then the rejected ones."""
    return [[(p, 0)] for p in order] + [[(p, 1)] for p in order]


def collate_pairs(pairs: PairShard, layout: Layout, pad_id: int, width: int | None) -> PairRows:
    """A micro-batch from rows of (pair, side) sequences; every pair must have both sides in the layout.
    Width: given (packed rows), else the longest row rounded up to a multiple of 8."""
    order = list(dict.fromkeys(p for row in layout for p, _ in row))
    local = {p: k for k, p in enumerate(order)}
    pieces: list[list[tuple[int, np.ndarray, np.ndarray]]] = []
    for row in layout:
        built = []
        for p, side in row:
            (pi, pm), chosen, rejected = pairs.sides(p)
            ids, mask = (chosen, rejected)[side]
            built.append((2 * local[p] + side, np.concatenate([pi, ids]), np.concatenate([pm, mask])))
        pieces.append(built)
    longest = max(sum(len(ids) - 1 for _, ids, _ in row) for row in pieces)
    width = width or -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE
    B = len(pieces)
    inputs = np.full((B, width), pad_id, dtype=np.int64)
    targets = np.full((B, width), IGNORE, dtype=np.int64)
    seq_index = np.full((B, width), -1, dtype=np.int64)
    doc_ids = np.zeros((B, width), dtype=np.int64)
    positions = np.zeros((B, width), dtype=np.int64)
    tokens = 0
    for b, row in enumerate(pieces):
        at = 0
        for d, (seq, ids, mask) in enumerate(row):
            n = len(ids) - 1
            trained = mask[1:] == 1
            inputs[b, at : at + n] = ids[:-1]
            targets[b, at : at + n] = np.where(trained, ids[1:], IGNORE)
            seq_index[b, at : at + n] = np.where(trained, seq, -1)
            doc_ids[b, at : at + n] = d
            positions[b, at : at + n] = np.arange(n)
            at += n
        doc_ids[b, at:] = len(row)  # padding: a document of its own, as in SFT packing
        positions[b, at:] = np.arange(width - at)
        tokens += at
    return PairRows(inputs, targets, doc_ids, positions, seq_index, np.asarray(order, dtype=np.int64), tokens)


def plan_packed_pairs(
    lengths: np.ndarray, usable: np.ndarray, rows_per_batch: int, seq_len: int, rng: np.random.Generator
) -> list[Layout]:
    """Micro-batches of `rows_per_batch` rows of seq_len positions; a sequence fills its length - 1.

    Pairs are taken in a shuffled order, longest first within windows of a few micro-batches, and each
    sequence goes best fit into the current micro-batch's rows; when one of a pair's two sequences does
    not fit, the micro-batch is closed and the pair opens the next. Both sides of a pair therefore always
    share a micro-batch, and no pair is dropped for not fitting beside another.
    """
    need = lengths - 1
    order = rng.permutation(usable)
    window = max(1, rows_per_batch * 8 * seq_len // max(1, int(need.sum(axis=1).mean()) if len(need) else 1))
    batches: list[Layout] = []
    rows: Layout = [[] for _ in range(rows_per_batch)]
    free = [seq_len] * rows_per_batch

    def place(n: int, trial: list[int]) -> int | None:
        fits = [i for i in range(rows_per_batch) if trial[i] >= n]
        return min(fits, key=lambda i: trial[i]) if fits else None

    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort(-need[chunk].sum(axis=1), kind="stable")]
        for p in chunk:
            for _attempt in range(2):
                trial = list(free)
                spots = []
                for side in (0, 1):
                    i = place(int(need[p, side]), trial)
                    if i is None:
                        break
                    trial[i] -= int(need[p, side])
                    spots.append(i)
                if len(spots) == 2:
                    for side, i in enumerate(spots):
                        rows[i].append((int(p), side))
                    free = trial
                    break
                if not any(rows):  # not even an empty micro-batch holds it (one row per batch): skip it
                    break
                batches.append(rows)
                rows, free = [[] for _ in range(rows_per_batch)], [seq_len] * rows_per_batch
    if any(rows):
        batches.append(rows)
    # Empty rows (the last micro-batches of a window) are fine: they are all padding.
    order_of = rng.permutation(len(batches))
    return [batches[i] for i in order_of]


def plan_padded_pairs(
    usable: np.ndarray, batch: int, rng: np.random.Generator, world: int = 1
) -> list[Layout]:
    """Micro-batches of `batch` pairs in a shuffled order, one sequence per row; a multiple of `world` of
    them holding every usable pair (the first few twice, to fill the last)."""
    order = fill_to_multiple(rng.permutation(usable), batch * world)
    return [padded_layout(order[i : i + batch].tolist()) for i in range(0, len(order), batch)]


class PairBatches(EpochPlan):
    """Endless, resumable stream of this rank's DPO micro-batches (epochs re-shuffled by seed)."""

    def __init__(
        self,
        pairs: PairShard,
        micro_batch: int,
        seq_len: int,
        packing: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        pad_id: int = 0,
    ) -> None:
        self.pairs, self.micro_batch, self.seq_len, self.packing = pairs, micro_batch, seq_len, packing
        self.seed, self.rank, self.world, self.pad_id = seed, rank, world, pad_id
        self.lengths = pairs.sequence_lengths()
        self.usable = usable_pairs(pairs, seq_len)
        self.epoch, self.index = 0, 0
        self._plan: list[Layout] | None = None
        if self.batches_per_epoch() == 0:
            raise LlmctlError(
                f"{len(self.usable)} usable pairs make no micro-batch of {micro_batch} per rank on {world} rank(s)",
                "lower --train.micro_batch_size, use more pairs, or raise --data.seq_len if pairs were too long",
            )

    def _epoch_plan(self, epoch: int) -> list[Layout]:
        rng = np.random.default_rng([self.seed, epoch])
        if self.packing:
            plan = plan_packed_pairs(self.lengths, self.usable, self.micro_batch, self.seq_len, rng)
        else:
            plan = plan_padded_pairs(self.usable, self.micro_batch, rng, self.world)
        # Packed micro-batches are whole pairs already; the first few fill the ranks' last round.
        plan = [plan[i] for i in fill_to_multiple(np.arange(len(plan)), self.world)]
        return plan[self.rank :: self.world]

    def _collate(self, layout: Any) -> PairRows:
        return collate_pairs(self.pairs, layout, self.pad_id, self.seq_len if self.packing else None)


def fixed_pair_rows(
    pairs: PairShard, seq_len: int, micro_batch: int, count: int, pad_id: int, rank: int = 0, world: int = 1
) -> list[PairRows]:
    """Evaluation micro-batches: the split's usable pairs in order, padded, this rank's share of `count`."""
    usable = usable_pairs(pairs, seq_len)
    batches = [usable[i : i + micro_batch].tolist() for i in range(0, len(usable), micro_batch)][:count]
    return [collate_pairs(pairs, padded_layout(b), pad_id, None) for b in batches[rank::world]]
