"""Supervised fine-tuning: the objective the shared Trainer drives, and `run_sft`, what `llmctl sft` calls.

    outcome = run_sft(load_config("examples/configs/sft.yaml", ["--checkpoint.init=runs/base/checkpoints/latest",
                                                                "--data.path=tokens/instr"]))
    objective = SFTObjective("tokens/instr", meta, tokenizer, seq_len=512, micro_batch=8, seed=1337,
                             eval_batches=20, prompts=["Add 2 and 3."], packing=True)
    batch = objective.train_batch()   # targets are -100 except assistant replies and their <|end|>

Batches come from llmctl/tokens/sft_batches.py (padded, in random or length-sorted batches, or packed with per-conversation
attention). Samples are the model's replies to held-out conversations, shown next to the reference
reply, plus replies to the configured prompts, each rendered as a user turn by the chat profile.

Several chat sets (`--data a:epochs=3 --data b:epochs=1`) make a MixedSFTObjective: each source is an
SFTObjective of its own (its own shuffled epochs and position, seeded by seed + its index), and
micro-batches are interleaved by a deterministic schedule in proportion to each source's planned batches
(epochs x batches per epoch), so every source reaches its epoch count at the same time. All ranks follow
the same schedule, so they draw from the same source at each micro-step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmctl.config import Config, ModelConfig
from llmctl.data_sources import SourceSpec, sft_specs
from llmctl.engine.objectives import BaseObjective, Batch, SamplePrompt, config_prompts
from llmctl.engine.run import RunInputs, read_inputs, run_training
from llmctl.errors import LlmctlError
from llmctl.model.build import accepts_doc_ids
from llmctl.tokenizer.chat import get_profile, render, reply_stop_ids
from llmctl.tokenizer.core import Tokenizer
from llmctl.tokens.sft_batches import (
    Rows,
    SFTBatches,
    check_sft_compat,
    fixed_rows,
    load_conversations,
    require_sft,
    sft_meta,
)


def _batch(rows: Rows, packed: bool) -> Batch:
    return Batch(
        inputs=torch.from_numpy(rows.inputs),
        targets=torch.from_numpy(rows.targets),
        doc_ids=torch.from_numpy(rows.doc_ids) if packed else None,
        position_ids=torch.from_numpy(rows.position_ids) if packed else None,
        tokens=rows.tokens,
        samples=rows.samples,
    )


def _last_reply(ids: np.ndarray, mask: np.ndarray) -> tuple[int, int]:
    """(start, end) of the conversation's last trained run: the final assistant reply and its end token."""
    trained = np.flatnonzero(mask)
    end = int(trained[-1]) + 1
    gaps = np.flatnonzero(np.diff(trained) > 1)
    start = int(trained[gaps[-1] + 1]) if len(gaps) else int(trained[0])
    return start, end


