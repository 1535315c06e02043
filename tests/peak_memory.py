"""Run an llmctl command in a fresh Python and read back its peak resident memory (Linux's VmHWM), for the
tests that bound what one huge row may cost.

    code, stderr, peak_mib = run_llmctl_measured(["data", "download", "big.jsonl", "--out", "raw"])
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# VmHWM, not ru_maxrss: Linux carries the spawning process's resident size into the child's ru_maxrss at
# exec, so a test process holding a big string would be counted; VmHWM belongs to the new image alone.
_MEASURED = """
import re, sys
from llmctl.cli.app import main
sys.argv = ["llmctl", *sys.argv[1:]]
try:
    main()
finally:
    with open("/proc/self/status") as fh:
        peak = re.search(r"VmHWM:\\s+(\\d+) kB", fh.read()).group(1)
    print(f"PEAK_RSS_KIB {peak}", file=sys.stderr)
"""


def run_llmctl_measured(args: list[str], timeout: float = 120) -> tuple[int, str, float]:
    """(exit code, stderr without the measurement line, peak resident memory in MiB) of `llmctl ARGS`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, env=env, timeout=timeout
    )
    found = re.search(r"PEAK_RSS_KIB (\d+)", proc.stderr)
    assert found, proc.stderr[-2000:]
    return proc.returncode, proc.stderr.replace(found.group(0), ""), int(found.group(1)) / 1024
