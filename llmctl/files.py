"""Atomic writes, safe names and OSError reporting: the one place every writer goes through.

A file or directory is written under a temporary name in its target folder, fsynced, then renamed
over the target, so a reader sees either the old content or the new, never half of it. A failure
removes the temporary and becomes an `LlmctlIOError` (exit 4) whose hint says what to do; for a
full disk it says how much space was needed and how much is free.

    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from llmctl.errors import LlmctlError, LlmctlIOError

_TMP_PREFIX = ".llmctl-tmp-"


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def free_bytes(path: Path) -> int | None:
    """Free space on the file system holding `path` (or its nearest existing parent), if known."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def io_error(
    exc: OSError, path: Path | str, *, action: str = "write", needed: int | None = None
) -> LlmctlIOError:
    """Turn an OSError into an `error:` line naming the path and a `hint:` with the fix."""
    path = Path(path)
    code = exc.errno
    if code == errno.ENOSPC or code == errno.EDQUOT:
        free = free_bytes(path)
        need = f"about {human_bytes(needed)} needed, " if needed else ""
        have = f"{human_bytes(free)} free" if free is not None else "free space unknown"
        return LlmctlIOError(
            f"no space left on device while trying to {action} {path} ({need}{have})",
            "free some space on that file system or point the output at another one, then run the same command again",
        )
    if code in (errno.EACCES, errno.EPERM):
        return LlmctlIOError(
            f"permission denied: cannot {action} {path}",
            "choose a folder you can write to, or fix its permissions (ls -ld shows the owner)",
        )
    if code == errno.EROFS:
        return LlmctlIOError(
            f"read-only file system: cannot {action} {path}",
            "point the output at a writable file system",
        )
    if code in (errno.ENOTDIR, errno.EEXIST) or (code == errno.EISDIR and action != "read"):
        return LlmctlIOError(
            f"cannot {action} {path}: a path component is a regular file, or the target is a folder",
            "choose an output path whose parents are folders (not files)",
        )
    if code == errno.ENOENT:
        return LlmctlIOError(f"cannot {action} {path}: no such file or folder", "check the path")
    reason = exc.strerror or str(exc)
    return LlmctlIOError(
        f"cannot {action} {path}: {reason}", "check the path, the free space and the permissions"
    )


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def cache_root() -> Path:
    """llmctl's cache folder: $LLMCTL_CACHE, else $XDG_CACHE_HOME/llmctl, else ~/.cache/llmctl."""
    base = os.environ.get("LLMCTL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "llmctl"
    )
    return Path(base)


