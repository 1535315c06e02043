"""GRPO advantages and loss: the arithmetic of group-relative policy optimisation, nothing else.

    advantages, stats = group_advantages(rewards, num_generations=8)        # rewards [B], B = prompts * G
    loss, metrics = grpo_loss(logps, advantages, mask, old_logps=old, loss_type="dapo")

Advantages (Shao et al. 2024, DeepSeekMath, sec. 4.1.2): the G completions of one prompt sit next to each
other; A_i = (r_i - mean(r_group)) / (std(r_group) + eps), std with Bessel's correction and eps = 1e-4, as
TRL. `scale_rewards` follows TRL 1.x: "group" divides by the group's std, "batch" by the std of every
reward in the batch (Hu et al. 2025, REINFORCE++), "none" does not divide (Liu et al. 2025, Dr. GRPO).
A group whose rewards are all equal has advantage 0 and teaches nothing: `frac_reward_zero_std` is the
fraction of completions whose std (the group's, or the batch's with "batch") is zero, as TRL logs it, and
`zero_std_groups` counts such groups.

Per token t of completion i, with ratio rho = exp(logp - logp_old) (logp_old = logp detached when the
completions were sampled by the current weights, num_iterations mu = 1, so rho = 1 with gradient A):

    l_it = -min(rho A_i, clip(rho, 1 - epsilon, 1 + epsilon_high) A_i) + beta * KL_it
    KL_it = exp(ref - logp) - (ref - logp) - 1             (Schulman's k3 estimator, >= 0)

epsilon_high > epsilon is DAPO's clip-higher (Yu et al. 2025); epsilon_high defaults to epsilon.
`loss_type` says how the masked l_it become one number:
    grpo:    mean over sequences of (sum_t l_it / n_i), n_i the completion's tokens;
    dapo:    sum_it l_it / N, N the completion tokens of the whole generation batch (`num_items_in_batch`,
             this batch's tokens when not given): token-level, as TRL 1.x, which divides the sum by the
             generation batch's token count whatever micro-batch the loss is computed on;
    dr_grpo: sum_it l_it / (B * max_completion_length) (Liu et al. 2025).
Clip metrics are token means over the mask: `clip_ratio/low_mean` (rho < 1 - epsilon with A < 0),
`clip_ratio/high_mean` (rho > 1 + epsilon_high with A > 0) and `clip_ratio/region_mean` (either); `kl` is
the token mean of KL_it, reported whenever reference log-probs are given.
"""

from __future__ import annotations

import torch

from llmctl.errors import LlmctlError

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")
SCALE_REWARDS = ("group", "batch", "none")
ADVANTAGE_EPS = 1e-4


def group_advantages(
    rewards: torch.Tensor,
    num_generations: int,
    *,
    scale_rewards: str = "group",
    eps: float = ADVANTAGE_EPS,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(advantages [B], stats) from the summed rewards [B] of B = prompts x G completions, grouped in order.

    Stats: `reward` and `reward_std` over the batch, `frac_reward_zero_std`, and `zero_std_groups`."""
    if num_generations < 2:
        raise LlmctlError(
            f"GRPO needs at least 2 completions per prompt, got {num_generations}",
            "the advantage compares completions of the same prompt: use 2 or more (8 is common)",
        )
    if scale_rewards not in SCALE_REWARDS:
        raise ValueError(f"unknown scale_rewards {scale_rewards!r}; one of {SCALE_REWARDS}")
    if rewards.dim() != 1 or rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not make groups of {num_generations}")
    rewards = rewards.float()
    grouped = rewards.view(-1, num_generations)
    group_std = grouped.std(dim=1)
    advantages = rewards - grouped.mean(dim=1).repeat_interleave(num_generations)
    if scale_rewards == "batch":
        std = rewards.std().expand_as(rewards)
    else:  # with "none" the std only says which groups are flat
        std = group_std.repeat_interleave(num_generations)
    if scale_rewards != "none":
        advantages = advantages / (std + eps)
    zero = torch.isclose(std, torch.zeros_like(std))
    stats = {
        "reward": rewards.mean().item(),
        "reward_std": rewards.std().item(),
        "frac_reward_zero_std": zero.float().mean().item(),
        "zero_std_groups": int(torch.isclose(group_std, torch.zeros_like(group_std)).sum().item()),
    }
    return advantages, stats


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """The mean of `values` over the mask's tokens (0 for an empty mask)."""
    return ((values * mask).sum() / mask.sum().clamp(min=1.0)).item()


def _reduce(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None,
    num_items_in_batch: float | None,
) -> torch.Tensor:
    """The masked per-token losses [B, T] made one number the `loss_type` way (module docstring)."""
    masked = per_token * mask
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dapo":
        tokens = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch)
        return masked.sum() / tokens.clamp(min=1.0)
    if loss_type == "dr_grpo":
        if max_completion_length is None:
            raise ValueError("dr_grpo divides by max_completion_length: pass it")
        return masked.sum() / (per_token.size(0) * max_completion_length)
    raise ValueError(f"unknown GRPO loss type {loss_type!r}; one of {LOSS_TYPES}")


def grpo_loss(
    logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    old_logps: torch.Tensor | None = None,
    ref_logps: torch.Tensor | None = None,
    beta: float = 0.0,
    epsilon: float = 0.2,
    epsilon_high: float | None = None,
    loss_type: str = "dapo",
    max_completion_length: int | None = None,
    num_items_in_batch: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """(loss, metrics) of completions' per-token log-probs [B, T] under the policy being trained.

    `mask` [B, T] is 1 on completion tokens; `advantages` [B] from `group_advantages`; `old_logps` the
    log-probs when the completions were sampled (None: `logps` detached, mu = 1); `ref_logps` the
    reference's, needed when beta != 0. Metrics carry TRL's names (module docstring)."""
    high = epsilon if epsilon_high is None else epsilon_high
    mask = mask.to(logps.dtype)
    old = logps.detach() if old_logps is None else old_logps
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    metrics: dict[str, float] = {}
    if beta != 0.0 and ref_logps is None:
        raise ValueError("a KL penalty (beta != 0) needs the reference's log-probs")
    if ref_logps is not None:
        delta = ref_logps - logps
        kl = torch.exp(delta) - delta - 1
        if beta != 0.0:
            per_token = per_token + beta * kl
        metrics["kl"] = _masked_mean(kl.detach(), mask)
    loss = _reduce(per_token, mask, loss_type, max_completion_length, num_items_in_batch)
    with torch.no_grad():
        low_clip = ((ratio < 1 - epsilon) & (adv < 0)).float()
        high_clip = ((ratio > 1 + high) & (adv > 0)).float()
        metrics["clip_ratio/low_mean"] = _masked_mean(low_clip, mask)
        metrics["clip_ratio/high_mean"] = _masked_mean(high_clip, mask)
        metrics["clip_ratio/region_mean"] = _masked_mean(torch.maximum(low_clip, high_clip), mask)
    return loss, metrics
