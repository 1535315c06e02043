"""Eval's forwards reuse the fused q|k|v and w1|w3 weights within a call, as generation does."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from llmctl.config import model_from_preset
from llmctl.eval.choice import loglikelihoods
from llmctl.eval.lm import score_shards
from llmctl.eval.model_io import LoadedModel
from llmctl.eval.tasks import ChoiceItem
from llmctl.model.llama import Attention, Transformer


class _Shard:
    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens, self.num_tokens = tokens, len(tokens)


def _loaded() -> tuple[LoadedModel, list[bool]]:
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(model_from_preset("tiny"), vocab_size=64, max_seq_len=32)).eval()
    cached: list[bool] = []
    for m in model.modules():
        if isinstance(m, Attention):
            m.register_forward_pre_hook(lambda mod, _args: cached.append("_fused_cache" in mod.__dict__))
    return LoadedModel(model, None, {}, torch.device("cpu"), "mem"), cached


def test_choice_scoring_runs_inside_the_fused_weight_scope() -> None:
    loaded, cached = _loaded()
    items = [ChoiceItem("ab", ["c", "dd"], 0), ChoiceItem("abc", ["d", "e"], 1)]
    lls = loglikelihoods(
        loaded, items, pair_ids=lambda ctx, ch: ([ord(c) % 64 for c in ctx], [ord(c) % 64 for c in ch])
    )
    assert cached and all(cached)
    assert all(np.isfinite(v) for row in lls for v in row)
    assert not any("_fused_cache" in m.__dict__ for m in loaded.model.modules())  # freed after the call


def test_token_scoring_runs_inside_the_fused_weight_scope(monkeypatch) -> None:
    import llmctl.eval.lm as lm

    loaded, cached = _loaded()
    monkeypatch.setattr(lm, "token_byte_lengths", lambda _tok: np.ones(64, dtype=np.int64))
    monkeypatch.setattr(lm, "special_id_mask", lambda _tok, vocab: np.zeros(vocab, dtype=bool))
    shard = _Shard(np.arange(200, dtype=np.int64) % 64)
    score = score_shards(loaded, [shard], "validation", "mem", max_tokens=100)
    assert cached and all(cached)
    assert score is not None
