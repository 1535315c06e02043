"""MLflow sink (`--telemetry.mlflow=true`, `pip install "llmctl[mlflow]"`).

- The tracking URI is `--telemetry.mlflow_uri`, else MLFLOW_TRACKING_URI, else MLflow's default. A
  server (`http://host:5000`) and a local `sqlite:///path/mlflow.db` store (no server) both work.
- MLflow 3 refuses its old file store (`./mlruns`, `file:` URIs) unless MLFLOW_ALLOW_FILE_STORE=true;
  we say so in the error rather than set the opt-out for the user.
- The run id is kept in the checkpoint: `--resume auto` and SLURM requeues continue the same run, and
  only steps after the checkpoint are logged. MLflow cannot delete metric points, so after a crash
  (kill -9) the steps between the checkpoint and the crash appear twice in the history.
- Metrics carry the TensorBoard tag names, except the training loss, which is `loss`.
- Credentials in the URI (`http://user:pw@host`) are used for the connection only: config.yaml,
  checkpoint.json, trackers.json, notes and errors show it redacted (`http://REDACTED@host`).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from llmctl.errors import LlmctlError
from llmctl.redact import REDACTED, basic_auth_parts, redact_uri
from llmctl.telemetry.trackers import (
    TrackerSink,
    eval_scalars,
    start_params,
    summary_scalars,
    task_scalars,
    train_scalars,
)

LOSS_KEY = "loss"
PARAM_LIMIT = 6000  # characters MLflow 3 keeps in a param value
BATCH = 100  # params per log_batch call (MLflow's limit)
_STATUS = {"completed": "FINISHED", "failed": "FAILED"}  # interrupted / time_limit: KILLED until resumed
_SQLITE_HINT = "--telemetry.mlflow_uri=sqlite:///$PWD/mlflow.db (a local database, no server needed)"


def tracking_uri(configured: str | None) -> str:
    """The URI to use: the config's, MLFLOW_TRACKING_URI, or MLflow's own default."""
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    import mlflow

    return str(mlflow.get_tracking_uri())


def check_uri(uri: str) -> None:
    """Refuse what MLflow would refuse later, with the reason and the way out; create a sqlite file's folder."""
    shown = redact_uri(uri)
    if f"{REDACTED}@" in uri:
        raise LlmctlError(
            f"the MLflow URI {uri} holds redacted credentials (a recorded config.yaml or checkpoint.json)",
            "pass the real URI again with --telemetry.mlflow_uri, or export MLFLOW_TRACKING_URI "
            "(or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD)",
        )
    scheme = urlparse(uri).scheme
    if scheme in ("", "file"):
        allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true", "yes")
        if not allowed:
            raise LlmctlError(
                f"MLflow 3 refuses the file store {shown} (./mlruns-style stores are in maintenance mode)",
                f"use {_SQLITE_HINT} or a server (http://host:5000); `mlflow migrate-filestore` moves old runs; "
                "to keep the file store anyway, export MLFLOW_ALLOW_FILE_STORE=true",
            )
    elif scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
        if path and path != ":memory:":
            Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
    elif scheme in ("http", "https"):
        try:
            # urllib cannot open user:password@host itself: the credentials go as a Basic auth header.
            url, headers = basic_auth_parts(uri.rstrip("/") + "/health")
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5):
                pass
        except urllib.error.HTTPError:
            pass  # it answered: a proxy or an older server without /health
        except (OSError, ValueError) as exc:
            raise LlmctlError(
                f"the MLflow tracking server {shown} cannot be reached ({_hide(str(getattr(exc, 'reason', exc)), uri)})",
                f"start it (mlflow server --backend-store-uri sqlite:///mlflow.db) or use {_SQLITE_HINT}",
            ) from None


def _hide(text: str, uri: str) -> str:
    """`text` (an exception's message) with the URI's user:password@ taken out, wherever it is quoted."""
    userinfo = urlparse(uri).netloc.rpartition("@")[0]
    return text.replace(userinfo, REDACTED) if userinfo else text


