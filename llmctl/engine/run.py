"""Setting up a training run around the Trainer: data, tokenizer, run directory, resume, model, telemetry.

    result = run_training(cfg, pretrain_objective)            # what `llmctl pretrain` calls
    result = run_training(cfg, make_sft_objective)            # what `llmctl sft` calls

The run directory is train.out_dir/train.name (DESIGN.md section 4): config.yaml, a copy of the
tokenizer, telemetry files and checkpoints/. `checkpoint.resume=auto` continues the named run from its
latest complete checkpoint (without a name: the newest run under out_dir that has one), and starts
fresh when there is none, so one command line serves a first start and every requeue.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmctl.config import Config, to_yaml
from llmctl.tokens.shards import read_meta
from llmctl.engine import distributed as D
from llmctl.engine.checkpoint import (
    check_compatible,
    find_latest,
    load_model_state,
    read_manifest,
    resolve_checkpoint,
)
from llmctl.engine.objectives import Objective, PretrainObjective
from llmctl.engine.runtime import choose_runtime
from llmctl.engine.trainer import Trainer, TrainResult
from llmctl.errors import LlmctlError
from llmctl.model.llama import Transformer
from llmctl.tokenizer.core import Tokenizer, load_tokenizer

ObjectiveFactory = Callable[[Config, dict[str, Any], Tokenizer, D.DistInfo], Objective]


@dataclass
class RunOutcome:
    """A finished (or stopped) run and where it lives."""

    run_dir: Path
    result: TrainResult
    resumed_from: str | None
    is_rank0: bool


def pretrain_objective(cfg: Config, meta: dict[str, Any], tokenizer: Tokenizer, dist: D.DistInfo) -> Objective:
    """The PretrainObjective a config describes."""
    assert cfg.data.path is not None
    return PretrainObjective(
        cfg.data.path, meta, tokenizer, seq_len=cfg.data.seq_len, micro_batch=cfg.train.micro_batch_size,
        seed=cfg.train.seed, eval_batches=cfg.train.eval_batches, prompts=list(cfg.train.sample_prompts),
        train_split=cfg.data.train_split, val_split=cfg.data.val_split, rank=dist.rank, world=dist.world_size,
    )


def smoke_test_config(cfg: Config, max_steps: int = 50) -> Config:
    """`--test`: a short run through every part of the loop: at most max_steps steps, an evaluation and a
    sample round halfway and at the end, a checkpoint at the end, in a run named test-<time>."""
    t = cfg.train
    steps = min(t.steps, max_steps)
    half = max(1, steps // 2)
    train = dataclasses.replace(
        t, steps=steps, eval_every=half, eval_batches=min(t.eval_batches, 4), sample_every=half,
        sample_tokens=min(t.sample_tokens, 32), log_every=max(1, min(t.log_every, 5)),
        name=t.name or f"test-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    optim = dataclasses.replace(cfg.optim, warmup_steps=min(cfg.optim.warmup_steps, steps // 5))
    return dataclasses.replace(cfg, train=train, optim=optim, checkpoint=dataclasses.replace(cfg.checkpoint, every=0))


def load_data(cfg: Config) -> tuple[dict[str, Any], Tokenizer]:
    """meta.json of data.path and the tokenizer it was made with (checked by fingerprint)."""
    if cfg.data.path is None:
        raise LlmctlError("no training data given", "pass --data DIR (a directory written by `llmctl tokenize`) or set data.path")
    meta = read_meta(cfg.data.path)
    recorded = meta.get("tokenizer") or {}
    path = recorded.get("path")
    if not path or not Path(path).exists():
        raise LlmctlError(
            f"the tokenizer recorded in {cfg.data.path}/meta.json is not there: {path}",
            "put the tokenizer back at that path, or re-run `llmctl tokenize` with the tokenizer's new path",
        )
    tokenizer = load_tokenizer(path)
    if recorded.get("fingerprint") and tokenizer.fingerprint != recorded["fingerprint"]:
        raise LlmctlError(
            f"{path} changed since {cfg.data.path} was tokenized (fingerprint {tokenizer.fingerprint[:12]}, "
            f"meta.json records {recorded['fingerprint'][:12]})",
            "re-run `llmctl tokenize` with this tokenizer, or restore the tokenizer the shards were made with",
        )
    return meta, tokenizer


def resolve_vocab(cfg: Config, meta: dict[str, Any], vocab_from_data: bool) -> Config:
    """Take model.vocab_size from the data's tokenizer unless the config fixed it (then it must fit)."""
    vocab = int(meta.get("vocab_size") or meta["tokenizer"]["vocab_size"])
    if vocab_from_data:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
    if cfg.model.vocab_size < vocab:
        raise LlmctlError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's tokenizer vocabulary ({vocab})",
            f"set --model.vocab_size={vocab} or larger, or leave it out to take it from the data",
        )
    return cfg


