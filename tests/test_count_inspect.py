"""`llmctl count` and `llmctl inspect` on shards written by `llmctl tokenize`."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from token_fixtures import UNICODE_DOCS, stdlib_texts, train_tokenizer, write_dataset
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokens.shards import open_split, read_meta
from llmctl.tokens.tokenize import TokenizeOptions, tokenize

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("ci")
    texts = stdlib_texts(step=25)
    tok = train_tokenizer(base / "tok.json", texts + UNICODE_DOCS, vocab_size=800)
    raw = write_dataset(
        base / "raw", {"train": [texts[:20] + UNICODE_DOCS + [""]], "validation": [texts[20:26]]}
    )
    out = base / "tokens"
    tokenize(TokenizeOptions(data=raw, tokenizer=tok, out=out, shard_bytes=100_000))
    chat = [
        [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
        ],
    ]
    sft_raw = write_dataset(base / "sft_raw", {"train": [chat]}, column="messages")
    sft = base / "sft"
    tokenize(TokenizeOptions(data=sft_raw, tokenizer=tok, out=sft, mode="sft"))
    return {"tok": tok, "raw": raw, "out": out, "sft_raw": sft_raw, "sft": sft}


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + str(result.exception)
    return json.loads(result.stdout)


def test_count_reads_meta_and_idx(setup: dict[str, Path]) -> None:
    report = _json(["count", str(setup["out"]), "--json"])
    meta = read_meta(setup["out"])
    lengths = np.concatenate([np.diff(s.offsets) for s in open_split(setup["out"], "train")])
    train = report["splits"]["train"]
    assert train["tokens"] == meta["splits"]["train"]["tokens"] == int(lengths.sum())
    assert train["documents"] == len(lengths) == 20 + len(UNICODE_DOCS)
    assert train["empty_skipped"] == 1
    assert train["median_doc_tokens"] == float(np.median(lengths))
    assert train["max_doc_tokens"] == int(lengths.max())
    assert report["total"]["tokens"] == meta["totals"]["tokens"]
    assert report["total"]["documents"] == train["documents"] + report["splits"]["validation"]["documents"]


def test_count_table(setup: dict[str, Path]) -> None:
    result = runner.invoke(app, ["count", str(setup["out"])])
    assert result.exit_code == 0
    assert "train" in result.stdout and "validation" in result.stdout and "total" in result.stdout
    assert "median len" in result.stdout


def test_count_raw_corpus_matches_shards(setup: dict[str, Path]) -> None:
    raw = _json(
        ["count", "--data", str(setup["raw"]), "--tokenizer", str(setup["tok"]), "--num-proc", "1", "--json"]
    )
    shards = _json(["count", str(setup["out"]), "--json"])
    for split in ("train", "validation"):
        for key in ("tokens", "documents", "empty_skipped", "max_doc_tokens", "median_doc_tokens"):
            assert raw["splits"][split][key] == shards["splits"][split][key], (split, key)


def test_count_sft_reports_trained_tokens(setup: dict[str, Path]) -> None:
    report = _json(["count", str(setup["sft"]), "--json"])
    assert report["mode"] == "sft"
    assert 0 < report["total"]["trained_tokens"] < report["total"]["tokens"]
    assert "trained" in runner.invoke(app, ["count", str(setup["sft"])]).stdout


def test_count_raw_conversations(setup: dict[str, Path]) -> None:
    raw = _json(
        [
            "count",
            "--data",
            str(setup["sft_raw"]),
            "--tokenizer",
            str(setup["tok"]),
            "--mode",
            "sft",
            "--num-proc",
            "1",
            "--json",
        ]
    )
    shards = _json(["count", str(setup["sft"]), "--json"])
    for key in ("tokens", "trained_tokens", "documents"):
        assert raw["total"][key] == shards["total"][key], key


def test_count_and_inspect_stay_light(setup: dict[str, Path]) -> None:
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from llmctl.cli.app import app\n"
        "r = CliRunner().invoke(app, sys.argv[1:])\n"
        "assert r.exit_code == 0, r.output\n"
        "print(json.dumps(sorted(m for m in ('torch', 'tokenizers', 'pyarrow', 'matplotlib') if m in sys.modules)))\n"
    )

    def loaded(*args: str) -> list[str]:
        done = subprocess.run(
            [sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert loaded("count", str(setup["out"]), "--json") == []
    # inspect decodes with the tokenizer (tokenizers is allowed); never torch, pyarrow or matplotlib.
    assert loaded("inspect", str(setup["out"]), "--index", "1", "--json") in ([], ["tokenizers"])


def test_inspect_json_document(setup: dict[str, Path]) -> None:
    report = _json(["inspect", str(setup["out"]), "--index", "21", "--json"])
    (doc,) = report["documents"]
    shards = open_split(setup["out"], "train")
    flat = [s.document(i).tolist() for s in shards for i in range(s.num_docs)]
    tok = load_tokenizer(setup["tok"])
    assert doc["ids"] == flat[21]
    assert "".join(doc["pieces"]) == doc["text"] == tok.decode(flat[21])
    assert doc["tokens"] == len(flat[21]) and doc["mask"] is None
    assert report["documents_total"] == len(flat)


def test_inspect_shows_boundaries(setup: dict[str, Path]) -> None:
    result = runner.invoke(app, ["inspect", str(setup["out"]), "--index", "0", "--max-tokens", "12"])
    assert result.exit_code == 0
    assert "document" in result.stdout and "\u00a6" in result.stdout and "ids:" in result.stdout
    assert "more tokens" in result.stdout


def test_inspect_sample_is_seeded(setup: dict[str, Path]) -> None:
    a = _json(["inspect", str(setup["out"]), "--sample", "3", "--seed", "7", "--json"])
    b = _json(["inspect", str(setup["out"]), "--sample", "3", "--seed", "7", "--json"])
    assert [d["index"] for d in a["documents"]] == [d["index"] for d in b["documents"]]
    assert len(a["documents"]) == 3


def test_inspect_raw_reports_mismatches(setup: dict[str, Path], tmp_path: Path) -> None:
    ok = _json(["inspect", str(setup["out"]), "--raw", str(setup["raw"]), "--index", "3", "--json"])
    assert ok["raw_check"] == {"checked": 20 + len(UNICODE_DOCS), "mismatches": []}
    assert ok["documents"][0]["raw_matches"] is True
    # Change one raw document (the empty row before it shifts nothing: it is the last row).
    changed = tmp_path / "raw"
    shutil.copytree(setup["raw"], changed)
    import pyarrow.parquet as pq

    part = changed / "train" / "part-00000.parquet"
    table = pq.read_table(part)
    texts = table.column("text").to_pylist()
    texts[4] = texts[4] + "# edited"
    write_dataset(changed, {"train": [texts]})
    bad = _json(["inspect", str(setup["out"]), "--raw", str(changed), "--index", "4", "--json"])
    assert bad["raw_check"]["mismatches"] == [4]
    assert bad["documents"][0]["raw_matches"] is False
    human = runner.invoke(app, ["inspect", str(setup["out"]), "--raw", str(changed), "--index", "4"])
    assert "1 of" in human.stdout and "DIFFERS at character" in human.stdout


def test_inspect_sft_marks_trained_tokens(setup: dict[str, Path]) -> None:
    report = _json(["inspect", str(setup["sft"]), "--index", "1", "--raw", str(setup["sft_raw"]), "--json"])
    doc = report["documents"][0]
    tok = load_tokenizer(setup["tok"])
    trained = [i for i, m in zip(doc["ids"], doc["mask"], strict=True) if m]
    assert tok.decode(trained) == "Hello!<|end|>"
    assert doc["raw_matches"] is True and report["raw_check"]["mismatches"] == []
    human = runner.invoke(app, ["inspect", str(setup["sft"]), "--index", "1"])
    assert "\u27e6" in human.stdout and "trained tokens" in human.stdout


def test_inspect_colours_alternate_on_a_terminal(setup: dict[str, Path]) -> None:
    from llmctl.cli._tables import STYLES, render_tokens
    from llmctl.tokens.inspection import load_document, open_directory

    view = load_document(open_directory(setup["sft"]), 0)
    text = render_tokens(view, 0, plain=False)
    styles = [str(span.style) for span in text.spans]
    assert len(styles) == len(view.ids)
    assert styles[0] == STYLES["masked"][0] and styles[1] == STYLES["masked"][1]
    assert set(STYLES["trained"]) & set(styles)


def test_inspect_pages_interactively(setup: dict[str, Path]) -> None:
    result = runner.invoke(
        app, ["inspect", str(setup["out"]), "--interactive", "--max-tokens", "3"], input="n\nn\np\nj 5\nq\n"
    )
    assert result.exit_code == 0, result.output
    shown = re.findall(r"document\s+(\d+) of", result.stdout)
    assert shown == ["0", "1", "2", "1", "5"]


def test_inspect_refuses_another_tokenizer(setup: dict[str, Path], tmp_path: Path) -> None:
    other = train_tokenizer(tmp_path / "other.json", ["some other text"] * 5, vocab_size=300)
    result = runner.invoke(app, ["inspect", str(setup["out"]), "--tokenizer", str(other)])
    assert result.exit_code != 0
    assert "fingerprint" in result.output + str(result.exception)
