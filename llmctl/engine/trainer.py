"""The one training loop, shared by `pretrain` and `sft`.

    trainer = Trainer(cfg, objective, model, reporter, runtime, dist, run_dir=..., tokenizer=...)
    result = trainer.fit(resume=checkpoint_dir_or_None)

Each optimizer step: fetch the step's micro-batches, count their trained tokens over all ranks,
forward under autocast, loss summed over trained targets and divided by that count, backward (gradient
sync only on the last micro-batch), clip, then the step's one host sync reads the loss, the gradient
norm and the counts; a non-finite loss or norm skips the update (train.skip_nonfinite) or stops the run
with DivergedError before the optimizer touches the weights; else the AdamW step at the scheduled
learning rate. Counts go to the reporter, which computes rates and displays; this file never prints.
Evaluation, samples and checkpoints happen every N steps and at the end; a signal or a deadline ends
the run after the current step with a checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmctl.config import Config, to_dict
from llmctl.engine import distributed as D
from llmctl.engine.checkpoint import (
    load_optimizer_state,
    load_rng_states,
    remove_partial,
    training_manifest,
    write_checkpoint,
)
from llmctl.engine.objectives import IGNORE_INDEX, Batch, Objective, weighted_eval
from llmctl.engine.optim import build_optimizer, describe_optimizer, set_lr
from llmctl.engine.runtime import Runtime
from llmctl.engine.schedule import LRSchedule
from llmctl.engine.state import capture_rng, model_state, optimizer_state, restore_optimizer, restore_rng
from llmctl.engine.stopping import (
    SIGNAL_CODES,
    TIME_LIMIT_SIGNAL,
    Deadline,
    StopRequests,
    signal_of,
    slurm_end_time,
)
from llmctl.errors import DivergedError
from llmctl.infer.batch import Request, generate_batch
from llmctl.infer.checkpoint import OpenCheckpoint
from llmctl.infer.sampling import Sampling
from llmctl.model.llama import Transformer
from llmctl.model.lora import is_adapter
from llmctl.telemetry.events import EvalResult, Reporter, RunInfo, SampleRecord, StepCounts, TaskEvalResult

_REQUESTS = 2 * (max(SIGNAL_CODES.values()) + 1)
"""Distinct stop requests (signal code * 2 + deadline flag)."""


@dataclass
class TrainResult:
    """How a run ended."""

    status: str
    """'completed', 'interrupted' (a signal) or 'time_limit'."""
    step: int
    tokens: int
    checkpoint: str | None
    """The last checkpoint written, if any."""
    signal: str | None
    """The signal that stopped the run, if one did."""
    summary: dict[str, Any]
    """The reporter's closing figures."""
    last_eval: EvalResult | None = None
    start_step: int = 0
    """The step this run started (or resumed) at: a stop at it trained nothing."""
    job_time_limit: bool = False
    """The job's time limit stopped the run: SIGUSR1, or the SLURM end time's deadline (not train.time_limit,
    SIGTERM or Ctrl-C). run.py then asks SLURM to requeue the job."""


def grad_accumulation(cfg: Config, world: int) -> int:
    """Micro-batches per optimizer step on each rank, from train.global_batch_tokens or _size (nearest)."""
    per_micro = cfg.train.micro_batch_size * world
    if cfg.train.global_batch_tokens is not None:
        sequences = cfg.train.global_batch_tokens / cfg.data.seq_len
    elif cfg.train.global_batch_size is not None:
        sequences = cfg.train.global_batch_size
    else:
        return 1
    return max(1, round(sequences / per_micro))


