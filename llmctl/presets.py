"""Named model shapes: training presets and the exact shapes of published models (for planning).

Pure data, no torch: `flops estimate` and `budget` read these without loading PyTorch.
Published shapes come from each model's released `config.json` / `params.json`.
"""

from __future__ import annotations

from typing import Any

from llmctl.errors import LlmctlError

# Each entry is a partial ModelConfig: fields left out take ModelConfig's defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # About 1M parameters: the unit-test model.
    "tiny": dict(
        vocab_size=8192, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, multiple_of=32, max_seq_len=256
    ),
    "10m": dict(
        vocab_size=8192, dim=256, n_layers=6, n_heads=4, n_kv_heads=4, multiple_of=64, max_seq_len=512
    ),
    "50m": dict(vocab_size=32768, dim=512, n_layers=8, n_heads=8, n_kv_heads=8, max_seq_len=1024),
    # GPT-2 small's body (12 x 768, 12 heads) in Llama form.
    "124m": dict(vocab_size=50304, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, max_seq_len=1024),
    "350m": dict(vocab_size=50304, dim=1024, n_layers=24, n_heads=16, n_kv_heads=16, max_seq_len=1024),
    "1b": dict(vocab_size=50304, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, max_seq_len=2048),
    # Published shapes, for planning.
    "llama2-7b": dict(
        vocab_size=32000,
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=32,
        multiple_of=256,
        max_seq_len=4096,
        rope_theta=10000.0,
        norm_eps=1e-5,
    ),
    "llama3-8b": dict(
        vocab_size=128256,
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        multiple_of=1024,
        ffn_dim_multiplier=1.3,
        max_seq_len=8192,
        rope_theta=500000.0,
        norm_eps=1e-5,
    ),
    "llama3.2-1b": dict(
        vocab_size=128256,
        dim=2048,
        n_layers=16,
        n_heads=32,
        n_kv_heads=8,
        multiple_of=256,
        ffn_dim_multiplier=1.5,
        tied_embeddings=True,
        max_seq_len=131072,
        rope_theta=500000.0,
        norm_eps=1e-5,
    ),
    "qwen2.5-0.5b": dict(
        vocab_size=151936,
        dim=896,
        n_layers=24,
        n_heads=14,
        n_kv_heads=2,
        ffn_dim=4864,
        tied_embeddings=True,
        qkv_bias=True,
        max_seq_len=32768,
        rope_theta=1000000.0,
        norm_eps=1e-6,
    ),
    # Qwen3 dense: head_dim 128 apart from hidden_size / heads, per-head QK-norm, no biases.
    "qwen3-0.6b": dict(
        vocab_size=151936,
        dim=1024,
        n_layers=28,
        n_heads=16,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=3072,
        tied_embeddings=True,
        qk_norm="head",
        max_seq_len=40960,
        rope_theta=1000000.0,
        norm_eps=1e-6,
    ),
    "qwen3-1.7b": dict(
        vocab_size=151936,
        dim=2048,
        n_layers=28,
        n_heads=16,
        n_kv_heads=8,
        head_dim=128,
        ffn_dim=6144,
        tied_embeddings=True,
        qk_norm="head",
        max_seq_len=40960,
        rope_theta=1000000.0,
        norm_eps=1e-6,
    ),
    # OLMo-2-0425-1B: QK-norm over the whole projections, norms after attention and MLP, untied head.
    "olmo2-1b": dict(
        vocab_size=100352,
        dim=2048,
        n_layers=16,
        n_heads=16,
        n_kv_heads=16,
        ffn_dim=8192,
        qk_norm="proj",
        norm_placement="post",
        max_seq_len=4096,
        rope_theta=500000.0,
        norm_eps=1e-6,
    ),
}


