"""The parallel engine of `tokenize` and `count --data`: raw chunks in, ordered results out.

The parent reads chunks and submits them to N worker processes (or encodes them itself when N is
1: same code, same bytes); results are yielded in submission order, with at most 2N + 2 chunks in
flight, so memory is bounded by a few MiB per worker whatever the corpus size.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from llmctl.data.token_plan import ShardPlan, iter_chunks
from llmctl.data.token_workers import (
    ChunkError,
    ChunkResult,
    EncodePolicy,
    encode_chunk,
    encode_rows,
    init_worker,
)
from llmctl.data.worker_start import worker_context
from llmctl.errors import LlmctlError, LlmctlRuntimeError
from llmctl.tokenizer.fast import EncoderSpec


class _Ready:
    """A result computed already, behind the AsyncResult interface."""

    def __init__(self, result: ChunkResult) -> None:
        self._result = result

    def get(self) -> ChunkResult:
        """The result."""
        return self._result


class _InProcess:
    """The pool interface run in this process (--num-proc 1): same code path, same bytes."""

    def __init__(self, spec: EncoderSpec, policy: EncodePolicy) -> None:
        self._encoder, self._policy = spec.build(), policy

    def submit(self, array: Any) -> _Ready:
        return _Ready(encode_rows(array, self._encoder, self._policy))


class _Pool:
    """N worker processes, each with its own encoder (built once by the initializer).

    concurrent.futures rather than multiprocessing.Pool: when a worker dies (killed, out of memory),
    the pending results fail with BrokenProcessPool instead of waiting forever.
    """

    def __init__(self, spec: EncoderSpec, policy: EncodePolicy, num_proc: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(
            num_proc, mp_context=worker_context(), initializer=init_worker, initargs=(spec, policy)
        )

    def submit(self, array: Any) -> Any:
        return _Pending(self._pool.submit(encode_chunk, array))

    def close(self, ok: bool) -> None:
        # Workers ignore Ctrl-C; on failure the queued chunks are cancelled and running ones (well
        # under a second each) finish before the processes exit.
        self._pool.shutdown(wait=True, cancel_futures=not ok)


class _Pending:
    def __init__(self, future: Any) -> None:
        self._future = future

    def get(self) -> ChunkResult | ChunkError:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return self._future.result()
        except BrokenProcessPool as exc:
            raise LlmctlRuntimeError(
                "a tokenizer worker process died (killed, or out of memory)",
                "rerun the same command with fewer --num-proc: complete shards are kept",
            ) from exc


@contextmanager
def _executor(spec: EncoderSpec, policy: EncodePolicy, num_proc: int) -> Iterator[Any]:
    if num_proc <= 1:
        yield _InProcess(spec, policy)
        return
    pool = _Pool(spec, policy, num_proc)
    ok = False
    try:
        yield pool
        ok = True
    finally:
        pool.close(ok)


def pipeline(
    plans: list[ShardPlan], column: str, spec: EncoderSpec, policy: EncodePolicy, num_proc: int,
) -> Iterator[tuple[ShardPlan, int, ChunkResult | None]]:
    """(plan, first row, result) per chunk in order, then (plan, -1, None) when a shard's rows are done."""
    window: deque[tuple[ShardPlan, int, Any]] = deque()
    limit = 2 * max(num_proc, 1) + 2

    def pop() -> tuple[ShardPlan, int, ChunkResult | None]:
        plan, position, pending = window.popleft()
        result = None if pending is None else pending.get()
        if isinstance(result, ChunkError):
            raise LlmctlError(result.message, result.hint, result.exit_code)
        return plan, position, result

    with _executor(spec, policy, num_proc) as pool:
        for plan in plans:
            for position, array in iter_chunks(plan, column):
                window.append((plan, position, pool.submit(array)))
                while len(window) > limit:
                    yield pop()
            window.append((plan, -1, None))
            while window and (window[0][2] is None or len(window) > limit):
                yield pop()
        while window:
            yield pop()
