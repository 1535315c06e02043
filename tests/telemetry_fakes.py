"""Test doubles for telemetry: a fake NVML module, run facts, synthetic steps, and a driver script.

python tests/telemetry_fakes.py RUN_DIR STEPS [--sleep S]   # feeds synthetic steps to Telemetry
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmctl.telemetry.events import RunInfo, StepCounts  # noqa: E402


class FakeNvml:
    """Just enough of pynvml: devices with fixed readings and an energy counter that advances."""

    NVML_TEMPERATURE_GPU = 0
    NVML_CLOCK_SM = 1

    class NVMLError(Exception):
        pass

    def __init__(
        self,
        count: int = 1,
        energy_counter: bool = True,
        power_w: float = 300.0,
        util: float = 90.0,
        mem_used: float = 40e9,
    ) -> None:
        self.count = count
        self.energy_counter = energy_counter
        self.power_w = power_w
        self.util = util
        self.mem_used = mem_used
        self.energy_mj = [5_000_000.0] * count  # the counter starts at driver load, not at zero
        self.shutdown = False

    def advance(self, seconds: float) -> None:
        """Let `seconds` of load pass: the energy counter grows by power x time."""
        self.energy_mj = [e + self.power_w * 1000 * seconds for e in self.energy_mj]

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        self.shutdown = True

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if index >= self.count:
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return SimpleNamespace(gpu=self.util, memory=30)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return SimpleNamespace(used=self.mem_used, total=80e9, free=80e9 - self.mem_used)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        return int(self.power_w * 1000)

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return 64

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return 1980

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        if not self.energy_counter:
            raise self.NVMLError("Not Supported")  # pre-Volta GPUs
        return int(self.energy_mj[h])


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


FLOPS_PER_TOKEN = 6 * 2_000_000 + 12 * 4 * 256 * 64 * 4


def run_info(
    run_dir: Path | None = None,
    device: str = "cpu",
    device_name: str = "AMD EPYC 7B13",
    total_steps: int = 20,
    start_step: int = 0,
    world_size: int = 1,
    dtype: str = "fp32",
    objective: str = "pretrain",
) -> RunInfo:
    """RunInfo of a tiny model (3M parameters, seq 256)."""
    return RunInfo(
        run_dir=str(run_dir) if run_dir else None,
        config={},
        objective=objective,
        n_params=3_000_000,
        n_params_non_embedding=2_000_000,
        flops_per_token=FLOPS_PER_TOKEN,
        seq_len=256,
        device=device,
        device_name=device_name,
        dtype=dtype,
        world_size=world_size,
        total_steps=total_steps,
        start_step=start_step,
        tokens_per_step=2048,
    )


def counts(step: int, tokens: int = 2048, step_time: float = 0.1, samples: int = 8) -> StepCounts:
    """One optimizer step's counts with a falling loss."""
    return StepCounts(
        step=step,
        tokens=tokens,
        trained_tokens=tokens - 8,
        samples=samples,
        loss=5.0 - 0.05 * step,
        correct=200 + 10 * step,
        lr=1e-3,
        grad_norm=0.5,
        step_time=step_time,
    )


def main() -> None:
    from llmctl.config import load_config
    from llmctl.telemetry import Telemetry
    from llmctl.telemetry.events import EvalResult, SampleRecord

    run_dir, steps = Path(sys.argv[1]), int(sys.argv[2])
    sleep = float(sys.argv[sys.argv.index("--sleep") + 1]) if "--sleep" in sys.argv else 0.05
    cfg = load_config(None, ["--train.log_every=5", "--telemetry.interval=0.2"])
    telemetry = Telemetry(cfg, run_dir)
    telemetry.start(run_info(run_dir, total_steps=steps))
    for step in range(1, steps + 1):
        time.sleep(sleep)
        telemetry.step(counts(step, step_time=sleep))
        if step % 10 == 0:
            telemetry.eval(EvalResult(step=step, loss=4.0, perplexity=54.6, accuracy=0.25, tokens=4096))
            telemetry.samples([SampleRecord(step=step, prompt="Once upon a time", output=" there was a cat")])
            telemetry.log(f"saved checkpoint step-{step:06d}")
    telemetry.close("completed")


if __name__ == "__main__":
    main()
