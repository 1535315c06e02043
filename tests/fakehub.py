"""A Hugging Face Hub look-alike and a plain file server on 127.0.0.1, for download tests without internet.

It answers the calls huggingface_hub makes (read from its source, v2.x), for dataset repos and, without
the `datasets/` prefix, model repos (`snapshot_download` of `llmctl import hf:owner/name`):
- `HfApi.dataset_info(repo, revision, files_metadata=True)`:
  GET /api/datasets/{repo}/revision/{rev}?blobs=True -> {id, sha, siblings: [{rfilename, size, blobId, lfs}]}
- `hf_hub_download`: HEAD /datasets/{repo}/resolve/{rev}/{path} (redirects on the same host are followed,
  a redirect to another host is not: its X-Linked-Etag / X-Linked-Size / X-Repo-Commit headers are the
  metadata), then GET of the file (from the "CDN", a second server, for LFS files), with a Range
  header when it retries a dropped transfer.
- errors carry X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound) as the Hub's do.

Plain files (`/files/NAME`) support Range and If-Range with an ETag, like any static file server.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


@dataclass
class Repo:
    commit: str
    files: dict[str, bytes]
    lfs: set[str] = field(default_factory=set)
    refs: dict[str, str] = field(default_factory=dict)


class FakeServers:
    """Hub (+ plain files) on one port, the LFS "CDN" on another. Use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.files: dict[str, bytes] = {}
        self.cdn_override: dict[str, bytes] = {}
        """sha256 -> bytes the CDN serves instead (a corrupt copy)."""
        self.drops: dict[str, list[int]] = {}
        """URL path -> [times left, bytes sent before the connection is cut]."""
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._servers: list[ThreadingHTTPServer] = []

    def add_repo(
        self, repo: str, files: dict[str, bytes], lfs: set[str] | None = None, commit: str | None = None
    ) -> str:
        commit = commit or hashlib.sha1((repo + "".join(sorted(files))).encode()).hexdigest()
        self.repos[repo] = Repo(commit, dict(files), set(lfs or ()), {"main": commit})
        return commit

    def drop(self, path: str, after_bytes: int, times: int = 1) -> None:
        """Cut the connection after `after_bytes` of the body, for the next `times` GETs of `path`."""
        self.drops[path] = [times, after_bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.endpoint}/files/{name}"

    def ranges(self, path_part: str) -> list[str]:
        """Range headers of GETs whose path contains path_part."""
        return [h.get("Range", "") for m, p, h in self.requests if m == "GET" and path_part in p]

    def __enter__(self) -> FakeServers:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


