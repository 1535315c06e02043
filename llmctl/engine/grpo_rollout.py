"""GRPO rollouts: prompts rendered as the model chats, G completions sampled per prompt, rewards scored.

    prompter = ChatPrompter(manifest, tokenizer)
    rollout = sample_rollout(model, prompts, rows, rewards, settings, seed=..., autocast=...)
    rollout.sequences[k].completion_ids, rollout.totals[k], rollout.metrics["reward"]

A prompt is rendered exactly as `generate --chat` and `chat` render a user's turn: with the checkpoint's own
Jinja chat template where it has one (imported models and their fine-tunes), else with the chat profile its
SFT data used; completions stop at the same end-of-turn and end-of-document ids. Completions come from
`infer/batch.py`'s `generate_batch`, each with its own seed, so a rollout is the same whatever else is in
the batch and is drawn again identically after a resume. The completion ids keep the stop token (it is
trained, as TRL does), the completion text (what rewards see) leaves it out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llmctl.errors import LlmctlError
from llmctl.eval.rewards import Reward, score_rewards
from llmctl.tokens.prompt_rows import PromptRow


class ChatPrompter:
    """How a prompt row becomes ids, and the ids that end a reply, for one checkpoint."""

    def __init__(self, manifest: dict[str, Any], tokenizer: Any) -> None:
        from llmctl.tokenizer.chat import reply_stop_ids, require_profile
        from llmctl.tokenizer.template import TemplateChat, stop_ids

        self.tokenizer = tokenizer
        self.template = TemplateChat.from_manifest(manifest, tokenizer)
        self.profile = None
        if self.template is None:
            name = (((manifest.get("data_meta") or {}).get("chat_profile")) or {}).get("name", "chat")
            self.profile = require_profile(
                name,
                tokenizer,
                "GRPO samples replies to chat prompts: start from a model fine-tuned with `llmctl sft` or an "
                "imported chat model",
            )
            self.stop_ids = reply_stop_ids(self.profile, tokenizer.token_to_id, tokenizer.eos_id)
        else:
            self.stop_ids = stop_ids(tokenizer, manifest)

    def ids(self, row: PromptRow) -> list[int]:
        """The row's conversation rendered with the generation prompt (the assistant's turn opened)."""
        from llmctl.tokenizer.chat import render

        if self.template is not None:
            return self.template.render_ids(row.messages, add_generation_prompt=True)
        assert self.profile is not None
        tok = self.tokenizer
        return render(row.messages, self.profile, tok.encode, tok.token_to_id, add_generation_prompt=True).ids


def check_prompt_lengths(
    prompts: Sequence[list[int]], max_new_tokens: int, context: int, source: str
) -> None:
    """Refuse prompts that leave no room for a full completion in the model's context, naming the row."""
    for row, ids in enumerate(prompts):
        if len(ids) + max_new_tokens > context:
            longest = max(len(p) for p in prompts)
            room = context - longest
            raise LlmctlError(
                f"row {row} of {source} is {len(ids)} tokens as a prompt; with --grpo.max_new_tokens="
                f"{max_new_tokens} it does not fit the model's context of {context} tokens",
                (f"--grpo.max_new_tokens={room} fits every prompt; or " if room > 0 else "")
                + "shorten or drop the longest prompts",
            )


def check_answers(rows: Sequence[PromptRow], rewards: Sequence[Reward], source: str) -> None:
    """Every reward that compares with an answer finds one in every row: an error naming the first row
    without one, before any training."""
    needing = [r.label for r in rewards if r.needs_answer]
    if not needing:
        return
    for k, row in enumerate(rows):
        if row.answer is None:
            raise LlmctlError(
                f"row {k} of {source} has no 'answer', which the {needing[0]} reward needs",
                "give every row an 'answer', or use only rewards that need none (format:PATTERN, "
                "--reward-module)",
            )


def try_rewards(rows: Sequence[PromptRow], rewards: Sequence[Reward]) -> None:
    """Call every reward once before training (on row 0, its own answer as the completion), so a reward
    that fails on any input stops the command before the run starts."""
    row = rows[0]
    score_rewards(rewards, [row.answer or ""], [row.answer], [row.text])


