"""`Telemetry`: the Reporter the Trainer talks to (llmctl/telemetry/events.py).

The loop hands over raw counts; this turns them into figures (counters.py, efficiency.py), adds
hardware readings (sampler.py) and passes records to the sinks (sinks.py, panel.py) through one
writer thread (writer.py), so `step()` costs a few dictionary updates and a queue put, and a slow
disk or a blocked stderr pipe never stalls training. Only rank 0 samples hardware and writes.

    telemetry = Telemetry(cfg, run_dir=Path("runs/demo"), is_rank0=rank == 0)
    telemetry.start(info)
    telemetry.step(counts)          # every optimizer step
    telemetry.close("completed")    # -> RunSummary, also written to summary.json
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from pathlib import Path
from typing import Any

from llmctl.config import Config
from llmctl.telemetry.counters import Counters
from llmctl.telemetry.efficiency import efficiency_metrics, energy_figures
from llmctl.telemetry.events import (
    EvalResult,
    RunInfo,
    RunSummary,
    SampleRecord,
    StepCounts,
    TaskEvalResult,
)
from llmctl.telemetry.mix import MixTally
from llmctl.telemetry.settings import apply_env_aliases, device_peak_flops
from llmctl.telemetry.sinks import Sink
from llmctl.telemetry.writer import SinkWriter

_HARDWARE_KEYS = (
    "gpu_util_pct",
    "gpu_mem_used_bytes",
    "power_w",
    "temperature_c",
    "sm_clock_mhz",
    "cpu_util_pct",
    "rss_bytes",
)


class Telemetry:
    """Implements the Reporter protocol: counters, hardware sampler, sinks and the live panel.

    `nvml` is an NVML module (tests pass a fake); None imports pynvml when the device is a GPU.
    `sinks` replaces the default set (panel or plain lines, JSONL, CSV, TensorBoard, summary).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path | str | None,
        is_rank0: bool = True,
        nvml: Any = None,
        *,
        sinks: list[Sink] | None = None,
        environ: dict[str, str] | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.settings = apply_env_aliases(cfg.telemetry, environ)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.is_rank0 = is_rank0
        self.log_every = max(1, self.settings.log_interval or cfg.train.log_every)
        self._nvml = nvml
        self._custom_sinks = sinks
        self._clock = clock
        self.info: RunInfo | None = None
        self.counters: Counters | None = None
        self.sinks: list[Sink] = []
        self.sampler: Any = None
        self.peak_source: str | None = None
        self._pending_state: dict[str, Any] | None = None
        self._energy_before = 0.0
        self._losses: deque[float] = deque(maxlen=60)
        self._last_eval: dict[str, Any] | None = None
        self._last_sample: dict[str, Any] | None = None
        self._last_task_eval: dict[str, Any] | None = None
        self._last_train: dict[str, Any] | None = None
        self._last_figures: dict[str, Any] = {}
        self._window_since = clock()
        self._energy_mark: tuple[float, float] | None = None
        self._generated = [0, 0.0]
        self._cuda: Any = None
        self._writer: SinkWriter | None = None
        self._every_step: list[Sink] = []
        self._closed: RunSummary | None = None
        self.trackers: list[Any] = []
        # A tracker asked for but not installed is an error on every rank, before any work.
        from llmctl.telemetry.trackers import require_installed

        for tracker in ("wandb", "mlflow"):
            if getattr(self.settings, tracker, False):
                require_installed(tracker)
        self._mix = MixTally()

    # -- set-up ---------------------------------------------------------------------------------

    def start(self, info: RunInfo) -> None:
        """Resolve the peak, start the sampler, open the sinks and the writer thread."""
        self.info = info
        # Trackers connect first, on this thread: a refusal (file store, server down) stops the run
        # here with an error, before the panel starts or any file is touched, and their set-up time
        # (imports, database migrations, network) stays out of the run's clock.
        notes = self._connect_trackers(info) if self.is_rank0 else []
        self._mix.start(info.data_sources)
        peak, self.peak_source = device_peak_flops(
            info.device, info.device_name, info.dtype, self.settings.peak_tflops
        )
        self.counters = Counters(
            info.flops_per_token,
            peak * info.world_size if peak else None,
            total_steps=info.total_steps,
            start_step=info.start_step,
            clock=self._clock,
        )
        if self._pending_state is not None:
            self._restore(self._pending_state)
        if not self.is_rank0:
            return
        if self.settings.enabled:
            self.sampler = self._make_sampler(info)
        if info.device.startswith("cuda"):
            self._cuda = self._cuda_memory_api(info.device)
        self.sinks = self._custom_sinks if self._custom_sinks is not None else self._default_sinks()
        self.sinks += self.trackers  # last: their closing lines print after the panel has gone
        self._every_step = [s for s in self.sinks if s.every_step]
        plot_dir = self.run_dir if self.settings.plot_every else None
        self._writer = SinkWriter(self.sinks, plot_dir)
        self._writer.open(info, info.start_step)
        for note in notes:
            self._put("log", note)
        self._window_since = self._clock()

    def _connect_trackers(self, info: RunInfo) -> list[str]:
        """Open the W&B / MLflow runs asked for, continuing the checkpoint's runs on a resume."""
        saved = (self._pending_state or {}).get("trackers") or {}
        notes: list[str] = []
        if self.settings.wandb:
            from llmctl.telemetry.wandb_sink import WandbSink

            self.trackers.append(WandbSink(self.settings, self.run_dir, saved.get("wandb")))
        if self.settings.mlflow:
            from llmctl.telemetry.mlflow_sink import MlflowSink

            self.trackers.append(MlflowSink(self.settings, self.run_dir, saved.get("mlflow")))
        for tracker in self.trackers:
            notes += tracker.connect(info, info.start_step)
        return notes

    def _default_sinks(self) -> list[Sink]:
        from llmctl.output import stderr_is_plain
        from llmctl.telemetry.panel import PanelSink, PlainSink
        from llmctl.telemetry.sinks import CsvSink, JsonlSink, SummarySink, TensorBoardSink

        mode = self.settings.panel
        show_panel = mode == "on" or (mode == "auto" and not stderr_is_plain())
        sinks: list[Sink] = [PanelSink() if show_panel else PlainSink()]
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            sinks += [JsonlSink(self.run_dir), CsvSink(self.run_dir)]
            if self.settings.tensorboard:
                sinks.append(TensorBoardSink(self.run_dir))
            sinks.append(SummarySink(self.run_dir))
        return sinks

    def _make_sampler(self, info: RunInfo) -> Any:
        from llmctl.telemetry.sampler import HardwareSampler, HostBackend, NvmlBackend, nvml_indices

        backends: list[Any] = []
        if info.device.startswith("cuda"):
            nvml, owns = self._nvml, False
            try:
                if nvml is None:
                    import pynvml as nvml

                    nvml.nvmlInit()
                    owns = True
                indices = nvml_indices(info.device, info.world_size, int(nvml.nvmlDeviceGetCount()))
                if indices:
                    backends.append(NvmlBackend(nvml, indices, owns_init=owns))
            except Exception:  # no pynvml, no driver, no permission: GPU fields are n/a, training goes on
                pass
        with contextlib.suppress(Exception):  # psutil missing: host fields are n/a
            backends.append(HostBackend())
        if not backends:
            return None
        sampler = HardwareSampler(
            backends, self.settings.interval, self.settings.history_size, clock=self._clock
        )
        sampler.start()
        self._energy_mark = (sampler.latest().get("t", self._clock()), 0.0)
        return sampler

    @staticmethod
    def _cuda_memory_api(device: str) -> Any:
        try:
            import torch

            if not torch.cuda.is_available():
                return None
            index = torch.device(device).index or 0
            return torch.cuda, index
        except Exception:
            return None

    # -- the Reporter protocol ------------------------------------------------------------------

    def step(self, counts: StepCounts) -> None:
        """Count the step; on logged steps queue one record. Never blocks on I/O or the device."""
        counters = self.counters
        if counters is None:
            raise RuntimeError("Telemetry.step() called before start()")
        figures = counters.update(counts)
        figures.update(self._mix.add(counts.source_tokens))
        if counts.metrics:
            figures = {**figures, **counts.metrics}
        self._losses.append(counts.loss)
        if not self.is_rank0:
            return
        logged = counts.step % self.log_every == 0 or counts.step == counters.total_steps
        if logged:
            figures = self._record(figures)
            self._last_train = figures
            self._put("step", figures)
        self._last_figures = figures
        if self._every_step:
            self._push_snapshot()
        plot_every = self.settings.plot_every
        if plot_every and self.run_dir is not None and counts.step % plot_every == 0:
            self._put("plot")

    def eval(self, result: EvalResult) -> None:
        """Queue an eval record; the panel and summary keep the latest one."""
        ppl_key = getattr(result, "perplexity_name", "perplexity")
        record = {
            "kind": "eval",
            "step": result.step,
            "time": time.time(),
            "loss": result.loss,
            **({ppl_key: result.perplexity} if ppl_key else {}),
            "accuracy": result.accuracy,
            "eval_tokens": result.tokens,
            "bpb": getattr(result, "bpb", None),
            "eval_bytes": getattr(result, "bytes", None),
            "tokens_total": self.counters.tokens if self.counters else None,
            **getattr(result, "metrics", {}),
        }
        if result.by_source is not None:
            record["loss_by_source"] = result.by_source
        self._last_eval = record
        if self.is_rank0:
            self._put("eval", record)

    def task_eval(self, result: TaskEvalResult) -> None:
        """Queue a `task_eval` record (metrics.jsonl, TensorBoard eval/<task>/acc, panel, trackers)."""
        record = {
            "kind": "task_eval",
            "step": result.step,
            "time": time.time(),
            "tasks": {name: dict(figures) for name, figures in result.tasks.items()},
            "centered_acc": result.centered_acc,
            "seconds": result.seconds,
            "tokens_total": self.counters.tokens if self.counters else None,
        }
        self._last_task_eval = record
        if self.is_rank0:
            self._put("task_eval", record)

    def samples(self, records: list[SampleRecord]) -> None:
        """Queue a sampling round for samples.jsonl, metrics.jsonl and the panel; count IT."""
        rows = []
        for r in records:
            rows.append(
                {
                    "kind": "sample",
                    "step": r.step,
                    "prompt": r.prompt,
                    "output": r.output,
                    "reference": r.reference,
                    "source": r.source,
                    **({"rewards": r.rewards} if getattr(r, "rewards", None) is not None else {}),
                }
            )
            new_tokens, seconds = getattr(r, "new_tokens", None), getattr(r, "seconds", None)
            if new_tokens and seconds:
                self._generated[0] += int(new_tokens)
                self._generated[1] += float(seconds)
        if rows:
            self._last_sample = rows[0]
        if self.is_rank0 and rows:
            self._put("samples", rows)

    def log(self, message: str) -> None:
        """A line of information, printed above the panel or as a plain line."""
        if self.is_rank0:
            self._put("log", message)

    def state_dict(self) -> dict[str, Any]:
        """Run totals for the checkpoint (tokens, FLOPs, steps, time, energy) and the tracker run ids."""
        if self.counters is None:
            return dict(self._pending_state or {})
        state = self.counters.state_dict()
        energy = self._energy_now()
        state["energy_j"] = self._energy_before + (energy or 0.0)
        trackers = {t.tracker: t.state() for t in self.trackers if t.state()}
        if trackers:  # the tracker runs a resume continues (wandb / mlflow run ids)
            state["trackers"] = trackers
        elif (self._pending_state or {}).get("trackers"):
            state["trackers"] = self._pending_state["trackers"]  # kept when this session logs to none
        state["mix_tokens"] = self._mix.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore run totals after a resume; every rate restarts from this process's window."""
        self._pending_state = dict(state)  # start() restores the counters and hands trackers their runs
        if self.counters is not None:
            self._restore(state)

    def _restore(self, state: dict[str, Any]) -> None:
        assert self.counters is not None
        self.counters.load_state_dict(state)
        self._energy_before = float(state.get("energy_j", 0.0) or 0.0)
        self._mix.load_state_dict(state.get("mix_tokens"))
        self._mix.start(self.info.data_sources if self.info else None)
        self._window_since = self._clock()

    def close(self, status: str) -> RunSummary:
        """Stop sampling, write summary.json, close every sink; safe to call twice."""
        if self._closed is not None:
            return self._closed
        if self.sampler is not None:
            self.sampler.stop()
        summary = self._summary(status)
        if self.is_rank0 and self._writer is not None:
            if self._every_step:
                self._push_snapshot()  # the final eval and sample arrive after the last step
            self._writer.close(summary)
        self._closed = RunSummary(values=summary)
        return self._closed

    def flush(self) -> None:
        """Wait until every queued record has reached its sinks (tests, and before reading files)."""
        if self._writer is not None:
            self._writer.flush()

    def _put(self, kind: str, payload: Any = None) -> None:
        if self._writer is not None:
            self._writer.put(kind, payload)

    # -- figures --------------------------------------------------------------------------------

    def _energy_now(self) -> float | None:
        if self.sampler is None or not self.sampler.energy.source:
            return None
        return self.sampler.energy.joules

    def _record(self, figures: dict[str, Any]) -> dict[str, Any]:
        """A full metrics record: step figures, log-window rates, hardware, efficiency, energy."""
        assert self.counters is not None and self.info is not None
        window = self.counters.take_log_window()
        now = self._clock()
        hardware = self.sampler.window(self._window_since) if self.sampler is not None else {}
        latest = self.sampler.latest() if self.sampler is not None else {}
        self._window_since = now
        record: dict[str, Any] = {"kind": "train", "step": figures["step"], "time": time.time(), **figures}
        for key in ("tokens_per_sec", "trained_tokens_per_sec", "samples_per_sec", "tflops_per_sec", "mfu"):
            record[key] = window[key]
        for key in _HARDWARE_KEYS:
            record[key] = hardware.get(key, latest.get(key))
        record["mem_peak_alloc_bytes"] = self._peak_allocated()
        energy = self._energy_now()
        power = None
        if energy is not None and "power_w" not in hardware and self._energy_mark is not None:
            # Host (RAPL) energy: average power is energy over the time between records.
            t_prev, e_prev = self._energy_mark
            t_last = latest.get("t", now)
            if t_last > t_prev:
                power = (energy - e_prev) / (t_last - t_prev)
            self._energy_mark = (t_last, energy)
        record.update(
            efficiency_metrics(
                window["window_tokens"],
                window["window_samples"],
                window["window_steps"],
                window["window_seconds"],
                self.info.n_params,
                hardware,
                self.info.device.startswith("cuda"),
                power_w=power,
            )
        )
        total_energy = self._energy_before + energy if energy is not None else None
        record.update(energy_figures(total_energy, self.counters.tokens))
        return record

    def _peak_allocated(self) -> float | None:
        if self._cuda is None:
            return None
        cuda, index = self._cuda
        try:
            peak = float(cuda.max_memory_allocated(index))
            cuda.reset_peak_memory_stats(index)
            return peak
        except Exception:
            return None

    def _push_snapshot(self) -> None:
        snapshot = self._snapshot(self._last_figures)
        for sink in self._every_step:
            sink.live_update(snapshot)

    def _snapshot(self, figures: dict[str, Any]) -> dict[str, Any]:
        """What the panel draws: this step's figures plus the latest record, hardware, eval, sample."""
        info = self.info
        snap = dict(self._last_train or {})
        snap.update(figures)
        if self.sampler is not None:
            latest = self.sampler.latest()
            for key in _HARDWARE_KEYS:
                if key in latest:
                    snap[key] = latest[key]
            energy = self._energy_now()
            snap["energy_j"] = self._energy_before + energy if energy is not None else None
        snap["losses"] = tuple(self._losses)
        snap["eval"] = self._last_eval
        snap["sample"] = self._last_sample
        snap["task_eval"] = self._last_task_eval
        if info is not None:
            snap["objective"] = info.objective
            snap["run"] = Path(info.run_dir).name if info.run_dir else None
            snap["device_label"] = f"{info.device_name} · {info.dtype}" + (
                f" · x{info.world_size}" if info.world_size > 1 else ""
            )
        return snap

    def _summary(self, status: str) -> dict[str, Any]:
        info, c = self.info, self.counters
        summary: dict[str, Any] = {"status": status}
        if info is None or c is None:
            return summary
        hw = self.sampler.run_averages() if self.sampler is not None else {}
        averages = c.process_averages()
        power = None
        if hw.get("energy_j") is not None and hw.get("sampled_seconds"):
            power = hw["energy_j"] / hw["sampled_seconds"]
        efficiency = efficiency_metrics(
            averages["tokens_this_process"],
            c.process.samples,
            c.process.steps,
            averages["train_seconds_this_process"],
            info.n_params,
            hw,
            info.device.startswith("cuda"),
            power_w=power,
        )
        generated, gen_seconds = self._generated
        efficiency["it_tokens_per_sec"] = generated / gen_seconds if gen_seconds > 0 else None
        energy = self._energy_now()
        total_energy = self._energy_before + energy if energy is not None else None
        last = self._last_train or {}
        summary.update(
            {
                "objective": info.objective,
                "steps": c.step,
                "total_steps": info.total_steps,
                "start_step": info.start_step,
                "tokens": c.tokens,
                "trained_tokens": c.trained_tokens,
                "samples": c.samples,
                "flops": c.flops,
                "flops_per_token": info.flops_per_token,
                "n_params": info.n_params,
                "wall_time_s": c.elapsed(),
                "wall_time_total_s": c.wall_seconds_before + c.elapsed(),
                "train_time_total_s": c.train_seconds,
                **averages,
                "final_loss": self._losses[-1] if self._losses else None,
                "final_accuracy": last.get("accuracy"),
                "final_eval": {k: v for k, v in self._last_eval.items() if k not in ("kind", "time")}
                if self._last_eval
                else None,
                "peak_memory_bytes": hw.get("gpu_mem_used_bytes_peak", hw.get("rss_bytes_peak")),
                "efficientllm": efficiency,
                **energy_figures(total_energy, c.tokens),
                "energy_source": self.sampler.energy_source
                if self.sampler is not None and energy is not None
                else None,
                "device": info.device,
                "device_name": info.device_name,
                "dtype": info.dtype,
                "world_size": info.world_size,
                "peak_tflops_per_device": c.peak_flops / 1e12 / info.world_size if c.peak_flops else None,
                "peak_source": self.peak_source,
                "skipped_steps": (self._last_figures or {}).get("skipped_steps", 0),
                **info.summary_extra,
            }
        )
        if self._mix.sources:
            summary["data_mix"] = self._mix.data_mix()
        return summary
