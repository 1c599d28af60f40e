"""Where a run's progress is logged: its ``train.log`` file and the optional experiment loggers (off by default),
TensorBoard event files and MLflow runs, which follow the training loop as callbacks."""

from __future__ import annotations

import logging
import math
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

from locbench.engine.callbacks import Callback
from locbench.errors import LocbenchError

log = logging.getLogger(__name__)


class TensorBoardLogger(Callback):
    def __init__(self, logdir) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LocbenchError(
                "log.tensorboard is on but the tensorboard package is missing: pip install 'locbench[loggers]'"
            ) from None
        self.writer = SummaryWriter(str(logdir))

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(k, v, record["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer) -> None:
        self.writer.close()


def mlflow_tracking_uri(cfg) -> str | None:
    """``log.mlflow_uri`` (else ``MLFLOW_TRACKING_URI``) as MLflow takes it: a plain folder becomes an absolute
    ``file:`` URI (a file store), so that jobs started elsewhere log to the same place; None leaves MLflow's
    default."""
    uri = cfg.log.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return None
    if uri.startswith("file:") or (":" not in uri and uri != "databricks"):
        # MLflow 3 keeps its file store only on request (MLFLOW_ALLOW_FILE_STORE); a folder here is that request
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    if ":" in uri or uri == "databricks":
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def check_mlflow(cfg, what: str) -> None:
    """Before anything is trained: with ``log.mlflow`` on, mlflow is installed and a tracking server answers
    (``GET /health``), so that a server that is down stops the command now, not after training."""
    if not cfg.log.mlflow:
        return
    import_mlflow()
    uri = mlflow_tracking_uri(cfg)
    if uri is None or not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=10) as reply:
            reply.read(100)
    except (OSError, ValueError) as e:
        raise LocbenchError(
            f"{what}: log.mlflow is on but the MLflow server at {uri} does not answer ({e}); start it "
            "(`mlflow server --host 127.0.0.1 --port PORT --backend-store-uri sqlite:///mlflow.db`), give its "
            "address in log.mlflow_uri (or MLFLOW_TRACKING_URI), or log to a folder: --set log.mlflow_uri=mlruns"
        ) from None


def import_mlflow():
    """The mlflow module, or a clear error naming the extra to install."""
    # MLflow prints each run's URL to stdout when it ends; locbench's log line names the run already
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    try:
        import mlflow
    except ImportError:
        raise LocbenchError("log.mlflow is on but mlflow is missing: pip install 'locbench[loggers]'") from None
    return mlflow


def mlflow_client(cfg):
    """An ``MlflowClient`` for ``log.mlflow_uri`` and the id of ``log.mlflow_experiment`` (created when missing)."""
    mlflow = import_mlflow()
    client = mlflow.MlflowClient(mlflow_tracking_uri(cfg))
    name = cfg.log.mlflow_experiment
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return client, exp.experiment_id
    try:
        return client, client.create_experiment(name)
    except mlflow.exceptions.MlflowException:  # another run of the sweep created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return client, exp.experiment_id


def flat_config(cfg) -> dict[str, str]:
    """The resolved configuration as MLflow parameters: ``section.key`` -> its value as text."""
    return {f"{section}.{k}": str(v) for section, values in cfg.to_dict().items() for k, v in values.items()}


class MLflowLogger(Callback):
    """One MLflow run per locbench run: the resolved configuration as parameters, the epoch metrics by epoch, and
    at the end the summary's numbers as ``final/...`` metrics, with summary, thresholds, config and predictions
    as artifacts. Inside a sweep the run is nested under the sweep's run (``parent_run_id``); a resumed run goes
    on logging to the MLflow run it started (recorded in the run folder's ``mlflow.json``)."""

    def __init__(self, cfg, run, parent_run_id: str | None = None) -> None:
        self.mlflow = import_mlflow()
        self.client, experiment_id = mlflow_client(cfg)
        self.run = run
        saved = run.read_mlflow_run()
        uri = mlflow_tracking_uri(cfg)
        if saved and saved.get("tracking_uri") == uri and saved.get("experiment_id") == experiment_id:
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("MLflow: continuing run %s", self.run_id)
            return
        tags = {"locbench.run_dir": str(run.root.resolve())}
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        self.run_id = self.client.create_run(experiment_id, run_name=run.root.name, tags=tags).info.run_id
        run.write_mlflow_run({"tracking_uri": uri, "experiment_id": experiment_id, "run_id": self.run_id})
        items = [self.mlflow.entities.Param(k, v) for k, v in flat_config(cfg).items()]
        for i in range(0, len(items), 100):  # the tracking API takes up to 100 parameters per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])
        log.info("MLflow: run %s in experiment %s (%s)", self.run_id, cfg.log.mlflow_experiment, uri or "default")

    def _metrics(self, values: dict[str, Any], step: int, prefix: str = "") -> list[Any]:
        now = int(time.time() * 1000)
        return [
            self.mlflow.entities.Metric(prefix + k, float(v), now, step)
            for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        values = {k: v for k, v in record.items() if k != "epoch"}
        self.client.log_batch(self.run_id, metrics=self._metrics(values, record["epoch"]))

    def on_train_end(self, trainer) -> None:
        summary = self.run.read_summary()
        final = [m for part in ("val", "test") for m in self._metrics(summary.get(part) or {}, 0, f"final/{part}/")]
        if final:
            self.client.log_batch(self.run_id, metrics=final)
        root = self.run.root
        for name in ("summary.json", "thresholds.json", "config.yaml", "metrics.jsonl"):
            if (root / name).is_file():
                self.client.log_artifact(self.run_id, str(root / name))
        if (root / "predictions").is_dir():
            self.client.log_artifacts(self.run_id, str(root / "predictions"), artifact_path="predictions")
        self.client.set_terminated(self.run_id, status="FINISHED")

    def on_train_error(self, trainer, status: str) -> None:
        # an interrupted run is resumed into the same MLflow run (RUNNING again); failed and diverged ones end FAILED
        self.client.set_tag(self.run_id, "locbench.status", status)
        self.client.set_terminated(self.run_id, status="KILLED" if status == "interrupted" else "FAILED")


def make_loggers(cfg, run, *, mlflow_parent: str | None = None) -> list[Callback]:
    """The experiment loggers ``log.tensorboard`` and ``log.mlflow`` ask for (MLflow runs nested under
    ``mlflow_parent`` where given)."""
    out: list[Callback] = []
    if cfg.log.tensorboard:
        out.append(TensorBoardLogger(run.root / "tb"))
    if cfg.log.mlflow:
        out.append(MLflowLogger(cfg, run, parent_run_id=mlflow_parent))
    return out


class _ToRootHandlers(logging.Handler):
    """Hands records on to the root logger's handlers, as propagation would."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().callHandlers(record)


class LogFile:
    """Copies locbench's log lines (INFO and up) into a file (a run's ``train.log``) between :meth:`attach` and
    :meth:`detach`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handler: logging.Handler | None = None
        self.saved: tuple[int, bool, logging.Handler] | None = None

    def attach(self) -> None:
        self.handler = logging.FileHandler(self.path)
        self.handler.setLevel(logging.INFO)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        logger = logging.getLogger("locbench")
        logger.addHandler(self.handler)
        level = logger.getEffectiveLevel()
        if level > logging.INFO:
            # Under -q, or with no logging set up (a submitit job, a library caller), the logger would drop the
            # epoch lines before the file saw them: let INFO through to the file, pass on to the caller's handlers
            # only what they would have got.
            forward = _ToRootHandlers(level)
            self.saved = (logger.level, logger.propagate, forward)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            logger.addHandler(forward)

    def detach(self) -> None:
        logger = logging.getLogger("locbench")
        if self.saved is not None:
            logger.setLevel(self.saved[0])
            logger.propagate = self.saved[1]
            logger.removeHandler(self.saved[2])
            self.saved = None
        if self.handler is not None:
            logger.removeHandler(self.handler)
            self.handler.close()
            self.handler = None
