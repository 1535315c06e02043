"""A tiktoken fast path for byte-level BPE tokenizer.json files, with the same ids as `tokenizers`.

`tokenizers` spends most of its time outside the BPE itself; tiktoken encodes the same byte-level
BPE several times faster once the vocabulary is written as tiktoken "mergeable ranks" (nanochat
trains with one library and encodes with the other). The conversion is only exact under conditions
checked here, before any text is encoded:

- no normalizer; a pre-tokenizer whose split tiktoken can reproduce: ByteLevel with its GPT-2 regex,
  or Split(regex, Isolated) followed by ByteLevel(use_regex=False); no prefix space;
- a plain BPE model (no dropout, affixes or byte fallback) whose added tokens are all special (non-special
  added tokens are matched inside raw text by `tokenizers`, which tiktoken cannot do);
- tiktoken merges any adjacent pair whose concatenation is a token, at the rank of that token, while
  `tokenizers` merges only listed pairs, by list position. Ranks are therefore taken in merge order, and
  for every token the pair tiktoken's own loop builds it from (using earlier ranks only) must be the
  listed merge: then the merge list is the one tiktoken implies (as when converting tiktoken to
  `tokenizers`, the direction transformers uses for Llama 3 and GPT-4 vocabularies);
- tiktoken returns a whole pre-token that is itself a token without merging; with `ignore_merges`
  false, `tokenizers` must reach that token by merges too, which is checked token by token.

A tokenizer that fails a check is encoded by `tokenizers` itself, and the reason is reported.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.tokenizer import fast_cache
from llmctl.tokenizer.core import Tokenizer

# The split `tokenizers`' ByteLevel pre-tokenizer applies when use_regex is true (GPT-2's).
BYTE_LEVEL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Encoded by both libraries when the fast path is chosen; covers the cases where regex engines and
# merge rules are most likely to part ways.
PROBE_TEXT = (
    "def f(x):\n\treturn x  # it's 42\r\n\n\n   spaces\u00a0nbsp \u3000ideographic\u2028line\u0085nel\x0b\x0c\n"
    "Caf\u00e9 na\u00efve \u00c5ngstr\u00f6m \u0130stanbul \u03a3\u03bf\u03c6\u03af\u03b1 \u041c\u043e\u0441\u043a\u0432\u0430 "
    "\u5317\u4eac\u5e02 \u6771\u4eac \ud55c\uad6d\uc5b4 \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd "
    "\U0001f600\U0001f44d\U0001f3fd \u2764\ufe0f \U0001f468\u200d\U0001f469\u200d\U0001f467 x\u0301 \u0bb5\u0ba3\u0b95\u0bcd\u0b95\u0bae\u0bcd "
    "<|bos|> <|eos|><|pad|><|user|>hi<|end|><|assistant|> <s></s> [CLS] I'M YOU'LL they're 'tis ''  "
    "1234567890 3.14159 -7e10 0x1F \u0661\u0662\u0663 \u00bd \u2460 \U0001d400\U0001d401 "
    "\ufffd \u200b zero\u200bwidth  trailing   \n"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68 bytes
    take the code points from 256 upward, in byte order."""
    printable = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    mapping: dict[int, str] = {}
    shifted = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + shifted)
            shifted += 1
    return mapping


UNICODE_TO_BYTE = {c: b for b, c in bytes_to_unicode().items()}


@dataclass(frozen=True)
class EncoderSpec:
    """What a worker process needs to build an encoder: picklable, built once in the parent."""

    backend: str
    """'tiktoken' (fast path), 'reference' (the tokenizer's own library) or 'chat-template' (`--template
    model`: workers render and encode with the tokenizer's own library; the batch encoder is unused)."""
    path: str
    """Tokenizer file."""
    pattern: str = ""
    """Pre-tokenizer regex (tiktoken)."""
    ranks: dict[bytes, int] | None = None
    """Token bytes -> tiktoken rank (tiktoken)."""
    rank_to_id: tuple[int, ...] | None = None
    """Rank -> tokenizer id when ids do not follow merge order; None when rank == id."""

    def build(self) -> BatchEncoder:
        """The encoder itself, in the calling process."""
        if self.backend == "tiktoken":
            return TiktokenEncoder(self)
        return ReferenceEncoder(self.path)


