"""Typed configuration: frozen dataclass sections, YAML files and dotted overrides.

Precedence, lowest first: dataclass defaults < YAML file (`-c/--config`) < dotted overrides
(`--optim.lr=3e-4`). Unknown keys, wrong types and impossible values raise LlmctlError naming the key
and, for unknown keys, the closest valid one.

    cfg = load_config("examples/configs/quickstart.yaml", ["--train.steps=200", "--model=tiny"])
    cfg.model.hidden_dim, cfg.optim.lr
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from llmctl.errors import LlmctlError
from llmctl.presets import PRESETS, model_fields_from_hf


@dataclass(frozen=True)
class ModelConfig:
    """The Transformer's shape: a Llama-style decoder (RMSNorm, RoPE, GQA, SwiGLU)."""

    preset: str | None = None
    """Name of the preset these values started from (`tiny`, `124m`, `llama3-8b`, ...), for the record."""
    vocab_size: int | None = None
    """Embedding rows. None (the default, also after a preset): training takes the token shards' tokenizer
    vocabulary. A number fixes it; it must hold the tokenizer's ids."""
    dim: int = 256
    """Model (residual stream) width."""
    n_layers: int = 4
    """Number of Transformer blocks."""
    n_heads: int = 4
    """Attention (query) heads; each head_dim wide (dim / n_heads unless head_dim is set)."""
    n_kv_heads: int | None = None
    """Key/value heads for grouped-query attention; None means n_heads (plain multi-head attention)."""
    ffn_dim: int | None = None
    """SwiGLU hidden size. None: the Llama rule from multiple_of and ffn_dim_multiplier."""
    multiple_of: int = 256
    """Llama rule: the SwiGLU hidden size is rounded up to a multiple of this."""
    ffn_dim_multiplier: float | None = None
    """Llama rule: optional factor on 2/3 * 4 * dim before rounding (1.3 for Llama 3 8B)."""
    tied_embeddings: bool = False
    """Share the token embedding with the output head."""
    qkv_bias: bool = False
    """Bias on the query, key and value projections (Qwen2); no other layer has biases."""
    max_seq_len: int = 1024
    """Longest sequence the model is built for (RoPE tables)."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    norm_eps: float = 1e-5
    """RMSNorm epsilon."""
    rope_scaling: Literal["none", "llama3", "linear", "yarn"] = "none"
    """RoPE frequency scaling: none, Llama 3.1's `llama3` (low frequencies divided by rope_factor), `linear`
    (every frequency divided by rope_factor), or `yarn` (YaRN, Peng et al. 2023: high frequencies kept, low ones
    divided by rope_factor, a ramp between; cos and sin times rope_attention_factor). With rope_local_theta,
    on the global layers only."""
    rope_factor: float = 8.0
    """llama3 and linear scaling: how much the (low) frequencies are divided by."""
    rope_low_freq_factor: float = 1.0
    """llama3 scaling: wavelengths above rope_original_max_seq_len / this are fully scaled."""
    rope_high_freq_factor: float = 4.0
    """llama3 scaling: wavelengths below rope_original_max_seq_len / this are left alone."""
    rope_original_max_seq_len: int = 8192
    """llama3 and yarn scaling: the context length the model was first trained at."""
    rope_beta_fast: float = 32.0
    """yarn: rotations over the original context above which a frequency is kept (extrapolated)."""
    rope_beta_slow: float = 1.0
    """yarn: rotations below which a frequency is fully divided by rope_factor (interpolated)."""
    rope_attention_factor: float | None = None
    """yarn: the factor on cos and sin. None: 0.1 * ln(rope_factor) + 1 (the YaRN paper's mscale)."""
    head_dim: int | None = None
    """Width of one attention head. None: dim / n_heads. Qwen3 sets it apart from dim (128 x 16 heads at
    dim 1024)."""
    qk_norm: Literal["none", "head", "proj"] = "none"
    """RMSNorm on queries and keys before RoPE: none; head, over each head's head_dim with one weight shared by
    the heads (Qwen3); proj, over the whole query and key projections (OLMo 2)."""
    norm_placement: Literal["pre", "post", "sandwich"] = "pre"
    """pre: x + f(norm(x)) (Llama). post: x + norm(f(x)), the norms on the attention and MLP outputs and none
    on their inputs (OLMo 2); the block's attention_norm and ffn_norm weights then sit there. sandwich:
    x + norm2(f(norm1(x))) (Gemma 3), two more norms per block (attention_post_norm, ffn_post_norm)."""
    attn_scalar: float | None = None
    """Attention scores are scaled by attn_scalar^-0.5 (Gemma 3's query_pre_attn_scalar). None: head_dim^-0.5."""
    sliding_window: int | None = None
    """Keys a query attends to on the windowed layers, itself included (position q sees q-window+1 .. q).
    None: every layer attends to the whole causal prefix."""
    sliding_window_pattern: int = 0
    """Which layers use sliding_window: 0, all of them (Mistral); n, all but every n-th (layers n-1, 2n-1, ...
    counted from 0 attend globally; Gemma 3: 6, five local to one global)."""
    rope_local_theta: float | None = None
    """RoPE base of the windowed layers when it differs from rope_theta (Gemma 3: 10000 local, 1e6 global);
    rope_scaling then applies to the global layers only. None: one RoPE table for every layer."""
    activation: Literal["silu", "gelu_tanh"] = "silu"
    """The gated MLP's activation: silu (SwiGLU, Llama) or gelu_tanh (GeGLU with tanh-approximated GELU,
    Gemma's `gelu_pytorch_tanh`)."""
    scale_embeddings: bool = False
    """Multiply the token embeddings by sqrt(dim), rounded to the model's dtype first (Gemma)."""
    norm_unit_offset: bool = False
    """RMSNorm scales by (1 + weight) instead of weight, and its weights start at zero (Gemma)."""

    @property
    def kv_heads(self) -> int:
        """Key/value heads, resolved."""
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_size(self) -> int:
        """Width of one attention head, resolved: head_dim, or dim / n_heads."""
        return self.head_dim if self.head_dim is not None else self.dim // self.n_heads

    def is_windowed(self, layer: int) -> bool:
        """Whether `layer` (from 0) attends within sliding_window rather than to the whole prefix."""
        if self.sliding_window is None:
            return False
        return self.sliding_window_pattern == 0 or (layer + 1) % self.sliding_window_pattern != 0

    @property
    def hidden_dim(self) -> int:
        """SwiGLU hidden size: ffn_dim, or the Llama rule (4*dim, times 2/3, times the multiplier, rounded up)."""
        if self.ffn_dim is not None:
            return self.ffn_dim
        hidden = int(2 * (4 * self.dim) / 3)
        if self.ffn_dim_multiplier is not None:
            hidden = int(self.ffn_dim_multiplier * hidden)
        return self.multiple_of * math.ceil(hidden / self.multiple_of)


@dataclass(frozen=True)
class DataConfig:
    """Where the token shards are and how batches are cut from them."""

    path: str | None = None
    """Token shard directory written by `llmctl tokenize` (holds meta.json). A leading ~ is the home folder."""
    sources: list[dict[str, Any]] = field(default_factory=list)
    """A mixture instead of `path`: [{path, weight}] (SFT: {path, epochs}); see llmctl/data_sources.py."""
    mix_by: Literal["tokens", "documents"] = "tokens"
    """What mixture weights count: tokens, or documents (turned into tokens by mean document length)."""
    seq_len: int = 256
    """Tokens per training sequence (the model sees seq_len, predicts seq_len targets)."""
    train_split: str = "train"
    """Split trained on."""
    val_split: str = "validation"
    """Split evaluated on; missing split: evaluation is skipped with a note."""
    packing: bool = False
    """SFT: pack several conversations per sequence with per-conversation attention masks."""
    overlong: Literal["truncate", "drop"] = "truncate"
    """SFT: what happens to conversations longer than seq_len."""
    batching: Literal["random", "length"] = "random"
    """SFT without packing: random micro-batches, or length-sorted windows of 64 micro-batches (less
    padding, but each batch holds only short or only long conversations). README section 8 has figures."""


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer (AdamW, or Muon with AdamW) and the learning-rate schedule."""

    name: Literal["adamw", "muon"] = "adamw"
    """adamw, or muon: torch.optim.Muon on hidden 2-D matrices, AdamW on embeddings, head, norms, biases."""
    lr: float = 1e-3
    """Peak learning rate (of the AdamW groups when name=muon)."""
    muon_lr: float = 0.02
    """name=muon: peak learning rate of the Muon groups; the schedule scales it like lr."""
    muon_momentum: float = 0.95
    """name=muon: Muon's (Nesterov) momentum."""
    min_lr: float = 1e-4
    """Learning rate at the end of the decay."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices only (not norms, biases or embeddings' gains)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    fused: bool = True
    """AdamW's fused kernel (one pass over all parameters) on CUDA and CPU; false: the multi-tensor path."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this; 0 disables clipping (the norm is still reported)."""
    schedule: Literal["cosine", "linear", "constant", "wsd"] = "cosine"
    """Shape after warmup: cosine or linear decay to min_lr, constant, or warmup-stable-decay."""
    warmup_steps: int = 100
    """Linear warmup from 0 to lr over this many optimizer steps."""
    decay_fraction: float = 0.2
    """wsd: the final fraction of steps spent decaying to min_lr."""


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how big a batch, what precision, how often to evaluate and sample."""

    name: str | None = None
    """Run name; the run directory is out_dir/name. Default: derived from the preset and time."""
    out_dir: str = "runs"
    """Parent directory of run directories. A leading ~ is the home folder."""
    steps: int = 1000
    """Optimizer steps to run (a stop condition; max_tokens and time_limit are the others)."""
    max_tokens: int | None = None
    """Stop after this many training tokens (accepts 10M, 2B)."""
    time_limit: float | None = None
    """Stop, with a checkpoint, after this many seconds of wall time (SLURM's end time is read too)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward pass on each device."""
    global_batch_tokens: int | None = None
    """Tokens per optimizer step across devices and accumulation; sets gradient accumulation."""
    global_batch_size: int | None = None
    """Sequences per optimizer step across devices and accumulation (alternative to global_batch_tokens)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on CUDA GPUs that have it, fp16 with a grad scaler on older ones, fp32 on CPU."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    compile: bool = False
    """torch.compile the model."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward to save memory."""
    seed: int = 1337
    """Seeds weights, data order and sampling."""
    eval_every: int = 200
    """Evaluate on the validation split every N steps (and at the end); 0 disables."""
    eval_batches: int = 20
    """Fixed number of validation batches per evaluation."""
    sample_every: int = 500
    """Write sample continuations every N steps (and at the end); 0 disables."""
    sample_prompts: list[str] = field(default_factory=lambda: ["Once upon a time", "def main("])
    """Fixed prompts continued at each sampling step (plus prompts drawn from validation)."""
    sample_tokens: int = 64
    """New tokens per sample."""
    sample_temperature: float = 0.8
    """Sampling temperature of the sample rounds; 0 takes the most likely token (greedy)."""
    sample_top_k: int | None = 50
    """Sample rounds draw from the k most likely tokens; None: from all."""
    log_every: int = 10
    """Report training metrics every N steps."""
    eval_tasks: list[str] = field(default_factory=list)
    """Multiple-choice task files or downloaded task folders scored during training (`llmctl eval --task`)."""
    eval_tasks_every: int = 0
    """Score train.eval_tasks every N steps; 0: at every evaluation (train.eval_every)."""
    eval_tasks_limit: int | None = None
    """Items per task at most in the loop (the first ones); None: all."""
    skip_nonfinite: int = 0
    """Skip up to N steps in all whose loss or gradient norm is NaN/inf (counted as skipped_steps); 0: stop
    at the first one with exit code 3. The weights are never updated from such a step."""


@dataclass(frozen=True)
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    every: int = 500
    """Save every N steps (and always at the end); 0: only at the end."""
    keep: int = 3
    """Keep the newest K checkpoints; older ones are deleted."""
    init: str | None = None
    """Start from these weights (fresh optimizer and schedule): how `sft` loads a pretrained model. A leading
    ~ is the home folder."""
    resume: str | None = None
    """`auto` to continue from checkpoints/latest of this run, or a checkpoint path (a leading ~ is home)."""
    untrained_rows: Literal["warn", "mean"] = "warn"
    """Chat-template tokens whose embedding (or untied head) row in the init weights looks never trained
    (Qwen2.5 base's <|im_end|>): `warn` names them; `mean` also sets those rows to the mean of the trained
    rows before step 0, the usual fix, so the fine-tune can learn to end its turn. SFT with --template model."""
    deadline_margin: float = 120.0
    """Seconds before a SLURM job's end time by which the final checkpoint must be written."""


@dataclass(frozen=True)
class TelemetryConfig:
    """What is measured, how often, and where it goes.

    EFFICIENTLLM_* environment variables are aliases; they apply where the config keeps the default.
    """

    enabled: bool = True
    """Collect hardware and EfficientLLM metrics (EFFICIENTLLM_METRICS_ENABLED)."""
    interval: float = 1.0
    """Seconds between hardware samples (EFFICIENTLLM_COLLECTION_INTERVAL)."""
    history_size: int = 1000
    """Hardware samples kept in memory for per-record averages; run averages use running sums (EFFICIENTLLM_HISTORY_SIZE)."""
    log_interval: int | None = None
    """Steps between metric records; None: train.log_every (EFFICIENTLLM_LOG_INTERVAL)."""
    peak_tflops: float | None = None
    """Dense peak TFLOP/s of one device for MFU, overriding the GPU table (also gives MFU on CPUs)."""
    panel: Literal["auto", "on", "off"] = "auto"
    """Live Rich panel on stderr: auto shows it on terminals only."""
    tensorboard: bool = True
    """Write TensorBoard events under RUN/tb."""
    plot_every: int = 0
    """Refresh RUN/plots/latest.png every N steps; 0 disables (`llmctl plot` works any time)."""
    wandb: bool = False
    """Log to Weights & Biases (pip install "llmctl[wandb]"); WANDB_MODE is honoured, offline when unreachable."""
    wandb_project: str | None = None
    """W&B project; None: WANDB_PROJECT, else 'llmctl'."""
    wandb_entity: str | None = None
    """W&B entity (user or team); None: WANDB_ENTITY or your default entity."""
    wandb_name: str | None = None
    """W&B run name; None: the run directory's name."""
    wandb_tags: list[str] = field(default_factory=list)
    """W&B run tags, e.g. --telemetry.wandb_tags=[baseline,124m]."""
    mlflow: bool = False
    """Log to MLflow (pip install "llmctl[mlflow]")."""
    mlflow_uri: str | None = None
    """MLflow tracking URI (http://host:5000 or sqlite:///path/mlflow.db); None: MLFLOW_TRACKING_URI."""
    mlflow_experiment: str | None = None
    """MLflow experiment; None: MLFLOW_EXPERIMENT_NAME, else 'llmctl'."""


@dataclass(frozen=True)
class DistConfig:
    """Multi-process training, launched by torchrun or srun."""

    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp replicates the model; fsdp shards it with FSDP2 (fully_shard)."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """auto: nccl on GPU, gloo on CPU."""


@dataclass(frozen=True)
class DPOConfig:
    """Preference tuning (`llmctl dpo`, llmctl/engine/dpo.py); unused by pretrain and sft."""

    beta: float = 0.1
    """Strength of the pull towards the reference model (the KL coefficient); must be > 0."""
    loss: Literal["sigmoid", "ipo"] = "sigmoid"
    """sigmoid: DPO (Rafailov et al. 2023); ipo: squared loss on length-averaged log-ratios (Azar et al. 2023)."""
    label_smoothing: float = 0.0
    """sigmoid only: assumed share of flipped preference labels (conservative DPO), in [0, 0.5)."""
    ref_mode: Literal["precompute", "live"] = "precompute"
    """precompute: reference log-probs computed once before training and stored beside the run; live: the
    reference model stays in memory and runs a forward pass on every batch."""
    ref: str | None = None
    """Reference checkpoint; default the --init checkpoint."""


@dataclass(frozen=True)
class GRPOConfig:
    """Reinforcement learning with verifiable rewards (`llmctl grpo`, llmctl/engine/grpo.py); unused by the
    other commands. Each step samples num_generations completions of prompts_per_step prompts and trains on
    their group-relative advantages (llmctl/engine/grpo_loss.py)."""

    rewards: list[str] = field(default_factory=list)
    """Reward specs (`--reward`, repeatable): exact, number, regex:PATTERN, format:PATTERN, each with an
    optional :WEIGHT (llmctl/eval/rewards.py); their weighted sum is a completion's reward."""
    reward_modules: list[str] = field(default_factory=list)
    """Your own rewards (`--reward-module`), FILE.py:function[:WEIGHT], called as
    function(completion=, answer=, prompt=) and returning a number; imported from the path you give."""
    num_generations: int = 8
    """Completions sampled per prompt (G, at least 2); advantages compare the completions of one prompt."""
    prompts_per_step: int = 2
    """Prompts per optimizer step on each rank; the step trains on prompts_per_step x num_generations
    completions, in micro-batches of train.micro_batch_size completions."""
    max_new_tokens: int = 64
    """Longest completion in tokens; prompt plus completion must fit the model's context."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (above 0)."""
    top_k: int | None = None
    """Rollouts sample from the k most likely tokens only; None: all."""
    top_p: float | None = None
    """Rollouts sample from the top-p nucleus; None: off."""
    epsilon: float = 0.2
    """Clip range below: the ratio is clipped at 1 - epsilon (PPO's epsilon)."""
    epsilon_high: float | None = None
    """Clip range above, 1 + epsilon_high (DAPO's clip-higher, e.g. 0.28); None: epsilon."""
    num_iterations: int = 1
    """Optimizer steps per rollout (mu); above 1, the rollout's log-probs are kept as the old policy's."""
    beta: float = 0.0
    """KL penalty towards the reference (the --init weights; under LoRA the base with adapters off);
    0, the default, holds no reference at all."""
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = "dapo"
    """dapo: token-level mean over the step's completion tokens; grpo: mean over completions of each one's
    token mean; dr_grpo: token sum over completions x max_new_tokens (Liu et al. 2025)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages divided by the group's reward std (group), the step's (batch) or not at all (none, Dr. GRPO)."""
    samples: int = 4
    """Completions written to samples.jsonl (with their rewards) every train.sample_every steps."""


# LoRA target groups and names. PEFT's (Hugging Face) module names are synonyms of llmctl's.
LORA_GROUPS: dict[str, tuple[str, ...]] = {
    "attention": ("wq", "wk", "wv", "wo"),
    "mlp": ("w1", "w3", "w2"),
    "all-linear": ("wq", "wk", "wv", "wo", "w1", "w3", "w2"),
}
LORA_HF_NAMES: dict[str, str] = {
    "q_proj": "wq",
    "k_proj": "wk",
    "v_proj": "wv",
    "o_proj": "wo",
    "gate_proj": "w1",
    "up_proj": "w3",
    "down_proj": "w2",
}


@dataclass(frozen=True)
class LoRAConfig:
    """Low-rank adapters (LoRA, Hu et al. 2021): the base weights stay frozen and only a pair of small
    matrices per targeted projection trains (llmctl/model/lora.py)."""

    rank: int = 0
    """Rank r of each adapter (A: r x in, B: out x r); 0, the default, trains every weight instead."""
    alpha: float = 16.0
    """Scale: an adapter adds (alpha / rank) * B A x to its projection's output."""
    dropout: float = 0.0
    """Dropout on each adapter's input while training, in [0, 1)."""
    targets: list[str] = field(default_factory=lambda: ["all-linear"])
    """Projections that get adapters: attention (wq wk wv wo), mlp (w1 w3 w2), all-linear (both), or a list
    of names such as [wq, wv]; PEFT's q_proj k_proj v_proj o_proj gate_proj up_proj down_proj also work."""
    quantize: Literal["none", "nf4"] = "none"
    """nf4 (QLoRA, Dettmers et al. 2023): the frozen projections of every block are stored in 4-bit NF4 with
    double quantization (torchao, `pip install 'llmctl[qlora]'`) and dequantized inside each matmul (bf16 on
    a GPU); none keeps the base as it is."""


def lora_target_names(targets: list[str]) -> tuple[str, ...]:
    """llmctl projection names (in layer order) for a `lora.targets` list; commas also separate names."""
    known = [*LORA_GROUPS, *LORA_GROUPS["all-linear"], *LORA_HF_NAMES]
    chosen: set[str] = set()
    for item in (part.strip() for t in targets for part in t.split(",")):
        if item not in known:
            raise LlmctlError(
                f"unknown lora.targets name {item!r}",
                f"use attention, mlp, all-linear or projection names ({', '.join(known[3:])})",
            )
        chosen.update(LORA_GROUPS.get(item, (LORA_HF_NAMES.get(item, item),)))
    if not chosen:
        raise LlmctlError("lora.targets is empty", "e.g. --lora.targets=all-linear")
    return tuple(n for n in LORA_GROUPS["all-linear"] if n in chosen)


def check_lora_rank(model: ModelConfig, lora: LoRAConfig) -> None:
    """Refuse a rank larger than a targeted projection's smaller dimension (B A would not be low-rank)."""
    q, kv, dim, hidden = (
        model.n_heads * model.head_size,
        model.kv_heads * model.head_size,
        model.dim,
        model.hidden_dim,
    )
    shapes = {"wq": (q, dim), "wk": (kv, dim), "wv": (kv, dim), "wo": (dim, q)}
    shapes.update({"w1": (hidden, dim), "w3": (hidden, dim), "w2": (dim, hidden)})
    for name in lora_target_names(lora.targets) if lora.rank > 0 else ():
        if lora.rank > min(shapes[name]):
            raise LlmctlError(
                f"lora.rank={lora.rank} exceeds the smaller dimension of {name} ({shapes[name][0]} x "
                f"{shapes[name][1]})",
                f"choose --lora.rank <= {min(shapes[name])}, or leave {name} out of --lora.targets",
            )


@dataclass(frozen=True)
class SlurmConfig:
    """What a run does under SLURM; acts only when SLURM_JOB_ID is set."""

    requeue: bool = True
    """When the job's time limit stops the run with steps left (SIGUSR1 from `sbatch --signal=USR1@120`, or the
    job's end time minus checkpoint.deadline_margin), rank 0 runs `scontrol requeue $SLURM_JOB_ID` once the
    final checkpoint is complete, so the job starts again and continues with `--resume auto`; every time, until
    train.steps. A failing scontrol is a warning. SIGTERM (scancel) never requeues."""


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration of a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
    "telemetry": TelemetryConfig,
    "dist": DistConfig,
    "dpo": DPOConfig,
    "grpo": GRPOConfig,
    "lora": LoRAConfig,
    "slurm": SlurmConfig,
}

# Fields that accept human counts such as 10M or 2B.
_COUNT_FIELDS = {"max_tokens", "global_batch_tokens", "steps"}
# Path fields: a leading ~ is expanded to the home folder, wherever the value came from.
_PATH_FIELDS = {"data.path", "train.out_dir", "checkpoint.init", "checkpoint.resume"}
# YAML's null words (but not `~`, which in a path is the home folder): an override of a field that may be
# None takes these, or an empty value, as None.
_NULL_WORDS = {"null", "Null", "NULL"}


@dataclass(frozen=True)
class OverrideText:
    """A `--section.key=value` override as typed, with its YAML reading.

    A string field takes the text itself, so `--train.name=2024-01-01` is a name, not a date, and
    `--data.path=yes` a folder, not True; other fields take the YAML reading (`200`, `true`, `[a, b]`).
    """

    text: str
    parsed: Any


def _admits_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_admits_str(a) for a in typing.get_args(annotation))
    return False


