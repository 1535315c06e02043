"""Reinforcement learning with verifiable rewards: the GRPO objective the shared Trainer drives, and `run_grpo`.

    outcome = run_grpo(load_config(None, {"checkpoint.init": "runs/sft/checkpoints/latest",
                                          "data.path": "data/addition.jsonl", "grpo.rewards": ["number"]}))

Each optimizer step (or each num_iterations steps, mu) starts with a rollout (llmctl/engine/grpo_rollout.py):
prompts_per_step prompts from the data, in a seeded order, each sampled num_generations times by the policy
as it is now, and scored by the rewards. Group-relative advantages and the clipped loss are
llmctl/engine/grpo_loss.py's. The rollout's completions are cut into micro-batches of train.micro_batch_size;
`loss_sum` returns the summed per-token (dapo) or per-sequence (grpo, dr_grpo) losses and each batch's
`trained_tokens` counts tokens or sequences, so the Trainer's division by the step's count is exactly the
loss type's mean. With mu > 1 the rollout's log-probs (the old policy's) are kept, in the checkpoint too,
so a resume inside a rollout continues with the same completions. The reference (beta > 0) is the --init
weights: the base with adapters switched off under LoRA, else a frozen copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llmctl.config import Config
from llmctl.engine.grpo_loss import group_advantages, grpo_loss
from llmctl.engine.grpo_rollout import (
    ChatPrompter,
    Rollout,
    RolloutSettings,
    check_answers,
    check_prompt_lengths,
    sample_rollout,
    try_rewards,
)
from llmctl.engine.objectives import IGNORE_INDEX, BaseObjective, Batch, SamplePrompt
from llmctl.engine.run import RunInputs, open_init, run_training
from llmctl.errors import LlmctlError
from llmctl.eval.rewards import Reward, load_reward_module, parse_reward
from llmctl.telemetry.events import SampleRecord
from llmctl.tokens.prompt_rows import PromptRow, read_prompt_rows


@dataclass
class GRPOBatch(Batch):
    """Completions of one micro-batch: prompt + completion as inputs, the completion's tokens as targets."""

    mask: torch.Tensor | None = None
    """[B, T] 1.0 where the target is a completion token."""
    advantages: torch.Tensor | None = None
    """[B] each completion's advantage."""
    old_logps: torch.Tensor | None = None
    """[B, T] the sampling policy's log-probs (mu > 1); None: the current ones, detached."""
    ref_logps: torch.Tensor | None = None
    """[B, T] the reference's log-probs (beta > 0)."""

    def to(self, device: torch.device) -> GRPOBatch:
        if device.type == "cpu":
            return self
        moved = {
            k: getattr(self, k).to(device)
            for k in ("inputs", "targets", "mask", "advantages", "old_logps", "ref_logps")
            if getattr(self, k) is not None
        }
        return dataclasses.replace(self, **moved)


def make_batch(seqs: list[tuple[list[int], list[int]]], pad_id: int, by_sequence: bool) -> GRPOBatch:
    """(prompt ids, completion ids) pairs right-padded into one batch; `by_sequence`: trained_tokens counts
    sequences (grpo, dr_grpo), else completion tokens (dapo)."""
    width = max(len(p) + len(c) for p, c in seqs) - 1
    inputs = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    targets = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    for b, (prompt, completion) in enumerate(seqs):
        ids = torch.tensor(prompt + completion)
        inputs[b, : len(ids) - 1] = ids[:-1]
        targets[b, len(prompt) - 1 : len(ids) - 1] = ids[len(prompt) :]
    mask = (targets != IGNORE_INDEX).float()
    tokens = sum(len(p) + len(c) - 1 for p, c in seqs)
    trained = len(seqs) if by_sequence else int(mask.sum())
    return GRPOBatch(inputs, targets, tokens=tokens, samples=len(seqs), trained_tokens=trained, mask=mask)