# Hugging Face model directories: which architectures llmctl's model holds, and their config.json as a shape.
SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
    "Qwen3ForCausalLM": "qwen3",
    "Olmo2ForCausalLM": "olmo2",
}
SUPPORTED_TEXT = (
    "LlamaForCausalLM (Llama 2/3.x, SmolLM2), Qwen2ForCausalLM (Qwen2/2.5), Qwen3ForCausalLM (dense), "
    "Olmo2ForCausalLM (OLMo 2) and MistralForCausalLM, without an active sliding window"
)
# Per family: (qk_norm, norm_placement) of llmctl's decoder (config.ModelConfig).
FAMILY_LAYOUT = {"qwen3": ("head", "pre"), "olmo2": ("proj", "post")}


def refuse_model(what: str) -> LlmctlError:
    """The error for a Hugging Face model llmctl's decoder cannot hold faithfully."""
    return LlmctlError(f"cannot import this model: {what}", f"llmctl's model supports {SUPPORTED_TEXT}")


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(theta, scaling dict or {}) from transformers v4 (`rope_theta`, `rope_scaling`) or v5 (`rope_parameters`)."""
    params = config.get("rope_parameters") or {}
    scaling = dict(config.get("rope_scaling") or params or {})
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    return float(theta), scaling


def model_fields_from_hf(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(ModelConfig fields, architecture name) for a HF config.json; LlmctlError naming the unsupported
    feature. Plain data: `config.model_config_from_hf` builds the ModelConfig.
    """
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED:
        raise refuse_model(f"architecture {arch or 'unknown'} (model_type {config.get('model_type')})")
    family = SUPPORTED[arch]
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if config.get(key):
            raise refuse_model(f"mixture of experts ({key}={config[key]})")
    if config.get("hidden_act", "silu") != "silu":
        raise refuse_model(f"activation {config['hidden_act']} (llmctl uses SwiGLU with silu)")
    if config.get("mlp_bias"):
        raise refuse_model("MLP biases (mlp_bias=true)")
    window = config.get("sliding_window")
    max_len = int(config.get("max_position_embeddings") or 2048)
    active = config.get("use_sliding_window", family == "mistral")
    if window is not None and active and int(window) < max_len:
        raise refuse_model(f"an active sliding window of {window} tokens (max_position_embeddings {max_len})")
    if any(kind != "full_attention" for kind in config.get("layer_types") or []):
        raise refuse_model("sliding-window layers (layer_types other than full_attention)")
    dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    # Qwen3's config class defaults head_dim to 128 when config.json leaves it out; the others to dim / heads.
    head_dim = config.get("head_dim", 128 if family == "qwen3" else None)
    if head_dim is not None and (not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 1):
        raise ValueError(f"head_dim is {head_dim!r}, not a positive integer")
    theta, scaling = _rope(config)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    extra: dict[str, Any] = {}
    if rope_type == "llama3":
        extra = {
            "rope_scaling": "llama3",
            "rope_factor": float(scaling["factor"]),
            "rope_low_freq_factor": float(scaling["low_freq_factor"]),
            "rope_high_freq_factor": float(scaling["high_freq_factor"]),
            "rope_original_max_seq_len": int(scaling["original_max_position_embeddings"]),
        }
    elif rope_type not in ("default", None):
        raise refuse_model(f"RoPE scaling type {rope_type!r} (supported: none, llama3)")
    qkv_bias = family == "qwen2" or bool(config.get("attention_bias"))
    qk_norm, placement = FAMILY_LAYOUT.get(family, ("none", "pre"))
    if head_dim is not None and head_dim * heads == dim:
        head_dim = None  # the default: a model that matches llmctl's own shapes keeps None
    fields = dict(
        preset=None,
        vocab_size=int(config["vocab_size"]),
        dim=dim,
        n_layers=int(config["num_hidden_layers"]),
        n_heads=heads,
        n_kv_heads=int(config.get("num_key_value_heads") or heads),
        ffn_dim=int(config["intermediate_size"]),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        max_seq_len=max_len,
        rope_theta=theta,
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        head_dim=head_dim,
        qk_norm=qk_norm,
        norm_placement=placement,
        **extra,
    )
    return fields, arch
