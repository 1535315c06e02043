"""GPU readiness in one table: throughput, MFU, memory against `budget`, power and energy per step.

    python benchmarks/gpu_check.py                    # ~3-4 min on one H100/H200; JSON + log to $OUT or --out
    python benchmarks/gpu_check.py --smoke            # < 1 min: tiny preset, bf16, compiled, checkpoint + resume
    python benchmarks/gpu_check.py --out /tmp/gpu     # on a machine without CUDA: prints the plan, exits 0

Every case is a real `python -m llmctl pretrain` on random-token shards, read back from the run's
metrics.jsonl (llmctl's own telemetry: tokens/s, MFU, peak allocated memory, NVML power and energy), so
the check exercises what a user runs. Cases (124m preset, seq 1024, micro-batch 16, bf16, flash SDPA):
  compiled    torch.compile, fused AdamW (the defaults a GPU user should get)
  eager       the same uncompiled
  no-fused    compiled, AdamW's multi-tensor path instead of the fused kernel (what fused buys)
Each row also shows `budget`'s memory estimate for the same shape and micro-batch beside the measured
peak. --smoke instead trains the tiny preset 20 steps (bf16, compiled), stops at step 10 with a
checkpoint, resumes, and checks the resumed losses equal an uninterrupted run's. Both then run the qlora
section: the smoke run's checkpoint as --init, 10 steps of LoRA and of QLoRA (--lora.quantize nf4, torchao's
NF4 dequantized to bf16 in each matmul), eager; QLoRA's losses must be finite and within 2% of LoRA's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

FULL = {"preset": "124m", "seq": 1024, "batch": 16, "steps": 40, "warmup": 10}
SMOKE = {"preset": "tiny", "seq": 256, "batch": 16, "steps": 20}
LOSS_TOLERANCE = 5e-3
"""Largest loss difference, resumed vs uninterrupted, that still counts as the same run (bf16 on CUDA)."""
CASES = [
    ("compiled", ["--train.compile=true"]),
    ("eager", ["--train.compile=false"]),
    ("no-fused", ["--train.compile=true", "--optim.fused=false"]),
]


def _log(out: Path, text: str) -> None:
    print(text, flush=True)
    with open(out / "gpu_check.log", "a") as f:
        f.write(text + "\n")


def pretrain(
    data: Path, runs: Path, name: str, shape: dict[str, Any], extra: list[str]
) -> list[dict[str, Any]]:
    """One `llmctl pretrain` run; its metrics.jsonl records."""
    args = [
        f"--model={shape['preset']}",
        f"--data.seq_len={shape['seq']}",
        f"--model.max_seq_len={shape['seq']}",
        f"--train.micro_batch_size={shape['batch']}",
        f"--train.steps={shape['steps']}",
        "--train.dtype=bf16",
        "--train.eval_every=0",
        "--train.sample_every=0",
        "--checkpoint.every=0",
        "--train.log_every=1",
        f"--train.out_dir={runs}",
        f"--train.name={name}",
        "--telemetry.panel=off",
        "--telemetry.tensorboard=false",
        "--telemetry.interval=0.2",
        *extra,
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "llmctl", "pretrain", "--data", str(data), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode:
        raise RuntimeError(f"llmctl pretrain {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    path = runs / name / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def summarise(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """Medians after warm-up; energy per step from the cumulative energy counter."""
    train = [r for r in records if r.get("kind") == "train"]
    timed = train[warmup:] or train

    def med(key: str) -> float | None:
        vals = [r[key] for r in timed if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    energy = [(r["step"], r["energy_j"]) for r in timed if r.get("energy_j") is not None]
    per_step = (energy[-1][1] - energy[0][1]) / (energy[-1][0] - energy[0][0]) if len(energy) > 1 else None
    peaks = [r["mem_peak_alloc_bytes"] for r in train if r.get("mem_peak_alloc_bytes")]
    return {
        "tokens_per_sec": med("tokens_per_sec"),
        "mfu": med("mfu"),
        "step_time_s": med("step_time_s"),
        "power_w": med("power_w"),
        "energy_j_per_step": per_step,
        "peak_alloc_bytes": max(peaks) if peaks else None,
        "final_loss": train[-1]["loss"] if train else None,
    }


def budget_estimate(shape: dict[str, Any]) -> int:
    """`llmctl budget`'s states + activations for this shape and micro-batch (bf16, AdamW)."""
    from llmctl.config import model_from_preset
    from llmctl.plan.memory import training_memory

    cfg = dataclasses.replace(model_from_preset(shape["preset"]), max_seq_len=shape["seq"])
    return training_memory(cfg, shape["seq"], "bf16", 80).total_bytes(shape["batch"])


