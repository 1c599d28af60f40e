"""Optional experiment loggers (off by default): TensorBoard event files and MLflow runs."""

from __future__ import annotations

import logging

from locbench.errors import LocbenchError

log = logging.getLogger(__name__)


class TensorBoardLogger:
    def __init__(self, logdir) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LocbenchError(
                "log.tensorboard is on but the tensorboard package is missing: pip install 'locbench[loggers]'"
            ) from None
        self.writer = SummaryWriter(str(logdir))

    def log(self, record: dict, step: int) -> None:
        for k, v in record.items():
            if k != "epoch" and isinstance(v, (int, float)) and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
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

    def log(self, record: dict, step: int) -> None:
        metrics = {k.replace("/", "_"): v for k, v in record.items() if k != "epoch" and isinstance(v, (int, float))}
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


def make_loggers(cfg, run) -> list:
    out: list = []
    if cfg.log.tensorboard:
        out.append(TensorBoardLogger(run.root / "tb"))
    if cfg.log.mlflow:
        out.append(MLflowLogger(cfg, run))
    return out
