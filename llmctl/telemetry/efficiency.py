"""The EfficientLLM metrics (seed 002), computed from counts and hardware averages of one window.

    AMU  average memory used, GB (2**30 bytes): GPU memory from NVML, or the process RSS on CPU
    PCU  average compute utilization as a ratio: NVML GPU utilization, or process CPU use on CPU
    AL   average seconds per optimizer step
    TT   tokens / parameters / second           (pretraining)
    ST   samples / parameters / second          (fine-tuning)
    IT   generated tokens / second               (inference: `generate` and training samples)
    AEC  average power, W: mean of GPU power samples, or host (RAPL) energy over time on CPU

plus energy in J and Wh and tokens per joule. A figure whose inputs are missing is None (n/a).

    efficiency_metrics(window_counts, hardware_window, n_params)
    inference_metrics(n_tokens=128, seconds=0.9)   # {"generated_tokens": 128, ..., "it_tokens_per_sec": 142.2}
"""

from __future__ import annotations

from typing import Any

GB = float(2**30)
# The end-of-run [EfficientLLM] line's acronyms spelled out, once per run (the names of the EfficientLLM
# paper, seed 002; what each figure is here is in this module's docstring).
LEGEND = (
    "[EfficientLLM legend] AMU average memory utilization, GB (GPU, or process RSS on CPU) | "
    "PCU compute utilization, 0-1 (GPU, or process CPU) | AL average latency, s per optimizer step | "
    "TT token throughput, tokens/parameter/s | ST sample throughput, samples/parameter/s | "
    "IT inference throughput, generated tokens/s | AEC average energy consumption, mean power in W"
)
JOULES_PER_WH = 3600.0


def efficiency_metrics(
    tokens: int,
    samples: int,
    steps: int,
    seconds: float,
    n_params: int,
    hardware: dict[str, float],
    on_gpu: bool,
    power_w: float | None = None,
) -> dict[str, Any]:
    """AMU, PCU, AL, TT, ST and AEC over one window.

    `seconds` is the summed step time of the window's `steps`; `hardware` holds the window's
    averaged samples (see sampler.AVERAGED); `on_gpu` picks GPU memory and utilization rather than
    the host process's, so a GPU run without NVML shows n/a instead of host figures. `power_w` overrides the averaged GPU power, which is
    how host (RAPL) energy over time enters AEC on CPU runs.
    """
    memory = hardware.get("gpu_mem_used_bytes" if on_gpu else "rss_bytes")
    util = hardware.get("gpu_util_pct" if on_gpu else "cpu_util_pct")
    power = power_w if power_w is not None else hardware.get("power_w")
    per_param_second = n_params * seconds if n_params > 0 and seconds > 0 else None
    return {
        "amu_gb": memory / GB if memory is not None else None,
        "pcu_ratio": util / 100.0 if util is not None else None,
        "al_seconds": seconds / steps if steps else None,
        "tt_tokens_per_param_per_sec": tokens / per_param_second if per_param_second else None,
        "st_samples_per_param_per_sec": samples / per_param_second if per_param_second else None,
        "aec_watts": power,
    }


def energy_figures(joules: float | None, tokens: int) -> dict[str, Any]:
    """Total energy in J and Wh, and tokens per joule; None where no energy was measured."""
    if joules is None:
        return {"energy_j": None, "energy_wh": None, "tokens_per_joule": None}
    return {
        "energy_j": joules,
        "energy_wh": joules / JOULES_PER_WH,
        "tokens_per_joule": tokens / joules if joules > 0 else None,
    }


def inference_metrics(n_tokens: int, seconds: float) -> dict[str, Any]:
    """IT for one generation: tokens generated per second of generation (prefill included).

    `generate` calls this and prints the result; training sampling rounds feed the same figure
    into the run's summary.
    """
    return {
        "generated_tokens": int(n_tokens),
        "seconds": float(seconds),
        "it_tokens_per_sec": n_tokens / seconds if seconds > 0 else None,
    }
