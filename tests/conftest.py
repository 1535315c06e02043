"""Shared fixtures: a small raw text dataset and a byte-level BPE tokenizer trained on it, built once per session.

    def test_something(raw_dataset, trained_tokenizer): ...

`raw_dataset` is a dataset directory written by `data download` from local .py files (a slice of this
Python's standard library): train/validation/test parts and dataset.json. `trained_tokenizer` is a
tokenizer.json (byte-level BPE, vocab 512, chat profile specials) trained on it by `tokenizer train`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """llmctl's cache (downloads, tiktoken forms) in a folder of this test session, never ~/.cache; set in
    the environment so that commands run as subprocesses use it too."""
    os.environ["LLMCTL_CACHE"] = str(tmp_path_factory.mktemp("llmctl-cache"))


@pytest.fixture(scope="session")
def raw_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR with train/validation/test parts (text column) + dataset.json, from ~80 stdlib files."""
    from llmctl.raw.download import DownloadOptions, download_dataset
    from llmctl.raw.pystdlib import stdlib_files

    root = tmp_path_factory.mktemp("raw_dataset")
    sources = root / "py"
    sources.mkdir()
    for i, (_, path) in enumerate(stdlib_files()[::9][:80]):
        shutil.copyfile(path, sources / f"doc{i:03d}.py")  # neutral names: no split words like 'test'

    out = root / "data"
    download_dataset(str(sources), out, DownloadOptions(val_fraction=0.1, test_fraction=0.1))
    return out


@pytest.fixture(scope="session")
def trained_tokenizer(raw_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tokenizer.json: byte-level BPE, vocab 512, <|bos|> <|eos|> <|pad|> + the chat profile's markers."""
    from llmctl.tokenizer.train import train_tokenizer

    out = tmp_path_factory.mktemp("trained_tokenizer") / "tokenizer.json"
    train_tokenizer(raw_dataset, out, vocab_size=512, profile="chat")
    return out
