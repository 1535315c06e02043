"""How `tokenize` starts its worker processes: from a fork server, started as early as possible.

Workers fork from a clean, single-threaded server that imported the encoding modules once: spawn
would import them again in every worker, and fork would copy a parent that already runs pyarrow and
`tokenizers` threads. Starting the server first thing lets its imports overlap the parent's own work
(loading the tokenizer, converting it to tiktoken ranks, planning the shards). Imports nothing heavy.

Two faults this module guards against:
- Python 3.11 starts the fork server with `python -c`, which puts the current directory first on
  sys.path, so a folder named `llmctl` there (a clone's parent) would shadow the package and every
  worker would die on import. The server is started with the current directory left out and the
  folder holding *this* llmctl put first.
- A killed parent (kill -9, OOM) must not leave workers behind. Each worker watches the parent and
  ends with it (`exit_with_parent`); the fork server and the resource tracker end once the workers do.

Start-up is most of a small run, so a small input is encoded in the parent alone (IN_PROCESS_BYTES):
no fork server, no resource tracker, no workers. And workers never re-import the command line: Python
3.11's fork server ignores the `__main__` preload, so every worker of the `llmctl` console script
would run that script (typer, rich, every command) before its first chunk; the server marks the
script as already imported instead (`llmctl.tokens.fork_server`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PRELOAD = ["llmctl.tokens.fork_server", "llmctl.tokens.workers", "tiktoken", "pyarrow"]
"""No "__main__": workers never need the parent's script (a no-op on 3.11, the whole CLI where it works)."""
MAIN_PATH_ENV = "LLMCTL_FORK_SERVER_MAIN"
"""The parent's main script, handed to the fork server (see `llmctl.tokens.fork_server`)."""
IN_PROCESS_BYTES = 2 << 20
"""Below this much raw text, workers cost more to start than they save: the parent encodes it all.
The output is the same bytes either way; only the number of processes differs. The environment
variable LLMCTL_TOKENIZE_IN_PROCESS_BYTES overrides it (0: always start workers)."""
_PARQUET_RATIO = 5
"""Raw text bytes per parquet byte on disk, about the most seen (snappy ~3x, zstd ~4x on text); when
the guess is short, the fork server is only started later, when the footers tell the real size."""
FAST_PATH_MIN_BYTES = 256 << 10
"""Below this much text the tokenizer's own library encodes everything before the tiktoken form would
be ready: converting and checking it takes ~0.15 s, and even a form kept from an earlier run
(`llmctl.tokenizer.fast_cache`) costs importing tiktoken, reading the form and a probe check."""
_PR_SET_PDEATHSIG = 1


def worker_context() -> Any:
    """The multiprocessing context workers are started with: forkserver, or spawn where there is none."""
    import multiprocessing as mp  # here: a small input never starts workers, and this import is 8 ms

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    import multiprocessing.forkserver as forkserver

    forkserver.set_forkserver_preload(PRELOAD)
    with _server_environment():
        forkserver.ensure_running()  # now, while the environment below is in force
    return mp.get_context("forkserver")


@contextlib.contextmanager
def _server_environment() -> Iterator[None]:
    """Environment for starting the fork server: no current directory on sys.path, this llmctl first."""
    saved = {key: os.environ.get(key) for key in ("PYTHONSAFEPATH", "PYTHONPATH", MAIN_PATH_ENV)}
    os.environ["PYTHONSAFEPATH"] = "1"
    main_path = _main_path()
    if main_path is not None:
        os.environ[MAIN_PATH_ENV] = main_path
    root = _package_root()
    if root is not None:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [saved["PYTHONPATH"]])])
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _main_path() -> str | None:
    """The script path every worker would be asked to import as its `__main__` (None for `python -m`)."""
    from multiprocessing import spawn

    path = spawn.get_preparation_data("llmctl").get("init_main_from_path")
    return str(path) if path else None


def _package_root() -> str | None:
    """The folder holding this llmctl, when a fresh interpreter would not find it there by itself.

    An installed llmctl (site-packages, an editable install) needs nothing; one found through the
    parent's own sys.path[0] (a script's folder, `python -m` in a checkout) is added. site-packages
    itself is never put in front: it would shadow the standard library.
    """
    import site

    import llmctl

    root = str(Path(llmctl.__file__).resolve().parent.parent)
    installed = [*getattr(site, "getsitepackages", list)(), site.getusersitepackages()]
    if root in {str(Path(p).resolve()) for p in installed}:
        return None
    return root


def worker_processes(num_proc: int, text_bytes: int) -> int:
    """Processes to encode `text_bytes` of raw text with: `num_proc`, or 1 for a small input."""
    return 1 if text_bytes < _in_process_bytes() else max(num_proc, 1)


def _in_process_bytes() -> int:
    try:
        return int(os.environ.get("LLMCTL_TOKENIZE_IN_PROCESS_BYTES", IN_PROCESS_BYTES))
    except ValueError:
        return IN_PROCESS_BYTES


def estimated_text_bytes(data: Path | None, splits: tuple[str, ...] = ()) -> int | None:
    """About how much raw text the parquet parts on disk hold (an upper bound: parquet compresses text
    by at most _PARQUET_RATIO), from file sizes only (no pyarrow), so it can run before the heavy
    imports. None when unsure (unreadable, no such folder)."""
    if data is None:  # nothing to encode (a usage error follows)
        return 0
    try:
        folders = [data / s for s in splits] if splits else [p for p in data.iterdir() if p.is_dir()]
        on_disk = sum(part.stat().st_size for folder in folders for part in folder.glob("part-*.parquet"))
    except OSError:  # the later check decides
        return None
    return int(on_disk * _PARQUET_RATIO)


def small_input(data: Path | None, splits: tuple[str, ...] = ()) -> bool:
    """True when the parts on disk hold under FAST_PATH_MIN_BYTES of text (and under the in-process
    threshold): building the tiktoken form of the tokenizer (~0.1 s) then costs more than it saves."""
    text = estimated_text_bytes(data, splits)
    return text is not None and text < min(FAST_PATH_MIN_BYTES, _in_process_bytes())


def might_need_workers(data: Path | None, splits: tuple[str, ...] = ()) -> bool:
    """False only when the raw parts on disk are too small to ever reach IN_PROCESS_BYTES of text.

    The exact size comes later from the parquet footers (`worker_processes`). Unsure: True.
    """
    text = estimated_text_bytes(data, splits)
    return text is None or text >= _in_process_bytes()


def prestart_workers(num_proc: int, data: Path | None = None, splits: tuple[str, ...] = ()) -> None:
    """Start the fork server now, so its imports overlap the parent's own work.

    A no-op for one process, without forkserver, or when `data` is too small to be worth workers.
    """
    if num_proc > 1 and might_need_workers(data, splits):
        worker_context()


def exit_with_parent(parent_pid: int) -> None:
    """End this worker as soon as the llmctl process `parent_pid` ends, however it ended.

    Under the fork server a worker's parent is the server, which itself waits for its workers, so
    PR_SET_PDEATHSIG alone would wait forever: a daemon thread watches `parent_pid` (through a pidfd
    where Linux has one, else by polling) and exits the process when it is gone.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    threading.Thread(target=_watch, args=(parent_pid,), name="llmctl-parent-watch", daemon=True).start()


def _watch(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        import select

        select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)
    import time

    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass  # alive, owned by someone else (cannot happen for our own parent, but harmless)
        time.sleep(0.5)
