"""What `llmctl inspect` shows: documents of a token directory, token by token, and their raw text.

Each document comes back with its ids, the text each token contributes (for showing boundaries), the
loss mask in SFT mode, and, when the raw dataset is given, whether decoding the tokens gives back
exactly the raw text.
"""

from __future__ import annotations

import bisect
import codecs
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.errors import LlmctlError
from llmctl.tokenizer.chat import BOS, get_profile
from llmctl.tokenizer.core import Tokenizer, load_tokenizer
from llmctl.tokens.shards import Shard, open_split, read_meta, shard_sidecar


@dataclass
class DocumentView:
    """One tokenized document, ready to show."""

    split: str
    index: int
    shard: str
    ids: list[int]
    pieces: list[str]
    """Text each token adds; a token ending inside a UTF-8 character adds '' and the next one the rest."""
    mask: list[int] | None
    text: str
    raw_text: str | None = None
    raw_matches: bool | None = None
    first_difference: int | None = None

    @property
    def trained_tokens(self) -> int:
        """Tokens the loss counts."""
        return len(self.ids) if self.mask is None else int(sum(self.mask))


@dataclass
class TokenDirectory:
    """A split of a token directory opened for reading documents by global index."""

    root: Path
    split: str
    meta: dict[str, Any]
    shards: list[Shard]
    tokenizer: Tokenizer
    starts: list[int] = field(default_factory=list)

    @property
    def num_docs(self) -> int:
        """Documents in the split."""
        return self.starts[-1] if self.starts else 0

    def locate(self, index: int) -> tuple[Shard, int]:
        """The shard holding document `index` and its position there."""
        if not 0 <= index < self.num_docs:
            raise LlmctlError(
                f"document {index} is out of range: split '{self.split}' has {self.num_docs} documents",
                f"pass --index between 0 and {self.num_docs - 1}",
            )
        k = bisect.bisect_right(self.starts, index) - 1
        return self.shards[k], index - self.starts[k]


def open_directory(
    root: str | Path, split: str | None = None, tokenizer: str | Path | None = None
) -> TokenDirectory:
    """Open a split (default: the first) and the tokenizer that wrote it (its fingerprint is checked)."""
    meta = read_meta(root)
    split = split or next(iter(meta["splits"]), "train")
    shards = open_split(root, split, meta)
    recorded = meta["tokenizer"]
    path = Path(tokenizer) if tokenizer else Path(recorded["path"])
    if not path.exists():
        raise LlmctlError(
            f"tokenizer {path} recorded in {root}/meta.json is not there", "pass it with --tokenizer PATH"
        )
    tok = load_tokenizer(path)
    if tok.fingerprint != recorded["fingerprint"]:
        raise LlmctlError(
            f"tokenizer {path} (fingerprint {tok.fingerprint[:12]}) is not the one {root} was written with ({recorded['fingerprint'][:12]})",
            f"pass the tokenizer used by `llmctl tokenize` with --tokenizer (recorded path: {recorded['path']})",
        )
    starts = [0]
    for shard in shards:
        starts.append(starts[-1] + shard.num_docs)
    return TokenDirectory(Path(root), split, meta, shards, tok, starts)


def select(total: int, index: int | None = None, sample: int | None = None, seed: int = 0) -> list[int]:
    """Document indices to show: one index, a seeded random sample, or the first document."""
    if total == 0:
        return []
    if sample:
        return sorted(random.Random(seed).sample(range(total), min(sample, total)))
    return [index or 0]


def _byte_level(tok: Tokenizer) -> bool:
    backend = getattr(tok, "backend", None)
    return backend is not None and type(backend.decoder).__name__ == "ByteLevel"


def token_pieces(tok: Tokenizer, ids: list[int]) -> list[str]:
    """The text each token contributes, so that ''.join(pieces) is the decoded text."""
    if _byte_level(tok):
        from llmctl.tokenizer.fast import UNICODE_TO_BYTE

        specials = set(tok.special_ids().values())

        def raw(i: int) -> bytes:
            token = tok.id_to_token(i)
            if i in specials:
                return token.encode("utf-8")
            return bytes(UNICODE_TO_BYTE.get(c, 0x3F) for c in token)

        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = [decoder.decode(raw(i)) for i in ids]
        if pieces:
            pieces[-1] += decoder.decode(b"", final=True)
        return pieces
    return [tok.decode([i]) for i in ids]


def _content_ids(ids: list[int], meta: dict[str, Any]) -> list[int]:
    """Ids of the document's own text: the separator tokens the policy added are dropped."""
    policy = meta["separator"]["policy"]
    tokenizer = meta["tokenizer"]
    if policy in ("bos", "bos+eos") and ids and ids[0] == tokenizer["bos_id"]:
        ids = ids[1:]
    if policy in ("eos", "bos+eos") and ids and ids[-1] == tokenizer["eos_id"]:
        ids = ids[:-1]
    return ids


