"""Which Hugging Face architectures llmctl's model can hold, and how their config and weights map onto it.

    cfg, arch = model_config_from_hf(json.loads(Path("config.json").read_text()))
    state = from_hf_state_dict(hf_tensors, cfg)        # names of llmctl.model.llama, interleaved RoPE

Supported: LlamaForCausalLM (Llama 2/3.x, `llama3` RoPE scaling, tied embeddings; SmolLM2),
Qwen2ForCausalLM (QKV bias, tied or untied), Qwen3ForCausalLM (dense: per-head QK-norm, head_dim apart from
hidden_size), Olmo2ForCausalLM (QK-norm over the projections, norms after attention and MLP) and
MistralForCausalLM (with its sliding window on every layer) and Gemma3ForCausalLM (text; GeGLU, norms
before and after each sublayer, (1 + weight) norms, embeddings times sqrt(dim), five windowed layers to one
global with their own RoPE bases).
Everything else is refused with an error listing these, never converted approximately: whether a folder is
supported is decided from config.json alone (`check_hf_config`), before transformers sees any of it, and a
config with `auto_map` (a model's own Python code) is always refused.
The RoPE row order is the inverse of the export's (llmctl/export/hf.py): HF's rotate_half halves are
turned back into interleaved pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmctl.config import ModelConfig, model_config_from_hf
from llmctl.errors import LlmctlError
from llmctl.presets import SUPPORTED, SUPPORTED_TEXT, refuse_model

if TYPE_CHECKING:
    import torch

_SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def _invalid_config(what: str) -> LlmctlError:
    return LlmctlError(
        f"config.json is not a valid Hugging Face model config: {what}",
        "the model folder is damaged or not a transformers model; download it again",
    )


def check_hf_config(config: Any) -> tuple[ModelConfig, str]:
    """(ModelConfig, architecture) for a parsed config.json, or an error: the only door into an import.

    Refuses anything llmctl would hand to transformers' remote-code path (`auto_map`, a `model_type` that is
    not the architecture's own), more than one architecture, and shapes that cannot make a model.
    """
    if not isinstance(config, dict):
        raise _invalid_config(f"a JSON {type(config).__name__}, not an object")
    if "auto_map" in config:
        raise LlmctlError(
            "cannot import this model: its config.json has auto_map (the model's own Python code), and llmctl "
            "never runs a model's own code",
            f"llmctl imports only standard transformers architectures: {SUPPORTED_TEXT}",
        )
    archs = config.get("architectures")
    if not isinstance(archs, list) or len(archs) != 1 or not isinstance(archs[0], str):
        raise refuse_model(f"architectures {archs!r} (exactly one architecture name expected)")
    try:
        cfg, arch = model_config_from_hf(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise _invalid_config(f"{type(exc).__name__}: {exc}") from exc
    if config.get("model_type") != SUPPORTED[arch]:
        raise refuse_model(
            f"model_type {config.get('model_type')!r} with architecture {arch} (expected {SUPPORTED[arch]!r})"
        )
    for key in (*_SHAPE_KEYS, "num_key_value_heads"):
        value = config.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _invalid_config(f"{key} is {value!r}, not a positive integer")
    if (cfg.head_dim is None and cfg.dim % cfg.n_heads) or cfg.n_heads % cfg.kv_heads or cfg.head_size % 2:
        raise _invalid_config(
            f"hidden_size {cfg.dim}, {cfg.n_heads} heads and {cfg.kv_heads} key/value heads do not divide evenly"
        )
    return cfg, arch


LAYOUTS: dict[str, tuple[Any, ...]] = {
    "LlamaForCausalLM": ("none", "pre", "silu", False, False),
    "Qwen2ForCausalLM": ("none", "pre", "silu", False, False),
    "MistralForCausalLM": ("none", "pre", "silu", False, False),
    "Qwen3ForCausalLM": ("head", "pre", "silu", False, False),
    "Olmo2ForCausalLM": ("proj", "post", "silu", False, False),
    "Gemma3ForCausalLM": ("head", "sandwich", "gelu_tanh", True, True),
}
"""What each architecture's blocks hold (block_layout): a model is written only under its own."""


def block_layout(cfg: ModelConfig) -> tuple[Any, ...]:
    """(qk_norm, norm_placement, activation, scale_embeddings, norm_unit_offset): what must equal an
    architecture's LAYOUTS entry for transformers to compute the same function."""
    return (cfg.qk_norm, cfg.norm_placement, cfg.activation, cfg.scale_embeddings, cfg.norm_unit_offset)


