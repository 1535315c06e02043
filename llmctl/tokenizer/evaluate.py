"""How well a tokenizer compresses held-out text, and whether it gives the text back exactly.

report = evaluate(load_tokenizer("tok/py.json"), texts)
report.bytes_per_token, report.tokens_per_word, report.roundtrip_exact
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from llmctl.tokenizer.core import Tokenizer


@dataclass
class Evaluation:
    """Compression and round-trip figures over a set of documents."""

    documents: int = 0
    bytes: int = 0
    words: int = 0
    tokens: int = 0
    roundtrip_failures: int = 0
    first_failure: int | None = None
    """Index of the first document whose decode(encode(text)) differed."""
    split: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per token: higher is better compression."""
        return self.bytes / self.tokens if self.tokens else float("nan")

    @property
    def tokens_per_word(self) -> float:
        """Tokens per whitespace-separated word ('fertility'): lower is better."""
        return self.tokens / self.words if self.words else float("nan")

    @property
    def roundtrip_exact(self) -> bool:
        """True when decode(encode(text)) == text for every document."""
        return self.documents > 0 and self.roundtrip_failures == 0

    def to_dict(self) -> dict[str, object]:
        """Stable keys for --json."""
        return {
            "split": self.split,
            "documents": self.documents,
            "bytes": self.bytes,
            "words": self.words,
            "tokens": self.tokens,
            "bytes_per_token": self.bytes_per_token,
            "tokens_per_word": self.tokens_per_word,
            "roundtrip_exact": self.roundtrip_exact,
            "roundtrip_failures": self.roundtrip_failures,
        }


def evaluate(tokenizer: Tokenizer, batches: Iterable[list[str]], split: str | None = None) -> Evaluation:
    """Encode every document of every batch; count bytes, words, tokens and round-trip failures."""
    result = Evaluation(split=split)
    for texts in batches:
        encoded = tokenizer.encode_batch(texts)
        for text, ids in zip(texts, encoded, strict=True):
            result.bytes += len(text.encode("utf-8"))
            result.words += len(text.split())
            result.tokens += len(ids)
            if tokenizer.decode(ids) != text:
                if result.first_failure is None:
                    result.first_failure = result.documents
                result.roundtrip_failures += 1
            result.documents += 1
    return result