def full_check(work: Path, out: Path) -> dict[str, Any]:
    """The three 124m cases, one table."""
    from train_throughput import write_random_shards

    from llmctl.config import model_from_preset

    shape = FULL
    vocab = model_from_preset(shape["preset"]).vocab_size
    data = write_random_shards(work, vocab, (shape["steps"] + 2) * shape["batch"] * (shape["seq"] + 1) + 8192)
    estimate = budget_estimate(shape)
    rows = {}
    for name, extra in CASES:
        start = time.time()
        rows[name] = summarise(pretrain(data, work / "runs", name, shape, extra), shape["warmup"])
        rows[name]["wall_s"] = time.time() - start
        rows[name]["budget_estimate_bytes"] = estimate
        _log(out, f"{name}: {json.dumps(rows[name])}")
    return {"shape": shape, "rows": rows}


def smoke_check(
    work: Path, shape: dict[str, Any] = SMOKE, settings: tuple[str, ...] = ("--train.compile=true",)
) -> dict[str, Any]:
    """Tiny preset, bf16, compiled: straight 20 steps, and 10 + resume + 10; losses must match.

    `settings` are extra overrides for every run (tests pass fp32, eager and CPU to check this on CPU).
    """
    from train_throughput import write_random_shards

    data = write_random_shards(
        work, 8192, 2 * (shape["steps"] + 2) * shape["batch"] * (shape["seq"] + 1) + 8192
    )
    straight = pretrain(data, work / "runs", "straight", shape, list(settings))
    half = shape["batch"] * shape["seq"] * shape["steps"] // 2
    head = pretrain(data, work / "runs", "split", shape, [*settings, f"--train.max_tokens={half}"])
    # The resumed run appends to the same metrics.jsonl: its records are the first run's steps, kept as
    # they were written, then its own.
    whole = pretrain(data, work / "runs", "split", shape, [*settings, "--checkpoint.resume=auto"])

    def train(rs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in rs if r.get("kind") == "train"]

    first, both = train(head), train(whole)
    result = compare_resume([r["loss"] for r in both], [r["loss"] for r in train(straight)])
    # A run that started over instead of resuming would write the first steps again, with new timings.
    kept = 0 < len(first) < len(both) and both[: len(first)] == first
    result["resumed_from_step"] = first[-1]["step"] if first else None
    result["resume_matches"] = result["resume_matches"] and kept
    return {"shape": shape, "straight": summarise(straight, 5), **result}


QLORA_STEPS = 10
QLORA_TOLERANCE = 0.02
"""Largest relative loss difference, QLoRA vs LoRA on the same base, per step (NF4 rounds the base)."""


