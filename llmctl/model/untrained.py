"""Embedding rows that were never trained: a chat model whose end-of-turn row is untrained never stops.

    names = untrained_rows(state, cfg, template_token_ids(tokenizer, template, stop_ids))

Qwen2.5 base models ship `<|im_end|>` rows that pretraining never touched; llmctl warns at import and at
the start of SFT so the fine-tune's loss mask (which covers end-of-turn tokens) is known to train them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from llmctl.config import ModelConfig


def template_token_ids(tok: Any, template: str | None, stop_ids: list[int]) -> dict[str, int]:
    """Special tokens the chat template writes, plus the stop ids: the rows a chat model must have trained."""
    out = {tok.id_to_token(i): i for i in stop_ids}
    if template:
        for name, tid in tok.special_ids().items():
            if name in template:
                out[name] = tid
    return out


def untrained_rows(state: dict[str, torch.Tensor], cfg: ModelConfig, tokens: dict[str, int]) -> list[str]:
    """Tokens whose embedding (or untied head) row is (nearly) all zeros, far smaller than a typical row,
    or identical to another special token's: the signature of a row that was initialised and never
    trained (Qwen2.5 base's <|im_end|>)."""
    import torch

    found: list[str] = []
    mats = [state["tok_embeddings.weight"]]
    if not cfg.tied_embeddings and "output.weight" in state:
        mats.append(state["output.weight"])
    ids = {n: i for n, i in tokens.items() if 0 <= i < cfg.vocab_size}
    typical = [float(m.float().norm(dim=1).median()) for m in mats]
    for name, tid in sorted(ids.items(), key=lambda kv: kv[1]):
        for mat, median in zip(mats, typical, strict=True):
            row = mat[tid].float()
            same = [j for j in ids.values() if j != tid and torch.equal(mat[j].float(), row)]
            if float(row.norm()) <= 1e-3 * median or same:
                found.append(name)
                break
    return found


def fill_with_mean(model: torch.nn.Module, ids: list[int]) -> dict[str, float]:
    """Set the embedding rows of `ids` (and the head's, when untied) to the mean of the other rows.

    A zero row gives the token no direction of its own and a near-zero logit, so a fine-tune learns to
    emit it slowly if at all; the mean of the trained rows starts it where an average token sits, and the
    row then trains like any other (nothing here freezes it). Returns the new rows' norms, per matrix.
    """
    import torch

    emb = model.tok_embeddings.weight  # type: ignore[union-attr]
    head = model.output.weight  # type: ignore[union-attr]
    mats = {"tok_embeddings": emb} | ({} if head is emb else {"output": head})
    norms: dict[str, float] = {}
    with torch.no_grad():
        for name, mat in mats.items():
            # Trained rows: not the ones being replaced, and not the (near-)zero padding rows of a vocabulary
            # rounded up past the tokenizer's, which would pull the mean towards zero.
            row_norms = mat.detach().float().norm(dim=1)
            keep = row_norms > 1e-3 * row_norms.median()
            keep[torch.tensor(ids, dtype=torch.long, device=mat.device)] = False
            mean = mat[keep].float().mean(dim=0)
            mat[ids] = mean.to(mat.dtype)
            norms[name] = float(mean.norm())
    return norms
