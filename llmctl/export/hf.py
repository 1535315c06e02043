"""Export a checkpoint as a Hugging Face `LlamaForCausalLM` directory (transformers, vLLM, llama.cpp, the Hub).

    from llmctl.export.hf import export_hf
    export_hf("runs/sft/checkpoints/latest", "exports/sft-hf")

Writes config.json, model.safetensors, generation_config.json, tokenizer.json and tokenizer_config.json
(special tokens and the chat profile's Jinja template) into a temporary directory renamed into place,
plus llmctl-export.json, the marker by which `export --force` knows a folder it may replace.

RoPE: our model rotates interleaved pairs (2i, 2i+1) of each head (Meta's complex-number form); HF's
Llama rotates halves (i, i + head_dim/2) ("rotate_half"). Both use frequency theta^(-2i/d) for pair i, so
reordering each head's query and key rows as [0, 2, 4, ..., 1, 3, 5, ...] turns one into the other; the
dot product q.k is unchanged because q and k get the same reordering. Values and outputs are not rotated.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import LlmctlError
from llmctl.export.hf_arch import (
    LAYOUTS,
    block_layout,
    gemma3_config,
    norm_names,
    qk_norm_heads,
    sandwich_norms,
    unsupported_options,
)
from llmctl.files import atomic_path
from llmctl.presets import SUPPORTED
from llmctl.tokenizer.chat import (
    BOS,
    EOS,
    PAD,
    ChatProfile,
    get_profile,
    missing_tokens,
    reply_stop_ids,
    require_profile,
)

EXPORT_MARKER = "llmctl-export.json"
"""Written last into every export: what wrote the folder and which files. `export --force` replaces only
folders that hold it (and nothing else)."""
MARKER_FORMAT = "llmctl-hf-export"

if TYPE_CHECKING:
    import torch

    from llmctl.config import ModelConfig
    from llmctl.tokenizer.core import Tokenizer

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


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


def to_hf_state_dict(
    state: dict[str, torch.Tensor], cfg: ModelConfig, o_proj_bias: bool = True
) -> dict[str, torch.Tensor]:
    """Our Transformer's state dict (module names of llmctl.model.llama) -> LlamaForCausalLM's (Qwen2's
    without o_proj_bias: its attention has biases on q, k and v only)."""
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

    hd = cfg.head_size
    first, second = norm_names(cfg)
    qn, kn = qk_norm_heads(cfg)
    hf["model.embed_tokens.weight"] = take("tok_embeddings.weight")
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        hf[dst + f"{first}.weight"] = take(src + "attention_norm.weight")
        if cfg.qk_norm != "none":
            hf[dst + "self_attn.q_norm.weight"] = permute_for_rotate_half(
                take(src + "attention.q_norm.weight"), qn, hd
            )
            hf[dst + "self_attn.k_norm.weight"] = permute_for_rotate_half(
                take(src + "attention.k_norm.weight"), kn, hd
            )
        hf[dst + "self_attn.q_proj.weight"] = permute_for_rotate_half(
            take(src + "attention.wq.weight"), cfg.n_heads, hd
        )
        hf[dst + "self_attn.k_proj.weight"] = permute_for_rotate_half(
            take(src + "attention.wk.weight"), cfg.kv_heads, hd
        )
        hf[dst + "self_attn.v_proj.weight"] = take(src + "attention.wv.weight")
        hf[dst + "self_attn.o_proj.weight"] = wo = take(src + "attention.wo.weight")
        if cfg.qkv_bias:
            hf[dst + "self_attn.q_proj.bias"] = permute_for_rotate_half(
                take(src + "attention.wq.bias"), cfg.n_heads, hd
            )
            hf[dst + "self_attn.k_proj.bias"] = permute_for_rotate_half(
                take(src + "attention.wk.bias"), cfg.kv_heads, hd
            )
            hf[dst + "self_attn.v_proj.bias"] = take(src + "attention.wv.bias")
            if o_proj_bias:
                # HF Llama's attention_bias also gives o_proj a bias; ours has none, so it is zero.
                hf[dst + "self_attn.o_proj.bias"] = torch.zeros(wo.shape[0], dtype=wo.dtype)
        hf[dst + f"{second}.weight"] = take(src + "ffn_norm.weight")
        for ours, theirs in sandwich_norms(cfg):
            hf[dst + f"{theirs}.weight"] = take(src + f"{ours}.weight")
        hf[dst + "mlp.gate_proj.weight"] = take(src + "feed_forward.w1.weight")
        hf[dst + "mlp.up_proj.weight"] = take(src + "feed_forward.w3.weight")
        hf[dst + "mlp.down_proj.weight"] = take(src + "feed_forward.w2.weight")
    hf["model.norm.weight"] = take("norm.weight")
    head = state.pop("output.weight", None)
    if not cfg.tied_embeddings:
        if head is None:
            raise LlmctlError(
                "checkpoint has no tensor 'output.weight'", "the model config says the head is untied"
            )
        hf["lm_head.weight"] = head
    leftover = [k for k in state if "weight" in k or "bias" in k]
    if leftover:
        raise LlmctlError(
            f"checkpoint has tensors the export does not map: {', '.join(sorted(leftover)[:5])}",
            "the checkpoint's model layout differs from llmctl's Llama layout",
        )
    return hf


def architecture_for(cfg: ModelConfig) -> str:
    """The architecture a model trained in llmctl (not imported) is exported as: Llama, the family whose
    QK-norm, norm placement and Gemma options it has, or Mistral for a Llama layout with a window on every
    layer."""
    if block_layout(cfg) == LAYOUTS["LlamaForCausalLM"]:
        return "MistralForCausalLM" if cfg.sliding_window is not None else "LlamaForCausalLM"
    fits = [a for a, layout in LAYOUTS.items() if layout == block_layout(cfg)]
    return fits[0] if fits else "LlamaForCausalLM"


def check_architecture(cfg: ModelConfig, architecture: str) -> None:
    """Refuse to write a model under an architecture that would load it differently (a QK-norm or
    post-norm model as Llama, a windowed one as Llama, or the reverse), instead of writing weights
    transformers misreads."""
    layout = block_layout(cfg)
    if layout != LAYOUTS.get(architecture, LAYOUTS["LlamaForCausalLM"]):
        fits = [a for a, want in LAYOUTS.items() if want == layout and a != "MistralForCausalLM"]
        names = ("qk_norm", "norm_placement", "activation", "scale_embeddings", "norm_unit_offset")
        raise LlmctlError(
            f"{architecture} cannot hold a model with {', '.join(f'{k}={v}' for k, v in zip(names, layout, strict=True))}",
            f"this model's layout is {fits[0]}'s"
            if fits
            else "no Hugging Face architecture llmctl writes holds it",
        )
    why = unsupported_options(cfg, architecture)
    if why:
        raise LlmctlError(f"{architecture} cannot hold a model with {why}", "export it as Gemma3ForCausalLM")


def rope_parameters(cfg: ModelConfig) -> dict[str, Any]:
    """HF's RoPE description: default, llama3 scaling with its four numbers, linear, or yarn."""
    if cfg.rope_scaling == "llama3":
        return {
            "rope_type": "llama3",
            "factor": cfg.rope_factor,
            "low_freq_factor": cfg.rope_low_freq_factor,
            "high_freq_factor": cfg.rope_high_freq_factor,
            "original_max_position_embeddings": cfg.rope_original_max_seq_len,
        }
    if cfg.rope_scaling == "linear":
        return {"rope_type": "linear", "factor": cfg.rope_factor}
    if cfg.rope_scaling == "yarn":
        yarn = {
            "rope_type": "yarn",
            "factor": cfg.rope_factor,
            "original_max_position_embeddings": cfg.rope_original_max_seq_len,
            "beta_fast": cfg.rope_beta_fast,
            "beta_slow": cfg.rope_beta_slow,
        }
        return (
            yarn
            if cfg.rope_attention_factor is None
            else {**yarn, "attention_factor": cfg.rope_attention_factor}
        )
    return {"rope_type": "default"}


