"""Where a batch stream is in its seeded plan of micro-batches: shared by SFT and preference-pair batches.

A subclass plans one epoch (`_epoch_plan`: a list of micro-batch layouts, already this rank's share) and
turns a layout into tensors' rows (`_collate`); this class walks the plan, moves to a freshly shuffled
epoch at the end of one, and saves and restores the position, so a resume continues exactly. `fill_to_multiple` is how an epoch
keeps every item when their count is not a multiple of the micro-batches the ranks take.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def fill_to_multiple(order: np.ndarray, multiple: int) -> np.ndarray:
    """`order` extended by its own first items (cyclically) to a multiple of `multiple` items.

    Cutting an epoch into micro-batches spread over ranks needs a multiple of micro_batch * world items;
    rather than drop the remainder (with length-sorted batches, always the longest items), the first few
    of the shuffled order are used a second time, so every item is trained at least once per epoch.
    """
    short = -len(order) % multiple if len(order) else 0
    return np.concatenate([order, np.resize(order, short)]) if short else order


class EpochPlan:
    """The epoch and the micro-batch within it; the plan itself is re-made from the seed when needed."""

    epoch: int = 0
    index: int = 0
    _plan: list[Any] | None = None

    def _epoch_plan(self, epoch: int) -> list[Any]:
        raise NotImplementedError

    def _collate(self, layout: Any) -> Any:
        raise NotImplementedError

    def batches_per_epoch(self) -> int:
        """This rank's micro-batches in one epoch (the same on every rank)."""
        if self._plan is None:
            self._plan = self._epoch_plan(self.epoch)
        return len(self._plan)

    def next_rows(self) -> Any:
        """The next micro-batch; moves to a freshly shuffled epoch at the end of one."""
        if self._plan is None:
            self._plan = self._epoch_plan(self.epoch)
        if self.index >= len(self._plan):
            self.epoch, self.index = self.epoch + 1, 0
            self._plan = self._epoch_plan(self.epoch)
        layout = self._plan[self.index]
        self.index += 1
        return self._collate(layout)

    def state_dict(self) -> dict[str, int]:
        """The data position: epoch and micro-batch within it."""
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue at a saved position (the same seed, data and world size re-plan the same epoch)."""
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._plan = None