def _from_text(value: OverrideText, annotation: Any) -> Any:
    """The value an override gives a field of this type (see OverrideText)."""
    if not _admits_str(annotation):
        return value.parsed
    optional = type(None) in typing.get_args(annotation)
    if optional and (value.text in _NULL_WORDS or value.text == ""):
        return None
    if typing.get_origin(annotation) is Literal and value.text not in typing.get_args(annotation):
        return value.parsed  # on/off read as booleans are mapped back below
    return value.text


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f"did you mean '{match[0]}'?" if match else f"valid keys: {', '.join(options)}"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Check `value` against a field's type annotation, converting the few safe cases (int -> float, '3e-4')."""
    if isinstance(value, OverrideText):
        value = _from_text(value, annotation)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except LlmctlError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(args):
            # YAML 1.1 reads a bare on/off as a boolean; these fields mean the words.
            value = "on" if value else "off"
        if value not in args:
            raise LlmctlError(
                f"{key} must be one of {', '.join(map(str, args))}, got {value!r}",
                f"set --{key}={args[0]}",
            )
        return value
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise LlmctlError(
                f"{key} must be a list, got {value!r}", f"in YAML write {key.split('.')[-1]}: [a, b]"
            )
        return [_coerce(v, args[0], key) for v in value]
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise LlmctlError(f"{key} must be true or false, got {value!r}", f"set --{key}=true or --{key}=false")
    if annotation is int:
        if isinstance(value, bool):
            raise LlmctlError(f"{key} must be an integer, got {value!r}", f"set --{key}=<integer>")
        if isinstance(value, int):
            return value
        if key.split(".")[-1] in _COUNT_FIELDS and isinstance(value, (str, float)):
            from llmctl.units import parse_count

            number = parse_count(value, key)
            if number == int(number):
                return int(number)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise LlmctlError(f"{key} must be an integer, got {value!r}", f"set --{key}=<integer>")
    if annotation is float:
        if isinstance(value, bool):
            raise LlmctlError(f"{key} must be a number, got {value!r}", f"set --{key}=<number>")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise LlmctlError(f"{key} must be a number, got {value!r}", f"set --{key}=<number>, e.g. 3e-4")
    if annotation is str:
        if isinstance(value, (datetime.date, datetime.time)):
            return value.isoformat()  # a YAML file's `name: 2024-01-01` means the text
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            text = str(value)
            return os.path.expanduser(text) if key in _PATH_FIELDS else text
        raise LlmctlError(f"{key} must be a string, got {value!r}", f"set --{key}=<text>")
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build_section(cls: type, values: dict[str, Any], section: str, base: Any = None) -> Any:
    hints = _hints(cls)
    names = [f.name for f in fields(cls)]
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            raise LlmctlError(f"unknown config key '{section}.{key}'", _closest(key, names))
        checked[key] = _coerce(value, hints[key], f"{section}.{key}")
    return replace(base, **checked) if base is not None else cls(**checked)


