"""Few-shot contexts and --limit, as lm-evaluation-harness (0.4) builds them for multiple-choice tasks.

    items = limit_items(task.items, 0.1)                       # the first ceil(10%) of the items
    items = add_fewshot(items, task.fewshot_pool(), k=5, seed=1234, draws_extra=True)

lm-eval's default sampler is one `random.Random(seed)` per task (`--fewshot-seed`, 1234 by default), drawn
from once per evaluated item, in item order. Each draw is `sample(pool, k)`; for a task whose config has no
test split (hellaswag, piqa, winogrande) it is `sample(pool, k + 1)` with the evaluated item removed and the
first k kept. Each example is written as its context, the target delimiter and its right answer, followed by
"\\n\\n"; the item's own context follows the examples. An item with one context per choice (Winogrande) takes
the example's right context and the shared continuation, and gets the examples before each of its contexts.
The pool is the task's few-shot split (the train split for named tasks), never the evaluated items.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.eval.tasks import ChoiceItem

FEWSHOT_DELIMITER = "\n\n"
DEFAULT_SEED = 1234


def limit_items(items: Sequence[Any], limit: float | None) -> list[Any]:
    """The first `limit` items; a limit below 1 is a fraction of them, rounded up (lm-eval's rule)."""
    if limit is None:
        return list(items)
    if limit <= 0:
        raise LlmctlError(f"--limit {limit} is not positive", "pass a count (100) or a fraction (0.1)")
    count = math.ceil(len(items) * limit) if limit < 1 else int(limit)
    return list(items[:count])


def example_text(item: ChoiceItem) -> str:
    """One solved example: context, target delimiter, right answer, then lm-eval's "\\n\\n"."""
    context = item.contexts[item.label] if item.contexts is not None else item.context
    return context + item.delimiter + item.choices[item.label] + FEWSHOT_DELIMITER


def _draw(rnd: random.Random, pool: Sequence[ChoiceItem], item: ChoiceItem, k: int, extra: bool) -> list[int]:
    if not extra:
        return rnd.sample(range(len(pool)), k)
    # sample() picks the same positions from any population of the same length: indices stand for items.
    picked = [i for i in rnd.sample(range(len(pool)), k + 1) if pool[i] != item][:k]
    if len(picked) < k:  # the pool holds the item more than once: draw again without it, as lm-eval does
        others = [i for i in range(len(pool)) if pool[i] != item]
        picked = [others[j] for j in rnd.sample(range(len(others)), k)]
    return picked


def add_fewshot(
    items: Sequence[ChoiceItem], pool: Sequence[ChoiceItem], *, k: int, seed: int, draws_extra: bool = False
) -> list[ChoiceItem]:
    """`items` with k solved examples from `pool` before their contexts (none when k is 0)."""
    if k <= 0:
        return list(items)
    needed = k + 1 if draws_extra else k
    if len(pool) < needed:
        raise LlmctlError(
            f"--num-fewshot {k} needs {needed} few-shot examples, the task has {len(pool)}",
            "pass a smaller --num-fewshot",
        )
    rnd = random.Random(seed)
    out = []
    for item in items:
        prefix = "".join(example_text(pool[i]) for i in _draw(rnd, pool, item, k, draws_extra))
        contexts = [prefix + c for c in item.contexts] if item.contexts is not None else None
        out.append(
            replace(item, context=prefix + item.context if contexts is None else "", contexts=contexts)
        )
    return out
