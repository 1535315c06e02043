"""Test inputs for the engine, made here: a tiny BPE tokenizer, pretraining token shards, tiny configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from token_fixtures import stdlib_texts, train_tokenizer

from llmctl.config import Config, load_config
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokens.shards import FORMAT_NAME, FORMAT_VERSION, ShardWriter, shard_name, write_json_atomic


def make_token_dir(root: Path, vocab_size: int = 384, files: int = 24, val_every: int = 6) -> Path:
    """root/tok.json and root/tokens/{train,validation}/shard-00000.* + meta.json, from stdlib sources,
    each document followed by <|eos|> (the `eos` separator policy of `llmctl tokenize`)."""
    root.mkdir(parents=True, exist_ok=True)
    texts = stdlib_texts(limit=files, step=25)
    tok_path = train_tokenizer(root / "tok.json", texts, vocab_size=vocab_size)
    tok = load_tokenizer(tok_path)
    out = root / "tokens"
    splits: dict[str, Any] = {}
    for split, docs in (
        ("train", [t for i, t in enumerate(texts) if i % val_every]),
        ("validation", texts[::val_every]),
    ):
        ids = [tok.encode(d) + [tok.eos_id] for d in docs]
        writer = ShardWriter(out / split, shard_name(0), "uint16", with_mask=False)
        writer.append(np.concatenate(ids).astype(np.uint16), np.array([len(x) for x in ids]))
        record = writer.finish({})
        splits[split] = {"tokens": record["tokens"], "documents": record["documents"], "shards": [record]}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "mode": "pretrain",
        "dtype": "uint16",
        "vocab_size": tok.vocab_size,
        "tokenizer": {**tok.describe(), "path": str(tok_path.resolve())},
        "chat_profile": None,
        "separator": {"policy": "eos", "token_id": tok.eos_id},
        "splits": splits,
    }
    write_json_atomic(out / "meta.json", meta)
    return out


TINY: dict[str, Any] = {
    "model.dim": 64,
    "model.n_layers": 2,
    "model.n_heads": 4,
    "model.n_kv_heads": 2,
    "model.multiple_of": 32,
    "model.max_seq_len": 64,
    "data.seq_len": 32,
    "train.micro_batch_size": 4,
    "train.steps": 8,
    "train.eval_every": 0,
    "train.sample_every": 0,
    "train.device": "cpu",
    "train.log_every": 1,
    "checkpoint.every": 0,
    "optim.warmup_steps": 2,
    "optim.lr": 3e-3,
    "telemetry.enabled": False,
    "telemetry.tensorboard": False,
    "telemetry.panel": "off",
}
"""A 2-layer, dim-64 model on seq 32 windows, fp32 on CPU, no telemetry extras."""


def tiny_args(**overrides: Any) -> list[str]:
    """TINY (plus overrides) as command-line overrides: --model.dim=64 ..."""
    return [f"--{k}={v}" for k, v in {**TINY, **overrides}.items()]


def tiny_config(data: Path, out_dir: Path, **overrides: Any) -> Config:
    """The TINY config on `data`, writing runs under out_dir/run."""
    base = {**TINY, "data.path": str(data), "train.out_dir": str(out_dir), "train.name": "run"}
    base.update(overrides)
    return load_config(None, base)


class RecordingReporter:
    """A Reporter that keeps everything it is given."""

    def __init__(self) -> None:
        self.info: Any = None
        self.steps: list[Any] = []
        self.evals: list[Any] = []
        self.task_evals: list[Any] = []
        self.sample_rounds: list[list[Any]] = []
        self.logs: list[str] = []
        self.status: str | None = None
        self.loaded: dict[str, Any] | None = None

    def start(self, info: Any) -> None:
        self.info = info

    def step(self, counts: Any) -> None:
        self.steps.append(counts)

    def eval(self, result: Any) -> None:
        self.evals.append(result)

    def task_eval(self, result: Any) -> None:
        self.task_evals.append(result)

    def samples(self, records: list[Any]) -> None:
        self.sample_rounds.append(records)

    def log(self, message: str) -> None:
        self.logs.append(message)

    def state_dict(self) -> dict[str, Any]:
        return {"steps_seen": len(self.steps)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state

    def close(self, status: str) -> Any:
        from llmctl.telemetry.events import RunSummary

        self.status = status
        return RunSummary({"status": status})
