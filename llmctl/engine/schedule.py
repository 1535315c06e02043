"""Learning-rate schedules: linear warmup, then cosine, linear, constant or warmup-stable-decay.

    schedule = LRSchedule.from_config(cfg.optim, total_steps=5000)
    lr = schedule(step)        # step: optimizer steps already taken (0 for the first)

A pure function of the step, so a resumed run needs only the step to continue the curve.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from llmctl.config import OptimConfig


@dataclass(frozen=True)
class LRSchedule:
    """lr(step) for `total_steps` optimizer steps."""

    kind: str
    lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int
    decay_fraction: float = 0.2

    @classmethod
    def from_config(cls, optim: OptimConfig, total_steps: int) -> LRSchedule:
        """The schedule the optim section describes, over total_steps."""
        warmup = min(optim.warmup_steps, max(0, total_steps - 1))
        return cls(optim.schedule, optim.lr, optim.min_lr, warmup, total_steps, optim.decay_fraction)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            # (step + 1) so the first step already learns; the warmup ends exactly at lr.
            return self.lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.lr
        if self.kind == "wsd":
            # Warmup-stable-decay (Hu et al. 2024, MiniCPM): hold lr, then decay linearly over the last fraction.
            decay_steps = max(1, round(self.decay_fraction * self.total_steps))
            decay_start = max(self.warmup_steps, self.total_steps - decay_steps)
            if step < decay_start:
                return self.lr
            progress = min(1.0, (step - decay_start + 1) / max(1, self.total_steps - decay_start))
            return self.lr - (self.lr - self.min_lr) * progress
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps + 1) / span)
        if self.kind == "linear":
            return self.lr - (self.lr - self.min_lr) * progress
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * progress))

    def state_dict(self) -> dict[str, Any]:
        """The schedule's parameters, stored in checkpoints for the record."""
        return asdict(self)
