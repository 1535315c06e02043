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
from llmctl.raw import http_download
from llmctl.raw.http_download import redact_url, url_file_name
from llmctl.raw.parts import carve

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
    """No traceback through llmctl's code (the fake server's threads may print their own)."""
    output = getattr(result, "output", "") + getattr(result, "stderr", "")
    assert "/llmctl/" not in "".join(line for line in output.splitlines() if line.strip().startswith("File "))
    assert "Traceback" not in output or "socketserver" in output
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
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            url,
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(cache),
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
        ],
    )
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
    gone = runner.invoke(
        app, ["data", "download", missing, "--out", str(tmp_path / "n"), "--cache-dir", str(cache)]
    )
    assert gone.exit_code == 2 and "HTTP 404" in gone.stderr
    dead = f"http://me:secretpw@127.0.0.1:9/x.jsonl?{query}"
    http_download_retries = [
        "data",
        "download",
        dead,
        "--out",
        str(tmp_path / "d"),
        "--cache-dir",
        str(cache),
    ]
    down = runner.invoke(app, http_download_retries)
    assert down.exit_code == 1 and "cannot reach" in down.stderr
    printed = ok.output + again.output + gone.output + down.output
    written = b"".join(p.read_bytes() for p in all_files(tmp_path) if p.suffix != ".parquet")
    for secret in SECRETS:
        assert secret not in printed
        assert secret.encode() not in written


def test_an_unsafe_name_in_a_hub_listing_is_refused(hub: FakeServers, tmp_path: Path) -> None:
    hub.add_repo(
        "owner/evil", {"data/../../../evil.jsonl": b'{"text": "x"}\n', "data/train.jsonl": b'{"text": "y"}\n'}
    )
    result = runner.invoke(app, ["data", "download", "hf:owner/evil", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "unsafe file name" in result.stderr
    assert not list(tmp_path.rglob("evil.jsonl"))


def test_hub_endpoint_credentials_stay_out_of_errors(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://me:secretpw@127.0.0.1:9")
    result = runner.invoke(app, ["data", "download", "hf:owner/none", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "cannot reach" in result.stderr, result.output
    assert "secretpw" not in result.output and "REDACTED@127.0.0.1:9" in result.stderr


def test_a_full_hub_cache_is_an_io_error(
    hub: FakeServers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    hub.add_repo("owner/tiny", {"data/train.jsonl": b'{"text": "y"}\n'})
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _enospc)
    result = runner.invoke(app, ["data", "download", "hf:owner/tiny", "--out", str(tmp_path / "o")])
    assert result.exit_code == 4 and "no space left on device" in result.stderr, result.output


# --- disk faults in data download -----------------------------------------------------------------


def _source(tmp_path: Path, docs: int = 300, size: int = 200) -> Path:
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps({"text": os.urandom(size).hex()}) + "\n" for _ in range(docs)))
    return src


def _enospc(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def test_download_disk_full_is_an_error_with_space_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pq.ParquetWriter, "write_table", _enospc)
    out = tmp_path / "o"
    result = runner.invoke(app, ["data", "download", str(_source(tmp_path)), "--out", str(out)])
    assert result.exit_code == 4, result.output
    assert (
        "error: no space left on device" in result.stderr
        and "free" in result.stderr
        and "hint:" in result.stderr
    )
    no_traceback(result)
    assert not all_files(out) and not (out / ".llmctl-incomplete").exists()


def test_download_permission_denied_and_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for code, words in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):

        def refuse(*_a: object, _code: int = code, **_k: object) -> None:
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(pq.ParquetWriter, "write_table", refuse)
        result = runner.invoke(
            app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(tmp_path / "o")]
        )
        assert result.exit_code == 4 and f"error: {words}" in result.stderr, result.output
        no_traceback(result)


def test_download_out_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "o").write_text("mine")
    result = runner.invoke(
        app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(tmp_path / "o")]
    )
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

    def filling_open(path: Path, mode: str) -> _FillingFile:
        return _FillingFile(open(path, mode), 1 << 20)  # noqa: SIM115 - closed by the code under test

    monkeypatch.setattr(http_download, "open", filling_open, raising=False)
    args = [
        "data",
        "download",
        hub.url("big.jsonl"),
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
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
            [
                sys.executable,
                "-m",
                "llmctl",
                "data",
                "download",
                str(_source(tmp_path, 3000, 400)),
                "--out",
                str(small / "o"),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), **WORKERS_ALWAYS},
            cwd=tmp_path,
        )
        assert result.returncode == 4, result.stderr
        assert "no space left on device" in result.stderr and "free" in result.stderr
        assert "Traceback" not in result.stderr
        assert not list(small.iterdir())


