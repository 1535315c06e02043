"""W&B and MLflow sinks: real MLflow (sqlite store and a local `mlflow server`), W&B offline, a fake wandb.

- MLflow is real: a `sqlite:` store in tmp_path, and a `mlflow server` this file starts on 127.0.0.1
  (free port, sqlite backend) and stops at the end.
- W&B runs for real in offline mode and the test reads the .wandb files it wrote. The rewind after a
  crash (`resume_from`) needs a W&B server, so that choice is checked with a fake `wandb` module.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from engine_fixtures import make_token_dir, tiny_args
from typer.testing import CliRunner

from llmctl.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
mlflow = pytest.importorskip("mlflow")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_token_dir(tmp_path_factory.mktemp("trackers-data"))


@pytest.fixture(autouse=True)
def _no_tracker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "WANDB_MODE",
        "WANDB_BASE_URL",
        "WANDB_PROJECT",
        "WANDB_ENTITY",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_ALLOW_FILE_STORE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _train_losses(run: Path) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["kind"] == "train"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mlflow_run(uri: str, experiment: str) -> Any:
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def _same_steps_and_close(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    """(step, value) lists with the same steps and values within pytest.approx (which, from pytest 9.2, no longer
    compares nested tuples)."""
    return [s for s, _ in got] == [s for s, _ in want] and [v for _, v in got] == pytest.approx(
        [v for _, v in want]
    )


def _loss_history(client: Any, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))


# -- refusals ---------------------------------------------------------------------------------------


def test_missing_package_names_the_install_command(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # find_spec() then reports it missing
    result = _invoke(
        "pretrain", "--data", str(data), "--out", str(tmp_path / "r"), *tiny_args(), "--telemetry.wandb=true"
    )
    assert result.exit_code == 2, result.output
    assert "Weights & Biases package (wandb), which is not installed" in result.output
    assert 'pip install "llmctl[wandb]"' in result.output and "Traceback" not in result.output


def test_mlflow_file_store_is_refused_with_the_reason(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    result = _invoke(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(),
        "--telemetry.mlflow=true",
        f"--telemetry.mlflow_uri=file://{tmp_path}/mlruns",
    )
    assert result.exit_code == 2, result.output
    assert (
        "MLflow 3 refuses the file store" in result.output and "MLFLOW_ALLOW_FILE_STORE=true" in result.output
    )
    assert "sqlite:///" in result.output and not (run / "metrics.jsonl").exists()


# -- MLflow, real ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_sqlite_stop_by_signal_and_resume_is_one_run_with_each_step_once(
    data: Path, tmp_path: Path
) -> None:
    uri = f"sqlite:///{tmp_path}/db/mlflow.db"
    run = tmp_path / "runs" / "sig"
    args = [
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(**{"train.steps": 100000}),
        "--telemetry.mlflow=true",
        f"--telemetry.mlflow_uri={uri}",
        "--telemetry.mlflow_experiment=t",
    ]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llmctl", "pretrain", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if (run / "metrics.jsonl").is_file() and len(_train_losses(run)) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    stopped = json.loads((run / "checkpoints" / "latest" / "checkpoint.json").read_text())["step"]
    client, first = _mlflow_run(uri, "t")
    assert first.info.status == "KILLED" and f"MLflow: run {first.info.run_id}" in stderr
    assert _loss_history(client, first.info.run_id) == _train_losses(run)  # nothing past the checkpoint

    resumed = _invoke("pretrain", *args, "--resume", "auto", "--steps", str(stopped + 3))
    assert resumed.exit_code == 0, resumed.output
    assert f"MLflow: continuing run {first.info.run_id} from step {stopped}" in resumed.output
    client, again = _mlflow_run(uri, "t")
    assert again.info.run_id == first.info.run_id and again.info.status == "FINISHED"
    history = _loss_history(client, again.info.run_id)
    assert [s for s, _ in history] == list(range(1, stopped + 4))  # each step once
    assert _same_steps_and_close(history, _train_losses(run))
    params = again.data.params
    assert params["model.dim"] == "64" and len(params["data_fingerprint"]) == 64
    assert (
        params["tokenizer_fingerprint"]
        == json.loads((data / "meta.json").read_text())["tokenizer"]["fingerprint"]
    )
    assert params["train.steps"] == "100000"  # params are write-once; the change is a tag
    assert again.data.tags[f"llmctl.changed_at_step_{stopped}.train.steps"] == str(stopped + 3)
    assert {"tokens/total", "flops/total", "train/lr", "summary/tokens"} <= set(again.data.metrics)
    assert again.data.metrics["summary/steps"] == stopped + 3


@pytest.fixture()
def mlflow_server(tmp_path: Path) -> Any:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/server.db",
            "--default-artifact-root",
            str(tmp_path / "art"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(
                        f"mlflow server did not start: {proc.stderr.read() if proc.stderr else ''}"
                    ) from None
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker processes, started by this test
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_mlflow_tracking_server(data: Path, tmp_path: Path, mlflow_server: str) -> None:
    run = tmp_path / "runs" / "srv"
    result = _invoke(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(**{"train.steps": 4, "train.eval_every": 2, "train.eval_batches": 2}),
        "--telemetry.mlflow=true",
        f"--telemetry.mlflow_uri={mlflow_server}",
    )
    assert result.exit_code == 0, result.output
    client, got = _mlflow_run(mlflow_server, "llmctl")
    assert got.info.status == "FINISHED" and got.info.run_name == "srv"
    assert _same_steps_and_close(_loss_history(client, got.info.run_id), _train_losses(run))
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"kind": "eval"' in x]
    eval_history = sorted((m.step, m.value) for m in client.get_metric_history(got.info.run_id, "eval/loss"))
    assert _same_steps_and_close(eval_history, [(e["step"], e["loss"]) for e in evals]) and len(evals) == 2
    assert json.loads((run / "trackers.json").read_text())["mlflow"]["run_id"] == got.info.run_id


def test_mlflow_server_that_is_down_is_an_error(data: Path, tmp_path: Path) -> None:
    result = _invoke(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        *tiny_args(),
        "--telemetry.mlflow=true",
        f"--telemetry.mlflow_uri=http://127.0.0.1:{_free_port()}",
    )
    assert result.exit_code == 2 and "cannot be reached" in result.output, result.output


# -- W&B offline, real; the files it wrote are read back ------------------------------------------------


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a .wandb file (LevelDB log framing: 32 KiB blocks, 7-byte record headers)."""
    from wandb.proto import wandb_internal_pb2 as pb

    blob = path.read_bytes()
    assert blob[:4] == b":W&B"
    records, pos, block, pending = [], 7, 32768, b""
    while pos + 7 <= len(blob):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", blob[pos : pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk, pos = blob[pos + 7 : pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _wandb_history(run: Path) -> tuple[set[str], list[dict[str, Any]], dict[str, Any]]:
    """(run ids, history rows, config) of every offline run under RUN/wandb."""
    ids, rows, config = set(), [], {}
    for path in sorted(run.glob("wandb/offline-run-*/run-*.wandb")):
        for rec in _wandb_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                ids.add(rec.run.run_id)
            elif kind == "history":
                rows.append(
                    {"/".join(i.nested_key) or i.key: json.loads(i.value_json) for i in rec.history.item}
                )
            elif kind == "config":
                config.update({i.key: json.loads(i.value_json) for i in rec.config.update})
    return ids, rows, config