def hf_config(
    cfg: ModelConfig, tok: Tokenizer, dtype: str, eos_ids: list[int], architecture: str = "LlamaForCausalLM"
) -> dict[str, Any]:
    """config.json for LlamaForCausalLM (or the imported Qwen2/Mistral architecture); rope_theta and RoPE
    scaling both top-level (rope_scaling) and as rope_parameters, for transformers v4 and v5 readers."""
    rope = rope_parameters(cfg)
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": SUPPORTED[architecture],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_size,
        "hidden_act": "silu",
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {**rope, "rope_theta": cfg.rope_theta},
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
    if cfg.rope_scaling != "none":
        config["rope_scaling"] = rope
    if architecture in ("Qwen2ForCausalLM", "MistralForCausalLM"):
        # Qwen2 has q/k/v biases by construction; neither has Llama's attention_bias/mlp_bias switches.
        for key in ("attention_bias", "mlp_bias"):
            config.pop(key)
    elif architecture != "LlamaForCausalLM":
        config.pop("mlp_bias")  # Qwen3 and OLMo 2 take attention_bias, and have no MLP bias switch
    if architecture in ("Qwen2ForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM"):
        config.update({"sliding_window": cfg.sliding_window, "use_sliding_window": False})
    if architecture == "MistralForCausalLM":
        config.pop("use_sliding_window")  # Mistral's window is on whenever sliding_window is set
    if architecture == "Gemma3ForCausalLM":
        config = gemma3_config(config, cfg)
    return config


