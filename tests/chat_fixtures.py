"""Tiny chat data for SFT, export and chat tests: a byte-level BPE with the chat profile's tokens, raw
conversations as parquet, and SFT token shards made by the real `tokenize` pipeline."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path

from llmctl.tokenizer.chat import BASE_SPECIALS, get_profile

Conversation = list[dict[str, str]]

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
]


def instruction_rows(count: int, seed: int = 0) -> list[Conversation]:
    """Reverse a word, repeat a word, add two digits: replies of 1 to about 16 tokens."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        task = rng.random()
        if task < 0.4:
            word = rng.choice(WORDS)
            prompt, reply = f"Reverse the word: {word}", word[::-1]
        elif task < 0.6:
            word, times = rng.choice(WORDS), rng.randint(1, 8)
            prompt, reply = f"Repeat {word} {times} times.", " ".join([word] * times)
        else:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            prompt, reply = f"Add {a} and {b}.", str(a + b)
        rows.append([{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}])
    return rows


def train_chat_tokenizer(path: Path, texts: list[str], vocab_size: int = 512) -> Path:
    """A byte-level BPE tokenizer.json holding <|bos|>, <|eos|>, <|pad|> and the `chat` profile's markers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [*BASE_SPECIALS, *get_profile("chat").special_tokens]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def write_chat_parquet(root: Path, splits: dict[str, list[Conversation]]) -> Path:
    """DIR/<split>/part-00000.parquet with a `messages` column, as `data download` writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, rows in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"messages": rows}), root / split / "part-00000.parquet")
    return root


def make_sft_tokens(
    tmp: Path, train: list[Conversation], validation: list[Conversation], tokenizer: Path | None = None
) -> tuple[Path, Path]:
    """(token dir, tokenizer path): SFT shards of the conversations, by `llmctl.tokens.tokenize.tokenize`."""
    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    texts = [m["content"] for conv in train + validation for m in conv]
    tokenizer = tokenizer or train_chat_tokenizer(tmp / "tok" / "tokenizer.json", texts)
    raw = write_chat_parquet(tmp / "raw", {"train": train, "validation": validation})
    tokenize(TokenizeOptions(data=raw, tokenizer=tokenizer, out=tmp / "tokens", mode="sft"))
    return tmp / "tokens", tokenizer


def write_text_parquet(root: Path, splits: dict[str, list[str]]) -> Path:
    """DIR/<split>/part-00000.parquet with a `text` column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, texts in splits.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": texts}), root / split / "part-00000.parquet")
    return root


TINY_MODEL = {"dim": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 128, "max_seq_len": 128}


def pretrain_tiny(tmp: Path, tokenizer: Path, texts: list[str], steps: int = 30, **model: object) -> Path:
    """Pretrain a tiny model on `texts` with the real run_pretrain; returns its latest checkpoint."""
    from llmctl.config import load_config
    from llmctl.engine.pretrain import run_pretrain
    from llmctl.tokens.tokenize import TokenizeOptions, tokenize

    raw = write_text_parquet(tmp / "pt_raw", {"train": texts, "validation": texts[:20]})
    tokenize(TokenizeOptions(data=raw, tokenizer=tokenizer, out=tmp / "pt_tokens"))
    overrides = {
        **{f"model.{k}": v for k, v in {**TINY_MODEL, **model}.items()},
        "data.path": str(tmp / "pt_tokens"),
        "data.seq_len": 64,
        "train.steps": steps,
        "train.micro_batch_size": 8,
        "train.out_dir": str(tmp / "runs"),
        "train.name": "base",
        "train.eval_every": 0,
        "train.sample_every": 0,
        "train.log_every": 10,
        "optim.lr": 3e-3,
        "optim.warmup_steps": 5,
        "checkpoint.every": 0,
        "telemetry.tensorboard": False,
        "telemetry.panel": "off",
        "telemetry.enabled": False,
    }
    run_pretrain(load_config(None, overrides))
    return tmp / "runs" / "base" / "checkpoints" / "latest"


def conversation_text(conv: Conversation) -> str:
    """A conversation as plain text, for pretraining the tiny models of the tests."""
    return "\n".join(m["content"] for m in conv)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run tiny models on n threads: on a busy shared CPU, OpenMP threads waiting on each other make
    a tiny model's step ten times slower than one thread does."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
