"""Export a checkpoint as one GGUF file for llama.cpp and Ollama, with the `gguf` package (no llama.cpp build).

    result = export_gguf("runs/sft/checkpoints/latest", "exports/model.gguf", dtype="q8_0")

Architecture `llama` (llmctl's models, Llama and Mistral imports), `qwen2`, `qwen3` (per-head QK-norm,
`attention.key_length`/`value_length` for a head_dim apart from the width) or `olmo2` (QK-norm over the
projections, `post_attention_norm`/`post_ffw_norm` after each sublayer). llama.cpp's `llama` rotates
interleaved RoPE pairs, as llmctl's model does, so its q/k rows are written unchanged; the others rotate
halves (NEOX), so those rows and the QK-norm weights get the Hugging Face order (llmctl/export/hf.py).
Llama 3 RoPE scaling is the `rope_freqs` tensor: one divisor per frequency, as llama.cpp expects.
The prompt convention is the one llmctl's own generate uses (prompt_convention): BOS first for a model
pretrained on BOS-first shards or an import whose tokenizer adds it.
Norms, biases and rope_freqs stay float32; matrices take --dtype: float16 (default), float32, or a block
type the `gguf` package quantizes itself: q8_0, q5_1, q5_0, q4_1, q4_0 (32 values per block; a matrix whose
rows are not a multiple of 32 stays float16). The k-quants (q4_k, q5_k) are not offered: `gguf.quants`
cannot quantize them (only llama.cpp's own `llama-quantize` can).
After writing, the file is read back with gguf.GGUFReader and every key, shape and value is checked
against the checkpoint (values within the dtype's rounding, QUANT_ERROR) before it replaces --out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmctl.errors import LlmctlError

if TYPE_CHECKING:
    import numpy as np

    from llmctl.config import ModelConfig

GGUF_DTYPES = ("float32", "float16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
BLOCK_TYPES = ("q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
BLOCK_BYTES = {"q8_0": 34, "q5_1": 24, "q5_0": 22, "q4_1": 20, "q4_0": 18}
"""Bytes per block of 32 values (ggml's block_q*: the quants plus fp16 scale, and fp16 minimum for *_1)."""
QUANT_ERROR = {"q8_0": 1 / 127, "q5_1": 1 / 30, "q5_0": 1 / 15, "q4_1": 1 / 14, "q4_0": 1 / 7}
"""Largest |dequantized - original| as a share of the tensor's largest |value|, with room for the fp16
scale's rounding. q8_0 rounds to half a step of absmax/127. The *_0 types put their scale at -absmax/8
(q4_0) or -absmax/16 (q5_0), so the value at the other end is clipped by up to one step: absmax/8, absmax/16.
The *_1 types span [min, max] in 15 (q4_1) or 31 (q5_1) steps, half a step at most: (max - min)/30, /62."""
_MAGIC = b"GGUF"


@dataclass
class GGUFResult:
    """What `export_gguf` wrote and checked."""

    out: str
    checkpoint: str
    architecture: str
    dtype: str
    n_tensors: int
    bytes: int
    pre_tokenizer: str
    bos_id: int | None
    eos_id: int | None
    eot_id: int | None
    add_bos: bool
    """llama.cpp puts `bos_id` before each prompt (the model's training convention, prompt_convention)."""
    add_eos: bool
    chat_template: bool
    max_abs_error: float
    """Largest |file value - checkpoint value| over all tensors (0 for float32)."""
    context_length: int = 0
    """The file's context length: max_seq_len, or a windowed Mistral's sliding_window (see gguf_context)."""
    keys: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def rope_freq_factors(cfg: ModelConfig) -> np.ndarray:
    """llama.cpp's rope_freqs for llama3 scaling: base frequency / scaled frequency, per rotary pair."""
    import torch

    from llmctl.model.llama import llama3_frequencies

    base = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_size, 2, dtype=torch.float32) / cfg.head_size))
    return (base / llama3_frequencies(base, cfg)).numpy().astype("float32")


