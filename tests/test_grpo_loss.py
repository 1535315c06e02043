"""GRPO advantages and loss (llmctl/engine/grpo_loss.py): hand-checked cases and parity with TRL's GRPOTrainer."""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from llmctl.engine.grpo_loss import LOSS_TYPES, group_advantages, grpo_loss
from llmctl.errors import LlmctlError

G = 4
MAX_COMPLETION_LENGTH = 7


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two prompts x G completions of up to 5 tokens: log-probs moved away from old and reference ones
    far enough that some tokens clip on either side, rewards with one flat group out of three."""
    gen = torch.Generator().manual_seed(seed)
    b, t = 3 * G, 5
    old = -torch.rand(b, t, generator=gen) * 3
    logps = old + torch.randn(b, t, generator=gen) * 0.4
    ref = old + torch.randn(b, t, generator=gen) * 0.3
    lengths = torch.tensor([5, 3, 1, 4, 2, 5, 5, 3, 4, 1, 2, 5])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    return {"logps": logps, "old": old, "ref": ref, "mask": mask, "rewards": rewards}


def trl_advantages(rewards: torch.Tensor, scale_rewards: str) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL 1.x's `_generate_and_score_completions` advantages for one reward function of weight 1
    (multi_objective_aggregation="sum_then_normalize"). Calling that method needs a model, a tokenizer and
    generation, so these are its lines, with its own `nanstd`:

        mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
        mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
        if self.scale_rewards in ["group", "none"]:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        elif self.scale_rewards == "batch":
            std_rewards = nanstd(rewards).expand_as(rewards)
        advantages = rewards - mean_grouped_rewards
        if self.scale_rewards != "none":
            advantages = advantages / (std_rewards + 1e-4)
        is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))  # for logging
    """
    from trl.trainer.utils import nanstd

    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale_rewards in ["group", "none"]:
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    return advantages, torch.isclose(std, torch.zeros_like(std))


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_and_reward_stats_match_trl(scale_rewards: str) -> None:
    pytest.importorskip("trl")
    from trl.trainer.utils import nanstd

    rewards = batch()["rewards"]
    ours, stats = group_advantages(rewards, G, scale_rewards=scale_rewards)
    theirs, zero = trl_advantages(rewards, scale_rewards)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    assert stats["reward"] == pytest.approx(torch.nanmean(rewards).item())
    assert stats["reward_std"] == pytest.approx(nanstd(rewards).item())
    assert stats["frac_reward_zero_std"] == pytest.approx(zero.float().mean().item())
    assert stats["zero_std_groups"] == 1  # the third group: all 0.5


