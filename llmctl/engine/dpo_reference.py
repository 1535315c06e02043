"""Batches of pairs on the device, and the reference model's log-probs computed once and stored.

    batch = pair_batch(rows, packed=True, ref=table)          # a PairBatch for the Trainer
    key = reference_key(ref_checkpoint, "tokens/prefs", ["train", "validation"], cfg, "bf16")
    tables, info = load_or_compute_reference(run_dir, key, shards, make_model, cfg, runtime, dist)

`dpo.ref_mode=precompute` (the default): before training, the reference runs forward only over every
usable pair (padded, one sequence per row), the ranks sharing the work, and rank 0 stores the summed
log-probs as RUN/reference/<key>/<split>.npy with reference.json written last. The key hashes the
reference weights, the pair shards, seq_len and the compute dtype, so a resumed or repeated run reads
them back and a changed input computes them again.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmctl.config import Config
from llmctl.engine.dpo_loss import sequence_logps
from llmctl.engine.objectives import Batch
from llmctl.files import atomic_write_bytes, atomic_write_json, file_sha256
from llmctl.tokens.pair_batches import PairRows, collate_pairs, padded_layout, usable_pairs
from llmctl.tokens.pairs import PairShard


@dataclass(frozen=True)
class ReferenceProgress:
    """How far the reference pass is, for a progress callback (rank 0's share, scaled to all ranks)."""

    split: str
    pairs: int
    """Pairs of this split done so far (all ranks)."""
    pairs_total: int
    """Usable pairs of this split."""
    seconds: float
    """Since the reference pass started (all splits)."""
    finished: bool = False
    """True once, after the last split: the pass is over."""


ProgressCallback = Callable[[ReferenceProgress], None]


@dataclass
class PairBatch(Batch):
    """A DPO micro-batch: the Batch fields plus which sequence each target belongs to."""

    seq_index: torch.Tensor | None = None
    """[B, T]: 2k / 2k+1 for the k-th pair's chosen / rejected trained targets, -1 elsewhere."""
    pair_ids: torch.Tensor | None = None
    """[pairs] indices within the split."""
    ref: torch.Tensor | None = None
    """[pairs, 2] reference log-prob sums (chosen, rejected) when precomputed; None with a live reference."""

    def to(self, device: torch.device) -> PairBatch:
        moved = Batch.to(self, device)
        if device.type == "cpu":
            return self
        extra = {
            k: None if getattr(self, k) is None else getattr(self, k).to(device)
            for k in ("seq_index", "pair_ids", "ref")
        }
        return replace(
            self,
            inputs=moved.inputs,
            targets=moved.targets,
            doc_ids=moved.doc_ids,
            position_ids=moved.position_ids,
            **extra,
        )


def pair_batch(rows: PairRows, packed: bool, ref: np.ndarray | None) -> PairBatch:
    return PairBatch(
        inputs=torch.from_numpy(rows.inputs),
        targets=torch.from_numpy(rows.targets),
        doc_ids=torch.from_numpy(rows.doc_ids) if packed else None,
        position_ids=torch.from_numpy(rows.position_ids) if packed else None,
        tokens=rows.tokens,
        samples=len(rows.pair_ids),
        trained_tokens=len(rows.pair_ids),
        seq_index=torch.from_numpy(rows.seq_index),
        pair_ids=torch.from_numpy(rows.pair_ids),
        ref=torch.from_numpy(ref[rows.pair_ids]) if ref is not None else None,
    )


@torch.no_grad()
def reference_logps(
    model: torch.nn.Module,
    pairs: PairShard,
    seq_len: int,
    micro_batch: int,
    device: torch.device,
    autocast: Any,
    rank: int = 0,
    world: int = 1,
    on_chunk: Callable[[int, int], None] | None = None,
) -> dict[int, tuple[float, float]]:
    """{pair: (chosen, rejected) log-prob sums} for this rank's share of the usable pairs (padded, forward
    only); `on_chunk(pairs done, usable pairs)` after each micro-batch, counting all ranks' share alike."""
    model.eval()
    usable = usable_pairs(pairs, seq_len)
    chunks = [usable[i : i + micro_batch].tolist() for i in range(0, len(usable), micro_batch)]
    found: dict[int, tuple[float, float]] = {}
    for done, chunk in enumerate(chunks[rank::world], start=1):
        batch = pair_batch(collate_pairs(pairs, padded_layout(chunk), 0, None), False, None).to(device)
        sums, _, _ = sequence_logps(model, batch, autocast, 2 * len(chunk), with_logits=False)
        values = sums.double().cpu().numpy()
        for k, p in enumerate(chunk):
            found[int(p)] = (float(values[2 * k]), float(values[2 * k + 1]))
        if on_chunk is not None:
            on_chunk(min(len(usable), done * world * micro_batch), len(usable))
    return found


def reference_key(
    ref_checkpoint: Path, data_path: str | Path, splits: list[str], cfg: Config, dtype: str
) -> str:
    """Hash of the reference weights, the pair shards and what changes the numbers (seq_len, dtype)."""
    h = hashlib.sha256()
    file_sha256(ref_checkpoint / "model.safetensors", h)
    for split in splits:
        for suffix in (".idx", ".bin", ".mask"):
            file_sha256(Path(data_path) / split / f"pairs-00000{suffix}", h)
    h.update(json.dumps({"seq_len": cfg.data.seq_len, "dtype": dtype, "splits": splits}).encode())
    if cfg.lora.quantize != "none":  # QLoRA's reference is its 4-bit base: other numbers
        h.update(cfg.lora.quantize.encode())
    return h.hexdigest()[:16]


def load_or_compute_reference(
    run_dir: Path,
    key: str,
    splits: dict[str, PairShard],
    make_model: Any,
    cfg: Config,
    runtime: Any,
    dist: Any,
    on_progress: ProgressCallback | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per split, [pairs, 2] reference log-prob sums (NaN for pairs too long to train on): read from
    RUN/reference/<key>/ when there, else computed (ranks share the work) and written by rank 0.
    Rank 0 reports its progress through `on_progress` (a last report with finished=True)."""
    from llmctl.engine import distributed as D

    folder = run_dir / "reference" / key
    info_path = folder / "reference.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        arrays = {s: np.load(folder / f"{s}.npy", allow_pickle=False) for s in splits}
        return arrays, {**info, "cached": True}
    started = time.perf_counter()
    model = make_model()
    arrays: dict[str, np.ndarray] = {}
    tokens = 0
    report = on_progress if dist.is_rank0 else None
    last = ReferenceProgress("", 0, 0, 0.0)
    for split, pairs in splits.items():

        def on_chunk(done: int, total: int, split: str = split) -> None:
            nonlocal last
            last = ReferenceProgress(split, done, total, time.perf_counter() - started)
            if report is not None:
                report(last)

        mine = reference_logps(
            model,
            pairs,
            cfg.data.seq_len,
            cfg.train.micro_batch_size,
            runtime.device,
            runtime.autocast,
            dist.rank,
            dist.world_size,
            on_chunk,
        )
        table = np.full((len(pairs), 2), np.nan)
        for part in D.all_gather_object(dist, mine):
            for p, (c, r) in part.items():
                table[p] = (c, r)
        arrays[split] = table
        usable = usable_pairs(pairs, cfg.data.seq_len)
        tokens += int(pairs.sequence_lengths()[usable].sum())
    del model
    if report is not None:
        report(replace(last, seconds=time.perf_counter() - started, finished=True))
    info = {
        "key": key,
        "splits": {s: len(a) for s, a in arrays.items()},
        "tokens": tokens,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if dist.is_rank0:
        for split, table in arrays.items():
            buf = io.BytesIO()
            np.save(buf, table, allow_pickle=False)
            atomic_write_bytes(folder / f"{split}.npy", buf.getvalue())
        atomic_write_json(info_path, info)  # last: marks the folder complete
    D.barrier(dist)
    return arrays, {**info, "cached": False}
