"""Throughput of `llmctl tokenize` against Hugging Face `tokenizers` encode_batch, same run, same text.

    python benchmarks/tokenize_throughput.py                      # pystdlib corpus, 2 processes
    python benchmarks/tokenize_throughput.py --num-proc 8 --data data/ts --tokenizer tok/ts.json
    python benchmarks/tokenize_throughput.py --scale 4            # 4x the corpus (50 MB): peak RSS should not move
    python benchmarks/tokenize_throughput.py --baseline /path/to/old/checkout   # A/B, rounds alternated

Without --data, the corpus is the Python standard library's .py files (test folders excluded), written
as a raw dataset the way `llmctl data download pystdlib` lays it out; without --tokenizer, a byte-level
BPE (vocab 8192, llmctl's special tokens) is trained on it. The baseline is `encode_batch` on the texts
already in memory, with as many threads as llmctl gets processes; llmctl is timed as the whole command
(`python -m llmctl tokenize ...`: interpreter start, parquet reading, shard writing included). The ids
written are checked against encode_batch's, document by document.

The run has a cache of its own (LLMCTL_CACHE): round 1 converts the tokenizer to its tiktoken form and
keeps it, later rounds reuse it, as a user's second run would. The medians are over all rounds; round 1
is also printed on its own.

Start-up: the same whole command on a tiny input (50 short documents), so nearly all of it is the
fixed cost (interpreter, imports, tokenizer load, fork server and workers when there are any, exit).
With --baseline, another llmctl checkout runs the same commands in the same rounds, alternated, and
the ratios old/new are per round (medians printed), so a change in the machine's load hits both.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]


def stdlib_corpus(out: Path, scale: int) -> Path:
    """DIR/train/part-*.parquet + dataset.json from the stdlib .py files, `scale` copies."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    lib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p for p in lib.rglob("*.py") if not {"test", "tests", "site-packages"} & set(p.relative_to(lib).parts)
    )
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in files]
    (out / "train").mkdir(parents=True, exist_ok=True)
    for k in range(scale):
        pq.write_table(pa.table({"text": texts}), out / "train" / f"part-{k:05d}.parquet", row_group_size=256)
    (out / "dataset.json").write_text(
        json.dumps({"source": "pystdlib", "files": len(files), "copies": scale})
    )
    return out