class SFTObjective(BaseObjective):
    """Loss on assistant replies only, over SFT shards; the rest of the interface as PretrainObjective."""

    name = "sft"
    perplexity_name = "reply_perplexity"  # the loss counts reply tokens only

    def __init__(
        self,
        data_path: str | Path,
        meta: dict[str, Any] | None,
        tokenizer: Tokenizer,
        *,
        seq_len: int,
        micro_batch: int,
        seed: int,
        eval_batches: int,
        prompts: list[str],
        packing: bool = False,
        overlong: str = "truncate",
        batching: str = "random",
        train_split: str = "train",
        val_split: str = "validation",
        rank: int = 0,
        world: int = 1,
        validation_prompts: int = 3,
        packing_note: str | None = None,
        untrained: list[str] | None = None,
        untrained_rows: str = "warn",
    ) -> None:
        self.meta = meta or sft_meta(data_path)
        self.tokenizer = tokenizer
        self.packing = packing
        self.packing_note = packing_note
        from llmctl.tokenizer.template import TemplateChat

        self.seq_len, self.overlong = seq_len, overlong
        info = self.meta.get("chat_profile") or {}
        # `--template model` data: the model's own chat template renders prompts and names the stop ids.
        self.template = (
            TemplateChat.from_manifest({"chat": info}, tokenizer) if info.get("name") == "model" else None
        )
        self.profile = get_profile(info.get("name", "chat")) if self.template is None else None
        self.untrained = untrained or []
        self.untrained_rows = untrained_rows
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id or 0
        self.train = load_conversations(data_path, train_split, seq_len, overlong, self.meta)
        self.batching = batching
        self.stream = SFTBatches(
            self.train, micro_batch, seq_len, packing, seed, rank, world, self.pad_id, batching
        )
        self.val = None
        if val_split in self.meta.get("splits", {}):
            self.val = load_conversations(data_path, val_split, seq_len, overlong, self.meta)
        self._eval = (
            fixed_rows(self.val, micro_batch, eval_batches, self.pad_id, rank, world) if self.val else []
        )
        self._prompts = [self._fixed_prompt(p) for p in prompts] + self._data_prompts(validation_prompts)

    def _data_prompts(self, count: int) -> list[SamplePrompt]:
        """The data's own prompts, with their reference replies: evenly spaced held-out conversations (training
        ones where there is no validation split), the same every round, so replies compare across steps."""
        own, source = (
            (self.val, "validation") if self.val is not None and len(self.val) else (self.train, "train")
        )
        prompts: list[SamplePrompt] = []
        for i in np.linspace(0, len(own) - 1, count + 2)[1:-1].astype(int) if len(own) else []:
            ids, mask = own.ids_and_mask(int(i))
            if not mask.any():
                continue
            start, end = _last_reply(ids, mask)
            reply = ids[start:end]
            if len(reply) and reply[-1] in self.stop_ids():
                reply = reply[:-1]
            prompt = ids[:start].tolist()
            text = self.tokenizer.decode(reply.tolist())
            prompts.append(SamplePrompt(self._last_user_turn(prompt), prompt, text, source))
        return prompts

    def _last_user_turn(self, prompt: list[int]) -> str:
        """The text of the prompt's last user message: what samples.jsonl shows as the prompt."""
        if self.profile is None:
            return self.tokenizer.decode(prompt)
        user = self.tokenizer.token_to_id(self.profile.roles["user"])
        end = self.tokenizer.token_to_id(self.profile.end)
        starts = [i + 1 for i, t in enumerate(prompt) if t == user]
        if not starts:
            return self.tokenizer.decode(prompt[1:])
        stop = next((j for j in range(starts[-1], len(prompt)) if prompt[j] == end), len(prompt))
        return self.tokenizer.decode(prompt[starts[-1] : stop])

    def _fixed_prompt(self, text: str) -> SamplePrompt:
        if self.template is not None:
            ids = self.template.render_ids([{"role": "user", "content": text}], add_generation_prompt=True)
            return SamplePrompt(text, ids)
        rendered = render(
            [{"role": "user", "content": text}],
            self.profile,
            self.tokenizer.encode,
            self.tokenizer.token_to_id,
            add_generation_prompt=True,
        )
        return SamplePrompt(text, rendered.ids)

    def train_batch(self) -> Batch:
        return _batch(self.stream.next_rows(), self.packing)

    def eval_batches(self) -> list[Batch]:
        return [_batch(rows, False) for rows in self._eval]

    def sample_prompts(self) -> list[SamplePrompt]:
        return list(self._prompts)

    def stop_ids(self) -> list[int]:
        if self.profile is None:
            stops = [int(i) for i in (self.meta.get("chat_profile") or {}).get("stop_ids") or []]
            return list(
                dict.fromkeys(stops + ([self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []))
            )
        return reply_stop_ids(self.profile, self.tokenizer.token_to_id, self.tokenizer.eos_id)

    def describe(self) -> dict[str, Any]:
        counts = self.train.counts
        return {
            "conversations": counts["conversations"],
            "used": counts["used"],
            "truncated": counts["truncated"],
            "dropped_overlong": counts["dropped_overlong"],
            "dropped_untrained": counts["dropped_untrained"],
            "packing": self.packing if self.packing_note is None else f"off ({self.packing_note})",
            **({} if self.packing else {"batching": self.batching}),
            **(
                {"WARNING_untrained_rows": " ".join(self.untrained)}
                if self.untrained and self.untrained_rows == "warn"
                else {"untrained_rows_set_to_mean": " ".join(self.untrained)}
                if self.untrained
                else {}
            ),
            "batches_per_epoch": self.stream.batches_per_epoch(),
            "val_conversations": len(self.val) if self.val is not None else 0,
            "epoch": self.stream.epoch,
        }

    def data_counts(self) -> dict[str, Any]:
        """What happened to the conversations: counts, packing, seq_len and the overlong policy."""
        return {
            **self.train.counts,
            "untrained_special_tokens": self.untrained,
            "untrained_rows": self.untrained_rows if self.untrained else None,
            "packing": self.packing,
            "packing_note": self.packing_note,
            "batching": None if self.packing else self.batching,
            "seq_len": self.seq_len,
            "overlong": self.overlong,
        }

    def summary_extra(self) -> dict[str, Any]:
        """Added to summary.json by the reporter."""
        return {"sft_data": self.data_counts()}

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)


