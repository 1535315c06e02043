"""Generative tasks: answers decoded in batches, compared with the reference by exact match after
normalisation, or scored by rewards (pass@1, pass@k).

    result = score_generations(loaded, task.items, regex=r"#### (\\-?[0-9.,]+)", max_new_tokens=256)
    result.exact_match, result.items[0]["output"]
    result = score_generations(loaded, items, rewards=[parse_reward("number")], num_samples=8, temperature=0.8)
    result.passes["pass@1"], result.passes["pass@8"], result.rewards["reward"]

Answers are decoded `batch_size` at a time by `infer/batch.py` (greedy output does not depend on the
batch: each row has its own positions and mask). With `num_samples` k above 1, sample j of every item is
drawn with its own generator seeded `seed + j`.

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

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmctl.errors import LlmctlError
from llmctl.eval.choice import mean_stderr
from llmctl.eval.model_io import LoadedModel, prompt_prefix
from llmctl.eval.rewards import (  # noqa: F401  (extract_answer, normalize_answer: eval's public names)
    Reward,
    compile_regex,
    extract_answer,
    match_answer,
    normalize_answer,
    score_rewards,
)
from llmctl.eval.tasks import GenerateItem


@dataclass
class GenerateResult:
    """exact_match over a generative task, each item's output and, with rewards or samples, pass@k."""

    n: int
    exact_match: float
    exact_match_stderr: float
    seconds: float
    items: list[dict[str, Any]] = field(default_factory=list)
    passes: dict[str, float] = field(default_factory=dict)
    """`pass@1` and `pass@K` (K = samples per item) when scored with rewards or several samples."""
    rewards: dict[str, float] = field(default_factory=dict)
    """`reward` (mean weighted sum over every sample) and `rewards/<label>/mean`, with rewards."""
    samples: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The per-task `--json` record."""
        record = {
            "n": self.n,
            "exact_match": self.exact_match,
            "exact_match_stderr": self.exact_match_stderr,
            "seconds": self.seconds,
        }
        if self.passes:
            record.update({**self.passes, **self.rewards, "num_samples": self.samples})
        return record


def pass_at_k(n: int, c: int, k: int) -> float:
    """Chen et al. (2021)'s unbiased estimate of pass@k from n samples of which c pass:
    1 - C(n - c, k) / C(n, k). With k = n it is 1 when any sample passes; with k = 1 it is c / n."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


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


def _prompt_text(item: GenerateItem) -> str:
    """The question as a reward sees it: the prompt, or the last user message."""
    if item.prompt is not None:
        return item.prompt
    users = [m.get("content", "") for m in item.messages or [] if m.get("role") == "user"]
    return users[-1] if users else ""


@dataclass(frozen=True)
class DecodeOptions:
    """How a generative task's replies are decoded."""

    max_new_tokens: int = 256
    batch_size: int = 16
    """Replies decoded together (llmctl/infer/batch.py); the results do not depend on it."""
    num_samples: int = 1
    temperature: float = 0.0
    """0: greedy (one sample is all there is); above 0 with num_samples > 1 for pass@k."""
    seed: int = 0


