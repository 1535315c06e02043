"""Preference tuning: the DPO objective the shared Trainer drives, reference log-probs, and `run_dpo`.

    outcome = run_dpo(load_config(None, {"checkpoint.init": "runs/sft/checkpoints/latest",
                                         "data.path": "tokens/prefs", "dpo.beta": 0.1}))

The Trainer is the one of pretrain and sft; `DPOObjective.loss_sum` replaces its cross-entropy with
the DPO (or IPO) loss summed over the micro-batch's pairs, and the Trainer divides by the step's pairs.
Reference log-probs come from the --ref checkpoint (default --init): computed once before training
(`dpo.ref_mode=precompute`, stored under RUN/reference/<key>/ where the key hashes the reference
weights, the data and the settings that change the numbers) or by a second model kept in memory
(`live`). Metrics carry TRL's names (`rewards/chosen`, `logps/chosen`, ...) in train and eval records.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmctl.config import Config
from llmctl.engine.dpo_loss import LOSSES, falling_chosen, preference_losses, sequence_logps
from llmctl.engine.dpo_reference import (
    ProgressCallback,
    load_or_compute_reference,
    pair_batch,
    reference_key,
)
from llmctl.engine.objectives import BaseObjective, Batch, SamplePrompt, config_prompts
from llmctl.engine.run import RunInputs, read_inputs, resolve_run_dir, run_training
from llmctl.errors import LlmctlError
from llmctl.tokenizer.chat import get_profile, render, reply_stop_ids
from llmctl.tokenizer.core import Tokenizer
from llmctl.tokenizer.template import TemplateChat
from llmctl.tokens.pair_batches import PairBatches, fixed_pair_rows, usable_pairs
from llmctl.tokens.pairs import PairShard, open_pairs

METRIC_NAMES = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)
WARN_WINDOW = 10
"""Steps per window of the falling-chosen check."""


def check_pair_lengths(pairs: PairShard, seq_len: int) -> str | None:
    """A warning when some pairs are longer than seq_len (they would not be trained), None when all fit;
    an error when more than half would be left out. Both name the seq_len that keeps every pair."""
    lengths = pairs.sequence_lengths()
    if not len(lengths):
        return None
    dropped = len(lengths) - len(usable_pairs(pairs, seq_len))
    if not dropped:
        return None
    # A sequence of n tokens gives n - 1 inputs (see usable_pairs).
    keep_all = int(lengths.max()) - 1
    what = (
        f"{dropped:,} of {len(lengths):,} training pairs are longer than --data.seq_len={seq_len} "
        "(prompt + reply) and will not be trained"
    )
    if 2 * dropped > len(lengths):
        raise LlmctlError(
            f"{what}: more than half",
            f"--data.seq_len={keep_all} keeps every pair (the longest prompt + reply); or re-tokenize "
            f"with `tokenize --mode dpo --max-len {seq_len + 1}` to cut the replies instead",
        )
    return f"{what}; --data.seq_len={keep_all} would keep them all"


def check_dpo_config(cfg: Config) -> None:
    """Refuse settings DPO cannot train with, naming the key."""
    d = cfg.dpo
    if not d.beta > 0 or not math.isfinite(d.beta):
        raise LlmctlError(
            f"dpo.beta must be positive, got {d.beta}",
            "e.g. --dpo.beta=0.1 (larger keeps closer to the reference)",
        )
    if d.loss not in LOSSES:
        raise LlmctlError(f"unknown dpo.loss '{d.loss}'", f"use one of {', '.join(LOSSES)}")
    if not 0 <= d.label_smoothing < 0.5:
        raise LlmctlError(
            f"dpo.label_smoothing must be in [0, 0.5), got {d.label_smoothing}",
            "e.g. --dpo.label_smoothing=0.1",
        )
    if d.label_smoothing and d.loss != "sigmoid":
        raise LlmctlError(
            "dpo.label_smoothing applies to the sigmoid loss only",
            "drop --dpo.label_smoothing or use --dpo.loss=sigmoid",
        )


class DPOObjective(BaseObjective):
    """DPO/IPO over pair shards: the Objective interface, plus `loss_sum` and `take_metrics` for the Trainer."""

    name = "dpo"
    perplexity_name = None  # exp(pair loss) is no perplexity

    def __init__(
        self,
        data_path: str | Path,
        meta: dict[str, Any],
        tokenizer: Tokenizer,
        cfg: Config,
        *,
        ref_model: torch.nn.Module | None = None,
        reference: dict[str, np.ndarray] | None = None,
        reference_is_base: bool = False,
        packing: bool = True,
        rank: int = 0,
        world: int = 1,
        validation_prompts: int = 2,
        reference_info: dict[str, Any] | None = None,
    ) -> None:
        self.reference_info = reference_info or {}
        self.meta, self.tokenizer, self.cfg = meta, tokenizer, cfg
        self.beta, self.loss, self.smoothing = cfg.dpo.beta, cfg.dpo.loss, cfg.dpo.label_smoothing
        self.ref_model, self.reference, self.packing = ref_model, reference, packing
        # LoRA with a live reference: the policy itself with its adapters switched off (no second model).
        self.reference_is_base = reference_is_base and reference is None
        self.extra_forward_passes = 1.0 if ref_model is not None or self.reference_is_base else 0.0
        info = meta.get("chat_profile") or {}
        # `tokenize --mode dpo --template model` data: the model's own chat template renders the sample
        # prompts and names the stop ids, as in SFT.
        self.template = (
            TemplateChat.from_manifest({"chat": info}, tokenizer) if info.get("name") == "model" else None
        )
        self.profile = get_profile(info.get("name", "chat")) if self.template is None else None
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id or 0
        d, t = cfg.data, cfg.train
        self.train = open_pairs(data_path, d.train_split, meta)
        self.stream = PairBatches(
            self.train, t.micro_batch_size, d.seq_len, packing, t.seed, rank, world, self.pad_id
        )
        self.val = open_pairs(data_path, d.val_split, meta) if d.val_split in meta["splits"] else None
        self._eval = (
            fixed_pair_rows(self.val, d.seq_len, t.micro_batch_size, t.eval_batches, self.pad_id, rank, world)
            if self.val
            else []
        )
        self._sums: dict[str, torch.Tensor | None] = {"train": None, "eval": None}
        self._history: list[tuple[float, float]] = []
        self._window: list[tuple[float, float]] = []
        self._warned = False
        self._prompts = [self._fixed_prompt(p) for p in config_prompts(t)]
        if self.val is not None and len(self.val):
            for i in np.linspace(0, len(self.val) - 1, validation_prompts + 2)[1:-1].astype(int):
                (prompt, _), (chosen, mask), _ = self.val.sides(int(i))
                # The prompt and what precedes the reply's first trained token: the chat profile's assistant
                # marker (a template's generation prompt already ends the prompt).
                first = next((j for j, m in enumerate(mask.tolist()) if m), 0)
                ids = [*prompt.tolist(), *chosen[:first].tolist()]
                reply = [int(x) for x, m in zip(chosen[first:], mask[first:], strict=True) if m][:-1]
                self._prompts.append(
                    SamplePrompt(
                        tokenizer.decode(prompt.tolist()[-32:]), ids, tokenizer.decode(reply), "validation"
                    )
                )

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

    # -- the Objective interface ----------------------------------------------------------------

    def train_batch(self) -> Batch:
        ref = self.reference.get(self.cfg.data.train_split) if self.reference else None
        return pair_batch(self.stream.next_rows(), self.packing, ref)

    def eval_batches(self) -> list[Batch]:
        ref = self.reference.get(self.cfg.data.val_split) if self.reference else None
        return [pair_batch(rows, False, ref) for rows in self._eval]

    def sample_prompts(self) -> list[SamplePrompt]:
        return list(self._prompts)

    def stop_ids(self) -> list[int]:
        if self.profile is None:
            stops = [int(i) for i in (self.meta.get("chat_profile") or {}).get("stop_ids") or []]
            eos = [self.tokenizer.eos_id] if self.tokenizer.eos_id is not None else []
            return list(dict.fromkeys(stops + eos))
        return reply_stop_ids(self.profile, self.tokenizer.token_to_id, self.tokenizer.eos_id)

    def summary_extra(self) -> dict[str, Any]:
        """Added to summary.json by the reporter (llmctl/engine/dpo.py: dpo_summary)."""
        return {"dpo_data": dpo_summary(self)}

    def describe(self) -> dict[str, Any]:
        usable = len(self.stream.usable)
        return {
            "pairs": len(self.train),
            "used": usable,
            "dropped_overlong": len(self.train) - usable,
            "packing": self.packing,
            "loss": self.loss,
            "beta": self.beta,
            "reference": "live"
            if self.ref_model is not None
            else "live (the policy with its adapters off)"
            if self.reference_is_base
            else (
                "precomputed (cached)"
                if self.reference_info.get("cached")
                else f"precomputed in {self.reference_info.get('seconds', 0):.1f}s"
            ),
            "batches_per_epoch": self.stream.batches_per_epoch(),
            "val_pairs": len(self.val) if self.val is not None else 0,
            "epoch": self.stream.epoch,
        }

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stream.load_state_dict(state)

    # -- what the Trainer asks of an objective with its own loss --------------------------------

    def loss_sum(
        self, model: torch.nn.Module, batch: Any, autocast: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed per-pair loss, pairs whose chosen reward beats the rejected one); metrics accumulate."""
        n = int(batch.pair_ids.numel())
        logps, counts, logit_sums = sequence_logps(model, batch, autocast, 2 * n)
        if batch.ref is not None:
            ref = batch.ref.to(logps.dtype)
            ref_c, ref_r = ref[:, 0], ref[:, 1]
        else:
            ref_c, ref_r = self._live_reference(model, batch, autocast, n)
        pc, pr = logps[0::2], logps[1::2]
        losses, chosen_r, rejected_r = preference_losses(
            pc,
            pr,
            ref_c,
            ref_r,
            beta=self.beta,
            loss=self.loss,
            label_smoothing=self.smoothing,
            chosen_tokens=counts[0::2],
            rejected_tokens=counts[1::2],
        )
        right = (chosen_r > rejected_r).sum()
        with torch.no_grad():
            row = torch.stack(
                [
                    torch.tensor(float(n), device=logps.device, dtype=torch.float64),
                    chosen_r.double().sum(),
                    rejected_r.double().sum(),
                    (chosen_r - rejected_r).double().sum(),
                    right.double(),
                    pc.detach().double().sum(),
                    pr.detach().double().sum(),
                ]
            )
            row = torch.cat([row, logit_sums.to(row.device)])
        kind = "train" if model.training else "eval"
        current = self._sums[kind]
        self._sums[kind] = row if current is None else current + row
        return losses.sum(), right

    @torch.no_grad()
    def _live_reference(
        self, model: torch.nn.Module, batch: Any, autocast: Any, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) reference log-prob sums from the live reference: the second model, or the
        policy's own frozen base (a LoRA run) inside `adapters_disabled`."""
        if self.reference_is_base:
            from llmctl.model.lora import adapters_disabled

            with adapters_disabled(model):
                sums, _, _ = sequence_logps(model, batch, autocast, 2 * n, with_logits=False)
        else:
            assert self.ref_model is not None, "no reference: precomputed log-probs or a live model is needed"
            sums, _, _ = sequence_logps(self.ref_model, batch, autocast, 2 * n, with_logits=False)
        return sums[0::2], sums[1::2]

    def take_metrics(self, kind: str, dist: Any, device: torch.device) -> tuple[dict[str, float], list[str]]:
        """TRL-named means over the pairs since the last call (all ranks), and any warning to log."""
        from llmctl.engine import distributed as D

        sums = self._sums[kind]
        self._sums[kind] = None
        if sums is None:
            sums = torch.zeros(11, dtype=torch.float64, device=device)
        values = D.all_reduce_sum(dist, sums.to(device)).tolist()
        pairs = max(1.0, values[0])
        metrics = {
            "rewards/chosen": values[1] / pairs,
            "rewards/rejected": values[2] / pairs,
            "rewards/margins": values[3] / pairs,
            "rewards/accuracies": values[4] / pairs,
            "logps/chosen": values[5] / pairs,
            "logps/rejected": values[6] / pairs,
            "logits/chosen": values[7] / max(1.0, values[8]),
            "logits/rejected": values[9] / max(1.0, values[10]),
        }
        notes: list[str] = []
        if kind == "train":
            self._window.append((metrics["logps/chosen"], metrics["rewards/margins"]))
            if len(self._window) >= WARN_WINDOW:
                self._history.append(tuple(float(np.mean([w[i] for w in self._window])) for i in (0, 1)))  # type: ignore[arg-type]
                self._window = []
                if not self._warned and falling_chosen(self._history):
                    self._warned = True
                    notes.append(
                        "warning: the chosen replies' log-probs have fallen for "
                        f"{3 * WARN_WINDOW} steps while the margin grew: the model is pushing both replies down, "
                        "the rejected faster (a known DPO failure); consider a larger --dpo.beta, a lower "
                        "--optim.lr, or --dpo.loss=ipo"
                    )
        return metrics, notes