def train_tokenizer(data: Path, out: Path, vocab_size: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(read_texts(data), trainer)
    tok.save(str(out))
    return out


def read_texts(data: Path) -> list[str]:
    """Non-empty texts of the train split, in order, invalid UTF-8 replaced (what tokenize encodes)."""
    import pyarrow.parquet as pq

    texts = []
    for part in sorted((data / "train").glob("part-*.parquet")):
        for value in pq.read_table(part, columns=["text"]).column(0).cast("binary").to_pylist():
            if value:
                texts.append(value.decode("utf-8", errors="replace"))
    return texts


REFERENCE = """
import json, sys, time
from tokenizers import Tokenizer
texts = json.load(open(sys.argv[1]))
tok = Tokenizer.from_file(sys.argv[2])
tok.encode_special_tokens = True
t, c = time.perf_counter(), time.process_time()
ids = [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
seconds, cpu = time.perf_counter() - t, time.process_time() - c
json.dump({"seconds": seconds, "cpu_seconds": cpu, "ids": ids}, open(sys.argv[3], "w"))
"""


def reference(texts_file: Path, tok: Path, threads: int, out: Path) -> dict:
    """One timed encode_batch over the texts (already in memory), in a fresh process with `threads` threads."""
    env = {**os.environ, "RAYON_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "true"}
    subprocess.run(
        [sys.executable, "-c", REFERENCE, str(texts_file), str(tok), str(out)], env=env, check=True
    )
    return json.loads(out.read_text())


def tree_usage(pid: int, cpu: dict[int, float]) -> int:
    """Memory of a process and its descendants: summed PSS (shared pages split between the processes
    sharing them, so forked workers are not counted twice), or RSS where PSS is not available. Records
    each process's CPU seconds so far in `cpu`."""
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            info = p.memory_full_info() if hasattr(p, "memory_full_info") else p.memory_info()
            total += getattr(info, "pss", info.rss)
            times = p.cpu_times()
            cpu[p.pid] = times.user + times.system
    return total


def tiny_corpus(out: Path) -> Path:
    """DIR/train/part-00000.parquet: 50 short documents, for the start-up figure."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (out / "train").mkdir(parents=True, exist_ok=True)
    texts = [f"def f{k}(x):\n    return x + {k}\n" for k in range(50)]
    pq.write_table(pa.table({"text": texts}), out / "train" / "part-00000.parquet")
    (out / "dataset.json").write_text(json.dumps({"source": "tiny"}))
    return out


def run_llmctl(
    data: Path, tok: Path, out: Path, num_proc: int, root: Path = ROOT
) -> tuple[float, int, float, dict]:
    """Wall seconds of the whole command, peak memory and CPU seconds of its process tree, its --json report.

    `root` is the checkout whose llmctl runs (put first on PYTHONPATH).
    """
    cmd = [
        sys.executable,
        "-m",
        "llmctl",
        "tokenize",
        "--data",
        str(data),
        "--tokenizer",
        str(tok),
        "--out",
        str(out),
        "--num-proc",
        str(num_proc),
        "--split",
        "train",
        "--json",
    ]
    peak = [0]
    cpu: dict[int, float] = {}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_usage(proc.pid, cpu))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - start
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"llmctl tokenize failed:\n{stderr}")
    return wall, peak[0], sum(cpu.values()), json.loads(stdout)


def check_ids(out: Path, reference_ids: list[list[int]]) -> int:
    """Documents whose written ids differ from encode_batch's (0 expected)."""
    sys.path.insert(0, str(ROOT))
    from llmctl.tokens.shards import open_split

    docs = [s.document(i)[:-1].tolist() for s in open_split(out, "train") for i in range(s.num_docs)]
    if len(docs) != len(reference_ids):
        return max(len(docs), len(reference_ids))
    return sum(a != b for a, b in zip(docs, reference_ids, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="raw dataset (DIR/train/part-*.parquet with a text column)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: train a byte-level BPE)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--num-proc", type=int, default=2, help="llmctl processes = encode_batch threads")
    parser.add_argument(
        "--repeat", type=int, default=3, help="rounds (one run of each); medians are reported"
    )
    parser.add_argument("--scale", type=int, default=1, help="copies of the stdlib corpus")
    parser.add_argument("--baseline", type=Path, help="another llmctl checkout to alternate with (A/B)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import compileall

    # Byte-compiled as `pip install` does: under PYTHONDONTWRITEBYTECODE=1 an editable checkout would
    # recompile llmctl in every process (parent and fork server), a cost no installed copy pays.
    for root in filter(None, [ROOT, args.baseline]):
        compileall.compile_dir(Path(root) / "llmctl", quiet=1)
    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory(prefix="llmctl-bench-") as tmp_name:
        tmp = Path(tmp_name)
        # A cache of this run's own: round 1 converts the tokenizer to its tiktoken form and keeps it, later
        # rounds reuse it, as a user's second run would; both figures are printed.
        os.environ["LLMCTL_CACHE"] = str(tmp / "cache")
        data = args.data or stdlib_corpus(tmp / "raw", args.scale)
        tok = args.tokenizer or train_tokenizer(data, tmp / "tokenizer.json", args.vocab_size)
        texts = read_texts(data)
        text_bytes = sum(len(t.encode("utf-8")) for t in texts)
        (tmp / "texts.json").write_text(json.dumps(texts))
        # Interleaved, so a change in the machine's load hits both sides alike; ratios are per round.
        tiny = tiny_corpus(tmp / "tiny")
        sides = {"new": ROOT, **({"old": args.baseline.resolve()} if args.baseline else {})}
        refs, ref_cpu = [], []
        runs: dict[str, dict[str, list]] = {
            side: {key: [] for key in ("wall", "peak", "cpu", "inner", "start", "start_cpu")}
            for side in sides
        }
        for k in range(args.repeat):
            ref = reference(tmp / "texts.json", tok, args.num_proc, tmp / "ref.json")
            refs.append(ref["seconds"])
            ref_cpu.append(ref["cpu_seconds"])
            # Alternate which side goes first, so neither always follows the reference run.
            for side in sorted(sides, reverse=bool(k % 2)):
                r = runs[side]
                wall, peak, cpu, report = run_llmctl(
                    data, tok, tmp / f"out-{side}{k}", args.num_proc, sides[side]
                )
                r["wall"].append(wall)
                r["peak"].append(peak)
                r["cpu"].append(cpu)
                r["inner"].append(report["seconds"])
                start, _, start_cpu, _ = run_llmctl(
                    tiny, tok, tmp / f"tiny-{side}{k}", args.num_proc, sides[side]
                )
                r["start"].append(start)
                r["start_cpu"].append(start_cpu)
        walls, peaks, cpus, inner = (runs["new"][key] for key in ("wall", "peak", "cpu", "inner"))
        tokens = sum(len(ids) for ids in ref["ids"])
        mismatched = check_ids(tmp / "out-new0", ref["ids"])
        written = report["tokens"]

    rows = [
        ("tokenizers encode_batch", refs, tokens, None, ref_cpu),
        ("llmctl tokenize (whole command)", walls, written, max(peaks), cpus),
        ("llmctl tokenize (in-process)", inner, written, None, None),
    ]
    if "old" in runs:
        old = runs["old"]
        rows += [
            ("baseline (whole command)", old["wall"], written, max(old["peak"]), old["cpu"]),
            ("baseline (in-process)", old["inner"], written, None, None),
        ]
    med = statistics.median
    startup = {
        side: {
            "seconds": med(r["start"]),
            "cpu_seconds": med(r["start_cpu"]),
            "seconds_all": r["start"],
            "gap_seconds": med(w - i for w, i in zip(r["wall"], r["inner"], strict=True)),
        }
        for side, r in runs.items()
    }
    if "old" in runs:
        startup["old_over_new"] = {
            "startup": med(o / n for o, n in zip(runs["old"]["start"], runs["new"]["start"], strict=True)),
            "startup_cpu": med(
                o / n for o, n in zip(runs["old"]["start_cpu"], runs["new"]["start_cpu"], strict=True)
            ),
            "whole_command": med(
                o / n for o, n in zip(runs["old"]["wall"], runs["new"]["wall"], strict=True)
            ),
        }
    first_round = {
        "whole_command_seconds": runs["new"]["wall"][0],
        "in_process_seconds": runs["new"]["inner"][0],
        "vs_encode_batch": refs[0] / runs["new"]["wall"][0],
    }
    result = {
        "first_round_converts_the_tokenizer": first_round,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average {load_at_start:.1f} at start",
        "corpus": str(args.data or f"pystdlib x{args.scale}"),
        "documents": len(texts),
        "text_bytes": text_bytes,
        "tokens": tokens,
        "num_proc": args.num_proc,
        "repeat": args.repeat,
        "mismatched_documents": mismatched,
        "startup": startup,
        "rows": [
            {
                "what": what,
                "seconds": statistics.median(times),
                "tokens_per_second": n / statistics.median(times),
                "mb_per_second": text_bytes / statistics.median(times) / 1e6,
                "vs_encode_batch": statistics.median(r / t for r, t in zip(refs, times, strict=True)),
                "seconds_all": times,
                "peak_memory_bytes": rss,
                "cpu_seconds": statistics.median(cpu) if cpu else None,
            }
            for what, times, n, rss, cpu in rows
        ],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"corpus: {result['corpus']}: {len(texts):,} documents, {text_bytes / 1e6:.1f} MB, {tokens:,} tokens "
        f"(+{len(texts):,} separators written); {args.num_proc} processes/threads; medians of {args.repeat} interleaved rounds"
    )
    print(f"machine: {result['machine']}")
    print(f"{'':34}{'seconds':>9}{'Mtok/s':>9}{'MB/s':>8}{'x encode_batch':>16}{'CPU s':>8}{'peak mem':>11}")
    for row in result["rows"]:
        rss = f"{row['peak_memory_bytes'] / 2**20:.0f} MiB" if row["peak_memory_bytes"] else ""
        cpu = f"{row['cpu_seconds']:.2f}" if row["cpu_seconds"] is not None else ""
        print(
            f"{row['what']:34}{row['seconds']:9.2f}{row['tokens_per_second'] / 1e6:9.2f}"
            f"{row['mb_per_second']:8.1f}{row['vs_encode_batch']:16.2f}{cpu:>8}{rss:>11}"
        )
    print(
        "CPU s: all threads/processes (llmctl: the whole process tree, interpreter start included); "
        "peak mem: summed PSS of the command's processes, sampled every 20 ms"
    )
    for side, label in (("new", "llmctl"), ("old", "baseline")):
        if side in startup:
            st = startup[side]
            print(
                f"start-up, {label}: {st['seconds']:.2f} s whole command on 50 tiny documents "
                f"({st['cpu_seconds']:.2f} CPU s); whole command minus in-process on the corpus: {st['gap_seconds']:.2f} s"
            )
    print(
        f"round 1 (tokenizer converted to its tiktoken form, then kept; later rounds reuse it): whole command "
        f"{first_round['whole_command_seconds']:.2f} s, {first_round['vs_encode_batch']:.2f}x encode_batch"
    )
    if "old_over_new" in startup:
        r = startup["old_over_new"]
        print(
            f"baseline / llmctl, per-round medians: start-up {r['startup']:.2f}x (CPU {r['startup_cpu']:.2f}x), "
            f"whole command on the corpus {r['whole_command']:.2f}x"
        )
    print(
        f"ids identical to encode_batch: {'yes, every document' if mismatched == 0 else f'NO, {mismatched} documents differ'}"
    )


if __name__ == "__main__":
    main()
