"""SLURM: a run stopped by the job's time limit with steps left requeues its job (`scontrol requeue`) once the
checkpoint is complete; the shipped sbatch scripts parse and carry the directives that make that work.

A fake `scontrol` on PATH records its arguments and, at the moment it is called, a copy of the run's
latest checkpoint.json and whether the run lock is still held.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from engine_fixtures import RecordingReporter, make_token_dir, tiny_args, tiny_config
from typer.testing import CliRunner

from llmctl.cli.app import app
from llmctl.engine.pretrain import run_pretrain
from llmctl.engine.run import requeue_after_stop
from llmctl.engine.stopping import Deadline, requeue_job
from llmctl.engine.trainer import Trainer, TrainResult

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {
    "one GPU": ROOT / "examples" / "slurm" / "pretrain-1gpu.sbatch",
    "several nodes": ROOT / "examples" / "slurm" / "pretrain-multinode.sbatch",
}
JOB = "4242"

FAKE_SCONTROL = """#!/bin/sh
echo "$*" >> "$FAKE_LOG"
if [ -f "$FAKE_RUN/checkpoints/latest/checkpoint.json" ]; then
    cp "$FAKE_RUN/checkpoints/latest/checkpoint.json" "$FAKE_LOG.$(wc -l < "$FAKE_LOG" | tr -d ' ').json"
fi
[ -e "$FAKE_RUN/.llmctl.lock" ] && echo locked >> "$FAKE_LOG.lock"
[ -n "$FAKE_SLEEP" ] && exec sleep "$FAKE_SLEEP"
[ -n "$FAKE_FAIL" ] && { echo "slurm_requeue error: $FAKE_FAIL" >&2; exit 1; }
exit 0
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("requeue-data"), files=12)


@pytest.fixture
def slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake scontrol first on PATH, inside SLURM job 4242 (end time far away); returns its log file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "scontrol"
    fake.write_text(FAKE_SCONTROL)
    fake.chmod(0o755)
    log = tmp_path / "scontrol.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_RUN", str(tmp_path / "run"))
    monkeypatch.setenv("SLURM_JOB_ID", JOB)
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 10**6))
    for name in ("FAKE_SLEEP", "FAKE_FAIL"):
        monkeypatch.delenv(name, raising=False)
    return log


