"""The Llama-style decoder every llmctl run trains: RMSNorm, RoPE, grouped-query attention, SwiGLU.

    from llmctl.config import model_from_preset
    model = Transformer(model_from_preset("tiny"))
    logits = model(tokens)                      # [B, T, V], float32

Module and parameter names are fixed: the Hugging Face export (llmctl/export/hf.py) maps them.
RoPE follows the Meta checkpoint convention, rotating the pairs (2i, 2i+1) of each head.
Attention goes through `scaled_dot_product_attention`, so CUDA runs use FlashAttention kernels.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmctl.config import ModelConfig
from llmctl.model.window_attention import window_kernel_available, window_mask, windowed_attention


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019), computed in float32 for stability under bf16."""

    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.eps = eps
        # Gemma's form scales by (1 + weight), its weights starting at zero; the stored weight is the same
        # number as in the Hugging Face checkpoint, so import and export copy it unchanged.
        self.unit_offset = unit_offset
        self.weight = nn.Parameter(torch.zeros(dim) if unit_offset else torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm runs one fused kernel forward and backward (x * rsqrt(mean(x^2) + eps) * weight);
        # on fp32 it equals the three-op form bit for bit, at about half the time on CPU.
        weight = self.weight.float() + 1.0 if self.unit_offset else self.weight.float()
        return F.rms_norm(x.float(), (x.shape[-1],), weight, self.eps).type_as(x)


class ScaledEmbedding(nn.Embedding):
    """Token embedding times sqrt(dim), the factor rounded to the weights' dtype first as Gemma does (in
    bf16, sqrt(1152) = 33.94 becomes 34.0). A module of its own, so every caller of `tok_embeddings` (the
    batched decoder included) gets the scaled rows."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = super().forward(tokens)
        return h * torch.tensor(self.embedding_dim**0.5, dtype=h.dtype, device=h.device)


def llama3_frequencies(freqs: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Llama 3.1's RoPE scaling: frequencies whose wavelength exceeds the original context / low_freq_factor
    are divided by rope_factor, those below original / high_freq_factor are kept, and the band between
    is interpolated smoothly (Meta's llama-models `apply_scaling`)."""
    original = cfg.rope_original_max_seq_len
    wavelen = 2 * math.pi / freqs
    smooth = (original / wavelen - cfg.rope_low_freq_factor) / (
        cfg.rope_high_freq_factor - cfg.rope_low_freq_factor
    )
    mixed = (1 - smooth) * freqs / cfg.rope_factor + smooth * freqs
    scaled = torch.where(wavelen > original / cfg.rope_low_freq_factor, freqs / cfg.rope_factor, mixed)
    return torch.where(wavelen < original / cfg.rope_high_freq_factor, freqs, scaled)


def rope_tables(
    head_dim: int, max_seq_len: int, theta: float, cfg: ModelConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotation angles, [max_seq_len, head_dim / 2], float32 (cfg: its rope_scaling).

    With cfg.rope_local_theta, [max_seq_len, head_dim]: the global layers' half then the windowed layers'
    (unscaled, base rope_local_theta); each attention takes its half (Attention.rope_part). One table keeps
    every caller that indexes `rope_cos` by position, the batched decoder included, unchanged."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    gain = 1.0
    if cfg is not None and cfg.rope_scaling == "llama3":
        freqs = llama3_frequencies(freqs, cfg)
    elif cfg is not None and cfg.rope_scaling == "linear":
        freqs = freqs / cfg.rope_factor
    elif cfg is not None and cfg.rope_scaling == "yarn":
        freqs, gain = yarn_frequencies(theta, head_dim, cfg)
    angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freqs)
    cos, sin = angles.cos() * gain, angles.sin() * gain
    if cfg is not None and cfg.rope_local_theta is not None:
        local = 1.0 / (cfg.rope_local_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), local)
        cos, sin = torch.cat((cos, angles.cos()), dim=-1), torch.cat((sin, angles.sin()), dim=-1)
    return cos, sin