@pytest.mark.slow
def test_wandb_offline_run_continues_after_resume_with_each_step_once(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    run = tmp_path / "runs" / "wb"
    args = [
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(**{"train.steps": 3}),
        "--telemetry.wandb=true",
        "--telemetry.wandb_project=p",
        "--telemetry.wandb_tags=[a,b]",
    ]
    first = _invoke("pretrain", *args)
    assert first.exit_code == 0, first.output
    second = _invoke("pretrain", *args, "--resume", "auto", "--steps", "5")
    assert second.exit_code == 0, second.output
    ids, rows, config = _wandb_history(run)
    state = json.loads((run / "checkpoints" / "latest" / "checkpoint.json").read_text())["reporter"][
        "trackers"
    ]
    assert ids == {state["wandb"]["run_id"]}  # one W&B run across the resume
    losses = sorted((r["_step"], r["train/loss"]) for r in rows if "train/loss" in r)
    assert _same_steps_and_close(losses, _train_losses(run)) and [s for s, _ in losses] == [1, 2, 3, 4, 5]
    assert all("tokens/total" in r and "flops/total" in r for r in rows if "train/loss" in r)
    assert config["model.dim"] == 64 and len(config["data_fingerprint"]) == 64
    assert "wandb sync" in second.output


def test_wandb_goes_offline_when_the_host_cannot_be_reached(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    run = tmp_path / "runs" / "nonet"
    result = _invoke(
        "pretrain",
        "--data",
        str(data),
        "--out",
        str(run),
        *tiny_args(**{"train.steps": 2}),
        "--telemetry.wandb=true",
    )
    assert result.exit_code == 0, result.output
    assert "cannot be reached; logging offline" in result.output
    sync_dir = json.loads((run / "trackers.json").read_text())["wandb"]["sync_dir"]
    assert f"wandb sync {sync_dir}" in result.output and Path(sync_dir).is_dir()
    _, rows, _ = _wandb_history(run)
    assert sorted(r["_step"] for r in rows if "train/loss" in r) == [1, 2]


# -- W&B rewind after a crash: needs a server, so a fake wandb module ------------------------------------


class _FakeRun:
    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.id = kwargs.get("id") or (kwargs.get("resume_from") or "new1?").split("?")[0]
        self.project, self.entity, self.url = kwargs["project"], "me", f"https://wandb.test/{self.id}"
        self.settings = types.SimpleNamespace(sync_dir="")
        self.config = types.SimpleNamespace(update=lambda *a, **k: None)


def _fake_wandb(monkeypatch: pytest.MonkeyPatch, refuse_rewind: bool = False) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def init(
        project: Any = None,
        entity: Any = None,
        name: Any = None,
        tags: Any = None,
        dir: Any = None,
        mode: Any = None,
        settings: Any = None,
        id: Any = None,
        resume: Any = None,
        resume_from: Any = None,
    ) -> Any:
        given = dict(
            project=project,
            entity=entity,
            name=name,
            tags=tags,
            dir=dir,
            mode=mode,
            settings=settings,
            id=id,
            resume=resume,
            resume_from=resume_from,
        )
        kwargs = {k: v for k, v in given.items() if v is not None}
        calls.append(kwargs)
        if resume_from and refuse_rewind:
            raise RuntimeError("rewind is not enabled for this entity")
        return _FakeRun(kwargs)

    module = types.ModuleType("wandb")
    module.init = init  # type: ignore[attr-defined]
    module.Settings = lambda **kw: kw  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    monkeypatch.setenv("WANDB_MODE", "online")
    return calls


def _info(run_dir: Path, start_step: int) -> Any:
    return types.SimpleNamespace(run_dir=str(run_dir), config={"model": {"dim": 64}}, start_step=start_step)


@pytest.mark.parametrize("refuse", [False, True])
def test_wandb_rewinds_after_a_crash_and_resumes_plainly_after_a_clean_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refuse: bool
) -> None:
    from llmctl.config import TelemetryConfig
    from llmctl.telemetry.trackers import write_trackers_json
    from llmctl.telemetry.wandb_sink import WandbSink

    calls = _fake_wandb(monkeypatch, refuse_rewind=refuse)
    settings = TelemetryConfig(wandb=True)
    # A process that was killed while logging leaves last_step null: steps after the checkpoint were sent.
    write_trackers_json(tmp_path, "wandb", {"run_id": "abc", "last_step": None})
    notes = WandbSink(settings, tmp_path, {"run_id": "abc", "project": "p"}).connect(_info(tmp_path, 10), 10)
    if refuse:  # rewind refused by the server: continue the run, W&B keeps the first values it got
        assert [c.get("resume_from") for c in calls] == ["abc?_step=10", None] and calls[1]["id"] == "abc"
        assert any("rewinding run abc was refused (rewind is not enabled" in n for n in notes)
    else:
        assert calls[0]["resume_from"] == "abc?_step=10" and "id" not in calls[0]
        assert any("rewound to step 10" in n for n in notes)
    # A clean stop at the checkpoint's step: a plain resume of the same run.
    calls.clear()
    write_trackers_json(tmp_path, "wandb", {"run_id": "abc", "last_step": 10})
    WandbSink(settings, tmp_path, {"run_id": "abc", "project": "p"}).connect(_info(tmp_path, 10), 10)
    assert calls == [{**calls[0], "id": "abc", "resume": "allow"}] and "resume_from" not in calls[0]
