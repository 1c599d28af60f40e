"""Every path of a run folder is built here (see docs/ARCHITECTURE.md, "Run folder")."""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import timm
import torch

import locbench
from locbench.errors import LocbenchError
from locbench.store.atomic import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

#: Version of the run-folder layout; a folder from a newer locbench is refused with a clear message.
RUN_FORMAT_VERSION = 1
STATUSES = ("running", "done", "failed", "diverged")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    config = property(lambda self: self.root / "config.yaml")
    env = property(lambda self: self.root / "env.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    summary = property(lambda self: self.root / "summary.json")
    thresholds = property(lambda self: self.root / "thresholds.json")
    split = property(lambda self: self.root / "split.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best")
    predictions = property(lambda self: self.root / "predictions")
    status_file = property(lambda self: self.root / "status")
    status_json = property(lambda self: self.root / "status.json")
    cell = property(lambda self: self.root / "sweep_cell.json")
    log_file = property(lambda self: self.root / "train.log")

    def epoch_stem(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}"

    def status(self) -> str | None:
        """The run's status word, or None for a folder that never started."""
        try:
            return self.status_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def status_info(self) -> dict[str, Any]:
        try:
            return json.loads(self.status_json.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"status": self.status()}

    def set_status(self, status: str, reason: str = "", *, must: bool = True, **extra: Any) -> None:
        """Write ``status.json`` then ``status``. With ``must=False`` (recording a failure) a write that fails
        is logged, not raised, so that the error which caused the failure is the one the caller sees."""
        assert status in STATUSES, status
        info = {"status": status, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.status_json, info)
            atomic_write_text(self.status_file, status + "\n")
        except OSError as e:
            if must:
                raise
            log.warning("could not record status %s in %s: %s", status, self.root, e)

    def read_summary(self) -> dict[str, Any]:
        if not self.summary.exists():
            raise LocbenchError(f"{self.root} has no summary.json: the run has not finished (status: {self.status()})")
        summary = json.loads(self.summary.read_text())
        check_format(summary, self.summary)
        return summary


def check_format(obj: dict[str, Any], path: Path) -> None:
    version = obj.get("format_version", 1)
    if version > RUN_FORMAT_VERSION:
        raise LocbenchError(
            f"{path} was written by a newer locbench (run format {version}; this one reads up to "
            f"{RUN_FORMAT_VERSION}); upgrade locbench to read it"
        )


def environment(device: str) -> dict[str, Any]:
    """Versions, git commit, device and host, for env.json."""
    info: dict[str, Any] = {
        "locbench": locbench.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "device": device,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return info


def git_commit() -> str | None:
    """The commit of the locbench checkout, if it is one (None for an installed wheel)."""
    here = Path(__file__).resolve().parents[2]
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