def gguf_tensors(state: dict[str, Any], cfg: ModelConfig, arch: str) -> dict[str, np.ndarray]:
    """llmctl state dict -> GGUF tensor names and float32 arrays (numpy order)."""
    from llmctl.export.hf import permute_for_rotate_half

    def arr(t: Any) -> np.ndarray:
        return t.detach().float().cpu().numpy()

    from llmctl.export.hf_arch import qk_norm_heads

    neox = arch != "llama"
    qn, kn = qk_norm_heads(cfg)
    first, second = ("post_attention_norm", "post_ffw_norm") if arch == "olmo2" else ("attn_norm", "ffn_norm")
    sandwich = (("attention_post_norm", "post_attention_norm"), ("ffn_post_norm", "post_ffw_norm"))
    out: dict[str, np.ndarray] = {"token_embd.weight": arr(state["tok_embeddings.weight"])}
    for i in range(cfg.n_layers):
        src, dst = f"layers.{i}.", f"blk.{i}."
        for ours, theirs, heads in (
            ("wq", "attn_q", cfg.n_heads),
            ("wk", "attn_k", cfg.kv_heads),
            ("wv", "attn_v", 0),
            ("q_norm", "attn_q_norm", qn),
            ("k_norm", "attn_k_norm", kn),
        ):
            for kind in ("weight", "bias"):
                name = f"{src}attention.{ours}.{kind}"
                if name not in state:
                    continue
                t = state[name]
                if neox and heads:
                    t = permute_for_rotate_half(t, heads, cfg.head_size)
                out[f"{dst}{theirs}.{kind}"] = arr(t)
        out[dst + "attn_output.weight"] = arr(state[src + "attention.wo.weight"])
        out[dst + f"{first}.weight"] = arr(state[src + "attention_norm.weight"])
        out[dst + f"{second}.weight"] = arr(state[src + "ffn_norm.weight"])
        out[dst + "ffn_gate.weight"] = arr(state[src + "feed_forward.w1.weight"])
        out[dst + "ffn_up.weight"] = arr(state[src + "feed_forward.w3.weight"])
        out[dst + "ffn_down.weight"] = arr(state[src + "feed_forward.w2.weight"])
        if cfg.norm_placement == "sandwich":
            for ours, theirs in sandwich:
                out[f"{dst}{theirs}.weight"] = arr(state[f"{src}{ours}.weight"])
    out["output_norm.weight"] = arr(state["norm.weight"])
    if cfg.norm_unit_offset:
        # llama.cpp's gemma3 multiplies by the stored norm weight: the (1 + weight) is added here, as
        # llama.cpp's own convert_hf_to_gguf.py does for Gemma.
        out = {k: v + 1.0 if k.endswith("norm.weight") else v for k, v in out.items()}
    if not cfg.tied_embeddings:
        out["output.weight"] = arr(state["output.weight"])
    if cfg.rope_scaling == "llama3":
        out["rope_freqs.weight"] = rope_freq_factors(cfg)
    return out


_GGUF_ARCH = {
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    "Olmo2ForCausalLM": "olmo2",
    "Gemma3ForCausalLM": "gemma3",
}
_GGUF_LAYOUT = {"qwen3": "Qwen3ForCausalLM", "olmo2": "Olmo2ForCausalLM", "gemma3": "Gemma3ForCausalLM"}


def gguf_architecture(cfg: ModelConfig, source_arch: str | None) -> str:
    """llama.cpp's architecture for a checkpoint: the imported family's, else the one whose QK-norm and
    norm placement the model has (llama for llmctl's default decoder); an error for what none holds."""
    from llmctl.export.hf import architecture_for
    from llmctl.export.hf_arch import LAYOUTS, block_layout

    arch = _GGUF_ARCH.get(source_arch or architecture_for(cfg), "llama")
    if block_layout(cfg) != LAYOUTS[_GGUF_LAYOUT.get(arch, "LlamaForCausalLM")]:
        raise LlmctlError(
            f"llama.cpp's {arch} architecture has no qk_norm={cfg.qk_norm} with norm_placement={cfg.norm_placement}",
            "GGUF export holds llama, qwen2, qwen3 (per-head QK-norm), olmo2 (QK-norm over the projections, "
            "post-norms) and gemma3",
        )
    why = _llama_cpp_refuses(cfg, arch)
    if why:
        raise LlmctlError(f"llama.cpp's {arch} architecture {why}", "export --format hf keeps every option")
    if cfg.qkv_bias and arch != "qwen2":
        raise LlmctlError(
            f"llama.cpp's {arch} architecture has no q/k/v biases",
            "GGUF export of qkv_bias models needs a Qwen2 import",
        )
    return arch


