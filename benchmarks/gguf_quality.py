"""Each GGUF type's file size and perplexity change, measured in llama.cpp, on one checkpoint's validation text.

    bash examples/quickstart.sh                                   # the quickstart model and its token shards
    python benchmarks/gguf_quality.py --checkpoint quickstart/runs/quickstart/checkpoints/latest \\
        --tokens quickstart/tokens/py

The checkpoint is exported with `llmctl export --format gguf --dtype D` for every type (float32, float16,
q8_0, q5_1, q5_0, q4_1, q4_0; `--types` picks fewer), each file is loaded by llama.cpp (llama-cpp-python),
and `--max-tokens` targets of the token directory's validation split are scored there: the windows of the
model's context length that llmctl's training evaluation scores (the same fixed draw; 16,384 targets are the
quickstart's whole eval set), each token predicted from the window's earlier tokens. Perplexity is
exp(mean negative log-likelihood) from llama.cpp's per-token logits; "llmctl" is the same windows scored by
llmctl's own model on the checkpoint's weights, to show that the float32 file runs as the checkpoint does. Prints a Markdown table: type, file size, perplexity, change vs
float32. Needs `pip install llama-cpp-python` (compiles llama.cpp).

llama.cpp is fed one token at a time (n_batch=1, logits_all): llama-cpp-python 0.3.36 crashed (SIGSEGV) on
multi-token batches of q8_0, q4_0 and q4_1 matrices of tiny models on an AMX CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TYPES = ("float32", "float16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")


def validation_windows(tokens: Path, split: str, seq_len: int, max_tokens: int) -> np.ndarray:
    """Windows of seq_len + 1 tokens (seq_len targets each), max_tokens targets in all: the fixed validation
    set training's evaluation draws (`eval_rows`), so 8 batches of 8 windows are the very windows a run with
    train.eval_batches=8 and micro_batch_size=8 reports its eval loss on."""
    from llmctl.tokens.loader import PackedWindows, eval_rows
    from llmctl.tokens.shards import open_split, read_meta

    windows = PackedWindows(open_split(tokens, split, read_meta(tokens)), seq_len)
    rows = eval_rows(windows, max(1, max_tokens // seq_len), 1, 0, 1)
    if not rows:
        raise SystemExit(f"{tokens} holds no {split} window of {seq_len + 1} tokens")
    return np.concatenate(rows)


def nll_sum(logits: np.ndarray, targets: np.ndarray) -> float:
    """Summed negative log-likelihood of `targets` under `logits` [n, vocab], in float64."""
    z = logits.astype(np.float64)
    top = z.max(axis=-1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=-1))
    return float((log_norm - z[np.arange(len(targets)), targets]).sum())


def llama_cpp_nll(path: Path, rows: np.ndarray, threads: int) -> float:
    """Summed NLL of every window's targets, from llama.cpp's logits, one token per decode call."""
    import llama_cpp

    n = rows.shape[1] - 1
    llm = llama_cpp.Llama(
        str(path), n_ctx=n, n_batch=1, n_threads=threads, logits_all=True, verbose=False, seed=0
    )
    total = 0.0
    for row in rows:
        llm.reset()
        llm.eval(row[:-1].tolist())
        total += nll_sum(np.asarray(llm.scores[:n], dtype=np.float32), row[1:])
    llm.close()
    return total


def llmctl_nll(checkpoint: Path, rows: np.ndarray) -> float:
    """Summed NLL of the same windows by llmctl's model on the checkpoint's own weights (float32)."""
    import torch

    from llmctl.infer.checkpoint import load_for_inference

    model, _, _ = load_for_inference(checkpoint)
    model = model.float().eval()
    total = 0.0
    with torch.no_grad():
        for row in rows:
            logits = model(torch.from_numpy(row[:-1].astype(np.int64))[None])[0]
            total += nll_sum(logits.numpy(), row[1:])
    return total


def measure(args: argparse.Namespace, out: Path) -> list[dict[str, object]]:
    """One row per type (and llmctl's): size in bytes, perplexity, seconds of scoring."""
    from llmctl.config import from_dict
    from llmctl.export.gguf import export_gguf
    from llmctl.infer.checkpoint import open_checkpoint

    opened = open_checkpoint(args.checkpoint)
    seq_len = args.seq_len or from_dict(opened.manifest.config).model.max_seq_len
    rows = validation_windows(Path(args.tokens), args.split, seq_len, args.max_tokens)
    targets = rows.shape[0] * (rows.shape[1] - 1)
    start = time.perf_counter()
    table = [
        {
            "type": "llmctl",
            "bytes": None,
            "ppl": math.exp(llmctl_nll(opened.path, rows) / targets),
            "seconds": time.perf_counter() - start,
        }
    ]
    for dtype in args.types:
        path = out / f"model-{dtype}.gguf"
        export_gguf(opened.path, path, dtype=dtype, force=True)
        start = time.perf_counter()
        ppl = math.exp(llama_cpp_nll(path, rows, args.threads) / targets)
        table.append(
            {"type": dtype, "bytes": path.stat().st_size, "ppl": ppl, "seconds": time.perf_counter() - start}
        )
    args.targets, args.windows, args.window = targets, rows.shape[0], seq_len
    return table


def render(table: list[dict[str, object]]) -> list[str]:
    """Markdown rows: type, file size, perplexity in llama.cpp, change vs float32."""
    base = next((r["ppl"] for r in table if r["type"] == "float32"), None)
    lines = ["| `--dtype` | file | perplexity | change vs float32 |", "| --- | --- | --- | --- |"]
    for r in table:
        ppl = float(r["ppl"])  # type: ignore[arg-type]
        size = f"{int(r['bytes']) / 1e6:.2f} MB" if r["bytes"] is not None else "(checkpoint)"  # type: ignore[call-overload]
        change = f"{100 * (ppl / base - 1):+.2f}%" if base and r["type"] != "float32" else ""  # type: ignore[operator]
        name = "llmctl (float32 weights)" if r["type"] == "llmctl" else f"`{r['type']}`"
        lines.append(f"| {name} | {size} | {ppl:.3f} | {change} |")
    return lines


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", required=True, help="an llmctl checkpoint (or run folder's checkpoints/latest)"
    )
    parser.add_argument("--tokens", required=True, help="token directory whose validation text is scored")
    parser.add_argument("--split", default="validation")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=16384,
        help="targets scored, whole windows (16384: the quickstart's eval set)",
    )
    parser.add_argument("--seq-len", type=int, default=0, help="window length; default the model's context")
    parser.add_argument("--types", nargs="+", default=list(TYPES), choices=TYPES)
    # One thread: llama.cpp's threads spin while they wait for each other, which on a shared, busy CPU made
    # two threads about 17x slower than one (115 ms a token against 6.6 ms for the quickstart model).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="folder for the GGUF files (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        out = Path(args.out or name)
        out.mkdir(parents=True, exist_ok=True)
        table = measure(args, out)
    print(
        f"{args.checkpoint}: {args.targets:,} {args.split} targets of {args.tokens} "
        f"({args.windows} windows of {args.window}), llama.cpp n_batch=1, {args.threads} threads"
    )
    print("\n".join(render(table)))
    return table


if __name__ == "__main__":
    main()
