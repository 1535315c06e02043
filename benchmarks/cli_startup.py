"""CLI start-up time: median wall time of `llmctl --help` against `python -c "import torch"`, same run.

    python benchmarks/cli_startup.py                 # 15 runs of each, interleaved
    python benchmarks/cli_startup.py --runs 30 --command "budget --gpu L4 --hours 24"

Each run is a fresh `python -m llmctl ...` process, so the figure includes the interpreter's own
start. The target is under 0.3 s for --help, the planning commands staying in the same range: none
of them may import torch, whose import alone is printed as the yardstick.

The package is byte-compiled first (`compileall`), as `pip install` does: an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise recompile llmctl's modules from source in every process
(about 35 ms here), a cost no installed copy pays.
"""

from __future__ import annotations

import argparse
import compileall
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def wall_time(argv: list[str]) -> float:
    """Seconds one process takes from start to exit (its output discarded)."""
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="Processes per command (median reported).")
    parser.add_argument(
        "--command",
        action="append",
        default=None,
        help="llmctl arguments to time besides --help (repeatable).",
    )
    args = parser.parse_args()
    commands = [["--help"]] + [
        shlex.split(c)
        for c in (args.command or ["flops estimate --model 124m", "budget --gpu L4 --hours 24"])
    ]
    cases = {" ".join(["llmctl", *c]): [sys.executable, "-m", "llmctl", *c] for c in commands}
    cases['python -c "import torch"'] = [sys.executable, "-c", "import torch"]
    cases["python -c pass"] = [sys.executable, "-c", "pass"]
    compileall.compile_dir(ROOT / "llmctl", quiet=1)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():  # warm the file cache once, untimed
        wall_time(argv)
    for _ in range(args.runs):  # interleaved, so drifts in machine load hit every case alike
        for name, argv in cases.items():
            times[name].append(wall_time(argv))
    torch_s = statistics.median(times['python -c "import torch"'])
    width = max(map(len, cases))
    print(f"median of {args.runs} runs each (Python {sys.version.split()[0]})")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:<{width}}  {median:6.3f} s   {median / torch_s:5.2f} x import torch")
    help_s = statistics.median(times["llmctl --help"])
    print(f"llmctl --help: {help_s:.3f} s (target < 0.3 s): {'met' if help_s < 0.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