def unsupported_options(cfg: ModelConfig, architecture: str) -> str | None:
    """The option of `cfg` (window, attention scale, per-layer RoPE) `architecture` has no config.json key
    for, or None. (RoPE scaling is transformers' shared `rope_parameters`, which every architecture reads.)"""
    if architecture == "Gemma3ForCausalLM":
        return None
    if cfg.sliding_window is not None and (
        architecture != "MistralForCausalLM" or cfg.sliding_window_pattern
    ):
        return f"sliding_window={cfg.sliding_window} with sliding_window_pattern={cfg.sliding_window_pattern}"
    for key in ("attn_scalar", "rope_local_theta"):
        if getattr(cfg, key) is not None:
            return f"{key}={getattr(cfg, key)}"
    return None


def _whole(x: float) -> int | float:
    # Gemma3TextConfig (transformers 5, strict) takes query_pre_attn_scalar as an int.
    return int(x) if float(x).is_integer() else x


def gemma3_config(base: dict[str, Any], cfg: ModelConfig) -> dict[str, Any]:
    """config.json for Gemma3ForCausalLM (Gemma3TextConfig) from the Llama-style `base`: its activation,
    attention scale, layer types and per-layer-type RoPE, both as transformers v5 (`rope_parameters` per
    layer type) and v4 (`rope_theta`, `rope_local_base_freq`, `rope_scaling`, `sliding_window_pattern`) read them."""
    out = {k: v for k, v in base.items() if k not in ("hidden_act", "mlp_bias", "rope_scaling")}
    full = {k: v for k, v in base["rope_parameters"].items() if k != "rope_theta"}
    if cfg.rope_scaling == "llama3":
        raise LlmctlError(
            "Gemma3ForCausalLM cannot hold llama3 RoPE scaling", "Gemma 3 takes linear or yarn scaling"
        )
    local_theta = cfg.rope_local_theta if cfg.rope_local_theta is not None else cfg.rope_theta
    types = ["sliding_attention" if cfg.is_windowed(i) else "full_attention" for i in range(cfg.n_layers)]
    out |= {
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": _whole(cfg.attn_scalar) if cfg.attn_scalar is not None else cfg.head_size,
        "sliding_window": cfg.sliding_window,
        "layer_types": types,
        "rope_local_base_freq": local_theta,
        "rope_scaling": full if cfg.rope_scaling != "none" else None,
        "rope_parameters": {
            "full_attention": {**full, "rope_theta": cfg.rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": local_theta},
        },
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "use_bidirectional_attention": False,
    }
    if cfg.sliding_window is not None and cfg.sliding_window_pattern:
        out["sliding_window_pattern"] = cfg.sliding_window_pattern
    return out


def norm_names(cfg: ModelConfig) -> tuple[str, str]:
    """HF names of a layer's two norms, holding llmctl's attention_norm and ffn_norm: the input norms for
    pre-norm (Llama), the norms after attention and MLP for post-norm (OLMo 2)."""
    if cfg.norm_placement == "post":
        return "post_attention_layernorm", "post_feedforward_layernorm"
    if cfg.norm_placement == "sandwich":
        return "input_layernorm", "pre_feedforward_layernorm"
    return "input_layernorm", "post_attention_layernorm"


def sandwich_norms(cfg: ModelConfig) -> tuple[tuple[str, str], ...]:
    """(llmctl name, HF name) of the norms after attention and MLP that only a sandwich block (Gemma 3) has."""
    if cfg.norm_placement != "sandwich":
        return ()
    return (
        ("attention_post_norm", "post_attention_layernorm"),
        ("ffn_post_norm", "post_feedforward_layernorm"),
    )


def qk_norm_heads(cfg: ModelConfig) -> tuple[int, int]:
    """Heads in the q_norm and k_norm weights, for the RoPE row permutation: 1 when one head_dim vector is
    shared by the heads (Qwen3), the projection's heads when it spans them (OLMo 2)."""
    return (1, 1) if cfg.qk_norm == "head" else (cfg.n_heads, cfg.kv_heads)


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape for a model of `cfg` (lm_head only when untied, biases only with qkv_bias)."""
    q, kv, dim, ffn = cfg.n_heads * cfg.head_size, cfg.kv_heads * cfg.head_size, cfg.dim, cfg.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (cfg.vocab_size, dim),
        "model.norm.weight": (dim,),
    }
    first, second = norm_names(cfg)
    qn, kn = qk_norm_heads(cfg)
    for i in range(cfg.n_layers):
        p = f"model.layers.{i}."
        if cfg.qk_norm != "none":
            shapes |= {
                p + "self_attn.q_norm.weight": (q // cfg.n_heads * qn,),
                p + "self_attn.k_norm.weight": (kv // cfg.kv_heads * kn,),
            }
        shapes |= {p + f"{hf_name}.weight": (dim,) for _, hf_name in sandwich_norms(cfg)}
        shapes |= {
            p + f"{first}.weight": (dim,),
            p + f"{second}.weight": (dim,),
            p + "self_attn.q_proj.weight": (q, dim),
            p + "self_attn.k_proj.weight": (kv, dim),
            p + "self_attn.v_proj.weight": (kv, dim),
            p + "self_attn.o_proj.weight": (dim, q),
            p + "self_attn.o_proj.bias": (dim,),
            p + "mlp.gate_proj.weight": (ffn, dim),
            p + "mlp.up_proj.weight": (ffn, dim),
            p + "mlp.down_proj.weight": (dim, ffn),
        }
        if cfg.qkv_bias:
            shapes |= {
                p + "self_attn.q_proj.bias": (q,),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.bias": (kv,),
            }
    shapes["lm_head.weight"] = (cfg.vocab_size, dim)
    return shapes


def check_tensors(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """Every tensor llmctl knows must have config.json's shape, a float dtype and only finite values."""
    import torch

    shapes = expected_shapes(cfg)
    for name, tensor in hf.items():
        want = shapes.get(name)
        if want is not None and tuple(tensor.shape) != want:
            raise LlmctlError(
                f"the model's tensor {name} has shape {list(tensor.shape)}, but config.json makes it {list(want)}",
                "the safetensors files do not match config.json; download the model again",
            )
        if want is not None and not tensor.is_floating_point():
            raise LlmctlError(
                f"the model's tensor {name} holds {str(tensor.dtype).removeprefix('torch.')}, not floating point",
                "the safetensors files are not this model's weights",
            )
        if want is not None and not bool(torch.isfinite(tensor).all()):
            raise LlmctlError(
                f"the model's tensor {name} holds NaN or infinite values",
                "the weights are damaged (or were saved from a diverged run); download the model again",
            )


def permute_from_rotate_half(weight: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Inverse of export's permute_for_rotate_half: HF's halves (i, i + d/2) back to pairs (2i, 2i+1)."""
    rest = weight.shape[1:]
    return weight.reshape(n_heads, 2, head_dim // 2, *rest).transpose(1, 2).reshape(weight.shape)


def from_hf_state_dict(hf: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A LlamaForCausalLM / Qwen2 / Qwen3 / Olmo2 / Mistral state dict -> llmctl Transformer names (tied head
    left out)."""
    hf = dict(hf)

    def take(name: str) -> torch.Tensor:
        if name not in hf:
            raise LlmctlError(
                f"the model's weights have no tensor '{name}'",
                "the safetensors files do not match config.json",
            )
        return hf.pop(name)

    hd = cfg.head_size
    first, second = norm_names(cfg)
    qn, kn = qk_norm_heads(cfg)
    out: dict[str, torch.Tensor] = {"tok_embeddings.weight": take("model.embed_tokens.weight")}
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"layers.{i}."
        out[dst + "attention_norm.weight"] = take(src + f"{first}.weight")
        if cfg.qk_norm != "none":
            out[dst + "attention.q_norm.weight"] = permute_from_rotate_half(
                take(src + "self_attn.q_norm.weight"), qn, hd
            )
            out[dst + "attention.k_norm.weight"] = permute_from_rotate_half(
                take(src + "self_attn.k_norm.weight"), kn, hd
            )
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
            raise refuse_model("a non-zero bias on the attention output projection")
        out[dst + "ffn_norm.weight"] = take(src + f"{second}.weight")
        for ours, theirs in sandwich_norms(cfg):
            out[dst + f"{ours}.weight"] = take(src + f"{theirs}.weight")
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
        raise refuse_model(f"tensors llmctl's model has no place for: {', '.join(leftover[:5])}")
    return out
