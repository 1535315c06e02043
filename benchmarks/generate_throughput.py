"""Greedy decoding speed: llmctl's batched generation against transformers' `generate`, on the same model.

    python benchmarks/generate_throughput.py                       # about two minutes on a 2-core CPU
    python benchmarks/generate_throughput.py --rounds 7 --dim 384 --layers 6 --threads 1

One model (a byte-level BPE with 1,024 tokens, trained for a few steps on examples/data/instructions.jsonl,
as benchmarks/eval_throughput.py builds it) is exported with `llmctl export --dtype float32` and loaded
back by transformers' LlamaForCausalLM. Both sides continue the same prompt ids (lines of the data,
left-padded in a batch with an attention mask on the transformers side) by exactly 64 greedy tokens, no
stop id, fp32, same threads; the tokens must be identical (asserted). Runs alternate between the two,
the order flipping each round, and each side's median is compared. Prints one line per batch size,
`batch N: X.XXx` = llmctl's tokens/s over transformers'.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def llmctl_runner(model: object, prompts: list[list[int]], new: int) -> Callable[[], list[list[int]]]:
    """A function decoding every prompt with generate_batch, all in one batch."""
    from llmctl.infer.batch import Request, generate_batch
    from llmctl.infer.sampling import Sampling

    requests = [Request(p, new, Sampling(temperature=0.0)) for p in prompts]
    return lambda: [g.ids for g in generate_batch(model, requests, max_batch=len(prompts))]  # type: ignore[arg-type]


def hf_runner(model: object, prompts: list[list[int]], new: int) -> Callable[[], list[list[int]]]:
    """A function decoding every prompt with transformers' generate, left-padded into one batch."""
    import torch
    from transformers import GenerationConfig

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    # No stop id on either side: transformers would otherwise take EOS from the exported
    # generation_config.json (and min_new_tokens would forbid it, which llmctl does not do).
    model.generation_config.eos_token_id = None  # type: ignore[attr-defined]
    config = GenerationConfig(do_sample=False, max_new_tokens=new, eos_token_id=None, pad_token_id=0)

    def run() -> list[list[int]]:
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)  # type: ignore[attr-defined]
        return out[:, width:].tolist()

    return run


def race(ours: Callable[[], list[list[int]]], theirs: Callable[[], list[list[int]]], rounds: int) -> float:
    """Median-time ratio theirs / ours over alternated rounds, after one warm-up each; tokens asserted equal."""
    a, b = ours(), theirs()
    for row, (x, y) in enumerate(zip(a, b, strict=True)):
        assert x == y, (
            f"row {row}: llmctl and transformers differ at token {next(i for i, (p, q) in enumerate(zip(x, y, strict=True)) if p != q)}"
        )
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for r in range(rounds):
        order = [("ours", ours), ("theirs", theirs)]
        for name, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return statistics.median(times["theirs"]) / statistics.median(times["ours"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    args = parser.parse_args()
    args.device = "cpu"

    import torch
    from eval_throughput import build_checkpoint
    from transformers import LlamaForCausalLM
    from typer.testing import CliRunner

    from llmctl.cli.app import app
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.tokenizer.template import prompt_ids

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        ckpt, texts = build_checkpoint(tmp, args)
        hf_dir = tmp / "hf"
        done = CliRunner().invoke(app, ["export", str(ckpt), "--out", str(hf_dir), "--dtype", "float32"])
        assert done.exit_code == 0, done.output
        opened = open_checkpoint(ckpt)
        ours_model, tokenizer = opened.load_model(torch.device("cpu")), opened.tokenizer()
        theirs_model = LlamaForCausalLM.from_pretrained(str(hf_dir), torch_dtype=torch.float32).eval()
        lines = [t.split("\n")[0] for t in texts]
        prompts = [prompt_ids(tokenizer, opened.manifest, line)[:48] for line in lines]
        n_params = sum(p.numel() for p in ours_model.parameters())
        print(
            f"model dim {args.dim} x {args.layers} layers, {n_params / 1e6:.1f}M parameters, fp32, cpu, "
            f"{args.threads} threads, {args.new_tokens} new tokens, greedy, median of {args.rounds} alternated rounds"
        )
        for batch in (int(b) for b in args.batches.split(",")):
            chosen = prompts[:batch]
            ratio = race(
                llmctl_runner(ours_model, chosen, args.new_tokens),
                hf_runner(theirs_model, chosen, args.new_tokens),
                args.rounds,
            )
            print(f"batch {batch}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
