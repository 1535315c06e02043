"""Training throughput: llmctl's Trainer against a plain PyTorch loop on the same model shape, same run.

    python benchmarks/train_throughput.py                                  # BASELINES.md's CPU shape
    python benchmarks/train_throughput.py --compile both --steps 20
    python benchmarks/train_throughput.py --preset 124m --seq-len 1024 --batch 16 --device cuda --compile both

The reference is a minimal Llama-style model (RMSNorm, RoPE, GQA, SwiGLU, SDPA) and an AdamW step
written here from scratch, the kind of loop nanoGPT's train.py runs. llmctl runs its real Trainer
(`run_pretrain`: packed windows from token shards, loss/accuracy accounting, gradient clipping,
schedule) on random tokens written as shards. Both time optimizer steps after warm-up; the two
alternate for --rounds rounds and the medians are compared, since the machine is shared and noisy.
Prints tokens/s, the ratio llmctl / reference, and on GPUs MFU (PaLM FLOPs per token / peak).

Default shape (BASELINES.md): 4 layers, dim 256, 4 heads (2 KV heads), SwiGLU 704, vocab 8192,
seq 256, batch 8; nanoGPT-style plain loop at ~2,465 tokens/s eager on a 2-core EPYC.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from llmctl.config import ModelConfig, load_config, model_from_preset  # noqa: E402

BASELINE_SHAPE = dict(
    vocab_size=8192, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=704, max_seq_len=256
)


# -- the reference: a plain PyTorch model and step, written independently of llmctl.model ----------


class RefBlock(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        hd = c.dim // c.n_heads
        self.h, self.kv, self.hd = c.n_heads, c.kv_heads, hd
        self.n1, self.n2 = nn.RMSNorm(c.dim, eps=c.norm_eps), nn.RMSNorm(c.dim, eps=c.norm_eps)
        self.qkv = nn.Linear(c.dim, (c.n_heads + 2 * c.kv_heads) * hd, bias=False)
        self.proj = nn.Linear(c.n_heads * hd, c.dim, bias=False)
        self.up = nn.Linear(c.dim, 2 * c.hidden_dim, bias=False)
        self.down = nn.Linear(c.hidden_dim, c.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(self.n1(x)).split([self.h * self.hd, self.kv * self.hd, self.kv * self.hd], -1)
        q, k = (t.view(B, T, -1, self.hd).transpose(1, 2) for t in (q, k))
        v = v.view(B, T, -1, self.hd).transpose(1, 2)

        def rot(t: torch.Tensor) -> torch.Tensor:  # rotate-half RoPE
            a, b = t.chunk(2, -1)
            return t * cos + torch.cat((-b, a), -1) * sin

        y = F.scaled_dot_product_attention(rot(q), rot(k), v, is_causal=True, enable_gqa=self.kv != self.h)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, -1))
        gate, up = self.up(self.n2(x)).chunk(2, -1)
        return x + self.down(F.silu(gate) * up)


class RefModel(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.emb = nn.Embedding(c.vocab_size, c.dim)
        self.blocks = nn.ModuleList(RefBlock(c) for _ in range(c.n_layers))
        self.norm = nn.RMSNorm(c.dim, eps=c.norm_eps)
        self.head = nn.Linear(c.dim, c.vocab_size, bias=False)
        hd = c.dim // c.n_heads
        freqs = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2).float() / hd))
        ang = torch.outer(torch.arange(c.max_seq_len).float(), freqs).repeat(1, 2)
        self.register_buffer("cos", ang.cos(), persistent=False)
        self.register_buffer("sin", ang.sin(), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.emb(idx)
        for b in self.blocks:
            x = b(x, self.cos[:T], self.sin[:T])
        return self.head(self.norm(x))


def reference_step_times(
    cfg: ModelConfig, seq: int, batch: int, steps: int, warmup: int, device: str, compile_: bool
) -> list[float]:
    """Seconds per optimizer step of the plain loop (after warm-up)."""
    torch.manual_seed(0)
    model = RefModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.startswith("cuda"))
    fwd = torch.compile(model) if compile_ else model
    data = torch.randint(0, cfg.vocab_size, (steps + warmup, batch, seq + 1), device=device)
    amp = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.startswith("cuda")
        else torch.autocast("cpu", enabled=False)
    )
    times = []
    for i in range(steps + warmup):
        t0 = time.perf_counter()
        x, y = data[i, :, :-1], data[i, :, 1:]
        with amp:
            logits = fwd(x)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


# -- llmctl: the real Trainer on random-token shards ------------------------------------------------


def write_random_shards(root: Path, vocab: int, tokens: int) -> Path:
    """A token directory of random ids (train and validation), with a throwaway tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokens.shards import FORMAT_NAME, FORMAT_VERSION, ShardWriter, shard_name, write_json_atomic

    vocab_map = {f"t{i}": i for i in range(vocab - 3)} | {
        "<|bos|>": vocab - 3,
        "<|eos|>": vocab - 2,
        "<|pad|>": vocab - 1,
    }
    tok = Tokenizer(models.WordLevel(vocab_map, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    root.mkdir(parents=True, exist_ok=True)
    tok.save(str(root / "tok.json"))
    loaded = load_tokenizer(root / "tok.json")
    rng = np.random.default_rng(0)
    splits: dict[str, Any] = {}
    for split, n in (("train", tokens), ("validation", 4096)):
        w = ShardWriter(
            root / "tokens" / split, shard_name(0), "uint16" if vocab <= 65536 else "uint32", with_mask=False
        )
        w.append(rng.integers(0, vocab, n), np.array([n]))
        rec = w.finish({})
        splits[split] = {"tokens": n, "documents": 1, "shards": [rec]}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mode": "pretrain",
        "dtype": "uint16" if vocab <= 65536 else "uint32",
        "vocab_size": vocab,
        "tokenizer": {**loaded.describe(), "path": str((root / "tok.json").resolve())},
        "separator": {"policy": "eos"},
        "splits": splits,
    }
    write_json_atomic(root / "tokens" / "meta.json", meta)
    return root / "tokens"


class StepTimes:
    """A Reporter keeping each step's wall time; nothing else."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def start(self, info: Any) -> None: ...
    def step(self, counts: Any) -> None:
        self.times.append(counts.step_time)

    def eval(self, result: Any) -> None: ...
    def samples(self, records: Any) -> None: ...
    def log(self, message: str) -> None: ...
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
    def close(self, status: str) -> Any:
        from llmctl.telemetry.events import RunSummary

        return RunSummary({})


def llmctl_step_times(
    cfg: ModelConfig,
    data: Path,
    out: Path,
    seq: int,
    batch: int,
    steps: int,
    warmup: int,
    device: str,
    compile_: bool,
) -> list[float]:
    """Seconds per optimizer step of llmctl's Trainer (after warm-up)."""
    from llmctl.engine.pretrain import run_pretrain

    model = {f"model.{f.name}": getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name != "preset"}
    conf = load_config(
        None,
        {
            **model,
            "model.max_seq_len": max(seq, cfg.max_seq_len),
            "data.path": str(data),
            "data.seq_len": seq,
            "train.micro_batch_size": batch,
            "train.steps": steps + warmup,
            "train.eval_every": 0,
            "train.sample_every": 0,
            "checkpoint.every": 0,
            "checkpoint.keep": 1,
            "train.device": device,
            "train.compile": compile_,
            "train.out_dir": str(out),
            "train.name": f"bench-{time.time_ns()}",
            "telemetry.enabled": False,
            "telemetry.tensorboard": False,
        },
    )
    reporter = StepTimes()
    run_pretrain(conf, reporter=reporter)
    return reporter.times[warmup:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--preset", action="append", help="model preset (repeatable); default: BASELINES.md's shape"
    )
    p.add_argument("--seq-len", type=int, action="append", help="sequence length (repeatable); default 256")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternating measurements of each side")
    p.add_argument("--compile", choices=["off", "on", "both"], default="off")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(torch.get_num_threads())
    shapes = (
        [(name, model_from_preset(name)) for name in args.preset]
        if args.preset
        else [("baseline", ModelConfig(**BASELINE_SHAPE))]
    )
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in shapes:
            for seq in args.seq_len or [256]:
                cfg = dataclasses.replace(cfg, max_seq_len=max(seq, cfg.max_seq_len))
                need = (args.steps + args.warmup) * args.batch * (seq + 1) + seq + 1
                data = write_random_shards(Path(tempfile.mkdtemp(dir=tmp)), cfg.vocab_size, need)
                for comp in modes:
                    ref, ours = [], []
                    for _ in range(args.rounds):
                        ref += reference_step_times(
                            cfg, seq, args.batch, args.steps, args.warmup, args.device, comp
                        )
                        ours += llmctl_step_times(
                            cfg,
                            data,
                            Path(tmp) / "runs",
                            seq,
                            args.batch,
                            args.steps,
                            args.warmup,
                            args.device,
                            comp,
                        )
                    tokens = args.batch * seq
                    row = {
                        "model": name,
                        "seq_len": seq,
                        "batch": args.batch,
                        "compile": comp,
                        "device": args.device,
                        "reference_tokens_per_sec": tokens / statistics.median(ref),
                        "llmctl_tokens_per_sec": tokens / statistics.median(ours),
                    }
                    row["ratio"] = row["llmctl_tokens_per_sec"] / row["reference_tokens_per_sec"]
                    row["mfu"] = _mfu(cfg, seq, row["llmctl_tokens_per_sec"], args.device)
                    results.append(row)
                    if not args.json:
                        mfu = f"  MFU {row['mfu']:.1%}" if row["mfu"] else ""
                        print(
                            f"{name:10s} seq {seq:5d} batch {args.batch:3d} compile={str(comp):5s}  reference "
                            f"{row['reference_tokens_per_sec']:9,.0f} tok/s  llmctl {row['llmctl_tokens_per_sec']:9,.0f} "
                            f"tok/s  ratio {row['ratio']:.3f}{mfu}",
                            flush=True,
                        )
    if args.json:
        print(json.dumps(results, indent=2))


def _mfu(cfg: ModelConfig, seq: int, tokens_per_sec: float, device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    from llmctl.plan.flops import flops_per_token
    from llmctl.telemetry.settings import device_peak_flops

    dtype = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    peak, _ = device_peak_flops(device, torch.cuda.get_device_name(), dtype, None)
    if not peak:
        return None
    value = flops_per_token(cfg, seq).train * tokens_per_sec / peak
    return value if math.isfinite(value) else None


if __name__ == "__main__":
    main()
