"""Setting up a training run around the Trainer: data, tokenizer, run directory, resume, model, telemetry.

    cfg, inputs = read_inputs(cfg)                        # specs, meta.json files, tokenizer, --init: once
    outcome = run_training(cfg, make_objective, inputs=inputs)   # make_objective(cfg, inputs, dist)

The objectives (llmctl/engine/pretrain.py, sft.py, dpo.py) call this module; it imports none of them.

The run directory is train.out_dir/train.name (docs/ARCHITECTURE.md): config.yaml, a copy of the
tokenizer, telemetry files and checkpoints/. `checkpoint.resume=auto` continues the named run from its
latest complete checkpoint (without a name: the newest run under out_dir that has one), and starts
fresh when the run has no checkpoint at all, so one command line serves a first start and every
requeue. Checkpoints that exist but are all broken are an error, never a silent restart.

Everything is checked before anything is written: a resume whose checkpoint does not fit, or a fresh
start into a directory that already holds a run (without `force`), leaves the directory as it was.
Rank 0 holds an exclusive lock on the run directory (llmctl/engine/lock.py) while it trains.

Under SLURM, a run stopped by the job's time limit with steps left asks SLURM to requeue the job once
everything is written (slurm.requeue): the same command line, with `--resume auto`, then continues it.
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

from llmctl.config import Config, ModelConfig, check_lora_rank, from_dict, to_yaml
from llmctl.data_sources import SourceSpec
from llmctl.engine import distributed as D
from llmctl.engine.checkpoint import check_compatible
from llmctl.engine.objectives import Objective
from llmctl.engine.runtime import choose_runtime
from llmctl.engine.stopping import requeue_job
from llmctl.engine.trainer import Trainer, TrainResult
from llmctl.errors import LlmctlError
from llmctl.files import atomic_copy, atomic_write_text, io_error
from llmctl.infer.checkpoint import (
    MODEL_FILE,
    OPTIMIZER_FILE,
    OpenCheckpoint,
    find_latest,
    open_checkpoint,
    step_dirs,
)
from llmctl.model.build import build_model
from llmctl.tokenizer.core import Tokenizer, load_tokenizer
from llmctl.tokens.shards import read_meta

RUN_FILES = ("metrics.jsonl", "samples.jsonl", "loss.csv", "summary.json", "tb")
"""What a started run leaves in its directory (besides checkpoints/): a fresh start never overwrites them
unless asked with --force."""


@dataclass(frozen=True)
class RunInputs:
    """What a run reads before it starts, each once: the data sources, their meta.json files, the tokenizer
    they were made with, and the --init checkpoint (opened and verified) where one is given."""

    specs: list[SourceSpec]
    metas: list[dict[str, Any]]
    """One per source, in order."""
    tokenizer: Tokenizer
    init: OpenCheckpoint | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """The first source's meta.json (all sources share the tokenizer and, for SFT, the chat profile)."""
        return self.metas[0]

    @property
    def path(self) -> str:
        """The first source's directory."""
        return self.specs[0].path


ObjectiveFactory = Callable[[Config, RunInputs, D.DistInfo], Objective]
"""make_objective(cfg, inputs, dist): the objective of this rank."""


@dataclass
class RunOutcome:
    """A finished (or stopped) run and where it lives."""

    run_dir: Path
    result: TrainResult
    resumed_from: str | None
    is_rank0: bool
    requeued: str | None = None
    """The SLURM job id, when this run asked SLURM to requeue its job."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Lines for `warning:` on stderr (a requeue that failed or was skipped)."""


