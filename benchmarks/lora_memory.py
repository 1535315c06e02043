"""LoRA and QLoRA memory, measured against `llmctl budget`: peak memory and tokens/s of full fine-tuning,
LoRA and QLoRA of one imported model, each beside budget's estimate for the same shape, micro-batch,
sequence length and method.

    python benchmarks/lora_memory.py                     # a random 50M-parameter Llama, a few minutes on 2 cores
    python benchmarks/lora_memory.py --dim 768 --layers 12 --seq-len 512 --micro-batch 2 --rank 8

What it does, in one run:
1. builds a random Hugging Face Llama (transformers) of --dim/--layers with a small byte-level BPE and a
   Llama 3 chat template, and imports it with `llmctl import`;
2. tokenizes synthetic conversations with `llmctl tokenize --mode sft --template model` (packed, so every
   sequence is (nearly) full);
3. runs `llmctl sft --init CK` for --steps optimizer steps of one micro-batch each, once per method, each in
   a fresh Python: full fine-tuning, `--lora.rank R`, and `--lora.rank R --lora.quantize nf4` (skipped, with a
   note, while `llmctl config show --section lora` has no `quantize` key, and a note with the `error:` line
   where the engine refuses it on this machine);
4. prints, per method, the peak memory while training beside `llmctl budget --model CK --gpu H100 --dtype
   fp32 --seq-len T --micro-batch B --lora.rank R --json`'s bytes for that micro-batch, the ratio measured /
   budget, tokens/s, and the peak while the --init weights load and the model is built (before training).

Memory on CPU is the process's peak resident set (VmHWM) less its resident set when the model starts to load:
the wrapper resets the peak (/proc/self/clear_refs) as the --init weights start to load (torch, llmctl and
the optimizer's lazy imports already in), reads the load peak and resets it again as the trainer starts (the
--init state dict is released by then: only the model holds the weights), and reads the training peak as
the trainer starts its final checkpoint write. glibc is set to hand large freed blocks back (--allocator
live), so a peak is one of live memory; the engine's own CPU setting keeps freed blocks for speed, which adds
heap fragmentation (--allocator engine shows it). The engine trains in fp32 on CPU, which `budget --dtype
fp32` plans (no autocast copies; the fused q|k|v and w1|w3 weights are the copies). budget plans training;
the load peak is host memory on a GPU too: the checkpoint file's bytes and its tensors (2 x 4 B/param), then
the tensors and the model they are copied into, and for QLoRA torchao's working set while it quantizes one
projection. tokens/s is the mean of the steps after the first (the first allocates the optimizer state), on
this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Runs `llmctl ARGS` in this fresh Python. The resident set is taken, and its peak reset, when the --init
# weights start to load; the peak of loading and building the model is read, and the peak reset again, when
# the trainer starts (the --init weights are released by then); the training peak is read when the trainer
# starts writing its final checkpoint. Both are reported less the resident set before the load.
_MEASURED = """
import gc, re, sys
import torch
torch.set_num_threads(int(sys.argv[1]))
import llmctl.cli.app, llmctl.engine.trainer, llmctl.infer.checkpoint
# One AdamW step on a scalar first: the optimizer's lazy imports (torch._dynamo, sympy: some 70 MiB of
# modules) are the same for every method and are not what the model costs.
_w = torch.nn.Parameter(torch.zeros(1))
_w.grad = torch.ones(1)
torch.optim.AdamW([_w], fused=True).step()
def status(key):
    with open("/proc/self/status") as fh:
        return int(re.search(key + r":\\s+(\\d+) kB", fh.read()).group(1)) * 1024
def reset_peak():
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # VmHWM := VmRSS
marks = {}
load, fit, save = (
    llmctl.infer.checkpoint.OpenCheckpoint.model_state,
    llmctl.engine.trainer.Trainer.fit,
    llmctl.engine.trainer.Trainer.save,
)
def model_state(self):
    if "start" not in marks:
        gc.collect()
        reset_peak()
        marks["start"] = status("VmRSS")
    return load(self)
