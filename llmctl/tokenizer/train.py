"""`tokenizer train`: a byte-level BPE (or unigram) tokenizer.json, or a sentencepiece .model.

    report = train_tokenizer("data/py", "tok/py.json", vocab_size=8192, profile="chat")
    report["eval"]["bytes_per_token"], report["eval"]["roundtrip_exact"]

The corpus streams from the dataset's parquet parts in batches, so memory does not grow with it;
`max_bytes` trains on a deterministic sample spread over the whole split. Both backends train on all
cores (Rust threads in `tokenizers`, num_threads in sentencepiece).

Hugging Face byte-level models pre-tokenize with the GPT-4 (cl100k) split regex, then map bytes to
GPT-2's printable alphabet (ByteLevel with use_regex=False, no prefix space): every byte string has
an encoding and decode(encode(text)) == text exactly, and tiktoken can run the same regex, so the
`tokenize` fast path applies. Special tokens are SPECIAL added tokens (control symbols in
sentencepiece); nothing adds BOS/EOS automatically: callers insert them by id.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError, LlmctlIOError
from llmctl.files import atomic_write_bytes, free_bytes, io_error, tmp_name
from llmctl.raw.dataset import column_kind, iter_batches, list_splits, read_info
from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile

# GPT-4's cl100k_base split: case-insensitive contractions, letter runs, 1-3 digit numbers,
# punctuation runs, newlines, and whitespace that leaves its last space to the next word.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
BACKENDS = ("auto", "hf", "sentencepiece")
MODELS = ("bpe", "unigram")
EVAL_MAX_BYTES = 32 << 20
BATCH_DOCS = 1000


def special_tokens(profile: str | None) -> list[str]:
    """<|bos|>, <|eos|>, <|pad|>, then the chat profile's role markers and end token."""
    return [*BASE_SPECIALS, *(get_profile(profile).special_tokens if profile else [])]


def _texts(values: list[Any], column: str) -> list[str]:
    if column == "text":
        return [v for v in values if v]
    return [m["content"] for conv in values if conv for m in conv if m.get("content")]