class MlflowSink(TrackerSink):
    """Logs to one MLflow run, continued across resumes."""

    tracker = "mlflow"

    def __init__(self, settings: Any, run_dir: Path | None, resume: dict[str, Any] | None = None) -> None:
        super().__init__(settings, run_dir, resume)
        self.client: Any = None
        self.uri = ""
        self.shown = ""
        """The URI as notes, errors and trackers.json show it (credentials redacted)."""

    def connect(self, info: Any, resume_step: int) -> list[str]:
        """Create the run, or continue the checkpoint's run; log the config and fingerprints as params."""
        from mlflow.tracking import MlflowClient

        # MLflow's INFO lines (database migrations) would interleave with the panel; warnings still show.
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = tracking_uri(self.settings.mlflow_uri)
        self.shown = redact_uri(self.uri)
        check_uri(self.uri)
        notes: list[str] = []
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            previous = self._previous_run(resume_step)
            if previous is not None:
                self.run_id = previous.info.run_id
                self.client.update_run(self.run_id, status="RUNNING")
                notes.append(f"MLflow: continuing run {self.run_id} from step {resume_step} ({self.shown})")
            else:
                if self.resume.get("run_id") and resume_step > 0:
                    notes.append(
                        f"MLflow: run {self.resume['run_id']} is not in {self.shown}; starting a new run"
                    )
                self.run_id = self._new_run(info)
                notes.append(f"MLflow: run {self.run_id} in {self.shown}")
            self._log_params(start_params(info.config), resume_step, previous)
        except LlmctlError:
            raise
        except Exception as exc:  # MlflowException, SQLAlchemy and HTTP errors: one line, not a traceback
            reason = _hide(str(exc).splitlines()[0] if str(exc) else repr(exc), self.uri)
            raise LlmctlError(
                f"MLflow ({self.shown}) refused to start the run: {reason}",
                f"check --telemetry.mlflow_uri / MLFLOW_TRACKING_URI, or use {_SQLITE_HINT}",
            ) from None
        self.last_step = resume_step
        self._record_open({"uri": self.shown})
        return notes

    def _previous_run(self, resume_step: int) -> Any:
        run_id = self.resume.get("run_id")
        if not run_id or resume_step <= 0:
            return None
        try:
            return self.client.get_run(run_id)
        except Exception:  # not in this store (another URI than before): a new run, said in a note
            return None

    def _new_run(self, info: Any) -> str:
        name = self.settings.mlflow_experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "llmctl"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        tags = {"llmctl.objective": info.objective}
        if info.run_dir:
            tags["llmctl.run_dir"] = str(Path(info.run_dir).resolve())
        run_name = Path(info.run_dir).name if info.run_dir else None
        return str(self.client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id)

    def _log_params(self, params: dict[str, Any], resume_step: int, previous: Any) -> None:
        """Params are write-once in MLflow: a resume adds new keys and records changed values as tags."""
        from mlflow.entities import Param, RunTag

        old = dict(previous.data.params) if previous is not None else {}
        new, changed = [], []
        for key, value in params.items():
            text = str(value)[:PARAM_LIMIT]
            if key not in old:
                new.append(Param(key, text))
            elif old[key] != text:
                changed.append(RunTag(f"llmctl.changed_at_step_{resume_step}.{key}", text))
        for i in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[i : i + BATCH], synchronous=True)
        if changed:
            self.client.log_batch(self.run_id, tags=changed, synchronous=True)

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id} if self.run_id else dict(self.resume)

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        self._mark(step)

    def step(self, record: dict[str, Any]) -> None:
        values = train_scalars(record)
        if "train/loss" in values:
            values[LOSS_KEY] = values.pop("train/loss")
        self._log(values, int(record["step"]))

    def eval(self, record: dict[str, Any]) -> None:
        self._log(eval_scalars(record), int(record["step"]))

    def task_eval(self, record: dict[str, Any]) -> None:
        self._log(task_scalars(record), int(record["step"]))

    def close(self, summary: dict[str, Any]) -> None:
        if self.client is None or self.run_id is None:
            return
        step = int(summary.get("steps") or self.last_step or 0)
        self._log(summary_scalars(summary), step)
        self.client.set_terminated(self.run_id, status=_STATUS.get(str(summary.get("status")), "KILLED"))
        self._record_closed({"uri": self.shown})
        self.client = None
