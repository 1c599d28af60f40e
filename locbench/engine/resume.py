"""Whether a run folder may be trained into: a new folder, or an interrupted run resumed with its own settings."""

from __future__ import annotations

import json
from pathlib import Path

from locbench.config import RunConfig, load_config
from locbench.errors import LocbenchError
from locbench.store.rundir import RunDir


def check_run_folder(run: RunDir, cfg: RunConfig, resume: bool) -> None:
    """Refuse a folder that already holds a run (without ``resume``) or whose saved configuration differs from
    ``cfg`` in more than where it runs, how it logs and (with a constant schedule) the number of epochs."""
    if not run.config.exists():
        return
    if not resume:
        status = run.status()
        raise LocbenchError(
            f"{run.root} already holds a run (status: {status}); use --resume to continue it, or another --out"
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
