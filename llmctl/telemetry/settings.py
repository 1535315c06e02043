"""Telemetry settings from outside the config file: EFFICIENTLLM_* variables and the device's peak.

The user's notes configure metrics through environment variables; they are aliases of
`telemetry.*` keys. An alias applies where the config leaves the key at its default, so a value in
the YAML file or on the command line wins (defaults < environment < YAML < command line).

    EFFICIENTLLM_METRICS_ENABLED=false       telemetry.enabled
    EFFICIENTLLM_COLLECTION_INTERVAL=0.5     telemetry.interval (seconds)
    EFFICIENTLLM_HISTORY_SIZE=1000           telemetry.history_size (samples)
    EFFICIENTLLM_LOG_INTERVAL=10             telemetry.log_interval (steps)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from llmctl.config import TelemetryConfig
from llmctl.errors import LlmctlError

ENV_ALIASES: dict[str, tuple[str, type]] = {
    "EFFICIENTLLM_METRICS_ENABLED": ("enabled", bool),
    "EFFICIENTLLM_COLLECTION_INTERVAL": ("interval", float),
    "EFFICIENTLLM_HISTORY_SIZE": ("history_size", int),
    "EFFICIENTLLM_LOG_INTERVAL": ("log_interval", int),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(var: str, text: str, kind: type) -> Any:
    text = text.strip()
    if kind is bool:
        if text.lower() in _TRUE | _FALSE:
            return text.lower() in _TRUE
        raise LlmctlError(f"{var}={text!r} is not true or false", f"export {var}=true or {var}=false")
    try:
        value = kind(text)
    except ValueError:
        raise LlmctlError(f"{var}={text!r} is not a number", f"export {var}=<{kind.__name__}>") from None
    if value <= 0:
        raise LlmctlError(f"{var}={text!r} must be positive", f"export {var}=<positive {kind.__name__}>")
    return value


def apply_env_aliases(tcfg: TelemetryConfig, environ: Mapping[str, str] | None = None) -> TelemetryConfig:
    """`tcfg` with EFFICIENTLLM_* values filled in where the config kept the default."""
    env = os.environ if environ is None else environ
    defaults = TelemetryConfig()
    changes: dict[str, Any] = {}
    for var, (key, kind) in ENV_ALIASES.items():
        if var in env and env[var].strip() != "" and getattr(tcfg, key) == getattr(defaults, key):
            changes[key] = _parse(var, env[var], kind)
    return dataclasses.replace(tcfg, **changes) if changes else tcfg


def device_peak_flops(
    device: str, device_name: str, dtype: str, override_tflops: float | None
) -> tuple[float | None, str | None]:
    """Dense peak FLOP/s of one device for `dtype`, and where the figure came from.

    `--telemetry.peak_tflops` wins; otherwise GPUs are looked up by name in llmctl.plan.hardware's
    table (most specific name first). CPUs and unknown GPUs give (None, None): MFU is n/a, never
    a guess.
    """
    if override_tflops:
        return override_tflops * 1e12, "telemetry.peak_tflops"
    if not device.startswith("cuda"):
        return None, None
    from llmctl.plan.hardware import detect_gpu, peak_flops

    spec = detect_gpu(device_name)
    if spec is None:
        return None, None
    if dtype == "fp32" and getattr(spec, "tf32", None):
        # The engine turns TF32 on for CUDA matmuls (engine/runtime.py), so fp32 training runs at the
        # TF32 tensor-core rate; measuring against plain FP32 would report MFU above 100%.
        dtype = "tf32"
    try:
        peak = peak_flops(spec, dtype)
    except LlmctlError:  # a dtype the table does not know: n/a rather than another dtype's peak
        return None, None
    if not peak or peak <= 0:
        return None, None
    return float(peak), str(getattr(spec, "name", device_name))
