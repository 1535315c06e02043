"""`llmctl tokenize`: round trip, byte-identical output for any --num-proc, resume, SFT mask, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from token_fixtures import SPECIALS, UNICODE_DOCS, stdlib_texts, train_tokenizer, write_dataset, write_parquet
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.errors import LlmctlError
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokens.shards import ShardWriter, dtype_for_vocab, open_split, read_meta
from llmctl.tokens.tokenize import TokenizeOptions, merge, tokenize

ROOT = Path(__file__).resolve().parents[1]
INVALID = b"invalid \xff\xfe utf-8 \xc3("


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return stdlib_texts(step=12)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    return train_tokenizer(
        tmp_path_factory.mktemp("tok") / "tokenizer.json", texts + UNICODE_DOCS, vocab_size=1024
    )


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> Path:
    train = texts[:40] + UNICODE_DOCS + ["", INVALID, "x"]
    return write_dataset(
        tmp_path_factory.mktemp("raw"),
        {"train": [train[:25], train[25:]], "validation": [texts[40:50] + [""]]},
    )


def _opts(raw: Path, tok: Path, out: Path, **kw: object) -> TokenizeOptions:
    return TokenizeOptions(data=raw, tokenizer=tok, out=out, shard_bytes=kw.pop("shard_bytes", 150_000), **kw)  # type: ignore[arg-type]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _raw_texts(raw: Path, split: str) -> list[str]:
    import pyarrow.parquet as pq

    rows: list[str] = []
    for part in sorted((raw / split).glob("part-*.parquet")):
        for value in pq.read_table(part).column("text").cast("binary").to_pylist():
            text = value.decode("utf-8", errors="replace")
            if text:
                rows.append(text)
    return rows


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, raw: Path, tok_path: Path) -> Path:
    out = tmp_path_factory.mktemp("single") / "tokens"
    tokenize(_opts(raw, tok_path, out, num_proc=1))
    return out


def test_round_trip_every_document(single: Path, raw: Path, tok_path: Path) -> None:
    tok = load_tokenizer(tok_path)
    meta = read_meta(single)
    assert meta["format"] == "llmctl-tokens" and meta["dtype"] == "uint16" and meta["mode"] == "pretrain"
    assert meta["separator"]["policy"] == "eos" and meta["separator"]["token_id"] == tok.eos_id
    assert meta["tokenizer"]["fingerprint"] == tok.fingerprint and meta["vocab_size"] == tok.vocab_size
    for split in ("train", "validation"):
        shards = open_split(single, split)
        docs = [s.document(i) for s in shards for i in range(s.num_docs)]
        expected = _raw_texts(raw, split)
        assert len(docs) == len(expected) == meta["splits"][split]["documents"]
        for ids, text in zip(docs, expected, strict=True):
            assert ids[-1] == tok.eos_id and tok.eos_id not in ids[:-1]
            assert tok.decode(ids[:-1].tolist()) == text
    assert len(open_split(single, "train")) > 2  # several shards, so the tests below exercise shard logic


def test_counts_empty_and_invalid_utf8(single: Path) -> None:
    meta = read_meta(single)
    assert meta["splits"]["train"]["empty_skipped"] == 1
    assert meta["splits"]["train"]["invalid_utf8_replaced"] == 1
    assert meta["splits"]["validation"]["empty_skipped"] == 1
    total = sum(s["tokens"] for s in meta["splits"]["train"]["shards"])
    assert (
        total
        == meta["splits"]["train"]["tokens"]
        == meta["totals"]["tokens"] - meta["splits"]["validation"]["tokens"]
    )


def test_two_processes_write_the_same_bytes(
    single: Path, raw: Path, tok_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMCTL_TOKENIZE_IN_PROCESS_BYTES", "0")  # workers, however small the input
    out = tmp_path / "tokens"
    result = tokenize(_opts(raw, tok_path, out, num_proc=2))
    assert result.encoder == "tiktoken" and result.processes == 2
    assert _files(out) == _files(single)


def test_a_small_input_is_encoded_in_process_to_the_same_bytes(
    single: Path, raw: Path, tok_path: Path, tmp_path: Path
) -> None:
    import multiprocessing.forkserver as forkserver

    from llmctl.tokens import worker_start

    assert worker_start.IN_PROCESS_BYTES > 1_000_000 > sum(p.stat().st_size for p in raw.rglob("*.parquet"))
    assert not worker_start.might_need_workers(raw) and worker_start.might_need_workers(tmp_path / "none")
    forkserver._forkserver._stop()  # left running by an earlier test of this process
    out = tmp_path / "tokens"
    result = tokenize(_opts(raw, tok_path, out, num_proc=2))
    assert result.processes == 1
    assert result.encoder == "tiktoken"  # ~1 MB of text: worth building the tiktoken form
    assert _files(out) == _files(single)
    assert forkserver._forkserver._forkserver_pid is None  # no fork server was started for it


def test_a_tiny_input_skips_building_the_tiktoken_form(tok_path: Path, tmp_path: Path) -> None:
    from llmctl.tokens import worker_start

    docs = [f"def f{k}(x):\n    return x + {k}\n" for k in range(50)]
    tiny = write_dataset(tmp_path / "tiny", {"train": [docs]})
    assert worker_start.small_input(tiny) and not worker_start.small_input(tmp_path / "none")
    result = tokenize(_opts(tiny, tok_path, tmp_path / "ref"))
    assert result.encoder == "reference" and "under 256 KiB" in (result.encoder_note or "")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLMCTL_TOKENIZE_IN_PROCESS_BYTES", "0")  # workers, and the tiktoken form, however small
        forced = tokenize(_opts(tiny, tok_path, tmp_path / "tiktoken", num_proc=2))
    assert forced.encoder == "tiktoken" and _files(tmp_path / "tiktoken") == _files(tmp_path / "ref")


def test_reference_encoder_writes_the_same_bytes(
    single: Path, raw: Path, tok_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens"
    result = tokenize(_opts(raw, tok_path, out, num_proc=1, fast=False))
    assert result.encoder == "reference"
    assert _files(out) == _files(single)


def test_rerun_skips_complete_shards(single: Path, raw: Path, tok_path: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in single.rglob("shard-*")}
    result = tokenize(_opts(raw, tok_path, single, num_proc=1))
    assert result.shards_written == 0 and result.shards_skipped == result.shards_total > 0
    assert {p: p.stat().st_mtime_ns for p in single.rglob("shard-*")} == before


def test_interrupted_run_resumes_to_the_same_output(
    single: Path, raw: Path, tok_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens"
    calls = []

    def crash(_progress: object) -> None:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tokenize(_opts(raw, tok_path, out, num_proc=1), on_progress=crash)
    assert not (out / "meta.json").exists()
    assert not list(out.rglob("*.tmp-*"))
    for sidecar in out.rglob("shard-*.json"):  # whatever looks complete is complete
        assert sidecar.with_suffix(".bin").is_file() and sidecar.with_suffix(".idx").is_file()
    # What a SIGKILL leaves behind: temporaries, and a shard renamed except for its .json.
    (out / "train" / "shard-00003.bin.tmp-999999").write_bytes(b"partial")
    (out / "train" / "shard-00004.bin").write_bytes(b"\x00" * 10)
    (out / "train" / "shard-00004.idx").write_bytes(b"\x00" * 8)
    result = tokenize(_opts(raw, tok_path, out, num_proc=1))
    assert result.shards_skipped >= 1
    assert _files(out) == _files(single)


@pytest.mark.slow
def test_sigkill_then_rerun_equals_uninterrupted(
    single: Path, raw: Path, tok_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tokens"
    cmd = [
        sys.executable,
        "-m",
        "llmctl",
        "tokenize",
        "--data",
        str(raw),
        "--tokenizer",
        str(tok_path),
        "--out",
        str(out),
        "--num-proc",
        "2",
        "--shard-size",
        "150K",
    ]
    # The slower reference encoder keeps the first run going long enough to be killed mid-way;
    # the rerun uses the fast path, which must continue it to the very same bytes.
    proc = subprocess.Popen(
        [*cmd, "--no-fast"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("train/shard-*.json")):
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "meta.json").exists()
    complete = len(list(out.glob("train/shard-*.json")))
    assert 0 < complete < len(json.loads((out / "train" / "plan.json").read_text())["shards"])
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    assert _files(out) == _files(single)


def test_split_jobs_then_merge(single: Path, raw: Path, tok_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    first = tokenize(_opts(raw, tok_path, out, num_proc=1, shard_index=0, num_shards=2))
    assert first.meta is None and not (out / "meta.json").exists()
    with pytest.raises(LlmctlError, match="not complete"):
        merge(out)
    second = tokenize(_opts(raw, tok_path, out, num_proc=1, shard_index=1, num_shards=2))
    assert first.shards_written + second.shards_written == first.shards_total + second.shards_total
    merge(out)
    assert _files(out) == _files(single)


def test_refuses_another_tokenizer(single: Path, raw: Path, texts: list[str], tmp_path: Path) -> None:
    other = train_tokenizer(tmp_path / "other.json", texts[:20], vocab_size=600)
    with pytest.raises(LlmctlError, match="fingerprint"):
        tokenize(_opts(raw, other, single, num_proc=1))


def test_missing_column_is_a_clear_error(tok_path: Path, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_parquet(raw / "train" / "part-00000.parquet", "body", ["hello"])
    with pytest.raises(LlmctlError, match=r"no 'text' column \(found: body\)") as info:
        tokenize(_opts(raw, tok_path, tmp_path / "out"))
    assert "--column" in (info.value.hint or "")
    result = tokenize(_opts(raw, tok_path, tmp_path / "out", column="body"))
    assert result.documents == 1


def test_pretrain_on_conversations_points_to_sft(tok_path: Path, tmp_path: Path) -> None:
    raw = write_dataset(
        tmp_path / "raw", {"train": [[[{"role": "user", "content": "hi"}]]]}, column="messages"
    )
    with pytest.raises(LlmctlError) as info:
        tokenize(_opts(raw, tok_path, tmp_path / "out"))
    assert "--mode sft" in (info.value.hint or "")


def test_bos_separator(raw: Path, tok_path: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tok_path)
    tokenize(_opts(raw, tok_path, tmp_path / "out", separator="bos", splits=("validation",)))
    shards = open_split(tmp_path / "out", "validation")
    doc = shards[0].document(0)
    assert doc[0] == tok.bos_id and tok.eos_id not in doc
    assert read_meta(tmp_path / "out")["separator"]["policy"] == "bos"


def test_dtype_follows_vocab_size(tmp_path: Path) -> None:
    assert dtype_for_vocab(65536) == "uint16" and dtype_for_vocab(65537) == "uint32"
    writer = ShardWriter(tmp_path, "shard-00000", "uint32", with_mask=False)
    writer.append(np.array([70000, 1, 2], dtype=np.uint32), np.array([2, 1]))
    record = writer.finish({})
    assert record["tokens"] == 3 and record["documents"] == 2
    assert np.fromfile(tmp_path / "shard-00000.bin", dtype="<u4").tolist() == [70000, 1, 2]
    assert np.fromfile(tmp_path / "shard-00000.idx", dtype="<i8").tolist() == [0, 2, 3]


# --- SFT -------------------------------------------------------------------------------------------

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say <|end|> please"},
    {"role": "assistant", "content": "Fine: <|end|>"},
    {"role": "user", "content": "Caf\u00e9?"},
    {"role": "assistant", "content": "Oui \U0001f600\n"},
]


def test_sft_mask_is_exact_on_a_hand_built_conversation(tok_path: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(tok_path)
    raw = write_dataset(tmp_path / "raw", {"train": [[CONVERSATION, []]]}, column="messages")
    result = tokenize(_opts(raw, tok_path, tmp_path / "out", mode="sft", profile="chat", num_proc=1))
    assert result.empty_skipped == 1
    meta = read_meta(tmp_path / "out")
    assert meta["mode"] == "sft" and meta["chat_profile"] == {"name": "chat", "version": 1}
    (shard,) = open_split(tmp_path / "out", "train")
    ids, mask = shard.document(0).tolist(), shard.document_mask(0).tolist()

    sid = {s: tok.token_to_id(s) for s in SPECIALS}
    expected_ids: list[int] = [sid["<|bos|>"]]
    expected_mask: list[int] = [0]
    for message in CONVERSATION:
        content = tok.encode(message["content"])
        trained = int(message["role"] == "assistant")
        expected_ids += [sid[f"<|{message['role']}|>"], *content, sid["<|end|>"]]
        expected_mask += [0, *[trained] * len(content), trained]
    assert ids == expected_ids
    assert mask == expected_mask
    # The "<|end|>" typed inside contents stayed text: only the five turn ends are the special token.
    assert ids.count(sid["<|end|>"]) == 5
    assert meta["splits"]["train"]["trained_tokens"] == sum(expected_mask)


def test_sft_needs_the_chat_markers(texts: list[str], tmp_path: Path) -> None:
    plain = train_tokenizer(
        tmp_path / "plain.json", texts[:10], vocab_size=400, specials=["<|bos|>", "<|eos|>"]
    )
    raw = write_dataset(tmp_path / "raw", {"train": [[CONVERSATION]]}, column="messages")
    with pytest.raises(LlmctlError, match=r"lacks the chat profile 'chat' tokens <\|system\|>") as info:
        tokenize(_opts(raw, plain, tmp_path / "out", mode="sft"))
    assert "tokenizer train" in (info.value.hint or "")


def test_unknown_role_is_reported_from_a_worker(tok_path: Path, tmp_path: Path) -> None:
    raw = write_dataset(
        tmp_path / "raw", {"train": [[[{"role": "robot", "content": "beep"}]]]}, column="messages"
    )
    with pytest.MonkeyPatch.context() as mp, pytest.raises(LlmctlError, match="role 'robot'") as info:
        mp.setenv("LLMCTL_TOKENIZE_IN_PROCESS_BYTES", "0")  # a worker, however small the input
        tokenize(_opts(raw, tok_path, tmp_path / "out", mode="sft", num_proc=2))
    assert "use one of" in (info.value.hint or "")
    assert not list((tmp_path / "out").rglob("shard-*"))


# --- CLI -------------------------------------------------------------------------------------------


def test_cli_tokenize_json_and_merge(raw: Path, tok_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(tok_path),
            "--out",
            str(out),
            "--num-proc",
            "1",
            "--shard-size",
            "150K",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["meta_written"] and report["tokens"] == report["meta"]["totals"]["tokens"] > 0
    assert report["encoder"] == "tiktoken" and report["shards_written"] == report["shards"]
    merged = runner.invoke(app, ["tokenize", "--merge", "--out", str(out), "--json"])
    assert merged.exit_code == 0
    assert json.loads(merged.stdout)["meta"]["splits"] == report["meta"]["splits"]


def test_console_script_workers_do_not_import_the_command_line(
    raw: Path, tok_path: Path, tmp_path: Path
) -> None:
    # Started like the `llmctl` console script (a script file as __main__), with workers forced: a
    # worker that ran the script again (as __mp_main__) would leave its pid in the marker folder.
    root = Path(__file__).resolve().parents[1]
    marks = tmp_path / "marks"
    marks.mkdir()
    launcher = tmp_path / "bin" / "llmctl_cli.py"
    launcher.parent.mkdir()
    launcher.write_text(
        "import os, sys\n"
        "if __name__ != '__main__':\n"
        f"    open(os.path.join({str(marks)!r}, str(os.getpid())), 'w').close()\n"
        "from llmctl.cli.app import main\n"
        "if __name__ == '__main__':\n    sys.exit(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(root), "LLMCTL_TOKENIZE_IN_PROCESS_BYTES": "0"}
    done = subprocess.run(
        [
            sys.executable,
            str(launcher),
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(tok_path),
            "--out",
            str(tmp_path / "t"),
            "--num-proc",
            "2",
            "--shard-size",
            "150K",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["processes"] == 2
    assert not list(marks.iterdir())


def test_cli_small_input_reports_one_process(raw: Path, tok_path: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(tok_path),
            "--out",
            str(tmp_path / "t"),
            "--num-proc",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["num_proc"] == 2 and report["processes"] == 1


def test_cli_requires_data_and_tokenizer(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["tokenize", "--out", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "--data and --tokenizer are required" in result.output + str(result.exception)
