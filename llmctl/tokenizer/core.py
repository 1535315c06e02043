"""One Tokenizer interface over Hugging Face `tokenizers` (tokenizer.json) and sentencepiece (.model).

Every command loads tokenizers through `load_tokenizer`, including pretrained ones a user brings
(GPT-2's or Llama's tokenizer.json, a Llama .model). `encode` treats its input as ordinary text:
special-token strings that appear in raw text are encoded as text, never as special tokens; special
ids are inserted by id (see llmctl/tokenizer/chat.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.files import file_sha256
from llmctl.tokenizer.chat import BOS, EOS, PAD

# Names pretrained tokenizers use for the same roles, tried in order after ours.
_ALIASES = {
    BOS: [BOS, "<s>", "<|begin_of_text|>", "<|endoftext|>", "<bos>"],
    EOS: [EOS, "</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<eos>"],
    PAD: [PAD, "<pad>", "<|finetune_right_pad_id|>"],
}


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 of the tokenizer file: the identity recorded in shards, checkpoints and exports."""
    return file_sha256(path)


class Tokenizer:
    """A loaded tokenizer: encode, encode_batch, decode, vocab size, special ids, fingerprint."""

    kind: str
    path: Path
    fingerprint: str

    def encode(self, text: str) -> list[int]:
        """Ids of ordinary text: no BOS/EOS added, special-token strings not recognised."""
        raise NotImplementedError

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """encode() over a batch, using the backend's threads where it has them."""
        return [self.encode(t) for t in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ids, special tokens included as their strings."""
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included (the model's minimum embedding rows)."""
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (special or not), None when absent."""
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str:
        """Token string of an id (byte-level tokens show their mapped characters)."""
        raise NotImplementedError

    def _first(self, names: list[str]) -> int | None:
        for name in names:
            tid = self.token_to_id(name)
            if tid is not None:
                return tid
        return None

    @property
    def bos_id(self) -> int | None:
        """Beginning-of-document id, if the tokenizer has one."""
        return self._first(_ALIASES[BOS])

    @property
    def eos_id(self) -> int | None:
        """End-of-document id, if the tokenizer has one."""
        return self._first(_ALIASES[EOS])

    @property
    def pad_id(self) -> int | None:
        """Padding id, if the tokenizer has one."""
        return self._first(_ALIASES[PAD])

    def special_ids(self) -> dict[str, int]:
        """Every special token the tokenizer declares, string -> id."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts recorded in meta.json and checkpoints."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "fingerprint": self.fingerprint,
            "vocab_size": self.vocab_size,
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "pad_id": self.pad_id,
            "special_ids": self.special_ids(),
        }


class HFTokenizer(Tokenizer):
    """A Hugging Face `tokenizers` tokenizer.json."""

    kind = "hf"

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer as _HF

        self.path = path
        self.fingerprint = file_fingerprint(path)
        try:
            self._tok = _HF.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a bad file
            raise LlmctlError(
                f"cannot load tokenizer {path}: {exc}",
                "pass a tokenizer.json written by `llmctl tokenizer train` or transformers",
            ) from exc
        # Special-token strings in raw text are encoded as ordinary text, never as specials.
        self._tok.encode_special_tokens = True
        self._specials = {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}

    @property
    def backend(self) -> Any:
        """The underlying tokenizers.Tokenizer."""
        return self._tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str:
        return self._tok.id_to_token(int(token_id)) or ""

    def special_ids(self) -> dict[str, int]:
        return dict(self._specials)


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece .model (BPE or unigram)."""

    kind = "sentencepiece"

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm

        self.path = path
        self.fingerprint = file_fingerprint(path)
        try:
            self._sp = spm.SentencePieceProcessor(model_file=str(path))
        except Exception as exc:
            raise LlmctlError(
                f"cannot load sentencepiece model {path}: {exc}", "pass a .model written by sentencepiece"
            ) from exc
        self._pieces = {self._sp.id_to_piece(i): i for i in range(self._sp.get_piece_size())}

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=0)

    def decode(self, ids: Sequence[int]) -> str:
        # sentencepiece drops control symbols when decoding; render them by piece so specials stay visible.
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            if self._sp.is_control(int(i)):
                if run:
                    out.append(self._sp.decode(run))
                    run = []
                out.append(self._sp.id_to_piece(int(i)))
            else:
                run.append(int(i))
        if run:
            out.append(self._sp.decode(run))
        return "".join(out)

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def token_to_id(self, token: str) -> int | None:
        return self._pieces.get(token)

    def id_to_token(self, token_id: int) -> str:
        return self._sp.id_to_piece(int(token_id))

    def special_ids(self) -> dict[str, int]:
        return {
            self._sp.id_to_piece(i): i
            for i in range(self._sp.get_piece_size())
            if self._sp.is_control(i) or self._sp.is_unknown(i)
        }


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load tokenizer.json (HF tokenizers) or a sentencepiece .model by its file contents."""
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.json", "tokenizer.model"):
            if (p / name).is_file():
                p = p / name
                break
    if not p.is_file():
        raise LlmctlError(
            f"tokenizer not found: {path}",
            "train one with `llmctl tokenizer train` or pass a tokenizer.json / .model path",
        )
    with open(p, "rb") as fh:
        head = fh.read(64).lstrip()
    if head.startswith(b"{"):
        return HFTokenizer(p)
    return SentencePieceTokenizer(p)
