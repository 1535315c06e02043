"""Parameter counts and FLOPs per token of the Llama-style decoder, as pure functions of its ModelConfig.

    counts = param_counts(model_from_preset("124m"))          # counts.total == model.num_params()
    fl = flops_per_token(model_from_preset("124m"), 1024)
    fl.train_palm    # 6N + 12*L*H*Q*T: the figure MFU uses (docs/ARCHITECTURE.md)
    fl.forward       # exact matmul FLOPs of one forward pass, per token

One source of truth: `flops estimate`, `budget` and the live MFU all read these. A matmul of an
(m x k) by a (k x n) matrix costs 2*m*n*k FLOPs, which is how torch.utils.flop_counter.FlopCounterMode
counts; elementwise work (RMSNorm, RoPE, softmax, SiLU, residual adds) and the embedding lookup are
not matmul FLOPs and are left out (EXCLUDED). Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.config import ModelConfig

EXCLUDED = ("RMSNorm", "RoPE", "softmax", "SiLU and the gate product", "residual adds", "embedding lookup")
"""Operations not counted as FLOPs (elementwise or lookups; FlopCounterMode does not count them either)."""


@dataclass(frozen=True)
class ParamCounts:
    """Parameters by component. A tied output head shares the embedding matrix and counts once, in embedding."""

    total: int
    """Every parameter, a tied embedding counted once (what `Transformer.num_params()` returns)."""
    embedding: int
    """Token embedding: vocab_size x dim."""
    non_embedding: int
    """total - embedding: the blocks, the norms and an untied output head."""
    attention: int
    """All layers' wq, wk, wv, wo (and the q/k/v biases when qkv_bias)."""
    mlp: int
    """All layers' SwiGLU w1, w3, w2."""
    norms: int
    """Two RMSNorm gains per layer (four in a sandwich block), the QK-norms, plus the final norm."""
    head: int
    """Output projection; 0 when tied to the embedding."""
    per_layer: int
    """One Transformer block."""
    matmul: int
    """The N of `6N`: weights that take part in matmuls (projections, MLP) plus the output head's
    vocab_size x dim, which is multiplied on every token even when tied. Biases and norm gains are not."""


@dataclass(frozen=True)
class FlopsBreakdown:
    """FLOPs per token at one sequence length. Component fields are forward FLOPs over all layers."""

    seq_len: int
    qkv: int
    """Q, K and V projections."""
    attn_scores: int
    """Q @ K^T, over the full seq_len x seq_len matrix (causal masking not subtracted)."""
    attn_values: int
    """softmax(scores) @ V, full matrix as above."""
    attn_out: int
    """Output projection wo."""
    mlp: int
    """SwiGLU: w1, w3 and w2."""
    head: int
    """LM head (output projection to the vocabulary)."""
    n: int
    """The N of 6N (ParamCounts.matmul)."""
    attention_palm: int
    """12 * layers * heads * head_dim * seq_len: the PaLM attention term for one training step."""

    @property
    def forward(self) -> int:
        """Exact forward matmul FLOPs per token."""
        return self.qkv + self.attn_scores + self.attn_values + self.attn_out + self.mlp + self.head

    @property
    def forward_attention(self) -> int:
        """The attention matmuls (scores and weighted values): the part that grows with seq_len."""
        return self.attn_scores + self.attn_values

    @property
    def forward_linear(self) -> int:
        """The weight matmuls (projections, MLP, head): 2N."""
        return self.forward - self.forward_attention

    @property
    def backward(self) -> int:
        """Exact backward FLOPs per token: gradients for both operands of every matmul, 2x forward."""
        return 2 * self.forward

    @property
    def train_exact(self) -> int:
        """Forward + backward, exact: 3x forward (a flash kernel's recompute of the scores is not counted)."""
        return 3 * self.forward

    @property
    def train_palm(self) -> int:
        """6N + 12*L*H*Q*T (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT and torchtitan): used for MFU."""
        return 6 * self.n + self.attention_palm

    @property
    def train(self) -> int:
        """The training figure llmctl reports and MFU uses: train_palm."""
        return self.train_palm

    @property
    def six_n(self) -> int:
        """6N (Kaplan et al. 2020): weights only, no attention term."""
        return 6 * self.n

    @property
    def causal_saving(self) -> int:
        """Training FLOPs per token a causal kernel skips: about half the attention term, (T-1)/(2T) of it."""
        return self.attention_palm * (self.seq_len - 1) // (2 * self.seq_len)

    def components(self) -> dict[str, int]:
        """Forward FLOPs per token by component, in the order the tables show them."""
        return {
            "qkv_projections": self.qkv,
            "attention_scores": self.attn_scores,
            "attention_values": self.attn_values,
            "output_projection": self.attn_out,
            "swiglu_mlp": self.mlp,
            "lm_head": self.head,
        }


