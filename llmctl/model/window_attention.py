"""Sliding-window attention (Mistral, Gemma 3's local layers): a boolean mask for SDPA, or flex attention.

    mask = window_mask(512, queries=T, keys=S, mask=None, device=x.device)   # [T, S], causal and banded
    y = windowed_attention(q, k, v, window=512, scale=None, gqa=True)        # CUDA: no T x T mask

A query at cache column c sees columns c - window + 1 .. c (window keys, itself included), as transformers'
`sliding_window_overlay` (kv_idx > q_idx - window). On CPU, and whenever there is a cache or a mask of its
own (packed documents, batched decoding), the window is a boolean (or -inf) mask given to
`scaled_dot_product_attention`. On CUDA, a causal forward without a cache goes through PyTorch's flex
attention (`torch.nn.attention.flex_attention`, compiled once) with a block mask: blocks wholly outside
the window are skipped, and no T x T mask is built. Flex attention was chosen over `varlen_attn`'s
`window_size` because it exists since torch 2.5 (with torch 2.4 CUDA uses the mask too) and takes the GQA
layout and the scale as they are.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


def window_mask(
    window: int, queries: int, keys: int, mask: torch.Tensor | None, device: torch.device
) -> torch.Tensor:
    """`mask` (None: causal) limited to the last `window` keys of each query, the queries being the last
    `queries` of `keys` cache columns. Columns, not positions: left-padded batched rows shift both alike.
    A boolean mask stays boolean; an additive one (0 / -inf) gets -inf outside the window."""
    k = torch.arange(keys, device=device)
    q = torch.arange(keys - queries, keys, device=device)[:, None]
    band = (k[None, :] <= q) & (k[None, :] > q - window)
    if mask is None:
        return band
    if mask.dtype == torch.bool:
        return mask & band
    return mask.masked_fill(~band, float("-inf"))


@functools.cache
def window_kernel_available() -> bool:
    """Whether this torch has flex attention (used for windowed layers on CUDA)."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    # Uncompiled, flex attention materialises the scores; compiled, it is a fused kernel.
    return torch.compile(flex_attention, dynamic=False)


@functools.lru_cache(maxsize=16)
def _block_mask(window: int, length: int, device: str) -> Any:
    from torch.nn.attention.flex_attention import create_block_mask

    def banded(b: Any, h: Any, q: Any, kv: Any) -> Any:
        return (kv <= q) & (q - kv < window)

    return create_block_mask(banded, None, None, length, length, device=device)


def windowed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    scale: float | None,
    gqa: bool,
    compiled: bool = True,
) -> torch.Tensor:
    """Causal attention within `window` keys for q [B, H, T, D] and k, v [B, KV, T, D], by flex attention
    (`compiled=False`: its eager reference, for tests on CPU); [B, H, T, D]."""
    from torch.nn.attention.flex_attention import flex_attention

    kernel = _compiled_flex() if compiled else flex_attention
    mask = _block_mask(window, q.shape[2], str(q.device))
    return kernel(q, k, v, block_mask=mask, scale=scale, enable_gqa=gqa)