def corpus_batches(
    data: str | Path,
    split: str,
    max_bytes: int | None = None,
    seed: int = 0,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[list[str]]:
    """Documents of a split (message contents for chat data) in batches, optionally sampled.

    With max_bytes, each document is kept when a seeded hash of its index falls under
    max_bytes / split bytes, so the sample spreads over the whole split, and reading stops at max_bytes.
    """
    column = column_kind(data, split)
    total = (read_info(data).get("splits", {}).get(split) or {}).get("bytes")
    keep = min(1.0, max_bytes / total) if max_bytes and total else 1.0
    taken = 0
    index = 0
    key = str(seed).encode()
    for values in iter_batches(data, split, column, batch_size=BATCH_DOCS):
        batch = []
        for text in _texts(values, column):
            index += 1
            if keep < 1.0:
                digest = hashlib.blake2b(index.to_bytes(8, "little"), digest_size=8, key=key).digest()
                if int.from_bytes(digest, "little") / 2.0**64 >= keep:
                    continue
            nbytes = len(text.encode("utf-8"))
            if max_bytes is not None and taken and taken + nbytes > max_bytes:
                if batch:
                    yield batch
                return
            taken += nbytes
            batch.append(text)
            if on_bytes is not None:
                on_bytes(nbytes)
        if batch:
            yield batch


def new_hf_tokenizer(model: str) -> Any:
    """An untrained byte-level tokenizers.Tokenizer (split regex + ByteLevel, ByteLevel decoder)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE() if model == "bpe" else models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def new_hf_trainer(
    model: str, vocab_size: int, specials: list[str], min_frequency: int = 2, show_progress: bool = False
) -> Any:
    """The tokenizers trainer matching new_hf_tokenizer: every byte in the initial alphabet."""
    from tokenizers import pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if model == "bpe":
        return trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=alphabet,
            show_progress=show_progress,
        )
    return trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=show_progress
    )


def _train_hf(
    batches: Iterator[list[str]], model: str, vocab_size: int, specials: list[str], min_frequency: int
) -> bytes:
    tok = new_hf_tokenizer(model)
    tok.train_from_iterator(batches, new_hf_trainer(model, vocab_size, specials, min_frequency))
    tok.add_special_tokens(specials)  # no-op for the trainer's own; guarantees the SPECIAL flag
    tok.post_processor = bos_post_processor(specials[0], tok.token_to_id(specials[0]))
    return tok.to_str(pretty=True).encode("utf-8")


def bos_post_processor(bos: str, bos_id: int) -> Any:
    """BOS before every encoded text (Llama 3's convention), so transformers' tokenizer(prompt) and the
    pretraining documents (`bos+eos` separator) start the same way; llmctl's own encode adds nothing."""
    from tokenizers import processors

    return processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
    )


def sentencepiece_options(model: str, vocab_size: int, specials: list[str]) -> dict[str, Any]:
    """Trainer options: byte fallback, identity normalisation and no dummy prefix, so text round-trips."""
    bos, eos, pad, *rest = specials
    return dict(
        vocab_size=vocab_size,
        model_type=model,
        byte_fallback=True,
        character_coverage=0.9995,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        hard_vocab_limit=False,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        bos_piece=bos,
        eos_piece=eos,
        pad_piece=pad,
        control_symbols=rest,
        num_threads=os.cpu_count() or 1,
        # sentencepiece keeps its input sentences in memory: cap them (a uniform sample is taken).
        input_sentence_size=2_000_000,
        shuffle_input_sentence=True,
        max_sentence_length=16384,
        minloglevel=2,
    )


def _lines(batches: Iterator[list[str]]) -> Iterator[str]:
    # sentencepiece learns from sentences: lines keep code indentation and prose sentences intact.
    for batch in batches:
        for text in batch:
            for line in text.split("\n"):
                if line.strip():
                    yield line


def _train_sentencepiece(
    batches: Iterator[list[str]], model: str, vocab_size: int, specials: list[str]
) -> bytes:
    import sentencepiece as spm

    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=_lines(batches),
            model_writer=writer,
            **sentencepiece_options(model, vocab_size, specials),
        )
    except RuntimeError as exc:
        raise LlmctlError(
            f"sentencepiece could not train: {exc}", "lower --vocab-size or give it more text"
        ) from exc
    return writer.getvalue()


def _resolve_out(out: Path, backend: str) -> tuple[Path, str]:
    if out.is_dir() or str(out).endswith(os.sep):
        out = out / ("tokenizer.model" if backend == "sentencepiece" else "tokenizer.json")
    if backend == "auto":
        backend = "sentencepiece" if out.suffix == ".model" else "hf"
    if backend not in BACKENDS:
        raise LlmctlError(f"unknown backend '{backend}'", f"use one of {', '.join(BACKENDS)}")
    if backend == "sentencepiece" and out.suffix == ".json":
        raise LlmctlError(f"sentencepiece writes a .model file, not {out.name}", "name the output PATH.model")
    if backend == "hf" and out.suffix == ".model":
        raise LlmctlError(
            f"the hf backend writes tokenizer.json, not {out.name}",
            "name the output PATH.json or use --backend sentencepiece",
        )
    return out, backend


def _check_out(out: Path, force: bool) -> None:
    """Refuse an existing tokenizer without `force`, and a folder that cannot take the file, up front."""
    if out.is_dir():
        raise LlmctlError(f"{out} is a folder", "name the tokenizer file to write, e.g. --out tok/py.json")
    if out.exists() and not force:
        raise LlmctlError(
            f"{out} already exists",
            "pass --force to replace it (shards tokenized with the old one then no longer match), or choose another --out",
        )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, out.parent, action="create") from exc
    probe = tmp_name(out)  # a real write says more than os.access (read-only file systems, root)
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise io_error(exc, out) from exc


def _eval_split(data: str | Path, train_split: str, wanted: str | None) -> tuple[str, str | None]:
    splits = list_splits(data)
    if wanted:
        if wanted not in splits:
            raise LlmctlError(f"split '{wanted}' not found in {data}", f"splits found: {', '.join(splits)}")
        return wanted, None
    for name in ("validation", "test"):
        if name in splits:
            return name, None
    return (
        train_split,
        f"{data} has no validation or test split: evaluated on {train_split} (seen in training)",
    )


