"""Faults in `data download`, `tokenize` and `count --data`: hostile URLs and listings, full disks,
read-only folders, worker processes and signals. Each test fails on the code before issue 12.

Real small file systems (tmpfs) are used when the test runs as root and `mount` works (CI), fault
injection (a write raising OSError) always.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fakehub import FakeServers
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.data import http_download
from llmctl.data.http_download import redact_url, url_file_name
from llmctl.data.parts import carve

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
SECRETS = ("secretpw", "tok123", "sig456", "amz789", "acc000")


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeServers]:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(http_download, "RETRY_WAIT_S", 0.0)
    with FakeServers() as servers:
        monkeypatch.setenv("HF_ENDPOINT", servers.endpoint)
        yield servers


def parquet_bytes(table: dict[str, list]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(table), buf)
    return buf.getvalue()


def all_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "1m", read_only: bool = False) -> Iterator[Path]:
    """A real, small file system at `path`; skips the test unless root can mount one here."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real tmpfs needs root and mount")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"mount failed: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def no_traceback(result: object) -> None:
    output = getattr(result, "output", "") + getattr(result, "stderr", "")
    assert "Traceback" not in output
    exc = getattr(result, "exception", None)
    assert exc is None or isinstance(exc, SystemExit), repr(exc)


# --- URLs: names that climb out, credentials ------------------------------------------------------


def test_url_names_are_decoded_before_the_base_name_is_taken() -> None:
    assert url_file_name("http://h/files/a%2F..%2F..%2F..%2Fx.txt") == "x.txt"
    assert url_file_name("http://h/files/..%2F..%2Fetc%2Fpasswd") == "passwd"
    assert url_file_name("http://h/%2e%2e") == "download"
    assert url_file_name("http://h/files/a%5C..%5C..%5Cw.jsonl") == "w.jsonl"
    assert url_file_name("http://h/") == "download"


def test_a_url_that_decodes_to_parent_folders_stays_in_the_cache(hub: FakeServers, tmp_path: Path) -> None:
    hub.files["a/../../../x.txt"] = b"hello from a hostile name\n"
    cache = tmp_path / "deep" / "cache"
    url = f"{hub.endpoint}/files/a%2F..%2F..%2F..%2Fx.txt"
    result = runner.invoke(app, ["data", "download", url, "--out", str(tmp_path / "o"), "--cache-dir", str(cache),
                                 "--val-fraction", "0", "--test-fraction", "0"])
    assert result.exit_code == 0, result.output
    downloads = (cache / "downloads").resolve()
    for path in all_files(tmp_path):
        if "x.txt" in path.name:
            assert downloads in path.resolve().parents, path
    assert [p.name.split("-", 1)[1] for p in downloads.iterdir() if not p.name.endswith(".json")] == ["x.txt"]


def test_redact_url_hides_userinfo_and_credential_query_values() -> None:
    url = "https://me:secretpw@h.example/d/a.jsonl?token=tok123&id=7&X-Amz-Signature=amz789&sig=sig456&access_token=acc000"
    red = redact_url(url)
    assert not any(s in red for s in SECRETS)
    assert "id=7" in red and "h.example/d/a.jsonl" in red and "REDACTED@" in red


def test_credentials_in_a_url_are_never_written_or_printed(hub: FakeServers, tmp_path: Path) -> None:
    hub.files["a.jsonl"] = "".join(json.dumps({"text": f"doc {i} " * 5}) + "\n" for i in range(50)).encode()
    host = hub.endpoint.split("//", 1)[1]
    query = "token=tok123&sig=sig456&X-Amz-Signature=amz789&access_token=acc000&id=7"
    url = f"http://me:secretpw@{host}/files/a.jsonl?{query}"
    cache, out = tmp_path / "cache", tmp_path / "o"
    ok = runner.invoke(app, ["data", "download", url, "--out", str(out), "--cache-dir", str(cache), "--json"])
    assert ok.exit_code == 0, ok.output
    # The credentials did reach the server (Basic auth from user:password@, the query as given).
    got = [h for m, p, h in hub.requests if "/files/a.jsonl" in p]
    assert got and got[-1].get("Authorization", "").startswith("Basic ")
    info = json.loads(ok.stdout)
    assert info["source"]["url"].endswith("id=7") and "REDACTED" in info["source"]["url"]
    again = runner.invoke(app, ["data", "download", url, "--out", str(out), "--cache-dir", str(cache)])
    assert again.exit_code == 0 and "up to date" in again.stdout
    missing = url.replace("a.jsonl", "nope.jsonl")
    gone = runner.invoke(app, ["data", "download", missing, "--out", str(tmp_path / "n"), "--cache-dir", str(cache)])
    assert gone.exit_code == 2 and "HTTP 404" in gone.stderr
    dead = f"http://me:secretpw@127.0.0.1:9/x.jsonl?{query}"
    http_download_retries = ["data", "download", dead, "--out", str(tmp_path / "d"), "--cache-dir", str(cache)]
    down = runner.invoke(app, http_download_retries)
    assert down.exit_code == 1 and "cannot reach" in down.stderr
    printed = ok.output + again.output + gone.output + down.output
    written = b"".join(p.read_bytes() for p in all_files(tmp_path) if p.suffix != ".parquet")
    for secret in SECRETS:
        assert secret not in printed
        assert secret.encode() not in written