def file_sha256(path: Path | str, digest: Any = None) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks; continues `digest` (a hashlib object) when given."""
    import hashlib

    digest = digest or hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders can't be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def tmp_name(target: Path) -> Path:
    """The temporary name a write of `target` uses: hidden, in the same folder, unique per process."""
    return target.with_name(f"{_TMP_PREFIX}{target.name}-{os.getpid()}")


def is_tmp_name(path: Path) -> bool:
    """True for temporaries left by a killed writer (safe to delete when no writer runs)."""
    return path.name.startswith(_TMP_PREFIX)


def pid_alive(pid: int) -> bool:
    """True while process `pid` exists on this host (also when it belongs to another user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    except OSError:
        return False
    return True


def clear_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporaries of `target` (and the aside-moved old copy) left by writers killed with -9.

    Only names this module makes for `target` itself count (`.llmctl-tmp-NAME-PID`, `.llmctl-tmp-old-NAME-PID`),
    and only when process PID is gone: a writer that still runs, or another output's temporary, is never
    touched. Returns what was removed.
    """
    removed: list[Path] = []
    candidates = _temporaries_in(target.parent)
    for name in list(candidates):
        for stem in (f"{_TMP_PREFIX}{target.name}-", f"{_TMP_PREFIX}old-{target.name}-"):
            pid = name[len(stem) :] if name.startswith(stem) else ""
            if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
                _remove(target.parent / name)
                removed.append(target.parent / name)
                candidates.discard(name)
    return removed


# A folder's temporaries, listed once per process: a tokenize run writes thousands of shard files into one
# folder, and listing it again for each of them would make the run quadratic in its shard count. Temporaries
# that appear later belong to writers that were alive after this run started, so they are not ours to clear.
_TEMPORARIES: dict[Path, set[str]] = {}


def _temporaries_in(folder: Path) -> set[str]:
    key = folder.absolute()
    if key not in _TEMPORARIES:
        names: set[str] = set()
        with contextlib.suppress(OSError):
            names = {e.name for e in folder.iterdir() if e.name.startswith(_TMP_PREFIX)}
        _TEMPORARIES[key] = names
    return _TEMPORARIES[key]


def _ensure_parent(target: Path) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise io_error(exc, target.parent, action="create") from exc


@contextlib.contextmanager
def atomic_path(
    target: Path | str, *, directory: bool = False, replace: bool = True, needed: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success fsync it and rename it over `target`.

    `directory=True` creates the temporary as an empty folder for the caller to fill (a checkpoint,
    an export). On any exception the temporary is removed; OSError becomes `LlmctlIOError`.
    `replace=False` refuses (exit 2) when `target` appeared meanwhile. `needed` (bytes the write
    will take) refuses a disk with less free space before writing, and goes into a full disk's error.
    Temporaries of `target` left by a killed writer are removed first.
    """
    target = Path(target)
    _ensure_parent(target)
    clear_stale_temporaries(target)
    tmp = tmp_name(target)
    _remove(tmp)
    free = free_bytes(target.parent) if needed else None
    if needed and free is not None and free < needed:
        raise io_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), target, needed=needed)
    try:
        if directory:
            tmp.mkdir()
        yield tmp
        if directory:
            for f in sorted(tmp.rglob("*")):
                if f.is_file() and not f.is_symlink():
                    fsync_file(f)
            fsync_dir(tmp)
        elif tmp.exists():
            fsync_file(tmp)
        if target.exists() and not replace:
            raise LlmctlError(f"{target} already exists", "pass --force to replace it")
        if directory and target.exists():
            # os.replace cannot swap a non-empty folder: move the old one aside first, then drop it.
            trash = target.with_name(f"{_TMP_PREFIX}old-{target.name}-{os.getpid()}")
            _remove(trash)
            os.replace(target, trash)
            os.replace(tmp, target)
            _remove(trash)
        else:
            os.replace(tmp, target)
        fsync_dir(target.parent)
    except OSError as exc:
        error = exc
        if exc.errno is None and needed and (free_bytes(target.parent) or 0) < needed:
            # A short write reported without an errno (numpy's tofile, under GGUF's writer) on a disk
            # that now lacks the room: that is a full disk.
            error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _remove(tmp)
        raise io_error(error, target, needed=needed) from exc
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(target: Path | str, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary beside `target` for writing; it replaces `target` when the block ends cleanly."""
    with atomic_path(target) as tmp:
        try:
            fh = open(tmp, mode, **kwargs)  # noqa: SIM115 - closed below, before the rename
        except OSError as exc:
            raise io_error(exc, target) from exc
        try:
            yield fh
            fh.flush()
        finally:
            fh.close()


def atomic_write_bytes(target: Path | str, data: bytes) -> None:
    """Write `data` to `target` atomically."""
    with atomic_open(target, "wb") as fh:
        fh.write(data)


def atomic_write_text(target: Path | str, text: str) -> None:
    """Write UTF-8 `text` to `target` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: Path | str, obj: Any) -> None:
    """Write `obj` as indented JSON plus a newline to `target` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=2) + "\n")


def atomic_copy(source: Path | str, target: Path | str) -> None:
    """Copy a file to `target` atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


_UNSAFE = re.compile(r"[^A-Za-z0-9._+=@-]+")


def safe_name(name: str, *, default: str = "download") -> str:
    """Reduce a name taken from a URL or a listing to a safe base name.

    Separators of either kind, `..`, control characters and leading dots go: the result never names a
    parent, a hidden file or another folder.
    """
    base = name.replace("\\", "/").split("/")[-1]
    base = _UNSAFE.sub("_", base).strip("._ ")
    if base in ("", ".", ".."):
        return default
    return base[:200]


def ensure_inside(root: Path | str, path: Path | str) -> Path:
    """`path` resolved, after checking it stays inside `root` (resolved too); else an error."""
    root_r = Path(root).resolve()
    path_r = Path(path).resolve()
    if path_r != root_r and root_r not in path_r.parents:
        raise LlmctlError(
            f"refusing to write {path}: it resolves outside {root}",
            "the name came from a URL or a listing; rename the source or download it by hand",
        )
    return path_r