def smoke_test_config(cfg: Config, max_steps: int = 50) -> Config:
    """`--test`: a short run through every part of the loop: at most max_steps steps, an evaluation and a
    sample round halfway and at the end, a checkpoint at the end, in a run named test-<time>."""
    t = cfg.train
    steps = min(t.steps, max_steps)
    half = max(1, steps // 2)
    train = dataclasses.replace(
        t,
        steps=steps,
        eval_every=half,
        eval_batches=min(t.eval_batches, 4),
        sample_every=half,
        sample_tokens=min(t.sample_tokens, 32),
        log_every=max(1, min(t.log_every, 5)),
        name=t.name or f"test-{time.strftime('%Y%m%d-%H%M%S')}",
    )
    optim = dataclasses.replace(cfg.optim, warmup_steps=min(cfg.optim.warmup_steps, steps // 5))
    return dataclasses.replace(
        cfg, train=train, optim=optim, checkpoint=dataclasses.replace(cfg.checkpoint, every=0)
    )


def open_init(cfg: Config) -> tuple[Config, OpenCheckpoint]:
    """The config with the checkpoint.init checkpoint's model shape, and the opened checkpoint; model fields
    set in the config (other than the checkpoint's own) are refused."""
    init = open_checkpoint(cfg.checkpoint.init)  # type: ignore[arg-type]
    if init.config.lora.rank > 0:
        raise LlmctlError(
            f"--init {init.path} is a LoRA run's checkpoint (adapters on a base)",
            f"fold them in first: `llmctl export {init.path} --merge --out DIR`, `llmctl import DIR --out CKPT`, "
            "then --init CKPT",
        )
    saved = from_dict(init.manifest.config).model
    if cfg.model != ModelConfig() and cfg.model != saved:
        raise LlmctlError(
            "--init takes the model's shape from the checkpoint, but the config sets model fields",
            "remove the model section and --model.* overrides from the command",
        )
    if cfg.data.seq_len > saved.max_seq_len:
        raise LlmctlError(
            f"data.seq_len={cfg.data.seq_len} exceeds the checkpoint's model.max_seq_len={saved.max_seq_len}",
            f"set --data.seq_len={saved.max_seq_len} or less",
        )
    return dataclasses.replace(cfg, model=saved), init


def _read_tokenizer(data_path: str, meta: dict[str, Any]) -> Tokenizer:
    """The tokenizer meta.json records, checked against its fingerprint."""
    recorded = meta.get("tokenizer") or {}
    path = recorded.get("path")
    if not path or not Path(path).exists():
        raise LlmctlError(
            f"the tokenizer recorded in {data_path}/meta.json is not there: {path}",
            "put the tokenizer back at that path, or re-run `llmctl tokenize` with the tokenizer's new path",
        )
    tokenizer = load_tokenizer(path)
    if recorded.get("fingerprint") and tokenizer.fingerprint != recorded["fingerprint"]:
        raise LlmctlError(
            f"{path} changed since {data_path} was tokenized (fingerprint {tokenizer.fingerprint[:12]}, "
            f"meta.json records {recorded['fingerprint'][:12]})",
            "re-run `llmctl tokenize` with this tokenizer, or restore the tokenizer the shards were made with",
        )
    return tokenizer


def read_inputs(cfg: Config, *, init_always: bool = False) -> tuple[Config, RunInputs]:
    """Everything a run reads before it starts, each file once: checkpoint.init (for a fresh start or
    --resume auto; always with `init_always`, as fine-tuning needs its shape), then every source's
    meta.json (sources checked to share the tokenizer) and the tokenizer (checked by fingerprint).
    Returns the config with the init checkpoint's model shape."""
    from llmctl.data_sources import specs_from_config
    from llmctl.tokens.mix import check_same_tokenizer

    init = None
    if cfg.checkpoint.init and (init_always or cfg.checkpoint.resume in (None, "auto")):
        cfg, init = open_init(cfg)
    specs = specs_from_config(cfg.data.path, cfg.data.sources)
    if not specs:
        raise LlmctlError(
            "no training data given",
            "pass --data DIR (a directory written by `llmctl tokenize`) or set data.path",
        )
    metas = [read_meta(s.path) for s in specs]
    if len(specs) > 1:
        check_same_tokenizer(specs, metas)
    return cfg, RunInputs(specs, metas, _read_tokenizer(specs[0].path, metas[0]), init)


def resolve_vocab(cfg: Config, meta: dict[str, Any]) -> Config:
    """model.vocab_size None (the default) takes the data tokenizer's vocabulary; a set value must hold it."""
    vocab = int(meta.get("vocab_size") or meta["tokenizer"]["vocab_size"])
    if cfg.model.vocab_size is None:
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
            found = find_latest(run / "checkpoints")
            broken = step_dirs(run / "checkpoints")
            if found is None and broken:
                raise LlmctlError(
                    f"--resume auto: {run / 'checkpoints'} holds checkpoints but none is complete: "
                    + ", ".join(p.name for p in broken),
                    "restore a checkpoint from a copy, resume from one by path (--resume DIR), or start over "
                    "with --force (this replaces the run's files) or a new --out",
                )
            return run, found
    elif resume:
        opened = open_checkpoint(resume)
        ckpt = opened.path
        if OPTIMIZER_FILE not in opened.manifest.files:
            raise LlmctlError(
                f"{ckpt} holds weights only (no optimizer state, e.g. made by `llmctl import`), so no run can resume from it",
                f"start a new run from its weights with --init {ckpt} (fresh optimizer and schedule at step 0)",
            )
        run = out_dir / cfg.train.name if cfg.train.name else ckpt.parent.parent
        return run, ckpt
    name = cfg.train.name or f"{cfg.model.preset or 'model'}-{time.strftime('%Y%m%d-%H%M%S')}"
    return out_dir / name, None


def existing_run_files(run_dir: Path) -> list[str]:
    """The files of an earlier run in run_dir that a fresh start would replace."""
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if step_dirs(run_dir / "checkpoints"):
        found.append("checkpoints/")
    return found


def check_fresh_start(run_dir: Path, force: bool) -> None:
    """Refuse to start a new run over an earlier one's files unless `force`; with it, remove them."""
    if run_dir.exists() and not run_dir.is_dir():
        raise LlmctlError(f"--out {run_dir} is a file, not a folder", "choose a folder for the run")
    found = existing_run_files(run_dir)
    if not found:
        return
    if not force:
        raise LlmctlError(
            f"{run_dir} already holds a run ({', '.join(found)}); a fresh start would overwrite it",
            "continue it with --resume auto, choose another --out, or pass --force to replace it",
        )
    for name in [*RUN_FILES, "checkpoints"]:
        path = run_dir / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        except OSError as exc:
            raise io_error(exc, path, action="remove") from exc


def _prepare_run_dir(run_dir: Path, cfg: Config, tokenizer: Tokenizer) -> None:
    atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    name = "tokenizer.json" if Path(tokenizer.path).suffix == ".json" else "tokenizer.model"
    atomic_copy(tokenizer.path, run_dir / name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): the same weights on every rank and every run."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def requeue_after_stop(
    cfg: Config, result: TrainResult, environ: dict[str, str] | None = None
) -> tuple[str | None, list[str]]:
    """After the SLURM job's time limit stopped a run with steps left, `scontrol requeue` the job (slurm.requeue);
    called once the checkpoint, logs and lock are done with. Returns (the job id if requeued, warnings)."""
    env = os.environ if environ is None else environ
    job = env.get("SLURM_JOB_ID")
    if not (cfg.slurm.requeue and job and result.job_time_limit):
        return None, []
    t = cfg.train
    if result.step >= t.steps or (t.max_tokens is not None and result.tokens >= t.max_tokens):
        return None, []
    if result.step <= result.start_step:
        # Requeued again and again, a job too short for one step would never end.
        return None, [
            f"SLURM job {job} not requeued: it stopped at step {result.step}, where it started, so another "
            "run would make no progress either; give the job a longer --time or a smaller "
            "--checkpoint.deadline_margin, then resubmit it"
        ]
    warning = requeue_job(job)
    if warning:
        return None, [f"{warning}; submit the job again to continue from {result.checkpoint} (--resume auto)"]
    return job, []


def _checked_start(
    cfg: Config, inputs: RunInputs, dist: D.DistInfo
) -> tuple[Path, OpenCheckpoint | None, OpenCheckpoint | None]:
    """(run directory, checkpoint to resume, --init checkpoint to start from), every check done before the
    first write: a refused run leaves the directory as it was."""
    run_dir, resume_path = D.broadcast_object(dist, resolve_run_dir(cfg))
    resume = open_checkpoint(resume_path) if resume_path is not None else None
    fingerprint = inputs.tokenizer.fingerprint
    if resume is not None:
        check_compatible(resume.path, resume.manifest, cfg.model, fingerprint)
    init = inputs.init if resume is None else None
    if init is not None:
        check_compatible(init.path, init.manifest, cfg.model, fingerprint)
    if cfg.lora.rank > 0:
        if resume is None and init is None:
            raise LlmctlError(
                "LoRA trains adapters on a model's weights, and this run starts from random ones",
                "add --init CKPT (an imported or trained checkpoint), or drop --lora.rank",
            )
        check_lora_rank(cfg.model, cfg.lora)
    if cfg.lora.rank > 0 and cfg.lora.quantize != "none":
        from llmctl.model.quant import require_nf4

        require_nf4()
    return run_dir, resume, init


def _claim_run_dir(run_dir: Path, cfg: Config, tokenizer: Tokenizer, *, fresh: bool, force: bool) -> Any:
    """Rank 0: lock the run directory, refuse (or, with `force`, clear) an earlier run's files on a fresh
    start, and write config.yaml and the tokenizer copy. Returns the held RunLock."""
    from llmctl.engine.lock import RunLock

    if run_dir.exists() and not run_dir.is_dir():
        raise LlmctlError(f"--out {run_dir} is a file, not a folder", "choose a folder for the run")
    lock = RunLock(run_dir).acquire()
    try:
        if fresh:
            # `--resume auto` on a run that never wrote a checkpoint (a requeue before the first
            # save) restarts it: there is nothing to lose but the partial logs of that attempt.
            restart = cfg.checkpoint.resume == "auto" and not step_dirs(run_dir / "checkpoints")
            check_fresh_start(run_dir, force or restart)
        _prepare_run_dir(run_dir, cfg, tokenizer)
    except BaseException:
        lock.release()
        raise
    return lock


def _conventions(start: OpenCheckpoint | None) -> dict[str, Any]:
    """An imported model's prompt and chat conventions (checkpoint.json's `prompt` and `chat`): they travel
    into every checkpoint trained from it."""
    if start is None:
        return {}
    return {k: start.manifest.get(k) for k in ("prompt", "chat") if start.manifest.get(k)}


def _base_record(cfg: Config, resume: OpenCheckpoint | None, init: OpenCheckpoint | None) -> dict[str, Any]:
    """A LoRA run's checkpoint.json `base`: the --init checkpoint's path and its weights' SHA-256, which
    loading the adapters checks (a resumed run carries its first record on)."""
    if cfg.lora.rank <= 0:
        return {}
    if resume is not None:
        return {"base": resume.manifest.get("base")}
    assert init is not None
    entry = init.manifest.files.get(MODEL_FILE)
    if entry is None or entry.sha256 is None:
        raise LlmctlError(
            f"--init {init.path} records no SHA-256 of its {MODEL_FILE}",
            f"run `llmctl checkpoint migrate {init.path}` first",
        )
    return {"base": {"path": str(Path(init.path).resolve()), "sha256": entry.sha256}}


def _start_weights(
    cfg: Config, resume: OpenCheckpoint | None, init: OpenCheckpoint | None
) -> dict[str, torch.Tensor] | None:
    """The weights the model is built with: --init's; on resuming a LoRA run, its frozen base (which QLoRA
    quantizes as it builds), the adapters then loaded by the Trainer. A full run's resume loads there."""
    if init is not None:
        return init.model_state()
    if resume is not None and cfg.lora.rank > 0:
        from llmctl.model.lora import is_adapter

        return {k: v for k, v in resume.model_state().items() if not is_adapter(k)}
    return None


def _lora_notes(cfg: Config, model: torch.nn.Module) -> list[str]:
    """The start-of-run line of a LoRA run: trainable and total parameters."""
    if cfg.lora.rank <= 0:
        return []
    from llmctl.model.lora import describe_trainable

    return [describe_trainable(model, cfg.lora)]


def run_training(
    cfg: Config,
    make_objective: ObjectiveFactory,
    *,
    reporter: Any = None,
    force: bool = False,
    inputs: RunInputs | None = None,
    after_init: Callable[[torch.nn.Module], None] | None = None,
    with_model: Callable[[torch.nn.Module], None] | None = None,
) -> RunOutcome:
    """Set up and run one training run; returns when it completes or stops (signal, deadline).

    `inputs` hands over what the caller already read with `read_inputs` (with the config it returned);
    without it they are read here;
    `force` lets a fresh start replace an earlier run's files in the same directory; `after_init` edits
    the model once the --init weights are loaded (not on resume): SFT's untrained rows; `with_model` is
    handed the built model before the objective is made, every start (DPO's LoRA reference is its base).
    """
    from llmctl.engine.lock import RunLock
    from llmctl.plan.flops import flops_per_token

    wants_cuda = cfg.train.device.startswith("cuda") or (
        cfg.train.device == "auto" and torch.cuda.is_available()
    )
    dist = D.init_distributed(cfg.dist.backend, "cuda" if wants_cuda else "cpu")
    lock: RunLock | None = None
    try:
        runtime = choose_runtime(cfg.train, dist.local_rank)
        if inputs is None:
            # --init (e.g. continued pretraining from an imported model): the shape is the checkpoint's.
            cfg, inputs = read_inputs(cfg)
        meta, tokenizer = inputs.meta, inputs.tokenizer
        cfg = resolve_vocab(cfg, meta)
        run_dir, resume, init = _checked_start(cfg, inputs, dist)
        if dist.is_rank0:
            lock = _claim_run_dir(run_dir, cfg, tokenizer, fresh=resume is None, force=force)
        D.barrier(dist)
        seed_everything(cfg.train.seed)
        model = build_model(
            cfg.model, runtime.device, lora=cfg.lora, base_state=_start_weights(cfg, resume, init)
        )
        if init is not None and after_init is not None:
            after_init(model)
        if with_model is not None:
            with_model(model)
        objective = make_objective(cfg, inputs, dist)
        if reporter is None:
            from llmctl.telemetry import Telemetry

            reporter = Telemetry(cfg, run_dir if dist.is_rank0 else None, is_rank0=dist.is_rank0)
        # An objective that runs more than the policy per trained token (DPO's live reference) says so.
        flops = flops_per_token(cfg.model, cfg.data.seq_len)
        trainer = Trainer(
            cfg,
            objective,
            model,
            reporter,
            runtime,
            dist,
            run_dir=run_dir,
            tokenizer=tokenizer,
            data_meta=meta,
            flops_per_token=flops.train + objective.extra_forward_passes * flops.train / 3,
            notes=[*(lock.notes if lock is not None else []), *_lora_notes(cfg, model)],
            conventions={**_conventions(resume or init), **_base_record(cfg, resume, init)},
        )
        result = trainer.fit(resume=resume)
        outcome = RunOutcome(run_dir, result, str(resume.path) if resume else None, dist.is_rank0)
    finally:
        if lock is not None:
            lock.release()
        D.shutdown(dist)
    if outcome.is_rank0:
        # Last: SLURM ends the job's processes as soon as it accepts the requeue.
        outcome.requeued, outcome.warnings = requeue_after_stop(cfg, outcome.result)
    return outcome
