"""Where a run's progress is logged: its ``train.log`` file and the optional experiment loggers (off by default),
TensorBoard event files and MLflow runs, which follow the training loop as callbacks."""

from __future__ import annotations

import logging
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


class MLflowLogger(Callback):
    def __init__(self, cfg, run) -> None:
        try:
            import mlflow
        except ImportError:
            raise LocbenchError("log.mlflow is on but mlflow is missing: pip install 'locbench[loggers]'") from None
        self.mlflow = mlflow
        self.run = mlflow.start_run(run_name=run.root.name)
        flat = {}
        for section, values in cfg.to_dict().items():
            for k, v in values.items():
                flat[f"{section}.{k}"] = v
        mlflow.log_params(flat)

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        metrics = {k.replace("/", "_"): v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
        self.mlflow.log_metrics(metrics, step=record["epoch"])

    def on_train_end(self, trainer) -> None:
        self.mlflow.end_run()


def make_loggers(cfg, run) -> list[Callback]:
    """The experiment loggers ``log.tensorboard`` and ``log.mlflow`` ask for."""
    out: list[Callback] = []
    if cfg.log.tensorboard:
        out.append(TensorBoardLogger(run.root / "tb"))
    if cfg.log.mlflow:
        out.append(MLflowLogger(cfg, run))
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
