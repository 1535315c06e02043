"""The Transformer against the planning arithmetic (parameters, FLOPs) and against itself (cache, masks)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from llmctl.config import ModelConfig, model_from_preset
from llmctl.infer.generate import IncrementalDecoder, filter_logits, generate
from llmctl.model.llama import Transformer
from llmctl.plan.flops import flops_per_token, param_counts
from llmctl.presets import PRESETS


def _tiny(**changes: object) -> ModelConfig:
    return dataclasses.replace(model_from_preset("tiny"), **changes)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_parameter_count_equals_the_planner_for_every_preset(preset: str) -> None:
    cfg = model_from_preset(preset)
    with torch.device("meta"):
        model = Transformer(cfg)
    counts = param_counts(cfg)
    assert model.num_params() == counts.total
    assert model.num_params(non_embedding=True) == counts.non_embedding


FAMILIES = [
    {"head_dim": 32, "qk_norm": "head"},  # Qwen3: heads wider than dim / n_heads, per-head QK-norm
    {"qk_norm": "proj", "norm_placement": "post"},  # OLMo 2
]


@pytest.mark.parametrize("changes", FAMILIES)
def test_family_options_add_exactly_the_planned_parameters_and_keep_cache_decoding(changes: dict) -> None:
    torch.manual_seed(0)
    cfg = _tiny(**changes)
    model = Transformer(cfg).eval()
    assert model.num_params() == param_counts(cfg).total
    assert model.num_params() > Transformer(_tiny(head_dim=changes.get("head_dim"))).num_params()
    x = torch.randint(0, 8192, (2, 30))
    cache = model.new_cache(2, 64)
    pieces = [model(x[:, :20], cache=cache), model(x[:, 20:21], cache=cache), model(x[:, 21:], cache=cache)]
    assert torch.allclose(torch.cat(pieces, 1), model(x), atol=1e-5)


def test_the_default_block_has_no_qk_norm_and_pre_norms() -> None:
    model = Transformer(_tiny())
    assert not any("q_norm" in name or "k_norm" in name for name, _ in model.named_parameters())
    assert not model.layers[0].post_norm


@pytest.mark.parametrize(
    "changes", [{}, {"tied_embeddings": True, "qkv_bias": True}, {"n_kv_heads": 4}, *FAMILIES]
)
def test_forward_flops_measured_by_torch_equal_the_analytic_count(changes: dict) -> None:
    cfg = _tiny(**changes)
    model = Transformer(cfg)
    B, T = 2, 64
    tokens = torch.randint(0, cfg.vocab_size, (B, T))
    # The math kernel runs attention as matmuls that FlopCounterMode sees (CPU flash kernels are not counted).
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens)
    measured = counter.get_total_flops()
    expected = flops_per_token(cfg, T).forward * B * T
    assert measured == pytest.approx(expected, rel=0.01)


def test_kv_cache_decoding_equals_the_full_forward() -> None:
    torch.manual_seed(0)
    model = Transformer(_tiny()).eval()
    x = torch.randint(0, 8192, (2, 40))
    cache = model.new_cache(2, 64)
    pieces = [model(x[:, :25], cache=cache), model(x[:, 25:26], cache=cache), model(x[:, 26:], cache=cache)]
    assert torch.allclose(torch.cat(pieces, 1), model(x), atol=1e-5)
    assert cache.length == 40


def test_document_mask_equals_separate_sequences() -> None:
    torch.manual_seed(0)
    model = Transformer(_tiny()).eval()
    a, b = torch.randint(0, 8192, (1, 10)), torch.randint(0, 8192, (1, 6))
    packed = torch.cat([a, b], 1)
    doc_ids = torch.tensor([[0] * 10 + [1] * 6])
    positions = torch.tensor([list(range(10)) + list(range(6))])
    out = model(packed, doc_ids=doc_ids, position_ids=positions)
    assert torch.allclose(out[:, :10], model(a), atol=1e-5)
    assert torch.allclose(out[:, 10:], model(b), atol=1e-5)


def test_tied_head_shares_the_embedding_and_residual_init_is_scaled() -> None:
    model = Transformer(_tiny(tied_embeddings=True, n_layers=8))
    assert model.output.weight is model.tok_embeddings.weight
    wo = model.layers[0].attention.wo.weight.std().item()
    wq = model.layers[0].attention.wq.weight.std().item()
    assert wo == pytest.approx(wq / 4, rel=0.1)  # 0.02 / sqrt(2 * 8)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    model = Transformer(_tiny())
    x = torch.randint(0, 8192, (2, 16))
    model(x).sum().backward()
    plain = model.tok_embeddings.weight.grad.clone()
    model.zero_grad()
    model.activation_checkpointing = True
    model(x).sum().backward()
    assert torch.allclose(model.tok_embeddings.weight.grad, plain, atol=1e-6)


def test_sampling_filters_and_generation() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[True, False, False, True]]
    # probabilities ~ [0.09, 0.64, 0.24, 0.03]: the nucleus of 0.7 holds tokens 1 and 2.
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[True, False, False, True]]
    torch.manual_seed(0)
    model = Transformer(_tiny(max_seq_len=32))
    greedy = generate(model, [1, 2, 3], max_new_tokens=5, temperature=0)
    assert len(greedy.ids) == 5 and greedy.stop_reason == "length"
    assert generate(model, [1, 2, 3], max_new_tokens=5, temperature=0).ids == greedy.ids
    seeded = [generate(model, [1, 2, 3], max_new_tokens=5, temperature=1.0, seed=4).ids for _ in range(2)]
    assert seeded[0] == seeded[1]
    stopped = generate(model, [1, 2, 3], max_new_tokens=5, temperature=0, stop_ids=[greedy.ids[1]])
    assert stopped.ids == greedy.ids[:2] and stopped.stop_reason == "stop"
    # A prompt longer than the context keeps its end, and generation stops when the context is full.
    long = generate(model, list(range(100)), max_new_tokens=10, temperature=0)
    assert long.prompt_tokens == 31 and len(long.ids) == 1


def test_incremental_decoder_holds_split_characters() -> None:
    text = "h\u00e9"
    raw = list(text.encode())

    def decode(ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    dec = IncrementalDecoder(decode)
    pieces = [dec.push(i) for i in raw]
    assert pieces == ["h", "", "\u00e9"] and dec.flush() == ""
