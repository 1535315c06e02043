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

from typing import TYPE_CHECKING

from llmctl.config import ModelConfig
from llmctl.errors import LlmctlError
from llmctl.presets import SUPPORTED, SUPPORTED_TEXT, model_config_from_hf, refuse_model  # noqa: F401

if TYPE_CHECKING:
    import torch


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
            raise refuse_model("a non-zero bias on the attention output projection")
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
        raise refuse_model(f"tensors llmctl's model has no place for: {', '.join(leftover[:5])}")
    return out