def model_from_preset(name: str) -> ModelConfig:
    """The ModelConfig of a named preset; unknown names list the known ones."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, list(PRESETS), n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise LlmctlError(f"unknown model preset '{name}'", f"{hint}known presets: {', '.join(PRESETS)}")
    return ModelConfig(preset=name, **PRESETS[name])


def model_config_from_hf(config: dict[str, Any]) -> tuple[ModelConfig, str]:
    """(ModelConfig, architecture name) for a HF config.json; LlmctlError naming the unsupported feature.

    Pure data, no torch: `flops estimate --model DIR` and `budget` read a model directory with it.
    """
    fields, arch = model_fields_from_hf(config)
    return ModelConfig(**fields), arch


def _build_model(values: Any) -> ModelConfig:
    if isinstance(values, str):
        return model_from_preset(values)
    if not isinstance(values, dict):
        raise LlmctlError(f"model must be a preset name or a mapping, got {values!r}", "write model: tiny")
    values = dict(values)
    base = None
    preset = values.pop("preset", None)
    if isinstance(preset, OverrideText):
        preset = preset.text
    if preset:
        # A preset's vocab_size is a planning figure: training takes the tokenizer's unless the config sets one.
        base = replace(model_from_preset(str(preset)), vocab_size=None)
    model = _build_section(ModelConfig, values, "model", base)
    return model


def _require_positive_or_unset(values: dict[str, float | int | None]) -> None:
    """Each dotted key's value is None (unset) or positive; else an error naming the key."""
    for key, value in values.items():
        if value is not None and value <= 0:
            raise LlmctlError(
                f"{key} must be positive, got {value}", f"remove --{key} or give a positive value"
            )


