"""The decoder's forward for generation, written as plain tensor operations over weights gathered once.

    plan = DecodePlan.build(model)          # None when the model uses something this path does not know
    logits = plan.forward(tokens, rotation, mask, cache)          # [B, V] float32, last position

Why: a decode step is one token per row, so on CPU the cost of calling ~20 modules per layer (hooks,
attribute look-ups, the fused-weight cache check, LoRA and QK-norm branches) is a sizeable share of the
step at batch 1 and still several percent at batch 16. The plan holds each layer's fused q|k|v and
w1|w3 weights, concatenated once for the call, and runs the operations of `model/llama.py` in the same
order, with two differences of form: RoPE rotates q and k in one call, as one tensor of heads, and on
CPU the projections multiply by a contiguous W^T (the same values; at one row the kernel may round
differently, so tests compare tokens allowing a logit near-tie).

A LoRA model's adapters are merged into the plan's weights (W + (alpha / r) B A, made once per call;
inside `adapters_disabled`, the base weights), which also saves the adapters' two extra products per
projection and token. Only the architecture the plan was written for takes this path: pre-norm blocks
without QK-norm, every other ModelConfig option at its default, modules of exactly the model's classes,
no hooks and no sharded (FSDP, DTensor) weights. Anything else (a field added later for another
architecture included) is decoded by the model's own modules, so a new option is never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmctl.config import ModelConfig
from llmctl.model.llama import Attention, Block, FeedForward, KVCache, RMSNorm, Transformer, apply_rope
from llmctl.model.lora import LoRALinear

# ModelConfig fields whose every value this path handles: sizes, RoPE (the model's own tables), biases,
# tied embeddings. qk_norm and norm_placement are handled when "none" and "pre"; any other field must
# hold its default value.
_HANDLED = {
    "preset",
    "vocab_size",
    "dim",
    "n_layers",
    "n_heads",
    "n_kv_heads",
    "ffn_dim",
    "multiple_of",
    "ffn_dim_multiplier",
    "tied_embeddings",
    "qkv_bias",
    "max_seq_len",
    "rope_theta",
    "norm_eps",
    "rope_scaling",
    "rope_factor",
    "rope_low_freq_factor",
    "rope_high_freq_factor",
    "rope_original_max_seq_len",
    "head_dim",
}


def _plain_config(cfg: ModelConfig) -> bool:
    if cfg.qk_norm != "none" or cfg.norm_placement != "pre":
        return False
    for f in dataclasses.fields(cfg):
        if f.name in _HANDLED or f.name in ("qk_norm", "norm_placement"):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        if getattr(cfg, f.name) != default:
            return False
    return True


def _plain_modules(model: Transformer) -> bool:
    """Exactly the module classes this path mirrors (LoRA adapters included), no 4-bit weight, no hook, no
    sharded weight."""
    if type(model) is not Transformer or type(model.norm) is not RMSNorm:
        return False
    for layer in model.layers:
        if type(layer) is not Block or type(layer.attention) is not Attention:
            return False
        if type(layer.feed_forward) is not FeedForward:
            return False
        if type(layer.attention_norm) is not RMSNorm or type(layer.ffn_norm) is not RMSNorm:
            return False
        if layer.attention.quantized or layer.feed_forward.quantized:  # QLoRA's 4-bit weights
            return False
        projections = [getattr(layer.attention, n) for n in ("wq", "wk", "wv", "wo")]
        projections += [getattr(layer.feed_forward, n) for n in ("w1", "w2", "w3")]
        if any(type(p) not in (nn.Linear, LoRALinear) for p in projections):
            return False
    for m in model.modules():
        # Hooks (FSDP's all-gathers, a user's probes) live in the module calls the plan skips.
        if m._forward_hooks or m._forward_pre_hooks:
            return False
    # Sharded parameters (DTensor) are gathered by module hooks, never by a plain operation.
    return not any(
        type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor" for p in model.parameters()
    )


@dataclass
class _Layer:
    attn_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor | None
    wo: torch.Tensor
    ffn_norm: torch.Tensor
    w13: torch.Tensor
    w2: torch.Tensor


def _project(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, transposed: bool
) -> torch.Tensor:
    """x W^T + b, from W [out, in] (F.linear) or from a contiguous copy of W^T [in, out]."""
    if not transposed:
        return F.linear(x, weight, bias)
    y = torch.matmul(x, weight)
    return y if bias is None else y + bias


def _weight(linear: nn.Module) -> torch.Tensor:
    """A projection's weight, with its LoRA adapter merged in while the adapters are on:
    W + (alpha / r) B A, computed in float32 (generation runs in eval mode, where the adapter's dropout
    is the identity, so the merged product gives the same outputs up to rounding)."""
    weight = linear.weight
    if isinstance(linear, LoRALinear) and linear.enabled:
        delta = linear.lora_b.float() @ linear.lora_a.float()
        return (weight.float() + linear.scale * delta).to(weight.dtype)
    return weight


def _rms(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # As RMSNorm.forward: in float32, back to the input's dtype.
    return F.rms_norm(x.float(), (x.shape[-1],), weight.float(), eps).type_as(x)


@dataclass
class DecodePlan:
    """A model's weights laid out for generation; valid while the weights do not change (one call)."""

    model: Transformer
    layers: list[_Layer]
    heads: int
    kv_heads: int
    head_dim: int
    eps: float

    transposed: bool
    output: torch.Tensor

    @staticmethod
    def build(model: Transformer) -> DecodePlan | None:
        """The plan, or None when the model needs its own modules (see the module docstring)."""
        if not _plain_config(model.cfg) or not _plain_modules(model):
            return None
        # On CPU a [rows, in] x [in, out] product with a contiguous right side runs about twice as fast
        # at decode's few rows as F.linear's x W^T (measured on this project's 2-core CI machine, fp32):
        # the plan keeps W^T copies there, for the call. GPUs' GEMMs take either layout at one speed.
        transposed = model.output.weight.device.type == "cpu"

        def lay(w: torch.Tensor) -> torch.Tensor:
            return w.t().contiguous() if transposed else w

        layers = []
        for block in model.layers:
            a, f = block.attention, block.feed_forward
            layers.append(
                _Layer(
                    block.attention_norm.weight,
                    lay(torch.cat((_weight(a.wq), _weight(a.wk), _weight(a.wv)))),
                    None if a.wq.bias is None else torch.cat((a.wq.bias, a.wk.bias, a.wv.bias)),
                    lay(_weight(a.wo)),
                    block.ffn_norm.weight,
                    lay(torch.cat((_weight(f.w1), _weight(f.w3)))),
                    lay(_weight(f.w2)),
                )
            )
        cfg = model.cfg
        return DecodePlan(
            model,
            layers,
            cfg.n_heads,
            cfg.kv_heads,
            cfg.head_size,
            cfg.norm_eps,
            transposed,
            lay(model.output.weight),
        )

    def forward(
        self, tokens: torch.Tensor, rotation: torch.Tensor, mask: torch.Tensor | None, cache: KVCache
    ) -> torch.Tensor:
        """Last-position logits [B, V] (float32) of tokens [B, T] continuing the cache; rotation is the
        complex RoPE rotation [B, T, 1, head_dim / 2], mask additive [B, 1, T, keys] or None (causal)."""
        B, T = tokens.shape
        H, KV, D = self.heads, self.kv_heads, self.head_dim
        start = cache.length
        causal = mask is None and start == 0
        gqa, tr = KV != H, self.transposed
        h = F.embedding(tokens, self.model.tok_embeddings.weight)
        for i, p in enumerate(self.layers):
            qkv = _project(_rms(h, p.attn_norm, self.eps), p.qkv, p.qkv_bias, tr)
            qk = apply_rope(qkv[..., : (H + KV) * D].unflatten(-1, (H + KV, D)), rotation)
            q, k = qk[:, :, :H].transpose(1, 2), qk[:, :, H:].transpose(1, 2)
            v = qkv[..., (H + KV) * D :].unflatten(-1, (KV, D)).transpose(1, 2)
            keys, values = cache.keys[i], cache.values[i]
            keys[:, :, start : start + T] = k
            values[:, :, start : start + T] = v
            y = F.scaled_dot_product_attention(
                q,
                keys[:, :, : start + T],
                values[:, :, : start + T],
                attn_mask=mask,
                is_causal=causal,
                enable_gqa=gqa,
            )
            h = h + _project(y.transpose(1, 2).reshape(B, T, H * D), p.wo, None, tr)
            gate, up = _project(_rms(h, p.ffn_norm, self.eps), p.w13, None, tr).chunk(2, dim=-1)
            h = h + _project(F.silu(gate) * up, p.w2, None, tr)
        cache.length += T
        last = _rms(h[:, -1:], self.model.norm.weight, self.eps)
        return _project(last, self.output, None, tr).float()[:, -1]
