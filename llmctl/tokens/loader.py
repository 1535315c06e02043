"""Packed pretraining windows over memory-mapped token shards, in a seeded order, resumable by one number.

    windows = PackedWindows(open_split("tokens/py", "train"), seq_len=256)
    stream = WindowStream(windows, seed=1337, micro_batch=8, rank=0, world=1)
    rows = stream.next_rows()            # int64 [8, 257]: inputs rows[:, :-1], targets rows[:, 1:]
    stream.state_dict()                  # {"position": 8, ...}: windows handed out, over all ranks

Each shard is cut into windows of seq_len + 1 tokens at a stride of seq_len, so every token but a
shard's first is a target exactly once per epoch; documents run into each other, separated by the
token the tokenizer's separator policy put between them. Windows are drawn without replacement in a
permutation fixed by (seed, epoch). Rank r of W takes, at each micro-step, the r-th block of
micro_batch windows of the next W * micro_batch: the ranks read disjoint data, and W ranks see the
same windows per optimizer step as one process accumulating W micro-batches. The position in this
sequence is the whole state, so a resume continues at once without replaying anything.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.tokens.shards import Shard


class PackedWindows:
    """Random access to the windows of seq_len + 1 tokens of one split's shards."""

    def __init__(self, shards: list[Shard], seq_len: int) -> None:
        self.shards = shards
        self.seq_len = seq_len
        counts = np.array([max(0, (s.num_tokens - 1) // seq_len) for s in shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])
        self.tokens = int(sum(s.num_tokens for s in shards))

    def __len__(self) -> int:
        return int(self.starts[-1])

    def window(self, index: int) -> np.ndarray:
        """Tokens of window `index` as int64, length seq_len + 1."""
        s = int(np.searchsorted(self.starts, index, side="right")) - 1
        at = (index - int(self.starts[s])) * self.seq_len
        return np.asarray(self.shards[s].tokens[at : at + self.seq_len + 1], dtype=np.int64)

    def rows(self, indices: np.ndarray) -> np.ndarray:
        """The windows at `indices`, stacked: int64 [len(indices), seq_len + 1]."""
        return np.stack([self.window(int(i)) for i in indices])


class WindowStream:
    """The training sequence of windows for one rank: epoch after epoch of seeded permutations."""

    def __init__(
        self, windows: PackedWindows, seed: int, micro_batch: int, rank: int = 0, world: int = 1
    ) -> None:
        if len(windows) < micro_batch * world:
            raise LlmctlError(
                f"the training split holds {len(windows)} windows of {windows.seq_len + 1} tokens, "
                f"fewer than one step of {micro_batch} x {world} rank(s) needs",
                "tokenize more data, or lower --data.seq_len / --train.micro_batch_size",
            )
        self.windows = windows
        self.seed = seed
        self.micro_batch = micro_batch
        self.rank = rank
        self.world = world
        self.position = 0
        self._epoch = -1
        self._order = np.zeros(0, dtype=np.int64)

    def _order_of(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))
            self._order = order.astype(np.uint32 if len(order) < 2**32 else np.int64)
            self._epoch = epoch
        return self._order

    def next_rows(self) -> np.ndarray:
        """This rank's next micro-batch, int64 [micro_batch, seq_len + 1]; advances the position for all ranks."""
        n = len(self.windows)
        first = self.position + self.rank * self.micro_batch
        indices = np.empty(self.micro_batch, dtype=np.int64)
        for j in range(self.micro_batch):
            epoch, at = divmod(first + j, n)
            indices[j] = self._order_of(epoch)[at]
        self.position += self.micro_batch * self.world
        return self.windows.rows(indices)

    @property
    def epoch(self) -> float:
        """Epochs completed so far, fractional."""
        return self.position / len(self.windows)

    def state_dict(self) -> dict[str, Any]:
        """The data position (windows handed out over all ranks) and what it is a position in."""
        return {
            "position": self.position,
            "seed": self.seed,
            "windows": len(self.windows),
            "seq_len": self.windows.seq_len,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at a saved position; a different data set or window length is a clear error."""
        if state.get("windows") != len(self.windows) or state.get("seq_len") != self.windows.seq_len:
            raise LlmctlError(
                f"the checkpoint's data position counts {state.get('windows')} windows of {state.get('seq_len')} tokens, "
                f"this data has {len(self.windows)} of {self.windows.seq_len}",
                "resume with the same --data.path and --data.seq_len the run started with",
            )
        self.position = int(state["position"])
        self.seed = int(state.get("seed", self.seed))


class MixedStream:
    """Several sources' windows interleaved by weight, for one rank; each source keeps its own seeded order,
    epoch count and position.

    The schedule is deterministic, not random draws: each global slot goes to the source furthest behind
    its target (weight x slots so far, minus windows it has had; ties to the first listed), so after n
    windows every source has had within one window of weight x n. Rank r takes the r-th block of
    micro_batch windows of each W x micro_batch, as WindowStream does. The state is the per-source counts.
    """

    def __init__(
        self,
        sources: list[PackedWindows],
        weights: list[float],
        seed: int,
        micro_batch: int,
        rank: int = 0,
        world: int = 1,
        names: list[str] | None = None,
    ) -> None:
        self.names = names or [str(i) for i in range(len(sources))]
        for windows, name in zip(sources, self.names, strict=True):
            if len(windows) == 0:
                raise LlmctlError(
                    f"the training split of {name} holds no window of {windows.seq_len + 1} tokens",
                    "tokenize more data into it, or lower --data.seq_len",
                )
        self.sources = sources
        self.weights = [float(w) for w in weights]
        self.seed = seed
        self.micro_batch = micro_batch
        self.rank = rank
        self.world = world
        self.counts = [0] * len(sources)
        """Windows handed out from each source, over all ranks."""
        self.last_counts = [0] * len(sources)
        """Windows each source gave to this rank's last micro-batch."""
        self._orders: dict[int, tuple[int, np.ndarray]] = {}

    @property
    def position(self) -> int:
        """Windows handed out over all sources and ranks."""
        return sum(self.counts)

    def _order_of(self, source: int, epoch: int) -> np.ndarray:
        cached = self._orders.get(source)
        if cached is None or cached[0] != epoch:
            order = np.random.default_rng([self.seed, source, epoch]).permutation(len(self.sources[source]))
            cached = (epoch, order.astype(np.uint32 if len(order) < 2**32 else np.int64))
            self._orders[source] = cached
        return cached[1]

    def _pick(self) -> int:
        slots = self.position + 1
        deficits = [w * slots - c for w, c in zip(self.weights, self.counts, strict=True)]
        return int(np.argmax(deficits))

    def next_rows(self) -> np.ndarray:
        """This rank's next micro-batch, int64 [micro_batch, seq_len + 1]; advances every source's position."""
        picks: list[tuple[int, int]] = []
        self.last_counts = [0] * len(self.sources)
        for _ in range(self.micro_batch * self.world):
            s = self._pick()
            epoch, at = divmod(self.counts[s], len(self.sources[s]))
            picks.append((s, int(self._order_of(s, epoch)[at])))
            self.counts[s] += 1
        mine = picks[self.rank * self.micro_batch : (self.rank + 1) * self.micro_batch]
        for s, _ in mine:
            self.last_counts[s] += 1
        return np.stack([self.sources[s].window(i) for s, i in mine])

    @property
    def epochs(self) -> list[float]:
        """Epochs of each source completed so far, fractional."""
        return [c / len(w) for c, w in zip(self.counts, self.sources, strict=True)]

    def state_dict(self) -> dict[str, Any]:
        """Per-source positions (windows handed out over all ranks) and what they are positions in."""
        return {
            "position": self.position,
            "seed": self.seed,
            "seq_len": self.sources[0].seq_len,
            "sources": [
                {"name": n, "windows": len(w), "position": c, "weight": wt}
                for n, w, c, wt in zip(self.names, self.sources, self.counts, self.weights, strict=True)
            ],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue at saved per-source positions; other sources, sizes or weights are a clear error."""
        saved = state.get("sources")
        now = [(len(w), round(wt, 9)) for w, wt in zip(self.sources, self.weights, strict=True)]
        then = (
            [(s.get("windows"), round(float(s.get("weight", -1)), 9)) for s in saved]
            if isinstance(saved, list)
            else None
        )
        if then != now or state.get("seq_len") != self.sources[0].seq_len:
            raise LlmctlError(
                "the checkpoint's data position is for another mixture "
                f"({len(saved) if isinstance(saved, list) else 1} source(s)), not these {len(self.sources)} with these weights",
                "resume with the same --data sources, weights and --data.seq_len the run started with",
            )
        self.counts = [int(s["position"]) for s in saved]
        self.seed = int(state.get("seed", self.seed))


def eval_rows(
    windows: PackedWindows, batches: int, micro_batch: int, rank: int, world: int
) -> list[np.ndarray]:
    """This rank's share of a fixed validation set of batches * micro_batch windows (fewer when the split
    is small): the same windows in every run of the same data, whatever the number of ranks, split
    evenly so every rank runs the same number of forward passes."""
    total = min(len(windows), batches * micro_batch)
    per_rank = total // world
    if per_rank == 0:
        return []
    order = np.random.default_rng(0).permutation(len(windows))[: per_rank * world]
    mine = order[rank * per_rank : (rank + 1) * per_rank]
    return [windows.rows(mine[i : i + micro_batch]) for i in range(0, per_rank, micro_batch)]