class BatchEncoder:
    """Encodes ordinary text (no specials recognised) to lists of ids, one thread per process."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        raise NotImplementedError


class TiktokenEncoder(BatchEncoder):
    """tiktoken with ranks converted from a tokenizer.json; no special tokens registered."""

    def __init__(self, spec: EncoderSpec) -> None:
        import tiktoken

        assert spec.ranks is not None
        self._enc = tiktoken.Encoding(
            name=f"llmctl:{Path(spec.path).name}",
            pat_str=spec.pattern,
            mergeable_ranks=spec.ranks,
            special_tokens={},
        )
        self._remap = None
        if spec.rank_to_id is not None:
            import numpy as np

            self._remap = np.asarray(spec.rank_to_id, dtype=np.int64)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_ordinary per text beats encode_ordinary_batch(num_threads=1) and encode_to_numpy here:
        # no thread pool hop, no special-token scan.
        encode = self._enc.encode_ordinary
        out = [encode(t) for t in texts]
        if self._remap is not None:
            out = [self._remap[ids].tolist() if ids else ids for ids in out]
        return out


class ReferenceEncoder(BatchEncoder):
    """The tokenizer's own library: the slow path and the reference for ids."""

    def __init__(self, path: str) -> None:
        from llmctl.tokenizer.core import load_tokenizer

        self._tok = load_tokenizer(path)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tok.encode_batch(list(texts))


class NotConvertible(Exception):
    """The tokenizer.json cannot be encoded exactly by tiktoken; the message says why."""


def _pattern_of(pre: dict[str, Any] | None) -> str:
    if pre is None:
        raise NotConvertible("it has no pre-tokenizer")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise NotConvertible("its ByteLevel pre-tokenizer adds a prefix space")
        if not pre.get("use_regex", True):
            raise NotConvertible("its ByteLevel pre-tokenizer does not split words")
        return BYTE_LEVEL_PATTERN
    if kind == "Sequence":
        steps = pre.get("pretokenizers") or []
        if (
            len(steps) == 2
            and steps[0].get("type") == "Split"
            and "Regex" in (steps[0].get("pattern") or {})
            and steps[0].get("behavior") == "Isolated"
            and not steps[0].get("invert")
            and steps[1].get("type") == "ByteLevel"
            and not steps[1].get("add_prefix_space")
            and not steps[1].get("use_regex", True)
        ):
            return str(steps[0]["pattern"]["Regex"])
    raise NotConvertible(f"its pre-tokenizer ({kind}) is not ByteLevel or Split+ByteLevel")


_TO_LATIN1 = {ord(c): chr(b) for c, b in UNICODE_TO_BYTE.items()}


def _token_bytes(token: str) -> bytes:
    try:
        return token.translate(_TO_LATIN1).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise NotConvertible(f"token {token!r} is not in the byte-level alphabet") from exc


def convert(path: str | Path, backend: Any = None) -> EncoderSpec:
    """Convert a byte-level BPE tokenizer.json to tiktoken ranks, or raise NotConvertible.

    `backend` is the already loaded `tokenizers.Tokenizer` of the same file, if there is one.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("normalizer") is not None:
        raise NotConvertible("it has a normalizer")
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise NotConvertible(f"its model is {model.get('type')}, not BPE")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise NotConvertible(f"its BPE model sets {key}")
    if model.get("byte_fallback"):
        raise NotConvertible("its BPE model uses byte fallback")
    if (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise NotConvertible("its decoder is not ByteLevel")
    pattern = _pattern_of(data.get("pre_tokenizer"))
    added = data.get("added_tokens") or []
    if any(not t.get("special") for t in added):
        raise NotConvertible("it has non-special added tokens, which are matched inside raw text")
    special_ids = {int(t["id"]) for t in added}

    vocab: dict[str, int] = {tok: int(i) for tok, i in model["vocab"].items() if int(i) not in special_ids}
    by_bytes = {_token_bytes(tok): i for tok, i in vocab.items()}
    if len(by_bytes) != len(vocab):
        raise NotConvertible("two tokens have the same bytes")
    missing = [b for b in range(256) if bytes([b]) not in by_bytes]
    if missing:
        raise NotConvertible(f"{len(missing)} of the 256 single bytes are not tokens")

    merge_rank: dict[bytes, int] = {}
    merge_pair: dict[bytes, tuple[bytes, bytes]] = {}
    for index, merge in enumerate(model.get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        lb, rb = _token_bytes(left), _token_bytes(right)
        joined = lb + rb
        if joined not in by_bytes or lb not in by_bytes or rb not in by_bytes:
            raise NotConvertible(f"merge {left!r} + {right!r} is not in the vocabulary")
        if joined in merge_rank:
            raise NotConvertible(f"token {left + right!r} has two merges")
        merge_rank[joined] = index
        merge_pair[joined] = (lb, rb)

    merge_order = {bytes([b]): -1 for b in range(256)}
    merge_order.update(merge_rank)
    for token in by_bytes:
        if len(token) < 2:
            continue
        if token not in merge_pair:
            raise NotConvertible(f"token {token!r} is not produced by any merge")
        # The pair tiktoken itself would build this token from must be the listed merge. With a single
        # two-token split, tiktoken can only ever join this token from the listed pair: nothing to run.
        splits = sum(1 for k in range(1, len(token)) if token[:k] in by_bytes and token[k:] in by_bytes)
        if splits > 1 and _tiktoken_split(token, merge_order, merge_rank[token]) != list(merge_pair[token]):
            raise NotConvertible(f"token {token!r} is built from other parts by tiktoken than by its merge")

    _check_whole_tokens(path, backend, model, vocab, special_ids)

    merged = sorted(merge_rank, key=merge_rank.__getitem__)
    ids_in_merge_order = [by_bytes[t] for t in merged]
    if all(a < b for a, b in zip(ids_in_merge_order, ids_in_merge_order[1:], strict=False)):
        return EncoderSpec("tiktoken", str(path), pattern=pattern, ranks=by_bytes)
    # Ids out of merge order: rank by merge order and map ranks back to ids after encoding.
    ranks = {bytes([b]): b for b in range(256)}
    ranks.update({t: 256 + k for k, t in enumerate(merged)})
    rank_to_id = [0] * (256 + len(merged))
    for token, rank in ranks.items():
        rank_to_id[rank] = by_bytes[token]
    return EncoderSpec("tiktoken", str(path), pattern=pattern, ranks=ranks, rank_to_id=tuple(rank_to_id))


def _tiktoken_split(token: bytes, order: dict[bytes, int], below: int) -> list[bytes]:
    """tiktoken's merge loop on `token`'s bytes using only merges ranked before `below`."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = below, -1
        for i in range(len(parts) - 1):
            rank = order.get(parts[i] + parts[i + 1], below)
            if rank < best:
                best, at = rank, i
        if at < 0:
            break
        parts[at : at + 2] = [parts[at] + parts[at + 1]]
    return parts


