"""SFT batching: how much of each batch is real conversation, and what that does to training speed.

    python benchmarks/sft_batching.py                         # examples/data/instructions.jsonl, about a minute
    python benchmarks/sft_batching.py --data my_chats.jsonl --seq-len 512 --batch 8 --steps 30

Four ways to batch the same conversations, measured in one run:
- pad to seq_len: every conversation padded to the full sequence length (the simplest SFT loop);
- random batches: padded to the longest conversation of a random batch;
- length buckets: llmctl's padded mode (batches of similar lengths, padded to the batch's longest);
- packed: llmctl's `--data.packing=true` (conversations share sequences, attention kept inside each).
Fill is real tokens / positions computed over one epoch. Speed is conversations trained per second with a
small model on this machine's CPU (forward, backward, AdamW), medians of interleaved repetitions;
ratios are against "pad to seq_len".
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmctl.tokens.sft_batches import (  # noqa: E402
    SFTBatches,
    collate,
    load_conversations,
    plan_packed,
    plan_padded,
)

ROOT = Path(__file__).resolve().parents[1]


def build_shards(jsonl: Path, tmp: Path, vocab: int) -> Path:
    """Raw parquet, a byte-level BPE with the chat tokens, and SFT shards, all under tmp."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile
    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    rows = [json.loads(line)["messages"] for line in jsonl.read_text().splitlines() if line.strip()]
    (tmp / "raw" / "train").mkdir(parents=True)
    pq.write_table(pa.table({"messages": rows}), tmp / "raw" / "train" / "part-00000.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[*BASE_SPECIALS, *get_profile("chat").special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([m["content"] for conv in rows for m in conv], trainer)
    tok.save(str(tmp / "tokenizer.json"))
    tokenize(
        TokenizeOptions(data=tmp / "raw", tokenizer=tmp / "tokenizer.json", out=tmp / "tokens", mode="sft")
    )
    return tmp / "tokens"


def epoch_batches(convs, mode: str, batch: int, seq_len: int, seed: int) -> list:  # type: ignore[no-untyped-def]
    """One epoch of collated micro-batches for a batching mode."""
    rng = np.random.default_rng(seed)
    if mode == "packed":
        return [collate(convs, rows, 2, seq_len) for rows in plan_packed(convs.lengths, batch, seq_len, rng)]
    plan = plan_padded(convs.lengths, batch, rng, bucket=64 if mode == "length buckets" else 1)
    return [collate(convs, rows, 2, seq_len if mode == "pad to seq_len" else None) for rows in plan]


def train_rate(batches: list, vocab: int, steps: int, dim: int, layers: int) -> float:  # type: ignore[no-untyped-def]
    """Conversations per second over `steps` optimizer steps (one micro-batch each)."""
    import torch
    import torch.nn.functional as F

    from llmctl.config import ModelConfig
    from llmctl.model.llama import Transformer

    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=4, max_seq_len=1024))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step(rows) -> None:  # type: ignore[no-untyped-def]
        packed = rows.doc_ids.max() > 1
        kwargs = (
            {"doc_ids": torch.from_numpy(rows.doc_ids), "position_ids": torch.from_numpy(rows.position_ids)}
            if packed
            else {}
        )
        logits = model(torch.from_numpy(rows.inputs), **kwargs)
        loss = F.cross_entropy(
            logits.flatten(0, 1), torch.from_numpy(rows.targets).flatten(), ignore_index=-100
        )
        loss.backward()
        optim.step()
        optim.zero_grad(set_to_none=True)

    step(batches[0])
    start = time.perf_counter()
    samples = 0
    for i in range(steps):
        rows = batches[(i + 1) % len(batches)]
        step(rows)
        samples += rows.samples
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "examples" / "data" / "instructions.jsonl")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--vocab", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tokens = build_shards(args.data, Path(tmp), args.vocab)
        convs = load_conversations(tokens, "train", args.seq_len, "truncate")
        lengths = convs.lengths
        print(
            f"{len(convs)} conversations, tokens per conversation: mean {lengths.mean():.1f}, "
            f"median {np.median(lengths):.0f}, max {lengths.max()}; seq_len {args.seq_len}, micro-batch {args.batch}"
        )
        modes = ["pad to seq_len", "random batches", "length buckets", "packed"]
        epochs = {m: epoch_batches(convs, m, args.batch, args.seq_len, seed=0) for m in modes}
        # The loader itself, for its cost per micro-batch (planning + collation).
        loader = SFTBatches(convs, args.batch, args.seq_len, True, seed=0)
        t = time.perf_counter()
        for _ in range(200):
            loader.next_rows()
        loader_ms = (time.perf_counter() - t) / 200 * 1e3
        rates: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.reps):
            for m in modes:
                rates[m].append(train_rate(epochs[m], args.vocab, args.steps, args.dim, args.layers))
        base = statistics.median(rates["pad to seq_len"])
        print(f"{'batching':<16} {'fill':>6} {'positions/epoch':>16} {'conv/s':>8} {'vs pad':>7}")
        for m in modes:
            real = sum(b.tokens for b in epochs[m])
            positions = sum(b.inputs.size for b in epochs[m])
            rate = statistics.median(rates[m])
            print(f"{m:<16} {real / positions:>6.1%} {positions:>16,} {rate:>8.1f} {rate / base:>6.2f}x")
        print(f"packed loader: {loader_ms:.2f} ms per micro-batch (planning and collation, host only)")


if __name__ == "__main__":
    main()