def yarn_frequencies(theta: float, head_dim: int, cfg: ModelConfig) -> tuple[torch.Tensor, float]:
    """YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension"): frequencies that turn more than
    beta_fast times over the original context are kept, those under beta_slow are divided by rope_factor,
    a linear ramp over the (floored, ceiled) pair indices between; and the factor on cos and sin (mscale,
    0.1 ln(factor) + 1 unless rope_attention_factor is given)."""

    def pair(rotations: float) -> float:
        # The pair index whose wavelength fits `rotations` times into the original context.
        return (
            head_dim
            * math.log(cfg.rope_original_max_seq_len / (rotations * 2 * math.pi))
            / (2 * math.log(theta))
        )

    low = max(math.floor(pair(cfg.rope_beta_fast)), 0)
    high = min(math.ceil(pair(cfg.rope_beta_slow)), head_dim - 1)
    high = high + 0.001 if low == high else high
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    base = theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    freqs = (1.0 / (cfg.rope_factor * base)) * ramp + (1.0 / base) * (1 - ramp)
    gain = cfg.rope_attention_factor
    if gain is None:
        gain = 0.1 * math.log(cfg.rope_factor) + 1.0 if cfg.rope_factor > 1 else 1.0
    return freqs, float(gain)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate each pair (2i, 2i+1) of x [B, T, H, D] by the angles in cos/sin [B or 1, T, 1, D/2]
    (or by `cos` alone when it already holds the complex rotation cos + i sin and sin is None).

    The pair is read as one complex number and multiplied by cos + i sin (Meta's reference form):
    one kernel each way instead of strided halves, four products and a stack, with the same values."""
    h = x.float()
    if h.storage_offset() % 2 or any(st % 2 for st in h.stride()[:-1]) or h.stride(-1) != 1:
        h = h.contiguous()  # view_as_complex needs (real, imag) pairs at even offsets
    pairs = torch.view_as_complex(h.unflatten(-1, (-1, 2)))
    rotation = cos if sin is None else torch.complex(cos, sin)
    return torch.view_as_real(pairs * rotation).flatten(-2).type_as(x)


def fused(owner: nn.Module, name: str, parts: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """torch.cat(parts): built on every call while training, built once per weight version inside
    `fused_weights_for_inference`.

    Training concatenates on each forward so autograd sees the separate parameters (checkpoints keep
    them). Decoding would pay that copy for every token (69% of batch-1 decode time on CPU), so inside the
    scope, with autograd off, the result is kept and reused until a part's storage or in-place version
    changes. Optimizers that bypass the version counter (fused AdamW, `.data` writes) cannot update weights
    inside a generation call, and the scope ends with it, so a stale copy never outlives one call.
    """
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        return torch.cat(parts)
    store = owner.__dict__.get("_fused_cache")
    if store is None:
        return torch.cat(parts)
    key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in parts)
    hit = store.get(name)
    if hit is None or hit[0] != key:
        hit = store[name] = (key, torch.cat(parts))
    return hit[1]


def lora_add(linear: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """y plus `linear`'s low-rank adapter term on x when it has one (llmctl/model/lora.py)."""
    delta = getattr(linear, "delta", None)
    return y if delta is None else y + delta(x)


def _is_sharded(model: nn.Module) -> bool:
    # FSDP2 rewrites parameters in place (all-gather into reused buffers) without version bumps: no cache.
    return any(
        type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor" for p in model.parameters()
    )


@contextlib.contextmanager
def fused_weights_for_inference(model: nn.Module) -> Iterator[None]:
    """Within the block, no-grad forwards of `model` reuse their fused q|k|v and w1|w3 weights (see
    `fused`); they are freed on exit, so training memory and checkpoints are unchanged."""
    owners = (
        [] if _is_sharded(model) else [m for m in model.modules() if isinstance(m, (Attention, FeedForward))]
    )
    for m in owners:
        m.__dict__["_fused_cache"] = {}
    try:
        yield
    finally:
        for m in owners:
            m.__dict__.pop("_fused_cache", None)


@dataclass
class KVCache:
    """Keys and values of every layer for incremental decoding: [B, kv_heads, capacity, head_dim] each."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0
    """Positions filled so far."""

    @property
    def capacity(self) -> int:
        """Longest sequence the cache holds."""
        return self.keys[0].shape[2]


class Attention(nn.Module):
    """Causal grouped-query self-attention with rotary position embeddings."""

    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.kv_heads, cfg.head_size
        self.scale = None if cfg.attn_scalar is None else cfg.attn_scalar**-0.5
        self.window = cfg.sliding_window if cfg.is_windowed(layer) else None
        # Which half of a two-part RoPE table (rope_tables with rope_local_theta) this layer rotates by.
        self.rope_part = None if cfg.rope_local_theta is None else int(self.window is not None)
        self.wq = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_size, bias=cfg.qkv_bias)
        self.wk = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_size, bias=cfg.qkv_bias)
        self.wv = nn.Linear(cfg.dim, cfg.kv_heads * cfg.head_size, bias=cfg.qkv_bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_size, cfg.dim, bias=False)
        # QK-norm (Qwen3: per head; OLMo 2: over the whole projection). Absent unless asked for, so the
        # default forward has no extra op.
        self.qk_norm = cfg.qk_norm
        if cfg.qk_norm != "none":
            head = cfg.qk_norm == "head"
            q_width = cfg.head_size if head else cfg.n_heads * cfg.head_size
            k_width = cfg.head_size if head else cfg.kv_heads * cfg.head_size
            self.q_norm = RMSNorm(q_width, cfg.norm_eps, cfg.norm_unit_offset)
            self.k_norm = RMSNorm(k_width, cfg.norm_eps, cfg.norm_unit_offset)
        self.adapted = False  # set by llmctl/model/lora.py when a projection has a LoRA adapter
        self.quantized = False  # set by llmctl/model/quant.py when the projections are 4-bit (QLoRA)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor | None,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        # One matmul for q, k and v (their weights side by side): fewer, larger GEMMs, and backward sums
        # one input gradient instead of three. The parameters stay wq, wk, wv.
        if self.quantized:
            # Each 4-bit projection dequantizes inside its own matmul and keeps only its 4-bit weight for
            # backward; a fused q|k|v weight would hold a dequantized copy of all three.
            q, k, v = self.wq(x), self.wk(x), self.wv(x)
        else:
            weight = fused(self, "weight", (self.wq.weight, self.wk.weight, self.wv.weight))
            bias = (
                None
                if self.wq.bias is None
                else fused(self, "bias", (self.wq.bias, self.wk.bias, self.wv.bias))
            )
            qw, kvw = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
            q, k, v = F.linear(x, weight, bias).split((qw, kvw, kvw), dim=-1)
            if self.adapted:
                q, k, v = lora_add(self.wq, x, q), lora_add(self.wk, x, k), lora_add(self.wv, x, v)
        if self.qk_norm == "proj":
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.view(B, T, self.n_heads, self.head_dim), k.view(B, T, self.n_kv_heads, self.head_dim)
        if self.qk_norm == "head":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope_part is not None:
            half = cos.shape[-1] // 2
            cos = cos[..., half:] if self.rope_part else cos[..., :half]
            sin = None if sin is None else (sin[..., half:] if self.rope_part else sin[..., :half])
        q = apply_rope(q, cos, sin).transpose(1, 2)
        k = apply_rope(k, cos, sin).transpose(1, 2)
        # A copy keeps only v's columns alive for backward, not the whole q|k|v output.
        v = v.contiguous().view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        causal = mask is None
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]
            v = cache.values[layer][:, :, : start + T]
            # A single new token may attend to every cached one; a prefill after position 0 needs the mask.
            causal = mask is None and start == 0
        gqa = self.n_kv_heads != self.n_heads
        if self.window is not None and self.window < k.shape[2]:
            if causal and cache is None and q.is_cuda and window_kernel_available():
                y = windowed_attention(q, k, v, self.window, self.scale, gqa)
                return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
            mask, causal = window_mask(self.window, T, k.shape[2], mask, x.device), False
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=gqa, scale=self.scale
        )
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """SwiGLU MLP (Shazeer 2020): w2(silu(w1 x) * w3 x); GeGLU with activation gelu_tanh (Gemma)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gelu = cfg.activation == "gelu_tanh"
        self.w1 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.hidden_dim, bias=False)
        self.w2 = nn.Linear(cfg.hidden_dim, cfg.dim, bias=False)
        self.adapted = False  # set by llmctl/model/lora.py when a projection has a LoRA adapter
        self.quantized = False  # set by llmctl/model/quant.py when the projections are 4-bit (QLoRA)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantized:  # one 4-bit matmul per projection, as in Attention
            return self.w2(F.silu(self.w1(x)) * self.w3(x))
        # w1 and w3 as one matmul, as in Attention: same values, one larger GEMM.
        gate, up = F.linear(x, fused(self, "weight", (self.w1.weight, self.w3.weight))).chunk(2, dim=-1)
        if self.adapted:
            gate, up = lora_add(self.w1, x, gate), lora_add(self.w3, x, up)
        act = F.gelu(gate, approximate="tanh") if self.gelu else F.silu(gate)
        return self.w2(act * up)