def _handler(state: FakeServers, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _error(self, status: int, code: str | None = None, extra: dict[str, str] | None = None) -> None:
            headers = {"Content-Type": "application/json", **(extra or {})}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, headers, json.dumps({"error": code or "error"}).encode())

        def _serve_bytes(self, data: bytes, headers: dict[str, str]) -> None:
            """A file body honouring Range / If-Range, and any planned connection drop."""
            etag = headers.get("ETag", "")
            start = 0
            status = 200
            rng = self.headers.get("Range")
            if_range = self.headers.get("If-Range")
            if rng and rng.startswith("bytes=") and (if_range is None or if_range == etag):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self._send(416, {"Content-Range": f"bytes */{len(data)}"})
                    return
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            body = data[start:]
            headers = {**headers, "Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
            plan = state.drops.get(urlparse(self.path).path)
            if self.command == "GET" and plan and plan[0] > 0:
                plan[0] -= 1
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body[: plan[1]])
                self.wfile.flush()
                self.close_connection = True
                return
            self._send(status, headers, body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            state.requests.append((self.command, self.path, dict(self.headers)))
            path = unquote(urlparse(self.path).path)
            if role == "cdn":
                sha = path.rsplit("/", 1)[-1]
                for repo in state.repos.values():
                    for data in repo.files.values():
                        if hashlib.sha256(data).hexdigest() == sha:
                            self._serve_bytes(state.cdn_override.get(sha, data), {"ETag": f'"{sha}"'})
                            return
                self._error(404)
                return
            if path.startswith("/files/"):
                name = path[len("/files/") :]
                if name not in state.files:
                    self._error(404)
                    return
                data = state.files[name]
                stamp = email.utils.formatdate(1_700_000_000, usegmt=True)
                self._serve_bytes(
                    data, {"ETag": f'"{hashlib.sha256(data).hexdigest()[:16]}"', "Last-Modified": stamp}
                )
                return
            if path.startswith("/api/datasets/"):
                self._api(path[len("/api/datasets/") :])
                return
            if path.startswith("/datasets/"):
                self._resolve(path[len("/datasets/") :])
                return
            # Model repos (`llmctl import hf:...`): the same store, without the datasets/ prefix.
            if path.startswith("/api/models/"):
                self._api(path[len("/api/models/") :])
                return
            if path.count("/") >= 5 and path.split("/")[3] == "resolve":
                self._resolve(path[1:])
                return
            self._error(404)

        def _repo_rev(self, repo: str, rev: str) -> tuple[Repo | None, str | None]:
            r = state.repos.get(repo)
            if r is None:
                self._error(404, "RepoNotFound")
                return None, None
            commit = rev if rev == r.commit else r.refs.get(rev)
            if commit is None:
                self._error(404, "RevisionNotFound")
                return None, None
            return r, commit

        def _api(self, rest: str) -> None:
            owner, name, *tail = rest.split("/")
            if len(tail) >= 2 and tail[0] == "tree":
                self._tree(f"{owner}/{name}", tail[1])
                return
            rev = tail[1] if len(tail) >= 2 and tail[0] == "revision" else "main"
            r, commit = self._repo_rev(f"{owner}/{name}", rev)
            if r is None:
                return
            siblings = []
            for fname, data in sorted(r.files.items()):
                entry: dict[str, Any] = {"rfilename": fname, "size": len(data), "blobId": git_blob_id(data)}
                if fname in r.lfs:
                    entry["lfs"] = {
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "pointerSize": 134,
                    }
                siblings.append(entry)
            body = json.dumps(
                {"id": f"{owner}/{name}", "sha": commit, "siblings": siblings, "private": False}
            )
            self._send(200, {"Content-Type": "application/json"}, body.encode())

        def _tree(self, repo: str, rev: str) -> None:
            """GET /api/models/{repo}/tree/{rev}?recursive=true: every file, as snapshot_download lists them."""
            r, commit = self._repo_rev(repo, rev)
            if r is None:
                return
            entries = []
            for fname, data in sorted(r.files.items()):
                entry: dict[str, Any] = {
                    "type": "file",
                    "path": fname,
                    "size": len(data),
                    "oid": git_blob_id(data),
                }
                if fname in r.lfs:
                    entry["lfs"] = {
                        "size": len(data),
                        "oid": hashlib.sha256(data).hexdigest(),
                        "pointerSize": 134,
                    }
                entries.append(entry)
            self._send(200, {"Content-Type": "application/json"}, json.dumps(entries).encode())

        def _resolve(self, rest: str) -> None:
            owner, name, word, rev, *parts = rest.split("/")
            r, commit = self._repo_rev(f"{owner}/{name}", rev)
            if r is None or word != "resolve":
                return
            fname = "/".join(parts)
            base = {"X-Repo-Commit": commit or ""}
            if fname not in r.files:
                self._error(404, "EntryNotFound", base)
                return
            data = r.files[fname]
            if fname in r.lfs:
                sha = hashlib.sha256(data).hexdigest()
                self._send(
                    302,
                    {
                        **base,
                        "Location": f"{state.cdn}/blobs/{sha}",
                        "X-Linked-Etag": f'"{sha}"',
                        "X-Linked-Size": str(len(data)),
                        "ETag": f'"{git_blob_id(data)}"',
                    },
                )
                return
            self._serve_bytes(data, {**base, "ETag": f'"{git_blob_id(data)}"'})

    return Handler