def _llama_cpp_refuses(cfg: ModelConfig, arch: str) -> str | None:
    """What llama.cpp's `arch` would compute differently from llmctl's model, or None. Its gemma3 fixes
    five windowed layers to one global, RoPE base 10000 on the windowed layers and head_dim^-0.5 as the
    attention scale (all three as in the published Gemma 3 text models); `llama` has no window."""
    if arch == "gemma3":
        if cfg.sliding_window is not None and cfg.sliding_window_pattern != 6:
            return f"fixes one global layer in six (this model: sliding_window_pattern={cfg.sliding_window_pattern})"
        if cfg.rope_local_theta not in (None, 10000.0) and cfg.sliding_window is not None:
            return f"fixes the windowed layers' RoPE base at 10000 (this model: {cfg.rope_local_theta})"
        if cfg.attn_scalar is not None and cfg.attn_scalar != cfg.head_size:
            return f"scales attention by head_dim^-0.5 (this model: attn_scalar={cfg.attn_scalar})"
        if cfg.rope_scaling in ("llama3", "yarn"):
            return f"is not written with {cfg.rope_scaling} RoPE scaling by llmctl"
        return None
    if cfg.sliding_window is not None and cfg.sliding_window_pattern:
        return f"has no sliding-window layer pattern (this model: {cfg.sliding_window_pattern})"
    if cfg.rope_scaling == "linear":
        return "is not written with linear RoPE scaling by llmctl"
    if cfg.rope_scaling == "yarn" and (cfg.rope_beta_fast, cfg.rope_beta_slow, cfg.rope_attention_factor) != (
        32.0,
        1.0,
        None,
    ):
        return "is written only with YaRN's default beta_fast 32, beta_slow 1 and attention factor"
    if cfg.rope_local_theta is not None or cfg.attn_scalar is not None:
        return "has no per-layer RoPE base or attention scale"
    return None


def _encode(data: np.ndarray, dtype: str) -> tuple[np.ndarray, Any]:
    """(bytes to store, GGML type or None for numpy's own) for one tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    if data.ndim < 2 or dtype == "float32":
        return data.astype(np.float32), None
    if dtype in BLOCK_TYPES and data.shape[-1] % 32 == 0:
        qtype = GGMLQuantizationType[dtype.upper()]
        return quantize(data.astype(np.float32), qtype), qtype
    return data.astype(np.float16), None


def _gguf_bytes(tensors: dict[str, np.ndarray], dtype: str, ckpt: Path) -> int:
    """About how many bytes the file takes: its tensors as `_encode` stores them, plus the vocabulary."""
    per_value = {"float32": 4.0, "float16": 2.0}.get(dtype) or BLOCK_BYTES[dtype] / 32
    size = sum(int(t.size * (4 if t.ndim < 2 else per_value)) for t in tensors.values())
    return size + (ckpt / "tokenizer.json").stat().st_size


def _conventions(manifest: dict[str, Any], tok: Any, ckpt: Path) -> tuple[list[int], str | None]:
    """(stop ids, chat template) of a checkpoint: its own (imported) or llmctl's chat profile."""
    from llmctl.export.hf import _chat_profile_for
    from llmctl.tokenizer.template import TemplateChat, stop_ids

    template = TemplateChat.from_manifest(manifest, tok)
    if template is not None or "chat" in manifest:
        return stop_ids(tok, manifest), template.template if template else None
    from llmctl.tokenizer.chat import reply_stop_ids

    profile = _chat_profile_for(tok, None)
    return (
        reply_stop_ids(profile, tok.token_to_id, tok.eos_id),
        profile.chat_template() if profile else None,
    )