def token_logps(
    model: torch.nn.Module, batch: GRPOBatch, autocast: Callable[[], Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the targets [B, T], float32, 0 where not trained; the policy's entropy per position)."""
    with autocast():
        logits = model(batch.inputs)
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, batch.targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    with torch.no_grad():
        entropy = -(logp.exp() * logp).sum(-1)
    return picked * batch.mask, entropy  # type: ignore[operator]


def load_rewards(cfg: Config) -> list[Reward]:
    """The built-in rewards and the user's own modules the config names; at least one."""
    rewards = [parse_reward(s) for s in cfg.grpo.rewards] + [
        load_reward_module(s) for s in cfg.grpo.reward_modules
    ]
    if not rewards:
        raise LlmctlError(
            "grpo needs at least one reward",
            "e.g. --reward number (the final number equals the row's answer)",
        )
    return rewards


class GRPOObjective(BaseObjective):
    """Group-relative policy optimisation on prompts with checkable answers (module docstring)."""

    name = "grpo"

    def __init__(
        self,
        cfg: Config,
        rows: list[PromptRow],
        prompts: list[list[int]],
        prompter: ChatPrompter,
        rewards: list[Reward],
        *,
        source: str,
        ref_model: torch.nn.Module | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        g = cfg.grpo
        self.cfg, self.rows, self.prompts, self.prompter, self.rewards = cfg, rows, prompts, prompter, rewards
        self.source, self.ref_model, self.rank, self.world = source, ref_model, rank, world
        self.settings = RolloutSettings(g.num_generations, g.max_new_tokens, g.temperature, g.top_k, g.top_p)
        self.by_sequence = g.loss_type != "dapo"
        self.pad_id = prompter.tokenizer.pad_id if prompter.tokenizer.pad_id is not None else 0
        self.model: torch.nn.Module | None = None
        self.autocast: Callable[[], Any] = contextlib.nullcontext
        self.extra_forward_passes = float(g.beta > 0) + float(g.num_iterations > 1)
        self.rollouts = 0
        """Rollouts drawn so far (all ranks draw theirs together)."""
        self.steps = 0
        """Optimizer steps trained so far."""
        self.pending: dict[str, Any] | None = None
        """The current rollout: its sequences, advantages, old and reference log-probs, metrics."""
        self.queue: list[GRPOBatch] = []
        self._sums = torch.zeros(6, dtype=torch.float64)
        self._samples: list[SampleRecord] = []
        self._order: tuple[int, Any] = (-1, None)
        """(pass over the data, its order of rows), for the pass being drawn."""

    def attach(self, model: torch.nn.Module, autocast: Callable[[], Any]) -> None:
        self.model, self.autocast = model, autocast

    # -- rollouts -------------------------------------------------------------------------------

    def _rows_of(self, rollout: int) -> list[int]:
        """This rank's data rows for a rollout: a seeded shuffle per pass over the data, ranks disjoint."""
        per = self.cfg.grpo.prompts_per_step
        n, out = len(self.rows), []
        for j in range(per):
            i = (rollout * self.world + self.rank) * per + j
            if self._order[0] != i // n:
                self._order = (i // n, np.random.default_rng([self.cfg.train.seed, i // n]).permutation(n))
            out.append(int(self._order[1][i % n]))
        return out

    def _draw(self) -> dict[str, Any]:
        """A new rollout from the policy as it is now, scored, with advantages (and kept log-probs)."""
        assert self.model is not None, "the Trainer attaches the model before the first batch"
        chosen = self._rows_of(self.rollouts)
        g = self.cfg.grpo
        seed = (
            self.cfg.train.seed * 1_000_003
            + (self.rollouts * self.world + self.rank) * len(chosen) * g.num_generations
        )
        rollout = sample_rollout(
            self.model,
            [(r, self.prompts[r]) for r in chosen],
            self.rows,
            self.rewards,
            self.settings,
            seed=seed,
            stop_ids=self.prompter.stop_ids,
            decode=self.prompter.tokenizer.decode,
            autocast=self.autocast,
            source=self.source,
        )
        self.rollouts += 1
        advantages, stats = group_advantages(
            torch.tensor(rollout.totals), g.num_generations, scale_rewards=g.scale_rewards
        )
        state = {
            "seqs": [[s.prompt_ids, s.completion_ids] for s in rollout.sequences],
            "advantages": advantages.tolist(),
            "metrics": {**rollout.metrics, **stats},
        }
        self._keep_samples(rollout, state["advantages"])
        self._add_logps(state)
        return state

    @torch.no_grad()
    def _add_logps(self, state: dict[str, Any]) -> None:
        """The old policy's (mu > 1) and the reference's (beta > 0) log-probs of each completion token."""
        g = self.cfg.grpo
        if g.num_iterations <= 1 and g.beta <= 0:
            return
        from llmctl.model.lora import adapters_disabled

        assert self.model is not None
        model, was_training = self.model, self.model.training
        model.eval()
        old, ref = [], []
        try:
            for batch in self._batches(state):
                lengths = [len(c) for _, c in batch[1]]
                b = batch[0]
                if g.num_iterations > 1:
                    old += _rows(token_logps(model, b, self.autocast)[0], b.mask, lengths)
                if g.beta > 0:
                    if self.ref_model is not None:
                        ref_lp = token_logps(self.ref_model, b, self.autocast)[0]
                    else:
                        with adapters_disabled(model):
                            ref_lp = token_logps(model, b, self.autocast)[0]
                    ref += _rows(ref_lp, b.mask, lengths)
        finally:
            model.train(was_training)
        state["old"], state["ref"] = old or None, ref or None

    def _batches(self, state: dict[str, Any]) -> list[tuple[GRPOBatch, list[tuple[list[int], list[int]]]]]:
        """The rollout's micro-batches (in order), with their (prompt, completion) pairs."""
        size = self.cfg.train.micro_batch_size
        seqs = [(list(p), list(c)) for p, c in state["seqs"]]
        out = []
        for start in range(0, len(seqs), size):
            part = seqs[start : start + size]
            batch = make_batch(part, self.pad_id, self.by_sequence)
            batch.advantages = torch.tensor(state["advantages"][start : start + size], dtype=torch.float32)
            for key, attr in (("old", "old_logps"), ("ref", "ref_logps")):
                if state.get(key):
                    setattr(batch, attr, _place(state[key][start : start + size], batch.mask))
            out.append((batch, part))
        return out

    def _keep_samples(self, rollout: Rollout, advantages: list[float]) -> None:
        """The first completions of the rollout as sample records, for samples.jsonl."""
        self._samples = [
            SampleRecord(
                self.steps + 1,
                self.rows[s.row].text,
                s.text,
                self.rows[s.row].answer,
                "rollout",
                new_tokens=len(s.completion_ids),
                rewards={
                    **{label: col[k] for label, col in rollout.per_reward.items()},
                    "total": rollout.totals[k],
                    "advantage": advantages[k],
                },
            )
            for k, s in enumerate(rollout.sequences[: self.cfg.grpo.samples])
        ]

    # -- the Objective interface ----------------------------------------------------------------

    def train_batch(self) -> Batch:
        if not self.queue:
            # A step starts: a new rollout every num_iterations steps, else the kept one again.
            if self.pending is None or self.steps % self.cfg.grpo.num_iterations == 0:
                self.pending = self._draw()
            self.queue = [b for b, _ in self._batches(self.pending)]
            self.steps += 1
        return self.queue.pop(0)

    def eval_batches(self) -> list[Batch]:
        return []

    def sample_prompts(self) -> list[SamplePrompt]:
        return []

    def stop_ids(self) -> list[int]:
        return list(self.prompter.stop_ids)

    def take_samples(self, step: int) -> list[Any]:
        every = self.cfg.train.sample_every
        if not every or step % every or not self._samples:
            return []
        return [dataclasses.replace(r, step=step) for r in self._samples]

    def describe(self) -> dict[str, Any]:
        g = self.cfg.grpo
        return {
            "prompts": len(self.rows),
            "prompts_per_step": g.prompts_per_step,
            "num_generations": g.num_generations,
            "rewards": " + ".join(f"{r.weight:g}*{r.label}" for r in self.rewards),
            "loss_type": g.loss_type,
            "beta": g.beta,
            "num_iterations": g.num_iterations,
            "reference": "none"
            if g.beta <= 0
            else ("base (adapters off)" if self.ref_model is None else "frozen copy"),
        }

    def summary_extra(self) -> dict[str, Any]:
        return {"grpo_data": self.describe()}

    def state_dict(self) -> dict[str, Any]:
        # Mid-rollout (mu > 1), the rollout itself: the next steps train on the same completions.
        mid = self.pending is not None and self.steps % self.cfg.grpo.num_iterations != 0
        return {"rollouts": self.rollouts, "steps": self.steps, "pending": self.pending if mid else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts, self.steps = int(state["rollouts"]), int(state["steps"])
        self.pending, self.queue = state.get("pending"), []

    def loss_sum(
        self, model: torch.nn.Module, batch: Any, autocast: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The micro-batch's summed GRPO loss (tokens for dapo, sequences otherwise); metrics accumulate."""
        g = self.cfg.grpo
        logps, entropy = token_logps(model, batch, autocast)
        loss, metrics = grpo_loss(
            logps,
            batch.advantages,
            batch.mask,
            old_logps=batch.old_logps,
            ref_logps=batch.ref_logps,
            beta=g.beta,
            epsilon=g.epsilon,
            epsilon_high=g.epsilon_high,
            loss_type=g.loss_type,
            max_completion_length=g.max_new_tokens,
            num_items_in_batch=1.0,
        )
        rows = batch.inputs.shape[0]
        total = loss * rows if self.by_sequence else loss
        tokens = float(batch.mask.sum())
        with torch.no_grad():
            self._sums += torch.tensor(
                [
                    tokens,
                    float((entropy * batch.mask).sum()),
                    metrics.get("kl", 0.0) * tokens,
                    metrics["clip_ratio/low_mean"] * tokens,
                    metrics["clip_ratio/high_mean"] * tokens,
                    metrics["clip_ratio/region_mean"] * tokens,
                ],
                dtype=torch.float64,
            )
        return total, torch.zeros((), device=logps.device)

    def take_metrics(self, kind: str, dist: Any, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """The rollout's figures (this rank's) and the loss's token means since the last call (all ranks)."""
        from llmctl.engine import distributed as D

        if kind != "train":
            return {}, []
        sums = D.all_reduce_sum(dist, self._sums.to(device)).tolist()
        self._sums = torch.zeros(6, dtype=torch.float64)
        tokens = max(1.0, sums[0])
        metrics = dict((self.pending or {}).get("metrics") or {})
        metrics.update(
            {
                "entropy": sums[1] / tokens,
                "clip_ratio/low_mean": sums[3] / tokens,
                "clip_ratio/high_mean": sums[4] / tokens,
                "clip_ratio/region_mean": sums[5] / tokens,
            }
        )
        if self.cfg.grpo.beta > 0:
            metrics["kl"] = sums[2] / tokens
        return metrics, []


def _rows(values: torch.Tensor, mask: torch.Tensor, lengths: list[int]) -> list[list[float]]:
    """Each row's values at its completion positions, as plain floats (kept in checkpoint.json)."""
    return [values[b][mask[b] > 0].tolist()[:n] for b, n in enumerate(lengths)]


def _place(rows: list[list[float]], mask: torch.Tensor) -> torch.Tensor:
    """Per-row completion values laid back onto a batch's [B, T] grid (0 elsewhere)."""
    out = torch.zeros(mask.shape, dtype=torch.float32)
    for b, values in enumerate(rows):
        out[b][mask[b] > 0] = torch.tensor(values, dtype=torch.float32)
    return out


def check_grpo_config(cfg: Config) -> None:
    """Refuse settings GRPO cannot train with, naming the key."""
    g, t = cfg.grpo, cfg.train
    if g.num_generations < 2:
        raise LlmctlError(
            f"grpo.num_generations must be at least 2, got {g.num_generations}",
            "the advantage compares completions of the same prompt: --grpo.num_generations=8 is common",
        )
    positive = {
        "grpo.prompts_per_step": g.prompts_per_step,
        "grpo.max_new_tokens": g.max_new_tokens,
        "grpo.num_iterations": g.num_iterations,
    }
    for key, value in positive.items():
        if value < 1:
            raise LlmctlError(f"{key} must be at least 1, got {value}", f"set --{key}=<positive integer>")
    for key, value in {"grpo.temperature": g.temperature, "grpo.epsilon": g.epsilon}.items():
        if not value > 0:
            raise LlmctlError(f"{key} must be above 0, got {value}", f"e.g. --{key}=1.0")
    if g.epsilon_high is not None and g.epsilon_high < g.epsilon:
        raise LlmctlError(
            f"grpo.epsilon_high={g.epsilon_high} is below grpo.epsilon={g.epsilon}",
            "clip-higher widens the upper range only: e.g. --grpo.epsilon_high=0.28",
        )
    if g.beta < 0:
        raise LlmctlError(f"grpo.beta must be 0 or more, got {g.beta}", "0 (no reference) or e.g. 0.04")
    completions = g.prompts_per_step * g.num_generations
    if completions % t.micro_batch_size:
        raise LlmctlError(
            f"a step's {completions} completions (grpo.prompts_per_step x grpo.num_generations) do not split "
            f"into micro-batches of train.micro_batch_size={t.micro_batch_size}",
            f"choose a --train.micro_batch_size that divides {completions}",
        )
    if cfg.dist.strategy == "fsdp":
        raise LlmctlError("grpo samples from the whole model on every rank", "use --dist.strategy=ddp")


@dataclass
class GRPOOutcome:
    """A finished GRPO run: the training outcome, the init checkpoint and what the run did."""

    run: Any
    init: str
    data: dict[str, Any]


@dataclass(frozen=True)
class _Prepared:
    cfg: Config
    inputs: RunInputs
    rows: list[PromptRow]
    prompts: list[list[int]]
    prompter: ChatPrompter
    rewards: list[Reward]


def _prepare(cfg: Config) -> _Prepared:
    """Every check before anything is written: config, rewards (imported and called once), prompts (with
    answers where a reward needs them, and room for a completion), the init checkpoint."""
    from llmctl.data_sources import SourceSpec
    from llmctl.infer.checkpoint import open_checkpoint

    check_grpo_config(cfg)
    if not cfg.checkpoint.init:
        raise LlmctlError(
            "grpo needs a checkpoint to start from", "pass --init RUN/checkpoints/latest (an SFT run)"
        )
    if not cfg.data.path:
        raise LlmctlError(
            "no prompts given", "pass --data FILE.jsonl (rows with 'prompt' or 'messages', and 'answer')"
        )
    rewards = load_rewards(cfg)
    source = str(cfg.data.path)
    rows = read_prompt_rows(source)
    check_answers(rows, rewards, source)
    try_rewards(rows, rewards)
    peek = open_checkpoint(cfg.checkpoint.init)
    tokenizer = peek.tokenizer()
    prompter = ChatPrompter(peek.manifest, tokenizer)
    prompts = [prompter.ids(r) for r in rows]
    context = peek.config.model.max_seq_len
    check_prompt_lengths(prompts, cfg.grpo.max_new_tokens, context, source)
    seq_len = max(len(p) for p in prompts) + cfg.grpo.max_new_tokens
    world = int(os.environ.get("WORLD_SIZE", "1"))
    train = dataclasses.replace(
        cfg.train,
        global_batch_size=cfg.grpo.prompts_per_step * cfg.grpo.num_generations * world,
        global_batch_tokens=None,
        name=cfg.train.name or f"grpo-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    cfg = dataclasses.replace(cfg, train=train, data=dataclasses.replace(cfg.data, seq_len=seq_len))
    cfg, init = open_init(cfg)
    meta = {
        **dict(init.manifest.get("data_meta") or {}),
        "mode": "grpo",
        "tokenizer": {
            "path": str(tokenizer.path),
            "fingerprint": tokenizer.fingerprint,
            "vocab_size": tokenizer.vocab_size,
        },
        "vocab_size": (init.manifest.get("data_meta") or {}).get("vocab_size") or tokenizer.vocab_size,
        "splits": {},
    }
    inputs = RunInputs([SourceSpec(source)], [meta], tokenizer, init)
    return _Prepared(cfg, inputs, rows, prompts, prompter, rewards)


def grpo_objective(cfg: Config, inputs: RunInputs, dist: Any, *, prepared: _Prepared) -> GRPOObjective:
    """The GRPOObjective of this rank, with a frozen reference copy when beta > 0 and not LoRA."""
    from llmctl.engine.runtime import choose_runtime
    from llmctl.model.build import build_model

    ref_model = None
    if cfg.grpo.beta > 0 and cfg.lora.rank <= 0:
        assert inputs.init is not None
        device = choose_runtime(cfg.train, dist.local_rank).device
        ref_model = build_model(cfg.model, device, state=inputs.init.model_state()).requires_grad_(False)
    p = prepared
    return GRPOObjective(
        cfg,
        p.rows,
        p.prompts,
        p.prompter,
        p.rewards,
        source=str(cfg.data.path),
        ref_model=ref_model,
        rank=dist.rank,
        world=dist.world_size,
    )


def run_grpo(cfg: Config, reporter: Any = None, *, force: bool = False) -> GRPOOutcome:
    """Train the --init checkpoint with GRPO on prompts and rewards, with the shared Trainer."""
    prepared = _prepare(cfg)
    made: list[GRPOObjective] = []

    def make(cfg: Config, inputs: RunInputs, dist: Any) -> GRPOObjective:
        made.append(grpo_objective(cfg, inputs, dist, prepared=prepared))
        return made[-1]

    outcome = run_training(prepared.cfg, make, reporter=reporter, force=force, inputs=prepared.inputs)
    data = {**made[0].describe(), "rollouts": made[0].rollouts} if made else {}
    return GRPOOutcome(outcome, str(prepared.inputs.init.path), data)  # type: ignore[union-attr]