def _chat_profile_for(tok: Tokenizer, name: str | None) -> ChatProfile | None:
    """The profile whose template goes into tokenizer_config.json: the named one, or `chat` when the
    tokenizer holds its markers (a pretrained-only model has no chat template otherwise)."""
    if name is not None:
        return require_profile(
            name, tok, "export without --chat-profile, or use the tokenizer trained with `--profile chat`"
        )
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
        # BOS (if any) comes from tokenizer.json's post-processor, set at export to what training used.
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
    architecture: str = "LlamaForCausalLM",
    model_dir: Path | None = None,
    stop_ids: list[int] | None = None,
    chat: dict[str, Any] | None = None,
    prompt_prefix: list[int] | None = None,
) -> ExportResult:
    """Write the HF directory for a model state dict, its ModelConfig and its tokenizer (atomically).

    `model_dir` (an imported checkpoint) supplies the model's own tokenizer_config.json, chat template and
    generation_config.json instead of llmctl's chat profile; `stop_ids` then become eos_token_id. `chat`
    (checkpoint.json's chat section) supplies the template and special tokens when those files are absent
    (a model fine-tuned from an import). `prompt_prefix` (the ids a document started with in training)
    becomes the exported tokenizer's post-processor, so `AutoTokenizer(prompt)` encodes prompts exactly
    as `llmctl generate` does.
    """
    import torch

    if tok.kind != "hf":
        raise LlmctlError(
            f"export needs a tokenizer.json (Hugging Face tokenizers); {tok.path} is a sentencepiece model",
            "train the tokenizer with `llmctl tokenizer train --out PATH.json` (the hf backend) to export to HF format",
        )
    check_architecture(cfg, architecture)
    if dtype not in DTYPES:
        raise LlmctlError(f"unknown dtype '{dtype}'", f"use one of {', '.join(sorted(set(DTYPES.values())))}")
    dtype = DTYPES[dtype]
    if tok.vocab_size > cfg.vocab_size:
        raise LlmctlError(
            f"the tokenizer has {tok.vocab_size} ids but the model only {cfg.vocab_size} embedding rows",
            "export with the tokenizer the model was trained with",
        )
    out = Path(out)
    check_out(out, force)
    profile = _chat_profile_for(tok, chat_profile) if model_dir is None else None
    eos_ids = stop_ids if stop_ids else reply_stop_ids(profile, tok.token_to_id, tok.eos_id)
    own = [
        n
        for n in ("tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
        if model_dir is not None and (model_dir / n).is_file()
    ]

    torch_dtype = getattr(torch, dtype)
    # Llama, Qwen3 and OLMo 2's attention_bias also gives o_proj a bias; Qwen2's and Mistral's never.
    layout = to_hf_state_dict(
        state, cfg, o_proj_bias=architecture not in ("Qwen2ForCausalLM", "MistralForCausalLM")
    )
    hf_state = {k: v.detach().to("cpu", torch_dtype).contiguous().clone() for k, v in layout.items()}
    # The zero o_proj biases exist only for HF's layout; they are not parameters of the model.
    n_params = sum(v.numel() for k, v in hf_state.items() if not k.endswith("o_proj.bias"))

    # Written into a temporary folder beside --out and renamed over it: a failure (full disk, read-only)
    # removes the temporary and leaves any previous export as it was. A disk that cannot hold the weights
    # is refused before writing, with the size needed.
    needed = sum(v.numel() * v.element_size() for v in hf_state.values()) + Path(tok.path).stat().st_size
    with atomic_path(out, directory=True, needed=needed) as tmp:
        save_safetensors(hf_state, tmp / "model.safetensors")
        _write_json(tmp / "config.json", hf_config(cfg, tok, dtype, eos_ids, architecture))
        generation = {"bos_token_id": tok.bos_id, "eos_token_id": eos_ids, "pad_token_id": tok.pad_id}
        if model_dir is not None and (model_dir / "generation_config.json").is_file():
            source = json.loads((model_dir / "generation_config.json").read_text(encoding="utf-8"))
            generation = {**source, "eos_token_id": eos_ids}
        _write_json(tmp / "generation_config.json", {k: v for k, v in generation.items() if v is not None})
        shutil.copyfile(tok.path, tmp / "tokenizer.json")
        if prompt_prefix is not None:
            _set_prompt_prefix(tmp / "tokenizer.json", tok, prompt_prefix)
        for name in own:
            shutil.copyfile(model_dir / name, tmp / name)  # type: ignore[operator]
        if "tokenizer_config.json" not in own and model_dir is not None:
            # The model's own post-processor decides BOS: no add_bos_token override here.
            chat = chat or {}
            _write_json(
                tmp / "tokenizer_config.json",
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": chat.get("bos_token"),
                    "eos_token": chat.get("eos_token"),
                    "model_max_length": cfg.max_seq_len,
                    "clean_up_tokenization_spaces": False,
                },
            )
            if chat.get("template_text") and "chat_template.jinja" not in own:
                (tmp / "chat_template.jinja").write_text(chat["template_text"], encoding="utf-8")
                own.append("chat_template.jinja")
        elif "tokenizer_config.json" not in own:
            _write_json(tmp / "tokenizer_config.json", tokenizer_config(tok, profile, cfg.max_seq_len))
        if "special_tokens_map.json" not in own and model_dir is None:
            special_map = {
                k: v
                for k, v in (("bos_token", BOS), ("eos_token", EOS), ("pad_token", PAD))
                if tok.token_to_id(v) is not None
            }
            _write_json(tmp / "special_tokens_map.json", special_map)
        written = sorted(p.name for p in tmp.iterdir())
        _write_json(
            tmp / EXPORT_MARKER,
            {"format": MARKER_FORMAT, "format_version": 1, "checkpoint": checkpoint, "files": written},
        )
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ExportResult(
        out=str(out),
        checkpoint=checkpoint,
        dtype=dtype,
        n_params=n_params,
        vocab_size=cfg.vocab_size,
        tokenizer_fingerprint=tok.fingerprint,
        chat_template=profile is not None
        or "chat_template.jinja" in own
        or bool(
            model_dir is not None
            and "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
        ),
        eos_token_ids=eos_ids,
        files=files,
    )