def validate(cfg: Config) -> Config:
    """Reject impossible combinations, naming the key to change."""
    m = cfg.model
    positive = {
        "model.vocab_size": m.vocab_size if m.vocab_size is not None else 1,
        "model.dim": m.dim,
        "model.n_layers": m.n_layers,
        "model.n_heads": m.n_heads,
        "model.kv_heads": m.kv_heads,
        "model.max_seq_len": m.max_seq_len,
        "data.seq_len": cfg.data.seq_len,
        "train.micro_batch_size": cfg.train.micro_batch_size,
        "train.steps": cfg.train.steps,
        "model.multiple_of": m.multiple_of,
    }
    for key, value in positive.items():
        if value <= 0:
            raise LlmctlError(f"{key} must be positive, got {value}", f"set --{key}=<positive integer>")
    if m.head_dim is not None and m.head_dim <= 0:
        raise LlmctlError(
            f"model.head_dim must be positive, got {m.head_dim}", "remove it to use dim / n_heads"
        )
    if m.head_dim is None and m.dim % m.n_heads:
        raise LlmctlError(
            f"model.n_heads={m.n_heads} does not divide model.dim={m.dim}",
            f"choose n_heads among {[h for h in range(1, 65) if m.dim % h == 0][-6:]} or change dim",
        )
    if m.n_heads % m.kv_heads:
        raise LlmctlError(
            f"model.n_kv_heads={m.kv_heads} does not divide model.n_heads={m.n_heads}",
            f"choose n_kv_heads among {[h for h in range(1, m.n_heads + 1) if m.n_heads % h == 0]}",
        )
    if m.head_size % 2:
        raise LlmctlError(
            f"head_dim = {m.head_size} must be even for RoPE", "change dim, n_heads or head_dim"
        )
    _require_positive_or_unset(
        {
            "model.sliding_window": m.sliding_window,
            "model.attn_scalar": m.attn_scalar,
            "model.rope_local_theta": m.rope_local_theta,
        }
    )
    if m.sliding_window_pattern < 0:
        raise LlmctlError(
            f"model.sliding_window_pattern must be 0 or more, got {m.sliding_window_pattern}",
            "0 windows every layer; n makes every n-th layer global",
        )
    if m.ffn_dim is not None and m.ffn_dim <= 0:
        raise LlmctlError(
            f"model.ffn_dim must be positive, got {m.ffn_dim}", "remove it to use the Llama rule"
        )
    if cfg.data.seq_len > m.max_seq_len:
        raise LlmctlError(
            f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={m.max_seq_len}",
            f"set --model.max_seq_len={cfg.data.seq_len} or a shorter --data.seq_len",
        )
    if cfg.data.path is not None and cfg.data.sources:
        raise LlmctlError(
            "data.path and data.sources are both set",
            "give one source as data.path, or every source in data.sources",
        )
    if cfg.data.sources:
        from llmctl.data_sources import specs_from_config

        specs_from_config(None, cfg.data.sources)  # entries and weights checked before any data is read
    o = cfg.optim
    if o.lr <= 0 or o.min_lr < 0 or o.min_lr > o.lr:
        raise LlmctlError(
            f"need 0 <= optim.min_lr <= optim.lr and lr > 0, got lr={o.lr}, min_lr={o.min_lr}",
            "fix optim.lr / optim.min_lr",
        )
    if o.muon_lr <= 0 or not 0 <= o.muon_momentum < 1:
        raise LlmctlError(
            f"need optim.muon_lr > 0 and 0 <= optim.muon_momentum < 1, got {o.muon_lr}, {o.muon_momentum}",
            "e.g. --optim.muon_lr=0.02 --optim.muon_momentum=0.95",
        )
    if o.name == "muon" and cfg.dist.strategy == "fsdp":
        raise LlmctlError(
            "optim.name=muon does not support dist.strategy=fsdp: Muon orthogonalizes whole matrices, "
            "and FSDP2 shards them",
            "use --dist.strategy=ddp, or --optim.name=adamw with FSDP",
        )
    if not 0 <= o.decay_fraction <= 1:
        raise LlmctlError(
            f"optim.decay_fraction must be in [0, 1], got {o.decay_fraction}",
            "e.g. --optim.decay_fraction=0.2",
        )
    if o.warmup_steps < 0 or o.weight_decay < 0 or o.grad_clip < 0:
        raise LlmctlError(
            "optim.warmup_steps, weight_decay and grad_clip must not be negative", "fix the negative value"
        )
    t = cfg.train
    if t.global_batch_tokens is not None and t.global_batch_size is not None:
        raise LlmctlError(
            "set either train.global_batch_tokens or train.global_batch_size, not both", "drop one of them"
        )
    _require_positive_or_unset(
        {
            "train.max_tokens": t.max_tokens,
            "train.time_limit": t.time_limit,
            "train.global_batch_tokens": t.global_batch_tokens,
            "train.global_batch_size": t.global_batch_size,
        }
    )
    _validate_lora(cfg.lora)
    if cfg.lora.quantize != "none" and cfg.dist.strategy == "fsdp":
        # torchao's NF4 tensor shards only where each of its packed parts divides by the world size, and the
        # sharded 4-bit checkpoint path is untested: DDP (each rank holds the 4-bit base) is what runs.
        raise LlmctlError(
            f"lora.quantize={cfg.lora.quantize} (QLoRA) does not run under dist.strategy=fsdp",
            "use --dist.strategy=ddp under torchrun (each GPU holds the 4-bit base), or one GPU; "
            "FSDP2 runs LoRA without --lora.quantize",
        )
    if cfg.telemetry.interval <= 0:
        raise LlmctlError(
            f"telemetry.interval must be positive, got {cfg.telemetry.interval}",
            "e.g. --telemetry.interval=1",
        )
    return cfg


