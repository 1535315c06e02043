"""Named model shapes: training presets and the exact shapes of published models (for planning).

Pure data, no torch: `flops estimate` and `budget` read these without loading PyTorch.
Published shapes come from each model's released `config.json` / `params.json`.
"""

from __future__ import annotations

from typing import Any

from llmctl.errors import LlmctlError

GEMMA3_LAYOUT: dict[str, Any] = dict(
    qk_norm="head",
    norm_placement="sandwich",
    activation="gelu_tanh",
    scale_embeddings=True,
    norm_unit_offset=True,
    sliding_window=512,
    sliding_window_pattern=6,
    rope_local_theta=10000.0,
)
"""What every Gemma 3 text model shares (the window and local RoPE base are config.json's defaults)."""

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
    # Gemma 3 text models (google/gemma-3-270m, google/gemma-3-1b-pt config.json): MQA with head_dim 256,
    # per-head QK-norm, norms before and after each sublayer, GeGLU, five local (512-token window, RoPE base
    # 10k) to one global layer (base 1M), embeddings times sqrt(dim), (1 + weight) norms, tied head.
    "gemma3-270m": dict(
        vocab_size=262144,
        dim=640,
        n_layers=18,
        n_heads=4,
        n_kv_heads=1,
        head_dim=256,
        ffn_dim=2048,
        tied_embeddings=True,
        max_seq_len=32768,
        rope_theta=1000000.0,
        norm_eps=1e-6,
        **GEMMA3_LAYOUT,
    ),
    "gemma3-1b": dict(
        vocab_size=262144,
        dim=1152,
        n_layers=26,
        n_heads=4,
        n_kv_heads=1,
        head_dim=256,
        ffn_dim=6912,
        tied_embeddings=True,
        max_seq_len=32768,
        rope_theta=1000000.0,
        norm_eps=1e-6,
        **GEMMA3_LAYOUT,
    ),
}


# Hugging Face model directories: which architectures llmctl's model holds, and their config.json as a shape.
SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
    "Qwen3ForCausalLM": "qwen3",
    "Olmo2ForCausalLM": "olmo2",
    "Gemma3ForCausalLM": "gemma3_text",
}
SUPPORTED_TEXT = (
    "LlamaForCausalLM (Llama 2/3.x, SmolLM2), Qwen2ForCausalLM (Qwen2/2.5, no sliding window), "
    "Qwen3ForCausalLM (dense, no sliding window), Olmo2ForCausalLM (OLMo 2), MistralForCausalLM (with or "
    "without its sliding window) and Gemma3ForCausalLM (Gemma 3 text: 270M, 1B)"
)
# Per family: (qk_norm, norm_placement) of llmctl's decoder (config.ModelConfig).
FAMILY_LAYOUT = {"qwen3": ("head", "pre"), "olmo2": ("proj", "post"), "gemma3_text": ("head", "sandwich")}