def training(self, *args, **kwargs):
    if "load" not in marks:
        marks["load"] = status("VmHWM")
        gc.collect()
        reset_peak()
    return fit(self, *args, **kwargs)
def final_save(self):
    marks.setdefault("peak", status("VmHWM"))
    return save(self)
llmctl.infer.checkpoint.OpenCheckpoint.model_state = model_state
llmctl.engine.trainer.Trainer.fit = training
llmctl.engine.trainer.Trainer.save = final_save
sys.argv = ["llmctl", *sys.argv[2:]]
try:
    llmctl.cli.app.main()
except SystemExit as e:
    code = e.code
else:
    code = 0
print(f"MEASURED {marks['peak'] - marks['start']} {marks['load'] - marks['start']} {code}", file=sys.stderr)
"""


def llmctl(*args: str) -> subprocess.CompletedProcess[str]:
    """`llmctl ARGS` in a fresh Python, checked."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "llmctl", *args], capture_output=True, text=True, env=env, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"llmctl {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def build_model(tmp: Path, dim: int, layers: int) -> Path:
    """A random HF Llama with the test suite's small Llama 3 tokenizer, saved under tmp/hf."""
    import torch
    from hf_fixtures import make_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = make_tokenizer("llama")
    heads = dim // 64
    config = LlamaConfig(
        vocab_size=len(tok) + 8,
        hidden_size=dim,
        intermediate_size=3 * dim,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_theta=500000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(tmp / "hf")
    tok.save_pretrained(tmp / "hf")
    return tmp / "hf"


def chat_tokens(tmp: Path, ck: Path, n: int) -> Path:
    """n synthetic conversations tokenized for SFT with the imported model's tokenizer and template."""
    from chat_fixtures import write_chat_parquet

    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "python",
        "modules",
        "load",
        "tokens",
        "fast",
    ]
    rows = []
    for i in range(n):
        question = " ".join(words[(i + j) % len(words)] for j in range(8 + i % 23))
        answer = " ".join(reversed(question.split())) * (1 + i % 4)
        rows.append([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
    raw = write_chat_parquet(tmp / "raw", {"train": rows, "validation": rows[:16]})
    llmctl(
        "tokenize",
        "--data",
        str(raw),
        "--tokenizer",
        str(ck / "tokenizer.json"),
        "--out",
        str(tmp / "tok"),
        "--mode",
        "sft",
        "--template",
        "model",
        "--num-proc",
        "1",
    )
    return tmp / "tok"


def has_quantize() -> bool:
    """True once the engine has the `lora.quantize` key (QLoRA)."""
    doc = json.loads(llmctl("config", "show", "--section", "lora", "--json").stdout)
    return any(k["key"] == "lora.quantize" for k in doc["keys"])


def measure(a: argparse.Namespace, ck: Path, tok: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """Peak memory the sft run adds while training and while loading and building the model, and its tokens/s
    after the first step; or the `error:` line of a run the engine refuses (QLoRA without its library)."""
    args = ["sft", "--init", str(ck), "--data", str(tok), "--out", str(out), "--json"]
    args += [
        "--train.device=cpu",
        "--train.eval_every=0",
        "--train.sample_every=0",
        "--train.log_every=1",
        f"--data.seq_len={a.seq_len}",
        "--data.packing=true",
        f"--train.micro_batch_size={a.micro_batch}",
        f"--train.global_batch_size={a.micro_batch}",
        f"--train.steps={a.steps}",
        "--telemetry.tensorboard=false",
        "--telemetry.panel=off",
        *extra,
    ]
    # The engine's CPU allocator setting keeps every freed block for reuse (llmctl/engine/runtime.py), so
    # its resident set carries heap fragmentation; glibc's own allocator with a fixed mmap threshold hands
    # large freed blocks back, and the peak resident set then follows the peak of live memory.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    if a.allocator == "live":
        env |= {"LLMCTL_CPU_ALLOCATOR": "default", "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, str(a.threads), *args], capture_output=True, text=True, env=env
    )
    found = re.search(r"MEASURED (\d+) (\d+) (\S+)", proc.stderr)
    if not found or found.group(3) not in ("0", "None"):
        refusal = re.search(r"^error: .*(\nhint: .*)?", proc.stderr, flags=re.M)
        if refusal:  # e.g. QLoRA where its library cannot run on this machine: a note, not a crash
            return {"refused": refusal.group(0).replace("\n", "; ")}
        sys.exit(f"llmctl {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return {
        "peak": int(found.group(1)),
        "load": int(found.group(2)),
        "tokens_per_s": tokens_per_second(out, a),
    }


def tokens_per_second(out: Path, a: argparse.Namespace) -> float:
    """Trained tokens per second over the logged steps after the first, from the run's metrics.jsonl."""
    path = next(out.rglob("metrics.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    steps = [r for r in rows if "tokens_per_sec" in r and r.get("step", 0) > 1]
    if not steps:
        raise SystemExit(f"no step rows with tokens_per_sec in {path}: {rows[:3]}")
    return sum(r["tokens_per_sec"] for r in steps) / len(steps)


def estimates(a: argparse.Namespace, ck: Path) -> dict[str, int]:
    """budget's bytes at this micro-batch per method, planned in fp32 as the engine trains on CPU."""
    doc = json.loads(
        llmctl(
            "budget",
            "--model",
            str(ck),
            "--gpu",
            "H100",
            "--dtype",
            "fp32",
            "--seq-len",
            str(a.seq_len),
            "--micro-batch",
            str(a.micro_batch),
            "--lora.rank",
            str(a.rank),
            "--json",
        ).stdout
    )
    return {m["method"]: m["memory"]["micro_batch"]["bytes"] for m in doc["methods"]} | {
        "params": doc["params_total"]
    }


def mib(n: float) -> str:
    """Bytes as MiB, for the table."""
    return f"{n / 2**20:,.0f} MiB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--allocator",
        choices=("live", "engine"),
        default="live",
        help="live: glibc returns large freed blocks, so peak RSS is peak live memory (default); engine: "
        "the engine's own setting, which keeps freed blocks and adds heap fragmentation to the peak",
    )
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        hf = build_model(tmp, a.dim, a.layers)
        llmctl("import", str(hf), "--out", str(tmp / "ck"))
        tok = chat_tokens(tmp, tmp / "ck", 400)
        est = estimates(a, tmp / "ck")
        print(
            f"model: random HF Llama dim {a.dim}, {a.layers} layers, {est['params']:,} parameters, imported; "
            f"seq_len {a.seq_len}, micro-batch {a.micro_batch}, LoRA rank {a.rank} on all-linear, "
            f"{a.steps} steps, {a.threads} CPU threads, fp32"
        )
        methods = [("full", []), ("lora", [f"--lora.rank={a.rank}"])]
        if has_quantize():
            methods.append(("qlora", [f"--lora.rank={a.rank}", "--lora.quantize=nf4"]))
        else:
            print("note: QLoRA skipped: `llmctl config show --section lora` has no `quantize` key yet")
        print(
            f"{'method':<8}{'training':>12}{'budget':>12}{'ratio':>8}{'tokens/s':>10}{'load':>12}",
            flush=True,
        )
        for name, extra in methods:
            m = measure(a, tmp / "ck", tok, tmp / f"run-{name}", extra)
            if "refused" in m:
                print(f"note: {name} not measured here: {m['refused']}", flush=True)
                continue
            row = f"{name:<8}{mib(m['peak']):>12}{mib(est[name]):>12}{m['peak'] / est[name]:>8.2f}"
            print(f"{row}{m['tokens_per_s']:>10,.1f}{mib(m['load']):>12}", flush=True)
        print(f"({time.perf_counter() - t0:.0f} s in all)")


if __name__ == "__main__":
    main()
