"""The optimizer of a run: AdamW, or Muon for hidden matrices with AdamW for the rest.

    optimizer = build_optimizer(model, cfg.optim, device)
    reporter.log(describe_optimizer(optimizer))
    set_lr(optimizer, schedule(step))        # AdamW's rate; Muon groups follow in proportion

Decoupled weight decay (Loshchilov & Hutter 2019) shrinks weights toward zero; applied to norms' gains
or biases it only fights their scale, so those go in a group without decay, as in GPT-2 and Llama.

Muon (Jordan et al. 2024) orthogonalizes the momentum of each 2-D weight with a Newton-Schulz iteration;
it is meant for the hidden matrices only. The token embedding is a lookup table and the output head maps
to a vocabulary, so both stay with AdamW, as do the 1-D norm gains and biases (Muon's own guidance).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from llmctl.config import OptimConfig
from llmctl.errors import LlmctlError

# Parameter names (Transformer's fixed names) that are 2-D but not hidden matrices.
ADAMW_ONLY_MATRICES = ("tok_embeddings.weight", "output.weight")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: matrices (embeddings, projections, head) with decay; vectors (norms, biases) without."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def muon_split(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(hidden 2-D matrices for Muon, everything else for AdamW), as (name, parameter) pairs.

    A tied head shares the embedding's tensor; named_parameters lists it once, under the embedding."""
    muon, adamw = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (muon if p.dim() == 2 and name not in ADAMW_ONLY_MATRICES else adamw).append((name, p))
    return muon, adamw


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer object over two: torch.optim.Muon for hidden matrices, AdamW for the rest.

    Both share this object's `state` and hold its `param_groups` (Muon's first), so `state_dict`,
    `load_state_dict`, `zero_grad`, gradient scalers and torch.distributed.checkpoint see one ordinary
    optimizer, and a checkpoint restores both halves exactly. A LoRA run's trainable tensors are all
    adapter matrices, so its AdamW half is None."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer | None) -> None:
        self.muon, self.adamw = muon, adamw
        self._n_muon_groups = len(muon.param_groups)
        super().__init__([*muon.param_groups, *(adamw.param_groups if adamw else [])], {})
        self._link()

    def _link(self) -> None:
        # The children read and write through the same group dicts and the same state mapping.
        self.muon.param_groups = self.param_groups[: self._n_muon_groups]
        self.muon.state = self.state
        if self.adamw is not None:
            self.adamw.param_groups = self.param_groups[self._n_muon_groups :]
            self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One step of each: Muon on the hidden matrices, AdamW on the rest."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        if self.adamw is not None:
            self.adamw.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as one optimizer, then point both halves at the loaded groups and state."""
        super().load_state_dict(state_dict)
        self._link()


def _require_muon() -> type:
    muon = getattr(torch.optim, "Muon", None)
    if muon is None:
        raise LlmctlError(
            f"optim.name=muon needs torch.optim.Muon, which torch {torch.__version__} does not have",
            "install torch >= 2.9 (pip install -U torch), or use --optim.name=adamw",
        )
    return muon


def _adamw(groups: list[dict], optim: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    # The fused kernel does one pass over all parameters on CUDA and CPU; on CPU it also runs several
    # times faster than the multi-tensor path for small models.
    return torch.optim.AdamW(
        groups,
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        eps=optim.eps,
        foreach=None if optim.fused else True,
        fused=optim.fused and device.type in ("cuda", "cpu"),
    )


def build_optimizer(model: nn.Module, optim: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    """AdamW over param_groups, or (optim.name=muon) MuonWithAdamW.

    Muon's groups carry `lr_ratio` = muon_lr / lr, so the one schedule drives both (see set_lr). Their
    weight decay is scaled by lr / muon_lr, so each step shrinks a hidden matrix by the same factor
    (lr x weight_decay) as AdamW would."""
    if optim.name != "muon":
        return _adamw(param_groups(model, optim.weight_decay), optim, device)
    muon_cls = _require_muon()
    hidden, rest = muon_split(model)
    if not hidden:
        raise LlmctlError(
            "optim.name=muon found no hidden 2-D matrices to optimize", "use --optim.name=adamw"
        )
    ratio = optim.muon_lr / optim.lr
    muon = muon_cls(
        [{"params": [p for _, p in hidden], "lr_ratio": ratio}],
        lr=optim.muon_lr,
        momentum=optim.muon_momentum,
        weight_decay=optim.weight_decay / ratio,
    )
    decay = [p for n, p in rest if p.dim() >= 2]
    no_decay = [p for n, p in rest if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    # LoRA trains 2-D adapter matrices only (lora_a r x in, lora_b out x r): all of them go to Muon.
    return MuonWithAdamW(muon, _adamw(groups, optim, device) if groups else None)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> str:
    """One line naming which optimizer updates how many tensors and parameters."""
    if isinstance(optimizer, MuonWithAdamW):
        m = [p for g in optimizer.muon.param_groups for p in g["params"]]
        lr = optimizer.muon.param_groups[0]["lr"]
        if optimizer.adamw is None:
            return (
                f"optimizer: Muon on {len(m)} adapter matrices ({sum(p.numel() for p in m):,} parameters, "
                f"lr {lr:.3g}); nothing else trains"
            )
        a = [p for g in optimizer.adamw.param_groups for p in g["params"]]
        return (
            f"optimizer: Muon on {len(m)} hidden matrices ({sum(p.numel() for p in m):,} parameters, "
            f"lr {lr:.3g}), AdamW on {len(a)} other tensors ({sum(p.numel() for p in a):,} parameters: "
            "embeddings, head, norms, biases)"
        )
    params = [p for g in optimizer.param_groups for p in g["params"]]
    return f"optimizer: AdamW on {len(params)} tensors ({sum(p.numel() for p in params):,} parameters)"


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate: `lr` (AdamW's rate) times the group's lr_ratio (Muon's groups)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_ratio", 1.0)
