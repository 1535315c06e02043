"""Preference pair shards (`llmctl tokenize --mode dpo`): writer, typed meta and reader.

    DIR/meta.json                    mode "dpo", tokenizer, chat profile, max_len, per-split counts and report
    DIR/<split>/pairs-00000.bin      per pair: prompt ids, then chosen ids, then rejected ids (uint16/uint32)
    DIR/<split>/pairs-00000.mask     uint8 per token: 1 where the loss counts it (reply content and its end marker)
    DIR/<split>/pairs-00000.idx      int64 [pairs, 4]: start offset, prompt, chosen and rejected lengths

    result = tokenize_pairs(Path("data/prefs"), Path("tok.json"), Path("tokens/prefs"), max_len=512)
    pairs = open_pairs("tokens/prefs", "train")
    p, c, r = pairs.sides(0)           # each (ids, mask)

The chosen and rejected ids continue the prompt: prompt + chosen is exactly the chat profile's
rendering of the prompt turns followed by the chosen reply (`<|assistant|> ... <|end|>`), the
assistant marker untrained. With `profile="model"` (`--template model`) the model's own Jinja chat
template renders them instead: the prompt with the generation prompt, prompt + chosen as the whole
conversation (transformers' apply_chat_template ids), the reply's content and its end-of-turn token
trained. --max-len bounds prompt + side; the prompt is kept whole and the reply cut (a message's text
longer than `text_bound` characters is cut before it is encoded, so a huge reply costs no more than a
long one). A pair whose
prompt leaves no room for one trained token is dropped, and a pair where only one side (or the two by
different amounts) was cut is counted: both are listed in meta.json's report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmctl import __version__
from llmctl.errors import LlmctlError
from llmctl.files import atomic_open, atomic_write_json
from llmctl.tokenizer.chat import render, require_profile
from llmctl.tokenizer.core import Tokenizer, load_tokenizer
from llmctl.tokens.shards import FORMAT_NAME, FORMAT_VERSION, META_JSON, dtype_for_vocab, read_meta

MODE = "dpo"
SHARD = "pairs-00000"
REPORT_LIMIT = 100
"""Row numbers listed per reason in meta.json; the counts are always complete."""


@dataclass
class SplitReport:
    """What happened to one split's pairs."""

    pairs: int = 0
    prompt_tokens: int = 0
    chosen_tokens: int = 0
    rejected_tokens: int = 0
    trained_tokens: int = 0
    dropped_prompt_too_long: int = 0
    truncated: int = 0
    """Pairs with at least one side cut to --max-len."""
    truncated_unequally: int = 0
    """Pairs whose chosen and rejected lost different numbers of tokens (or a text cut before encoding)."""
    cut_before_encoding: int = 0
    """Pairs with a message longer than the text bound (text_bound), cut before it was encoded."""
    dropped_rows: list[int] = field(default_factory=list)
    unequal_rows: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The split's entry in meta.json."""
        d = dict(self.__dict__)
        d["tokens"] = self.prompt_tokens * 2 + self.chosen_tokens + self.rejected_tokens
        d["documents"] = self.pairs
        return d


def _raw_pairs(data: Path, split: str) -> Any:
    import pyarrow.parquet as pq

    from llmctl.raw.dataset import split_parts

    for part in split_parts(data, split):
        pf = pq.ParquetFile(part)
        names = pf.schema_arrow.names
        missing = [c for c in ("prompt", "chosen", "rejected") if c not in names]
        if missing:
            raise LlmctlError(
                f"{part} holds no preference pairs: no {', '.join(repr(m) for m in missing)} column "
                f"(columns: {', '.join(names)})",
                "download preference data (prompt/chosen/rejected) with `llmctl data download`, or use --mode sft",
            )
        for batch in pf.iter_batches(batch_size=1024, columns=["prompt", "chosen", "rejected"]):
            yield from batch.to_pylist()


