"""The generation forward of llmctl/infer/decode.py: the same logits and tokens as the model's own modules,
and the modules whenever the architecture has something the plan does not mirror."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from test_batched_generation import _model, _prompts, assert_same_or_near_tie

from llmctl.config import LoRAConfig, ModelConfig, model_from_preset
from llmctl.infer import decode
from llmctl.infer.batch import Request, generate_batch
from llmctl.infer.decode import DecodePlan
from llmctl.infer.sampling import Sampling
from llmctl.model.llama import KVCache, Transformer
from llmctl.model.lora import adapters_disabled, apply_lora


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cache(model: Transformer, rows: int, capacity: int) -> KVCache:
    shape = (rows, model.cfg.kv_heads, capacity, model.cfg.head_size)
    return KVCache([torch.zeros(shape) for _ in model.layers], [torch.zeros(shape) for _ in model.layers])


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_plan_logits_equal_the_modules_prefill_and_decode(qkv_bias: bool) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=300, max_seq_len=64, qkv_bias=qkv_bias)
    model = Transformer(cfg).eval()
    if qkv_bias:
        with torch.no_grad():
            for block in model.layers:
                for lin in (block.attention.wq, block.attention.wk, block.attention.wv):
                    lin.bias.normal_()
    plan = DecodePlan.build(model)
    assert plan is not None
    tokens = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        want = model(tokens)
        cache = _cache(model, 2, 16)
        rotation = torch.complex(model.rope_cos[:11], model.rope_sin[:11])[None, :, None]
        prefill = plan.forward(tokens[:, :11], rotation, None, cache)
        step_rotation = torch.complex(model.rope_cos[11:12], model.rope_sin[11:12])[None, :, None]
        step = plan.forward(tokens[:, 11:], step_rotation, None, cache)
    torch.testing.assert_close(prefill, want[:, 10], rtol=0, atol=2e-5)
    torch.testing.assert_close(step, want[:, 11], rtol=0, atol=2e-5)
    assert cache.length == 12


def test_generation_through_the_plan_equals_the_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    model, prompts = _model(), _prompts()[:6]
    greedy = [Request(p, 12, Sampling(temperature=0.0)) for p in prompts]
    fast = generate_batch(model, greedy, max_batch=4)
    monkeypatch.setattr(DecodePlan, "build", staticmethod(lambda m: None))
    slow = generate_batch(model, greedy, max_batch=4)
    for p, a, b in zip(prompts, fast, slow, strict=True):
        assert_same_or_near_tie(model, p, a.ids, b.ids)


def test_architectures_the_plan_does_not_mirror_use_the_modules() -> None:
    base = dataclasses.replace(model_from_preset("tiny"), vocab_size=300, max_seq_len=64)
    assert DecodePlan.build(Transformer(base)) is not None
    for change in ({"qk_norm": "head"}, {"qk_norm": "proj"}, {"norm_placement": "post"}):
        assert DecodePlan.build(Transformer(dataclasses.replace(base, **change))) is None, change
    hooked = Transformer(base)
    hooked.layers[1].feed_forward.register_forward_hook(lambda *_: None)  # e.g. FSDP's, or a probe
    assert DecodePlan.build(hooked) is None
    # Options the plan does not mirror (Gemma 3's and Mistral's) send a model that sets them to the modules.
    for change in ({"sliding_window": 8}, {"activation": "gelu_tanh"}, {"norm_unit_offset": True}):
        assert not decode._plain_config(dataclasses.replace(base, **change)), change
    # An option added to ModelConfig later (here a made-up one) is not silently ignored by the plan either.
    later = dataclasses.make_dataclass(
        "Later", [("future_option", int, 0)], bases=(ModelConfig,), frozen=True
    )
    assert decode._plain_config(later(**dataclasses.asdict(base)))
    assert not decode._plain_config(later(**dataclasses.asdict(base), future_option=8))


def test_lora_adapters_are_merged_into_the_plan_and_switched_off_with_the_base() -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(model_from_preset("tiny"), vocab_size=300, max_seq_len=64)
    model = apply_lora(Transformer(cfg), LoRAConfig(rank=4, targets=["all-linear"])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_b" in name:
                p.normal_(0, 0.05)  # B starts at 0; a trained adapter changes the outputs
    plan = DecodePlan.build(model)
    assert plan is not None
    tokens = torch.randint(0, 300, (2, 9))
    rotation = torch.complex(model.rope_cos[:9], model.rope_sin[:9])[None, :, None]
    with torch.no_grad():
        adapted = model(tokens)[:, -1]
        with adapters_disabled(model):
            base = model(tokens)[:, -1]
            base_plan = DecodePlan.build(model)
            assert base_plan is not None
            got_base = base_plan.forward(tokens, rotation, None, _cache(model, 2, 9))
        got = plan.forward(tokens, rotation, None, _cache(model, 2, 9))
    assert (adapted - base).abs().max() > 1e-2  # the adapters matter here
    torch.testing.assert_close(got, adapted, rtol=0, atol=1e-4)
    torch.testing.assert_close(got_base, base, rtol=0, atol=1e-4)
