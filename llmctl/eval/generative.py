"""Generative tasks: greedy answers compared with the reference by exact match after normalisation.

    result = score_generations(loaded, task.items, regex=r"#### (\\-?[0-9.,]+)", max_new_tokens=256)
    result.exact_match, result.items[0]["output"]

Prompts are rendered as a chat (the checkpoint's chat profile; a bare `prompt` becomes one user turn)
and decoding stops at the profile's end-of-turn token or EOS. A model whose tokenizer has no chat
markers continues `prompt` as plain text after its prompt prefix and stops at EOS.

Scoring is `eval/rewards.py`'s (the `exact` and `regex:` rewards are the same code). Normalisation,
applied to the extracted output and to the reference alike (`normalize_answer`):
Unicode NFKC, case folded, surrounding whitespace and the punctuation . , ; : ! ? " ' ` removed
from both ends, runs of whitespace made one space, and a thousands comma inside a number dropped
("1,234" -> "1234"). With `regex`, the output's answer is the regex's last match in it (its first
group when the regex has one); no match scores 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.eval.choice import mean_stderr
from llmctl.eval.model_io import LoadedModel, prompt_prefix
from llmctl.eval.rewards import (  # noqa: F401  (extract_answer, normalize_answer: eval's public names)
    compile_regex,
    extract_answer,
    match_answer,
    normalize_answer,
)
from llmctl.eval.tasks import GenerateItem


@dataclass
class GenerateResult:
    """exact_match over a generative task, and each item's output."""

    n: int
    exact_match: float
    exact_match_stderr: float
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The per-task `--json` record."""
        return {
            "n": self.n,
            "exact_match": self.exact_match,
            "exact_match_stderr": self.exact_match_stderr,
            "seconds": self.seconds,
        }


def _prompter(loaded: LoadedModel) -> tuple[Callable[[GenerateItem], list[int]], list[int]]:
    """How an item becomes prompt ids, and the ids that end a reply."""
    from llmctl.tokenizer.chat import get_profile, missing_tokens, render, reply_stop_ids

    tok = loaded.tokenizer
    name = (((loaded.manifest.get("data_meta") or {}).get("chat_profile")) or {}).get("name", "chat")
    profile = get_profile(name)
    if missing_tokens(profile, tok.token_to_id):
        prefix = prompt_prefix(loaded)

        def plain(item: GenerateItem) -> list[int]:
            if item.prompt is None:
                raise LlmctlError(
                    "this checkpoint's tokenizer has no chat tokens, so it cannot answer 'messages' items",
                    "use 'prompt' items, or evaluate a model fine-tuned with `llmctl sft`",
                )
            return prefix + tok.encode(item.prompt)

        return plain, [tok.eos_id] if tok.eos_id is not None else []

    def chat(item: GenerateItem) -> list[int]:
        messages = item.messages or [{"role": "user", "content": item.prompt or ""}]
        return render(messages, profile, tok.encode, tok.token_to_id, add_generation_prompt=True).ids

    return chat, reply_stop_ids(profile, tok.token_to_id, tok.eos_id)


def score_generations(
    loaded: LoadedModel,
    items: Sequence[GenerateItem],
    *,
    regex: str | None = None,
    max_new_tokens: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
) -> GenerateResult:
    """Greedy-decode an answer to every item and score exact_match against its reference."""
    from llmctl.infer.generate import generate  # INTEGRATOR: llmctl.infer.generate after the move

    pattern = compile_regex(regex)
    to_ids, stops = _prompter(loaded)
    start = time.perf_counter()
    hits, records = [], []
    for k, item in enumerate(items):
        ids = to_ids(item)
        gen = generate(
            loaded.model,
            ids,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            stop_ids=stops,
            autocast=loaded.autocast,
        )
        new = gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids
        output = loaded.tokenizer.decode(new)
        extracted, hit = match_answer(output, item.answer, pattern)
        hits.append(float(hit))
        records.append(
            {"id": item.id, "answer": item.answer, "output": output, "extracted": extracted, "correct": hit}
        )
        if on_progress is not None:
            on_progress(k + 1, len(items))
    n = len(items)
    return GenerateResult(
        n=n,
        exact_match=sum(hits) / n,
        exact_match_stderr=mean_stderr(hits),
        seconds=time.perf_counter() - start,
        items=records,
    )