def test_download_onto_a_read_only_file_system(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        result = runner.invoke(app, ["data", "download", str(_source(tmp_path, 20)), "--out", str(ro / "o")])
        assert result.exit_code == 4 and "read-only file system" in result.stderr, result.output


# --- small sources, invalid UTF-8, corrupt files -------------------------------------------------


def test_a_source_too_small_to_carve_does_not_leave_train_empty(tmp_path: Path) -> None:
    doc = next(
        f"only document {i}" for i in range(1000) if carve(f"only document {i}", 0, 0.5, 0.4) != "train"
    )
    (tmp_path / "one.jsonl").write_text(json.dumps({"text": doc}) + "\n")
    args = [
        "data",
        "download",
        str(tmp_path / "one.jsonl"),
        "--out",
        str(tmp_path / "o"),
        "--val-fraction",
        "0.5",
        "--test-fraction",
        "0.4",
    ]
    result = runner.invoke(app, args)
    assert (
        result.exit_code == 2 and "left train empty" in result.stderr and "--val-fraction 0" in result.stderr
    )
    assert not (tmp_path / "o" / "dataset.json").exists()
    kept = runner.invoke(app, [*args[:5], "--val-fraction", "0", "--test-fraction", "0", "--json"])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["splits"]["train"]["rows"] == 1


def test_invalid_utf8_in_a_download_is_counted(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_bytes(
        b'{"text": "caf\xe9 au lait"}\n{"text": "fine"}\n{"text": "x\xff\xfey"}\n'
    )
    result = runner.invoke(
        app,
        [
            "data",
            "download",
            str(tmp_path / "bad.jsonl"),
            "--out",
            str(tmp_path / "o"),
            "--val-fraction",
            "0",
            "--test-fraction",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["invalid_utf8_replaced"] == 3 and info["files"][0]["invalid_utf8_replaced"] == 3
    assert "3 invalid UTF-8 sequence(s) were replaced" in result.stderr


def test_corrupt_parquet_hint_never_says_to_delete_a_users_own_file(hub: FakeServers, tmp_path: Path) -> None:
    broken = parquet_bytes({"text": [f"doc {i}" for i in range(500)]})[:-100]
    (tmp_path / "mine.parquet").write_bytes(broken)
    own = runner.invoke(
        app, ["data", "download", str(tmp_path / "mine.parquet"), "--out", str(tmp_path / "o")]
    )
    assert own.exit_code == 1 and "corrupt or truncated" in own.stderr
    assert "delete" not in own.stderr and (tmp_path / "mine.parquet").exists()
    hub.files["remote.parquet"] = broken
    cached = runner.invoke(
        app,
        [
            "data",
            "download",
            hub.url("remote.parquet"),
            "--out",
            str(tmp_path / "o2"),
            "--cache-dir",
            str(tmp_path / "c"),
        ],
    )
    assert (
        cached.exit_code == 1
        and "it is a download: delete" in cached.stderr
        and str(tmp_path / "c") in cached.stderr
    )


# --- tokenize: disk faults ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from token_fixtures import stdlib_texts, train_tokenizer

    return train_tokenizer(
        tmp_path_factory.mktemp("tok") / "tokenizer.json", stdlib_texts(step=12), vocab_size=1024
    )


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from token_fixtures import stdlib_texts, write_dataset

    texts = stdlib_texts(step=12)
    return write_dataset(
        tmp_path_factory.mktemp("raw") / "raw", {"train": [texts[:40], texts[40:]], "validation": [texts[:5]]}
    )


@pytest.fixture(scope="module")
def big_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 4 MB of text: long enough with --no-fast to stop a run in the middle."""
    from token_fixtures import stdlib_texts, write_dataset

    texts = stdlib_texts(step=3)
    return write_dataset(
        tmp_path_factory.mktemp("bigraw") / "raw",
        {"train": [texts[: len(texts) // 2], texts[len(texts) // 2 :]]},
    )


WORKERS_ALWAYS = {"LLMCTL_TOKENIZE_IN_PROCESS_BYTES": "0"}
"""Start worker processes whatever the input's size (a small one is otherwise encoded in the parent)."""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith(".llmctl-tmp-")]


class _ShardDiskFull:
    """Stands in for `open` in llmctl.tokens.shards: writes fail with ENOSPC after `room` bytes, and so
    does the flush on close, as on a really full disk."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, path: object, mode: str = "r", **kwargs: object) -> object:
        fh = open(path, mode, **kwargs)  # noqa: SIM115
        owner = self

        class Full:
            failed = False

            def write(self, data: bytes) -> int:
                if owner.room < len(data):
                    Full.failed = True
                    raise OSError(errno.ENOSPC, "No space left on device")
                owner.room -= len(data)
                return fh.write(data)

            def close(self) -> None:
                fh.close()
                if Full.failed:
                    raise OSError(errno.ENOSPC, "No space left on device")

            def __enter__(self) -> object:
                return self

            def __exit__(self, *exc: object) -> None:
                self.close()

            def __getattr__(self, name: str) -> object:
                return getattr(fh, name)

        return Full()


def test_tokenize_disk_full_is_an_error_and_removes_its_temporaries(
    raw: Path, tok: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llmctl.tokens import shards

    monkeypatch.setattr(shards, "open", _ShardDiskFull(200_000), raising=False)
    out = tmp_path / "tokens"
    result = runner.invoke(
        app,
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(tok),
            "--out",
            str(out),
            "--num-proc",
            "1",
            "--shard-size",
            "300K",
        ],
    )
    assert result.exit_code == 4, result.output
    assert "error: no space left on device" in result.stderr
    assert "needed" in result.stderr and "free" in result.stderr and "hint:" in result.stderr
    no_traceback(result)
    assert not temporaries(out) and not (out / "meta.json").exists()


def test_tokenize_permission_and_read_only_and_out_a_file(
    raw: Path, tok: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("mine")
    result = runner.invoke(
        app, ["tokenize", "--data", str(raw), "--tokenizer", str(tok), "--out", str(tmp_path / "file")]
    )
    assert result.exit_code == 4 and "is a file, not a folder" in result.stderr
    from llmctl.tokens import shards

    for code, words in ((errno.EACCES, "permission denied"), (errno.EROFS, "read-only file system")):

        def refuse(*_a: object, _code: int = code, **_k: object) -> None:
            raise OSError(_code, os.strerror(_code))

        monkeypatch.setattr(shards, "open", refuse, raising=False)
        out = tmp_path / f"t{code}"
        result = runner.invoke(
            app,
            ["tokenize", "--data", str(raw), "--tokenizer", str(tok), "--out", str(out), "--num-proc", "1"],
        )
        assert result.exit_code == 4 and f"error: {words}" in result.stderr, result.output
        no_traceback(result)
        assert not temporaries(out)


def run_llmctl(args: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmctl", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **WORKERS_ALWAYS},
        **kw,
    )


def test_tokenize_onto_a_real_full_tmpfs(raw: Path, tok: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "256k") as small:
        out = small / "tokens"
        result = run_llmctl(
            [
                "tokenize",
                "--data",
                str(raw),
                "--tokenizer",
                str(tok),
                "--out",
                str(out),
                "--num-proc",
                "2",
                "--shard-size",
                "200K",
            ],
            tmp_path,
        )
        assert result.returncode == 4, result.stderr
        assert "no space left on device" in result.stderr and "needed" in result.stderr
        assert "Traceback" not in result.stderr
        assert not temporaries(out)


def test_tokenize_onto_a_read_only_file_system(raw: Path, tok: Path, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "ro", "1m", read_only=True) as ro:
        result = runner.invoke(
            app, ["tokenize", "--data", str(raw), "--tokenizer", str(tok), "--out", str(ro / "t")]
        )
        assert result.exit_code == 4 and "read-only file system" in result.stderr, result.output


# --- worker processes: the current directory, signals, a killed parent ----------------------------


def test_a_folder_named_llmctl_in_the_cwd_does_not_break_workers(
    raw: Path, tok: Path, tmp_path: Path
) -> None:
    shadow = tmp_path / "work"
    (shadow / "llmctl").mkdir(parents=True)
    (shadow / "llmctl" / "__init__.py").write_text("# another project's (or an old clone's) llmctl\n")
    # Started like the `llmctl` console script: the parent imports the real llmctl, not the cwd's.
    launcher = tmp_path / "bin" / "llmctl_cli.py"
    launcher.parent.mkdir()
    launcher.write_text(
        "import sys\nfrom llmctl.cli.app import main\nif __name__ == '__main__':\n    sys.exit(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), **WORKERS_ALWAYS}  # even for this small input
    for args in (
        ["count", "--data", str(raw), "--tokenizer", str(tok), "--num-proc", "2", "--json"],
        [
            "tokenize",
            "--data",
            str(raw),
            "--tokenizer",
            str(tok),
            "--out",
            str(tmp_path / "t"),
            "--num-proc",
            "2",
        ],
    ):
        done = subprocess.run(
            [sys.executable, str(launcher), *args], cwd=shadow, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "t" / "meta.json").is_file()


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies excluded)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(stat.parent.name))
    return pids


def wait_gone(sid: int, seconds: float = 10.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and session_pids(sid):
        time.sleep(0.1)
    return session_pids(sid)


def start_tokenize(raw: Path, tok: Path, out: Path, cwd: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "llmctl",
        "tokenize",
        "--data",
        str(raw),
        "--tokenizer",
        str(tok),
        "--out",
        str(out),
        "--num-proc",
        "2",
        "--shard-size",
        "150K",
        "--no-fast",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **WORKERS_ALWAYS},
        start_new_session=True,
        # As from a terminal: tests started as a background job (`cmd &` in a script) run with SIGINT
        # ignored, a child inherits that, and Python then never raises KeyboardInterrupt for it.
        preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not list(out.glob("train/shard-*.json")):
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be stopped"
    assert len(session_pids(proc.pid)) >= 3, "no worker processes were running"
    return proc


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_the_parent_leaves_no_process_behind(big_raw: Path, tok: Path, tmp_path: Path) -> None:
    proc = start_tokenize(big_raw, tok, tmp_path / "t", tmp_path)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_gone(proc.pid)
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_keep_complete_shards_and_say_so(
    big_raw: Path, tok: Path, tmp_path: Path, sig: int
) -> None:
    out = tmp_path / "t"
    proc = start_tokenize(big_raw, tok, out, tmp_path)
    try:
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
        left = wait_gone(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    how = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    lines = [line for line in stderr.splitlines() if line.startswith(f"stopped by {how}")]
    assert len(lines) == 1 and "shard(s) complete and kept in" in lines[0] and "resume" in lines[0], stderr
    assert "Traceback" not in stderr
    assert not left, f"still running after the parent stopped: {left}"
    kept = int(lines[0].split(": ", 1)[1].split()[0])
    assert kept == len(list(out.glob("train/shard-*.json"))) and kept >= 1
    assert not temporaries(out)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_kill_9_of_count_data_leaves_no_process_behind(big_raw: Path, tmp_path: Path) -> None:
    from token_fixtures import stdlib_texts, train_tokenizer
    from tokenizers import pre_tokenizers

    # A tokenizer the tiktoken fast path does not take: the slower reference encoder keeps count busy.
    slow_tok = train_tokenizer(tmp_path / "ws.json", stdlib_texts(step=24), 512, pre_tokenizers.Whitespace())
    cmd = [
        sys.executable,
        "-m",
        "llmctl",
        "count",
        "--data",
        str(big_raw),
        "--tokenizer",
        str(slow_tok),
        "--num-proc",
        "2",
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(ROOT), **WORKERS_ALWAYS},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and len(session_pids(proc.pid)) < 5:
            time.sleep(0.02)
        assert proc.poll() is None and len(session_pids(proc.pid)) >= 5, "count ended before its workers ran"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        left = wait_gone(proc.pid)
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