def test_an_unsafe_name_in_a_hub_listing_is_refused(hub: FakeServers, tmp_path: Path) -> None:
    hub.add_repo("owner/evil", {"data/../../../evil.jsonl": b'{"text": "x"}\n', "data/train.jsonl": b'{"text": "y"}\n'})
    result = runner.invoke(app, ["data", "download", "hf:owner/evil", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unsafe file name" in result.stderr
    assert not list(tmp_path.rglob("evil.jsonl"))


# --- disk faults in data download -----------------------------------------------------------------


def _source(tmp_path: Path, docs: int = 300, size: int = 200) -> Path:
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps({"text": os.urandom(size).hex()}) + "\n" for _ in range(docs)))
    return src


def _enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_download_disk_full_is_an_error_with_space_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _enospc)
    out = tmp_path / "o"
    result = runner.invoke(app, ["data", "download", str(_source(tmp_path)), "--out", str(out)])
    assert result.exit_code == 4, result.output
    assert "error: no space left on device" in result.stderr and "free" in result.stderr and "hint:" in result.stderr
    no_traceback(result)
    assert not all_files(out) and not (out / ".llmctl-incomplete").exists()


def test_download_permission_denied_and_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for code, words in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):
        def refuse(*_a: object, _code: int = code, **_k: object) -> None:
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(pq.ParquetWriter, "write_table", refuse)
        result = runner.invoke(app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(tmp_path / "o")])
        assert result.exit_code == 4 and f"error: {words}" in result.stderr, result.output
        no_traceback(result)


def test_download_out_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "o").write_text("mine")
    result = runner.invoke(app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 4 and "is a file, not a folder" in result.stderr
    assert (tmp_path / "o").read_text() == "mine"


class _FillingFile:
    """A file object whose writes fail with ENOSPC once `room` bytes are written."""

    def __init__(self, fh: io.BufferedWriter, room: int) -> None:
        self.fh, self.room = fh, room

    def write(self, data: bytes) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.fh.write(data)

    def close(self) -> None:
        self.fh.close()


def test_url_download_disk_full_says_needed_and_free_and_resumes(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "".join(json.dumps({"text": os.urandom(100).hex()}) + "\n" for _ in range(40000)).encode()
    hub.files["big.jsonl"] = body
    monkeypatch.setattr(http_download, "CHUNK", 1 << 16)
    monkeypatch.setattr(http_download, "open", lambda p, mode: _FillingFile(open(p, mode), 1 << 20), raising=False)
    args = ["data", "download", hub.url("big.jsonl"), "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c")]
    full = runner.invoke(app, args)
    assert full.exit_code == 4, full.output
    assert "no space left on device" in full.stderr and "needed" in full.stderr and "free" in full.stderr
    no_traceback(full)
    monkeypatch.delattr(http_download, "open")
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert hub.ranges("big.jsonl")[-1] == f"bytes={1 << 20}-"


def test_download_onto_a_real_full_tmpfs_leaves_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as small:
        result = subprocess.run(
            [sys.executable, "-m", "llmctl", "data", "download", str(_source(tmp_path, 3000, 400)), "--out", str(small / "o")],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path,
        )
        assert result.returncode == 4, result.stderr
        assert "no space left on device" in result.stderr and "free" in result.stderr
        assert "Traceback" not in result.stderr
        assert not all_files(small)


def test_download_onto_a_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        result = runner.invoke(app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(ro / "o")])
        assert result.exit_code == 4 and "read-only file system" in result.stderr, result.output


# --- small sources, invalid UTF-8, corrupt files -------------------------------------------------


def test_a_source_too_small_to_carve_does_not_leave_train_empty(tmp_path: Path) -> None:
    doc = next(f"only document {i}" for i in range(1000) if carve(f"only document {i}", 0, 0.5, 0.4) != "train")
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": doc}) + "\n")
    args = ["data", "download", str(tmp_path / "one.jsonl"), "--out", str(tmp_path / "o"),
            "--val-fraction", "0.5", "--test-fraction", "0.4"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "left train empty" in result.stderr and "--val-fraction 0" in result.stderr
    assert not (tmp_path / "o" / "dataset.json").exists()
    kept = runner.invoke(app, [*args[:5], "--val-fraction", "0", "--test-fraction", "0", "--json"])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["splits"]["train"]["rows"] == 1


def test_invalid_utf8_in_a_download_is_counted(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "caf\xe9 au lait"}\n{"text": "fine"}\n{"text": "x\xff\xfey"}\n')
    result = runner.invoke(app, ["data", "download", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "o"),
                                 "--val-fraction", "0", "--test-fraction", "0", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["invalid_utf8_replaced"] == 3 and info["files"][0]["invalid_utf8_replaced"] == 3
    assert "3 invalid UTF-8 sequence(s) were replaced" in result.stderr


def test_corrupt_parquet_hint_never_says_to_delete_a_users_own_file(hub: FakeServers, tmp_path: Path) -> None:
    broken = parquet_bytes({"text": [f"doc {i}" for i in range(500)]})[:-100]
    (tmp_path / "mine.parquet").write_bytes(broken)
    own = runner.invoke(app, ["data", "download", str(tmp_path / "mine.parquet"), "--out", str(tmp_path / "o")])
    assert own.exit_code == 1 and "corrupt or truncated" in own.stderr
    assert "delete" not in own.stderr and (tmp_path / "mine.parquet").exists()
    hub.files["remote.parquet"] = broken
    cached = runner.invoke(app, ["data", "download", hub.url("remote.parquet"), "--out", str(tmp_path / "o2"),
                                 "--cache-dir", str(tmp_path / "c")])
    assert cached.exit_code == 1 and "it is a download: delete" in cached.stderr and str(tmp_path / "c") in cached.stderr
