"""What LoRA and QLoRA fine-tuning hold in memory, as the engine trains them: frozen base, adapters, their
gradients and optimizer state, activations.

    spec = LoraSpec(rank=16, alpha=32.0, targets=("all-linear",), quantize="nf4")
    adapter_params(cfg, spec)                      # what `llmctl sft --lora.rank 16` trains
    est = lora_memory(cfg, 2048, "bf16", 24, spec)  # a MemoryEstimate, method "qlora"

The counts follow llmctl/model/lora.py and llama.py: the engine keeps every parameter in fp32 (the frozen
base too) and runs matmuls under autocast, so each block's bf16 weight copies live until its backward;
an adapter is A [r, in] and B [out, r] with fp32 gradients and AdamW's two fp32 moments. A frozen
projection keeps no input for backward unless its adapter needs it, and a frozen RMSNorm gain keeps no
normalised value (checked against the tensors autograd saves in tests/test_budget_lora.py). QLoRA stores
every block projection in 4-bit NF4 with double quantization (Dettmers et al. 2023); embedding, head and
norms stay as the engine holds them. No 8-bit AdamW row: the engine has none. Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.config import LoRAConfig, ModelConfig, check_lora_rank, lora_target_names
from llmctl.errors import LlmctlError
from llmctl.plan.flops import param_counts
from llmctl.plan.memory import (
    CONTEXT_RESERVE,
    FRAGMENTATION,
    GIB,
    MIXED,
    ActivationBytes,
    MemoryEstimate,
)

PLAN_RANK = 16
"""Rank the fine-tuning view plans LoRA and QLoRA with when --lora.rank is not given."""
QUANTIZE = ("nf4",)

NF4_BLOCK = 64
"""Weights per NF4 block; each block has one absmax scale."""
NF4_SCALE_BLOCK = 256
"""Double quantization: the absmax scales are stored in 8 bits, in blocks of 256 with one fp32 constant each."""

ATTENTION = ("wq", "wk", "wv", "wo")


@dataclass(frozen=True)
class LoraSpec:
    """The adapters a plan is for: the `lora` config section, plus whether the base is quantized."""

    rank: int = PLAN_RANK
    alpha: float = 16.0
    targets: tuple[str, ...] = ("all-linear",)
    dropout: float = 0.0
    quantize: str | None = None
    """None (frozen base as the engine holds it) or nf4 (QLoRA)."""

    @property
    def names(self) -> tuple[str, ...]:
        """llmctl projection names the adapters go on, in layer order."""
        return lora_target_names(list(self.targets))

    def config(self) -> LoRAConfig:
        """The same adapters as the engine's LoRAConfig."""
        return LoRAConfig(rank=self.rank, alpha=self.alpha, dropout=self.dropout, targets=list(self.targets))


def projection_shapes(cfg: ModelConfig) -> dict[str, tuple[int, int]]:
    """(out, in) of each projection of one block, by llmctl name."""
    q, kv, dim, hidden = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size, cfg.dim, cfg.hidden_dim
    return {
        "wq": (q, dim),
        "wk": (kv, dim),
        "wv": (kv, dim),
        "wo": (dim, q),
        "w1": (hidden, dim),
        "w3": (hidden, dim),
        "w2": (dim, hidden),
    }


def check_lora_spec(cfg: ModelConfig, spec: LoraSpec) -> None:
    """Refuse what the engine would refuse: rank < 1, unknown targets, a rank above a layer's width, an
    unknown quantization."""
    if spec.rank < 1:
        raise LlmctlError(f"--lora.rank must be at least 1, got {spec.rank}", "e.g. --lora.rank 16")
    if spec.alpha <= 0:
        raise LlmctlError(f"--lora.alpha must be positive, got {spec.alpha:g}", "e.g. --lora.alpha 32")
    if not 0 <= spec.dropout < 1:
        raise LlmctlError(
            f"--lora.dropout must be in [0, 1), got {spec.dropout:g}", "e.g. --lora.dropout 0.05"
        )
    if spec.quantize is not None and spec.quantize not in QUANTIZE:
        raise LlmctlError(
            f"unknown --lora.quantize {spec.quantize!r}", "use --lora.quantize nf4 (QLoRA), or leave it out"
        )
    check_lora_rank(cfg, spec.config())


