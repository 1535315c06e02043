"""Preference data: `data download` of local and Hub preference layouts, `tokenize --mode dpo`, count, inspect."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakehub import FakeServers
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.raw import http_download
from llmctl.raw.dataset import read_info, split_parts
from llmctl.raw.preference import hh_transcript, normalise_pair

runner = CliRunner()


def pairs_of(root: Path, split: str) -> list[dict]:
    rows: list[dict] = []
    for part in split_parts(root, split):
        rows += pq.read_table(part).to_pylist()
    return rows


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(http_download, "RETRY_WAIT_S", 0.0)
    with FakeServers() as servers:
        monkeypatch.setenv("HF_ENDPOINT", servers.endpoint)
        yield servers


def download(source: str, out: Path, *extra: str) -> dict:
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            source,
            "--out",
            str(out),
            "--cache-dir",
            str(out.parent / "cache"),
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return read_info(out)


def test_local_jsonl_strings_normalise_and_drop_bad_rows(tmp_path: Path) -> None:
    rows = [
        {"prompt": f"What is {i}+{i}?", "chosen": str(2 * i), "rejected": str(2 * i + 1)} for i in range(10)
    ]
    rows += [
        {"prompt": "Same?", "chosen": "yes", "rejected": "yes"},
        {"prompt": "Empty?", "chosen": "", "rejected": "no"},
        {"prompt": "  ", "chosen": "a", "rejected": "b"},
    ]
    src = tmp_path / "prefs.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            str(src),
            "--out",
            str(tmp_path / "raw"),
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
        ],
    )
    assert "1 identical chosen and rejected, 2 with an empty side" in result.output
    info = read_info(tmp_path / "raw")
    assert info["column"] == "preference" and info["content"] == "preference"
    assert info["source"]["kind"] == "local"  # the content type has its own key
    assert info["preference_dropped"] == {"identical": 1, "empty": 2, "unreadable": 0}
    assert info["dropped_rows"] == 3
    got = pairs_of(tmp_path / "raw", "train")
    assert len(got) == 10
    assert got[3] == {
        "prompt": [user("What is 3+3?")],
        "chosen": [assistant("6")],
        "rejected": [assistant("7")],
    }


def test_local_json_message_lists_and_parquet(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, user(f"Name {i}")],
            "chosen": [assistant(f"N{i}")],
            "rejected": [{"from": "gpt", "value": f"Nope {i}"}],
        }
        for i in range(6)
    ]
    src = tmp_path / "prefs.json"
    src.write_text(json.dumps(rows))
    download(str(src), tmp_path / "a")
    got = pairs_of(tmp_path / "a", "train")
    assert got[0]["prompt"] == [{"role": "system", "content": "Be brief."}, user("Name 0")]
    assert got[0]["rejected"] == [assistant("Nope 0")]
    table = pa.table({"prompt": [f"p{i}" for i in range(5)], "chosen": ["good"] * 5, "rejected": ["bad"] * 5})
    pq.write_table(table, tmp_path / "prefs.parquet")
    info = download(str(tmp_path / "prefs.parquet"), tmp_path / "b")
    assert info["splits"]["train"]["rows"] == 5
    assert pairs_of(tmp_path / "b", "train")[4]["chosen"] == [assistant("good")]


def test_whole_conversations_share_their_prompt_turns() -> None:
    c = [user("hi"), assistant("hello"), user("2+2?"), assistant("4")]
    r = [user("hi"), assistant("hello"), user("2+2?"), assistant("5")]
    pair = normalise_pair("2+2?", c, r)
    assert pair == {"prompt": c[:3], "chosen": [assistant("4")], "rejected": [assistant("5")]}
    assert hh_transcript("\n\nHuman: a\n\nAssistant: b") == [user("a"), assistant("b")]
    assert hh_transcript("no turns here") is None


def parquet_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


def test_named_ultrafeedback_test_prefs_becomes_validation(hub: FakeServers, tmp_path: Path) -> None:
    def row(i: int) -> dict:
        prompt = f"Question {i}?"
        return {
            "prompt": prompt,
            "prompt_id": str(i),
            "score_chosen": 8.0,
            "score_rejected": 3.0,
            "chosen": [user(prompt), assistant(f"Good answer {i}")],
            "rejected": [user(prompt), assistant(f"Bad answer {i}")],
            "messages": [user(prompt), assistant(f"Good answer {i}")],
        }

    hub.add_repo(
        "HuggingFaceH4/ultrafeedback_binarized",
        {
            "data/train_prefs-00000-of-00001.parquet": parquet_bytes([row(i) for i in range(8)]),
            "data/test_prefs-00000-of-00001.parquet": parquet_bytes([row(i) for i in range(8, 11)]),
            "data/train_sft-00000-of-00001.parquet": parquet_bytes([row(99)]),
        },
    )
    info = download("ultrafeedback-binarized", tmp_path / "uf")
    assert info["splits"]["train"]["rows"] == 8 and info["splits"]["validation"]["rows"] == 3
    assert info["source"]["kind"] == "hub" and info["content"] == "preference"
    first = pairs_of(tmp_path / "uf", "validation")[0]
    assert first == {
        "prompt": [user("Question 8?")],
        "chosen": [assistant("Good answer 8")],
        "rejected": [assistant("Bad answer 8")],
    }


def test_named_orca_and_hh_rlhf(hub: FakeServers, tmp_path: Path) -> None:
    orca = [
        {
            "system": "You are an AI assistant." if i % 2 else "",
            "question": f"Q{i}",
            "chosen": f"good {i}",
            "rejected": f"bad {i}",
        }
        for i in range(6)
    ]
    hub.add_repo("Intel/orca_dpo_pairs", {"orca_rlhf.jsonl": "\n".join(json.dumps(r) for r in orca).encode()})
    download("orca-dpo-pairs", tmp_path / "orca")
    got = {p["chosen"][0]["content"]: p for p in pairs_of(tmp_path / "orca", "train")}
    assert got["good 1"]["prompt"] == [{"role": "system", "content": "You are an AI assistant."}, user("Q1")]
    assert got["good 0"]["prompt"] == [user("Q0")]

    def hh(i: int, reply: str) -> str:
        return f"\n\nHuman: Hello {i}\n\nAssistant: Hi.\n\nHuman: Help me {i}\n\nAssistant: {reply}"

    lines = [json.dumps({"chosen": hh(i, "Sure, here is how."), "rejected": hh(i, "No.")}) for i in range(5)]
    hub.add_repo(
        "Anthropic/hh-rlhf",
        {
            "helpful-base/train.jsonl.gz": gzip.compress("\n".join(lines).encode()),
            "helpful-base/test.jsonl.gz": gzip.compress("\n".join(lines[:2]).encode()),
            "harmless-base/train.jsonl.gz": gzip.compress("\n".join(lines[:3]).encode()),
        },
    )
    info = download("hh-rlhf", tmp_path / "hh")
    assert info["splits"]["train"]["rows"] == 8 and info["splits"]["validation"]["rows"] == 2
    pair = pairs_of(tmp_path / "hh", "train")[0]
    assert pair["prompt"] == [user("Hello 0"), assistant("Hi."), user("Help me 0")]
    assert pair["chosen"] == [assistant("Sure, here is how.")] and pair["rejected"] == [assistant("No.")]


def test_a_preference_file_without_rejected_names_the_missing_field(tmp_path: Path) -> None:
    src = tmp_path / "half.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"a{i}"}) + "\n" for i in range(3)))
    result = runner.invoke(app, ["data", "download", str(src), "--out", str(tmp_path / "raw")])
    assert result.exit_code == 2
    assert "no 'rejected' column, only 'chosen'" in result.stderr
    assert "no text column" not in result.stderr and "Traceback" not in result.output
