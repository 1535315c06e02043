"""How the next token is picked from a row of logits: repetition penalty, temperature, top-k, top-p, min-p.

    params = Sampling(temperature=0.8, top_k=50, min_p=0.05)
    params.check()                                   # LlmctlError naming the flag for a bad value
    token = pick_token(logits_row, params, generator, seen_ids)

The order is Hugging Face's: the repetition penalty on the raw logits, then temperature, top-k, top-p and
min-p, so the same settings keep the same candidates as transformers' `generate`. Temperature 0 is greedy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmctl.errors import LlmctlError


@dataclass(frozen=True)
class Sampling:
    """One request's sampling settings; None (or 1.0 for top_p and the penalty) switches a filter off."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    @property
    def greedy(self) -> bool:
        """True when the most likely token is taken (temperature 0)."""
        return self.temperature <= 0

    def check(self) -> None:
        """Raise LlmctlError (naming the CLI flag) for a value outside its range."""
        bad = [
            ("--temperature", self.temperature, self.temperature < 0, "0 (greedy) or more"),
            ("--top-k", self.top_k, self.top_k is not None and self.top_k < 0, "0 (off) or more"),
            ("--top-p", self.top_p, self.top_p is not None and not 0 < self.top_p <= 1, "in (0, 1]"),
            ("--min-p", self.min_p, self.min_p is not None and not 0 <= self.min_p <= 1, "in [0, 1]"),
            (
                "--repetition-penalty",
                self.repetition_penalty,
                self.repetition_penalty is not None and not self.repetition_penalty > 0,
                "above 0 (1: off, above 1 discourages repeats)",
            ),
        ]
        for flag, value, wrong, allowed in bad:
            if wrong:
                raise LlmctlError(f"{flag} is {value}, outside its range", f"pass {flag} {allowed}")


def filter_logits(
    logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None, min_p: float | None = None
) -> torch.Tensor:
    """Logits [..., V] with everything outside the top-k, outside the top-p nucleus and below min-p
    (probability under min_p times the top token's) set to -inf. The top token always survives."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        # Nucleus sampling (Holtzman et al. 2020): the smallest set whose probability reaches top_p.
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    if min_p is not None and min_p > 0.0:
        # Min-p (Nguyen et al. 2024): the cut scales with the model's confidence in its top token.
        probs = logits.softmax(-1)
        logits = logits.masked_fill(probs < min_p * probs.amax(-1, keepdim=True), float("-inf"))
    return logits


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Logits [V] with every id in `seen` (prompt and generated ids) made less likely, as transformers'
    RepetitionPenaltyLogitsProcessor: a positive logit divided by `penalty`, a negative one multiplied."""
    picked = logits.gather(-1, seen)
    picked = torch.where(picked < 0, picked * penalty, picked / penalty)
    return logits.scatter(-1, seen, picked)


def pick_token(
    logits: torch.Tensor,
    params: Sampling,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> int:
    """The next id from one row of logits [V] (float32), drawn with this request's own generator."""
    if params.repetition_penalty not in (None, 1.0) and seen is not None and seen.numel():
        assert params.repetition_penalty is not None
        logits = penalize_repeats(logits, seen, params.repetition_penalty)
    if params.greedy:
        return int(logits.argmax(-1))
    filtered = filter_logits(logits / params.temperature, params.top_k, params.top_p, params.min_p)
    return int(torch.multinomial(filtered.softmax(-1).unsqueeze(0), 1, generator=generator))
