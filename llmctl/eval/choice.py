"""Multiple-choice tasks scored by log-likelihood, the way lm-evaluation-harness scores them.

    result = score_choices(loaded, task.items, batch_tokens=8192)
    result.acc, result.acc_norm, result.items[0]["loglikelihoods"]

For each (context, choice): encode the context, encode context + delimiter + choice (the item's
target delimiter, "" by default), and score the tokens of the second past the length of the first
(lm-eval's rule, including its move of the context's trailing whitespace onto the choice). The model's
prompt prefix (llmctl/eval/model_io.py) goes before the context. `acc` picks the choice with the highest
summed log-probability, `acc_norm` the highest log-probability per character of the choice without the
delimiter (lm-eval's completion length); ties go to the first choice (numpy argmax).

Every (item, choice) sequence is sorted by length and packed into forward passes of at most
`batch_tokens` padded tokens: all choices of many items per forward. Right padding leaves the scored
positions unchanged under causal attention.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from llmctl.eval.model_io import LoadedModel, prompt_prefix
from llmctl.eval.tasks import ChoiceItem


@dataclass
class ChoiceResult:
    """Accuracy figures of one multiple-choice task, and what each item scored."""

    n: int
    acc: float
    acc_stderr: float
    acc_norm: float
    acc_norm_stderr: float
    chance: float
    """Mean over items of 1 / number of choices."""
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)
    """Per item: id, label, loglikelihoods, pred, pred_norm."""

    @property
    def centered_acc(self) -> float:
        """(acc - chance) / (1 - chance): 0 at chance, 1 when always right (nanochat's CORE)."""
        return (self.acc - self.chance) / (1.0 - self.chance) if self.chance < 1 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The per-task `--json` record."""
        return {
            "n": self.n,
            "acc": self.acc,
            "acc_stderr": self.acc_stderr,
            "acc_norm": self.acc_norm,
            "acc_norm_stderr": self.acc_norm_stderr,
            "centered_acc": self.centered_acc,
            "seconds": self.seconds,
        }


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of a mean: sample standard deviation (n - 1) over sqrt(n), as lm-eval reports it."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def encode_pair(
    encode: Callable[[str], list[int]], prefix: list[int], context: str, choice: str
) -> tuple[list[int], list[int]]:
    """(context ids, choice ids) by lm-eval's rule: the choice's ids are those of context + choice past the context's."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, choice = context[:-spaces], context[-spaces:] + choice
    whole = encode(context + choice)
    ctx = encode(context)
    return prefix + ctx, whole[len(ctx) :]


PairIds = Callable[[str, str], tuple[list[int], list[int]]]
"""(context, continuation) -> (context ids, continuation ids): how a pair becomes model input."""


def plain_pairs(loaded: LoadedModel) -> PairIds:
    """lm-eval's encoding after the model's prompt prefix (no chat template)."""
    prefix = prompt_prefix(loaded)
    encode = loaded.tokenizer.encode
    return lambda context, choice: encode_pair(encode, prefix, context, choice)


@dataclass
class _Request:
    item: int
    choice: int
    tokens: list[int]
    """Input tokens fed to the model (context + choice, last one dropped), cut to the context length."""
    scored: int
    """How many of the last positions are choice tokens."""


def _requests(loaded: LoadedModel, items: Sequence[ChoiceItem], pair_ids: PairIds | None) -> list[_Request]:
    pair_ids = pair_ids or plain_pairs(loaded)
    limit = loaded.seq_len
    out = []
    for i, item in enumerate(items):
        for j, (context, choice) in enumerate(item.pairs()):
            ctx, cont = pair_ids(context, choice)
            whole = (ctx + cont)[-(limit + 1) :]
            # lm-eval keeps the last max_length + 1 tokens: a long context loses its start, never the choice.
            out.append(_Request(i, j, whole, min(len(cont), len(whole) - 1)))
    return out


@torch.no_grad()
def loglikelihoods(
    loaded: LoadedModel,
    items: Sequence[ChoiceItem],
    *,
    batch_tokens: int = 8192,
    on_progress: Callable[[int, int], None] | None = None,
    pair_ids: PairIds | None = None,
) -> list[list[float]]:
    """Summed log-probability of every choice of every item, [item][choice], float64 sums of float32 terms."""
    requests = _requests(loaded, items, pair_ids)
    order = sorted(range(len(requests)), key=lambda r: -len(requests[r].tokens))
    result = [[0.0] * len(item.choices) for item in items]
    pad = 0
    device = loaded.device
    at = 0
    with loaded.fused_weights():  # the fused q|k|v, w1|w3 built once, not per forward
        while at < len(order):
            width = len(requests[order[at]].tokens) - 1
            rows = max(1, batch_tokens // max(1, width))
            group = [requests[r] for r in order[at : at + rows]]
            at += len(group)
            if width <= 0:
                continue
            inputs = torch.full((len(group), width), pad, dtype=torch.long)
            for k, req in enumerate(group):
                inputs[k, : len(req.tokens) - 1] = torch.tensor(req.tokens[:-1])
            with loaded.autocast():
                logits = loaded.model(inputs.to(device))
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
            for k, req in enumerate(group):
                if req.scored <= 0:
                    continue
                end = len(req.tokens) - 1
                targets = torch.tensor(req.tokens[end - req.scored + 1 : end + 1])
                picked = logprobs[k, end - req.scored : end].gather(-1, targets[:, None]).squeeze(-1)
                result[req.item][req.choice] = float(picked.double().sum())
            if on_progress is not None:
                on_progress(at, len(order))
    return result


def score_choices(
    loaded: LoadedModel,
    items: Sequence[ChoiceItem],
    *,
    batch_tokens: int = 8192,
    on_progress: Callable[[int, int], None] | None = None,
    pair_ids: PairIds | None = None,
) -> ChoiceResult:
    """acc and acc_norm (with standard errors) of the loaded model over `items` (pairs encoded by `pair_ids`,
    lm-eval's plain encoding by default)."""
    start = time.perf_counter()
    lls = loglikelihoods(loaded, items, batch_tokens=batch_tokens, on_progress=on_progress, pair_ids=pair_ids)
    hits, hits_norm, records = [], [], []
    for item, ll in zip(items, lls, strict=True):
        pred = int(np.argmax(ll))
        pred_norm = int(np.argmax([v / max(1, len(c)) for v, c in zip(ll, item.choices, strict=True)]))
        hits.append(float(pred == item.label))
        hits_norm.append(float(pred_norm == item.label))
        records.append(
            {"id": item.id, "label": item.label, "loglikelihoods": ll, "pred": pred, "pred_norm": pred_norm}
        )
    n = len(items)
    chance = sum(1.0 / len(item.choices) for item in items) / n
    return ChoiceResult(
        n=n,
        acc=sum(hits) / n,
        acc_stderr=mean_stderr(hits),
        acc_norm=sum(hits_norm) / n,
        acc_norm_stderr=mean_stderr(hits_norm),
        chance=chance,
        seconds=time.perf_counter() - start,
        items=records,
    )