def train_tokenizer(
    data: str | Path,
    out: str | Path,
    vocab_size: int,
    backend: str = "auto",
    model: str = "bpe",
    profile: str | None = None,
    max_bytes: int | None = None,
    split: str = "train",
    eval_split: str | None = None,
    eval_max_bytes: int = EVAL_MAX_BYTES,
    min_frequency: int = 2,
    seed: int = 0,
    on_bytes: Callable[[int], None] | None = None,
    on_phase: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Train, write `out` atomically, evaluate on held-out text; return the report (see module doc).

    An existing `out` is replaced only with `force`; that and an unwritable folder are refused before
    training starts, so a long run does not end in a refusal."""
    from llmctl.tokenizer.core import load_tokenizer
    from llmctl.tokenizer.evaluate import evaluate

    read_info(data)
    out_path, backend = _resolve_out(Path(out), backend)
    _check_out(out_path, force)
    if model not in MODELS:
        raise LlmctlError(f"unknown model '{model}'", f"use one of {', '.join(MODELS)}")
    specials = special_tokens(profile)
    floor = 256 + len(specials) + (1 if backend == "sentencepiece" else 0)
    if vocab_size <= floor:
        raise LlmctlError(
            f"--vocab-size {vocab_size} leaves no room for merges: 256 bytes and {len(specials)} special tokens take {floor}",
            f"use at least {floor + 1}, typically 4096-65536",
        )
    split_bytes = 0
    split_docs = 0

    def count(nbytes: int) -> None:
        nonlocal split_bytes, split_docs
        split_bytes += nbytes
        split_docs += 1
        if on_bytes is not None:
            on_bytes(nbytes)

    def counting() -> Iterator[list[str]]:
        return corpus_batches(data, split, max_bytes, seed, count)

    started = time.perf_counter()
    if backend == "hf":
        blob = _train_hf(counting(), model, vocab_size, specials, min_frequency)
    else:
        blob = _train_sentencepiece(counting(), model, vocab_size, specials)
    seconds = time.perf_counter() - started
    if not split_docs:
        raise LlmctlError(
            f"split '{split}' of {data} holds no text", "download a corpus with `llmctl data download`"
        )
    # Written under a temporary name and renamed: a failure (full disk, read-only) leaves no partial file.
    # The size is known, so a full disk is reported with how much was needed.
    free = free_bytes(out_path.parent)
    if free is not None and free < len(blob):
        raise io_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), out_path, needed=len(blob))
    try:
        atomic_write_bytes(out_path, blob)
    except LlmctlIOError as exc:
        if "no space" in exc.message:
            raise io_error(
                OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), out_path, needed=len(blob)
            ) from exc
        raise

    if on_phase is not None:
        on_phase("evaluating")
    tokenizer = load_tokenizer(out_path)
    name, note = _eval_split(data, split, eval_split)
    evaluation = evaluate(tokenizer, corpus_batches(data, name, eval_max_bytes), split=name)
    notes = [note] if note else []
    if evaluation.bytes >= eval_max_bytes * 0.9:
        notes.append(f"evaluated a {evaluation.documents:,}-document sample of {name} (--eval-max-bytes)")
    return {
        "tokenizer": str(out_path),
        "backend": backend,
        "model": model,
        "pre_tokenizer": "split(cl100k regex) + byte-level"
        if backend == "hf"
        else "byte fallback, identity normalization",
        "vocab_size": tokenizer.vocab_size,
        "requested_vocab_size": vocab_size,
        "special_tokens": {t: tokenizer.token_to_id(t) for t in specials},
        "profile": profile,
        "data": str(data),
        "split": split,
        "train_documents": split_docs,
        "train_bytes": split_bytes,
        "sampled": max_bytes is not None,
        "training_seconds": round(seconds, 3),
        "threads": os.cpu_count() or 1,
        "fingerprint": tokenizer.fingerprint,
        "eval": evaluation.to_dict(),
        "notes": notes,
    }
