"""What verifying a checkpoint costs: SHA-256 of every file, for the 124m and 1b presets' checkpoint sizes.

    python benchmarks/checkpoint_verify.py                    # 512 MiB sample file, 3 rounds
    python benchmarks/checkpoint_verify.py --sample-mib 2048 --rounds 5 --dir /scratch

A checkpoint holds the weights (fp32) and AdamW's two moments (fp32 each): about 12 bytes per
parameter. Loading a checkpoint reads each file into memory, hashes the bytes and compares with
checkpoint.json, so verification adds the hash (the read happens anyway). This script writes a
sample file of random bytes, then times (a) reading it, (b) reading and hashing it, as `llmctl`
does, and scales the hash cost to each preset's checkpoint size. The page cache is warm after the
write, so figures are for a hot cache; a cold read from disk costs the same with or without the hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def checkpoint_bytes(preset: str) -> tuple[int, int]:
    """(parameters stored, bytes of weights + AdamW state) for a model preset."""
    import torch

    from llmctl.config import model_from_preset
    from llmctl.model.llama import Transformer

    cfg = model_from_preset(preset)
    with torch.device("meta"):
        model = Transformer(cfg)
    n = model.num_params()  # a tied head counts once, as it is stored once
    return n, n * 4 * 3


def _time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=None, help="Folder for the sample file (default: a temp folder)."
    )
    args = parser.parse_args()

    size = args.sample_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "sample.bin"
        path.write_bytes(os.urandom(size))
        read = _time(lambda: path.read_bytes(), args.rounds)
        read_hash = _time(lambda: hashlib.sha256(path.read_bytes()).hexdigest(), args.rounds)
    hash_s = max(read_hash - read, 1e-9)
    gb = size / 1e9
    print(
        f"sample {args.sample_mib} MiB: read {gb / read:.2f} GB/s, read+SHA-256 {gb / read_hash:.2f} GB/s, "
        f"SHA-256 alone {gb / hash_s:.2f} GB/s (median of {args.rounds})"
    )
    print(f"{'preset':<8} {'params':>8} {'checkpoint':>11} {'verify (hash)':>14} {'read+verify':>12}")
    for preset in ("124m", "1b"):
        n, nbytes = checkpoint_bytes(preset)
        scale = nbytes / size
        print(
            f"{preset:<8} {n / 1e6:>7.0f}M {nbytes / 1e9:>9.2f}GB {hash_s * scale:>12.1f} s {read_hash * scale:>10.1f} s"
        )


if __name__ == "__main__":
    main()
