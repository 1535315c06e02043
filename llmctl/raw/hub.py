"""Hugging Face Hub datasets through huggingface_hub: list a revision's files, fetch them one by one.

    listing = list_hub_files("roneneldan/TinyStories", "main")   # commit hash, file sizes, LFS SHA-256
    path = fetch_hub_file(listing, "data/validation-00000-of-00001.parquet")

huggingface_hub reads HF_ENDPOINT (mirrors, and the tests' local server), HF_TOKEN (gated and private
repos) and HF_HUB_OFFLINE, keeps files in its cache (HF_HUB_CACHE) and retries a dropped transfer
with a Range request. Every file is checked against the SHA-256 (LFS) or git blob id the Hub lists.
Offline, or with the Hub unreachable, a revision already in the cache is used as it is.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.files import io_error
from llmctl.raw.http_download import CHUNK, redact_url
from llmctl.raw.transfer import NoProgress, TransferProgress

# A full, read-only or forbidden Hub cache is the user's disk, not the network: exit 4 with its own hint.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class HubFile:
    """One file of a resolved revision."""

    path: str
    size: int | None = None
    sha256: str | None = None
    """LFS SHA-256, when the file is stored with LFS."""
    blob_id: str | None = None
    """Git blob id (SHA-1 of 'blob <size>\\0' + content) for files stored in git."""


@dataclass
class HubListing:
    """A repository revision resolved to a commit, with its files."""

    repo: str
    revision: str
    commit: str
    files: dict[str, HubFile] = field(default_factory=dict)
    offline: bool = False
    """True when read from the local cache because the Hub could not be asked."""
    cache_dir: str | None = None
    snapshot: Path | None = None


def _check_repo_path(repo: str, name: str) -> str:
    """A file name from a Hub listing, refused when it could leave the snapshot folder it is written to."""
    parts = name.split("/")
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\0" in name
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise LlmctlRuntimeError(
            f"the Hub listing of {repo} holds an unsafe file name {name!r}; refusing to download it",
            "the server is broken or hostile: check HF_ENDPOINT, or download the files you trust by hand",
        )
    return name


def _endpoint() -> str | None:
    # Read at call time: huggingface_hub's own constant is fixed when it is first imported.
    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


def _cache_root(cache_dir: str | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE).expanduser()


def _shown(text: str) -> str:
    """`text` with HF_ENDPOINT's credentials (a mirror at https://user:pass@host) redacted."""
    endpoint = _endpoint()
    return text.replace(endpoint, redact_url(endpoint)) if endpoint else text


def _unreachable(repo: str, exc: BaseException | None) -> LlmctlRuntimeError:
    endpoint = _endpoint() or "https://huggingface.co"
    why = f" ({type(exc).__name__}: {exc})" if exc else ""
    return LlmctlRuntimeError(
        _shown(f"cannot reach the Hugging Face Hub at {endpoint} for {repo}{why}"),
        "check the network; set HF_ENDPOINT to a mirror; HF_HUB_OFFLINE=1 uses files already in the cache; "
        "`pystdlib` and local files need no network",
    )


def _from_cache(repo: str, revision: str, cache_dir: str | None, cause: BaseException | None) -> HubListing:
    storage = _cache_root(cache_dir) / f"datasets--{repo.replace('/', '--')}"
    commit = revision if _COMMIT.match(revision) else None
    ref = storage / "refs" / revision
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        if _offline():
            raise LlmctlRuntimeError(
                f"HF_HUB_OFFLINE is set and {repo}@{revision} is not in the Hub cache ({storage.parent})",
                "unset HF_HUB_OFFLINE to download it, or use `pystdlib` or local files",
            )
        raise _unreachable(repo, cause)
    files = {
        p.relative_to(snapshot).as_posix(): HubFile(p.relative_to(snapshot).as_posix(), size=p.stat().st_size)
        for p in sorted(snapshot.rglob("*"))
        if p.is_file()
    }
    return HubListing(
        repo, revision, commit or revision, files, offline=True, cache_dir=cache_dir, snapshot=snapshot
    )


