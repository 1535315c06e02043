"""Tokenizer training: `llmctl tokenizer train` against calling the backend's trainer directly, same run.

    python benchmarks/tokenizer_train.py                        # pystdlib, vocab 8192, 3 interleaved repeats
    python benchmarks/tokenizer_train.py --vocab-size 16384 --repeats 5 --backend hf
    python benchmarks/tokenizer_train.py --reference gpt2/tokenizer.json   # compression against GPT-2's

Cases, interleaved so machine-load drifts hit each alike:
- llmctl hf: train_tokenizer() streaming the parquet parts (its `training_seconds`: read + train + save);
- direct hf: tokenizers' BpeTrainer on the same texts already in a Python list, same settings;
- llmctl sentencepiece / direct sentencepiece: the same pair for a sentencepiece BPE .model.
The overhead is llmctl's median over the direct median (1.00 = none). Compression is bytes per token
on the validation split. With --reference, llmctl also trains at the reference's vocabulary size and
both are compared on the same text (GPT-2's tokenizer.json is not on this machine: no network).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmctl.raw.dataset import iter_batches  # noqa: E402
from llmctl.raw.download import download_dataset  # noqa: E402
from llmctl.tokenizer.core import load_tokenizer  # noqa: E402
from llmctl.tokenizer.evaluate import evaluate  # noqa: E402
from llmctl.tokenizer.train import SPLIT_PATTERN, sentencepiece_options, special_tokens, train_tokenizer  # noqa: E402


def direct_hf(texts: list[str], vocab_size: int, specials: list[str]) -> float:
    """Seconds for tokenizers' own trainer on in-memory texts, configured like llmctl's."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    start = time.perf_counter()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((texts[i : i + 1000] for i in range(0, len(texts), 1000)), trainer)
    tok.to_str()
    return time.perf_counter() - start


def direct_sentencepiece(texts: list[str], vocab_size: int, specials: list[str]) -> float:
    """Seconds for sentencepiece's trainer on in-memory lines, with llmctl's options."""
    import sentencepiece as spm

    lines = [line for t in texts for line in t.split("\n") if line.strip()]
    start = time.perf_counter()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=io.BytesIO(),
        **sentencepiece_options("bpe", vocab_size, specials),
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="A dataset dir (default: pystdlib, downloaded to a temp dir)."
    )
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", choices=["both", "hf", "sentencepiece"], default="both")
    parser.add_argument(
        "--reference", type=Path, help="A pretrained tokenizer.json/.model to compare compression with."
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="llmctl-bench-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    """All cases, printed; files go under tmp."""
    data = args.data or download_dataset("pystdlib", tmp / "py").out
    texts = [t for b in iter_batches(data, "train", "text") for t in b if t]
    print(
        f"corpus: {data}, train {len(texts):,} docs, {sum(len(t.encode()) for t in texts) / 1e6:.1f} MB; "
        f"vocab {args.vocab_size}; {args.repeats} repeats"
    )
    specials = special_tokens(None)
    cases = {}
    if args.backend in ("both", "hf"):
        cases["llmctl hf"] = lambda: train_tokenizer(data, tmp / "tok.json", args.vocab_size)[
            "training_seconds"
        ]
        cases["direct hf"] = lambda: direct_hf(texts, args.vocab_size, specials)
    if args.backend in ("both", "sentencepiece"):
        cases["llmctl sentencepiece"] = lambda: train_tokenizer(data, tmp / "tok.model", args.vocab_size)[
            "training_seconds"
        ]
        cases["direct sentencepiece"] = lambda: direct_sentencepiece(texts, args.vocab_size, specials)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, run in cases.items():
            times[name].append(run())
    for name, values in times.items():
        line = f"{name:22s} median {statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})"
        direct = times.get(name.replace("llmctl", "direct"))
        if name.startswith("llmctl") and direct:
            line += f"  overhead x{statistics.median(values) / statistics.median(direct):.2f}"
        print(line)

    validation = [b for b in iter_batches(data, "validation", "text")]
    for path in [p for p in (tmp / "tok.json", tmp / "tok.model") if p.exists()]:
        ev = evaluate(load_tokenizer(path), validation)
        print(
            f"compression {path.name}: {ev.bytes_per_token:.3f} bytes/token, {ev.tokens_per_word:.3f} tokens/word, "
            f"round trip exact: {ev.roundtrip_exact}"
        )
    if args.reference:
        ref = load_tokenizer(args.reference)
        ours = tmp / ("ref-size.model" if ref.kind == "sentencepiece" else "ref-size.json")
        train_tokenizer(data, ours, ref.vocab_size)
        for label, tok in (
            (f"reference {args.reference.name}", ref),
            (f"llmctl at vocab {ref.vocab_size}", load_tokenizer(ours)),
        ):
            ev = evaluate(tok, validation)
            print(f"{label:32s} {ev.bytes_per_token:.3f} bytes/token, {ev.tokens_per_word:.3f} tokens/word")


if __name__ == "__main__":
    main()
