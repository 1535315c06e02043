"""`data download` of a small local corpus at the default --val-fraction 0.005: a carved split that no
document falls into still gets one (the train document of lowest carve score), while train keeps one."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from llmctl.raw.dataset import iter_batches
from llmctl.raw.download import DownloadOptions, download_dataset
from llmctl.raw.parts import carve, carve_score

DOCS = [f"def f{i}():\n    return {i}\n" for i in range(6)]


def _split(root: Path, split: str) -> list[str]:
    return [t for batch in iter_batches(root, split, "text") for t in batch]


def _corpus(path: Path, docs: list[str]) -> str:
    pq.write_table(pa.table({"text": docs}), path)
    return str(path)


def test_a_small_corpus_gets_one_validation_and_one_test_document(tmp_path: Path) -> None:
    assert all(carve(d, 0, 0.005, 0.005) == "train" for d in DOCS)  # the fractions alone carve nothing
    result = download_dataset(_corpus(tmp_path / "c.parquet", DOCS), tmp_path / "out", DownloadOptions())
    got = {s: _split(tmp_path / "out", s) for s in ("train", "validation", "test")}
    lowest = sorted(DOCS, key=lambda d: carve_score(d, 0))
    assert got["validation"] == lowest[:1] and got["test"] == lowest[1:2]
    assert sorted(got["train"]) == sorted(lowest[2:])
    splits = result.info["splits"]
    assert splits["validation"]["rows"] == 1 and "at least 1 document" in splits["validation"]["origin"]
    assert any(
        "--val-fraction 0.005" in n and "validation got the 1 train document" in n for n in result.notes
    )


def test_train_keeps_a_document_and_duplicates_stay_in_one_split(tmp_path: Path) -> None:
    two = download_dataset(_corpus(tmp_path / "two.parquet", DOCS[:2]), tmp_path / "two", DownloadOptions())
    assert [two.info["splits"][s]["rows"] for s in ("train", "validation", "test")] == [1, 1, 0]
    assert any("test is empty" in n for n in two.notes)
    low = min(DOCS, key=lambda d: carve_score(d, 0))
    docs = [low, *DOCS, low, low]  # four copies of the lowest-scoring document
    download_dataset(_corpus(tmp_path / "dup.parquet", docs), tmp_path / "dup", DownloadOptions())
    assert _split(tmp_path / "dup", "validation") == [low] * 4 and low not in _split(
        tmp_path / "dup", "train"
    )