def test_flat_groups_have_zero_advantage_and_are_counted() -> None:
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    advantages, stats = group_advantages(rewards, 2)
    assert advantages[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert advantages[4].item() < 0 < advantages[5].item()
    assert stats["zero_std_groups"] == 2 and stats["frac_reward_zero_std"] == 0.5


def test_fewer_than_two_generations_is_an_error_with_a_hint() -> None:
    with pytest.raises(LlmctlError, match="at least 2 completions") as info:
        group_advantages(torch.ones(4), 1)
    assert info.value.hint


def trl_loss(data: dict[str, torch.Tensor], advantages: torch.Tensor, **cfg: Any) -> tuple[float, dict]:
    """TRL 1.x's `GRPOTrainer._compute_loss`, called on a minimal `self`: one process, no gradient
    accumulation, token-level importance sampling, no vLLM, no entropy masking or bonus. The model's
    forward is replaced by the fixed per-token log-probs (the method's only model call)."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    logps = data["logps"].clone().requires_grad_(True)
    mask = data["mask"]
    this = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *args, **kwargs: (logps, torch.zeros_like(logps), None),
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=cfg["beta"],
        loss_type=cfg["loss_type"],
        epsilon_low=cfg["epsilon"],
        epsilon_high=cfg["epsilon_high"],
        max_completion_length=MAX_COMPLETION_LENGTH,
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list)},
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        accelerator=SimpleNamespace(num_processes=1, reduce=lambda t, reduction: t, gather=lambda t: t),
    )
    inputs = {
        "prompt_ids": torch.ones(mask.size(0), 2, dtype=torch.long),
        "prompt_mask": torch.ones(mask.size(0), 2, dtype=torch.long),
        "completion_ids": torch.ones_like(mask),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": cfg.get("old"),
        "ref_per_token_logps": data["ref"],
        "num_items_in_batch": mask.sum(),
    }
    loss = GRPOTrainer._compute_loss(this, None, inputs)
    loss.backward()
    metrics = {key: values[0] for key, values in this._metrics["train"].items()}
    return loss.item(), {"metrics": metrics, "grad": logps.grad}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_loss_metrics_and_gradient_match_trl(loss_type: str, beta: float) -> None:
    pytest.importorskip("trl")
    data = batch(seed=1)
    advantages, _ = group_advantages(data["rewards"], G)
    cfg = {"beta": beta, "loss_type": loss_type, "epsilon": 0.2, "epsilon_high": 0.28, "old": data["old"]}
    theirs, extra = trl_loss(data, advantages, **cfg)
    logps = data["logps"].clone().requires_grad_(True)
    loss, metrics = grpo_loss(
        logps,
        advantages,
        data["mask"],
        old_logps=data["old"],
        ref_logps=data["ref"] if beta else None,
        beta=beta,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type=loss_type,
        max_completion_length=MAX_COMPLETION_LENGTH,
    )
    loss.backward()
    assert loss.item() == pytest.approx(theirs, abs=1e-6)
    torch.testing.assert_close(logps.grad, extra["grad"], atol=1e-7, rtol=1e-5)
    expected = {
        k: v for k, v in extra["metrics"].items() if k.startswith("clip_ratio/") and k.endswith("_mean")
    }
    expected |= {"kl": extra["metrics"]["kl"]} if beta else {}
    assert metrics == pytest.approx(expected, abs=1e-6)
    assert metrics["clip_ratio/low_mean"] > 0 and metrics["clip_ratio/high_mean"] > 0  # both sides exercised


def test_first_iteration_ratio_is_one_with_the_advantage_as_gradient() -> None:
    """mu = 1: old log-probs are the current ones detached, so rho = 1, nothing clips, and the loss of
    each token is -A; with dapo the gradient on a token is -A_i / N."""
    data = batch()
    advantages = torch.linspace(-1.5, 1.5, data["mask"].size(0))
    logps = data["logps"].clone().requires_grad_(True)
    loss, metrics = grpo_loss(logps, advantages, data["mask"], loss_type="dapo")
    loss.backward()
    mask = data["mask"].float()
    tokens = mask.sum()
    assert loss.item() == pytest.approx(-(advantages[:, None] * mask).sum().item() / tokens.item(), abs=1e-6)
    torch.testing.assert_close(logps.grad, -advantages[:, None] * mask / tokens)
    assert metrics["clip_ratio/region_mean"] == 0.0 and "kl" not in metrics


def test_loss_types_normalise_as_documented() -> None:
    """One sequence of 1 token and one of 3, per-token losses -A = 1 everywhere (A = -1, rho = 1)."""
    logps = torch.zeros(2, 4)
    mask = torch.tensor([[1, 0, 0, 0], [1, 1, 1, 0]])
    advantages = torch.tensor([-1.0, -1.0])
    values = {
        kind: grpo_loss(logps, advantages, mask, loss_type=kind, max_completion_length=8)[0].item()
        for kind in LOSS_TYPES
    }
    assert values == {"grpo": 1.0, "dapo": 1.0, "dr_grpo": pytest.approx(4 / 16)}
    token_level = grpo_loss(logps, torch.tensor([-1.0, 0.0]), mask, loss_type="dapo")[0].item()
    per_sequence = grpo_loss(logps, torch.tensor([-1.0, 0.0]), mask, loss_type="grpo")[0].item()
    assert token_level == pytest.approx(1 / 4) and per_sequence == pytest.approx(1 / 2)
    split = grpo_loss(logps, torch.tensor([-1.0, 0.0]), mask, loss_type="dapo", num_items_in_batch=8)[0]
    assert split.item() == pytest.approx(1 / 8)  # a micro-batch of a generation batch with 8 tokens


def test_kl_penalty_is_k3_and_zero_at_the_reference() -> None:
    logps = torch.log(torch.tensor([[0.5, 0.25]]))
    ref = torch.log(torch.tensor([[0.25, 0.25]]))
    mask = torch.ones(1, 2)
    loss, metrics = grpo_loss(logps, torch.zeros(1), mask, ref_logps=ref, beta=0.1, loss_type="grpo")
    k3 = (0.5 - math.log(0.5) - 1) / 2  # first token ref/p = 1/2, second 1
    assert metrics["kl"] == pytest.approx(k3) and loss.item() == pytest.approx(0.1 * k3)
    same = grpo_loss(logps, torch.zeros(1), mask, ref_logps=logps.clone(), beta=0.1)[1]["kl"]
    assert same == 0.0
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logps, torch.zeros(1), mask, beta=0.1)
