"""DPO and IPO losses and per-sequence log-probs: the arithmetic of `llmctl dpo`, nothing else.

    logps, counts, logit_sums = sequence_logps(model, batch, autocast, n_sequences)
    losses, chosen_rewards, rejected_rewards = preference_losses(pc, pr, rc, rr, beta=0.1, loss="sigmoid")

Sigmoid (Rafailov et al. 2023, eq. 7): -log sigmoid(beta * ((pc - rc) - (pr - rr))), with label smoothing
e (Mitchell 2023, "conservative DPO"): (1 - e) * that + e * the same for the flipped label.
IPO (Azar et al. 2023, eq. 17): ((pc - rc) / nc - (pr - rr) / nr - 1 / (2 beta))^2, the log-ratios averaged
over each reply's nc / nr trained tokens, as TRL does; rewards stay beta times the summed log-ratios.
When policy = reference the log-ratios are 0: the sigmoid loss is ln 2 and the IPO loss 1 / (4 beta^2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

LOSSES = ("sigmoid", "ipo")


def preference_losses(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    *,
    beta: float,
    loss: str = "sigmoid",
    label_smoothing: float = 0.0,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards), each [pairs]; rewards are detached.
    IPO needs each reply's trained token count (chosen_tokens, rejected_tokens)."""
    chosen_ratio = policy_chosen - ref_chosen
    rejected_ratio = policy_rejected - ref_rejected
    margin = chosen_ratio - rejected_ratio
    if loss == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * margin) - label_smoothing * F.logsigmoid(
            -beta * margin
        )
    elif loss == "ipo":
        assert chosen_tokens is not None and rejected_tokens is not None, "IPO averages over reply tokens"
        averaged = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
        losses = (averaged - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {loss!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def sequence_logps(
    model: torch.nn.Module,
    batch: Any,
    autocast: Callable[[], Any],
    n_sequences: int,
    with_logits: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(summed log-probs [n], trained tokens [n], logit sums [4]) of the batch's sequences.

    `batch.seq_index` [B, T] names the sequence of each trained target (-1 elsewhere); sequences are
    2k (chosen) and 2k+1 (rejected). Logit sums are (chosen sum, chosen count, rejected sum, rejected
    count) over every vocabulary entry at trained positions: TRL's `logits/chosen` is sum / count.
    """
    with autocast():
        logits = model(batch.inputs, batch.doc_ids, batch.position_ids)
    logits = logits.float()
    token_logp = -F.cross_entropy(
        logits.flatten(0, 1), batch.targets.flatten(), ignore_index=-100, reduction="none"
    )
    index = batch.seq_index.flatten()
    trained = index >= 0
    sums = torch.zeros(n_sequences, dtype=torch.float32, device=logits.device)
    sums = sums.index_add(0, index[trained], token_logp[trained])
    counts = torch.bincount(index[trained], minlength=n_sequences).to(torch.float32)
    logit_sums = torch.zeros(4, dtype=torch.float64, device=logits.device)
    if with_logits:
        with torch.no_grad():
            per_position = logits.flatten(0, 1)[trained].sum(-1).double()
            chosen = index[trained] % 2 == 0
            vocab = logits.shape[-1]
            logit_sums = torch.stack(
                [
                    per_position[chosen].sum(),
                    chosen.sum().double() * vocab,
                    per_position[~chosen].sum(),
                    (~chosen).sum().double() * vocab,
                ]
            )
    return sums, counts, logit_sums


def falling_chosen(history: list[tuple[float, float]], windows: int = 3) -> bool:
    """True when the last `windows` steps of (logps/chosen, rewards/margins) window means show the chosen
    log-probs falling every time while the margin grew: DPO lowering both replies, the rejected faster."""
    if len(history) < windows + 1:
        return False
    recent = history[-(windows + 1) :]
    return all(b[0] < a[0] and b[1] > a[1] for a, b in zip(recent, recent[1:], strict=False))
