"""DPO throughput: precomputed vs live reference log-probs, packed vs padded pairs.

    python benchmarks/dpo_throughput.py                       # examples/data/instructions.jsonl pairs, a few minutes on CPU
    python benchmarks/dpo_throughput.py --steps 20 --batch 8 --seq-len 256 --dim 256 --layers 4

Pairs are the instruction set's right answers against corrupted ones (examples/make_preferences.py),
tokenized with `tokenize --mode dpo`. Four configurations train the same small model with llmctl's
DPOObjective (forward, backward, AdamW), medians of interleaved repetitions:
- precompute + packed (llmctl's default), precompute + padded, live + packed, live + padded.
Reported: pairs/s and real tokens/s, the fill of the batches (real tokens / positions computed), the
memory the models hold (policy weights, gradients and AdamW state, plus the reference weights when live;
on CUDA also the peak allocated), and the one-off cost of the precompute pass. Ratios are against
"live + padded", the TRL default (a second model in memory, pairs padded to the longest).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]


def build_pairs(tmp: Path, vocab: int, max_len: int) -> Path:
    """Preference rows -> raw parquet -> a BPE with the chat tokens -> pair shards, all under tmp."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from llmctl.raw.preference import normalise_pair
    from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile
    from llmctl.tokens.pairs import tokenize_pairs

    prefs = tmp / "prefs.jsonl"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "make_preferences.py"),
            str(ROOT / "examples" / "data" / "instructions.jsonl"),
            str(prefs),
        ],
        check=True,
    )
    rows = [
        normalise_pair(r["prompt"], r["chosen"], r["rejected"])
        for r in map(json.loads, prefs.read_text().splitlines())
    ]
    rows = [r for r in rows if r is not None]
    (tmp / "raw" / "train").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp / "raw" / "train" / "part-00000.parquet")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[*BASE_SPECIALS, *get_profile("chat").special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator([m["content"] for r in rows for side in r.values() for m in side], trainer)
    tok.save(str(tmp / "tokenizer.json"))
    tokenize_pairs(tmp / "raw", tmp / "tokenizer.json", tmp / "tokens", max_len=max_len)
    return tmp / "tokens"


def main() -> None:
    import torch

    from llmctl.config import load_config
    from llmctl.engine.dpo import DPOObjective
    from llmctl.engine.dpo_reference import reference_logps
    from llmctl.model.llama import Transformer
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.pairs import open_pairs
    from llmctl.tokens.shards import read_meta

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="Timed steps per repetition.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8, help="Pairs per padded micro-batch; rows per packed one.")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tokens = build_pairs(Path(tmp), vocab=2048, max_len=args.seq_len)
        meta = read_meta(tokens)
        tok = load_tokenizer(meta["tokenizer"]["path"])
        overrides = {
            "model.dim": args.dim,
            "model.n_layers": args.layers,
            "model.n_heads": max(1, args.dim // 64),
            "model.vocab_size": tok.vocab_size,
            "model.max_seq_len": args.seq_len,
            "data.path": str(tokens),
            "data.seq_len": args.seq_len,
            "train.micro_batch_size": args.batch,
            "train.eval_batches": 0,
            "train.sample_prompts": [],
        }
        cfg = load_config(None, overrides)
        autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if device.type == "cuda"
            else contextlib.nullcontext
        )
        with torch.device(device):
            policy, ref = Transformer(cfg.model), Transformer(cfg.model)
        ref.load_state_dict(policy.state_dict())
        ref.requires_grad_(False)
        pairs = open_pairs(tokens, "train", meta)
        start = time.perf_counter()
        found = reference_logps(ref, pairs, args.seq_len, args.batch, device, autocast)
        precompute_s = time.perf_counter() - start
        import numpy as np

        table = np.full((len(pairs), 2), np.nan)
        for p, (c, r) in found.items():
            table[p] = (c, r)
        param_bytes = sum(p.numel() * p.element_size() for p in policy.parameters())
        runs = {}
        for ref_mode in ("precompute", "live"):
            for packing in (True, False):
                objective = DPOObjective(
                    tokens,
                    meta,
                    tok,
                    cfg,
                    ref_model=ref if ref_mode == "live" else None,
                    reference={"train": table} if ref_mode == "precompute" else None,
                    packing=packing,
                )
                runs[(ref_mode, packing)] = objective
        optim = torch.optim.AdamW(policy.parameters(), lr=1e-5, fused=device.type == "cuda")
        results: dict[tuple[str, bool], dict[str, list[float]]] = {
            k: {"pairs_s": [], "tokens_s": [], "fill": [], "peak": []} for k in runs
        }
        for _ in range(args.repeats):
            for key, objective in runs.items():
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                batches = [objective.train_batch().to(device) for _ in range(args.steps + 1)]
                pairs_done = tokens_done = positions = 0
                for i, batch in enumerate(batches):
                    if i == 1:  # the first step warms up kernels and the allocator
                        if device.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                    loss, _ = objective.loss_sum(policy, batch, autocast)
                    (loss / batch.trained_tokens).backward()
                    optim.step()
                    optim.zero_grad(set_to_none=True)
                    if i >= 1:
                        pairs_done += batch.trained_tokens
                        tokens_done += batch.tokens
                        positions += batch.inputs.numel()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                r = results[key]
                r["pairs_s"].append(pairs_done / seconds)
                r["tokens_s"].append(tokens_done / seconds)
                r["fill"].append(tokens_done / positions)
                r["peak"].append(torch.cuda.max_memory_allocated() if device.type == "cuda" else float("nan"))
                objective.take_metrics("train", _NoDist(), device)
    base = statistics.median(results[("live", False)]["pairs_s"])
    print(
        f"device {device}, model dim {args.dim} x {args.layers} layers ({param_bytes / 2**20:.1f} MiB of weights), "
        f"{len(pairs)} pairs, seq_len {args.seq_len}, {args.steps} steps x {args.repeats} repeats"
    )
    print(f"precompute pass: {precompute_s:.2f}s once for {len(pairs)} pairs (forward only)")
    print(
        f"{'reference':<11} {'batches':<8} {'pairs/s':>9} {'tokens/s':>10} {'fill':>6} {'models hold':>12} {'peak':>10} {'vs live+padded':>15}"
    )
    for (ref_mode, packing), r in results.items():
        held = param_bytes * 4 + (
            param_bytes if ref_mode == "live" else 0
        )  # weights, grads, AdamW m and v (+ ref)
        pairs_s = statistics.median(r["pairs_s"])
        peak = statistics.median(r["peak"])
        peak_text = f"{peak / 2**20:.0f} MiB" if peak == peak else "n/a"
        print(
            f"{ref_mode:<11} {'packed' if packing else 'padded':<8} {pairs_s:>9.1f} {statistics.median(r['tokens_s']):>10.0f} "
            f"{statistics.median(r['fill']):>6.0%} {held / 2**20:>8.1f} MiB {peak_text:>10} {pairs_s / base:>14.2f}x"
        )


class _NoDist:
    enabled = False
    world_size = 1
    rank = 0


if __name__ == "__main__":
    main()
