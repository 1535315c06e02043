"""Training telemetry: counters, hardware sampling, EfficientLLM metrics, sinks and the live panel.

    from llmctl.telemetry import Telemetry, inference_metrics
    telemetry = Telemetry(cfg, run_dir, is_rank0=True)    # implements events.Reporter

Importing this package loads neither torch, tensorboard, matplotlib nor rich.
"""

from llmctl.telemetry.efficiency import inference_metrics
from llmctl.telemetry.reporter import Telemetry

__all__ = ["Telemetry", "inference_metrics"]
