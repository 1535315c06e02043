"""Export a checkpoint as a Hugging Face `LlamaForCausalLM` directory (transformers, vLLM, llama.cpp, the Hub).

    from llmctl.export.hf import export_hf
    export_hf("runs/sft/checkpoints/latest", "exports/sft-hf")

Writes config.json, model.safetensors, generation_config.json, tokenizer.json and tokenizer_config.json
(special tokens and the chat profile's Jinja template) into a temporary directory renamed into place.

RoPE: our model rotates interleaved pairs (2i, 2i+1) of each head (Meta's complex-number form); HF's
Llama rotates halves (i, i + head_dim/2) ("rotate_half"). Both use frequency theta^(-2i/d) for pair i, so
reordering each head's query and key rows as [0, 2, 4, ..., 1, 3, 5, ...] turns one into the other; the
dot product q.k is unchanged because q and k get the same reordering. Values and outputs are not rotated.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.data.chat import BOS, EOS, PAD, ChatProfile, get_profile, missing_tokens, reply_stop_ids
from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    import torch

    from llmctl.config import ModelConfig
    from llmctl.tokenizer.core import Tokenizer

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@dataclass
class ExportResult:
    """What `export_hf` wrote."""

    out: str
    checkpoint: str
    dtype: str
    n_params: int
    vocab_size: int
    tokenizer_fingerprint: str
    chat_template: bool
    """True when tokenizer_config.json carries the chat profile's template."""
    eos_token_ids: list[int]
    files: dict[str, int] = field(default_factory=dict)
    """File name -> bytes."""


