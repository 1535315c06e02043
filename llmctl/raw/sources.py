"""What `data download SOURCE` can fetch: named sources, Hub datasets, URLs, local files.

    llmctl data sources
    llmctl data download tinystories --out data/ts
    llmctl data download hf:Salesforce/wikitext@main:wikitext-2-raw-v1 --out data/wt2
    llmctl data download https://example.org/corpus.jsonl.zst --out data/web
    llmctl data download 'notes/*.txt' --out data/notes

Pure Python: `data sources` and `--help` import nothing heavy.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Literal

from llmctl.errors import LlmctlError

SourceKind = Literal["hub", "url", "local", "pystdlib"]
SPLITS = ("train", "validation", "test")

# Fractions of train carved into validation and test when a source lacks them. Small: for corpora of
# millions of documents half a percent is plenty; small named sources set their own.
DEFAULT_VAL_FRACTION = 0.005
DEFAULT_TEST_FRACTION = 0.005


@dataclass(frozen=True)
class NamedSource:
    """A corpus `data download NAME` knows: where it lives and how its rows become text or messages."""

    name: str
    description: str
    column: Literal["text", "messages", "preference"]
    """What the normalized parts hold."""
    licence: str
    size: str
    """Approximate download size, for `data sources`."""
    repo: str | None
    """Hugging Face Hub dataset repository (None: generated on this machine)."""
    revision: str = "main"
    """Branch, tag or commit; the commit it resolves to is recorded in dataset.json."""
    files: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Source split -> glob patterns of repository files."""
    text_column: str | None = None
    transform: str | None = None
    """Row conversion applied after reading: 'alpaca' (to messages) or 'wikitext-articles'."""
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION


NAMED_SOURCES: dict[str, NamedSource] = {
    s.name: s
    for s in [
        NamedSource(
            name="pystdlib",
            description="The .py files of this Python's standard library (no tests); offline, a few MB",
            column="text",
            licence="PSF-2.0",
            size="~12 MB",
            repo=None,
            val_fraction=0.05,
            test_fraction=0.05,
        ),
        NamedSource(
            name="tinystories",
            description="Short stories in simple English written by GPT-3.5/GPT-4 (Eldan & Li, 2023)",
            column="text",
            licence="CDLA-Sharing-1.0",
            size="~1.0 GB",
            repo="roneneldan/TinyStories",
            files={"train": ("data/train-*.parquet",), "validation": ("data/validation-*.parquet",)},
            text_column="text",
        ),
        NamedSource(
            name="wikitext-2",
            description="Wikipedia Good and Featured articles, 2M tokens, raw (one row per article)",
            column="text",
            licence="CC-BY-SA-3.0",
            size="~7 MB",
            repo="Salesforce/wikitext",
            files={
                "train": ("wikitext-2-raw-v1/train-*.parquet",),
                "validation": ("wikitext-2-raw-v1/validation-*.parquet",),
                "test": ("wikitext-2-raw-v1/test-*.parquet",),
            },
            text_column="text",
            transform="wikitext-articles",
        ),
        NamedSource(
            name="wikitext-103",
            description="Wikipedia Good and Featured articles, 103M tokens, raw (one row per article)",
            column="text",
            licence="CC-BY-SA-3.0",
            size="~310 MB",
            repo="Salesforce/wikitext",
            files={
                "train": ("wikitext-103-raw-v1/train-*.parquet",),
                "validation": ("wikitext-103-raw-v1/validation-*.parquet",),
                "test": ("wikitext-103-raw-v1/test-*.parquet",),
            },
            text_column="text",
            transform="wikitext-articles",
        ),
        NamedSource(
            name="alpaca-cleaned",
            description="52K instruction-following examples (Alpaca, cleaned) as user/assistant messages",
            column="messages",
            licence="CC-BY-4.0",
            size="~44 MB",
            repo="yahma/alpaca-cleaned",
            files={"train": ("alpaca_data_cleaned.json",)},
            transform="alpaca",
            val_fraction=0.02,
            test_fraction=0.02,
        ),
        NamedSource(
            name="slimpajama-6b",
            description="A 6B-token random sample of SlimPajama-627B (web, books, code, papers)",
            column="text",
            licence="mixed (see card)",
            size="~14 GB",
            repo="DKYoon/SlimPajama-6B",
            files={
                "train": ("data/train-*.parquet",),
                "validation": ("data/validation-*.parquet",),
                "test": ("data/test-*.parquet",),
            },
            text_column="text",
        ),
        NamedSource(
            name="fineweb-edu-10bt",
            description="FineWeb-Edu 10B-token sample: educational web pages filtered from Common Crawl",
            column="text",
            licence="ODC-BY-1.0",
            size="~27 GB",
            repo="HuggingFaceFW/fineweb-edu",
            files={"train": ("sample/10BT/*.parquet",)},
            text_column="text",
        ),
        # Preference pairs for `llmctl dpo` (llmctl/raw/preference.py normalises the three layouts).
        NamedSource(
            name="ultrafeedback-binarized",
            description="64K prompts with a preferred and a rejected GPT-4-rated reply (UltraFeedback, binarized)",
            column="preference",
            licence="MIT",
            size="~230 MB",
            repo="HuggingFaceH4/ultrafeedback_binarized",
            files={"train": ("data/train_prefs-*.parquet",), "validation": ("data/test_prefs-*.parquet",)},
            transform="preference",
        ),
        NamedSource(
            name="orca-dpo-pairs",
            description="12.9K Orca-style questions (+ system prompt), GPT-4 reply chosen over a Llama-2 one",
            column="preference",
            licence="Apache-2.0",
            size="~36 MB",
            repo="Intel/orca_dpo_pairs",
            files={"train": ("orca_rlhf.jsonl",)},
            transform="preference",
            val_fraction=0.02,
            test_fraction=0.0,
        ),
        NamedSource(
            name="hh-rlhf",
            description="Anthropic helpful and harmless human preference transcripts (Human/Assistant)",
            column="preference",
            licence="MIT",
            size="~45 MB",
            repo="Anthropic/hh-rlhf",
            files={"train": ("*/train.jsonl.gz",), "validation": ("*/test.jsonl.gz",)},
            transform="hh-rlhf",
        ),
    ]
}