def _newest_run(out_dir: Path) -> Path | None:
    best: tuple[float, Path] | None = None
    if out_dir.is_dir():
        for run in out_dir.iterdir():
            found = find_latest(run / "checkpoints") if run.is_dir() else None
            if found is not None:
                stamp = (found / "checkpoint.json").stat().st_mtime
                if best is None or stamp > best[0]:
                    best = (stamp, run)
    return best[1] if best else None


def resolve_run_dir(cfg: Config) -> tuple[Path, Path | None]:
    """(run directory, checkpoint to resume from or None) for train.name/out_dir and checkpoint.resume."""
    out_dir = Path(cfg.train.out_dir)
    resume = cfg.checkpoint.resume
    if resume == "auto":
        run = out_dir / cfg.train.name if cfg.train.name else _newest_run(out_dir)
        if run is not None:
            return run, find_latest(run / "checkpoints")
    elif resume:
        ckpt = resolve_checkpoint(resume)
        run = out_dir / cfg.train.name if cfg.train.name else ckpt.parent.parent
        return run, ckpt
    name = cfg.train.name or f"{cfg.model.preset or 'model'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return out_dir / name, None


def _prepare_run_dir(run_dir: Path, cfg: Config, tokenizer: Tokenizer) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".config.yaml.tmp-{os.getpid()}"
    tmp.write_text(to_yaml(cfg))
    os.replace(tmp, run_dir / "config.yaml")
    name = "tokenizer.json" if Path(tokenizer.path).suffix == ".json" else "tokenizer.model"
    tmp = run_dir / f".{name}.tmp-{os.getpid()}"
    shutil.copyfile(tokenizer.path, tmp)
    os.replace(tmp, run_dir / name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): the same weights on every rank and every run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_training(
    cfg: Config,
    make_objective: ObjectiveFactory = pretrain_objective,
    *,
    vocab_from_data: bool = True,
    reporter: Any = None,
) -> RunOutcome:
    """Set up and run one training run; returns when it completes or stops (signal, deadline)."""
    from llmctl.plan.flops import flops_per_token

    wants_cuda = cfg.train.device.startswith("cuda") or (cfg.train.device == "auto" and torch.cuda.is_available())
    dist = D.init_distributed(cfg.dist.backend, "cuda" if wants_cuda else "cpu")
    try:
        runtime = choose_runtime(cfg.train, dist.local_rank)
        meta, tokenizer = load_data(cfg)
        cfg = resolve_vocab(cfg, meta, vocab_from_data)
        run_dir, resume = D.broadcast_object(dist, resolve_run_dir(cfg))
        if dist.is_rank0:
            _prepare_run_dir(run_dir, cfg, tokenizer)
        D.barrier(dist)
        seed_everything(cfg.train.seed)
        with torch.device(runtime.device):
            model = Transformer(cfg.model)
        if cfg.checkpoint.init and resume is None:
            init = resolve_checkpoint(cfg.checkpoint.init)
            manifest = read_manifest(init)
            assert manifest is not None
            check_compatible(init, manifest, cfg.model, tokenizer.fingerprint)
            model.load_state_dict(load_model_state(init, cfg.model))
        objective = make_objective(cfg, meta, tokenizer, dist)
        if reporter is None:
            from llmctl.telemetry import Telemetry

            reporter = Telemetry(cfg, run_dir if dist.is_rank0 else None, is_rank0=dist.is_rank0)
        # An objective that runs more than the policy per trained token (DPO's live reference) says so.
        flops = flops_per_token(cfg.model, cfg.data.seq_len)
        extra = getattr(objective, "extra_forward_passes", 0.0)
        trainer = Trainer(cfg, objective, model, reporter, runtime, dist, run_dir=run_dir, tokenizer=tokenizer,
                          data_meta=meta, flops_per_token=flops.train + extra * flops.train / 3)
        result = trainer.fit(resume=resume)
        return RunOutcome(run_dir, result, str(resume) if resume else None, dist.is_rank0)
    finally:
        D.shutdown(dist)
