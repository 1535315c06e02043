"""Named evaluation sources for `llmctl data download`."""

from __future__ import annotations

EVAL_SOURCES: dict[str, object] = {}
