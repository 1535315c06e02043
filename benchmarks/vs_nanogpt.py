"""llmctl pretrain against nanoGPT's own train.py, same token stream, alternating, as a ratio.

    git clone https://github.com/karpathy/nanoGPT ~/src/nanoGPT
    python benchmarks/vs_nanogpt.py --nanogpt ~/src/nanoGPT                      # the issue's CPU shape
    python benchmarks/vs_nanogpt.py --nanogpt ~/src/nanoGPT --data tokens/py --steps 30 --rounds 3
    python benchmarks/vs_nanogpt.py --nanogpt ~/src/nanoGPT --llmctl-arg=--train.compile=true

The shape (BASELINES.md): 4 layers, dim 256, 4 heads, sequence 256, batch 8, vocab 8192, fp32 eager.
Each side runs its own model: nanoGPT's GPT-2 (LayerNorm, learned positions, GELU MLP 4x, tied head)
and llmctl's Llama-style decoder (RMSNorm, RoPE, GQA 4/2, SwiGLU 704). Tokens/s alone would favour
the smaller model, so each side's rate is also counted in FLOP/s with its own model's FLOPs per token:
6N + 12 L H Q T (PaLM, the formula nanoGPT's estimate_mfu uses), N being the weights that multiply.

llmctl's shards (from --data, or random ids when absent) are written where nanoGPT reads them:
NANOGPT/data/llmctl_bench/{train,val}.bin hold the same uint16 stream, meta.pkl its vocabulary size.
Both run as the user would start them (subprocesses: `python train.py ...`, `python -m llmctl pretrain`),
alternating for --rounds rounds; the median step time of each side (after --warmup steps) gives its
rates. nanoGPT's code is read from the user's checkout and never copied into llmctl.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

SHAPE = {"n_layers": 4, "dim": 256, "n_heads": 4, "seq": 256, "batch": 8, "vocab": 8192}
LLMCTL_MODEL = {"n_kv_heads": 2, "ffn_dim": 704}
DATASET = "llmctl_bench"


def nanogpt_flops_per_token(layers: int, dim: int, heads: int, seq: int, vocab: int) -> float:
    """6N + 12 L H Q T for nanoGPT's GPT (bias=False): N = the tied embedding/head plus the blocks' matrices
    and LayerNorm gains (estimate_mfu's get_num_params leaves out only the position embedding)."""
    n = vocab * dim + layers * (12 * dim * dim + 2 * dim) + dim
    return 6 * n + 12 * layers * heads * (dim // heads) * seq


def llmctl_flops_per_token(seq: int, vocab: int) -> float:
    """The same PaLM count, from llmctl's own planner (llmctl/plan/flops.py)."""
    from llmctl.config import ModelConfig
    from llmctl.plan.flops import flops_per_token

    cfg = ModelConfig(
        vocab_size=vocab,
        dim=SHAPE["dim"],
        n_layers=SHAPE["n_layers"],
        n_heads=SHAPE["n_heads"],
        max_seq_len=seq,
        **LLMCTL_MODEL,
    )
    return float(flops_per_token(cfg, seq).train_palm)


def prepare_tokens(data: Path | None, work: Path, vocab: int, tokens: int) -> Path:
    """llmctl's token directory: the user's, or random ids written as llmctl shards."""
    if data is not None:
        return data
    from train_throughput import write_random_shards

    return write_random_shards(work, vocab, tokens)


def export_to_nanogpt(tokens: Path, nanogpt: Path) -> int:
    """Write llmctl's train/validation uint16 streams as nanoGPT's data/llmctl_bench/{train,val}.bin."""
    from llmctl.tokens.shards import open_split, read_meta

    meta = read_meta(tokens)
    if meta["dtype"] != "uint16":
        sys.exit(
            f"error: nanoGPT reads uint16 tokens; {tokens} holds {meta['dtype']} (vocab {meta['vocab_size']})"
        )
    out = nanogpt / "data" / DATASET
    out.mkdir(parents=True, exist_ok=True)
    for split, name in (("train", "train.bin"), (meta.get("val_split", "validation"), "val.bin")):
        with open(out / name, "wb") as f:
            for shard in open_split(tokens, split if split in meta["splits"] else "train", meta):
                f.write(np.asarray(shard.tokens, dtype="<u2").tobytes())
    with open(out / "meta.pkl", "wb") as f:  # nanoGPT's own format for its vocabulary size
        pickle.dump({"vocab_size": int(meta["vocab_size"])}, f)
    return int(meta["vocab_size"])


def run_nanogpt(nanogpt: Path, out: Path, steps: int, extra: list[str]) -> list[float]:
    """Seconds per iteration of nanoGPT's train.py (iteration 0, which evaluates, left out)."""
    s = SHAPE
    cmd = [
        sys.executable,
        "train.py",
        f"--dataset={DATASET}",
        f"--out_dir={out}",
        "--device=cpu",
        "--compile=False",
        "--dtype=float32",
        f"--n_layer={s['n_layers']}",
        f"--n_head={s['n_heads']}",
        f"--n_embd={s['dim']}",
        f"--block_size={s['seq']}",
        f"--batch_size={s['batch']}",
        "--gradient_accumulation_steps=1",
        f"--max_iters={steps}",
        f"--lr_decay_iters={steps}",
        "--warmup_iters=2",
        "--eval_interval=1000000",
        "--eval_iters=1",
        "--log_interval=1",
        "--dropout=0.0",
        "--bias=False",
        "--always_save_checkpoint=False",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=nanogpt, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"error: nanoGPT's train.py failed:\n{proc.stderr[-3000:]}")
    times = [
        float(m.group(2)) / 1000
        for m in re.finditer(r"iter (\d+): loss [\d.]+, time ([\d.]+)ms", proc.stdout)
        if int(m.group(1)) > 0
    ]
    return times


def run_llmctl(tokens: Path, out: Path, steps: int, extra: list[str]) -> list[float]:
    """Seconds per step of `llmctl pretrain`, from the run's metrics.jsonl."""
    s = SHAPE
    name = f"bench-{time.time_ns()}"
    args = [
        f"--model.vocab_size={s['vocab']}",
        f"--model.dim={s['dim']}",
        f"--model.n_layers={s['n_layers']}",
        f"--model.n_heads={s['n_heads']}",
        f"--model.n_kv_heads={LLMCTL_MODEL['n_kv_heads']}",
        f"--model.ffn_dim={LLMCTL_MODEL['ffn_dim']}",
        f"--model.max_seq_len={s['seq']}",
        f"--data.seq_len={s['seq']}",
        f"--train.micro_batch_size={s['batch']}",
        f"--train.steps={steps}",
        "--train.eval_every=0",
        "--train.sample_every=0",
        "--checkpoint.every=0",
        "--train.log_every=1",
        f"--train.out_dir={out}",
        f"--train.name={name}",
        "--telemetry.tensorboard=false",
        "--telemetry.panel=off",
        "--train.device=cpu",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "llmctl", "pretrain", "--data", str(tokens), *args, *extra],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode:
        sys.exit(f"error: llmctl pretrain failed:\n{proc.stderr[-3000:]}")
    records = [
        json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line.strip()
    ]
    return [r["step_time_s"] for r in records if r.get("kind") == "train"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, required=True, help="a checkout of github.com/karpathy/nanoGPT")
    p.add_argument(
        "--data", type=Path, help="an llmctl token directory (uint16); default: random ids, vocab 8192"
    )
    p.add_argument("--steps", type=int, default=20, help="steps per run")
    p.add_argument("--warmup", type=int, default=4, help="first steps of each run left out")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each side")
    p.add_argument("--llmctl-arg", action="append", default=[], help="extra override for llmctl (repeatable)")
    p.add_argument("--nanogpt-arg", action="append", default=[], help="extra flag for train.py (repeatable)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if not (args.nanogpt / "train.py").is_file():
        sys.exit(f"error: {args.nanogpt} has no train.py; pass a nanoGPT checkout with --nanogpt")
    s = SHAPE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        need = (args.steps + 2) * s["batch"] * (s["seq"] + 1) * args.rounds + 10 * s["seq"]
        tokens = prepare_tokens(args.data, work, s["vocab"], need)
        vocab = export_to_nanogpt(tokens, args.nanogpt)
        ours_fpt, theirs_fpt = (
            llmctl_flops_per_token(s["seq"], vocab),
            nanogpt_flops_per_token(s["n_layers"], s["dim"], s["n_heads"], s["seq"], vocab),
        )
        ours: list[float] = []
        theirs: list[float] = []
        for r in range(args.rounds):
            # Alternate which side goes first, so a slow spell on a shared machine hits both.
            order = ("nanogpt", "llmctl") if r % 2 == 0 else ("llmctl", "nanogpt")
            for side in order:
                if side == "nanogpt":
                    t = run_nanogpt(args.nanogpt, work / "nano-out", args.steps, args.nanogpt_arg)
                    theirs += t[max(0, args.warmup - 1) :]
                else:
                    t = run_llmctl(tokens, work / "runs", args.steps, args.llmctl_arg)
                    ours += t[args.warmup :]
                print(
                    f"round {r + 1}: {side:8s} median {statistics.median(t):.3f} s/step",
                    file=sys.stderr,
                    flush=True,
                )
    step_tokens = s["batch"] * s["seq"]
    result = {"shape": s, "vocab": vocab, "steps": args.steps, "rounds": args.rounds}
    for side, times, fpt in (("nanogpt", theirs, theirs_fpt), ("llmctl", ours, ours_fpt)):
        tps = step_tokens / statistics.median(times)
        result[side] = {
            "tokens_per_sec": tps,
            "gflops_per_sec": tps * fpt / 1e9,
            "flops_per_token": fpt,
            "steps_timed": len(times),
        }
    result["ratio_flops"] = result["llmctl"]["gflops_per_sec"] / result["nanogpt"]["gflops_per_sec"]
    result["ratio_tokens"] = result["llmctl"]["tokens_per_sec"] / result["nanogpt"]["tokens_per_sec"]
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for side in ("nanogpt", "llmctl"):
        r_ = result[side]
        print(
            f"{side:8s} {r_['tokens_per_sec']:8,.0f} tokens/s  {r_['gflops_per_sec']:6.1f} GFLOP/s  "
            f"({r_['flops_per_token'] / 1e6:.1f} MFLOP/token, {r_['steps_timed']} steps)"
        )
    print(
        f"ratio llmctl / nanoGPT: {result['ratio_flops']:.3f}x FLOP/s, {result['ratio_tokens']:.3f}x tokens/s"
    )


if __name__ == "__main__":
    main()