@dataclass
class _Counts:
    counts: dict[str, int] = field(default_factory=dict)


class MixedSFTObjective(BaseObjective):
    """Several SFTObjectives interleaved micro-batch by micro-batch, each for its planned epochs."""

    name = "sft"
    perplexity_name = "reply_perplexity"  # the loss counts reply tokens only

    def __init__(
        self,
        specs: list[SourceSpec],
        metas: list[dict[str, Any]],
        tokenizer: Tokenizer,
        *,
        seed: int,
        **kwargs: Any,
    ) -> None:
        self.specs = sft_specs(specs)
        self.parts = [
            SFTObjective(s.path, meta, tokenizer, seed=seed + i, **kwargs)
            for i, (s, meta) in enumerate(zip(self.specs, metas, strict=True))
        ]
        per_epoch = [p.stream.batches_per_epoch() for p in self.parts]
        planned = [s.epochs * n for s, n in zip(self.specs, per_epoch, strict=True)]  # type: ignore[operator]
        self.batch_weights = [p / sum(planned) for p in planned]
        self.epoch_tokens = [int((p.train.lengths - 1).sum()) for p in self.parts]
        planned_tokens = [s.epochs * t for s, t in zip(self.specs, self.epoch_tokens, strict=True)]  # type: ignore[operator]
        self.token_weights = [t / sum(planned_tokens) for t in planned_tokens]
        self.counts = [0] * len(self.parts)
        self.train = _Counts(
            {k: sum(p.train.counts.get(k, 0) for p in self.parts) for k in self.parts[0].train.counts}
        )
        self.packing = self.parts[0].packing

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Path, weight (share of the planned tokens), epochs asked for and tokens per epoch of each source."""
        return [
            {"path": s.path, "weight": w, "epochs_planned": s.epochs, "epoch_tokens": t}
            for s, w, t in zip(self.specs, self.token_weights, self.epoch_tokens, strict=True)
        ]

    def train_batch(self) -> Batch:
        slots = sum(self.counts) + 1
        pick = max(range(len(self.parts)), key=lambda i: (self.batch_weights[i] * slots - self.counts[i], -i))
        self.counts[pick] += 1
        batch = self.parts[pick].train_batch()
        return replace(
            batch, source_tokens=tuple(batch.tokens if i == pick else 0 for i in range(len(self.parts)))
        )

    def eval_batches(self) -> list[Batch]:
        return [replace(b, source=i) for i, p in enumerate(self.parts) for b in p.eval_batches()]

    def sample_prompts(self) -> list[SamplePrompt]:
        return self.parts[0].sample_prompts()

    def stop_ids(self) -> list[int]:
        return self.parts[0].stop_ids()

    def describe(self) -> dict[str, Any]:
        mix = " + ".join(f"{s.epochs:g} epoch(s) of {s.path}" for s in self.specs)
        return {
            "mix": mix,
            "conversations": self.train.counts.get("conversations"),
            "used": self.train.counts.get("used"),
        }

    def summary_extra(self) -> dict[str, Any]:
        """Added to summary.json by the reporter: the conversation counts of all sources together."""
        first = self.parts[0].data_counts()
        return {"sft_data": {**first, **self.train.counts}}

    def state_dict(self) -> dict[str, Any]:
        return {
            "mixture": [
                {"path": s.path, "epochs": s.epochs, "batches": c, "position": p.state_dict()}
                for s, c, p in zip(self.specs, self.counts, self.parts, strict=True)
            ]
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("mixture")
        if not isinstance(saved, list) or [(m.get("path"), m.get("epochs")) for m in saved] != [
            (s.path, s.epochs) for s in self.specs
        ]:
            raise LlmctlError(
                "the checkpoint's data position is for other SFT sources or epochs",
                "resume with the same --data sources and epochs the run started with",
            )
        for part, m in zip(self.parts, saved, strict=True):
            part.load_state_dict(m["position"])
        self.counts = [int(m["batches"]) for m in saved]


@dataclass
class SFTOutcome:
    """A finished SFT run: the training outcome plus what happened to the conversations."""

    run: Any
    """llmctl.engine.run.RunOutcome."""
    init: str
    """The checkpoint the weights came from."""
    data: dict[str, Any]
    """Conversation counts (used, truncated, dropped) and whether packing was on."""


_NO_PACKING = (
    "the model cannot restrict attention to one conversation, so batches are padded instead of packed"
)


def _untrained_tokens(
    init: Path, meta: dict[str, Any], tokenizer: Tokenizer, model: ModelConfig
) -> list[str]:
    """Chat-template tokens whose embedding or head row in the --init weights looks never trained."""
    from safetensors import safe_open

    from llmctl.model.untrained import template_token_ids, untrained_rows

    chat = meta.get("chat_profile") or {}
    if chat.get("name") != "model":
        return []
    with safe_open(str(init / "model.safetensors"), framework="pt") as fh:
        names = set(fh.keys())  # noqa: SIM118 - safe_open is not a mapping
        rows = {k: fh.get_tensor(k) for k in ("tok_embeddings.weight", "output.weight") if k in names}
    stops = [int(i) for i in chat.get("stop_ids") or []]
    return untrained_rows(rows, model, template_token_ids(tokenizer, chat.get("template_text"), stops))


def sft_objective(
    cfg: Config, inputs: RunInputs, dist: Any, *, untrained: list[str] | None = None
) -> SFTObjective | MixedSFTObjective:
    """The SFTObjective a config describes (packing only where the model takes per-conversation ids);
    `untrained` names template tokens whose rows in the init weights look never trained."""
    packing = cfg.data.packing and accepts_doc_ids()
    options: dict[str, Any] = dict(
        seq_len=cfg.data.seq_len,
        micro_batch=cfg.train.micro_batch_size,
        seed=cfg.train.seed,
        eval_batches=cfg.train.eval_batches,
        prompts=config_prompts(cfg.train),
        packing=packing,
        overlong=cfg.data.overlong,
        batching=cfg.data.batching,
        train_split=cfg.data.train_split,
        val_split=cfg.data.val_split,
        rank=dist.rank,
        world=dist.world_size,
        packing_note=_NO_PACKING if cfg.data.packing and not packing else None,
        untrained=untrained,
        untrained_rows=cfg.checkpoint.untrained_rows,
    )
    if cfg.data.sources:
        # Several SFT sets, each for its own epochs (`--data a:epochs=1 --data b:epochs=3`).
        return MixedSFTObjective(inputs.specs, inputs.metas, inputs.tokenizer, **options)
    return SFTObjective(inputs.path, inputs.meta, inputs.tokenizer, **options)


def run_sft(cfg: Config, reporter: Any = None, *, force: bool = False) -> SFTOutcome:
    """Fine-tune the --init checkpoint on SFT shards with the shared Trainer; fresh optimizer and schedule.

    meta.json, the tokenizer and the init checkpoint are each read once (`read_inputs`) and handed to the run.
    """
    if not cfg.checkpoint.init:
        raise LlmctlError("sft needs pretrained weights to start from", "pass --init RUN/checkpoints/latest")
    if cfg.lora.rank > 0 and cfg.checkpoint.untrained_rows == "mean":
        # The mean rows would be written into the frozen base, which a LoRA checkpoint does not hold.
        raise LlmctlError(
            "--untrained-rows mean changes the base's embedding rows, which a LoRA run freezes and does not save",
            "run `llmctl sft --untrained-rows mean` without --lora.rank first, or keep --untrained-rows warn",
        )
    cfg, inputs = read_inputs(cfg, init_always=True)
    init, meta, tokenizer = inputs.init, inputs.meta, inputs.tokenizer
    assert init is not None
    # A mixture's sources share tokenizer and profile: the first one's stand for all.
    require_sft(meta, inputs.path)
    check_sft_compat(meta, tokenizer, init.manifest.tokenizer.get("fingerprint"), inputs.path, init.path)
    untrained = _untrained_tokens(init.path, meta, tokenizer, cfg.model)
    after_init: Callable[[torch.nn.Module], None] | None = None
    if untrained and cfg.checkpoint.untrained_rows == "mean":
        from llmctl.model.untrained import fill_with_mean

        # Once the --init weights are in, before the optimizer is built.
        ids = [int(tokenizer.token_to_id(name)) for name in untrained]  # type: ignore[arg-type]
        after_init = functools.partial(fill_with_mean, ids=ids)
    outcome = run_training(
        cfg,
        functools.partial(sft_objective, untrained=untrained),
        reporter=reporter,
        force=force,
        inputs=inputs,
        after_init=after_init,
    )
    data = dict(outcome.result.summary.get("sft_data") or {})
    return SFTOutcome(outcome, str(init.path), data)