def _usr1_at(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    """SIGUSR1 to this process right after the training step that reaches step `at` (the time-limit signal)."""
    original = Trainer._train_step

    def step(self: Trainer):  # type: ignore[no-untyped-def]
        counts = original(self)
        if self.step == at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return counts

    monkeypatch.setattr(Trainer, "_train_step", step)


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def _train(data: Path, out: Path, **overrides: object):  # type: ignore[no-untyped-def]
    return run_pretrain(
        tiny_config(data, out, **{"train.steps": 6, **overrides}), reporter=RecordingReporter()
    )


def test_time_limit_signal_requeues_after_the_checkpoint_every_time(
    data: Path, tmp_path: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _usr1_at(monkeypatch, 2)
    first = _train(data, tmp_path)
    assert first.result.status == "interrupted" and first.result.step == 2
    assert first.requeued == JOB and first.warnings == []
    assert _calls(slurm) == [f"requeue {JOB}"]
    # When scontrol ran, the checkpoint of the stop step was complete and the lock already released.
    seen = json.loads(Path(f"{slurm}.1.json").read_text())
    assert seen["step"] == 2 and Path(first.result.checkpoint).name == "step-000002"
    assert not Path(f"{slurm}.lock").exists()
    # The requeued job runs the same command with --resume auto and is stopped again: it requeues again.
    _usr1_at(monkeypatch, 4)
    second = _train(data, tmp_path, **{"checkpoint.resume": "auto"})
    assert second.resumed_from.endswith("step-000002") and second.result.step == 4
    assert _calls(slurm) == [f"requeue {JOB}"] * 2 and second.requeued == JOB
    assert json.loads(Path(f"{slurm}.2.json").read_text())["step"] == 4


@pytest.mark.parametrize("case", ["no steps left", "requeue off", "outside SLURM"])
def test_no_requeue_without_steps_left_when_switched_off_or_outside_slurm(
    data: Path, tmp_path: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    overrides: dict[str, object] = {"train.steps": 3}
    _usr1_at(monkeypatch, 3 if case == "no steps left" else 2)
    if case == "requeue off":
        overrides["slurm.requeue"] = False
    if case == "outside SLURM":
        monkeypatch.delenv("SLURM_JOB_ID")
    outcome = _train(data, tmp_path, **overrides)
    assert outcome.result.checkpoint is not None and outcome.requeued is None and outcome.warnings == []
    assert _calls(slurm) == []


def test_slurm_end_time_deadline_requeues_but_train_time_limit_does_not(
    data: Path, tmp_path: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_END_TIME", str(int(time.time()) + 2))
    outcome = _train(data, tmp_path, **{"train.steps": 100000, "checkpoint.deadline_margin": 0})
    assert outcome.result.status == "time_limit" and outcome.result.job_time_limit
    assert outcome.requeued == JOB and _calls(slurm) == [f"requeue {JOB}"]
    # Which deadline came first decides: the job's end (requeue) or train.time_limit (the user's own budget).
    assert Deadline(0.0, None, 100.0, 10.0).is_slurm and Deadline(0.0, 500.0, 100.0, 10.0).is_slurm
    assert not Deadline(0.0, 50.0, 100.0, 10.0).is_slurm and not Deadline(0.0, 50.0, None, 10.0).is_slurm


def test_a_failing_scontrol_is_a_warning_and_the_run_still_exits_0(
    data: Path, tmp_path: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_FAIL", "Requested operation is presently disabled")
    _usr1_at(monkeypatch, 2)
    args = ["pretrain", "--data", str(data), "--out", str(tmp_path / "run"), "--json"]
    result = CliRunner().invoke(app, [*args, *tiny_args(**{"train.steps": 6})])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["requeued"] is None and _calls(slurm) == [f"requeue {JOB}"]
    assert (
        f"warning: could not requeue SLURM job {JOB}: `scontrol requeue {JOB}` exited 1: slurm_requeue error: "
        "Requested operation is presently disabled; submit the job again to continue from "
        f"{tmp_path / 'run' / 'checkpoints' / 'step-000002'} (--resume auto)" in result.stderr
    )


def test_requeue_job_turns_every_scontrol_failure_into_a_warning(
    tmp_path: Path, slurm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert requeue_job(JOB) is None
    monkeypatch.setenv("FAKE_FAIL", "Invalid job id specified")
    assert requeue_job(JOB).endswith("exited 1: slurm_requeue error: Invalid job id specified")
    monkeypatch.delenv("FAKE_FAIL")
    monkeypatch.setenv("FAKE_SLEEP", "5")
    started = time.monotonic()
    assert "gave no answer within 0.3 s" in requeue_job(JOB, timeout=0.3)
    assert time.monotonic() - started < 3
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert requeue_job(JOB) == f"could not requeue SLURM job {JOB}: scontrol is not on PATH"


def test_a_stop_that_trained_nothing_is_not_requeued(slurm: Path) -> None:
    """Requeued again and again, a job too short for one step would never end: a warning instead."""
    from llmctl.config import load_config

    cfg = load_config(None, {"train.steps": 100})
    stopped = TrainResult("interrupted", 40, 0, "ckpt", "SIGUSR1", {}, None, 40, True)
    requeued, warnings = requeue_after_stop(cfg, stopped)
    assert requeued is None and _calls(slurm) == []
    assert warnings and "not requeued: it stopped at step 40, where it started" in warnings[0]
    # SIGTERM (scancel, or SLURM's own kill) and Ctrl-C are no time limit: never requeued.
    for sig in ("SIGTERM", "SIGINT"):
        other = TrainResult("interrupted", 50, 0, "ckpt", sig, {}, None, 40, False)
        assert requeue_after_stop(cfg, other) == (None, [])
    assert _calls(slurm) == []


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_sbatch_scripts_parse_and_requeue_resume_and_log_safely(name: str) -> None:
    path = SCRIPTS[name]
    subprocess.run(["bash", "-n", str(path)], check=True, capture_output=True)
    text = path.read_text()
    directives = {
        line.split()[1].split("=")[0]: line.split()[1]
        for line in text.splitlines()
        if line.startswith("#SBATCH ")
    }
    assert directives["--requeue"] == "--requeue" and directives["--open-mode"] == "--open-mode=append"
    # --output is opened by SLURM before the script runs: no folder that nothing has created.
    assert "/" not in directives["--output"]
    assert "--resume auto" in text and "activate" in text
    if name == "one GPU":
        # llmctl is the batch shell (exec), so the signal goes to the batch shell (B:).
        assert directives["--signal"] == "--signal=B:USR1@120" and "\nexec llmctl pretrain" in text
    else:
        # One srun task per GPU (distributed.py reads SLURM_PROCID/NTASKS/LOCALID); the signal goes to them.
        assert directives["--signal"] == "--signal=USR1@120" and "\nsrun " in text
        assert directives["--ntasks-per-node"].split("=")[1] == directives["--gpus-per-node"].split("=")[1]