def adapters_valid(cfg: ModelConfig, spec: LoraSpec) -> bool:
    """True when `spec` suits `cfg` (check_lora_spec would pass)."""
    try:
        check_lora_spec(cfg, spec)
    except LlmctlError:
        return False
    return True


def adapter_params_per_layer(cfg: ModelConfig, spec: LoraSpec) -> int:
    """Entries of one block's adapters: r x (in + out) per targeted projection."""
    shapes = projection_shapes(cfg)
    return sum(spec.rank * (shapes[n][0] + shapes[n][1]) for n in spec.names)


def adapter_params(cfg: ModelConfig, spec: LoraSpec) -> int:
    """Every adapter entry of the model: what a LoRA run trains."""
    return cfg.n_layers * adapter_params_per_layer(cfg, spec)


def block_projection_params(cfg: ModelConfig) -> int:
    """Weights of one block's seven projections (biases not included)."""
    return sum(o * i for o, i in projection_shapes(cfg).values())


def nf4_bytes(numel: int) -> int:
    """Bytes of one weight in NF4 with double quantization: 4 bits per weight, one 8-bit absmax per block of
    64, one fp32 constant per 256 of those, and the fp32 offset subtracted from the absmax values."""
    blocks = -(-numel // NF4_BLOCK)
    scale_blocks = -(-blocks // NF4_SCALE_BLOCK)
    return -(-numel // 2) + blocks + 4 * scale_blocks + 4


def frozen_base_bytes(cfg: ModelConfig, quantize: str | None) -> tuple[int, int]:
    """(bytes of the frozen base, parameters stored in NF4). The engine keeps parameters in fp32 (4 B); with
    nf4 every block projection is quantized and the embedding, head, norms and biases stay fp32."""
    n = param_counts(cfg).total
    if quantize is None:
        return 4 * n, 0
    per_block = [o * i for o, i in projection_shapes(cfg).values()]
    quantized = cfg.n_layers * sum(per_block)
    return 4 * (n - quantized) + cfg.n_layers * sum(nf4_bytes(p) for p in per_block), quantized


def _adapter_inputs(cfg: ModelConfig, spec: LoraSpec, e: int) -> int:
    """Bytes per token the adapters keep of their projections' inputs (e: bytes per compute element).

    Without dropout, in fp32 q|k|v share one saved input and so do w1|w3; under autocast each adapter saves
    its own bf16 cast of the fp32 normed input. wo reads the attention output, which attention keeps
    anyway; w2's input (the SwiGLU product) is kept only for its adapter. With dropout, each adapter keeps
    its dropped input and the 1-byte mask."""
    shapes, names = projection_shapes(cfg), spec.names
    if spec.dropout > 0:
        return sum((e + 1) * shapes[n][1] for n in names)
    h, f = cfg.dim, cfg.hidden_dim
    if e == 4:
        qkv = 4 * h if any(n in names for n in ("wq", "wk", "wv")) else 0
        w13 = 4 * h if any(n in names for n in ("w1", "w3")) else 0
        return qkv + w13 + (4 * f if "w2" in names else 0)
    casts = sum(2 * h for n in names if n in ("wq", "wk", "wv", "w1", "w3"))
    return casts + (2 * f if "w2" in names else 0)


def lora_activation_bytes(cfg: ModelConfig, dtype: str, spec: LoraSpec) -> ActivationBytes:
    """Bytes the forward pass keeps for backward per token with the base frozen and adapters on `spec`'s
    projections (the same for LoRA and QLoRA): every block counted as one whose input needs gradients."""
    e = 2 if dtype in MIXED else 4
    h, a, f, V = cfg.dim, cfg.n_heads, cfg.hidden_dim, cfg.vocab_size
    qw, kvw = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    norm = 4 * h + 4  # the fp32 input and 1/rms; a frozen gain needs no normalised value
    attention = e * (qw + 2 * kvw) + e * qw + 4 * a  # q, k, v; SDPA's output and log-sum-exp
    mlp = 3 * e * f  # w1 x, silu(w1 x), w3 x
    adapters = e * spec.rank * len(spec.names)  # each adapter's A x, which B's gradient needs
    per_layer = 2 * norm + attention + mlp + _adapter_inputs(cfg, spec, e) + adapters
    # The final norm keeps its input and 1/rms; the frozen head keeps nothing of its input.
    return ActivationBytes(per_layer=per_layer, layer_input=4 * h, final=norm, logits=12 * V)


def weight_copy_bytes(cfg: ModelConfig, dtype: str, spec: LoraSpec) -> tuple[int, int]:
    """(bytes, bytes with activation checkpointing) of the weight copies the matmuls keep for backward.

    Under autocast every frozen projection and the head keep a bf16 copy until their backward (one block's
    at a time with checkpointing), and the adapters a cached bf16 copy. In fp32 the concatenated q|k|v and
    w1|w3 weights are the copies. QLoRA dequantizes one block's projections at a time."""
    block, head = block_projection_params(cfg), cfg.vocab_size * cfg.dim
    fused = (cfg.n_heads * cfg.head_size + 2 * cfg.kv_heads * cfg.head_size + 2 * cfg.hidden_dim) * cfg.dim
    mixed = dtype in MIXED
    adapters = 2 * adapter_params(cfg, spec) if mixed else 0
    if spec.quantize is not None:
        copies = (2 * (block + head) if mixed else 4 * block) + adapters
        return copies, copies
    if mixed:
        return 2 * (cfg.n_layers * block + head) + adapters, 2 * (block + head) + adapters
    return 4 * cfg.n_layers * fused, 4 * fused


def lora_memory(
    cfg: ModelConfig,
    seq_len: int,
    dtype: str,
    device_gib: float,
    spec: LoraSpec,
    optim: str = "adamw",
    num_gpus: int = 1,
) -> MemoryEstimate:
    """Memory of LoRA (QLoRA with spec.quantize) training on one GPU of `device_gib`: the frozen base, the
    matmuls' weight copies, fp32 adapters, their fp32 gradients and optimizer state, and activations."""
    n, trained = param_counts(cfg).total, adapter_params(cfg, spec)
    frozen, _ = frozen_base_bytes(cfg, spec.quantize)
    copies, copies_ckpt = weight_copy_bytes(cfg, dtype, spec)
    act = lora_activation_bytes(cfg, dtype, spec)
    device = int(device_gib * GIB)
    return MemoryEstimate(
        dtype=dtype,
        seq_len=seq_len,
        params=n + trained,
        weights_bytes=copies,
        master_bytes=4 * trained,
        grads_bytes=4 * trained,
        # Every adapter matrix is a 2-D hidden matrix: Muon keeps one fp32 buffer for it, AdamW two.
        optimizer_bytes=(4 if optim == "muon" else 8) * trained,
        activation_bytes_per_seq=act.full(cfg.n_layers) * seq_len,
        activation_bytes_per_seq_ckpt=act.checkpointed(cfg.n_layers) * seq_len,
        device_bytes=device,
        usable_bytes=int(max(0, device - CONTEXT_RESERVE) * (1 - FRAGMENTATION)),
        optim=optim,
        muon_params=trained if optim == "muon" else 0,
        num_gpus=num_gpus,
        method="qlora" if spec.quantize else "lora",
        frozen_bytes=frozen,
        weights_bytes_ckpt=copies_ckpt,
    )


def lora_flops_per_token(cfg: ModelConfig, spec: LoraSpec, attention_palm: int) -> int:
    """Training FLOPs per token with the base frozen: the base's matmuls run forward and back to their
    inputs (4N, no weight gradients), the adapters' fully (6 x their entries), attention as in training."""
    return 4 * param_counts(cfg).matmul + 6 * adapter_params(cfg, spec) + attention_palm