@dataclass(frozen=True)
class RolloutSettings:
    """What a rollout samples: completions per prompt, their length and the sampling settings."""

    num_generations: int
    max_new_tokens: int
    temperature: float
    top_k: int | None = None
    top_p: float | None = None


@dataclass
class Completion:
    """One completion of one prompt: its ids (the stop token kept), text, and the data row it answers."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    row: int
    stop_reason: str


@dataclass
class Rollout:
    """prompts x G completions in group order, each one's summed reward, each reward's column and the
    rollout's metrics (TRL's names)."""

    sequences: list[Completion]
    totals: list[float]
    per_reward: dict[str, list[float]]
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def _score(
    rewards: Sequence[Reward], sequences: list[Completion], rows: Sequence[PromptRow], source: str
) -> tuple[list[float], dict[str, list[float]]]:
    """Summed and per-reward scores; a failing reward's error names the data row it was scoring."""
    totals: list[float] = []
    per_reward: dict[str, list[float]] = {r.label: [] for r in rewards}
    for s in sequences:
        row = rows[s.row]
        try:
            scores = score_rewards(rewards, [s.text], [row.answer], [row.text])
        except LlmctlError as exc:
            # rewards.py numbers the rows it was given: here one, row 0; name the data row instead.
            raise LlmctlError(exc.message.replace("row 0", f"row {s.row} of {source}", 1), exc.hint) from exc
        totals.append(scores.total[0])
        for label, column in scores.per_reward.items():
            per_reward[label].append(column[0])
    return totals, per_reward


def length_metrics(sequences: Sequence[Completion]) -> dict[str, float]:
    """TRL's completion-length figures: mean, min and max length, the share cut at max_new_tokens
    (`clipped_ratio`), and the mean length of those that ended on their own."""
    lengths = [len(s.completion_ids) for s in sequences]
    ended = [n for n, s in zip(lengths, sequences, strict=True) if s.stop_reason != "length"]
    return {
        "completions/mean_length": sum(lengths) / len(lengths),
        "completions/min_length": float(min(lengths)),
        "completions/max_length": float(max(lengths)),
        "completions/clipped_ratio": 1 - len(ended) / len(lengths),
        "completions/mean_terminated_length": sum(ended) / len(ended) if ended else 0.0,
    }


@torch.no_grad()
def sample_rollout(
    model: Any,
    prompts: Sequence[tuple[int, list[int]]],
    rows: Sequence[PromptRow],
    rewards: Sequence[Reward],
    settings: RolloutSettings,
    *,
    seed: int,
    stop_ids: Sequence[int],
    decode: Callable[[list[int]], str],
    autocast: Callable[[], Any],
    source: str,
) -> Rollout:
    """G completions of each (data row, prompt ids), seeded seed, seed + 1, ... in group order, scored."""
    from llmctl.infer.batch import Request, generate_batch
    from llmctl.infer.sampling import Sampling

    sampling = Sampling(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
    requests = [
        Request(
            ids,
            settings.max_new_tokens,
            sampling,
            seed=seed + k * settings.num_generations + g,
            stop_ids=stop_ids,
        )
        for k, (_, ids) in enumerate(prompts)
        for g in range(settings.num_generations)
    ]
    start = time.perf_counter()
    generations = generate_batch(model, requests, max_batch=len(requests), decode=decode, autocast=autocast)
    seconds = time.perf_counter() - start
    sequences = [
        Completion(
            list(req.prompt_ids),
            gen.ids,
            gen.text or "",
            prompts[k // settings.num_generations][0],
            gen.stop_reason,
        )
        for k, (req, gen) in enumerate(zip(requests, generations, strict=True))
    ]
    totals, per_reward = _score(rewards, sequences, rows, source)
    generated = sum(len(s.completion_ids) for s in sequences)
    metrics = {
        **length_metrics(sequences),
        **{f"rewards/{label}/mean": sum(col) / len(col) for label, col in per_reward.items()},
        "rollout_tokens_per_sec": generated / seconds if seconds > 0 else 0.0,
    }
    return Rollout(sequences, totals, per_reward, metrics, seconds)