@dataclass
class DPOOutcome:
    """A finished DPO run: the training outcome plus what happened to the pairs and the reference."""

    run: Any
    init: str
    ref: str
    data: dict[str, Any]


def _prepare(cfg: Config) -> tuple[Config, RunInputs, Any]:
    """The config with the init checkpoint's model shape and a run name, the run's inputs (`read_inputs`)
    and the reference checkpoint, opened."""
    from llmctl.infer.checkpoint import open_checkpoint

    check_dpo_config(cfg)
    if not cfg.checkpoint.init:
        raise LlmctlError(
            "dpo needs a checkpoint to start from", "pass --init RUN/checkpoints/latest (usually an SFT run)"
        )
    cfg, inputs = read_inputs(cfg, init_always=True)
    ref = open_checkpoint(cfg.dpo.ref) if cfg.dpo.ref else inputs.init
    if not cfg.train.name:
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, name=f"dpo-{time.strftime('%Y%m%d-%H%M%S')}")
        )
    return cfg, inputs, ref


def dpo_summary(objective: DPOObjective) -> dict[str, Any]:
    """What summary.json records of a DPO run's data and reference (`dpo_data`)."""
    from llmctl.plan.flops import flops_per_token

    cfg, ref_info = objective.cfg, objective.reference_info
    data: dict[str, Any] = {
        **{k: v for k, v in objective.describe().items() if k != "epoch"},
        "seq_len": cfg.data.seq_len,
        "ref_mode": cfg.dpo.ref_mode,
        "reference_precompute": ref_info or None,
    }
    if ref_info:
        # Forward-only FLOPs spent once, up front, on the reference log-probs (0 when read from the cache).
        fwd = flops_per_token(cfg.model, cfg.data.seq_len).train / 3
        data["reference_flops"] = 0.0 if ref_info.get("cached") else ref_info["tokens"] * fwd
    return data


