"""Language-model scoring on token shards: loss, perplexity, token accuracy and bits per byte.

    result = score_tokens(loaded, "tokens/py", "validation", max_tokens=None)
    result.loss, result.bpb, result.tokens, result.bytes

Each shard of the split is cut into the windows training uses (llmctl/tokens/loader.py: seq_len + 1
tokens at a stride of seq_len, seq_len from the checkpoint's data config), read in order, and every
target is scored once. A shard's last partial window is scored too, so no target is left out; a
shard's first token is never a target (nothing precedes it). Targets that are special tokens (the
EOS between documents, chat markers) count in neither tokens nor bytes: bits per byte are
sum(nats) / ln 2 / UTF-8 bytes of the scored targets, comparable across tokenizers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmctl.errors import LlmctlError
from llmctl.eval.model_io import LoadedModel
from llmctl.eval.token_bytes import special_id_mask, token_byte_lengths


@dataclass
class LMScore:
    """What scoring a split produced."""

    split: str
    loss: float
    """Mean cross-entropy per scored target, nats."""
    accuracy: float
    """Share of scored targets that were the model's top-1 prediction."""
    tokens: int
    """Targets scored (special tokens excluded)."""
    bytes: int
    """UTF-8 bytes of the scored targets."""
    seq_len: int
    windows: int
    seconds: float

    @property
    def perplexity(self) -> float:
        """exp(loss)."""
        return math.exp(min(self.loss, 700.0))

    @property
    def bpb(self) -> float:
        """Bits per UTF-8 byte of the scored text."""
        return self.loss * self.tokens / math.log(2) / self.bytes if self.bytes else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The `--json` document."""
        return {
            "loss": self.loss,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "bpb": self.bpb,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "split": self.split,
            "seq_len": self.seq_len,
            "windows": self.windows,
            "seconds": self.seconds,
        }


def eval_seq_len(loaded: LoadedModel) -> int:
    """The window length training evaluated with: data.seq_len of the checkpoint's config, capped by the model."""
    data = (loaded.manifest.get("config") or {}).get("data") or {}
    return min(int(data.get("seq_len") or loaded.seq_len), loaded.seq_len)


def _windows(shards: list[Any], seq_len: int) -> Iterator[np.ndarray]:
    """Every window of every shard in order: full ones of seq_len + 1 tokens, then the shard's tail."""
    for shard in shards:
        n = shard.num_tokens
        full = max(0, (n - 1) // seq_len)
        for w in range(full):
            yield np.asarray(shard.tokens[w * seq_len : w * seq_len + seq_len + 1], dtype=np.int64)
        rest = full * seq_len
        if n - rest >= 2:
            yield np.asarray(shard.tokens[rest:n], dtype=np.int64)


def _check_tokenizer(meta: dict[str, Any], loaded: LoadedModel, data: str) -> None:
    theirs = (meta.get("tokenizer") or {}).get("fingerprint")
    ours = getattr(loaded.tokenizer, "fingerprint", None)
    if theirs and ours and theirs != ours:
        raise LlmctlError(
            f"{data} was tokenized with another tokenizer (fingerprint {theirs[:12]}) than the checkpoint's ({ours[:12]})",
            "score token shards made with the checkpoint's own tokenizer",
        )


@torch.no_grad()
def score_tokens(
    loaded: LoadedModel,
    data: str,
    split: str = "validation",
    *,
    max_tokens: int | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
) -> LMScore:
    """Score every target of `split` (or the first `max_tokens` targets) with the loaded model."""
    from llmctl.tokens.shards import open_split, read_meta

    meta = read_meta(data)
    _check_tokenizer(meta, loaded, data)
    shards = open_split(data, split, meta)
    return score_shards(
        loaded, shards, split, data, max_tokens=max_tokens, batch_size=batch_size, on_progress=on_progress
    )


@torch.no_grad()
def score_shards(
    loaded: LoadedModel,
    shards: list[Any],
    split: str,
    data: str,
    *,
    max_tokens: int | None = None,
    batch_size: int = 8,
    on_progress: Callable[[int, int], None] | None = None,
) -> LMScore:
    """Score every target of `shards` (objects with `num_tokens` and sliceable `tokens`), named `split` of
    `data` in messages; token shards on disk and texts tokenized on the fly (llmctl/eval/text_lm.py) alike."""
    seq_len = eval_seq_len(loaded)
    total = sum(max(0, s.num_tokens - 1) for s in shards)
    if max_tokens is not None:
        total = min(total, max_tokens)
    if total == 0:
        raise LlmctlError(
            f"split '{split}' of {data} holds no targets to score", "tokenize more text into it"
        )
    vocab = loaded.model.cfg.vocab_size
    device = loaded.device
    # Embedding rows past the tokenizer's vocabulary (padding for speed) stand for no text.
    lengths = np.zeros(vocab, dtype=np.int64)
    known = token_byte_lengths(loaded.tokenizer)[:vocab]
    lengths[: len(known)] = known
    byte_len = torch.from_numpy(lengths).to(device)
    special = torch.from_numpy(special_id_mask(loaded.tokenizer, vocab)).to(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nats, correct, tokens, bytes
    seen = windows = 0
    start = time.perf_counter()

    def run(rows: list[np.ndarray]) -> None:
        nonlocal windows
        batch = torch.from_numpy(np.stack(rows)).to(device)
        inputs, targets = batch[:, :-1], batch[:, 1:]
        if int(targets.max()) >= vocab:
            raise LlmctlError(
                f"{data} holds token ids beyond the model's vocabulary of {vocab}",
                "score token shards made with the checkpoint's own tokenizer",
            )
        with loaded.autocast():
            logits = loaded.model(inputs)
        nats = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(
            targets
        )
        keep = ~special[targets]
        sums[0] += nats[keep].double().sum()
        sums[1] += ((logits.argmax(-1) == targets) & keep).sum()
        sums[2] += keep.sum()
        sums[3] += byte_len[targets][keep].sum()
        windows += len(rows)

    pending: list[np.ndarray] = []
    with loaded.fused_weights():  # the fused q|k|v, w1|w3 built once, not per forward
        for window in _windows(shards, seq_len):
            if seen >= total:
                break
            window = window[: total - seen + 1]
            seen += len(window) - 1
            if pending and len(pending[0]) != len(window):
                run(pending)
                pending = []
            pending.append(window)
            if len(pending) == batch_size:
                run(pending)
                pending = []
                if on_progress is not None:
                    on_progress(seen, total)
        if pending:
            run(pending)
    if on_progress is not None:
        on_progress(seen, total)
    nats, correct, tokens, nbytes = sums.tolist()
    if tokens == 0:
        raise LlmctlError(f"every target of split '{split}' is a special token", "score a split of text")
    return LMScore(
        split=split,
        loss=nats / tokens,
        accuracy=correct / tokens,
        tokens=int(tokens),
        bytes=int(nbytes),
        seq_len=seq_len,
        windows=windows,
        seconds=time.perf_counter() - start,
    )