def gguf_context(cfg: ModelConfig, arch: str) -> tuple[int, str | None]:
    """(context length written into the file, warning or None). llama.cpp's `llama` ignores a sliding
    window, but within a context no longer than the window, full causal attention is the windowed one: a
    windowed Mistral is written with its window as context length, so llama.cpp computes llmctl's logits."""
    if arch == "gemma3" or cfg.sliding_window is None or cfg.sliding_window >= cfg.max_seq_len:
        return cfg.max_seq_len, None
    return cfg.sliding_window, (
        f"llama.cpp's {arch} has no sliding window: the GGUF's context length is the model's window, "
        f"{cfg.sliding_window} tokens (not {cfg.max_seq_len}), within which its attention is the same"
    )


def _window_keys(cfg: ModelConfig, arch: str) -> dict[str, Any]:
    """gemma3's window, windowed layers' RoPE base and linear RoPE scaling keys; YaRN's keys for the others
    (llama.cpp's defaults, beta_fast 32, beta_slow 1 and mscale 0.1 ln(factor) + 1, are transformers')."""
    if arch != "gemma3":
        if cfg.rope_scaling != "yarn":
            return {}
        return {
            f"{arch}.rope.scaling.type": "yarn",
            f"{arch}.rope.scaling.factor": float(cfg.rope_factor),
            f"{arch}.rope.scaling.original_context_length": cfg.rope_original_max_seq_len,
        }
    keys: dict[str, Any] = {}
    if cfg.sliding_window is not None:
        keys[f"{arch}.attention.sliding_window"] = cfg.sliding_window
        keys[f"{arch}.rope.freq_base_swa"] = float(cfg.rope_local_theta or cfg.rope_theta)
    if cfg.rope_scaling == "linear":
        keys[f"{arch}.rope.scaling.type"] = "linear"
        keys[f"{arch}.rope.scaling.factor"] = float(cfg.rope_factor)
    return keys


@dataclass(frozen=True)
class PromptConvention:
    """What llama.cpp adds around a prompt: `tokenizer.ggml.add_bos_token` with `bos_token_id`, and
    `add_eos_token`."""

    bos_id: int | None
    add_bos: bool
    add_eos: bool


def prompt_convention(tok: Any, manifest: dict[str, Any]) -> PromptConvention:
    """The GGUF keys under which llama.cpp encodes a prompt as llmctl does (prompt_ids): BOS first for an
    import whose post-processor adds it or a model pretrained on BOS-first shards; the document prefix of
    old `eos`-policy shards is written as the BOS id (what the model saw before each document)."""
    from llmctl.tokenizer.template import prompt_ids

    probe = "Hello world"
    plain = tok.encode(probe)
    ids = prompt_ids(tok, manifest, probe)
    at = next((i for i in range(len(ids) - len(plain) + 1) if ids[i : i + len(plain)] == plain), None)
    head, tail = (ids[:at], ids[at + len(plain) :]) if at is not None else (ids, [])
    if at is None or len(head) > 1 or len(tail) > 1 or (tail and tail[0] != tok.eos_id):
        raise LlmctlError(
            f"llama.cpp cannot add this model's prompt tokens (before the text {head}, after it {tail}): it adds "
            "at most one BOS before and one EOS after",
            "export --format hf, whose tokenizer.json post-processor carries them",
        )
    return PromptConvention(head[0] if head else tok.bos_id, bool(head), bool(tail))