class Trainer:
    """Owns the model, optimizer and schedule of one run and drives them step by step."""

    def __init__(
        self,
        cfg: Config,
        objective: Objective,
        model: Transformer,
        reporter: Reporter,
        runtime: Runtime,
        dist: D.DistInfo,
        *,
        run_dir: Path | None,
        tokenizer: Any,
        data_meta: dict[str, Any],
        flops_per_token: float,
        notes: list[str] | None = None,
        conventions: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.objective = objective
        self.raw = model
        self.reporter = reporter
        self.rt = runtime
        self.dist = dist
        self.run_dir = run_dir
        self.tokenizer = tokenizer
        self.data_meta = data_meta
        self.flops_per_token = flops_per_token
        self.accum = grad_accumulation(cfg, dist.world_size)
        self.schedule = LRSchedule.from_config(cfg.optim, cfg.train.steps)
        self.step = 0
        self.tokens = 0
        self.stops = StopRequests()
        self.last_checkpoint: str | None = None
        self.conventions: dict[str, Any] = dict(conventions or {})
        """checkpoint.json's `prompt` and `chat` sections of the weights this run started from (an imported
        model's BOS policy, chat template and stop ids), carried into every checkpoint it writes."""
        self.last_eval: EvalResult | None = None
        self._step_seconds = 0.0
        self._save_seconds = 0.0
        self.skipped_steps = 0
        self._agreed_request: int | None = None
        self._deadline: Deadline | None = None
        self.notes: list[str] = list(notes or [])
        """Lines for the run's log once it has started (a stale lock taken over)."""

    # -- setup ----------------------------------------------------------------------------------

    def _build(self, resume: OpenCheckpoint | None) -> None:
        cfg = self.cfg
        if resume is not None:
            # Weights go in before wrapping: DDP then broadcasts them and FSDP shards them.
            # (run_training checked the shape and tokenizer before anything was written.)
            self._load_weights(resume)
        self.raw.activation_checkpointing = cfg.train.activation_checkpointing
        self.fsdp = self.dist.enabled and cfg.dist.strategy == "fsdp"
        self.wrapped = D.wrap_model(self.raw, self.dist, cfg.dist.strategy, self.rt.device)
        self.model = torch.compile(self.wrapped) if cfg.train.compile else self.wrapped
        self.optimizer = build_optimizer(self.raw, cfg.optim, self.rt.device)
        if resume is not None:
            manifest = resume.manifest
            restore_optimizer(self.raw, self.optimizer, load_optimizer_state(resume), self.fsdp)
            restore_rng(load_rng_states(resume), self.dist.rank)
            self.step, self.tokens = manifest.step, manifest.tokens
            self.skipped_steps = int(manifest.get("skipped_steps") or 0)
            self.objective.load_state_dict(manifest["data"])
            self.reporter.load_state_dict(manifest.get("reporter") or {})
            self.last_checkpoint = str(resume.path)
        self.objective.attach(self.raw, self.rt.autocast)
        self.eval_set = self.objective.eval_batches()
        self.task_hook = None
        self._bytes_per_id: tuple[torch.Tensor, torch.Tensor] | None = None
        if cfg.train.eval_tasks and self.dist.is_rank0 and not self.fsdp:
            from llmctl.eval.loop import TaskEvalHook

            self.task_hook = TaskEvalHook(
                cfg.train.eval_tasks, self.tokenizer, self.data_meta, limit=cfg.train.eval_tasks_limit
            )

    def _run_info(self) -> RunInfo:
        tokens_per_step = (
            self.accum * self.dist.world_size * self.cfg.train.micro_batch_size * self.cfg.data.seq_len
        )
        return RunInfo(
            run_dir=str(self.run_dir) if self.run_dir else None,
            config=to_dict(self.cfg),
            objective=self.objective.name,
            n_params=self.raw.num_params(),
            n_params_non_embedding=self.raw.num_params(non_embedding=True),
            flops_per_token=self.flops_per_token,
            seq_len=self.cfg.data.seq_len,
            device=str(self.rt.device),
            device_name=self.rt.device_name,
            dtype=self.rt.dtype,
            world_size=self.dist.world_size,
            total_steps=self.cfg.train.steps,
            start_step=self.step,
            tokens_per_step=tokens_per_step,
            summary_extra=self._summary_extra(),
            data_sources=tuple(self.objective.sources) or None,
        )

    def _summary_extra(self) -> dict[str, Any]:
        """Figures the objective adds to summary.json (SFT: what happened to the conversations)."""
        return dict(self.objective.summary_extra())

    # -- the loop -------------------------------------------------------------------------------

    def _load_weights(self, resume: OpenCheckpoint) -> None:
        """The resumed checkpoint's weights; a LoRA run's adapters only, its base (4-bit with QLoRA) having
        gone in when the model was built."""
        if self.cfg.lora.rank <= 0:
            self.raw.load_state_dict(resume.model_state())
            return
        # own_state checked the adapters' names and shapes against the config (adapter_shapes).
        adapters = resume.own_state()
        self.raw.load_state_dict({k: v for k, v in adapters.items() if is_adapter(k)}, strict=False)

    def fit(self, resume: OpenCheckpoint | None = None) -> TrainResult:
        """Train until train.steps, train.max_tokens, a deadline or a stop signal; checkpoint at the end."""
        cfg, t = self.cfg, self.cfg.train
        self._build(resume)
        start_step = self.step
        if self.run_dir is not None and self.dist.is_rank0:
            remove_partial(self.run_dir / "checkpoints")
        deadline = Deadline(time.time(), t.time_limit, slurm_end_time(), cfg.checkpoint.deadline_margin)
        self._deadline = deadline
        self.reporter.start(self._run_info())
        for note in self.notes:
            self.reporter.log(note)
        if resume is not None:
            self.reporter.log(f"resumed from {resume.path} at step {self.step} ({self.tokens:,} tokens)")
        facts = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in self.objective.describe().items()
        )
        self.reporter.log(
            f"{self.objective.name}: {self.accum} micro-batch(es) of {t.micro_batch_size} x "
            f"{self.dist.world_size} rank(s) per step; {facts}, {self._eval_tokens_text()}"
        )
        self.reporter.log(describe_optimizer(self.optimizer))
        # A resumed run already has a checkpoint of its first step: stopping at once rewrites nothing.
        status, done = (
            "completed",
            {"eval": -1, "sample": -1, "save": self.step if resume is not None else -1},
        )
        try:
            with self.stops.installed():
                while True:
                    reason = self._stop_reason(deadline)
                    if reason is not None:
                        status = reason
                        break
                    self.reporter.step(self._train_step())
                    self._periodic(done)
            if status == "completed":
                if t.eval_every and done["eval"] != self.step:
                    self.evaluate()
                if t.sample_every and done["sample"] != self.step:
                    self.sample()
            if done["save"] != self.step:
                self.save()
        except DivergedError:
            self.reporter.close("diverged")
            raise
        except BaseException:
            self.reporter.close("failed")
            raise
        summary = self.reporter.close(status)
        values = {"skipped_steps": self.skipped_steps, **self._summary_extra(), **summary.values}
        by_limit = (status == "interrupted" and self.stops.signal == TIME_LIMIT_SIGNAL) or (
            status == "time_limit" and deadline.is_slurm
        )
        return TrainResult(
            status,
            self.step,
            self.tokens,
            self.last_checkpoint,
            self.stops.signal,
            values,
            self.last_eval,
            start_step,
            by_limit,
        )

    def _periodic(self, done: dict[str, int]) -> None:
        t, s = self.cfg.train, self.step
        if t.eval_every and s % t.eval_every == 0:
            self.evaluate()
            done["eval"] = s
        tasks_every = t.eval_tasks_every or t.eval_every
        if self.task_hook is not None and tasks_every and s % tasks_every == 0:
            self.evaluate_tasks()
        own = self.objective.take_samples(s)
        if own:
            self.reporter.samples(own)
        if t.sample_every and s % t.sample_every == 0:
            self.sample()
            done["sample"] = s
        every = self.cfg.checkpoint.every
        if every and s % every == 0:
            self.save()
            done["save"] = s

    def _local_request(self, deadline: Deadline) -> int:
        """This rank's stop request: signal code * 2 + 1 when the deadline is reached (0: none)."""
        late = deadline.reached(time.time(), self._step_seconds, self._save_seconds)
        return self.stops.code * 2 + int(late)

    def _stop_reason(self, deadline: Deadline) -> str | None:
        t = self.cfg.train
        if self.step >= t.steps or (t.max_tokens is not None and self.tokens >= t.max_tokens):
            return "completed"
        # Ranks agree on stopping: the largest request wins, so no rank waits in a collective alone.
        # Under DDP the requests travel with the step's one reduction (_train_step); only before the
        # first step is there a reduction of its own.
        if not self.dist.enabled:
            request = self._local_request(deadline)
        elif self._agreed_request is not None:
            request, self._agreed_request = self._agreed_request, None
        else:
            request = D.all_reduce_max(self.dist, self._local_request(deadline), self.rt.device)
        if request >= 2:
            self.stops.signal = self.stops.signal or signal_of(request // 2)
            self.reporter.log(
                f"{self.stops.signal} received: saving a checkpoint and stopping at step {self.step}"
            )
            return "interrupted"
        if request == 1:
            self.reporter.log(f"stopping at step {self.step} to checkpoint before the time limit")
            return "time_limit"
        return None

    def _grad_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """No gradient all-reduce until the last micro-batch of a step."""
        if not self.dist.enabled or last and not self.fsdp:
            return contextlib.nullcontext()
        if self.fsdp:
            self.wrapped.set_requires_gradient_sync(last)
            return contextlib.nullcontext()
        return self.wrapped.no_sync()

    def _loss_sum(self, batch: Batch, model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed loss over the batch's trained units, correct predictions among them): the objective's."""
        return self.objective.loss_sum(model, batch, self.rt.autocast)

    def _train_step(self) -> StepCounts:
        start = time.perf_counter()
        batches = [self.objective.train_batch() for _ in range(self.accum)]
        data_time = time.perf_counter() - start
        counts, n_sources, scale = self._step_counts(batches)
        loss_sum, correct = self._forward_backward(batches, scale)
        if self.rt.scaler is not None:
            self.rt.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.optim.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.raw.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):
            grad_norm = grad_norm.full_tensor()
        figures = self._read_figures(counts, torch.stack([loss_sum, correct]), grad_norm)
        n = 3 + n_sources  # the counts, then the loss and correct sums, then the norm
        trained, tokens, samples = (int(x) for x in figures[:3])
        by_source = [int(x) for x in figures[3:n]]
        loss_total, right_total, norm = figures[n], figures[n + 1], figures[n + 2]
        lr = self.schedule(self.step)
        self._update(loss_total / max(1, trained), loss_total, norm, lr)
        self.step += 1
        self.tokens += tokens
        metrics = self._objective_metrics("train")
        self._step_seconds = time.perf_counter() - start
        return StepCounts(
            step=self.step,
            tokens=tokens,
            trained_tokens=trained,
            samples=samples,
            loss=loss_total / max(1, trained),
            correct=int(right_total) if math.isfinite(right_total) else 0,
            lr=lr,
            grad_norm=norm,
            step_time=self._step_seconds,
            data_time=data_time,
            skipped_steps=self.skipped_steps,
            source_tokens=tuple(by_source) or None,
            metrics=metrics,
        )

    def _step_counts(self, batches: list[Batch]) -> tuple[torch.Tensor, int, float | torch.Tensor]:
        """(trained tokens, tokens, samples and, for mixtures, tokens per source: summed over ranks; the
        number of sources; the loss scale)."""
        mixed = [b.source_tokens for b in batches if b.source_tokens is not None]
        by_source = (
            [sum(col) for col in zip(*mixed, strict=True)] if mixed else []
        )  # mixtures: tokens per source
        counts = torch.tensor(
            [
                sum(b.trained_tokens for b in batches),
                sum(b.tokens for b in batches),
                sum(b.samples for b in batches),
                *by_source,
            ],
            dtype=torch.float64,
        )
        # Summed losses over (trained tokens of all ranks / world): DDP's gradient mean then equals
        # the gradient of the mean loss over every trained token of the step.
        scale: float | torch.Tensor
        if self.dist.enabled:
            # The all-reduced counts stay on the device (no host sync); they are read with the loss.
            counts = D.all_reduce_sum(self.dist, counts.to(self.rt.device))
            scale = (self.dist.world_size / counts[0].clamp(min=1)).float()
        else:
            scale = self.dist.world_size / max(1, int(counts[0]))
        return counts, len(by_source), scale

    def _forward_backward(
        self, batches: list[Batch], scale: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward and backward over the step's micro-batches; (summed loss, correct) on the device."""
        device = self.rt.device
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        for i, batch in enumerate(batches):
            batch = batch.to(device)
            with self._grad_sync(i == len(batches) - 1):
                loss, right = self._loss_sum(batch, self.model)
                scaled = loss * scale
                (self.rt.scaler.scale(scaled) if self.rt.scaler else scaled).backward()
            loss_sum += loss.detach().double()
            correct += right.double()
        return loss_sum, correct

    def _read_figures(
        self, counts: torch.Tensor, stats: torch.Tensor, grad_norm: torch.Tensor
    ) -> list[float]:
        """The step's one host sync, before the update: counts, loss and correct sums (over ranks) and the
        gradient norm; under DDP the ranks' stop requests travel with them."""
        device = self.rt.device
        if self.dist.enabled:
            # Each rank's stop request as a one-hot row: after the sum, the highest non-zero slot is the
            # largest request, so stopping is agreed in this same reduction.
            request = torch.zeros(_REQUESTS, dtype=torch.float64, device=device)
            request[self._local_request(self._deadline) if self._deadline is not None else 0] = 1
            stats = D.all_reduce_sum(self.dist, torch.cat([stats, request]))
        figures = torch.cat(
            [counts.to(device), stats, grad_norm.detach().double().reshape(1).to(device)]
        ).tolist()
        if self.dist.enabled:
            n = len(counts)
            slots = figures[n + 2 : n + 2 + _REQUESTS]
            self._agreed_request = max(i for i, k in enumerate(slots) if k > 0 or i == 0)
            figures = figures[: n + 2] + figures[n + 2 + _REQUESTS :]
        return figures

    def _update(self, loss: float, loss_total: float, norm: float, lr: float) -> None:
        """The optimizer step at `lr`, or, for a non-finite loss or norm, a skipped step or a stop."""
        # With fp16's grad scaler an inf norm is expected now and then: the scaler skips that update itself.
        if not math.isfinite(loss_total) or (self.rt.scaler is None and not math.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self._non_finite(loss, norm)
            return
        set_lr(self.optimizer, lr)
        if self.rt.scaler is not None:
            self.rt.scaler.step(self.optimizer)
            self.rt.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _non_finite(self, loss: float, norm: float) -> None:
        """A step with a NaN/inf loss or gradient norm: skip it while train.skip_nonfinite allows, else stop."""
        step, allowed = self.step + 1, self.cfg.train.skip_nonfinite
        what = f"loss {loss:.4g}, gradient norm {norm:.4g}"
        if self.skipped_steps < allowed:
            self.skipped_steps += 1
            self.reporter.log(
                f"step {step}: {what}; update skipped ({self.skipped_steps} of {allowed} allowed)"
            )
            return
        last = self.last_checkpoint
        raise DivergedError(
            f"training diverged at step {step} ({what}); the weights were not updated. Last good checkpoint: "
            f"{last or 'none (none was written yet)'}",
            (
                f"resume from it with a lower --optim.lr or more warmup (--resume {last}); "
                if last
                else "start again with a lower --optim.lr or more warmup; "
            )
            + "--train.skip_nonfinite=N skips up to N such steps instead of stopping",
        )

    def _objective_metrics(self, kind: str) -> dict[str, float]:
        """Figures an objective gathers itself (DPO rewards), summed over ranks; its warnings are logged."""
        metrics, notes = self.objective.take_metrics(kind, self.dist, self.rt.device)
        for note in notes:
            self.reporter.log(note)
        return metrics

    # -- evaluation, samples, checkpoints -------------------------------------------------------

    def _byte_table(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(UTF-8 bytes per token id, special-token mask), both [vocab] on the device, built once; None
        where bits per byte do not apply (SFT and DPO score replies, not a text stream)."""
        if not self.objective.scores_bytes:
            return None
        if self._bytes_per_id is None:
            import numpy as np

            from llmctl.eval.token_bytes import special_id_mask, token_byte_lengths

            vocab = self.raw.cfg.vocab_size
            # Embedding rows past the tokenizer's vocabulary (padding for speed) stand for no text.
            lengths = np.zeros(vocab, dtype=np.int64)
            known = token_byte_lengths(self.tokenizer)[:vocab]
            lengths[: len(known)] = known
            special = special_id_mask(self.tokenizer, vocab)
            self._bytes_per_id = (
                torch.from_numpy(lengths).to(self.rt.device),
                torch.from_numpy(special).to(self.rt.device),
            )
        return self._bytes_per_id

    def _text_sums(
        self, batch: Batch, table: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss sum, correct, nats of non-special targets, their UTF-8 bytes) for one pretraining batch:
        one forward, the loss as `_loss_sum` computes it plus what bits per byte need."""
        byte_len, special = table
        with self.rt.autocast():
            logits = self.raw(batch.inputs, batch.doc_ids, batch.position_ids)
        targets = batch.targets
        trained = targets != IGNORE_INDEX
        nats = F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(targets)
        correct = ((logits.argmax(-1) == targets) & trained).sum()
        ids = targets.clamp(min=0)
        text = trained & ~special[ids]
        return nats.sum(), correct, nats[text].double().sum(), byte_len[ids][text].sum()

    def _eval_tokens_text(self) -> str:
        """`eval_tokens=16384` (a mixture: `(py 8192 + llmctl 8192)` after it): the targets one evaluation
        scores, over all ranks. Unlike a count of batches, it is the same for any number of ranks."""
        sources = self.objective.sources
        counts = torch.zeros(1 + len(sources), dtype=torch.float64)
        for batch in self.eval_set:
            counts[0] += batch.trained_tokens
            if batch.source >= 0:
                counts[1 + batch.source] += batch.trained_tokens
        total, *each = (int(c) for c in D.all_reduce_sum(self.dist, counts.to(self.rt.device)).tolist())
        parts = " + ".join(
            f"{Path(s['path']).name or s['path']} {n}" for s, n in zip(sources, each, strict=True)
        )
        return f"eval_tokens={total}" + (f" ({parts})" if parts else "")

    @torch.no_grad()
    def evaluate(self) -> EvalResult | None:
        """Loss, perplexity, token accuracy and (pretraining) bits per byte over the fixed validation
        batches, summed over ranks."""
        self.raw.eval()
        sources = self.objective.sources
        table = self._byte_table()
        # Row 0: all batches; row 1 + i: batches of mixture source i. Columns: loss sum, correct,
        # trained targets, nats of non-special targets, their bytes (the last two: bits per byte).
        sums = torch.zeros(1 + len(sources), 5, dtype=torch.float64, device=self.rt.device)
        zero = torch.zeros((), dtype=torch.float64, device=self.rt.device)
        for batch in self.eval_set:
            batch = batch.to(self.rt.device)
            if table is not None:
                loss, correct, text_nats, text_bytes = self._text_sums(batch, table)
            else:
                (loss, correct), text_nats, text_bytes = self._loss_sum(batch, self.raw), zero, zero
            row = torch.stack(
                [
                    loss.double(),
                    correct.double(),
                    torch.tensor(float(batch.trained_tokens), device=self.rt.device, dtype=torch.float64),
                    text_nats.double(),
                    text_bytes.double(),
                ]
            )
            sums[0] += row
            if batch.source >= 0:
                sums[1 + batch.source] += row
        self.raw.train()
        rows = D.all_reduce_sum(self.dist, sums).tolist()
        loss_sum, correct, trained, text_nats, text_bytes = rows[0]
        if trained == 0:
            return None
        loss, accuracy, by_source = loss_sum / trained, correct / trained, None
        if sources:
            loss, accuracy, by_source = weighted_eval(sources, [r[:3] for r in rows[1:]])
        bpb = text_nats / math.log(2) / text_bytes if table is not None and text_bytes > 0 else None
        result = EvalResult(
            self.step,
            loss,
            math.exp(min(loss, 50.0)),
            accuracy,
            int(trained),
            by_source,
            metrics=self._objective_metrics("eval"),
            bpb=bpb,
            bytes=int(text_bytes) if bpb is not None else None,
            perplexity_name=self.objective.perplexity_name,
        )
        self.last_eval = result
        self.reporter.eval(result)
        return result

    def evaluate_tasks(self) -> TaskEvalResult | None:
        """Score train.eval_tasks on this rank's model (rank 0 only; llmctl/eval/loop.py) and hand the
        result to the reporter."""
        if self.task_hook is None:
            return None
        scored = self.task_hook.run(self.raw, self.rt.device)
        result = TaskEvalResult(
            step=self.step,
            tasks={
                name: {
                    k: r[k] for k in ("n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "centered_acc")
                }
                for name, r in scored["tasks"].items()
            },
            centered_acc=scored["centered_acc"],
            seconds=scored["seconds"],
        )
        self.reporter.task_eval(result)
        return result

    def sample(self) -> list[SampleRecord]:
        """Continue the objective's prompts with the model's own samples (same seed each round)."""
        t = self.cfg.train
        records = []
        prompts = self.objective.sample_prompts()
        # One batch for every prompt; prompt i draws with its own seed t.seed + i, as when decoded alone.
        sampling = Sampling(temperature=t.sample_temperature, top_k=t.sample_top_k)
        stop = self.objective.stop_ids()
        requests = [
            Request(p.ids, t.sample_tokens, sampling, t.seed + i, stop) for i, p in enumerate(prompts)
        ]
        gens = generate_batch(self.raw, requests, max_batch=max(1, len(requests)), autocast=self.rt.autocast)
        for prompt, gen in zip(prompts, gens, strict=True):
            ids = gen.ids[:-1] if gen.stop_reason == "stop" else gen.ids
            records.append(
                SampleRecord(
                    self.step,
                    prompt.text,
                    self.tokenizer.decode(ids),
                    prompt.reference,
                    prompt.source,
                    new_tokens=len(gen.ids),
                    seconds=gen.seconds,
                )
            )
        self.reporter.samples(records)
        return records

    def save(self) -> Path | None:
        """Write a complete checkpoint of this step (rank 0 writes; every rank takes part in gathering)."""
        start = time.perf_counter()
        # A LoRA run's checkpoint holds its adapters only; checkpoint.json names the frozen base.
        keep = is_adapter if self.cfg.lora.rank > 0 else None
        weights = model_state(self.raw, self.fsdp, self.cfg.model, keep)
        optim = optimizer_state(self.raw, self.optimizer, self.fsdp)
        rng = D.all_gather_object(self.dist, capture_rng())
        path = None
        if self.dist.is_rank0 and self.run_dir is not None:
            tok = self.tokenizer
            manifest = training_manifest(
                tokens=self.tokens,
                flops=self.tokens * self.flops_per_token,
                objective=self.objective.name,
                data=self.objective.state_dict(),
                schedule=self.schedule.state_dict(),
                reporter=self.reporter.state_dict(),
                config=to_dict(self.cfg),
                tokenizer=tok,
                data_meta=self.data_meta,
                world_size=self.dist.world_size,
                skipped_steps=self.skipped_steps,
            )
            manifest.update(self.conventions)
            path = write_checkpoint(
                self.run_dir / "checkpoints",
                self.step,
                model_state=weights,
                optimizer_state=optim,
                rng_states=rng,
                manifest=manifest,
                tokenizer_file=Path(tok.path),
                keep=self.cfg.checkpoint.keep,
            )
            self.last_checkpoint = str(path)
        D.barrier(self.dist)
        self._save_seconds = time.perf_counter() - start
        if path is not None:
            self.reporter.log(f"checkpoint saved: {path} ({self._save_seconds:.1f}s)")
        return path