class Block(nn.Module):
    """Pre-norm Transformer block: x + attention(norm(x)), then + feed_forward(norm(x)); with
    norm_placement `post` (OLMo 2), x + norm(attention(x)), then + norm(feed_forward(x)); with `sandwich`
    (Gemma 3), x + norm2(attention(norm1(x))), then + norm4(feed_forward(norm3(x)))."""

    def __init__(self, cfg: ModelConfig, layer: int = 0) -> None:
        super().__init__()
        self.post_norm = cfg.norm_placement == "post"
        self.sandwich = cfg.norm_placement == "sandwich"
        self.attention_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)
        self.attention = Attention(cfg, layer)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)
        self.feed_forward = FeedForward(cfg)
        if self.sandwich:
            self.attention_post_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)
            self.ffn_post_norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor | None,
        mask: torch.Tensor | None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        if self.post_norm:
            x = x + self.attention_norm(self.attention(x, cos, sin, mask, cache, layer))
            return x + self.ffn_norm(self.feed_forward(x))
        if self.sandwich:
            h = self.attention(self.attention_norm(x), cos, sin, mask, cache, layer)
            x = x + self.attention_post_norm(h)
            return x + self.ffn_post_norm(self.feed_forward(self.ffn_norm(x)))
        x = x + self.attention(self.attention_norm(x), cos, sin, mask, cache, layer)
        return x + self.feed_forward(self.ffn_norm(x))


