"""GPU memory of training the Llama-style decoder with AdamW or Muon: model states, activations, largest micro-batch.

    est = training_memory(model_from_preset("124m"), seq_len=1024, dtype="bf16", device_gib=24, optim="muon")
    est.states_bytes, est.activation_bytes_per_seq, est.max_micro_batch, est.verdict

The activation model follows what llmctl/model/llama.py keeps for backward (itemised in
`activation_bytes_per_token`), assuming scaled_dot_product_attention runs a flash or memory-efficient
kernel, so no seq_len x seq_len matrix is stored (Korthikanti et al. 2022 give the same accounting
for GPT blocks; their 5*a*s/h term is that matrix). Pure Python: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmctl.config import ModelConfig
from llmctl.plan.flops import param_counts

GIB = 1024**3
CONTEXT_RESERVE = 1 * GIB
"""The CUDA context, cuBLAS/cuDNN workspaces and kernels live outside PyTorch's allocator."""
FRAGMENTATION = 0.05
"""Share of the rest the caching allocator loses to fragmentation."""

MIXED = ("bf16", "fp16", "fp8")


@dataclass(frozen=True)
class ActivationBytes:
    """Bytes kept for backward, per token."""

    per_layer: int
    """One Transformer block, everything its backward needs."""
    layer_input: int
    """One block's input (the fp32 residual stream): all activation checkpointing keeps per block."""
    final: int
    """Final norm and the LM head's input."""
    logits: int
    """fp32 log-softmax kept for the loss, plus the logits' gradient and its own at the start of backward."""

    def full(self, n_layers: int) -> int:
        """Per token, no checkpointing."""
        return n_layers * self.per_layer + self.final + self.logits

    def checkpointed(self, n_layers: int) -> int:
        """Per token with per-block checkpointing: every block's input, plus one block recomputed in backward."""
        return n_layers * self.layer_input + self.per_layer + self.final + self.logits


