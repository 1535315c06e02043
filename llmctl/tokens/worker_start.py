"""How `tokenize` starts its worker processes: from a fork server, started as early as possible.

Workers fork from a clean, single-threaded server that imported the encoding modules once: spawn
would import them again in every worker, and fork would copy a parent that already runs pyarrow and
`tokenizers` threads. Starting the server first thing lets its imports overlap the parent's own work
(loading the tokenizer, converting it to tiktoken ranks, planning the shards). Imports nothing heavy.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

PRELOAD = ["__main__", "llmctl.tokens.workers", "tiktoken", "pyarrow"]


def worker_context() -> Any:
    """The multiprocessing context workers are started with: forkserver, or spawn where there is none."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    import multiprocessing.forkserver as forkserver

    forkserver.set_forkserver_preload(PRELOAD)
    return mp.get_context("forkserver")


def prestart_workers(num_proc: int) -> None:
    """Start the fork server now (a no-op for one process or without forkserver)."""
    if num_proc > 1 and worker_context().get_start_method() == "forkserver":
        import multiprocessing.forkserver as forkserver

        forkserver.ensure_running()
