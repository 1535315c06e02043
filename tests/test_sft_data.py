"""SFT batching: masks and targets stay inside conversations, order is seeded, ranks disjoint, resume exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from chat_fixtures import instruction_rows, make_sft_tokens

from llmctl.errors import LlmctlError
from llmctl.tokenizer.core import load_tokenizer
from llmctl.tokens.sft_batches import IGNORE, SFTBatches, collate, load_conversations


@pytest.fixture(scope="module")
def sft_tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("sft_data")
    # A few long conversations (a long user turn, then a reply) for the overlong policies.
    rows = instruction_rows(120, seed=1)
    for i in range(0, 120, 15):
        rows[i] = [
            {"role": "user", "content": " ".join(["papa quebec"] * 40)},
            {"role": "assistant", "content": "ok"},
        ]
    return make_sft_tokens(tmp, rows, instruction_rows(20, seed=2))


def _conversation_targets(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[1:] == 1, ids[1:], IGNORE)


def test_packed_rows_keep_each_conversation_and_its_mask(sft_tokens: tuple[Path, Path]) -> None:
    tokens, tok_path = sft_tokens
    end_id = load_tokenizer(tok_path).token_to_id("<|end|>")
    convs = load_conversations(tokens, "train", seq_len=64, overlong="truncate")
    batches = SFTBatches(convs, micro_batch=4, seq_len=64, packing=True, seed=3, pad_id=2)
    seen = filled = 0
    for _ in range(batches.batches_per_epoch()):
        plan_rows = batches._plan[batches.index]
        rows = batches.next_rows()
        assert rows.inputs.shape == (4, 64)
        for b, row in enumerate(plan_rows):
            at = 0
            for d, c in enumerate(row):
                ids, mask = convs.ids_and_mask(c)
                n = len(ids) - 1
                segment = slice(at, at + n)
                # The conversation's own shifted tokens, its own mask, positions from 0, one doc id.
                assert (rows.inputs[b, segment] == ids[:-1]).all()
                assert (rows.targets[b, segment] == _conversation_targets(ids, mask)).all()
                assert (rows.position_ids[b, segment] == np.arange(n)).all()
                assert (rows.doc_ids[b, segment] == d).all()
                # The last target is the reply's <|end|>, never the next conversation's first token.
                assert rows.targets[b, at + n - 1] == end_id
                at += n
                seen += 1
            assert (rows.targets[b, at:] == IGNORE).all()
            assert (rows.doc_ids[b, at:] == len(row)).all()
        assert rows.samples == sum(len(r) for r in plan_rows)
        assert rows.tokens == sum(int(convs.lengths[c]) - 1 for r in plan_rows for c in r)
        filled += rows.tokens
    # Packs are nearly full; only the packs of a partial last micro-batch wait for the next epoch.
    assert filled / (batches.batches_per_epoch() * 4 * 64) > 0.9
    assert seen > 0.8 * len(convs)


def test_padded_batches_group_similar_lengths(sft_tokens: tuple[Path, Path]) -> None:
    tokens, _ = sft_tokens
    convs = load_conversations(tokens, "train", seq_len=64, overlong="truncate")
    batches = SFTBatches(convs, micro_batch=4, seq_len=64, packing=False, seed=3, pad_id=2, batching="length")
    real = padded = spread = 0
    for _ in range(batches.batches_per_epoch()):
        plan_rows = batches._plan[batches.index]
        rows = batches.next_rows()
        assert rows.samples == 4 and rows.inputs.shape[1] % 8 == 0 and rows.inputs.shape[1] <= 64
        real += rows.tokens
        padded += rows.inputs.size
        for b, (c,) in enumerate(plan_rows):
            n = int(convs.lengths[c]) - 1
            # Padding sits on the right of the conversation and is never trained.
            assert (rows.targets[b, n:] == IGNORE).all() and (rows.inputs[b, n:] == 2).all()
        lengths = [int(convs.lengths[c]) for (c,) in plan_rows]
        spread += max(lengths) - min(lengths)
    # Length buckets: conversations of a batch differ in length far less than random groups of 4.
    shuffled = (
        np.random.default_rng(0).permutation(convs.lengths)[: 4 * batches.batches_per_epoch()].reshape(-1, 4)
    )
    assert spread < 0.5 * (shuffled.max(axis=1) - shuffled.min(axis=1)).sum()
    assert real / padded > 0.5


def test_order_is_seeded_ranks_are_disjoint_and_resume_continues(sft_tokens: tuple[Path, Path]) -> None:
    tokens, _ = sft_tokens
    convs = load_conversations(tokens, "train", seq_len=64, overlong="truncate")

    def plan(seed: int, rank: int, world: int, packing: bool) -> list[list[list[int]]]:
        return SFTBatches(convs, 4, 64, packing, seed, rank, world)._epoch_plan(0)

    for packing in (False, True):
        assert plan(1, 0, 1, packing) == plan(1, 0, 1, packing)
        assert plan(1, 0, 1, packing) != plan(2, 0, 1, packing)
        r0 = {c for batch in plan(1, 0, 2, packing) for row in batch for c in row}
        r1 = {c for batch in plan(1, 1, 2, packing) for row in batch for c in row}
        # Disjoint but for the few that fill the last micro-batches a second time.
        both = [c for r in (0, 1) for batch in plan(1, r, 2, packing) for row in batch for c in row]
        twice = {c for c in both if both.count(c) > 1}
        assert r0 and r1 and r0 & r1 <= twice and len(both) - len(set(both)) < 8 * (4 if packing else 1)
        assert len(plan(1, 0, 2, packing)) == len(plan(1, 1, 2, packing))

    a = SFTBatches(convs, 4, 64, True, 5)
    steps = a.batches_per_epoch() + 3  # crosses into the second epoch
    for _ in range(steps):
        a.next_rows()
    state = a.state_dict()
    expected = [a.next_rows().inputs for _ in range(4)]
    b = SFTBatches(convs, 4, 64, True, 5)
    b.load_state_dict(state)
    assert state["epoch"] == 1
    assert all((x == b.next_rows().inputs).all() for x in expected)


@pytest.mark.parametrize("packing,batching", [(False, "length"), (False, "random"), (True, "random")])
def test_every_conversation_is_trained_each_epoch_on_any_world_size(
    sft_tokens: tuple[Path, Path], packing: bool, batching: str
) -> None:
    tokens, _ = sft_tokens
    convs = load_conversations(tokens, "train", seq_len=64, overlong="truncate")
    longest = set(np.argsort(convs.lengths)[-4:].tolist())
    for micro_batch, world in ((8, 1), (7, 2), (5, 3)):
        for epoch in (0, 1):
            counts = np.zeros(len(convs), dtype=np.int64)
            per_rank = []
            for rank in range(world):
                stream = SFTBatches(convs, micro_batch, 64, packing, 11, rank, world, batching=batching)
                plan = stream._epoch_plan(epoch)
                per_rank.append(len(plan))
                for batch in plan:
                    assert len(batch) == micro_batch
                    for row in batch:
                        np.add.at(counts, row, 1)
            # Counted over all ranks: nobody left out (the longest included), ranks in step.
            assert counts.min() >= 1, (micro_batch, world, np.flatnonzero(counts == 0))
            assert longest <= set(np.flatnonzero(counts).tolist())
            assert len(set(per_rank)) == 1
            if not packing:
                # Only the few that fill the last micro-batches come twice.
                assert counts.sum() - len(convs) < micro_batch * world and counts.max() <= 2


def test_overlong_conversations_are_truncated_or_dropped_and_counted(sft_tokens: tuple[Path, Path]) -> None:
    tokens, _ = sft_tokens
    truncate = load_conversations(tokens, "train", seq_len=48, overlong="truncate")
    drop = load_conversations(tokens, "train", seq_len=48, overlong="drop")
    # The 8 long conversations' replies lie past the cut: truncation would leave nothing to train.
    assert truncate.counts["dropped_overlong"] == 8 and truncate.counts["truncated"] == 0
    assert drop.counts["dropped_overlong"] == 8 and drop.counts["used"] == 112
    assert truncate.lengths.max() <= 49
    cut = load_conversations(tokens, "train", seq_len=10, overlong="truncate")
    assert cut.counts["truncated"] > 0 and cut.lengths.max() == 11
    for i in range(len(cut)):
        ids, mask = cut.ids_and_mask(i)
        assert mask[1:].any()
    rows = collate(cut, [[0], [1]], pad_id=2)
    assert rows.inputs.shape == (2, 16)


def test_pretraining_shards_are_refused(tmp_path: Path, sft_tokens: tuple[Path, Path]) -> None:
    import json
    import shutil

    tokens, _ = sft_tokens
    copy = tmp_path / "pt"
    shutil.copytree(tokens, copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["mode"] = "pretrain"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LlmctlError, match="not SFT shards"):
        load_conversations(copy, "train", seq_len=64, overlong="truncate")


def test_a_conversation_inside_a_pack_gets_the_logits_it_gets_alone(sft_tokens: tuple[Path, Path]) -> None:
    import torch

    from llmctl.config import ModelConfig
    from llmctl.engine.sft import SFTObjective
    from llmctl.model.build import accepts_doc_ids
    from llmctl.model.llama import Transformer

    tokens, tok_path = sft_tokens
    tok = load_tokenizer(tok_path)
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(
            vocab_size=tok.vocab_size,
            dim=64,
            n_layers=2,
            n_heads=4,
            n_kv_heads=2,
            ffn_dim=128,
            max_seq_len=64,
        )
    ).eval()
    assert accepts_doc_ids(model)
    objective = SFTObjective(
        tokens, None, tok, seq_len=64, micro_batch=2, seed=0, eval_batches=2, prompts=[], packing=True
    )
    plan = objective.stream._plan or objective.stream._epoch_plan(0)
    batch = objective.train_batch()
    assert batch.doc_ids is not None and batch.position_ids is not None
    with torch.no_grad():
        packed = model(batch.inputs, doc_ids=batch.doc_ids, position_ids=batch.position_ids)
        checked = 0
        for b, row in enumerate(plan[0]):
            at = 0
            for c in row:
                ids, _ = objective.train.ids_and_mask(c)
                n = len(ids) - 1
                alone = model(torch.from_numpy(ids[None, :-1]))
                assert torch.allclose(packed[b, at : at + n], alone[0], atol=1e-5)
                at += n
                checked += 1
        assert checked >= 4
        # Without the per-conversation mask, a later conversation's logits would change.
        leaky = model(batch.inputs)
        assert not torch.allclose(leaky, packed, atol=1e-3)
    # The batch counts exactly the targets the loss will use.
    assert batch.trained_tokens == int((batch.targets != IGNORE).sum()) > 0