def _set_prompt_prefix(path: Path, tok: Tokenizer, prefix: list[int]) -> None:
    """Make tokenizer.json's post-processor put `prefix` (BOS, or EOS for old `eos`-policy models) first,
    or nothing: what the model saw before each training document."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import processors

    hf = HFTok.from_file(str(path))
    names = [tok.id_to_token(i) for i in prefix]
    if names:
        head = " ".join(names)
        hf.post_processor = processors.TemplateProcessing(
            single=f"{head} $A",
            pair=f"{head} $A {head} $B",
            special_tokens=list(dict(zip(names, prefix, strict=True)).items()),
        )
    else:
        hf.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[])
    hf.save(str(path), pretty=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def save_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """save_file, with its I/O failures (a Rust error carrying `os error N`) raised as OSError."""
    from safetensors.torch import save_file

    try:
        save_file(state, str(path), metadata={"format": "pt"})
    except Exception as exc:
        found = re.search(r"os error (\d+)", str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((path / EXPORT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(marker, dict)
        or marker.get("format") != MARKER_FORMAT
        or not isinstance(marker.get("files"), list)
    ):
        return None
    return marker


def _export_files(path: Path) -> set[str] | None:
    """The names a previous llmctl export in `path` wrote (its marker included), or None if it is not one."""
    marker = _read_marker(path)
    return None if marker is None else {*marker["files"], EXPORT_MARKER}


def check_out(
    out: Path,
    force: bool,
    owned: Callable[[Path], set[str] | None] = _export_files,
    what: str = f"export (its {EXPORT_MARKER})",
) -> None:
    """Refuse an --out that exists, unless `force` and it is an empty folder or a previous llmctl output
    holding only what that output wrote: --force never deletes a folder of the user's.

    `owned(folder)` names the files a previous output of this command wrote there, or None when the folder
    is not one; `what` says what --force replaces, for the error (`import` passes its own).
    """
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise LlmctlError(
            f"{out} exists and is not a folder", "this command writes a folder: choose another --out"
        )
    if not force:
        raise LlmctlError(
            f"{out} already exists",
            "choose another --out, or pass --force to replace a previous llmctl output",
        )
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    files = owned(out)
    if files is None:
        raise LlmctlError(
            f"--force replaces only a previous llmctl {what}, and {out} is not one",
            "choose another --out, or delete that folder yourself if you are sure",
        )
    extra = [name for name in entries if name not in files]
    if extra:
        raise LlmctlError(
            f"{out} is a previous llmctl output but now also holds {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}",
            "move those files out (--force would delete them), or choose another --out",
        )


def export_hf(
    checkpoint: str | Path,
    out: str | Path,
    dtype: str = "auto",
    tokenizer: str | Path | None = None,
    chat_profile: str | None = None,
    force: bool = False,
    merge: bool = False,
) -> ExportResult:
    """Export a llmctl checkpoint (a step directory, RUN/checkpoints/latest or a run directory).

    The tokenizer is the copy inside the checkpoint unless one is given (its fingerprint must match);
    the chat profile is the one the SFT data used, else `chat` when the tokenizer holds its tokens;
    `merge` folds a LoRA run's adapters into its base (a LoRA checkpoint needs it).
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
            raise LlmctlError(
                f"checkpoint {ckpt} holds no tokenizer", "pass the run's tokenizer with --tokenizer"
            )
        tok = opened.tokenizer()
    else:
        tok = load_tokenizer(tokenizer)
    if recorded.get("fingerprint") and tok.fingerprint != recorded["fingerprint"]:
        raise LlmctlError(
            f"tokenizer {tok.path} (fingerprint {tok.fingerprint[:12]}) is not the one checkpoint {ckpt} was "
            f"trained with ({recorded['fingerprint'][:12]})",
            "leave out --tokenizer to use the copy stored in the checkpoint",
        )
    state = opened.plain_model_state(merge)
    if dtype == "auto":
        dtype = str(state["tok_embeddings.weight"].dtype).removeprefix("torch.")
    if chat_profile is None:
        chat_profile = ((manifest.get("data_meta") or {}).get("chat_profile") or {}).get("name")
    source = manifest.get("source") or {}
    if chat_profile == "model":
        chat_profile = None  # data rendered by the model's own template (`tokenize --template model`)
    if "chat" in manifest and chat_profile is None:
        # A model with its own conventions (imported, or fine-tuned from an import): keep them.
        from llmctl.tokenizer.template import stop_ids

        return write_hf(
            state,
            cfg,
            tok,
            out,
            dtype=dtype,
            force=force,
            checkpoint=str(ckpt),
            architecture=source.get("architecture") or architecture_for(cfg),
            model_dir=ckpt,
            stop_ids=stop_ids(tok, manifest),
            chat=manifest.get("chat"),
        )
    from llmctl.tokenizer.template import document_prefix

    prefix = document_prefix(manifest.get("data_meta") or {})
    return write_hf(
        state,
        cfg,
        tok,
        out,
        dtype=dtype,
        chat_profile=chat_profile,
        force=force,
        checkpoint=str(ckpt),
        architecture=source.get("architecture") or architecture_for(cfg),
        prompt_prefix=prefix,
    )
