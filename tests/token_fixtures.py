"""Test inputs for tokenize/count/inspect, made here: stdlib text, a tiny byte-level BPE, raw parquet parts."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

UNICODE_DOCS = [
    "Caf\u00e9 cr\u00e8me br\u00fbl\u00e9e, na\u00efve fa\u00e7ade \u2014 \u00a1Hola! \u00bfQu\u00e9 tal?",
    "\u5317\u4eac\u662f\u4e2d\u56fd\u7684\u9996\u90fd\u3002\u6771\u4eac\u306f\u65e5\u672c\u306e\u9996\u90fd\u3067\u3059\u3002\ud55c\uad6d\uc5b4 \ud14c\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5 \u03ba\u03cc\u03c3\u03bc\u03b5 \u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd",
    "emoji \U0001f600\U0001f44d\U0001f3fd family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1eb\U0001f1f7 heart \u2764\ufe0f",
    "whitespace   runs\t\ttabs\r\nwindows\n\n\n\nblank lines      trailing   \n\u00a0nbsp\u3000ideographic\u2028sep\u0085nel",
    "special strings as text: <|bos|> <|eos|><|pad|> <|user|>hi<|end|><|assistant|>yo<|end|> <|system|>",
    "combining: e\u0301 a\u0308 \u0915\u094d\u0937 \u0e01\u0e33 zero\u200bwidth \ufeffbom \ufffd replacement",
    "numbers 1234567890 3.14159 -2e-10 \u0661\u0662\u0663 \u00bd \u2460\u2461 \U0001d7d8 IT'S YOU'LL we'd",
]


def stdlib_texts(limit: int | None = None, step: int = 1) -> list[str]:
    """Python standard library .py files (test folders excluded), decoded as UTF-8."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        p
        for p in root.rglob("*.py")
        if not {"test", "tests", "site-packages"} & set(p.relative_to(root).parts)
    )
    texts = [p.read_bytes().decode("utf-8", errors="replace") for p in files[::step]]
    return texts[:limit] if limit else texts


def train_tokenizer(
    path: Path,
    texts: list[str],
    vocab_size: int = 1024,
    pre_tokenizer: object = None,
    specials: list[str] = SPECIALS,
) -> Path:
    """A byte-level BPE tokenizer.json with llmctl's special tokens, as `tokenizer train` writes it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer or pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    tok.save(str(path))
    return path


def write_parquet(
    path: Path, column: str, values: list, row_group_size: int | None = None, binary: bool = False
) -> None:
    """One raw part; binary=True stores the strings' bytes unchecked (for invalid UTF-8)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    if binary:
        array = pa.array(values, type=pa.binary()).view(pa.string())
    else:
        array = pa.array(values)
    pq.write_table(pa.table({column: array}), path, row_group_size=row_group_size)


def write_dataset(
    root: Path, splits: dict[str, list[list]], column: str = "text", row_group_size: int = 16
) -> Path:
    """DIR/<split>/part-0000k.parquet (one part per list) + dataset.json, as `data download` lays it out."""
    for split, parts in splits.items():
        for k, values in enumerate(parts):
            binary = column == "text" and any(isinstance(v, bytes) for v in values)
            write_parquet(
                root / split / f"part-{k:05d}.parquet", column, values, row_group_size, binary=binary
            )
    (root / "dataset.json").write_text(json.dumps({"source": "test", "splits": list(splits)}))
    return root