def dpo_objective(
    cfg: Config,
    inputs: RunInputs,
    dist: Any,
    *,
    ref: Any,
    run_dir: Path,
    on_progress: ProgressCallback | None = None,
    policy: list[torch.nn.Module] | None = None,
) -> DPOObjective:
    """The DPOObjective a config describes, with its reference: a live second model (`dpo.ref_mode=live`),
    or log-probs computed once and kept under run_dir/reference/ (`precompute`).

    `policy` holds the run's own model when it is a LoRA run whose reference is its --init base: then the
    reference is that model with its adapters switched off, live or for the precomputed log-probs, and no
    second model is built."""
    from llmctl.engine.runtime import choose_runtime
    from llmctl.model.build import accepts_doc_ids, build_model

    meta, data_path = inputs.meta, inputs.path
    runtime = choose_runtime(cfg.train, dist.local_rank)

    def make_ref() -> torch.nn.Module:
        # A LoRA run's checkpoint as --dpo.ref: its base and adapters (a LoRA DPO run's own reference is its
        # --init checkpoint, the base without adapters).
        state, lora = ref.model_state(), ref.config.lora
        return build_model(cfg.model, runtime.device, state=state, lora=lora).requires_grad_(False)

    base = policy[0] if policy else None
    ref_model, reference, ref_info = None, None, {}
    if cfg.dpo.ref_mode == "live":
        ref_model = make_ref() if base is None else None
    else:
        splits = [s for s in (cfg.data.train_split, cfg.data.val_split) if s in meta["splits"]]
        shards = {s: open_pairs(data_path, s, meta) for s in splits}
        key = reference_key(ref.path, data_path, splits, cfg, runtime.dtype)
        reference, ref_info = _precompute(
            run_dir, key, shards, make_ref, base, cfg, runtime, dist, on_progress
        )
    return DPOObjective(
        data_path,
        meta,
        inputs.tokenizer,
        cfg,
        ref_model=ref_model,
        reference=reference,
        reference_is_base=base is not None,
        packing=cfg.data.packing and accepts_doc_ids(),
        rank=dist.rank,
        world=dist.world_size,
        reference_info=ref_info,
    )


