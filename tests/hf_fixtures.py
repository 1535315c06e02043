"""Tiny random Hugging Face models with real tokenizers, saved with save_pretrained, for import/export tests.

path = make_hf_model(tmp_path / "llama", "llama")   # Llama-3.2 style: llama3 RoPE scaling, GQA, tied, BOS
path = make_hf_model(tmp_path / "qwen", "qwen2")    # Qwen2 style: QKV bias, tied, ChatML, no BOS
path = make_hf_model(tmp_path / "q3", "qwen3")      # Qwen3: per-head QK-norm, head_dim 32 != 64 / 4, ChatML
path = make_hf_model(tmp_path / "olmo", "olmo2", tied=False)  # OLMo 2: QK-norm over q/k, post-norms
path = make_hf_model(tmp_path / "g3", "gemma3")      # Gemma 3: 6 layers, 5 local (window 16) : 1 global
path = make_hf_model(tmp_path / "mi", "mistral")     # Mistral: a 16-token window on every layer, [INST]
"""

from __future__ import annotations

from pathlib import Path

LLAMA3_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
CHATML_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "def main():\n    print('hello world')\n    return 0\n",
    "A small model learns to reverse words: module becomes eludom.",
    "Numbers like 1 + 2 = 3 and 10 * 20 = 200 appear in text.",
    "Once upon a time there was a tiny language model that could chat.",
] * 20
SPECIALS = {
    "llama": [
        "<|begin_of_text|>",
        "<|end_of_text|>",
        "<|start_header_id|>",
        "<|end_header_id|>",
        "<|eot_id|>",
    ],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}
SPECIALS["qwen3"] = SPECIALS["olmo2"] = SPECIALS["qwen2"]
SPECIALS["gemma3"] = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"]
SPECIALS["mistral"] = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"]
# Gemma's own template, content lists left out: no system role, a system message is put before the first
# user turn's text; `assistant` is called `model`.
GEMMA3_TEMPLATE = (
    "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{%- for message in messages %}{%- if message['role'] == 'user' %}"
    "{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- else %}{{- message['content'] + eos_token }}"
    "{%- endif %}{%- endfor %}"
)
BOS_FIRST = {
    "llama": ("<|begin_of_text|>", "<|eot_id|>"),
    "gemma3": ("<bos>", "<end_of_turn>"),
    "mistral": ("<s>", "</s>"),
}
TEMPLATES = {"llama": LLAMA3_TEMPLATE, "gemma3": GEMMA3_TEMPLATE, "mistral": MISTRAL_TEMPLATE}


def make_tokenizer(kind: str):
    """A byte-level BPE with the special tokens and post-processor of a Llama-3 or Qwen2 tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS[kind],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TEXT, trainer)
    if kind in BOS_FIRST:
        bos_token, eos_token = BOS_FIRST[kind]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A {bos_token} $B",
            special_tokens=[(bos_token, tok.token_to_id(bos_token))],
        )
        pad = {"gemma3": "<pad>", "mistral": None}.get(kind)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad,
            chat_template=TEMPLATES[kind],
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML_TEMPLATE
    )


def make_hf_model(path: Path, kind: str, seed: int = 0, tied: bool = True) -> Path:
    """Save a tiny random model of `kind` ('llama', 'qwen2', 'qwen3' or 'olmo2') with its tokenizer into `path`."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        Olmo2Config,
        Olmo2ForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    torch.manual_seed(seed)
    tok = make_tokenizer(kind)
    common = dict(
        vocab_size=len(tok) + 8,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        initializer_range=0.1,
    )
    if kind == "llama":
        config = LlamaConfig(
            **common,
            rope_theta=500000.0,
            bos_token_id=tok.bos_token_id,
            eos_token_id=[tok.convert_tokens_to_ids("<|end_of_text|>"), tok.eos_token_id],
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        )
        model = LlamaForCausalLM(config)
    elif kind == "qwen3":
        # head_dim 32 x 4 heads != hidden 64, as Qwen3 (128 x 16 at 1024).
        config = Qwen3Config(
            **common,
            head_dim=32,
            rope_theta=1000000.0,
            eos_token_id=tok.eos_token_id,
            use_sliding_window=False,
        )
        model = Qwen3ForCausalLM(config)
    elif kind in ("gemma3", "mistral"):
        model = _windowed_model(kind, common, tok)
    elif kind == "olmo2":
        config = Olmo2Config(
            **common, rope_theta=500000.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
        )
        model = Olmo2ForCausalLM(config)
    else:
        config = Qwen2Config(
            **common, rope_theta=1000000.0, eos_token_id=tok.eos_token_id, use_sliding_window=False
        )
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        # Random norms and biases, so a mapping that dropped or misplaced them would change the logits.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                # Gemma's norms scale by (1 + weight): random around 0 there, around 1 elsewhere.
                p.copy_((0.0 if kind == "gemma3" else 1.0) + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _windowed_model(kind: str, common: dict, tok):  # noqa: ANN001, ANN202
    """A tiny Gemma 3 (six layers: five with a 16-token window and RoPE base 10k, one global with 1M;
    head_dim 32 apart from 64 / 4, one KV head) or Mistral (a 16-token window on every layer)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, MistralConfig, MistralForCausalLM

    if kind == "mistral":
        config = MistralConfig(
            **common,
            rope_theta=1000000.0,
            sliding_window=16,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
        return MistralForCausalLM(config)
    common = {**common, "num_hidden_layers": 6, "num_key_value_heads": 1, "rms_norm_eps": 1e-6}
    config = Gemma3TextConfig(
        **common,
        head_dim=32,
        query_pre_attn_scalar=32,
        sliding_window=16,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config.architectures = ["Gemma3ForCausalLM"]
    return Gemma3ForCausalLM(config)


def ids_with_content_as_text(hf, conv: list[dict[str, str]], strip: bool, **kwargs) -> list[int]:  # noqa: ANN001
    """transformers' ids of `conv` rendered by its chat template, each message's content encoded as text
    (split_special_tokens) and the template's own text as usual: what llmctl's TemplateChat must produce,
    built without llmctl. `strip`: the template trims content (Llama 3's does)."""
    text = hf.apply_chat_template(conv, tokenize=False, **kwargs)
    ids: list[int] = []
    at = 0
    for message in conv:
        content = message["content"].strip() if strip else message["content"]
        start = text.index(content, at)
        ids += hf(text[at:start], add_special_tokens=False)["input_ids"]
        ids += hf(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        at = start + len(content)
    return ids + hf(text[at:], add_special_tokens=False)["input_ids"]