@dataclass(frozen=True)
class SourceSpec:
    """A parsed SOURCE argument."""

    spec: str
    """What the user typed (a URL with its credentials redacted)."""
    kind: SourceKind
    name: str | None = None
    """Registry name, for named sources."""
    repo: str | None = None
    revision: str | None = None
    subset: str | None = None
    url: str | None = None
    path: str | None = None
    """Local file, directory or glob."""
    named: NamedSource | None = None

    @property
    def label(self) -> str:
        """A short name for logs and dataset.json."""
        return self.name or self.repo or self.path or self.spec


_HF = re.compile(r"^hf:(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>[^:]+))?(?::(?P<subset>[^:@]+))?$")
_GLOB_CHARS = set("*?[")


def parse_source(spec: str) -> SourceSpec:
    """Parse a named source, `hf:owner/name[@revision][:subset]`, an http(s) URL or a local path/glob."""
    from pathlib import Path

    text = spec.strip()
    if text in NAMED_SOURCES:
        named = NAMED_SOURCES[text]
        kind: SourceKind = "pystdlib" if named.repo is None else "hub"
        return SourceSpec(
            spec=text, kind=kind, name=text, repo=named.repo, revision=named.revision, named=named
        )
    if text.startswith("hf:"):
        match = _HF.match(text)
        if not match:
            raise LlmctlError(
                f"cannot parse Hub source {text!r}",
                "write it as hf:owner/name, hf:owner/name@revision or hf:owner/name@revision:subset",
            )
        return SourceSpec(
            spec=text, kind="hub", repo=match["repo"], revision=match["rev"] or "main", subset=match["subset"]
        )
    if text.startswith(("http://", "https://")):
        from llmctl.raw.http_download import redact_url

        # `spec` is what gets recorded and shown, so credentials in the URL stay out of it.
        return SourceSpec(spec=redact_url(text), kind="url", url=text)
    expanded = str(Path(text).expanduser())
    if Path(expanded).exists() or _GLOB_CHARS & set(text):
        return SourceSpec(spec=text, kind="local", path=expanded)
    close = difflib.get_close_matches(text, list(NAMED_SOURCES), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise LlmctlError(
        f"unknown source '{text}' (not a named source, hf: dataset, URL or existing path)",
        f"{hint}known sources: {', '.join(NAMED_SOURCES)}; or use hf:owner/name, an http(s) URL, or a local file/glob",
    )


def source_rows() -> list[dict[str, object]]:
    """What `llmctl data sources` shows: name, kind, size, splits (carved ones marked *), licence, origin."""
    rows: list[dict[str, object]] = []
    for s in NAMED_SOURCES.values():
        own = [x for x in SPLITS if x in s.files] if s.files else ["train"]
        carved = [x for x in SPLITS if x not in own]
        rows.append(
            {
                "name": s.name,
                "kind": {"messages": "chat", "preference": "preference"}.get(s.column, "text"),
                "column": s.column,
                "size": s.size,
                "splits": [*own, *carved],
                "carved": carved,
                "licence": s.licence,
                "repo": s.repo,
                "revision": s.revision if s.repo else None,
                "files": {k: list(v) for k, v in s.files.items()},
                "description": s.description,
            }
        )
    return rows
