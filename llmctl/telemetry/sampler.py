"""Hardware sampling on a background thread: NVML for GPUs, psutil and RAPL for the host.

The thread wakes every `interval` seconds, reads each backend and appends one `dict` to a bounded
history; the training step never waits for it. A backend that cannot read (no pynvml, no GPU, RAPL
not readable) simply leaves its fields out, and they show as n/a.

Energy comes from the GPU's total-energy counter where it has one (Volta and newer), else from
integrating power samples over time (trapezoids); on the host from RAPL's package counters.

    sampler = HardwareSampler([NvmlBackend(pynvml, [0]), HostBackend()], interval=1.0)
    sampler.start(); ...; sampler.latest(); sampler.window(since); sampler.stop()
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

# Fields averaged over a window; the rest of a sample is shown as its latest value.
AVERAGED = ("gpu_util_pct", "gpu_mem_used_bytes", "power_w", "cpu_util_pct", "rss_bytes")


class Backend(Protocol):
    """One source of hardware readings."""

    name: str
    energy_source: str | None

    def read(self) -> dict[str, float]:
        """Current readings; energy, when present, as `energy_j`, a monotonic counter in joules."""

    def close(self) -> None:
        """Release the library handle."""


class NvmlBackend:
    """GPU readings through an NVML module (pynvml, or a fake with the same functions in tests).

    Several devices are summed (memory, power, energy) or averaged (utilization, clocks).
    """

    name = "nvml"

    def __init__(self, nvml: Any, indices: list[int], owns_init: bool = False) -> None:
        self.nvml = nvml
        self.owns_init = owns_init
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in indices]
        self.has_counter = all(self._energy_mj(h) is not None for h in self.handles)
        self.energy_source = "nvml_energy_counter" if self.has_counter else "nvml_power_integration"

    def _call(self, fn: str, *args: Any) -> Any:
        try:
            return getattr(self.nvml, fn)(*args)
        except Exception:  # NVMLError_NotSupported and friends: this field is n/a on this GPU
            return None

    def _energy_mj(self, handle: Any) -> float | None:
        return self._call("nvmlDeviceGetTotalEnergyConsumption", handle)

    def read(self) -> dict[str, float]:
        util, mem, power, temp, clock, energy = [], [], [], [], [], []
        for h in self.handles:
            rates = self._call("nvmlDeviceGetUtilizationRates", h)
            if rates is not None:
                util.append(float(rates.gpu))
            info = self._call("nvmlDeviceGetMemoryInfo", h)
            if info is not None:
                mem.append(float(info.used))
            milliwatts = self._call("nvmlDeviceGetPowerUsage", h)
            if milliwatts is not None:
                power.append(milliwatts / 1000.0)
            celsius = self._call("nvmlDeviceGetTemperature", h, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0))
            if celsius is not None:
                temp.append(float(celsius))
            mhz = self._call("nvmlDeviceGetClockInfo", h, getattr(self.nvml, "NVML_CLOCK_SM", 1))
            if mhz is not None:
                clock.append(float(mhz))
            if self.has_counter:
                millijoules = self._energy_mj(h)
                if millijoules is not None:
                    energy.append(millijoules / 1000.0)
        n = len(self.handles)
        out: dict[str, float] = {}
        if len(util) == n:
            out["gpu_util_pct"] = sum(util) / n
        if len(mem) == n:
            out["gpu_mem_used_bytes"] = sum(mem)
        if len(power) == n:
            out["power_w"] = sum(power)
        if len(temp) == n:
            out["temperature_c"] = max(temp)
        if len(clock) == n:
            out["sm_clock_mhz"] = sum(clock) / n
        if self.has_counter and len(energy) == n:
            out["energy_j"] = sum(energy)
        return out

    def close(self) -> None:
        if self.owns_init:
            self._call("nvmlShutdown")


class RaplReader:
    """Host package energy from Linux powercap (Intel RAPL; AMD exposes the same files).

    Usually root-only since 2020 (CVE-2020-8694); unreadable means no host energy, not an error.
    """

    def __init__(self, root: str | Path = "/sys/class/powercap") -> None:
        self.zones: list[tuple[Path, float]] = []
        root = Path(root)
        if not root.is_dir():
            return
        for zone in sorted(root.glob("intel-rapl:*")):
            # Top-level zones only (intel-rapl:0), their children (intel-rapl:0:0) are inside them.
            if zone.name.count(":") != 1:
                continue
            try:
                int((zone / "energy_uj").read_text())
                wrap = (
                    float((zone / "max_energy_range_uj").read_text())
                    if (zone / "max_energy_range_uj").exists()
                    else 0.0
                )
            except (OSError, ValueError):
                continue
            self.zones.append((zone / "energy_uj", wrap))
        self._last: list[float] = []
        self._total_uj = 0.0

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def read_joules(self) -> float | None:
        """Joules since the first read, unwrapping counters that roll over at max_energy_range_uj."""
        try:
            now = [float(path.read_text()) for path, _ in self.zones]
        except (OSError, ValueError):
            return None
        if self._last:
            for (_, wrap), before, after in zip(self.zones, self._last, now, strict=True):
                delta = after - before
                if delta < 0 and wrap > 0:
                    delta += wrap
                self._total_uj += max(delta, 0.0)
        self._last = now
        return self._total_uj / 1e6


class HostBackend:
    """This process's RSS and CPU utilization (psutil), plus RAPL energy when readable."""

    name = "host"

    def __init__(self, rapl: RaplReader | None = None) -> None:
        import psutil

        self.process = psutil.Process(os.getpid())
        self.cpus = (
            len(self.process.cpu_affinity()) if hasattr(self.process, "cpu_affinity") else os.cpu_count() or 1
        )
        # The first reading covers the process's life so far, so even a short run has a figure.
        self._cpu_mark = (time.monotonic() - max(0.0, time.time() - self.process.create_time()), 0.0)
        self.rapl = rapl if rapl is not None else RaplReader()
        self.energy_source = "rapl" if self.rapl.available else None

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            out["rss_bytes"] = float(self.process.memory_info().rss)
            wall, cpu = self._cpu_now()
            wall0, cpu0 = self._cpu_mark
            # Below 0.1 s the clock ticks of CPU time make the ratio meaningless (it reads >100%).
            if wall - wall0 >= 0.1:
                out["cpu_util_pct"] = min(100.0, 100.0 * (cpu - cpu0) / (wall - wall0) / max(self.cpus, 1))
                self._cpu_mark = (wall, cpu)
        except Exception:  # the process table can be briefly unreadable in containers
            pass
        if self.rapl.available:
            joules = self.rapl.read_joules()
            if joules is not None:
                out["host_energy_j"] = joules
        return out

    def _cpu_now(self) -> tuple[float, float]:
        times = self.process.cpu_times()
        return time.monotonic(), times.user + times.system

    def close(self) -> None:
        return None