def refuse_model(what: str) -> LlmctlError:
    """The error for a Hugging Face model llmctl's decoder cannot hold faithfully."""
    return LlmctlError(f"cannot import this model: {what}", f"llmctl's model supports {SUPPORTED_TEXT}")


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(theta, scaling dict or {}) from transformers v4 (`rope_theta`, `rope_scaling`) or v5 (`rope_parameters`)."""
    params = config.get("rope_parameters") or {}
    scaling = dict(config.get("rope_scaling") or params or {})
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    return float(theta), scaling


def _window_pattern(layer_types: list[Any], n_layers: int) -> int | None:
    """sliding_window_pattern for a `layer_types` list: 0 when every layer is windowed, n when every n-th is
    global, None when all are global; an error for any other arrangement."""
    windowed = [kind == "sliding_attention" for kind in layer_types]
    if any(kind not in ("sliding_attention", "full_attention") for kind in layer_types):
        raise refuse_model(
            f"layer types {sorted(set(map(str, layer_types)))} (llmctl: sliding_attention, full_attention)"
        )
    if len(windowed) != n_layers:
        raise ValueError(f"layer_types has {len(windowed)} entries for {n_layers} layers")
    if not any(windowed):
        return None
    pattern = 0 if all(windowed) else windowed.index(False) + 1
    if windowed != [pattern == 0 or (i + 1) % pattern != 0 for i in range(n_layers)]:
        raise refuse_model("sliding-window layers in an arrangement other than every n-th layer global")
    return pattern


def _window_fields(config: dict[str, Any], family: str, max_len: int) -> dict[str, Any]:
    """sliding_window and sliding_window_pattern of a Mistral or Gemma 3 config.json (others: none or refused)."""
    n_layers = int(config["num_hidden_layers"])
    if family == "gemma3_text":
        window = config.get("sliding_window", 4096)
        types = config.get("layer_types") or [
            "full_attention"
            if (i + 1) % int(config.get("sliding_window_pattern", 6)) == 0
            else "sliding_attention"
            for i in range(n_layers)
        ]
    elif family == "mistral":
        # MistralConfig's own default is a 4096-token window; `null` turns it off.
        window = config.get("sliding_window", 4096)
        types = ["sliding_attention"] * n_layers
    else:
        window = config.get("sliding_window")
        if window is not None and config.get("use_sliding_window", False) and int(window) < max_len:
            raise refuse_model(
                f"an active sliding window of {window} tokens in {family} (llmctl: Mistral, Gemma 3)"
            )
        if any(kind != "full_attention" for kind in config.get("layer_types") or []):
            raise refuse_model(f"sliding-window layers in {family} (llmctl: Mistral, Gemma 3)")
        return {}
    if window is None:
        return {}
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"sliding_window is {window!r}, not a positive integer")
    pattern = _window_pattern(types, n_layers)
    if pattern is None or (family == "mistral" and window >= max_len):
        return {}  # no layer is windowed, or the window holds the whole context: plain causal attention
    return {"sliding_window": window, "sliding_window_pattern": pattern}


def _gemma3_fields(config: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """The fields only Gemma 3 sets: its layout, attention scale and per-layer-type RoPE; refuses soft-capping
    and the options llmctl does not implement."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if config.get(key) is not None:
            raise refuse_model(f"{key}={config[key]} (llmctl's model has no soft-capping)")
    if config.get("use_bidirectional_attention"):
        raise refuse_model("bidirectional attention (use_bidirectional_attention=true)")
    if config.get("attention_bias"):
        raise refuse_model("attention biases in Gemma 3 (attention_bias=true)")
    act = config.get("hidden_activation", "gelu_pytorch_tanh")
    if act != "gelu_pytorch_tanh":
        raise refuse_model(f"activation {act} (llmctl: silu, gelu_pytorch_tanh)")
    params = config.get("rope_parameters") or {}
    full = dict(params.get("full_attention") or {})
    local = dict(params.get("sliding_attention") or {})
    full.update(config.get("rope_scaling") or {})
    theta = float(full.get("rope_theta", config.get("rope_theta", 1_000_000.0)))
    local_theta = float(local.get("rope_theta", config.get("rope_local_base_freq", 10_000.0)))
    if local.get("rope_type", "default") != "default":
        raise refuse_model(f"RoPE scaling {local['rope_type']!r} on the sliding-window layers")
    fields: dict[str, Any] = {"rope_theta": theta, "rope_local_theta": local_theta}
    kind = full.get("rope_type", full.get("type", "default"))
    if kind == "linear":
        fields |= {"rope_scaling": "linear", "rope_factor": float(full["factor"])}
    elif kind == "yarn":
        fields |= _yarn_fields(full, config)
    elif kind not in ("default", None):
        raise refuse_model(f"RoPE scaling type {kind!r} in Gemma 3 (supported: none, linear, yarn)")
    scalar = config.get("query_pre_attn_scalar", 256)
    if not isinstance(scalar, (int, float)) or isinstance(scalar, bool) or scalar <= 0:
        raise ValueError(f"query_pre_attn_scalar is {scalar!r}, not a positive number")
    layout = {k: GEMMA3_LAYOUT[k] for k in ("activation", "scale_embeddings", "norm_unit_offset")}
    return {**layout, **fields, "attn_scalar": None if scalar == head_dim else float(scalar)}