def expected_text(raw: Any, meta: dict[str, Any]) -> str:
    """What decoding a document should give back: the raw text, or the rendered conversation in SFT."""
    if meta["mode"] != "sft":
        return raw or ""
    if meta["chat_profile"]["name"] == "model":
        from llmctl.tokenizer.template import TemplateChat

        # `--template model`: the model's own template renders the conversation (no tokenizer needed for text).
        return TemplateChat.from_manifest({"chat": meta["chat_profile"]}, None).render_text(raw or [])  # type: ignore[union-attr]
    profile = get_profile(meta["chat_profile"]["name"])
    parts = [BOS]
    for message in raw or []:
        parts += [profile.roles.get(message.get("role"), ""), message.get("content") or "", profile.end]
    return "".join(parts)


def _compare(decoded: str, expected: str) -> int | None:
    if decoded == expected:
        return None
    limit = min(len(decoded), len(expected))
    return next((i for i in range(limit) if decoded[i] != expected[i]), limit)


def load_document(directory: TokenDirectory, index: int, raw_root: str | Path | None = None) -> DocumentView:
    """Document `index` of the split, with its raw text lined up when raw_root is given."""
    shard, local = directory.locate(index)
    ids = shard.document(local).astype(np.int64).tolist()
    mask = shard.document_mask(local)
    tok = directory.tokenizer
    view = DocumentView(
        split=directory.split,
        index=index,
        shard=shard.name,
        ids=ids,
        pieces=token_pieces(tok, ids),
        mask=None if mask is None else mask.astype(np.int64).tolist(),
        text=tok.decode(ids),
    )
    if raw_root is not None:
        raw = _raw_row(Path(raw_root), directory, shard, local)
        _attach_raw(view, raw, directory)
    return view


def _attach_raw(view: DocumentView, raw: Any, directory: TokenDirectory) -> None:
    view.raw_text = expected_text(raw, directory.meta)
    content = view.ids if directory.meta["mode"] == "sft" else _content_ids(view.ids, directory.meta)
    view.first_difference = _compare(directory.tokenizer.decode(content), view.raw_text)
    view.raw_matches = view.first_difference is None


def _skipped_rows(directory: TokenDirectory, shard: Shard) -> list[int]:
    return list(shard_sidecar(directory.root, directory.split, shard.name).get("skipped_rows", []))


def _row_of(skipped_rows: list[int], local: int) -> int:
    """Row (within the shard's source range) of the shard's local-th document: empty rows were skipped."""
    row = local
    for skipped in skipped_rows:
        if skipped <= row:
            row += 1
    return row


def _shard_source(root: Path, directory: TokenDirectory, shard: Shard) -> tuple[Path, int, int]:
    source = shard.record.get("source") or {}
    part = root / directory.split / str(source.get("part", ""))
    if not part.is_file():
        raise LlmctlError(
            f"raw part {part} (source of {directory.split}/{shard.name}) not found",
            "pass the raw dataset directory given to `llmctl tokenize --data` as --raw",
        )
    start, stop = source["rows"]
    return part, start, stop


def _raw_row(root: Path, directory: TokenDirectory, shard: Shard, local: int) -> Any:
    import pyarrow.parquet as pq

    from llmctl.tokens.workers import column_values

    part, start, _ = _shard_source(root, directory, shard)
    target = start + _row_of(_skipped_rows(directory, shard), local)
    pf = pq.ParquetFile(part)
    first = 0
    for g in range(pf.metadata.num_row_groups):
        rows = pf.metadata.row_group(g).num_rows
        if target < first + rows:
            array = pf.read_row_group(g, columns=[directory.meta["column"]]).column(0)
            values, _ = column_values(array.slice(target - first, 1).combine_chunks())
            return values[0]
        first += rows
    raise LlmctlError(
        f"row {target} not found in {part}",
        "the raw dataset changed since tokenizing: pass the original --raw",
    )


def check_all(directory: TokenDirectory, raw_root: str | Path) -> Iterator[tuple[int, int | None]]:
    """(document index, first differing character or None) for every document, streaming shard by shard."""
    from llmctl.tokens.plan import ShardPlan, iter_chunks
    from llmctl.tokens.workers import column_values

    index = 0
    for shard in directory.shards:
        part, start, stop = _shard_source(Path(raw_root), directory, shard)
        skipped = set(_skipped_rows(directory, shard))
        local = 0
        plan = ShardPlan(directory.split, 0, part, start, stop, 0)
        for position, array in iter_chunks(plan, directory.meta["column"]):
            values, _ = column_values(array)
            for offset, raw in enumerate(values):
                if position + offset in skipped:
                    continue
                if local >= shard.num_docs:
                    raise LlmctlError(
                        f"{raw_root} has more rows than {directory.split}/{shard.name} has documents",
                        "the raw dataset changed since tokenizing: pass the original --raw",
                    )
                ids = shard.document(local).astype(np.int64).tolist()
                content = ids if directory.meta["mode"] == "sft" else _content_ids(ids, directory.meta)
                yield index, _compare(directory.tokenizer.decode(content), expected_text(raw, directory.meta))
                index += 1
                local += 1
