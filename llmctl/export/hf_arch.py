"""Which Hugging Face architectures llmctl's model can hold, and how their config and weights map onto it.

    cfg, arch = model_config_from_hf(json.loads(Path("config.json").read_text()))
    state = from_hf_state_dict(hf_tensors, cfg)        # names of llmctl.model.llama, interleaved RoPE

Supported: LlamaForCausalLM (Llama 2/3.x, `llama3` RoPE scaling, tied embeddings; SmolLM2),
Qwen2ForCausalLM (QKV bias, tied or untied) and MistralForCausalLM without an active sliding window.
Everything else is refused with an error listing these, never converted approximately.
The RoPE row order is the inverse of the export's (llmctl/export/hf.py): HF's rotate_half halves are
turned back into interleaved pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.config import ModelConfig
from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    import torch

SUPPORTED = {
    "LlamaForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "MistralForCausalLM": "mistral",
}
SUPPORTED_TEXT = (
    "LlamaForCausalLM (Llama 2/3.x, SmolLM2), Qwen2ForCausalLM (Qwen2/2.5) and MistralForCausalLM "
    "without an active sliding window"
)


def _refuse(what: str) -> LlmctlError:
    return LlmctlError(f"cannot import this model: {what}", f"llmctl's model supports {SUPPORTED_TEXT}")


def _rope(config: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """(theta, scaling dict or {}) from transformers v4 (`rope_theta`, `rope_scaling`) or v5 (`rope_parameters`)."""
    params = config.get("rope_parameters") or {}
    scaling = dict(config.get("rope_scaling") or params or {})
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    return float(theta), scaling


def model_config_from_hf(config: dict[str, Any]) -> tuple[ModelConfig, str]:
    """(ModelConfig, architecture name) for a HF config.json; LlmctlError naming the unsupported feature."""
    archs = config.get("architectures") or []
    arch = archs[0] if archs else None
    if arch not in SUPPORTED:
        raise _refuse(f"architecture {arch or 'unknown'} (model_type {config.get('model_type')})")
    family = SUPPORTED[arch]
    for key in ("num_experts", "num_local_experts", "n_routed_experts"):
        if config.get(key):
            raise _refuse(f"mixture of experts ({key}={config[key]})")
    if config.get("hidden_act", "silu") != "silu":
        raise _refuse(f"activation {config['hidden_act']} (llmctl uses SwiGLU with silu)")
    if config.get("mlp_bias"):
        raise _refuse("MLP biases (mlp_bias=true)")
    window = config.get("sliding_window")
    max_len = int(config.get("max_position_embeddings") or 2048)
    active = config.get("use_sliding_window", family == "mistral")
    if window is not None and active and int(window) < max_len:
        raise _refuse(f"an active sliding window of {window} tokens (max_position_embeddings {max_len})")
    dim, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    head_dim = config.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != dim:
        raise _refuse(f"head_dim {head_dim} x {heads} heads != hidden_size {dim}")
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
        raise _refuse(f"RoPE scaling type {rope_type!r} (supported: none, llama3)")
    qkv_bias = family == "qwen2" or bool(config.get("attention_bias"))
    cfg = ModelConfig(
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
        **extra,
    )
    return cfg, arch


def permute_from_rotate_half(weight: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of export's permute_for_rotate_half: HF's halves (i, i + d/2) back to pairs (2i, 2i+1)."""
    rest = weight.shape[1:]
    return weight.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(weight.shape)


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM / Qwen2 / Mistral state dict -> llmctl Transformer names (tied head left out)."""
    hf = dict(hf)

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise LlmctlError(
                f"the model's weights have no tensor '{name}'",
                "the safetensors files do not match config.json",
            )
        return hf.pop(name)

    hd = cfg.head_dim
    out: dict[str, torch.Tensor] = {"tok_embeddings.weight": take("model.embed_tokens.weight")}
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "attention_norm.weight"] = take(src + "input_layernorm.weight")
        out[dst + "attention.wq.weight"] = permute_from_rotate_half(
            take(src + "self_attn.q_proj.weight"), cfg.n_heads, hd
        )
        out[dst + "attention.wk.weight"] = permute_from_rotate_half(
            take(src + "self_attn.k_proj.weight"), cfg.kv_heads, hd
        )
        out[dst + "attention.wv.weight"] = take(src + "self_attn.v_proj.weight")
        out[dst + "attention.wo.weight"] = take(src + "self_attn.o_proj.weight")
        if cfg.qkv_bias:
            out[dst + "attention.wq.bias"] = permute_from_rotate_half(
                take(src + "self_attn.q_proj.bias"), cfg.n_heads, hd
            )
            out[dst + "attention.wk.bias"] = permute_from_rotate_half(
                take(src + "self_attn.k_proj.bias"), cfg.kv_heads, hd
            )
            out[dst + "attention.wv.bias"] = take(src + "self_attn.v_proj.bias")
        o_bias = hf.pop(src + "self_attn.o_proj.bias", None)
        if o_bias is not None and bool(o_bias.abs().max() > 0):
            raise _refuse("a non-zero bias on the attention output projection")
        out[dst + "ffn_norm.weight"] = take(src + "post_attention_layernorm.weight")
        out[dst + "feed_forward.w1.weight"] = take(src + "mlp.gate_proj.weight")
        out[dst + "feed_forward.w3.weight"] = take(src + "mlp.up_proj.weight")
        out[dst + "feed_forward.w2.weight"] = take(src + "mlp.down_proj.weight")
    out["norm.weight"] = take("model.norm.weight")
    head = hf.pop("lm_head.weight", None)
    if not cfg.tied_embeddings:
        if head is None:
            raise LlmctlError(
                "the model's weights have no lm_head.weight", "config.json says the head is untied"
            )
        out["output.weight"] = head
    leftover = sorted(k for k in hf if not k.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise _refuse(f"tensors llmctl's model has no place for: {', '.join(leftover[:5])}")
    return out