def permute_for_rotate_half(weight: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
    """Reorder each head's rows (or bias entries) from interleaved RoPE pairs to HF's rotate_half halves."""
    rest = weight.shape[1:]
    return weight.reshape(n_heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(weight.shape)


def to_hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our Transformer's state dict (module names of llmctl.model.llama) -> LlamaForCausalLM's."""
    import torch

    state = dict(state)
    hf: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        if name not in state:
            raise LlmctlError(
                f"checkpoint has no tensor '{name}'",
                "export takes checkpoints written by `llmctl pretrain` or `llmctl sft` with this model layout",
            )
        return state.pop(name)

    hd = cfg.head_dim
    hf["model.embed_tokens.weight"] = take("tok_embeddings.weight")
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        hf[dst + "input_layernorm.weight"] = take(src + "attention_norm.weight")
        hf[dst + "self_attn.q_proj.weight"] = permute_for_rotate_half(take(src + "attention.wq.weight"), cfg.n_heads, hd)
        hf[dst + "self_attn.k_proj.weight"] = permute_for_rotate_half(take(src + "attention.wk.weight"), cfg.kv_heads, hd)
        hf[dst + "self_attn.v_proj.weight"] = take(src + "attention.wv.weight")
        hf[dst + "self_attn.o_proj.weight"] = wo = take(src + "attention.wo.weight")
        if cfg.qkv_bias:
            hf[dst + "self_attn.q_proj.bias"] = permute_for_rotate_half(take(src + "attention.wq.bias"), cfg.n_heads, hd)
            hf[dst + "self_attn.k_proj.bias"] = permute_for_rotate_half(take(src + "attention.wk.bias"), cfg.kv_heads, hd)
            hf[dst + "self_attn.v_proj.bias"] = take(src + "attention.wv.bias")
            # HF Llama's attention_bias also gives o_proj a bias; ours has none, so it is zero.
            hf[dst + "self_attn.o_proj.bias"] = torch.zeros(wo.shape[0], dtype=wo.dtype)
        hf[dst + "post_attention_layernorm.weight"] = take(src + "ffn_norm.weight")
        hf[dst + "mlp.gate_proj.weight"] = take(src + "feed_forward.w1.weight")
        hf[dst + "mlp.up_proj.weight"] = take(src + "feed_forward.w3.weight")
        hf[dst + "mlp.down_proj.weight"] = take(src + "feed_forward.w2.weight")
    hf["model.norm.weight"] = take("norm.weight")
    head = state.pop("output.weight", None)
    if not cfg.tied_embeddings:
        if head is None:
            raise LlmctlError("checkpoint has no tensor 'output.weight'", "the model config says the head is untied")
        hf["lm_head.weight"] = head
    leftover = [k for k in state if "weight" in k or "bias" in k]
    if leftover:
        raise LlmctlError(
            f"checkpoint has tensors the export does not map: {', '.join(sorted(leftover)[:5])}",
            "the checkpoint's model layout differs from llmctl's Llama layout",
        )
    return hf


def hf_config(cfg: ModelConfig, tok: Tokenizer, dtype: str, eos_ids: list[int]) -> dict[str, Any]:
    """config.json for LlamaForCausalLM (rope_theta both top-level and as rope_parameters for v4 and v5 readers)."""
    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "max_position_embeddings": cfg.max_seq_len,
        "tie_word_embeddings": cfg.tied_embeddings,
        "attention_bias": cfg.qkv_bias,
        "mlp_bias": False,
        "bos_token_id": tok.bos_id,
        "eos_token_id": eos_ids[0] if len(eos_ids) == 1 else eos_ids,
        "pad_token_id": tok.pad_id,
        "torch_dtype": dtype,
        "use_cache": True,
    }
    return config


def _chat_profile_for(tok: Tokenizer, name: str | None) -> ChatProfile | None:
    """The profile whose template goes into tokenizer_config.json: the named one, or `chat` when the
    tokenizer holds its markers (a pretrained-only model has no chat template otherwise)."""
    if name is not None:
        profile = get_profile(name)
        missing = missing_tokens(profile, tok.token_to_id)
        if missing:
            raise LlmctlError(
                f"the tokenizer {tok.path} lacks chat profile '{name}' tokens: {', '.join(missing)}",
                "export without --chat-profile, or use the tokenizer trained with `--profile chat`",
            )
        return profile
    profile = get_profile("chat")
    if not missing_tokens(profile, tok.token_to_id):
        return profile
    return None


def tokenizer_config(tok: Tokenizer, profile: ChatProfile | None, max_len: int) -> dict[str, Any]:
    """tokenizer_config.json for PreTrainedTokenizerFast: special tokens and the chat template."""
    def name(tid: int | None) -> str | None:
        return None if tid is None else tok.id_to_token(tid)

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": name(tok.bos_id),
        "eos_token": name(tok.eos_id),
        "pad_token": name(tok.pad_id),
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        # Our ids never carry an automatic BOS: the chat template writes it, pretraining separates with EOS.
        "add_bos_token": False,
        "add_eos_token": False,
    }
    if profile is not None:
        config["additional_special_tokens"] = profile.special_tokens
        config["chat_template"] = profile.chat_template()
    return config


def write_hf(
    state: dict[str, torch.Tensor],
    cfg: ModelConfig,
    tok: Tokenizer,
    out: str | Path,
    dtype: str = "float32",
    chat_profile: str | None = None,
    force: bool = False,
    checkpoint: str = "",
) -> ExportResult:
    """Write the HF directory for a model state dict, its ModelConfig and its tokenizer (atomically)."""
    import torch
    from safetensors.torch import save_file

    if tok.kind != "hf":
        raise LlmctlError(
            f"export needs a tokenizer.json (Hugging Face tokenizers); {tok.path} is a sentencepiece model",
            "train the tokenizer with `llmctl tokenizer train --kind bpe` (tokenizer.json) to export to HF format",
        )
    if dtype not in DTYPES:
        raise LlmctlError(f"unknown dtype '{dtype}'", f"use one of {', '.join(sorted(set(DTYPES.values())))}")
    dtype = DTYPES[dtype]
    if tok.vocab_size > cfg.vocab_size:
        raise LlmctlError(
            f"the tokenizer has {tok.vocab_size} ids but the model only {cfg.vocab_size} embedding rows",
            "export with the tokenizer the model was trained with",
        )
    out = Path(out)
    if out.exists() and not force:
        raise LlmctlError(f"{out} already exists", "choose another --out or pass --force to replace it")
    profile = _chat_profile_for(tok, chat_profile)
    eos_ids = reply_stop_ids(profile, tok.token_to_id, tok.eos_id)

    torch_dtype = getattr(torch, dtype)
    hf_state = {k: v.detach().to("cpu", torch_dtype).contiguous().clone() for k, v in to_hf_state_dict(state, cfg).items()}
    # The zero o_proj biases exist only for HF's layout; they are not parameters of the model.
    n_params = sum(v.numel() for k, v in hf_state.items() if not k.endswith("o_proj.bias"))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        _write_json(tmp / "config.json", hf_config(cfg, tok, dtype, eos_ids))
        generation = {"bos_token_id": tok.bos_id, "eos_token_id": eos_ids, "pad_token_id": tok.pad_id}
        _write_json(tmp / "generation_config.json", {k: v for k, v in generation.items() if v is not None})
        shutil.copyfile(tok.path, tmp / "tokenizer.json")
        _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok, profile, cfg.max_seq_len))
        special_map = {k: v for k, v in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD))
                       if tok.token_to_id(v) is not None}
        _write_json(tmp / "special_tokens_map.json", special_map)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ExportResult(
        out=str(out), checkpoint=checkpoint, dtype=dtype, n_params=n_params, vocab_size=cfg.vocab_size,
        tokenizer_fingerprint=tok.fingerprint, chat_template=profile is not None, eos_token_ids=eos_ids, files=files,
    )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def export_hf(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "auto",
    tokenizer: str | Path | None = None,
    chat_profile: str | None = None,
    force: bool = False,
) -> ExportResult:
    """Export a llmctl checkpoint (a step directory, RUN/checkpoints/latest or a run directory).

    The tokenizer is the copy inside the checkpoint unless one is given (its fingerprint must match);
    the chat profile is the one the SFT data used, else `chat` when the tokenizer holds its tokens.
    """
    from llmctl.infer.checkpoint import open_checkpoint
    from llmctl.tokenizer.core import load_tokenizer

    opened = open_checkpoint(checkpoint)
    ckpt, manifest = opened.path, opened.manifest
    cfg = opened.config.model
    recorded = manifest.tokenizer
    if tokenizer is None:
        local = [ckpt / n for n in ("tokenizer.json", "tokenizer.model") if (ckpt / n).is_file()]
        if not local and recorded.get("path") is None:
            raise LlmctlError(f"checkpoint {ckpt} holds no tokenizer", "pass the run's tokenizer with --tokenizer")
        tok = opened.tokenizer()
    else:
        tok = load_tokenizer(tokenizer)
    if recorded.get("fingerprint") and tok.fingerprint != recorded["fingerprint"]:
        raise LlmctlError(
            f"tokenizer {tok.path} (fingerprint {tok.fingerprint[:12]}) is not the one checkpoint {ckpt} was "
            f"trained with ({recorded['fingerprint'][:12]})",
            "leave out --tokenizer to use the copy stored in the checkpoint",
        )
    state = opened.model_state()
    if dtype == "auto":
        dtype = str(state["tok_embeddings.weight"].dtype).removeprefix("torch.")
    if chat_profile is None:
        chat_profile = ((manifest.get("data_meta") or {}).get("chat_profile") or {}).get("name")
    return write_hf(state, cfg, tok, out, dtype=dtype, chat_profile=chat_profile, force=force, checkpoint=str(ckpt))