@dataclass(frozen=True)
class MemoryEstimate:
    """Memory of one GPU training one model replica (DDP; FSDP would shard the states)."""

    dtype: str
    seq_len: int
    params: int
    weights_bytes: int
    """Weights as the matmuls read them: bf16/fp16 copies autocast makes (mixed), or the fp32 weights plus
    the concatenated q|k|v and w1|w3 copies (fused_weight_params) kept for backward."""
    master_bytes: int
    """fp32 master weights the optimizer updates (mixed precision only; 0 for fp32)."""
    grads_bytes: int
    """Gradients, fp32 (autocast keeps them in the parameters' dtype)."""
    optimizer_bytes: int
    """AdamW's two fp32 moments per parameter; with Muon, one fp32 momentum buffer for the hidden matrices."""
    activation_bytes_per_seq: int
    """Activations for one sequence of seq_len tokens, no checkpointing."""
    activation_bytes_per_seq_ckpt: int
    """The same with activation checkpointing per block."""
    device_bytes: int
    usable_bytes: int
    """device - CONTEXT_RESERVE, less FRAGMENTATION."""
    optim: str = "adamw"
    """adamw, or muon (Muon on the hidden matrices, AdamW on embeddings, head, norms, biases)."""
    muon_params: int = 0
    """Parameters Muon updates (optim=muon)."""
    num_gpus: int = 1
    """GPUs of the run: what a verdict may suggest (FSDP shards the states only where there are several)."""
    method: str = "full"
    """full, lora or qlora (llmctl/plan/lora.py builds the adapter rows)."""
    frozen_bytes: int = 0
    """LoRA and QLoRA: the frozen base as stored (0 for full fine-tuning, whose weights are all trained)."""
    weights_bytes_ckpt: int | None = None
    """weights_bytes with activation checkpointing, where it differs: the compute copies of frozen weights
    live one block at a time when blocks are recomputed. None: the same as weights_bytes."""

    @property
    def states_bytes(self) -> int:
        """Weights, master copy, gradients and optimizer states: independent of the batch."""
        return self.states(checkpointing=False)

    def states(self, checkpointing: bool) -> int:
        """Frozen base, weight copies, master copy, gradients and optimizer states, with or without
        activation checkpointing."""
        weights = self.weights_bytes
        if checkpointing and self.weights_bytes_ckpt is not None:
            weights = self.weights_bytes_ckpt
        return self.frozen_bytes + weights + self.master_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def bytes_per_param(self) -> int:
        """States per parameter: 18 for mixed precision (2 + 4 + 4 + 8), about 16 + 2 for fp32 (4 + 4 + 8 and
        the fused weight copies), with AdamW."""
        return self.states_bytes // self.params

    def _max_batch(self, per_seq: int, checkpointing: bool) -> int:
        room = self.usable_bytes - self.states(checkpointing)
        return max(0, room // per_seq) if room > 0 else 0

    @property
    def max_micro_batch(self) -> int:
        """Largest micro-batch (sequences) that fits without checkpointing; 0 if none."""
        return self._max_batch(self.activation_bytes_per_seq, checkpointing=False)

    @property
    def max_micro_batch_ckpt(self) -> int:
        """Largest micro-batch that fits with activation checkpointing; 0 if none."""
        return self._max_batch(self.activation_bytes_per_seq_ckpt, checkpointing=True)

    def total_bytes(self, micro_batch: int, checkpointing: bool = False) -> int:
        """States plus activations of `micro_batch` sequences."""
        per_seq = self.activation_bytes_per_seq_ckpt if checkpointing else self.activation_bytes_per_seq
        return self.states(checkpointing) + micro_batch * per_seq

    @property
    def fits(self) -> bool:
        """True when at least one sequence fits, with checkpointing if need be."""
        return self.max_micro_batch_ckpt >= 1

    def micro_batch_verdict(self, micro_batch: int) -> str:
        """One sentence for a chosen micro-batch: fits as is, only with activation checkpointing, or not."""
        from llmctl.units import fmt_bytes

        plain, ckpt = self.total_bytes(micro_batch), self.total_bytes(micro_batch, checkpointing=True)
        shape, usable = f"micro-batch {micro_batch} x {self.seq_len} tokens", fmt_bytes(self.usable_bytes)
        if plain <= self.usable_bytes:
            return f"fits: {shape} needs {fmt_bytes(plain)} of {usable} usable"
        if ckpt <= self.usable_bytes:
            return (
                f"fits only with activation checkpointing (--train.activation_checkpointing=true): {shape} needs "
                f"{fmt_bytes(ckpt)} with it, {fmt_bytes(plain)} without, of {usable} usable"
            )
        if self.max_micro_batch_ckpt >= 1:
            best = self.max_micro_batch or self.max_micro_batch_ckpt
            how = "" if self.max_micro_batch else " with activation checkpointing"
            return (
                f"does not fit: {shape} needs {fmt_bytes(ckpt)} even with activation checkpointing, of {usable} "
                f"usable; use --train.micro_batch_size={best}{how} and reach the same batch by gradient "
                "accumulation (--train.global_batch_size)"
            )
        return self.verdict

    @property
    def verdict(self) -> str:
        """One sentence: fits (with which micro-batch) or does not (and what would help)."""
        from llmctl.units import fmt_bytes

        if self.states(checkpointing=True) > self.usable_bytes:
            return (
                f"does not fit: weights, gradients and optimizer states alone need {fmt_bytes(self.states(checkpointing=True))} "
                f"of {fmt_bytes(self.usable_bytes)} usable; {self._states_remedy()}"
            )
        if self.max_micro_batch >= 1:
            return (
                f"fits: micro-batch up to {self.max_micro_batch} x {self.seq_len} tokens without activation "
                f"checkpointing, {self.max_micro_batch_ckpt} with it"
            )
        if self.max_micro_batch_ckpt >= 1:
            return (
                f"fits only with activation checkpointing (--train.activation_checkpointing=true): micro-batch "
                f"up to {self.max_micro_batch_ckpt} x {self.seq_len} tokens"
            )
        return (
            f"does not fit: one sequence of {self.seq_len} tokens needs "
            f"{fmt_bytes(self.total_bytes(1, checkpointing=True))} even with activation checkpointing, "
            f"{fmt_bytes(self.usable_bytes)} usable; use a shorter --seq-len"
            + (
                " or a smaller model"
                if self.num_gpus == 1
                else f", FSDP over the {self.num_gpus} GPUs or a smaller model"
            )
        )

    def _states_remedy(self) -> str:
        """What would make the states fit: on one GPU sharding is no option, so never suggest more GPUs."""
        if self.num_gpus > 1:
            return f"shard them with FSDP over the {self.num_gpus} GPUs (--dist.strategy=fsdp) or choose a smaller model"
        return "choose a smaller model or a GPU with more memory"


def activation_bytes_per_token(cfg: ModelConfig, dtype: str) -> ActivationBytes:
    """Bytes the forward pass keeps for backward, per token, as llama.py computes under `dtype`.

    Mixed precision (torch autocast): the residual stream and RMSNorm run in fp32; each nn.Linear
    saves its own bf16 cast of its input (autocast caches casts of weights, not of activations; wq, wk
    and wv run as one matmul, as do w1 and w3, so each block keeps two); RoPE keeps nothing (its cos/sin tables are buffers); SDPA keeps q,
    k, v, its output (which wo reads without a copy) and the fp32 log-sum-exp per head. Checked
    against the tensors autograd saves (torch.autograd.graph.saved_tensors_hooks) in tests.
    """
    h, a = cfg.dim, cfg.n_heads
    qw, kvw, f, V = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size, cfg.hidden_dim, cfg.vocab_size
    norm = 4 * h + 4 * h + 4  # fp32 input, its normalised value and the 1/rms factor, for RMSNorm's backward
    if dtype in MIXED:
        attention = (
            norm
            + 2 * h  # bf16 cast of the normed input for the one q|k|v matmul
            + 2 * (qw + 2 * kvw)  # rotated q, k and v in bf16 for SDPA
            + 2 * qw
            + 4 * a  # SDPA output (wo's input) and log-sum-exp
        )
        mlp = (
            norm + 2 * h + 4 * 2 * f
        )  # cast for the w1|w3 matmul; then w1 x, silu(w1 x), w3 x, their product
        final = norm + 2 * h
    else:
        attention = (
            norm + 4 * h + 4 * (qw + 2 * kvw) + 4 * qw + 4 * a
        )  # one normed tensor shared by wq, wk, wv
        mlp = norm + 4 * h + 4 * 4 * f
        final = norm + 4 * h
    # log_softmax keeps its fp32 output (4 B); backward then holds the gradients of it and of the logits (8 B).
    return ActivationBytes(per_layer=attention + mlp, layer_input=4 * h, final=final, logits=12 * V)


def fused_weight_params(cfg: ModelConfig) -> int:
    """Entries of the q|k|v and w1|w3 weights that llama.py concatenates for one matmul each. Under
    autocast that concatenation is the bf16 copy the matmul reads anyway; in fp32 it is an extra copy
    the matmul keeps for backward."""
    return (
        cfg.n_layers
        * cfg.dim
        * (cfg.n_heads * cfg.head_size + 2 * cfg.kv_heads * cfg.head_size + 2 * cfg.hidden_dim)
    )


def muon_param_count(cfg: ModelConfig) -> int:
    """Parameters in the hidden 2-D matrices (attention and MLP projections), the ones Muon updates."""
    d, q_width, kv_width = cfg.dim, cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size
    return cfg.n_layers * (d * q_width + 2 * d * kv_width + q_width * d + 3 * d * cfg.hidden_dim)


def optimizer_state_bytes(cfg: ModelConfig, optim: str) -> int:
    """fp32 optimizer state: AdamW keeps two moments (8 B/param); Muon one momentum buffer (4 B/param)
    for the hidden matrices, while AdamW keeps its two for the rest."""
    n = param_counts(cfg).total
    if optim == "muon":
        m = muon_param_count(cfg)
        return 4 * m + 8 * (n - m)
    return 8 * n


def training_memory(
    cfg: ModelConfig, seq_len: int, dtype: str, device_gib: float, optim: str = "adamw", num_gpus: int = 1
) -> MemoryEstimate:
    """Model states and activations of AdamW (or Muon) training on one GPU of `device_gib`, with the largest
    micro-batch; `num_gpus` only shapes what the verdict suggests."""
    n = param_counts(cfg).total
    mixed = dtype in MIXED
    act = activation_bytes_per_token(cfg, dtype)
    device = int(device_gib * GIB)
    usable = int(max(0, device - CONTEXT_RESERVE) * (1 - FRAGMENTATION))
    return MemoryEstimate(
        dtype=dtype,
        seq_len=seq_len,
        params=n,
        weights_bytes=2 * n if mixed else 4 * n + 4 * fused_weight_params(cfg),
        master_bytes=4 * n if mixed else 0,
        grads_bytes=4 * n,
        optimizer_bytes=optimizer_state_bytes(cfg, optim),
        activation_bytes_per_seq=act.full(cfg.n_layers) * seq_len,
        activation_bytes_per_seq_ckpt=act.checkpointed(cfg.n_layers) * seq_len,
        device_bytes=device,
        usable_bytes=usable,
        optim=optim,
        muon_params=muon_param_count(cfg) if optim == "muon" else 0,
        num_gpus=num_gpus,
    )