def qlora_check(
    work: Path,
    shape: dict[str, Any] = SMOKE,
    settings: tuple[str, ...] = ("--train.dtype=bf16", "--train.compile=false"),
) -> dict[str, Any]:
    """LoRA and QLoRA from smoke_check's final checkpoint (in `work`): losses, tokens/s, peak memory."""
    init = work / "runs" / "straight" / "checkpoints" / "latest"
    data = next(work.glob("*/meta.json")).parent
    rows: dict[str, Any] = {}
    for name, quantize in (("lora", "none"), ("qlora", "nf4")):
        args = ["pretrain", "--data", str(data), "--init", str(init), "--lora.rank=16"]
        args += [f"--lora.quantize={quantize}", f"--train.steps={QLORA_STEPS}", "--train.eval_every=0"]
        args += ["--train.sample_every=0", "--train.log_every=1", "--checkpoint.every=0"]
        args += [f"--data.seq_len={shape['seq']}", f"--train.micro_batch_size={shape['batch']}"]
        args += [f"--train.out_dir={work / 'runs'}", f"--train.name={name}", "--telemetry.panel=off"]
        args += ["--telemetry.tensorboard=false", *settings]
        proc = subprocess.run(
            [sys.executable, "-m", "llmctl", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode:
            raise RuntimeError(f"llmctl pretrain {name} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        records = [json.loads(x) for x in (work / "runs" / name / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in records if r.get("kind") == "train"]
        rows[name] = {"losses": [r["loss"] for r in train], **summarise(records, 3)}
    pairs = zip(rows["lora"]["losses"], rows["qlora"]["losses"], strict=True)
    worst = max(abs(q - a) / abs(a) for a, q in pairs)
    ok = all(v == v and abs(v) != float("inf") for v in rows["qlora"]["losses"]) and worst <= QLORA_TOLERANCE
    return {"rows": rows, "max_rel_loss_diff": worst, "qlora_matches": ok}


def compare_resume(resumed: list[float], reference: list[float]) -> dict[str, Any]:
    """Losses of a stopped-and-resumed run against an uninterrupted one, step by step.

    CUDA kernels (flash attention's backward, split-K matmuls) may add in a different order from run to
    run, so a correct resume can differ in the last bits; a wrong one (a lost step, a reset optimizer or
    data position) differs by far more than LOSS_TOLERANCE, or has a different number of steps.
    """
    diff = max((abs(a - b) for a, b in zip(resumed, reference, strict=False)), default=None)
    return {
        "resume_steps": len(resumed),
        "resume_bitwise": resumed == reference,
        "resume_matches": len(resumed) == len(reference) and diff is not None and diff <= LOSS_TOLERANCE,
        "max_loss_diff": diff,
    }


def render(result: dict[str, Any]) -> str:
    """The one table."""

    def gib(x: float | None) -> str:
        return "-" if x is None else f"{x / 2**30:.2f} GiB"

    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [f"device: {result['device']}  torch {result['torch']}"]
    if "rows" in result:
        s = result["shape"]
        lines.append(
            f"{s['preset']} seq {s['seq']} micro-batch {s['batch']} bf16, {s['steps']} steps "
            f"(first {s['warmup']} left out)"
        )
        lines.append(
            f"{'case':9s} {'tokens/s':>10s} {'MFU':>6s} {'peak mem':>10s} {'budget est':>10s} "
            f"{'power':>7s} {'J/step':>8s}"
        )
        for name, r in result["rows"].items():
            lines.append(
                f"{name:9s} {num(r['tokens_per_sec'], ',.0f'):>10s} "
                f"{num(r['mfu'] and 100 * r['mfu'], '.1f'):>5s}% {gib(r['peak_alloc_bytes']):>10s} "
                f"{gib(r['budget_estimate_bytes']):>10s} {num(r['power_w'], '.0f'):>6s}W "
                f"{num(r['energy_j_per_step'], '.1f'):>8s}"
            )
        rows = result["rows"]
        if rows["compiled"]["tokens_per_sec"] and rows["eager"]["tokens_per_sec"]:
            lines.append(
                f"compile speed-up {rows['compiled']['tokens_per_sec'] / rows['eager']['tokens_per_sec']:.2f}x; "
                f"fused AdamW {rows['compiled']['tokens_per_sec'] / rows['no-fused']['tokens_per_sec']:.2f}x"
            )
    if "smoke" in result:
        s = result["smoke"]
        lines.append(
            f"smoke: tiny bf16 compiled {num(s['straight']['tokens_per_sec'], ',.0f')} tokens/s; "
            f"10 + resume + 10 steps {'match' if s['resume_matches'] else 'DIFFER'}"
            f"{' bitwise' if s['resume_bitwise'] else ''} (max loss diff {s['max_loss_diff']})"
        )
    if "qlora" in result:
        q, r = result["qlora"], result["qlora"]["rows"]
        lines.append(
            f"qlora: tiny rank 16, {QLORA_STEPS} steps, eager bf16: LoRA {num(r['lora']['tokens_per_sec'], ',.0f')} "
            f"tokens/s {gib(r['lora']['peak_alloc_bytes'])}, QLoRA {num(r['qlora']['tokens_per_sec'], ',.0f')} "
            f"tokens/s {gib(r['qlora']['peak_alloc_bytes'])}; losses {'match' if q['qlora_matches'] else 'DIFFER'} "
            f"(max relative diff {q['max_rel_loss_diff']:.4f})"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny preset only, under a minute")
    p.add_argument(
        "--out",
        type=Path,
        default=Path(os.environ.get("OUT") or "gpu-check"),
        help="folder for gpu_check.json and gpu_check.log (default $OUT)",
    )
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    plan = {"smoke": SMOKE, "full": None if args.smoke else FULL, "cases": [c for c, _ in CASES]}
    if not torch.cuda.is_available():
        _log(args.out, "no CUDA device: nothing run. On a GPU this would run `llmctl pretrain` for:")
        if args.smoke:
            _log(
                args.out,
                f"  smoke: {SMOKE['preset']} preset, bf16, compiled, {SMOKE['steps']} steps; "
                "10 + checkpoint + resume + 10 against an uninterrupted run",
            )
            _log(
                args.out,
                f"  qlora: LoRA and QLoRA (nf4) rank 16 from the smoke checkpoint, {QLORA_STEPS} steps",
            )
        else:
            for name, extra in CASES:
                _log(
                    args.out,
                    f"  {name}: {FULL['preset']} seq {FULL['seq']} micro-batch {FULL['batch']} bf16 "
                    f"{FULL['steps']} steps {' '.join(extra)}",
                )
            _log(args.out, "  each beside budget's memory estimate, with NVML power and energy per step")
        (args.out / "gpu_check.json").write_text(json.dumps({"cuda": False, "plan": plan}, indent=2))
        return 0
    result: dict[str, Any] = {
        "cuda": True,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "plan": plan,
    }
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        result["smoke"] = smoke_check(Path(tmp) / "smoke")
        _log(args.out, f"smoke: {json.dumps(result['smoke'])}")
        result["qlora"] = qlora_check(Path(tmp) / "smoke")
        _log(args.out, f"qlora: {json.dumps(result['qlora'])}")
        if not args.smoke:
            result.update(full_check(Path(tmp) / "full", args.out))
        result["wall_s"] = time.time() - start
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2))
    _log(args.out, render(result))
    return 0 if result["smoke"]["resume_matches"] and result["qlora"]["qlora_matches"] else 1


if __name__ == "__main__":
    sys.exit(main())
