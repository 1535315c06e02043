"""The tokenizer half of a GGUF file: BPE tokens, merges, token types, special ids and `tokenizer.ggml.pre`.

    vocab = gguf_vocab(tokenizer_json, vocab_size=model_rows)
    vocab.pre            # 'llama-bpe', 'qwen2', 'gpt-2' or 'smollm': the split llama.cpp will apply

llama.cpp re-implements each pre-tokenizer split by name, so `tokenizer.ggml.pre` must name the one whose
regex really is the tokenizer's; a close-but-different one tokenizes some texts differently with no error.
The name is chosen by comparing the tokenizer.json pre-tokenizer with the known splits exactly; anything
else is refused. Only byte-level BPE tokenizers (GPT-2 style: Llama 3, Qwen2, SmolLM, llmctl's own) are
supported; sentencepiece-style ones are an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import LlmctlError

# Splits llama.cpp implements, by the regex a tokenizer.json Split pre-tokenizer carries.
_LLAMA3 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPLIT_NAMES = {_LLAMA3: "llama-bpe", _QWEN2: "qwen2"}
"""Split regex -> tokenizer.ggml.pre. llmctl's own tokenizers use the Llama 3 (cl100k) split."""

# gguf.TokenType values (kept here so this module imports without the gguf package).
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


@dataclass
class GGUFVocab:
    """What GGUF's tokenizer keys hold."""

    pre: str
    tokens: list[str]
    types: list[int]
    merges: list[str]
    special: dict[str, int] = field(default_factory=dict)
    """added special token string -> id."""


NO_OP_NORMALIZERS = ("NFC",)
"""Normalizers exported although llama.cpp does not apply them: a no-op on text already in that form."""


def _unknown(what: str) -> LlmctlError:
    return LlmctlError(
        f"cannot tell llama.cpp how to pre-tokenize: {what}",
        "GGUF export knows the llama-bpe (Llama 3, llmctl), qwen2, gpt-2 and smollm splits; export --format hf "
        "and convert with llama.cpp after adding this tokenizer's hash there",
    )


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """tokenizer.ggml.pre for a tokenizer.json `pre_tokenizer` section, matched exactly."""
    if not pre:
        raise _unknown("the tokenizer has no pre-tokenizer")
    kind = pre.get("type")
    if kind == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    if kind != "Sequence":
        raise _unknown(f"pre-tokenizer {kind}")
    steps = pre.get("pretokenizers") or []
    kinds = [s.get("type") for s in steps]
    if (
        kinds == ["Digits", "ByteLevel"]
        and steps[0].get("individual_digits")
        and steps[1].get("use_regex", True)
    ):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        split = steps[0]
        pattern = (split.get("pattern") or {}).get("Regex")
        if (
            split.get("behavior") in ("Isolated", "isolated")
            and not split.get("invert")
            and pattern in SPLIT_NAMES
        ):
            return SPLIT_NAMES[pattern]
        raise _unknown(f"split regex {pattern!r}")
    raise _unknown(f"pre-tokenizer sequence {kinds}")


def gguf_vocab(tokenizer_json: dict[str, Any], vocab_size: int) -> GGUFVocab:
    """Tokens (padded to the model's embedding rows), their types, merges and the pre-tokenizer name."""
    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE" or (tokenizer_json.get("decoder") or {}).get("type") != "ByteLevel":
        raise LlmctlError(
            f"GGUF export supports byte-level BPE tokenizers; this one is {model.get('type')} with a "
            f"{(tokenizer_json.get('decoder') or {}).get('type')} decoder (sentencepiece style)",
            "export --format hf and convert it with llama.cpp's convert_hf_to_gguf.py",
        )
    normalizer = tokenizer_json.get("normalizer")
    # llama.cpp applies no normalizer. NFC (Qwen2's) leaves NFC text, which is nearly all text, unchanged,
    # so llama.cpp tokenizes it the same; any other normalizer would change what llama.cpp sees.
    if normalizer and normalizer.get("type") not in NO_OP_NORMALIZERS:
        raise _unknown(f"a {normalizer.get('type')} normalizer")
    pre = pre_tokenizer_name(tokenizer_json.get("pre_tokenizer"))
    by_id: dict[int, str] = {int(i): t for t, i in model["vocab"].items()}
    types: dict[int, int] = {}
    special: dict[str, int] = {}
    for added in tokenizer_json.get("added_tokens") or []:
        by_id[int(added["id"])] = added["content"]
        types[int(added["id"])] = CONTROL if added.get("special") else USER_DEFINED
        if added.get("special"):
            special[added["content"]] = int(added["id"])
    if by_id and max(by_id) >= vocab_size:
        raise LlmctlError(
            f"the tokenizer has ids up to {max(by_id)} but the model only {vocab_size} rows",
            "export with the tokenizer the model was trained with",
        )
    tokens, kinds = [], []
    for i in range(vocab_size):
        # llama.cpp needs one token per embedding row; rows past the tokenizer are padding.
        tokens.append(by_id.get(i, f"[PAD{i}]"))
        kinds.append(types.get(i, NORMAL) if i in by_id else UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    return GGUFVocab(pre=pre, tokens=tokens, types=kinds, merges=merges, special=special)