def _precompute(
    run_dir: Path,
    key: str,
    shards: dict[str, Any],
    make_ref: Callable[[], torch.nn.Module],
    base: torch.nn.Module | None,
    cfg: Config,
    runtime: Any,
    dist: Any,
    on_progress: ProgressCallback | None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """load_or_compute_reference with the reference checkpoint's model, or (`base`, a LoRA policy) the
    policy itself with its adapters switched off, back in training mode afterwards."""
    if base is None:
        return load_or_compute_reference(run_dir, key, shards, make_ref, cfg, runtime, dist, on_progress)
    from llmctl.model.lora import adapters_disabled

    with adapters_disabled(base):
        found = load_or_compute_reference(run_dir, key, shards, lambda: base, cfg, runtime, dist, on_progress)
    base.train()
    return found


def _check_inputs(cfg: Config, inputs: RunInputs, ref: Any, on_warning: Callable[[str], None] | None) -> None:
    """Pair shards made with the init checkpoint's tokenizer and chat profile, a reference of the same
    shape, and how many pairs data.seq_len leaves out (a warning on rank 0, an error past half)."""
    from llmctl.engine.checkpoint import check_compatible
    from llmctl.tokens.pairs import require_pairs
    from llmctl.tokens.sft_batches import check_sft_compat

    init, meta, tokenizer, data_path = inputs.init, inputs.meta, inputs.tokenizer, inputs.path
    assert init is not None
    require_pairs(meta, data_path)
    check_sft_compat(meta, tokenizer, init.manifest.tokenizer.get("fingerprint"), data_path, init.path)
    check_compatible(ref.path, ref.manifest, cfg.model, tokenizer.fingerprint)
    if cfg.data.train_split in meta["splits"]:
        warning = check_pair_lengths(open_pairs(data_path, cfg.data.train_split, meta), cfg.data.seq_len)
        if warning and on_warning is not None and int(os.environ.get("RANK", "0")) == 0:
            on_warning(warning)


def run_dpo(
    cfg: Config,
    reporter: Any = None,
    *,
    force: bool = False,
    on_progress: ProgressCallback | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> DPOOutcome:
    """Preference-tune the --init checkpoint on pair shards with the shared Trainer.

    The init and reference checkpoints are opened (and verified) once, here. Before anything runs,
    pairs longer than data.seq_len are counted: a warning through `on_warning` (rank 0), or an error
    when more than half would be left out. `on_progress` follows the reference log-prob pass."""
    cfg, inputs, ref = _prepare(cfg)
    _check_inputs(cfg, inputs, ref, on_warning)
    # A LoRA run's reference is its own base (adapters off) unless --dpo.ref names another checkpoint.
    policy: list[torch.nn.Module] = []
    own_base = cfg.lora.rank > 0 and not cfg.dpo.ref
    make = functools.partial(
        dpo_objective, ref=ref, run_dir=resolve_run_dir(cfg)[0], on_progress=on_progress, policy=policy
    )
    outcome = run_training(
        cfg,
        make,
        reporter=reporter,
        force=force,
        inputs=inputs,
        with_model=policy.append if own_base else None,
    )
    data = dict(outcome.result.summary.get("dpo_data") or {})
    return DPOOutcome(outcome, str(inputs.init.path), str(ref.path), data)  # type: ignore[union-attr]
