"""Hardware sampling through a fake NVML: energy counter or power integration, several GPUs, no GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from telemetry_fakes import FakeClock, FakeNvml, counts, run_info

from llmctl.config import load_config
from llmctl.telemetry import Telemetry
from llmctl.telemetry.sampler import HardwareSampler, NvmlBackend, RaplReader, nvml_indices


def _sampler(nvml: FakeNvml, clock: FakeClock, indices: list[int] | None = None) -> HardwareSampler:
    return HardwareSampler([NvmlBackend(nvml, indices or [0])], interval=3600, history_size=100, clock=clock)


def test_energy_comes_from_the_gpu_counter_when_it_has_one() -> None:
    nvml, clock = FakeNvml(energy_counter=True, power_w=250.0), FakeClock()
    sampler = _sampler(nvml, clock)
    assert sampler.energy_source == "nvml_energy_counter"
    first = sampler.sample_once()
    assert first["gpu_util_pct"] == 90.0 and first["power_w"] == 250.0
    assert (
        first["gpu_mem_used_bytes"] == 40e9 and first["temperature_c"] == 64 and first["sm_clock_mhz"] == 1980
    )
    for _ in range(3):
        nvml.advance(10)
        clock.advance(10)
        sampler.sample_once()
    # Joules since the first reading, not since the driver loaded (the counter started at 5 MJ).
    assert sampler.energy.joules == pytest.approx(250.0 * 30)
    assert sampler.run_averages()["energy_j"] == pytest.approx(7500.0)


def test_energy_is_integrated_from_power_on_gpus_without_a_counter() -> None:
    nvml, clock = FakeNvml(energy_counter=False, power_w=100.0), FakeClock()
    sampler = _sampler(nvml, clock)
    assert sampler.energy_source == "nvml_power_integration"
    sampler.sample_once()
    clock.advance(10)
    nvml.power_w = 300.0
    sampler.sample_once()
    clock.advance(10)
    sampler.sample_once()
    # Trapezoids: (100+300)/2 * 10 + 300 * 10.
    assert sampler.energy.joules == pytest.approx(2000 + 3000)
    assert sampler.window(since=clock.t - 15)["power_w"] == pytest.approx(300.0)
    assert sampler.run_averages()["power_w"] == pytest.approx(700 / 3)


def test_several_gpus_are_summed_and_averaged() -> None:
    nvml, clock = FakeNvml(count=2, power_w=200.0), FakeClock()
    sample = _sampler(nvml, clock, [0, 1]).sample_once()
    assert (
        sample["power_w"] == 400.0 and sample["gpu_mem_used_bytes"] == 80e9 and sample["gpu_util_pct"] == 90.0
    )


def test_nvml_indices_follow_cuda_visible_devices_and_local_ranks() -> None:
    assert nvml_indices("cuda:1", 1, 4, {"CUDA_VISIBLE_DEVICES": "2,3"}) == [3]
    assert nvml_indices("cuda", 1, 4, {}) == [0]
    assert nvml_indices("cuda:0", 2, 4, {"LOCAL_WORLD_SIZE": "2"}) == [0, 1]
    assert nvml_indices("cuda:0", 16, 8, {"LOCAL_WORLD_SIZE": "8"}) == [0]  # multi-node: own GPU only


def test_rapl_counters_unwrap(tmp_path: Path) -> None:
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (tmp_path / "intel-rapl:0:0").mkdir()  # a sub-zone, already counted inside the package
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    (zone / "energy_uj").write_text("999000000\n")
    rapl = RaplReader(tmp_path)
    assert rapl.available and len(rapl.zones) == 1
    assert rapl.read_joules() == 0.0
    (zone / "energy_uj").write_text("1000000\n")  # wrapped past the maximum
    assert rapl.read_joules() == pytest.approx(2.0)
    assert not RaplReader(tmp_path / "absent").available


def _gpu_run(tmp_path: Path, nvml: object, device_name: str, *extra: str) -> tuple[Telemetry, FakeClock]:
    cfg = load_config(
        None, ["--telemetry.panel=off", "--telemetry.interval=3600", "--train.log_every=2", *extra]
    )
    clock = FakeClock()
    tel = Telemetry(cfg, tmp_path, nvml=nvml, clock=clock)
    tel.start(run_info(tmp_path, device="cuda:0", device_name=device_name, dtype="bf16", total_steps=4))
    return tel, clock


def test_gpu_run_reports_nvml_figures_energy_and_efficientllm_metrics(tmp_path: Path) -> None:
    nvml = FakeNvml(power_w=300.0)
    tel, clock = _gpu_run(tmp_path, nvml, "NVIDIA H100 80GB HBM3", "--telemetry.peak_tflops=989")
    for step in range(1, 5):
        nvml.advance(0.5)
        clock.advance(0.5)
        tel.sampler.sample_once()
        tel.step(counts(step, step_time=0.5))
    summary = tel.close("completed").values
    assert nvml.shutdown is False  # an injected NVML belongs to the caller
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    r = records[-1]
    assert r["gpu_util_pct"] == 90.0 and r["power_w"] == 300.0 and r["temperature_c"] == 64
    assert r["amu_gb"] == pytest.approx(40e9 / 2**30)
    assert r["pcu_ratio"] == pytest.approx(0.9)
    assert r["aec_watts"] == pytest.approx(300.0)
    assert r["al_seconds"] == pytest.approx(0.5)
    assert r["tt_tokens_per_param_per_sec"] == pytest.approx(2048 / 3e6 / 0.5)
    assert r["mfu"] == pytest.approx(r["tflops_per_sec"] / 989)
    assert summary["energy_source"] == "nvml_energy_counter"
    assert summary["energy_j"] == pytest.approx(300.0 * 2.0)
    assert summary["energy_wh"] == pytest.approx(600 / 3600)
    assert summary["tokens_per_joule"] == pytest.approx(4 * 2048 / 600)
    assert summary["efficientllm"]["aec_watts"] == pytest.approx(300.0)
    # Energy survives a resume through the checkpointed state.
    assert tel.state_dict()["energy_j"] == pytest.approx(600.0)


def test_known_gpu_gets_mfu_from_the_hardware_table(tmp_path: Path) -> None:
    from llmctl.plan.hardware import detect_gpu, peak_flops

    tel, clock = _gpu_run(tmp_path, FakeNvml(), "NVIDIA H100 80GB HBM3")
    clock.advance(1.0)
    tel.step(counts(1, step_time=1.0))
    summary = tel.close("completed").values
    peak = peak_flops(detect_gpu("NVIDIA H100 80GB HBM3"), "bf16")
    assert summary["peak_tflops_per_device"] == pytest.approx(peak / 1e12)
    assert summary["mfu"] == pytest.approx(summary["flops_per_token"] * 2048 / 1.0 / peak)


def test_unknown_gpu_shows_mfu_as_na(tmp_path: Path) -> None:
    tel, clock = _gpu_run(tmp_path, FakeNvml(), "Imaginary Accelerator 9000")
    clock.advance(1.0)
    tel.step(counts(1, step_time=1.0))
    summary = tel.close("completed").values
    assert summary["mfu"] is None and summary["peak_tflops_per_device"] is None
    assert summary["tflops_per_sec"] > 0


class _BrokenNvml(FakeNvml):
    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        raise self.NVMLError("Driver Not Loaded")


@pytest.mark.parametrize("nvml", [_BrokenNvml(), None], ids=["driver-missing", "real-pynvml-without-gpu"])
def test_missing_gpu_leaves_gpu_fields_na_and_training_goes_on(tmp_path: Path, nvml: object) -> None:
    tel, clock = _gpu_run(tmp_path, nvml, "NVIDIA H100 80GB HBM3")
    for step in range(1, 5):
        clock.advance(0.1)
        tel.step(counts(step))
    summary = tel.close("completed").values
    r = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert (
        r["gpu_util_pct"] is None and r["power_w"] is None and r["amu_gb"] is None and r["pcu_ratio"] is None
    )
    assert r["rss_bytes"] > 0  # the host backend still reads
    assert summary["tokens"] == 4 * 2048 and summary["energy_j"] is None


def test_fp32_on_a_gpu_is_measured_against_tf32_where_the_gpu_has_it() -> None:
    from llmctl.telemetry.settings import device_peak_flops

    assert device_peak_flops("cuda:0", "NVIDIA A100-SXM4-80GB", "fp32", None) == (156e12, "A100-80GB")
    assert device_peak_flops("cuda:0", "NVIDIA A100-SXM4-80GB", "bf16", None) == (312e12, "A100-80GB")
    assert device_peak_flops("cuda:0", "Tesla V100-SXM2-32GB", "fp32", None) == (15.7e12, "V100-SXM2-32GB")
    assert device_peak_flops("cuda:0", "Tesla T4", "bf16", None) == (None, None)  # no BF16 path: n/a
    assert device_peak_flops("cpu", "AMD EPYC 7B13", "fp32", None) == (None, None)
    assert device_peak_flops("cpu", "AMD EPYC 7B13", "fp32", 2.0) == (2e12, "telemetry.peak_tflops")