def _check_whole_tokens(
    path: str | Path, hf: Any, model: dict[str, Any], vocab: dict[str, int], special_ids: set[int]
) -> None:
    if hf is None:
        from tokenizers import Tokenizer as _HF

        hf = _HF.from_file(str(path))
    bpe = hf.model
    if not model.get("ignore_merges"):
        for token, tid in vocab.items():
            if len(token) > 1 and [t.id for t in bpe.tokenize(token)] != [tid]:
                raise NotConvertible(f"token {token!r} is not what its own merges produce")
    elif hf.pre_tokenizer is not None:
        # With ignore_merges a pre-token equal to a special token's text would become that special.
        for tid in special_ids:
            content = hf.id_to_token(tid)
            if content and len(hf.pre_tokenizer.pre_tokenize_str(content)) == 1:
                raise NotConvertible(f"special token {content!r} can be a whole pre-token")


def choose_encoder(tokenizer: Tokenizer, allow_fast: bool = True) -> tuple[EncoderSpec, str | None]:
    """The fastest exact encoder for `tokenizer`, and why the fast path was not taken (None when it was).

    The tiktoken form is kept between runs (`fast_cache`). Kept or new, it is checked against the
    tokenizer on PROBE_TEXT; a kept form that fails is converted again, a new one falls back.
    """
    reference = EncoderSpec("reference", str(tokenizer.path))
    if not allow_fast:
        return reference, "the fast path was turned off"
    if tokenizer.kind != "hf":
        return reference, f"{tokenizer.kind} tokenizers have no tiktoken fast path"
    kept = kept_encoder(tokenizer.fingerprint, tokenizer.path)
    if kept is not None and _probe_disagreement(kept, tokenizer) is None:
        return kept, None
    try:
        spec = convert(tokenizer.path, getattr(tokenizer, "backend", None))
    except NotConvertible as exc:
        return reference, f"the tokenizer has no exact tiktoken form: {exc}"
    note = _probe_disagreement(spec, tokenizer)
    if note is not None:
        return reference, note
    fast_cache.store(tokenizer.fingerprint, spec)
    return spec, None


def kept_encoder(fingerprint: str, tokenizer_path: str | Path) -> EncoderSpec | None:
    """The tiktoken form kept for the tokenizer with this fingerprint (`fast_cache`), or None."""
    form = fast_cache.load(fingerprint)
    if form is None:
        return None
    return EncoderSpec(
        "tiktoken", str(tokenizer_path), pattern=form.pattern, ranks=form.ranks, rank_to_id=form.rank_to_id
    )


def _probe_disagreement(spec: EncoderSpec, tokenizer: Tokenizer) -> str | None:
    """Why `spec` does not encode PROBE_TEXT as `tokenizer` does; None when it does."""
    probe = [PROBE_TEXT, PROBE_TEXT.upper(), " " + PROBE_TEXT[::-1]]
    try:
        fast = spec.build().encode_batch(probe)
    except Exception as exc:  # tiktoken rejects a regex the pre-tokenizer's engine accepts
        return f"tiktoken cannot use the pre-tokenizer's regex: {exc}"
    if fast != tokenizer.encode_batch(probe):
        return "tiktoken and tokenizers disagree on the probe text"
    return None
