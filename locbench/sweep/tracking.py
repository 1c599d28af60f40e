"""A sweep in MLflow: one parent run per sweep folder, under which every run of the sweep is nested (each run
logs itself, in whatever process or SLURM job trains it; see :class:`locbench.engine.loggers.MLflowLogger`), and
the sweep's report as the parent's artifacts.

The parent's id is kept in ``DIR/mlflow.json``, so that re-running the sweep (to finish it, or after a
pre-emption) logs under the same parent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from locbench.engine.loggers import check_mlflow, import_mlflow, mlflow_client, mlflow_tracking_uri
from locbench.store.atomic import atomic_write_json
from locbench.sweep.grid import Sweep

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow.json"


def check_sweep_mlflow(sweep: Sweep) -> None:
    """Before anything is created or submitted: the MLflow server of every run that logs to one answers."""
    seen = set()
    for point in sweep.points:
        log_cfg = point.config.log
        key = (log_cfg.mlflow, log_cfg.mlflow_uri)
        if log_cfg.mlflow and key not in seen:
            seen.add(key)
            check_mlflow(point.config, what=f"sweep {sweep.name} (nothing was started)")


def _read(out: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads((out / PARENT_FILE).read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def start_sweep_run(sweep: Sweep, out: Path) -> str | None:
    """The sweep's MLflow parent run (made on the first call, the same one on later calls); None when no run of
    the sweep logs to MLflow."""
    cfg = next((p.config for p in sweep.points if p.config.log.mlflow), None)
    if cfg is None:
        return None
    client, experiment_id = mlflow_client(cfg)
    uri = mlflow_tracking_uri(cfg)
    saved = _read(out)
    if saved and saved.get("tracking_uri") == uri and saved.get("experiment_id") == experiment_id:
        client.update_run(saved["run_id"], status="RUNNING")
        return saved["run_id"]
    tags = {"locbench.sweep_dir": str(out.resolve()), "locbench.kind": "sweep"}
    run_id = client.create_run(experiment_id, run_name=sweep.name, tags=tags).info.run_id
    client.log_param(run_id, "sweep.grid", json.dumps(sweep.grid)[:6000])
    client.log_param(run_id, "sweep.seeds", json.dumps(sweep.seeds))
    client.log_param(run_id, "sweep.runs", len(sweep.points))
    if (out / "plan.json").is_file():
        client.log_artifact(run_id, str(out / "plan.json"))
    atomic_write_json(out / PARENT_FILE, {"tracking_uri": uri, "experiment_id": experiment_id, "run_id": run_id})
    log.info("MLflow: sweep run %s in experiment %s (%s)", run_id, cfg.log.mlflow_experiment, uri or "default")
    return run_id


def sweep_parent_run(out: Path) -> str | None:
    """The parent run id recorded in the sweep folder ``out`` (for its runs to nest under), or None."""
    saved = _read(out)
    return saved.get("run_id") if saved else None


def finish_sweep_run(sweep: Sweep, out: Path, counts: dict[str, int]) -> None:
    """Mark the parent run finished once no run of the sweep is left to train (the counts as its metrics)."""
    saved = _read(out)
    cfg = next((p.config for p in sweep.points if p.config.log.mlflow), None)
    if saved is None or cfg is None:
        return
    client, _ = mlflow_client(cfg)
    for state, n in counts.items():
        client.log_metric(saved["run_id"], f"runs/{state}", n)
    if not set(counts) & {"pending", "running", "interrupted"}:
        client.set_terminated(saved["run_id"], status="FINISHED" if set(counts) == {"done"} else "FAILED")


def log_sweep_report(out: Path, files: list[Path]) -> None:
    """Add the sweep's report files to its parent run (artifact folder ``report``), where the sweep has one."""
    saved = _read(Path(out))
    if saved is None:
        return
    client = import_mlflow().MlflowClient(saved.get("tracking_uri"))
    for path in files:
        if path.is_file():
            client.log_artifact(saved["run_id"], str(path), artifact_path="report")
