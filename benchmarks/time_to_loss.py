"""Time to quality: seconds from launch to the first validation loss <= 3.74, old quickstart vs new.

    llmctl data download pystdlib --out data/py && llmctl tokenizer train data/py --vocab-size 4096 --out tok/py.json
    llmctl tokenize data/py --tokenizer tok/py.json --out tokens/py            # README's quickstart data
    python benchmarks/time_to_loss.py --data tokens/py
    python benchmarks/time_to_loss.py --data tokens/py --target 3.9 --order new,old

Both configs run as `llmctl pretrain -c CONFIG --data DATA` on the same shards, one after the other,
evaluating every 25 steps (the same 8 validation batches). The old config is a frozen copy of today's
examples/configs/quickstart.yaml (benchmarks/configs/quickstart_before.yaml); the new one is the current
examples/configs/quickstart.yaml. A run is stopped once its target is met (or it ends). Prints each
one's seconds from launch to the first evaluation at or below --target, and new / old.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = ROOT / "benchmarks" / "configs" / "quickstart_before.yaml"
NEW = ROOT / "examples" / "configs" / "quickstart.yaml"


def time_to_loss(config: Path, data: Path, out: Path, target: float, extra: list[str]) -> dict:
    """Launch one run; watch its metrics.jsonl; stop it at the first eval <= target."""
    name = f"ttl-{config.stem}-{time.time_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "llmctl",
        "pretrain",
        "-c",
        str(config),
        "--data",
        str(data),
        "--train.eval_every=25",
        "--train.sample_every=0",
        "--checkpoint.every=0",
        f"--train.out_dir={out}",
        f"--train.name={name}",
        "--telemetry.panel=off",
        "--telemetry.tensorboard=false",
        *extra,
    ]
    metrics = out / name / "metrics.jsonl"
    start = time.time()
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    evals: list[dict] = []
    hit = None
    while hit is None:
        done = proc.poll() is not None
        if metrics.exists():
            lines = metrics.read_text().splitlines()
            evals = [json.loads(x) for x in lines if '"kind": "eval"' in x and x.endswith("}")]
            hit = next((e for e in evals if e["loss"] <= target), None)
        if done:
            break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # llmctl checkpoints and stops after the current step
    _, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGTERM, 130, 143) and hit is None:
        sys.exit(f"error: {config} failed:\n{err[-3000:]}")
    best = min((e["loss"] for e in evals), default=float("nan"))
    return {
        "config": str(config),
        "seconds": (hit["time"] - start) if hit else None,
        "step": hit["step"] if hit else None,
        "best_loss": best,
        "evals": len(evals),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="the quickstart's token directory")
    p.add_argument("--target", type=float, default=3.74, help="validation loss to reach (nats)")
    p.add_argument("--old", type=Path, default=OLD)
    p.add_argument("--new", type=Path, default=NEW)
    p.add_argument("--order", default="old,new", help="which runs first: old,new or new,old")
    p.add_argument("--llmctl-arg", action="append", default=[], help="extra override for both runs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.order.split(","):
            cfg = args.old if which == "old" else args.new
            results[which] = time_to_loss(cfg, args.data, Path(tmp), args.target, args.llmctl_arg)
            r = results[which]
            print(
                f"{which}: {r['seconds'] and round(r['seconds'], 1)} s (step {r['step']}, best {r['best_loss']:.3f})",
                file=sys.stderr,
                flush=True,
            )
    old, new = results["old"]["seconds"], results["new"]["seconds"]
    ratio = new / old if old and new else None
    if args.json:
        print(json.dumps({"target": args.target, **results, "ratio": ratio}, indent=2))
        return
    for which in ("old", "new"):
        r = results[which]
        when = f"{r['seconds']:7.1f} s at step {r['step']}" if r["seconds"] else "not reached"
        print(
            f"{which:3s} {Path(r['config']).name:26s} val loss <= {args.target}: {when} (best {r['best_loss']:.3f})"
        )
    print(f"ratio new / old: {ratio:.3f}" if ratio else "ratio: n/a (a run did not reach the target)")


if __name__ == "__main__":
    main()
