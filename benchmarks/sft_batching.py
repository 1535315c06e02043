"""SFT batching: how much of each batch is real conversation, and what that does to training speed.

    python benchmarks/sft_batching.py                         # examples/data/instructions.jsonl, a few minutes
    python benchmarks/sft_batching.py --data my_chats.jsonl --seq-len 512 --batch 8 --steps 30
    python benchmarks/sft_batching.py --quality-steps 150 --seeds 3   # held-out loss, data.batching random vs length

Four ways to batch the same conversations, measured in one run:
- pad to seq_len: every conversation padded to the full sequence length (the simplest SFT loop);
- random batches: padded to the longest conversation of a random batch;
- length buckets: llmctl's padded mode (batches of similar lengths, padded to the batch's longest);
- packed: llmctl's `--data.packing=true` (conversations share sequences, attention kept inside each).
Fill is real tokens / positions computed over one epoch. Speed is conversations trained per second with a
small model on this machine's CPU (forward, backward, AdamW), medians of interleaved repetitions;
ratios are against "pad to seq_len".

Quality: the same small model trained from scratch for --quality-steps optimizer steps (one micro-batch each)
by llmctl's own loader (SFTBatches) with `data.batching=random` and `=length`, then scored on held-out
conversations (the file's last --held-out rows, never trained): the mean loss per trained reply token, and
the padding waste (padded positions / positions) of the batches it trained on, for each of --seeds seeds
(the seed sets both the initial weights and the batch order).
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
    fixed_rows,
    load_conversations,
    plan_packed,
    plan_padded,
)

ROOT = Path(__file__).resolve().parents[1]


def build_shards(jsonl: Path, tmp: Path, vocab: int, held_out: int = 0) -> Path:
    """Raw parquet, a byte-level BPE with the chat tokens, and SFT shards, all under tmp; the last
    `held_out` conversations form the validation split (the tokenizer never sees them either)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile
    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    rows = [json.loads(line)["messages"] for line in jsonl.read_text().splitlines() if line.strip()]
    rows, val_rows = (rows[:-held_out], rows[-held_out:]) if held_out else (rows, [])
    for split, part in (("train", rows), ("validation", val_rows)):
        if part:
            (tmp / "raw" / split).mkdir(parents=True)
            pq.write_table(pa.table({"messages": part}), tmp / "raw" / split / "part-00000.parquet")
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


def _model(vocab: int, dim: int, layers: int, seed: int):  # type: ignore[no-untyped-def]
    import torch

    from llmctl.config import ModelConfig
    from llmctl.model.llama import Transformer

    torch.manual_seed(seed)
    return Transformer(ModelConfig(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=4, max_seq_len=1024))


def _loss(model, rows):  # type: ignore[no-untyped-def]
    """(summed cross-entropy over trained targets, their count)."""
    import torch
    import torch.nn.functional as F

    logits = model(torch.from_numpy(rows.inputs))
    targets = torch.from_numpy(rows.targets).flatten()
    total = F.cross_entropy(logits.flatten(0, 1).float(), targets, ignore_index=-100, reduction="sum")
    return total, int((targets != -100).sum())


def held_out_loss(convs, val, batching: str, seed: int, args: argparse.Namespace) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(held-out loss per trained token, padding waste of the trained batches) after args.quality_steps
    steps of a fresh model fed by SFTBatches with this batching."""
    import torch

    model = _model(args.vocab, args.dim, args.layers, seed)
    optim = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    stream = SFTBatches(convs, args.batch, args.seq_len, False, seed, pad_id=2, batching=batching)
    real = positions = 0
    for _ in range(args.quality_steps):
        rows = stream.next_rows()
        real, positions = real + rows.tokens, positions + rows.inputs.size
        total, count = _loss(model, rows)
        (total / max(1, count)).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        optim.zero_grad(set_to_none=True)
    model.eval()
    loss_sum, tokens = 0.0, 0
    with torch.no_grad():
        for rows in fixed_rows(val, args.batch, len(val), pad_id=2):
            total, count = _loss(model, rows)
            loss_sum, tokens = loss_sum + float(total), tokens + count
    return loss_sum / tokens, 1 - real / positions


def quality(tokens: Path, args: argparse.Namespace) -> None:
    """Print held-out loss and padding waste for data.batching=random and =length over the seeds."""
    convs = load_conversations(tokens, "train", args.seq_len, "truncate")
    val = load_conversations(tokens, "validation", args.seq_len, "truncate")
    print(
        f"\nheld-out loss after {args.quality_steps} steps of {args.batch} conversations "
        f"({len(convs)} train, {len(val)} held out; dim {args.dim}, {args.layers} layers, lr {args.lr:g}):"
    )
    print(f"{'batching':<9} {'seed':>4} {'held-out loss':>14} {'padding waste':>14}")
    results: dict[str, list[tuple[float, float]]] = {"random": [], "length": []}
    for seed in range(args.seeds):
        for batching in results:
            loss, waste = held_out_loss(convs, val, batching, seed, args)
            results[batching].append((loss, waste))
            print(f"{batching:<9} {seed:>4} {loss:>14.4f} {waste:>14.1%}")
    for batching, rs in results.items():
        losses = [r[0] for r in rs]
        print(
            f"{batching:<9} mean {statistics.mean(losses):>14.4f} {statistics.mean(r[1] for r in rs):>14.1%}"
            f"   (min {min(losses):.4f}, max {max(losses):.4f})"
        )
    gap = statistics.mean(r[0] for r in results["length"]) - statistics.mean(r[0] for r in results["random"])
    print(f"length - random: {gap:+.4f} nats")


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
    parser.add_argument("--held-out", type=int, default=60, help="last conversations kept out of training")
    parser.add_argument("--quality-steps", type=int, default=150, help="0: skip the held-out loss")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--speed", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tokens = build_shards(args.data, Path(tmp), args.vocab, args.held_out)
        if args.quality_steps:
            quality(tokens, args)
        if not args.speed:
            return
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
