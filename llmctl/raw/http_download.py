"""Resumable HTTP(S) downloads with urllib: Range requests, validators, SHA-256, no half files.

    path, sha256 = download_url("https://example.org/corpus.jsonl.zst", Path("~/.cache/llmctl/downloads"))

Bytes go to `<name>.partial` next to a `<name>.partial.json` holding the server's validators (ETag,
Last-Modified) and size. A rerun sends `Range: bytes=N-` with `If-Range`, so an interrupted download
continues where it stopped, and a file that changed on the server starts over. Only a complete,
verified file is renamed to its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import unquote, urlparse

from llmctl import __version__
from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.raw.transfer import NoProgress, TransferProgress, TransferTask

CHUNK = 1 << 20
RETRIES = 5
"""Attempts after a dropped connection before giving up (the .partial file stays for a rerun)."""
RETRY_WAIT_S = 1.0
TIMEOUT_S = 60.0


def file_sha256(path: Path, digest: hashlib._Hash | None = None) -> str:
    """SHA-256 of a file (continuing `digest` when given)."""
    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def url_file_name(url: str) -> str:
    """The file name a URL's path ends in ('download' when it has none)."""
    return unquote(Path(urlparse(url).path).name) or "download"


def cached_path(url: str, cache_dir: Path) -> Path:
    """Where a URL's complete download lives: a hash of the URL keeps equal names from colliding."""
    key = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{key}-{url_file_name(url)}"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _unreachable(url: str, exc: BaseException) -> LlmctlRuntimeError:
    host = urlparse(url).netloc
    return LlmctlRuntimeError(
        f"cannot reach {host} to download {url} ({getattr(exc, 'reason', exc)})",
        "check the network or proxy settings; `pystdlib` and local files need no network",
    )


class _Interrupted(Exception):
    """The connection dropped mid-file; the bytes so far are kept."""


def _fetch_once(
    url: str, partial: Path, meta_path: Path, progress_task: TransferTask, headers: dict[str, str]
) -> int | None:
    """One GET appending to `partial`; returns the full size when the server said it."""
    on_disk = partial.stat().st_size if partial.exists() else 0
    meta = _read_json(meta_path) if on_disk else {}
    validator = meta.get("etag") or meta.get("last_modified")
    request_headers = dict(headers)
    have = 0
    if on_disk and validator and meta.get("url") == url:
        have = on_disk
        request_headers["Range"] = f"bytes={have}-"
        request_headers["If-Range"] = validator
    request = urllib.request.Request(url, headers=request_headers)
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and meta.get("total") == have:
            return have
        if exc.code == 416:
            partial.unlink(missing_ok=True)
            raise _Interrupted("range not satisfiable; starting over") from exc
        hint = "check the URL" if exc.code in (404, 410) else "the server refused the download; check access rights"
        raise LlmctlError(f"HTTP {exc.code} {exc.reason} for {url}", hint) from exc
    with response:
        if response.status == 206:
            start = int((response.headers.get("Content-Range") or "bytes 0-").split()[1].split("-")[0])
            if start != have:
                partial.unlink(missing_ok=True)
                raise _Interrupted(f"server resumed at byte {start}, not {have}; starting over")
        else:  # a full body: the server ignored the range, or the file changed since
            if on_disk:
                progress_task.advance(-on_disk)
            have = 0
        length = response.headers.get("Content-Length")
        content_range = response.headers.get("Content-Range")
        total = None
        if content_range and "/" in content_range and not content_range.endswith("/*"):
            total = int(content_range.rsplit("/", 1)[1])
        elif length is not None:
            total = have + int(length)
        progress_task.set_total(total)
        _write_json(
            meta_path,
            {
                "url": url,
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
                "total": total,
            },
        )
        with open(partial, "ab" if have else "wb") as fh:
            try:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    fh.write(block)
                    progress_task.advance(len(block))
            except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                raise _Interrupted(str(exc)) from exc
    size = partial.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")
    return total


def download_url(
    url: str,
    cache_dir: Path,
    progress: TransferProgress | None = None,
    expected_sha256: str | None = None,
) -> tuple[Path, str]:
    """Download `url` into cache_dir (resuming a partial file) and return (path, sha256).

    A complete earlier download is reused without touching the network. A SHA-256 that does not
    match `expected_sha256` deletes the download and raises, naming the file.
    """
    progress = progress or NoProgress()
    dest = cached_path(url, cache_dir)
    done_meta = dest.with_name(dest.name + ".json")
    if dest.is_file():
        meta = _read_json(done_meta)
        if meta.get("size") == dest.stat().st_size and meta.get("sha256"):
            _check_sha(url, dest, meta["sha256"], expected_sha256)
            return dest, meta["sha256"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    meta_path = partial.with_name(partial.name + ".json")
    headers = {"User-Agent": f"llmctl/{__version__}", "Accept-Encoding": "identity"}
    have = partial.stat().st_size if partial.exists() else 0
    task = progress.task(url_file_name(url), _read_json(meta_path).get("total") if have else None, completed=have)
    try:
        last_error: BaseException | None = None
        for attempt in range(RETRIES + 1):
            if attempt:
                time.sleep(RETRY_WAIT_S)
            try:
                _fetch_once(url, partial, meta_path, task, headers)
                break
            except _Interrupted as exc:
                last_error = exc
            except urllib.error.URLError as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    raise
                last_error = exc
            except (ConnectionError, TimeoutError, http.client.HTTPException) as exc:
                last_error = exc
        else:
            got = partial.stat().st_size if partial.exists() else 0
            if not got:
                raise _unreachable(url, last_error or OSError("no response"))
            raise LlmctlRuntimeError(
                f"download of {url} interrupted after {got} bytes ({last_error})",
                "run the same command again: it resumes from the bytes already on disk",
            )
    finally:
        task.close()
    sha256 = file_sha256(partial)
    try:
        _check_sha(url, partial, sha256, expected_sha256)
    except LlmctlRuntimeError:
        partial.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        raise
    os.replace(partial, dest)
    _write_json(done_meta, {"url": url, "size": dest.stat().st_size, "sha256": sha256})
    meta_path.unlink(missing_ok=True)
    return dest, sha256


def _check_sha(url: str, path: Path, actual: str, expected: str | None) -> None:
    if expected and actual.lower() != expected.lower():
        if path.exists() and not path.name.endswith(".partial"):
            path.unlink()
            path.with_name(path.name + ".json").unlink(missing_ok=True)
        raise LlmctlRuntimeError(
            f"checksum mismatch for {url_file_name(url)}: SHA-256 is {actual}, expected {expected}",
            "the download was deleted; run again to fetch it afresh, or check the --sha256 value",
        )
