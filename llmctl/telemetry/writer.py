"""The thread that hands records to the sinks, so the training thread never waits on a sink.

A slow disk, a blocked stderr pipe or a TensorBoard flush delays this thread only. A sink that
raises is dropped with one line on stderr and training goes on. Plot refreshes run in a child
process, so matplotlib never competes with the training loop for the GIL.

    writer = SinkWriter(sinks, plot_dir=run_dir)
    writer.open(info, resume_step)      # sinks' start(), on the caller's thread
    writer.put("step", record)          # returns at once
    writer.close(summary)               # drains the queue, closes the sinks, draws the last plot
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from llmctl.telemetry.sinks import Sink


class SinkWriter:
    """Dispatches ("step" | "eval" | "task_eval" | "samples" | "log" | "plot", payload) items to every sink, in order."""

    def __init__(self, sinks: list[Sink], plot_dir: Path | None = None) -> None:
        self.sinks = list(sinks)
        self.plot_dir = plot_dir
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._plot_proc: subprocess.Popen[bytes] | None = None

    def open(self, info: Any, resume_step: int) -> None:
        """Start every sink here, then the thread.

        Starting on the caller's thread keeps one-off costs (importing TensorBoard holds the GIL
        for a second or more) in set-up time rather than in the first steps' timings.
        """
        for sink in list(self.sinks):
            self._dispatch(sink, "start", (info, resume_step))
        self._thread = threading.Thread(target=self._loop, name="llmctl-telemetry-writer", daemon=True)
        self._thread.start()

    def put(self, kind: str, payload: Any = None) -> None:
        """Queue one item; never blocks."""
        self._queue.put((kind, payload))

    def flush(self) -> None:
        """Wait until every queued item has reached the sinks."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def close(self, summary: dict[str, Any]) -> None:
        """Deliver what is queued, close every sink with `summary`, stop the thread, draw the last plot."""
        if self._thread is None:
            return
        self.put("close", summary)
        self._queue.join()
        self.put("stop")
        self._thread.join(timeout=30)
        self._thread = None
        self._final_plot()

    def _loop(self) -> None:
        while True:
            kind, payload = self._queue.get()
            try:
                if kind == "stop":
                    return
                if kind == "plot":
                    self._spawn_plot()
                    continue
                for sink in list(self.sinks):
                    self._dispatch(sink, kind, payload)
            finally:
                self._queue.task_done()

    def _dispatch(self, sink: Sink, kind: str, payload: Any) -> None:
        try:
            if kind == "start":
                sink.start(*payload)
            elif kind == "step":
                sink.step(payload)
            elif kind == "eval":
                sink.eval(payload)
            elif kind == "task_eval":
                sink.task_eval(payload)
            elif kind == "samples":
                sink.samples(payload)
            elif kind == "log":
                sink.log(payload)
            elif kind == "close":
                sink.close(payload)
        except Exception as exc:  # a broken sink (full disk, missing tensorboard) must not stop training
            self.sinks.remove(sink)
            print(f"telemetry: {type(sink).__name__} disabled after an error: {exc}", file=sys.stderr)

    def _spawn_plot(self) -> None:
        """Refresh plots/latest.png in a child process, unless the previous refresh still runs."""
        if self.plot_dir is None or (self._plot_proc is not None and self._plot_proc.poll() is None):
            return
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        env["MPLBACKEND"] = "Agg"
        command = [sys.executable, "-m", "llmctl.telemetry.plots", str(self.plot_dir), str(self._plot_path())]
        self._plot_proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    def _plot_path(self) -> Path:
        assert self.plot_dir is not None
        return self.plot_dir / "plots" / "latest.png"

    def _final_plot(self) -> None:
        if self.plot_dir is None:
            return
        if self._plot_proc is not None:
            try:
                self._plot_proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._plot_proc.kill()
        from llmctl.telemetry.plots import plot_runs

        try:
            plot_runs([self.plot_dir], self._plot_path())
        except Exception as exc:  # plotting is a convenience; its failure leaves the run intact
            print(f"telemetry: final plot skipped: {exc}", file=sys.stderr)