class EnergyMeter:
    """Joules since the first reading, from a monotonic counter or else from power over time."""

    def __init__(self) -> None:
        self.joules = 0.0
        self.source: str | None = None
        self._counter0: float | None = None
        self._last_power: tuple[float, float] | None = None

    def add(self, t: float, counter_j: float | None, power_w: float | None) -> None:
        if counter_j is not None:
            if self._counter0 is None:
                self._counter0 = counter_j
            self.joules = counter_j - self._counter0
            self.source = "counter"
        elif power_w is not None:
            if self._last_power is not None:
                t0, p0 = self._last_power
                self.joules += 0.5 * (p0 + power_w) * max(t - t0, 0.0)
            self._last_power = (t, power_w)
            self.source = "power_integration"


class HardwareSampler:
    """Reads the backends every `interval` seconds on a daemon thread.

    `history_size` bounds the samples kept for window averages; run averages use running sums,
    so a long run's summary still covers every sample.
    """

    def __init__(
        self,
        backends: list[Any],
        interval: float = 1.0,
        history_size: int = 1000,
        clock: Any = time.monotonic,
    ) -> None:
        self.backends = backends
        self.interval = interval
        self.clock = clock
        self.history: deque[dict[str, float]] = deque(maxlen=max(1, history_size))
        self.energy = EnergyMeter()
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._peaks: dict[str, float] = {}
        self._latest: dict[str, float] = {}
        self._first_t: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def energy_source(self) -> str | None:
        for b in self.backends:
            if getattr(b, "name", "") == "nvml":
                return b.energy_source
        for b in self.backends:
            if getattr(b, "energy_source", None):
                return b.energy_source
        return None

    def sample_once(self) -> dict[str, float]:
        """Take one reading from every backend now (the thread's body; tests call it directly)."""
        t = self.clock()
        sample: dict[str, float] = {"t": t}
        for backend in self.backends:
            try:
                sample.update(backend.read())
            except Exception:  # a failing backend must never take the training run down
                continue
        gpu = "power_w" in sample or "energy_j" in sample
        counter = sample.get("energy_j") if gpu else sample.get("host_energy_j")
        power = sample.get("power_w") if gpu else None
        with self._lock:
            self.energy.add(t, counter, power)
            sample["energy_total_j"] = self.energy.joules if self.energy.source else float("nan")
            if self._first_t is None:
                self._first_t = t
            for key in AVERAGED:
                if key in sample:
                    self._sums[key] = self._sums.get(key, 0.0) + sample[key]
                    self._counts[key] = self._counts.get(key, 0) + 1
                    self._peaks[key] = max(self._peaks.get(key, sample[key]), sample[key])
            self.history.append(sample)
            self._latest = sample
        return sample

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample_once()

    def start(self) -> None:
        """Take a baseline reading, then sample on a daemon thread."""
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="llmctl-hw-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, take a last reading (so energy covers the whole run), close backends."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(2.0, 2 * self.interval))
            self._thread = None
            self.sample_once()
        for backend in self.backends:
            with contextlib.suppress(Exception):
                backend.close()

    def latest(self) -> dict[str, float]:
        """The newest sample (an immutable snapshot: the thread replaces it, never edits it)."""
        return self._latest

    def window(self, since: float) -> dict[str, float]:
        """Means of the averaged fields over samples taken at or after `since` (clock time).

        With no sample in the window yet, the latest sample stands in for it.
        """
        with self._lock:
            samples = [s for s in self.history if s["t"] >= since] or ([self._latest] if self._latest else [])
        out: dict[str, float] = {}
        for key in AVERAGED:
            values = [s[key] for s in samples if key in s]
            if values:
                out[key] = sum(values) / len(values)
        return out

    def run_averages(self) -> dict[str, float]:
        """Means and peaks over every sample since start, plus energy and the sampled duration."""
        with self._lock:
            out = {key: self._sums[key] / self._counts[key] for key in self._sums}
            out.update({f"{key}_peak": value for key, value in self._peaks.items()})
            if self.energy.source:
                out["energy_j"] = self.energy.joules
            if self._first_t is not None and self._latest:
                out["sampled_seconds"] = self._latest["t"] - self._first_t
        return out


def nvml_indices(
    device: str, world_size: int, device_count: int, environ: dict[str, str] | None = None
) -> list[int]:
    """NVML device indices for a torch device string, honouring CUDA_VISIBLE_DEVICES.

    Under a single-node multi-rank launch (LOCAL_WORLD_SIZE == world size) rank 0 samples every
    rank's GPU, so power and energy cover the whole job; across nodes it samples its own GPU only.
    """
    env = os.environ if environ is None else environ
    cuda_index = int(device.split(":", 1)[1]) if ":" in device else 0
    visible = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    mapping = (
        [int(v) for v in visible]
        if visible and all(v.isdigit() for v in visible)
        else list(range(device_count))
    )
    local_world = int(env.get("LOCAL_WORLD_SIZE", "1") or 1)
    wanted = range(world_size) if world_size > 1 and local_world == world_size else [cuda_index]
    return [mapping[i] for i in wanted if i < len(mapping) and mapping[i] < device_count]