def param_counts(cfg: ModelConfig) -> ParamCounts:
    """Exact parameter counts of `llmctl.model.llama.Transformer(cfg)`, by component."""
    d, q_width, kv_width, f = (
        cfg.dim,
        cfg.n_heads * cfg.head_size,
        cfg.kv_heads * cfg.head_size,
        cfg.hidden_dim,
    )
    attn_weights = d * q_width + 2 * d * kv_width + q_width * d
    attn_bias = q_width + 2 * kv_width if cfg.qkv_bias else 0
    mlp = 3 * d * f
    # QK-norm weights: one head_dim vector each for q and k (Qwen3), or the whole projections' widths (OLMo 2).
    qk_norm = {"none": 0, "head": 2 * cfg.head_size, "proj": q_width + kv_width}[cfg.qk_norm]
    # A sandwich block (Gemma 3) has two more norms, after attention and after the MLP.
    block_norms = (4 if cfg.norm_placement == "sandwich" else 2) * d
    per_layer = attn_weights + attn_bias + mlp + block_norms + qk_norm
    embedding = cfg.vocab_size * d
    head = 0 if cfg.tied_embeddings else cfg.vocab_size * d
    norms = (block_norms + qk_norm) * cfg.n_layers + d
    total = embedding + cfg.n_layers * per_layer + d + head
    return ParamCounts(
        total=total,
        embedding=embedding,
        non_embedding=total - embedding,
        attention=cfg.n_layers * (attn_weights + attn_bias),
        mlp=cfg.n_layers * mlp,
        norms=norms,
        head=head,
        per_layer=per_layer,
        matmul=cfg.n_layers * (attn_weights + mlp) + cfg.vocab_size * d,
    )


def flops_per_token(cfg: ModelConfig, seq_len: int) -> FlopsBreakdown:
    """FLOPs per token of a forward pass at `seq_len`, by component, and the training conventions.

    Attention is counted over the full seq_len x seq_len score matrix, as FlopCounterMode counts
    scaled_dot_product_attention (on CUDA; it has no formula for the CPU kernel, so on CPU it counts
    only `forward_linear`). Query heads set the attention cost; grouped KV heads only shrink K and V.
    A sliding-window layer's queries see at most `sliding_window` keys, so its attention terms use
    min(window, seq_len) in place of seq_len (`attended_keys`).
    """
    L, d, T = cfg.n_layers, cfg.dim, seq_len
    q_width, kv_width, f = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size, cfg.hidden_dim
    keys = attended_keys(cfg, T)
    return FlopsBreakdown(
        seq_len=T,
        qkv=L * 2 * d * (q_width + 2 * kv_width),
        attn_scores=2 * q_width * keys,
        attn_values=2 * q_width * keys,
        attn_out=L * 2 * q_width * d,
        mlp=L * 3 * 2 * d * f,
        head=2 * d * cfg.vocab_size,
        n=param_counts(cfg).matmul,
        attention_palm=12 * cfg.n_heads * cfg.head_size * keys,
    )


def attended_keys(cfg: ModelConfig, seq_len: int) -> int:
    """Keys per query summed over the layers: seq_len on a global layer, min(sliding_window, seq_len) on a
    windowed one (the score matrix a window kernel computes is seq_len x window, not seq_len x seq_len)."""
    window = min(cfg.sliding_window, seq_len) if cfg.sliding_window is not None else seq_len
    return sum(window if cfg.is_windowed(i) else seq_len for i in range(cfg.n_layers))