def encode_pair(
    pair: dict[str, Any], tok: Tokenizer, profile: Any
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """(prompt ids, [chosen ids, chosen mask], [rejected ids, rejected mask]) rendered by the chat profile."""
    prompt = render(pair["prompt"], profile, tok.encode, tok.token_to_id)
    n = len(prompt.ids)
    sides = []
    for key in ("chosen", "rejected"):
        full = render([*pair["prompt"], *pair[key]], profile, tok.encode, tok.token_to_id)
        sides.append([full.ids[n:], full.mask[n:]])
    return prompt.ids, sides[0], sides[1]


def encode_pair_with_template(
    pair: dict[str, Any], chat: Any, end_ids: list[int]
) -> tuple[list[int], list[list[int]], list[list[int]]]:
    """encode_pair's result rendered by a model's chat template (llmctl.tokenizer.template.TemplateChat):
    the prompt ends with the template's generation prompt, each side is what the reply's turn adds."""
    prompt = chat.render_ids(pair["prompt"], add_generation_prompt=True)
    n = len(prompt)
    sides = []
    for key in ("chosen", "rejected"):
        ids, mask = chat.render_masked([*pair["prompt"], *pair[key]], end_ids)
        if ids[:n] != prompt:
            raise LlmctlError(
                "the chat template does not render the prompt with its generation prompt as the start of "
                "prompt + reply, so the reply tokens cannot be located",
                "use a template that renders turns independently, or a llmctl tokenizer with --profile chat",
            )
        sides.append([ids[n:], mask[n:]])
    return prompt, sides[0], sides[1]


CUT_MARGIN_TOKENS = 64
"""Tokens kept past --max-len when a text is cut before encoding: BPE re-merges only the few tokens at
the cut, so this keeps the cut's effects well beyond the tokens that are kept."""


def longest_token_chars(tok: Tokenizer) -> int:
    """Characters of the vocabulary's longest token string: no token covers more characters of text.

    Byte-level BPE spells each byte as one character, and a character is at least one byte; SentencePiece
    pieces spell their characters (`▁` for a space), byte fallback `<0x41>` six for one byte: each string
    is at least as long as the text it covers."""
    return max(1, max(len(tok.id_to_token(i) or "") for i in range(tok.vocab_size)))


def text_bound(max_len: int, tok: Tokenizer) -> int:
    """Characters of one message's text that give at least max_len + CUT_MARGIN_TOKENS tokens.

    With no token longer than L characters, C characters encode into at least C / L tokens; twice that
    allows for a normalizer that drops characters (stripped accents). A longer message's tokens past
    the bound are cut by --max-len anyway, so encoding it whole (a 1 GB reply) would only cost memory."""
    return 2 * (max_len + CUT_MARGIN_TOKENS) * longest_token_chars(tok)


def bound_pair_text(pair: dict[str, Any], limit: int) -> tuple[dict[str, Any], bool]:
    """The pair with every message's text cut to `limit` characters, and whether any was cut."""
    cut = False

    def bounded(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        nonlocal cut
        out = []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str) and len(content) > limit:
                cut = True
                m = {**m, "content": content[:limit]}
            out.append(m)
        return out

    bounded_pair = {k: bounded(v) if k in ("prompt", "chosen", "rejected") else v for k, v in pair.items()}
    return bounded_pair, cut


def _first_trained(mask: list[int]) -> int:
    return next((i for i, m in enumerate(mask) if m), 0)


def tokenize_pairs(
    data: Path,
    tokenizer: Path,
    out: Path,
    *,
    profile: str = "chat",
    max_len: int = 1024,
    splits: tuple[str, ...] = (),
    on_progress: Any = None,
) -> dict[str, Any]:
    """Render and write every split's pairs; returns meta.json's contents (also written)."""
    from llmctl.raw.dataset import list_splits

    if max_len < 4:
        raise LlmctlError(f"--max-len must be at least 4, got {max_len}", "e.g. --max-len 1024")
    started = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    if profile == "model":
        from llmctl.tokenizer.template import TemplateChat
        from llmctl.tokens.tokenize import model_template

        record = model_template(tok)
        template = TemplateChat.from_manifest({"chat": record}, tok)
        ends = [int(i) for i in record.get("stop_ids") or []]
        chat_info: dict[str, Any] = {"name": "model", "version": 1, **record}

        def encode(pair: dict[str, Any]) -> tuple[list[int], list[list[int]], list[list[int]]]:
            return encode_pair_with_template(pair, template, ends)

    else:
        chat = require_profile(
            profile, tok, "train one with `llmctl tokenizer train`, which adds the chat markers"
        )
        chat_info = {"name": chat.name, "version": chat.version}

        def encode(pair: dict[str, Any]) -> tuple[list[int], list[list[int]], list[list[int]]]:
            return encode_pair(pair, tok, chat)

    found = list_splits(data)
    if not found:
        raise LlmctlError(
            f"{data} holds no split with parquet parts",
            "download one with `llmctl data download SOURCE --out DIR`",
        )
    dtype = np.dtype(dtype_for_vocab(tok.vocab_size)).newbyteorder("<")
    limit = text_bound(max_len, tok)
    meta_splits: dict[str, Any] = {}
    done = 0
    for split in list(splits) or found:
        report = SplitReport()
        directory = out / split
        directory.mkdir(parents=True, exist_ok=True)
        index: list[tuple[int, int, int, int]] = []
        at = 0
        with (
            atomic_open(directory / f"{SHARD}.bin") as bin_fh,
            atomic_open(directory / f"{SHARD}.mask") as mask_fh,
        ):
            for row, raw in enumerate(_raw_pairs(data, split)):
                pair, cut_text = bound_pair_text(raw, limit)
                report.cut_before_encoding += cut_text
                prompt, (c_ids, c_mask), (r_ids, r_mask) = encode(pair)
                room = max_len - len(prompt)
                # Room for one trained token of each reply: after the chat profile's untrained assistant marker,
                # at the reply's first token for a template (its generation prompt is the prompt's end).
                if room < max(_first_trained(c_mask), _first_trained(r_mask)) + 1:
                    report.dropped_prompt_too_long += 1
                    if len(report.dropped_rows) < REPORT_LIMIT:
                        report.dropped_rows.append(row)
                    continue
                cut_c, cut_r = max(0, len(c_ids) - room), max(0, len(r_ids) - room)
                c_ids, c_mask, r_ids, r_mask = c_ids[:room], c_mask[:room], r_ids[:room], r_mask[:room]
                if cut_c or cut_r:
                    report.truncated += 1
                # A text cut before encoding lost an unknown number of tokens: counted as unequal.
                if cut_c != cut_r or cut_text:
                    report.truncated_unequally += 1
                    if len(report.unequal_rows) < REPORT_LIMIT:
                        report.unequal_rows.append(row)
                ids = np.asarray([*prompt, *c_ids, *r_ids], dtype=dtype)
                mask = np.asarray([0] * len(prompt) + c_mask + r_mask, dtype=np.uint8)
                bin_fh.write(ids.tobytes())
                mask_fh.write(mask.tobytes())
                index.append((at, len(prompt), len(c_ids), len(r_ids)))
                at += len(ids)
                report.pairs += 1
                report.prompt_tokens += len(prompt)
                report.chosen_tokens += len(c_ids)
                report.rejected_tokens += len(r_ids)
                report.trained_tokens += int(sum(c_mask) + sum(r_mask))
                done += 1
                if on_progress is not None and done % 256 == 0:
                    on_progress(done)
        with atomic_open(directory / f"{SHARD}.idx") as fh:
            fh.write(np.asarray(index, dtype="<i8").reshape(-1, 4).tobytes())
        meta_splits[split] = report.as_dict()
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "llmctl_version": __version__,
        "mode": MODE,
        "dtype": dtype_for_vocab(tok.vocab_size),
        "vocab_size": tok.vocab_size,
        "tokenizer": {**tok.describe(), "path": str(Path(tok.path).resolve())},
        "chat_profile": chat_info,
        "separator": None,
        "max_len": max_len,
        "source": {"data": str(Path(data).resolve())},
        "splits": meta_splits,
        "totals": {
            k: sum(s[k] for s in meta_splits.values())
            for k in (
                "pairs",
                "tokens",
                "trained_tokens",
                "dropped_prompt_too_long",
                "truncated_unequally",
                "cut_before_encoding",
            )
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_json(out / META_JSON, meta)
    return meta


def require_pairs(meta: dict[str, Any], root: str | Path) -> dict[str, Any]:
    """meta unchanged when it describes pair shards; else an error naming the command to run."""
    if meta.get("mode") != MODE:
        raise LlmctlError(
            f"{root} holds {meta.get('mode')} tokens, not preference pairs",
            "tokenize preference data with `llmctl tokenize --mode dpo --profile chat`",
        )
    return meta


class PairShard:
    """One split's pairs, memory-mapped."""

    def __init__(self, root: str | Path, split: str, meta: dict[str, Any] | None = None) -> None:
        self.meta = require_pairs(meta or read_meta(root), root)
        if split not in self.meta["splits"]:
            raise LlmctlError(f"{root} has no split '{split}'", f"splits: {', '.join(self.meta['splits'])}")
        directory = Path(root) / split
        dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        idx = np.fromfile(directory / f"{SHARD}.idx", dtype="<i8").reshape(-1, 4)
        self.index = idx
        size = int(idx[-1, 0] + idx[-1, 1:].sum()) if len(idx) else 0
        self.tokens = (
            np.memmap(directory / f"{SHARD}.bin", dtype=dtype, mode="r", shape=(size,))
            if size
            else np.zeros(0, dtype)
        )
        self.mask = (
            np.memmap(directory / f"{SHARD}.mask", dtype=np.uint8, mode="r", shape=(size,))
            if size
            else np.zeros(0, np.uint8)
        )

    def __len__(self) -> int:
        return len(self.index)

    def sides(
        self, i: int
    ) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """((prompt ids, mask), (chosen ids, mask), (rejected ids, mask)) of pair i."""
        start, p, c, r = (int(x) for x in self.index[i])
        cuts = [(start, start + p), (start + p, start + p + c), (start + p + c, start + p + c + r)]
        return tuple(
            (np.asarray(self.tokens[a:b], np.int64), np.asarray(self.mask[a:b], np.int64)) for a, b in cuts
        )  # type: ignore[return-value]

    def sequence_lengths(self) -> np.ndarray:
        """[pairs, 2]: tokens of prompt + chosen and of prompt + rejected."""
        return np.stack([self.index[:, 1] + self.index[:, 2], self.index[:, 1] + self.index[:, 3]], axis=1)


def open_pairs(root: str | Path, split: str, meta: dict[str, Any] | None = None) -> PairShard:
    """The pairs of one split of a `--mode dpo` token directory."""
    return PairShard(root, split, meta)


def count_pairs(root: str | Path, splits: list[str] | None = None) -> dict[str, Any]:
    """What `llmctl count` reports for pair shards: pairs and prompt/chosen/rejected tokens per split."""
    meta = require_pairs(read_meta(root), root)
    keys = (
        "pairs",
        "prompt_tokens",
        "chosen_tokens",
        "rejected_tokens",
        "trained_tokens",
        "tokens",
        "dropped_prompt_too_long",
        "truncated",
        "truncated_unequally",
    )
    per_split = {s: {k: int(meta["splits"][s][k]) for k in keys} for s in splits or list(meta["splits"])}
    for name, row in per_split.items():
        lengths = open_pairs(root, name, meta).sequence_lengths()
        row["max_sequence_tokens"] = int(lengths.max()) if len(lengths) else 0
    total = {k: sum(r[k] for r in per_split.values()) for k in keys}
    total["max_sequence_tokens"] = max((r["max_sequence_tokens"] for r in per_split.values()), default=0)
    return {
        "path": str(root),
        "mode": MODE,
        "dtype": meta["dtype"],
        "max_len": meta["max_len"],
        "tokenizer": meta["tokenizer"]["path"],
        "fingerprint": meta["tokenizer"]["fingerprint"],
        "splits": per_split,
        "total": total,
    }
