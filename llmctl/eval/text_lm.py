"""Perplexity and bits per byte of a text file, tokenized on the fly with the checkpoint's tokenizer.

    result = score_text(loaded, "notes.txt")                  # a .txt file is one document
    result = score_text(loaded, "docs.jsonl", column="text")  # one document per line (also .parquet, .gz, .zst)
    result.perplexity, result.bpb

Each document gets the model's prompt prefix (its BOS-first or EOS-first convention, llmctl/eval/model_io.py)
and its tokens; the documents are laid end to end and scored like a token split (llmctl/eval/lm.py): windows
of the checkpoint's training length, every target once, special tokens counted in neither tokens nor bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.eval.lm import LMScore, score_shards
from llmctl.eval.model_io import LoadedModel, prompt_prefix


@dataclass
class _InMemoryShard:
    tokens: np.ndarray

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)


def read_documents(path: Path, column: str = "text") -> list[str]:
    """The documents of a text, JSON lines, JSON or parquet file (optionally .gz or .zst)."""
    from llmctl.raw.readers import RecordFile

    if not path.is_file():
        raise LlmctlError(f"no text file at {path}", "pass a .txt, .jsonl or .parquet file to --text")
    reader = RecordFile(path)
    if column not in reader.columns():
        raise LlmctlError(
            f"{path} has no '{column}' column (it has {', '.join(reader.columns()) or 'none'})",
            "pass --text-column NAME",
        )
    docs = [d for batch in reader.batches([column]) for d in batch[column] if isinstance(d, str) and d]
    if not docs:
        raise LlmctlError(f"{path} holds no text in '{column}'", "pass a file with text in it")
    return docs


def score_text(
    loaded: LoadedModel,
    path: str | Path,
    *,
    column: str = "text",
    max_tokens: int | None = None,
    batch_size: int = 8,
    on_progress: Any = None,
) -> LMScore:
    """Loss, perplexity, accuracy and bits per byte of the model on the documents of `path`."""
    path = Path(path).expanduser()
    prefix = prompt_prefix(loaded)
    ids: list[int] = []
    for doc in read_documents(path, column):
        ids += prefix + loaded.tokenizer.encode(doc)
    shard = _InMemoryShard(np.asarray(ids, dtype=np.int64))
    return score_shards(
        loaded,
        [shard],
        path.name,
        str(path),
        max_tokens=max_tokens,
        batch_size=batch_size,
        on_progress=on_progress,
    )
