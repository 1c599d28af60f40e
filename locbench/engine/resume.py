"""Starting and resuming a run folder: whether it may be trained into (a new folder, or an interrupted run resumed
with its own settings), readying it, and loading the newest good checkpoint back."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from locbench.config import RunConfig, dump_config, load_config
from locbench.engine import checkpoint as ckpt
from locbench.engine.environment import environment
from locbench.engine.loggers import LogFile
from locbench.errors import LocbenchError
from locbench.store.atomic import ensure_writable_dir, remove_stale_tmp
from locbench.store.lock import FileLock
from locbench.store.rundir import RunDir

log = logging.getLogger(__name__)


def ready_run_folder(
    run: RunDir, cfg: RunConfig, *, resume: bool, lock: FileLock, log_file: LogFile, device: torch.device
) -> None:
    """Check and lock the run folder, attach the log file, write the config and environment; status running.

    A folder whose run failed before its first epoch (no checkpoint) is started again from nothing."""
    start_over = check_run_folder(run, cfg, resume)
    ensure_writable_dir(run.root, what="--out")  # a file there or a read-only folder: say so before any work
    if not lock.acquire(blocking=False):
        raise LocbenchError(f"{run.root} is being trained by another process right now")
    if start_over and run.status() == "failed":  # still so now that the lock is ours
        log.info("%s failed before its first epoch (%s); starting it again", run.root, run.status_info().get("reason"))
        run.clear_start()
    if remove_stale_tmp(run.root):  # scratch files of writes a kill interrupted: never read, only disk space
        log.info("removed scratch files an interrupted write left in %s", run.root)
    log_file.attach()
    run.write_config(dump_config(cfg))
    run.write_env(environment(str(device)))
    run.set_status("running")


def restore_checkpoint(run: RunDir, stateful: dict[str, Any]) -> dict[str, Any] | None:
    """Load the newest good checkpoint into ``stateful`` (model, optimizer, scheduler, scaler, EMA; None entries
    are skipped) and drop the metrics lines of later epochs; its saved ``train_state``, None when there is none yet."""
    found = ckpt.latest_good(run.checkpoints)
    if found is None:
        log.info("no checkpoint in %s yet: starting from the beginning", run.root)
        run.clear_metrics()
        return None
    stem, _ = found
    saved, meta = ckpt.load_checkpoint(stem, device="cpu")
    for key, obj in stateful.items():
        if obj is not None and saved.get(key):
            obj.load_state_dict(saved[key])
    state = dict(meta["train_state"])
    # metrics lines written after that checkpoint belong to the lost epoch: drop them
    run.truncate_metrics(state["epoch"])
    log.info(
        "resuming %s after epoch %d (best val mAP %.4f at epoch %s)",
        run.root,
        state["epoch"],
        state["best_map"],
        state["best_epoch"],
    )
    return state


def check_run_folder(run: RunDir, cfg: RunConfig, resume: bool) -> bool:
    """Refuse a folder that holds user files and no run, one that already holds a run (without ``resume``), or one
    whose saved configuration differs from ``cfg`` in more than where it runs, how it logs and (with a constant
    schedule) the number of epochs. True when the folder holds a run that failed before its first epoch
    (status failed, no checkpoint): nothing of it is worth keeping, and it is started again with ``cfg``."""
    if not run.config.exists():
        foreign = run.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise LocbenchError(
                f"--out {run.root} is not empty and holds no locbench run ({shown}); give a new or empty folder"
            )
        return False
    if run.status() == "failed" and not run.has_checkpoints():
        return True
    if not resume:
        state = run.state()
        raise LocbenchError(
            f"{run.root} already holds a run (status: {state}); use --resume to continue it, or another --out"
        )
    old = load_config(run.config)
    diff = _config_diff(old.to_dict(), cfg.to_dict())
    changed = [k for k in diff if not k.startswith(("log.", "data.workers", "train.device", "data.cache_dir"))]
    if "data.split" in changed and _same_split(cfg.data.split, run.split):
        changed.remove("data.split")  # the split the run used, at another path (a moved or copied sweep folder)
    if changed and not all(k == "train.epochs" for k in changed):
        raise LocbenchError(
            f"cannot resume {run.root}: the configuration differs from the saved one in {', '.join(changed)}; "
            "resume with the same settings or start a new run folder"
        )
    if changed and cfg.optim.schedule != "constant":
        # the cosine curve spans all epochs: the epochs already run followed another curve than the new config's
        raise LocbenchError(
            f"cannot resume {run.root} with train.epochs {old.train.epochs} -> {cfg.train.epochs}: its "
            f"{cfg.optim.schedule} learning-rate schedule depends on the number of epochs; start a new run folder"
        )
    return False


def _same_split(path: str | None, saved: Path) -> bool:
    """Whether the split file ``path`` holds the same split as the run's own copy ``saved``."""
    try:
        return path is not None and json.loads(Path(path).read_text()) == json.loads(saved.read_text())
    except (OSError, ValueError):
        return False


def _config_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        key = f"{prefix}{k}"
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _config_diff(va, vb, key + ".")
        elif va != vb:
            out.append(key)
    return out