def list_hub_files(repo: str, revision: str, cache_dir: str | None = None) -> HubListing:
    """Resolve `revision` to a commit and list its files with sizes and checksums."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if _offline():
        return _from_cache(repo, revision, cache_dir, None)
    try:
        info = HfApi(endpoint=_endpoint()).dataset_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError as exc:
        raise LlmctlError(
            f"{repo} is gated on the Hub",
            "accept its terms on its Hub page and set HF_TOKEN to a token of yours",
        ) from exc
    except RevisionNotFoundError as exc:
        raise LlmctlError(
            f"revision '{revision}' not found in {repo}", "use a branch, tag or commit of the repo"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise LlmctlError(
            _shown(f"dataset {repo} not found on {_endpoint() or 'https://huggingface.co'}"),
            "check the name (hf:owner/name); private repos need HF_TOKEN",
        ) from exc
    except OfflineModeIsEnabled as exc:
        return _from_cache(repo, revision, cache_dir, exc)
    except (httpx2.ConnectError, httpx2.TimeoutException, HfHubHTTPError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status is not None and status < 500:
            raise LlmctlRuntimeError(f"the Hub refused to list {repo}@{revision} (HTTP {status})") from exc
        return _from_cache(repo, revision, cache_dir, exc)
    files = {}
    for sibling in info.siblings or []:
        _check_repo_path(repo, sibling.rfilename)
        lfs = sibling.lfs
        files[sibling.rfilename] = HubFile(
            sibling.rfilename,
            size=lfs.size if lfs else sibling.size,
            sha256=lfs.sha256 if lfs else None,
            blob_id=None if lfs else sibling.blob_id,
        )
    commit = info.sha or revision
    _remember_ref(repo, revision, commit, cache_dir)
    return HubListing(repo, revision, commit, files, cache_dir=cache_dir)


def _remember_ref(repo: str, revision: str, commit: str, cache_dir: str | None) -> None:
    """Record branch -> commit in the cache's refs/ (as huggingface_hub does), so offline runs find it."""
    if _COMMIT.match(revision):
        return
    ref = _cache_root(cache_dir) / f"datasets--{repo.replace('/', '--')}" / "refs" / revision
    from llmctl.files import atomic_write_text

    with contextlib.suppress(LlmctlError):  # a read-only cache only costs the offline fallback
        atomic_write_text(ref, commit)


def _tqdm_adapter(progress: TransferProgress) -> type:
    """A tqdm look-alike class for huggingface_hub's `tqdm_class`, forwarding to our progress."""

    class _Bar:
        def __init__(
            self, *args: Any, desc: str | None = None, total: int | None = None, initial: int = 0, **kw: Any
        ):
            self._task = progress.task(str(desc or "download"), total, completed=initial)
            self.n = initial
            self._total = total

        @property
        def total(self) -> int | None:
            return self._total

        @total.setter
        def total(self, value: int | None) -> None:
            self._total = value
            self._task.set_total(value)

        def update(self, n: int | float = 1) -> None:
            self.n += int(n)
            self._task.advance(int(n))

        def update_transfer(self, n: int | float = 1) -> None:
            """Xet network bytes: the bar counts bytes written instead."""

        def close(self) -> None:
            self._task.close()

        def __enter__(self) -> _Bar:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None  # set_postfix_str, refresh, ... : nothing to draw

    return _Bar


def _git_blob_id(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode(), usedforsecurity=False)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_hub_file(
    listing: HubListing, name: str, progress: TransferProgress | None = None
) -> tuple[Path, str]:
    """Download one file of the listing (or take it from the cache); return (path, sha256).

    A file whose checksum differs from the listing is removed from the cache and reported by name.
    """
    from llmctl.raw.http_download import file_sha256

    _check_repo_path(listing.repo, name)
    if listing.offline and listing.snapshot is not None:
        path = listing.snapshot / name
        return path, file_sha256(path)
    import httpx2
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RemoteEntryNotFoundError

    try:
        local = hf_hub_download(
            listing.repo,
            name,
            repo_type="dataset",
            revision=listing.commit,
            cache_dir=listing.cache_dir,
            endpoint=_endpoint(),
            tqdm_class=_tqdm_adapter(progress or NoProgress()),  # type: ignore[arg-type]
        )
    except RemoteEntryNotFoundError as exc:
        raise LlmctlRuntimeError(f"{name} is not in {listing.repo}@{listing.commit[:12]}") from exc
    except (LocalEntryNotFoundError, httpx2.ConnectError, httpx2.TimeoutException) as exc:
        raise _unreachable(listing.repo, exc) from exc
    except (OSError, HfHubHTTPError, httpx2.HTTPError) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            raise io_error(exc, exc.filename or _cache_root(listing.cache_dir)) from None
        raise LlmctlRuntimeError(
            _shown(f"download of {name} from {listing.repo} failed ({exc})"),
            "run the same command again; files already downloaded are kept in the Hub cache",
        ) from exc
    path = Path(str(local))
    sha256 = file_sha256(path)
    expected = listing.files.get(name)
    bad = None
    if expected and expected.sha256 and sha256 != expected.sha256:
        bad = f"SHA-256 is {sha256}, the Hub lists {expected.sha256}"
    elif expected and expected.blob_id and _git_blob_id(path) != expected.blob_id:
        bad = f"git blob id differs from the Hub's {expected.blob_id}"
    if bad:
        blob = path.resolve()
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise LlmctlRuntimeError(
            f"checksum mismatch for {name} from {listing.repo}: {bad}",
            "the corrupt copy was removed from the Hub cache; run the command again to download it afresh",
        )
    return path, sha256