def _validate_lora(lora: LoRAConfig) -> None:
    if lora.rank < 0:
        raise LlmctlError(f"lora.rank must not be negative, got {lora.rank}", "e.g. --lora.rank=8 (0: off)")
    if lora.alpha <= 0:
        raise LlmctlError(f"lora.alpha must be positive, got {lora.alpha}", "e.g. --lora.alpha=16")
    if not 0 <= lora.dropout < 1:
        raise LlmctlError(f"lora.dropout must be in [0, 1), got {lora.dropout}", "e.g. --lora.dropout=0.05")
    if lora.quantize != "none" and lora.rank <= 0:
        raise LlmctlError(
            f"lora.quantize={lora.quantize} stores a frozen base for adapters, and lora.rank is 0",
            "add --lora.rank R (e.g. --lora.rank=16), or drop --lora.quantize",
        )
    lora_target_names(lora.targets)


def parse_overrides(args: list[str], *, keep_text: bool = False) -> dict[str, Any]:
    """`["--optim.lr=3e-4", "--train.steps", "200"]` -> {"optim.lr": 3e-4, "train.steps": 200}.

    Values are parsed as YAML scalars (so `true`, `200`, `[a, b]` work); `--model=124m` names a preset.
    With `keep_text`, each value is an OverrideText, so string fields get the text as typed (what
    `load_config` does with a list).
    """
    import yaml

    result: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise LlmctlError(
                f"unexpected argument '{arg}'",
                "overrides look like --section.key=value, e.g. --optim.lr=3e-4",
            )
        key, has_value, value = arg[2:].partition("=")
        if not has_value:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        key = key.replace("-", "_")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        result[key] = OverrideText(value, parsed) if keep_text else parsed
        i += 1
    return result