def _rope_fields(config: dict[str, Any]) -> dict[str, Any]:
    """rope_theta and llama3 scaling of a config.json (the families with one RoPE for every layer)."""
    theta, scaling = _rope(config)
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "llama3":
        return {
            "rope_theta": theta,
            "rope_scaling": "llama3",
            "rope_factor": float(scaling["factor"]),
            "rope_low_freq_factor": float(scaling["low_freq_factor"]),
            "rope_high_freq_factor": float(scaling["high_freq_factor"]),
            "rope_original_max_seq_len": int(scaling["original_max_position_embeddings"]),
        }
    if rope_type == "yarn":
        return {"rope_theta": theta, **_yarn_fields(scaling, config)}
    if rope_type not in ("default", None):
        raise refuse_model(f"RoPE scaling type {rope_type!r} (supported: none, llama3, yarn)")
    return {"rope_theta": theta}


def _yarn_fields(scaling: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """YaRN's numbers as transformers reads them; DeepSeek's mscale pair, partial rotary and an untruncated
    correction range are refused."""
    for key in ("mscale", "mscale_all_dim"):
        if scaling.get(key):
            raise refuse_model(f"YaRN with {key} (DeepSeek's attention factor)")
    if scaling.get("truncate", True) is not True or scaling.get("partial_rotary_factor", 1.0) != 1.0:
        raise refuse_model("YaRN with truncate=false or a partial rotary factor")
    original = int(scaling.get("original_max_position_embeddings") or config.get("max_position_embeddings"))
    factor = scaling.get("factor")
    attention = scaling.get("attention_factor")
    return {
        "rope_scaling": "yarn",
        "rope_factor": float(
            factor if factor is not None else int(config["max_position_embeddings"]) / original
        ),
        "rope_original_max_seq_len": original,
        "rope_beta_fast": float(scaling.get("beta_fast") or 32),
        "rope_beta_slow": float(scaling.get("beta_slow") or 1),
        "rope_attention_factor": None if attention is None else float(attention),
    }


def model_fields_from_hf(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(ModelConfig fields, architecture name) for a HF config.json; LlmctlError naming the unsupported
    feature. Plain data: `config.model_config_from_hf` builds the ModelConfig.
    """
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED:
        raise refuse_model(f"architecture {arch or 'unknown'} (model_type {config.get('model_type')})")
    family = SUPPORTED[arch]
    gemma = family == "gemma3_text"
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if config.get(key):
            raise refuse_model(f"mixture of experts ({key}={config[key]})")
    if not gemma and config.get("hidden_act", "silu") != "silu":
        raise refuse_model(f"activation {config['hidden_act']} (llmctl uses SwiGLU with silu)")
    if config.get("mlp_bias"):
        raise refuse_model("MLP biases (mlp_bias=true)")
    max_len = int(config.get("max_position_embeddings") or (131072 if gemma else 2048))
    dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    # Qwen3's and Gemma 3's config classes default head_dim to 128 and 256 when config.json leaves it out;
    # the others to dim / heads.
    head_dim = config.get("head_dim", {"qwen3": 128, "gemma3_text": 256}.get(family))
    if head_dim is not None and (not isinstance(head_dim, int) or isinstance(head_dim, bool) or head_dim < 1):
        raise ValueError(f"head_dim is {head_dim!r}, not a positive integer")
    extra = _window_fields(config, family, max_len)
    extra |= _gemma3_fields(config, head_dim) if gemma else _rope_fields(config)
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
        tied_embeddings=bool(config.get("tie_word_embeddings", gemma)),
        qkv_bias=qkv_bias,
        max_seq_len=max_len,
        norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        head_dim=head_dim,
        qk_norm=qk_norm,
        norm_placement=placement,
        **extra,
    )
    return fields, arch