def _decode_all(
    loaded: LoadedModel,
    items: Sequence[GenerateItem],
    options: DecodeOptions,
    on_progress: Callable[[int, int], None] | None,
) -> list[list[str]]:
    """Each item's `num_samples` replies (stop token left out), decoded `batch_size` rows at a time."""
    from llmctl.infer.batch import Request, generate_batch
    from llmctl.infer.sampling import Sampling

    to_ids, stops = _prompter(loaded)
    k = options.num_samples
    sampling = Sampling(temperature=options.temperature)
    # Sample j of every item draws with seed + j: an item's replies do not depend on the batch it is in.
    requests = [
        Request(to_ids(item), options.max_new_tokens, sampling, options.seed + j, stops)
        for item in items
        for j in range(k)
    ]
    finished = [0] * len(items)
    done = 0

    def count(index: int, _gen: Any) -> None:
        nonlocal done
        finished[index // k] += 1
        if finished[index // k] == k:
            done += 1
            if on_progress is not None:
                on_progress(done, len(items))

    gens = generate_batch(
        loaded.model,
        requests,
        max_batch=options.batch_size,
        decode=loaded.tokenizer.decode,
        autocast=loaded.autocast,
        on_done=count,
    )
    texts = [g.text or "" for g in gens]
    return [texts[i * k : (i + 1) * k] for i in range(len(items))]


def _score_rewards(
    rewards: Sequence[Reward], items: Sequence[GenerateItem], replies: list[list[str]]
) -> tuple[list[list[float]], dict[str, float]]:
    """Every sample's weighted reward, and the means; an error names the item."""
    totals, sums = [], dict.fromkeys([r.label for r in rewards], 0.0)
    for i, (item, outs) in enumerate(zip(items, replies, strict=True)):
        try:
            scores = score_rewards(rewards, outs, [item.answer] * len(outs), [_prompt_text(item)] * len(outs))
        except LlmctlError as err:
            name = f"item {i + 1}" + (f" (id {item.id})" if item.id is not None else "")
            raise LlmctlError(f"{name}: {err.message}", err.hint) from None
        totals.append(scores.total)
        for label, column in scores.per_reward.items():
            sums[label] += sum(column)
    count = max(1, sum(len(t) for t in totals))
    means = {"reward": sum(sum(t) for t in totals) / count}
    means.update({f"rewards/{label}/mean": total / count for label, total in sums.items()})
    return totals, means


def _add_passes(result: GenerateResult, replies: list[list[str]], scores: list[list[float]], n: int) -> None:
    """pass@1 and pass@n from each item's n sample scores (a sample passes above 0), and the per-item
    records' samples and scores."""
    passed = [sum(s > 0 for s in row) for row in scores]
    for k in sorted({1, n}):
        result.passes[f"pass@{k}"] = sum(pass_at_k(n, c, k) for c in passed) / max(1, len(passed))
    result.samples = n
    for record, outs, row in zip(result.items, replies, scores, strict=True):
        record.update({"samples": outs, "scores": row} if n > 1 else {"reward": row[0]})


def score_generations(
    loaded: LoadedModel,
    items: Sequence[GenerateItem],
    *,
    regex: str | None = None,
    max_new_tokens: int = 256,
    on_progress: Callable[[int, int], None] | None = None,
    batch_size: int = 16,
    rewards: Sequence[Reward] = (),
    num_samples: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
) -> GenerateResult:
    """Decode answers to every item, batch_size at a time, and score exact_match (the first sample)
    against the reference; with rewards or several samples, also pass@1 and pass@num_samples.

    A sample passes when its weighted reward is above 0 (without rewards: when it is an exact match).
    pass@k is Chen et al.'s unbiased estimate from the item's n = num_samples samples, averaged over
    items: pass@1 is the mean fraction of passing samples, pass@n the fraction of items with any.
    """
    if num_samples > 1 and temperature <= 0:
        raise LlmctlError(
            f"--num-samples {num_samples} at temperature 0 gives {num_samples} identical answers",
            "pass --temperature above 0 (e.g. 0.8) for pass@k, or drop --num-samples",
        )
    pattern = compile_regex(regex)
    start = time.perf_counter()
    options = DecodeOptions(max_new_tokens, batch_size, num_samples, temperature, seed)
    replies = _decode_all(loaded, items, options, on_progress)
    hits, records = [], []
    for item, outs in zip(items, replies, strict=True):
        extracted, hit = match_answer(outs[0], item.answer, pattern)
        hits.append(float(hit))
        record = {
            "id": item.id,
            "answer": item.answer,
            "output": outs[0],
            "extracted": extracted,
            "correct": hit,
        }
        records.append(record)
    result = GenerateResult(len(items), sum(hits) / max(1, len(items)), mean_stderr(hits), 0.0, records)
    if rewards or num_samples > 1:
        if rewards:
            scores, result.rewards = _score_rewards(rewards, items, replies)
        else:
            scores = [
                [float(match_answer(o, it.answer, pattern)[1]) for o in outs]
                for it, outs in zip(items, replies, strict=True)
            ]
        _add_passes(result, replies, scores, num_samples)
    result.seconds = time.perf_counter() - start
    return result