def _read_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LlmctlError(f"config file not found: {p}", "check the path given to -c/--config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        problem, line = _yaml_problem(exc)
        where = f" at line {line}" if line else ""
        raise LlmctlError(f"{p} is not valid YAML: {problem}", f"fix the YAML syntax{where}") from exc
    if not isinstance(data, dict):
        raise LlmctlError(
            f"{p} must hold a mapping of sections (model:, optim:, ...)", "see examples/configs/"
        )
    return data


def build_config(layers: list[dict[str, Any]]) -> Config:
    """Merge nested mappings (lowest precedence first) into a validated Config."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for section, values in layer.items():
            if section not in SECTIONS:
                raise LlmctlError(f"unknown config section '{section}'", _closest(section, list(SECTIONS)))
            if section == "model" and isinstance(values, str):
                merged["model"] = {"preset": values}
                continue
            if values is None:
                continue
            if not isinstance(values, dict):
                raise LlmctlError(
                    f"config section '{section}' must be a mapping, got {values!r}",
                    f"write {section}: {{key: value}}",
                )
            if section == "model" and "preset" in values:
                # A new preset replaces everything set before it in lower layers.
                merged["model"] = {}
            merged.setdefault(section, {}).update(values)
    kwargs: dict[str, Any] = {}
    for section, values in merged.items():
        if section == "model":
            kwargs["model"] = _build_model(values)
        else:
            kwargs[section] = _build_section(SECTIONS[section], values, section)
    return validate(Config(**kwargs))


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"optim.lr": 1} -> {"optim": {"lr": 1}}; a bare `model` key is a preset name."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        section, dot, name = key.partition(".")
        if not dot:
            if section == "model":
                nested.setdefault("model", {})["preset"] = value
                continue
            if section in SECTIONS:
                raise LlmctlError(f"'--{section}' needs a key", f"write --{section}.<key>=<value>")
            raise LlmctlError(f"unknown option '--{key}'", _closest(key, list(SECTIONS)))
        if section not in SECTIONS:
            raise LlmctlError(
                f"unknown config section '{section}' in --{key}", _closest(section, list(SECTIONS))
            )
        nested.setdefault(section, {})[name] = value
    return nested


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None
) -> Config:
    """Defaults < YAML file < overrides; returns a validated, frozen Config.

    `overrides` is either command-line text (`["--optim.lr=3e-4"]`, read as YAML scalars except for string
    fields) or a dict of dotted keys to typed values, used as they are: what the CLI builds from its flags,
    so `--out 2024-01-01` stays a name. A dict may hold OverrideText values from `parse_overrides`.
    """
    layers: list[dict[str, Any]] = []
    if path is not None:
        layers.append(_read_yaml(Path(os.path.expanduser(str(path)))))
    if overrides:
        flat = parse_overrides(overrides, keep_text=True) if isinstance(overrides, list) else overrides
        layers.append(nest(flat))
    return build_config(layers)


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dict of the resolved config, for config.yaml, checkpoints and tracker params.

    Credentials in `telemetry.mlflow_uri` (`http://user:pw@host`) are redacted: what is recorded gets
    shared; the sink connects with the value in `cfg`.
    """
    from llmctl.redact import redact_uri

    data = dataclasses.asdict(cfg)
    if data["telemetry"].get("mlflow_uri"):
        data["telemetry"]["mlflow_uri"] = redact_uri(data["telemetry"]["mlflow_uri"])
    return data


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML text, loadable again by load_config."""
    import yaml

    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict[str, Any]) -> Config:
    """Inverse of to_dict (used when loading a checkpoint's config)."""
    return build_config([data])


def _yaml_problem(exc: Exception) -> tuple[str, int | None]:
    """A YAML error on one line with where it is (`line 3, column 1: expected ',' or ']' ...`), and its line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return str(exc).splitlines()[0], None
    text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} started at line {context_mark.line + 1})"
    return text, mark.line + 1