def _check(path: Path, expected_kv: dict[str, Any], tensors: dict[str, np.ndarray], dtype: str) -> float:
    """Read the file back; every key and tensor must be there with the right shape and values."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    for key, value in expected_kv.items():
        got = reader.fields.get(key)
        if got is None:
            raise LlmctlError(f"GGUF check failed: key {key} missing from {path}", "please report this bug")
        content = got.contents()
        if isinstance(value, float):
            ok = abs(float(content) - value) <= 1e-6 * max(1.0, abs(value))
        else:
            ok = content == value
        if not ok:
            raise LlmctlError(
                f"GGUF check failed: {key} is {str(content)[:80]}, expected {str(value)[:80]}",
                "please report this bug",
            )
    found = {t.name: t for t in reader.tensors}
    if set(found) != set(tensors):
        raise LlmctlError(
            f"GGUF check failed: tensors differ ({sorted(set(found) ^ set(tensors))[:4]})",
            "please report this bug",
        )
    worst = 0.0
    for name, want in tensors.items():
        t = found[name]
        if tuple(int(n) for n in reversed(t.shape)) != want.shape:
            raise LlmctlError(
                f"GGUF check failed: {name} has shape {list(t.shape)}, expected {want.shape}",
                "please report this bug",
            )
        got = dequantize(t.data, t.tensor_type).reshape(want.shape).astype(np.float32)
        err = float(np.abs(got - want).max()) if want.size else 0.0
        # Rounding bounds: none for float32, half an fp16 ulp, the block type's QUANT_ERROR; a block type's
        # matrix whose rows are not whole blocks is stored float16.
        scale = float(np.abs(want).max()) if want.size else 0.0
        if dtype == "float32" or want.ndim < 2:
            limit = 0.0
        elif dtype in BLOCK_TYPES and t.tensor_type.name.lower() == dtype:
            limit = scale * QUANT_ERROR[dtype]
        else:
            limit = scale / 1024
        if err > limit + 1e-12:
            raise LlmctlError(
                f"GGUF check failed: {name} differs by {err:.3g} (allowed {limit:.3g})",
                "please report this bug",
            )
        worst = max(worst, err)
    return worst


def export_gguf(
    checkpoint: str | Path, out: str | Path, dtype: str = "float16", force: bool = False, merge: bool = False
) -> GGUFResult:
    """Write checkpoint as the single GGUF file `out` (atomically), then verify it by reading it back;
    `merge` folds a LoRA run's adapters into its base (a LoRA checkpoint needs it)."""
    from gguf import GGUFWriter, LlamaFileType

    from llmctl.config import from_dict
    from llmctl.export.gguf_vocab import gguf_vocab
    from llmctl.files import atomic_path
    from llmctl.infer.checkpoint import open_checkpoint

    if dtype not in GGUF_DTYPES:
        raise LlmctlError(f"unknown GGUF dtype '{dtype}'", f"use one of {', '.join(GGUF_DTYPES)}")
    out = Path(out)
    if out.is_dir():
        raise LlmctlError(f"{out} is a directory; --format gguf writes one file", "pass --out FILE.gguf")
    if out.exists():
        if not force:
            raise LlmctlError(f"{out} already exists", "choose another --out or pass --force to replace it")
        with open(out, "rb") as fh:
            if fh.read(4) != _MAGIC:
                raise LlmctlError(
                    f"{out} is not a GGUF file; --force replaces only a GGUF file", "choose another --out"
                )
    opened = open_checkpoint(checkpoint)
    ckpt, manifest = opened.path, opened.manifest
    cfg = from_dict(manifest.config).model
    if "tokenizer.json" not in manifest.files:
        raise LlmctlError(
            f"checkpoint {ckpt} has no tokenizer.json listed in its checkpoint.json",
            "GGUF export needs a Hugging Face tokenizers BPE tokenizer",
        )
    tok = opened.tokenizer()  # verified against checkpoint.json first
    vocab = gguf_vocab(json.loads(opened.read_verified("tokenizer.json").decode("utf-8")), cfg.vocab_size)
    arch = gguf_architecture(cfg, (manifest.get("source") or {}).get("architecture"))
    stops, template = _conventions(manifest, tok, ckpt)
    prompt = prompt_convention(tok, manifest)
    add_bos = prompt.add_bos
    eot = next((i for i in stops if i != tok.eos_id), None)
    eos = tok.eos_id if tok.eos_id is not None else (stops[0] if stops else None)
    tensors = gguf_tensors(opened.plain_model_state(merge), cfg, arch)
    context, warning = gguf_context(cfg, arch)

    file_type = {
        "float32": LlamaFileType.ALL_F32,
        "float16": LlamaFileType.MOSTLY_F16,
        "q8_0": LlamaFileType.MOSTLY_Q8_0,
        "q5_1": LlamaFileType.MOSTLY_Q5_1,
        "q5_0": LlamaFileType.MOSTLY_Q5_0,
        "q4_1": LlamaFileType.MOSTLY_Q4_1,
        "q4_0": LlamaFileType.MOSTLY_Q4_0,
    }[dtype]
    # llama.cpp takes head_dim as n_embd / n_head unless these say otherwise (Qwen3: 128 x 16 heads at 1024).
    head_lengths = (
        {f"{arch}.attention.key_length": cfg.head_size, f"{arch}.attention.value_length": cfg.head_size}
        if cfg.head_dim is not None or arch in ("qwen3", "olmo2", "gemma3")
        else {}
    )
    kv: dict[str, Any] = {
        "general.architecture": arch,
        f"{arch}.block_count": cfg.n_layers,
        f"{arch}.context_length": context,
        f"{arch}.embedding_length": cfg.dim,
        f"{arch}.feed_forward_length": cfg.hidden_dim,
        f"{arch}.attention.head_count": cfg.n_heads,
        f"{arch}.attention.head_count_kv": cfg.kv_heads,
        f"{arch}.rope.freq_base": float(cfg.rope_theta),
        f"{arch}.attention.layer_norm_rms_epsilon": float(cfg.norm_eps),
        **head_lengths,
        **_window_keys(cfg, arch),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": vocab.pre,
        "tokenizer.ggml.tokens": vocab.tokens,
        "tokenizer.ggml.token_type": vocab.types,
        "tokenizer.ggml.merges": vocab.merges,
        "tokenizer.ggml.add_bos_token": add_bos,
        "tokenizer.ggml.add_eos_token": prompt.add_eos,
    }
    ids = {
        "tokenizer.ggml.bos_token_id": prompt.bos_id,
        "tokenizer.ggml.eos_token_id": eos,
        "tokenizer.ggml.eot_token_id": eot,
        "tokenizer.ggml.padding_token_id": tok.pad_id,
    }
    kv.update({k: v for k, v in ids.items() if v is not None})
    if template:
        kv["tokenizer.chat_template"] = template

    with atomic_path(out, needed=_gguf_bytes(tensors, dtype, ckpt)) as tmp:
        writer = GGUFWriter(tmp, arch)
        writer.add_name(Path(str(ckpt)).name)
        writer.add_block_count(cfg.n_layers)
        writer.add_context_length(context)
        writer.add_embedding_length(cfg.dim)
        writer.add_feed_forward_length(cfg.hidden_dim)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.kv_heads)
        writer.add_rope_freq_base(float(cfg.rope_theta))
        writer.add_rope_dimension_count(cfg.head_size)
        writer.add_layer_norm_rms_eps(float(cfg.norm_eps))
        if head_lengths:
            writer.add_key_length(cfg.head_size)
            writer.add_value_length(cfg.head_size)
        for key, value in _window_keys(cfg, arch).items():
            add = {float: writer.add_float32, str: writer.add_string}.get(type(value), writer.add_uint32)
            add(key, value)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(int(file_type))
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(vocab.pre)
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        writer.add_token_merges(vocab.merges)
        writer.add_add_bos_token(add_bos)
        writer.add_add_eos_token(prompt.add_eos)
        for key, value in ids.items():
            if value is not None:
                writer.add_uint32(key, int(value))
        if template:
            writer.add_chat_template(template)
        for name, data in tensors.items():
            stored, qtype = _encode(data, dtype)
            if qtype is None:
                writer.add_tensor(name, stored)
            else:
                writer.add_tensor(name, stored, raw_dtype=qtype)  # byte shape -> element shape inside
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        worst = _check(tmp, kv, tensors, dtype)
    return GGUFResult(
        out=str(out),
        checkpoint=str(ckpt),
        architecture=arch,
        dtype=dtype,
        n_tensors=len(tensors),
        bytes=out.stat().st_size,
        pre_tokenizer=vocab.pre,
        bos_id=prompt.bos_id,
        eos_id=eos,
        eot_id=eot,
        add_bos=add_bos,
        add_eos=prompt.add_eos,
        chat_template=template is not None,
        max_abs_error=worst,
        context_length=context,
        keys=sorted(kv),
        warnings=[warning] if warning else [],
    )
