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
from typing import Any
from urllib.parse import unquote, urlparse

from llmctl import __version__
from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.files import atomic_write_json, ensure_inside, file_sha256, io_error, safe_name
from llmctl.raw.transfer import NoProgress, TransferProgress, TransferTask
from llmctl.redact import basic_auth_parts as _request_parts
from llmctl.redact import redact_url

CHUNK = 1 << 20
RETRIES = 5
"""Attempts after a dropped connection before giving up (the .partial file stays for a rerun)."""
RETRY_WAIT_S = 1.0
TIMEOUT_S = 60.0


def url_file_name(url: str) -> str:
    """The safe base name a URL's path ends in ('download' when it has none).

    The path is percent-decoded *before* its last part is taken, so '..%2F..%2Fx' becomes 'x'.
    """
    return safe_name(unquote(urlparse(url).path))


def cached_path(url: str, cache_dir: Path) -> Path:
    """Where a URL's complete download lives: a hash of the URL keeps equal names from colliding.

    The hash is of the redacted URL: a presigned URL whose signature changed names the same file.
    """
    key = hashlib.sha256(redact_url(url).encode()).hexdigest()[:12]
    dest = Path(cache_dir) / f"{key}-{url_file_name(url)}"
    ensure_inside(cache_dir, dest)
    return dest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data)


def _unreachable(url: str, exc: BaseException) -> LlmctlRuntimeError:
    host = urlparse(redact_url(url)).netloc
    return LlmctlRuntimeError(
        f"cannot reach {host} to download {redact_url(url)} ({getattr(exc, 'reason', exc)})",
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
    if on_disk and validator and meta.get("url") == redact_url(url):
        have = on_disk
        request_headers["Range"] = f"bytes={have}-"
        request_headers["If-Range"] = validator
    plain_url, auth = _request_parts(url)
    request = urllib.request.Request(plain_url, headers={**request_headers, **auth})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have and meta.get("total") == have:
            return have
        if exc.code == 416:
            partial.unlink(missing_ok=True)
            raise _Interrupted("range not satisfiable; starting over") from exc
        hint = (
            "check the URL"
            if exc.code in (404, 410)
            else "the server refused the download; check access rights"
        )
        raise LlmctlError(f"HTTP {exc.code} {exc.reason} for {redact_url(url)}", hint) from None
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
                "url": redact_url(url),
                "etag": response.headers.get("ETag"),
                "last_modified": response.headers.get("Last-Modified"),
                "total": total,
            },
        )
        _append_body(response, partial, have, total, progress_task)
    size = partial.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"connection closed after {size} of {total} bytes")
    return total


def _append_body(response: Any, partial: Path, have: int, total: int | None, task: TransferTask) -> None:
    """Stream the response body onto `partial`; a disk fault becomes an `error:` saying what space is needed."""
    written = have
    try:
        fh = open(partial, "ab" if have else "wb")  # noqa: SIM115 - closed below, errors reported apart
    except OSError as exc:
        raise io_error(exc, partial) from None
    try:
        try:
            while True:
                try:
                    block = response.read(CHUNK)
                except (http.client.IncompleteRead, ConnectionError, TimeoutError) as exc:
                    raise _Interrupted(str(exc)) from exc
                if not block:
                    break
                fh.write(block)
                written += len(block)
                task.advance(len(block))
        finally:
            fh.close()  # closes the file even when its last flush fails
    except OSError as exc:
        # The bytes already on disk stay in the .partial file: a rerun resumes from them.
        needed = total - written if total is not None else None
        raise io_error(exc, partial, needed=needed) from None


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
    done_meta = ensure_inside(cache_dir, dest.with_name(dest.name + ".json"))
    if dest.is_file():
        meta = _read_json(done_meta)
        if meta.get("size") == dest.stat().st_size and meta.get("sha256"):
            _check_sha(url, dest, meta["sha256"], expected_sha256)
            return dest, meta["sha256"]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, dest.parent, action="create") from None
    partial = ensure_inside(cache_dir, dest.with_name(dest.name + ".partial"))
    meta_path = ensure_inside(cache_dir, partial.with_name(partial.name + ".json"))
    headers = {"User-Agent": f"llmctl/{__version__}", "Accept-Encoding": "identity"}
    have = partial.stat().st_size if partial.exists() else 0
    task = progress.task(
        url_file_name(url), _read_json(meta_path).get("total") if have else None, completed=have
    )
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
                f"download of {redact_url(url)} interrupted after {got} bytes ({last_error})",
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
    try:
        os.replace(partial, dest)
    except OSError as exc:
        raise io_error(exc, dest) from None
    _write_json(done_meta, {"url": redact_url(url), "size": dest.stat().st_size, "sha256": sha256})
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