class Transformer(nn.Module):
    """The decoder: tok_embeddings -> layers -> norm -> output."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_embeddings = (ScaledEmbedding if cfg.scale_embeddings else nn.Embedding)(
            cfg.vocab_size, cfg.dim
        )
        self.layers = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_unit_offset)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tied_embeddings:
            self.output.weight = self.tok_embeddings.weight
        cos, sin = rope_tables(cfg.head_size, cfg.max_seq_len, cfg.rope_theta, cfg)
        # Not persistent: recomputed from the config, so checkpoints hold only learned weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.activation_checkpointing = False
        self.init_weights()

    def init_weights(self) -> None:
        """N(0, 0.02) everywhere, and 0.02 / sqrt(2 * n_layers) on the projections that write into the
        residual stream (wo, w2), so its variance does not grow with depth (GPT-2, Radford et al. 2019)."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, residual_std if name.endswith(("wo", "w2")) else std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, RMSNorm):
                (nn.init.zeros_ if module.unit_offset else nn.init.ones_)(module.weight)
        with torch.no_grad():
            cos, sin = rope_tables(self.cfg.head_size, self.cfg.max_seq_len, self.cfg.rope_theta, self.cfg)
            if self.rope_cos.device.type != "meta":
                self.rope_cos.copy_(cos)
                self.rope_sin.copy_(sin)

    def _rope(
        self, T: int, start: int, position_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if position_ids is not None:
            return self.rope_cos[position_ids].unsqueeze(2), self.rope_sin[position_ids].unsqueeze(2)
        return self.rope_cos[start : start + T].view(1, T, 1, -1), self.rope_sin[start : start + T].view(
            1, T, 1, -1
        )

    def forward(
        self,
        tokens: torch.Tensor,
        doc_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: KVCache | None = None,
        last_only: bool = False,
    ) -> torch.Tensor:
        """Logits [B, T, V] in float32 ([B, 1, V] with last_only).

        doc_ids [B, T] (packed SFT) restricts attention to equal ids, causally; position_ids [B, T]
        then restart RoPE per document. With a cache, tokens continue the cached positions.
        """
        B, T = tokens.shape
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.cfg.max_seq_len}")
        cos, sin = self._rope(T, start, position_ids)
        # The complex rotation, made once per forward: every layer's RoPE multiplies by it, and backward
        # keeps this one tensor instead of a copy per call.
        cos, sin = torch.complex(cos, sin), None
        mask = None
        if doc_ids is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=tokens.device).tril()
            mask = (doc_ids[:, :, None] == doc_ids[:, None, :]) & causal
            mask = mask.unsqueeze(1)
        elif cache is not None and start > 0 and T > 1:
            keys = torch.arange(start + T, device=tokens.device)
            mask = keys[None, :] <= (start + torch.arange(T, device=tokens.device))[:, None]
        h = self.tok_embeddings(tokens)
        for i, layer in enumerate(self.layers):
            if self.activation_checkpointing and self.training and cache is None:
                h = torch.utils.checkpoint.checkpoint(layer, h, cos, sin, mask, use_reentrant=False)
            else:
                h = layer(h, cos, sin, mask, cache, i)
        if cache is not None:
            cache.length = start + T
        h = self.norm(h)
        if last_only:
            h = h[:, -1:]
        return self.output(h).float()

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty KV cache for `batch` sequences of up to `capacity` positions, on the model's device."""
        capacity = min(capacity, self.cfg.max_seq_len)
        weight = self.tok_embeddings.weight  # never 4-bit (QLoRA): the model's own dtype
        shape = (batch, self.cfg.kv_heads, capacity, self.cfg.head_size)
        keys = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        values = [torch.zeros(shape, dtype=weight.dtype, device=weight.device) for _ in self.layers]
        return KVCache(keys, values)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameters, counting a tied embedding once; non_embedding leaves out the token embedding."""
        total = sum(p.numel() for p in self.parameters())
        if non_embedding:
            total -= self.tok_embeddings.weight.numel()
        return total


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in a Transformer's state dict for `cfg`, without building it (a config
    is checked against a weights file's header this way before anything is allocated)."""
    assert cfg.vocab_size is not None
    dim, hidden = cfg.dim, cfg.hidden_dim
    q, kv = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings.weight": (cfg.vocab_size, dim)}
    for i in range(cfg.n_layers):
        layer = {
            "attention_norm.weight": (dim,),
            "attention.wq.weight": (q, dim),
            "attention.wk.weight": (kv, dim),
            "attention.wv.weight": (kv, dim),
            "attention.wo.weight": (dim, q),
            "ffn_norm.weight": (dim,),
            "feed_forward.w1.weight": (hidden, dim),
            "feed_forward.w3.weight": (hidden, dim),
            "feed_forward.w2.weight": (dim, hidden),
        }
        if cfg.qkv_bias:
            layer.update({"attention.wq.bias": (q,), "attention.wk.bias": (kv,), "attention.wv.bias": (kv,)})
        if cfg.qk_norm != "none":
            head = cfg.qk_norm == "head"
            layer["attention.q_norm.weight"] = (cfg.head_size,) if head else (q,)
            layer["attention.k_norm.weight"] = (cfg.head_size,) if head else (kv,)
        if cfg.norm_placement == "sandwich":
            layer["attention_post_norm.weight"] = layer["ffn_post_norm.weight"] = (dim,)
        shapes.update({f"layers.{i}.{name}": shape for name, shape in layer.items()})
    shapes["norm.weight"] = (dim,)
    shapes["output.weight"] = (cfg.vocab_size, dim)
    return shapes
