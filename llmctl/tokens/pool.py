"""The parallel engine of `tokenize` and `count --data`: raw chunks in, ordered results out.

The parent reads chunks and submits them to N worker processes; results are yielded in the order
the chunks were read, so which process encoded a chunk never shows in the output. When every worker
is busy (above all while they are still starting) the parent encodes the next chunk itself instead of
waiting. With N = 1 the parent does all the work: same code, same bytes. At most 4N + 4 chunks are
in flight, so memory is bounded by a few MiB per worker whatever the corpus size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.tokenizer.fast import BatchEncoder, EncoderSpec
from llmctl.tokens.plan import ShardPlan, iter_chunks
from llmctl.tokens.worker_start import worker_context
from llmctl.tokens.workers import (
    ChunkError,
    ChunkResult,
    EncodePolicy,
    encode_chunk,
    encode_rows,
    init_worker,
)


class _Ready:
    """A result computed already, behind the same get()/done() interface as a worker's."""

    def __init__(self, result: ChunkResult) -> None:
        self._result = result

    def done(self) -> bool:
        return True

    def get(self) -> ChunkResult:
        return self._result


class _Pending:
    """A chunk a worker is encoding."""

    def __init__(self, future: Any) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.done())

    def get(self) -> ChunkResult | ChunkError:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._future.result()
        except BrokenProcessPool as exc:
            raise LlmctlRuntimeError(
                "a tokenizer worker process died (killed, or out of memory)",
                "rerun the same command with fewer --num-proc: complete shards are kept",
            ) from exc


class _Encoders:
    """The parent's own encoder and, for N > 1, N worker processes.

    concurrent.futures rather than multiprocessing.Pool: when a worker dies (killed, out of memory),
    the pending results fail with BrokenProcessPool instead of waiting forever.
    """

    def __init__(self, spec: EncoderSpec, policy: EncodePolicy, num_proc: int) -> None:
        self._spec, self._policy = spec, policy
        self._local: BatchEncoder | None = None
        self._pool = None
        if num_proc > 1:
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(
                num_proc,
                mp_context=worker_context(),
                initializer=init_worker,
                initargs=(spec, policy, os.getpid()),
            )

    def here(self, array: Any) -> _Ready:
        """Encode in this process."""
        if self._local is None:
            self._local = self._spec.build()
        return _Ready(encode_rows(array, self._local, self._policy))

    def submit(self, array: Any) -> _Ready | _Pending:
        """Hand to a worker (or encode here when there are none)."""
        if self._pool is None:
            return self.here(array)
        return _Pending(self._pool.submit(encode_chunk, array))

    def close(self, ok: bool) -> None:
        # Workers ignore Ctrl-C; on failure the queued chunks are cancelled and running ones (well
        # under a second each) finish before the processes exit.
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=not ok)


@contextmanager
def _encoders(spec: EncoderSpec, policy: EncodePolicy, num_proc: int) -> Iterator[_Encoders]:
    encoders = _Encoders(spec, policy, num_proc)
    ok = False
    try:
        yield encoders
        ok = True
    finally:
        encoders.close(ok)


def pipeline(
    plans: list[ShardPlan],
    column: str,
    spec: EncoderSpec,
    policy: EncodePolicy,
    num_proc: int,
) -> Iterator[tuple[ShardPlan, int, ChunkResult | None]]:
    """(plan, first row, result) per chunk in order, then (plan, -1, None) when a shard's rows are done."""
    window: deque[tuple[ShardPlan, int, Any]] = deque()
    busy = 2 * max(num_proc, 1) + 2
    cap = 2 * busy

    def ready() -> bool:
        return bool(window) and (window[0][2] is None or window[0][2].done())

    def pop() -> tuple[ShardPlan, int, ChunkResult | None]:
        plan, position, pending = window.popleft()
        result = None if pending is None else pending.get()
        if isinstance(result, ChunkError):
            raise LlmctlError(result.message, result.hint, result.exit_code)
        return plan, position, result

    with _encoders(spec, policy, num_proc) as encoders:
        for plan in plans:
            for position, array in iter_chunks(plan, column):
                while ready():
                    yield pop()
                while len(window) >= cap:
                    yield pop()
                # Workers all busy: encoding here beats waiting; the window keeps the order.
                helping = num_proc > 1 and len(window) >= busy
                window.append((plan, position, encoders.here(array) if helping else encoders.submit(array)))
            window.append((plan, -1, None))
            while ready():
                yield pop()
        while window:
            yield pop()
