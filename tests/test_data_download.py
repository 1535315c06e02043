"""`llmctl data download` / `data sources`: Hub (through HF_ENDPOINT), URLs, local files, pystdlib.

No internet: tests/fakehub.py serves the Hub's endpoints and plain files on 127.0.0.1.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from fakehub import FakeServers
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.raw import http_download
from llmctl.raw.dataset import iter_batches, list_splits, read_info
from llmctl.raw.download import DownloadOptions, download_dataset
from llmctl.raw.normalize import WikitextArticles, alpaca_messages
from llmctl.raw.parts import carve

runner = CliRunner()
DOCS = [f"Document number {i}. " + "Some words here and there. " * (i % 7 + 1) for i in range(400)]


def parquet_bytes(table: dict[str, list]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(table), buf)
    return buf.getvalue()


def texts(root: Path, split: str) -> list[str]:
    return [t for batch in iter_batches(root, split, "text") for t in batch]


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(http_download, "RETRY_WAIT_S", 0.0)
    with FakeServers() as servers:
        monkeypatch.setenv("HF_ENDPOINT", servers.endpoint)
        yield servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- sources and pystdlib -------------------------------------------------------------------------


def test_sources_lists_named_sources_with_their_origin() -> None:
    result = runner.invoke(app, ["data", "sources", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)["sources"]}
    for name in (
        "pystdlib",
        "tinystories",
        "wikitext-2",
        "wikitext-103",
        "alpaca-cleaned",
        "slimpajama-6b",
        "fineweb-edu-10bt",
    ):
        assert name in rows
    assert rows["tinystories"]["repo"] == "roneneldan/TinyStories" and rows["tinystories"]["files"]["train"]
    assert rows["alpaca-cleaned"]["kind"] == "chat" and rows["alpaca-cleaned"]["carved"] == [
        "validation",
        "test",
    ]
    table = runner.invoke(app, ["data", "sources"])
    assert "fineweb-edu-10bt" in table.stdout and "licence" in table.stdout


def test_pystdlib_offline_deterministic_and_skipped_on_rerun(tmp_path: Path) -> None:
    result = runner.invoke(app, ["data", "download", "pystdlib", "--out", str(tmp_path / "a"), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert not info["skipped"] and info["source"]["kind"] == "pystdlib"
    assert list_splits(tmp_path / "a") == ["train", "validation", "test"]
    splits = {s: set(texts(tmp_path / "a", s)) for s in ("train", "validation", "test")}
    assert all(splits.values())
    assert not (
        splits["train"] & splits["validation"]
        or splits["train"] & splits["test"]
        or splits["validation"] & splits["test"]
    )
    assert [info["splits"][s]["rows"] for s in splits] == [len(texts(tmp_path / "a", s)) for s in splits]
    assert any("class " in t for t in splits["train"])
    assert all(len(f["sha256"]) == 64 and f["size"] >= 0 for f in info["files"]) and len(info["files"]) > 500

    again = runner.invoke(app, ["data", "download", "pystdlib", "--out", str(tmp_path / "a")])
    assert again.exit_code == 0 and "up to date" in again.stdout
    runner.invoke(app, ["data", "download", "pystdlib", "--out", str(tmp_path / "b")])
    parts = lambda d: [p["sha256"] for s in read_info(d)["splits"].values() for p in s["parts"]]  # noqa: E731
    assert parts(tmp_path / "a") == parts(tmp_path / "b")


def test_a_damaged_part_is_rebuilt(tmp_path: Path) -> None:
    download_dataset("pystdlib", tmp_path, DownloadOptions(max_rows=50))
    part = next((tmp_path / "train").glob("part-*.parquet"))
    part.write_bytes(part.read_bytes()[:-10])
    result = download_dataset("pystdlib", tmp_path, DownloadOptions(max_rows=50))
    assert not result.skipped
    assert len(texts(tmp_path, "train")) == result.info["splits"]["train"]["rows"]


# --- the Hub, through HF_ENDPOINT ------------------------------------------------------------------


def add_tiny_repo(hub: FakeServers) -> str:
    return hub.add_repo(
        "owner/tiny",
        {
            "data/train-00000-of-00001.parquet": parquet_bytes({"text": DOCS, "id": list(range(len(DOCS)))}),
            "data/validation-00000-of-00001.parquet": parquet_bytes(
                {"text": ["held out one", "held out two"]}
            ),
            "README.md": b"# tiny\n",
            "TinyStories-train.txt": b"the same rows again, as text",
        },
        lfs={"data/train-00000-of-00001.parquet"},
    )


def test_hub_dataset_download_records_commit_and_checksums(hub: FakeServers, tmp_path: Path) -> None:
    commit = add_tiny_repo(hub)
    out = tmp_path / "out"
    args = [
        "data",
        "download",
        "hf:owner/tiny",
        "--out",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["source"]["resolved_revision"] == commit and info["source"]["repo"] == "owner/tiny"
    names = [f["name"] for f in info["files"]]
    assert names == [
        "data/train-00000-of-00001.parquet",
        "data/validation-00000-of-00001.parquet",
    ]  # parquet only
    repo = hub.repos["owner/tiny"]
    assert info["files"][0]["sha256"] == hashlib.sha256(repo.files[names[0]]).hexdigest()
    assert texts(out, "validation") == ["held out one", "held out two"]
    assert set(texts(out, "train")) | set(texts(out, "test")) == set(DOCS)
    assert info["splits"]["test"]["origin"].startswith("carved")
    assert any("/api/datasets/owner/tiny/revision/main" in p for _, p, _ in hub.requests)

    hub.requests.clear()
    again = runner.invoke(app, args)
    assert json.loads(again.stdout)["skipped"] and not hub.requests  # verified locally, no network


def test_named_source_alpaca_becomes_messages(hub: FakeServers, tmp_path: Path) -> None:
    rows = [
        {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Empty answer.", "input": "", "output": ""},
    ] * 20
    hub.add_repo("yahma/alpaca-cleaned", {"alpaca_data_cleaned.json": json.dumps(rows).encode()})
    out = tmp_path / "alpaca"
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            "alpaca-cleaned",
            "--out",
            str(out),
            "--cache-dir",
            str(tmp_path / "c"),
            "--val-fraction",
            "0.3",
            "--test-fraction",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    info = read_info(out)
    assert info["column"] == "messages" and info["dropped_rows"] == 20
    assert list_splits(out) == ["train", "validation"]
    messages = [m for s in ("train", "validation") for b in iter_batches(out, s, "messages") for m in b]
    assert len(messages) == 40
    assert [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ] in messages
    assert [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}] in messages


def test_named_wikitext_joins_lines_into_articles(hub: FakeServers, tmp_path: Path) -> None:
    lines = [
        " \n",
        " = First = \n",
        " \n",
        " Body one . \n",
        " = = Section = = \n",
        " More . \n",
        " = Second = \n",
        " Two . \n",
    ]
    split_file = lambda rows: parquet_bytes({"text": rows})  # noqa: E731
    commit = hub.add_repo(
        "Salesforce/wikitext",
        {
            "wikitext-2-raw-v1/train-00000-of-00001.parquet": split_file(lines),
            "wikitext-2-raw-v1/validation-00000-of-00001.parquet": split_file([" = Val = \n", " v . \n"]),
            "wikitext-2-raw-v1/test-00000-of-00001.parquet": split_file([" = Test = \n", " t . \n"]),
            "wikitext-103-raw-v1/train-00000-of-00002.parquet": split_file([" = Big = \n"]),
        },
    )
    result = download_dataset("wikitext-2", tmp_path / "wt", DownloadOptions(cache_dir=str(tmp_path / "c")))
    assert (
        result.info["source"]["resolved_revision"] == commit
        and result.info["source"]["licence"] == "CC-BY-SA-3.0"
    )
    assert texts(tmp_path / "wt", "train") == [
        " = First = \n \n Body one . \n = = Section = = \n More . ",
        " = Second = \n Two . ",
    ]
    assert texts(tmp_path / "wt", "test") == [" = Test = \n t . "]
    assert all(s["origin"] == "source" for s in result.info["splits"].values())


def test_hub_transfer_cut_midway_resumes_with_a_range_request(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # hub retries resume from whole chunks
    add_tiny_repo(hub)
    data = hub.repos["owner/tiny"].files["data/train-00000-of-00001.parquet"]
    blob = f"/blobs/{hashlib.sha256(data).hexdigest()}"
    hub.drop(blob, after_bytes=3000)
    result = download_dataset(
        "hf:owner/tiny", tmp_path / "out", DownloadOptions(cache_dir=str(tmp_path / "c"))
    )
    assert any(r.startswith("bytes=") and r != "bytes=0-" for r in hub.ranges(blob))
    assert result.info["files"][0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_hub_checksum_failure_names_the_file_and_clears_the_cache(hub: FakeServers, tmp_path: Path) -> None:
    add_tiny_repo(hub)
    data = hub.repos["owner/tiny"].files["data/train-00000-of-00001.parquet"]
    sha = hashlib.sha256(data).hexdigest()
    hub.cdn_override[sha] = bytes(len(data))  # right size, wrong bytes
    args = [
        "data",
        "download",
        "hf:owner/tiny",
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "checksum mismatch for data/train-00000-of-00001.parquet" in result.stderr
    assert not (tmp_path / "o" / "dataset.json").exists() and not list(
        (tmp_path / "o").rglob("part-*.parquet")
    )
    del hub.cdn_override[sha]
    assert runner.invoke(app, args).exit_code == 0  # the corrupt copy was not kept


def test_offline_uses_the_hub_cache(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_tiny_repo(hub)
    cache = str(tmp_path / "c")
    download_dataset("hf:owner/tiny", tmp_path / "a", DownloadOptions(cache_dir=cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    result = download_dataset("hf:owner/tiny", tmp_path / "b", DownloadOptions(cache_dir=cache))
    assert result.info["source"]["offline"] and texts(tmp_path / "b", "validation") == texts(
        tmp_path / "a", "validation"
    )


def test_hub_errors_unreachable_unknown_repo_unknown_source(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = runner.invoke(
        app,
        ["data", "download", "hf:owner/missing", "--out", str(tmp_path / "m"), "--cache-dir", str(tmp_path)],
    )
    assert missing.exit_code == 2 and "dataset owner/missing not found" in missing.stderr

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    down = runner.invoke(
        app, ["data", "download", "hf:owner/tiny", "--out", str(tmp_path / "d"), "--cache-dir", str(tmp_path)]
    )
    assert down.exit_code == 1
    assert (
        "cannot reach the Hugging Face Hub" in down.stderr
        and "HF_ENDPOINT" in down.stderr
        and "pystdlib" in down.stderr
    )

    unknown = runner.invoke(app, ["data", "download", "tinystorie", "--out", str(tmp_path / "u")])
    assert unknown.exit_code == 2
    assert "unknown source 'tinystorie'" in unknown.stderr and "did you mean 'tinystories'" in unknown.stderr
    assert "wikitext-103" in unknown.stderr


def test_hub_subsets_must_be_chosen(hub: FakeServers, tmp_path: Path) -> None:
    hub.add_repo(
        "org/wiki",
        {
            "small/train-0.parquet": parquet_bytes(
                {"text": [" = A = \n", " line a \n", " = B = \n", " line b \n"]}
            ),
            "small/test-0.parquet": parquet_bytes({"text": ["t"]}),
            "large/train-0.parquet": parquet_bytes({"text": ["big"]}),
        },
    )
    opts = DownloadOptions(cache_dir=str(tmp_path / "c"))
    with pytest.raises(LlmctlError, match="several subsets: large, small"):
        download_dataset("hf:org/wiki", tmp_path / "x", opts)
    result = download_dataset("hf:org/wiki@main:small", tmp_path / "y", opts)
    assert result.info["source"]["subset"] == "small" and texts(tmp_path / "y", "test") == ["t"]


# --- plain URLs --------------------------------------------------------------------------------------


def test_url_download_resumes_after_an_interrupted_run(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode())
    hub.files["corpus.jsonl.gz"] = body
    monkeypatch.setattr(http_download, "RETRIES", 0)
    hub.drop("/files/corpus.jsonl.gz", after_bytes=len(body) // 2)
    args = [
        "data",
        "download",
        hub.url("corpus.jsonl.gz"),
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    first = runner.invoke(app, args)
    assert first.exit_code == 1 and "interrupted after" in first.stderr and "again" in first.stderr
    assert not list((tmp_path / "o").rglob("*.parquet")) and not (tmp_path / "o" / "dataset.json").exists()
    assert [p.name for p in (tmp_path / "c" / "downloads").glob("*.partial")]

    second = runner.invoke(app, [*args, "--json"])
    assert second.exit_code == 0, second.output
    assert hub.ranges("corpus.jsonl.gz")[-1] == f"bytes={len(body) // 2}-"
    info = json.loads(second.stdout)
    assert info["files"][0]["sha256"] == hashlib.sha256(body).hexdigest()
    assert sorted(
        texts(tmp_path / "o", "train") + texts(tmp_path / "o", "validation") + texts(tmp_path / "o", "test")
    ) == sorted(DOCS)


def test_url_checksum_mismatch_and_http_errors(hub: FakeServers, tmp_path: Path) -> None:
    hub.files["a.txt"] = b"hello world\n"
    wrong = runner.invoke(
        app,
        [
            "data",
            "download",
            hub.url("a.txt"),
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--sha256",
            "0" * 64,
        ],
    )
    assert wrong.exit_code == 1 and "checksum mismatch for a.txt" in wrong.stderr
    assert not list((tmp_path / "c" / "downloads").iterdir())
    right = hashlib.sha256(b"hello world\n").hexdigest()
    ok = runner.invoke(
        app,
        [
            "data",
            "download",
            hub.url("a.txt"),
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "c"),
            "--sha256",
            right,
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
        ],
    )
    assert ok.exit_code == 0, ok.output and texts(tmp_path / "o", "train") == ["hello world\n"]
    gone = runner.invoke(
        app,
        [
            "data",
            "download",
            hub.url("nope.txt"),
            "--out",
            str(tmp_path / "n"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert gone.exit_code == 2 and "HTTP 404" in gone.stderr


# --- local files: formats, errors, splits ------------------------------------------------------------


def write_format(root: Path, kind: str) -> tuple[str, list[str]]:
    docs = ["first document", "second document", "third one"]
    lines = "".join(json.dumps({"text": d, "n": 1}) + "\n" for d in docs)
    if kind == "parquet":
        (root / "x.parquet").write_bytes(parquet_bytes({"text": docs}))
    elif kind == "jsonl":
        (root / "x.jsonl").write_text(lines)
    elif kind == "jsonl.gz":
        (root / "x.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    elif kind == "jsonl.zst":
        (root / "x.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    elif kind == "json":
        (root / "x.json").write_text(json.dumps([{"text": d} for d in docs]))
    elif kind == "json-lines":
        (root / "x.json").write_text(lines)
    elif kind == "json-wrapped":
        (root / "x.json").write_text(json.dumps({"version": 1, "data": [{"text": d} for d in docs]}))
    elif kind == "txt":
        for i, d in enumerate(docs):
            (root / f"x{i}.txt").write_text(d)
    elif kind == "txt.zst":
        (root / "x.txt.zst").write_bytes(zstandard.ZstdCompressor().compress("\n\n".join(docs).encode()))
    return kind, docs


@pytest.mark.parametrize(
    "kind",
    ["parquet", "jsonl", "jsonl.gz", "jsonl.zst", "json", "json-lines", "json-wrapped", "txt", "txt.zst"],
)
def test_each_input_format(tmp_path: Path, kind: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _, docs = write_format(src, kind)
    args = [
        "data",
        "download",
        str(src),
        "--out",
        str(tmp_path / "o"),
        "--val-fraction",
        "0",
        "--test-fraction",
        "0",
    ]
    if kind == "txt.zst":
        args += ["--txt-delimiter", "\\n\\n"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert texts(tmp_path / "o", "train") == docs


def test_local_glob_infers_splits_from_file_names(tmp_path: Path) -> None:
    (tmp_path / "test_area").mkdir()  # split words above the glob's folder do not count
    for split in ("train", "valid", "test"):
        (tmp_path / "test_area" / f"{split}.jsonl").write_text(json.dumps({"text": f"{split} text"}) + "\n")
    result = download_dataset(str(tmp_path / "test_area" / "*.jsonl"), tmp_path / "o")
    assert {s: texts(tmp_path / "o", s) for s in list_splits(tmp_path / "o")} == {
        "train": ["train text"],
        "validation": ["valid text"],
        "test": ["test text"],
    }
    assert all(v["origin"] == "source" for v in result.info["splits"].values())


def test_corrupt_and_truncated_files_are_named(tmp_path: Path) -> None:
    body = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode())
    (tmp_path / "bad.jsonl.gz").write_bytes(body[: len(body) // 2])
    with pytest.raises(LlmctlRuntimeError, match="bad.jsonl.gz is corrupt or truncated"):
        download_dataset(str(tmp_path / "bad.jsonl.gz"), tmp_path / "o1")
    (tmp_path / "bad.parquet").write_bytes(parquet_bytes({"text": DOCS})[:-100])
    with pytest.raises(LlmctlRuntimeError, match="bad.parquet is corrupt or truncated"):
        download_dataset(str(tmp_path / "bad.parquet"), tmp_path / "o2")
    (tmp_path / "cut.jsonl").write_text('{"text": "a"}\n{"text": "b')
    with pytest.raises(LlmctlRuntimeError, match="cut.jsonl: line 2 is not valid JSON"):
        download_dataset(str(tmp_path / "cut.jsonl"), tmp_path / "o3")
    assert not list(tmp_path.rglob("part-*.parquet"))


def test_missing_text_column_lists_columns_and_text_column_picks_one(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(
        "".join(json.dumps({"body_md": d, "url": "u"}) + "\n" for d in DOCS[:5])
    )
    result = runner.invoke(app, ["data", "download", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert (
        "no text column (columns found: body_md, url)" in result.stderr and "--text-column" in result.stderr
    )
    ok = runner.invoke(
        app,
        [
            "data",
            "download",
            str(tmp_path / "d.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--text-column",
            "body_md",
            "--test-fraction",
            "0",
            "--val-fraction",
            "0",
        ],
    )
    assert ok.exit_code == 0 and texts(tmp_path / "o", "train") == DOCS[:5]


def test_empty_result_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "e.jsonl").write_text(json.dumps({"text": "   "}) + "\n")
    result = runner.invoke(app, ["data", "download", str(tmp_path / "e.jsonl"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no documents came out of" in result.stderr
    assert not (tmp_path / "o" / "dataset.json").exists()


def test_split_carving_is_seeded_disjoint_and_limited(tmp_path: Path) -> None:
    src = tmp_path / "c.parquet"
    src.write_bytes(parquet_bytes({"text": DOCS}))
    opts = DownloadOptions(val_fraction=0.2, test_fraction=0.1)
    download_dataset(str(src), tmp_path / "a", opts)
    download_dataset(str(src), tmp_path / "b", opts)
    download_dataset(str(src), tmp_path / "s", DownloadOptions(val_fraction=0.2, test_fraction=0.1, seed=1))
    a = {s: texts(tmp_path / "a", s) for s in ("train", "validation", "test")}
    assert a == {s: texts(tmp_path / "b", s) for s in a}
    assert a["validation"] != texts(tmp_path / "s", "validation")
    assert sorted(a["train"] + a["validation"] + a["test"]) == sorted(DOCS)
    assert 40 < len(a["validation"]) < 120 and 15 < len(a["test"]) < 70
    assert all(carve(d, 0, 0.2, 0.1) == "validation" for d in a["validation"])

    only = download_dataset(
        str(src), tmp_path / "v", DownloadOptions(val_fraction=0.2, test_fraction=0.1, splits=("validation",))
    )
    assert (
        list_splits(tmp_path / "v") == ["validation"]
        and texts(tmp_path / "v", "validation") == a["validation"]
    )
    assert list(only.info["splits"]) == ["validation"]

    download_dataset(str(src), tmp_path / "r", DownloadOptions(max_rows=100, val_fraction=0, test_fraction=0))
    assert texts(tmp_path / "r", "train") == DOCS[:100]
    download_dataset(
        str(src), tmp_path / "m", DownloadOptions(max_bytes=2000, val_fraction=0, test_fraction=0)
    )
    kept = texts(tmp_path / "m", "train")
    assert kept == DOCS[: len(kept)] and sum(len(t) for t in kept) <= 2000 < sum(
        len(t) for t in DOCS[: len(kept) + 1]
    )

    with pytest.raises(LlmctlError, match="split dev is not available"):
        download_dataset(str(src), tmp_path / "x", DownloadOptions(splits=("dev",)))


def test_interrupted_normalization_leaves_no_complete_looking_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.raw import parts

    monkeypatch.setattr(parts, "ROW_GROUP_ROWS", 10)
    monkeypatch.setattr(parts, "PART_ROWS", 50)
    src = tmp_path / "c.parquet"
    src.write_bytes(parquet_bytes({"text": DOCS}))
    download_dataset(str(src), tmp_path / "o", DownloadOptions(val_fraction=0, test_fraction=0, max_rows=60))
    assert len(list((tmp_path / "o" / "train").glob("part-*.parquet"))) == 2  # parts roll over at PART_ROWS

    calls = {"n": 0}
    real_add = parts.SplitWriter.add

    def failing_add(self, value, nbytes):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] == 120:
            raise KeyboardInterrupt
        real_add(self, value, nbytes)

    monkeypatch.setattr(parts.SplitWriter, "add", failing_add)
    with pytest.raises(KeyboardInterrupt):
        download_dataset(
            str(src), tmp_path / "o", DownloadOptions(val_fraction=0, test_fraction=0, force=True)
        )
    assert not (tmp_path / "o" / ".llmctl-incomplete").exists()
    # The earlier complete dataset is untouched: the interrupted run never published anything.
    assert download_dataset(
        str(src), tmp_path / "o", DownloadOptions(val_fraction=0, test_fraction=0, max_rows=60)
    ).skipped


def test_row_conversions() -> None:
    assert alpaca_messages("Translate.", "bonjour", "hello") == [
        {"role": "user", "content": "Translate.\n\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert alpaca_messages("Hi", None, "") is None
    joiner = WikitextArticles()
    out = joiner.feed(
        [" \n", " = Alpha = \n", " \n", " a text \n", " = = Part = = \n", " more \n", " = Beta = \n", " b \n"]
    )
    out += joiner.flush()
    assert out == [" = Alpha = \n \n a text \n = = Part = = \n more ", " = Beta = \n b "]


def test_rows_over_max_row_bytes_are_skipped_and_counted_in_every_format(tmp_path: Path) -> None:
    small, big = DOCS[:6], "x" * 300
    opts = DownloadOptions(val_fraction=0, test_fraction=0, max_row_bytes=200)
    # JSON lines: the long line is read past, and a bad line after it is still named by its number.
    lines = (
        [json.dumps({"text": d}) for d in small[:3]]
        + [json.dumps({"text": big})]
        + [json.dumps({"text": d}) for d in small[3:]]
    )
    (tmp_path / "a.jsonl").write_text("\n".join(lines) + "\n")
    info = download_dataset(str(tmp_path / "a.jsonl"), tmp_path / "o1", opts).info
    assert texts(tmp_path / "o1", "train") == small
    assert info["oversized_rows"] == 1 and info["files"][0]["oversized_rows"] == 1
    assert info["max_row_bytes"] == 200
    (tmp_path / "b.jsonl").write_text("\n".join(lines) + "\n{bad\n")
    with pytest.raises(LlmctlRuntimeError, match="line 8 is not valid JSON"):
        download_dataset(str(tmp_path / "b.jsonl"), tmp_path / "o2", opts)
    # Plain text split on a delimiter, an oversized document spanning read chunks; parquet rows.
    (tmp_path / "c.txt").write_text("\n===\n".join([small[0], "y" * 3_000_000, small[1]]))
    txt = DownloadOptions(val_fraction=0, test_fraction=0, max_row_bytes=200, txt_delimiter="\n===\n")
    info = download_dataset(str(tmp_path / "c.txt"), tmp_path / "o3", txt).info
    assert texts(tmp_path / "o3", "train") == small[:2] and info["oversized_rows"] == 1
    (tmp_path / "d.parquet").write_bytes(parquet_bytes({"text": [small[0], big, small[1]]}))
    info = download_dataset(str(tmp_path / "d.parquet"), tmp_path / "o4", opts).info
    assert texts(tmp_path / "o4", "train") == small[:2] and info["oversized_rows"] == 1


def test_a_50_mb_row_is_skipped_without_being_held(tmp_path: Path) -> None:
    from peak_memory import run_llmctl_measured

    src = tmp_path / "big.jsonl"
    with src.open("w") as fh:
        for d in DOCS[:5]:
            fh.write(json.dumps({"text": d}) + "\n")
        fh.write('{"text": "' + "z" * 50_000_000 + '"}\n')
        for d in DOCS[5:10]:
            fh.write(json.dumps({"text": d}) + "\n")
    args = ["data", "download", str(src), "--out", str(tmp_path / "raw"), "--max-row-bytes", "16M"]
    code, stderr, peak_mib = run_llmctl_measured([*args, "--val-fraction", "0", "--test-fraction", "0"])
    assert code == 0, stderr
    assert "1 row(s) over --max-row-bytes 16,000,000 were skipped" in stderr
    info = read_info(tmp_path / "raw")
    assert info["oversized_rows"] == 1 and texts(tmp_path / "raw", "train") == DOCS[:10]
    # Now about 120 MiB, the command's own; read whole as before, 410 MiB (the line, its parsed string,
    # the batch and the parquet writer's copies).
    assert peak_mib < 200, peak_mib
