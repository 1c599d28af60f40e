"""The run folder: every file of a run (or sweep grid point) folder is named, read and written here.

:class:`RunDir` is the only reader and writer of ``status``, ``status.json``, ``config.yaml``, ``env.json``,
``metrics.jsonl``, ``summary.json``, ``thresholds.json``, ``predictions/<part>.npz``, ``sweep_point.json``,
``ensemble.json`` and ``eval/``, and derives a folder's state (:meth:`RunDir.state`) for the report, the sweep
runner and ``locbench status`` alike. Files whose format another module owns get public paths (``config``: written with
:func:`locbench.config.dump_config`, loaded typed with :func:`locbench.config.load_config`; ``split``:
``data.splits``; ``checkpoints``/``best``: ``engine.checkpoint``; ``log_file``: logging). Torch-free; see
docs/ARCHITECTURE.md, "Run folder".
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locbench.errors import LocbenchError
from locbench.store.atomic import (
    TMP_PREFIX,
    TMP_SUFFIX,
    append_jsonl,
    atomic_write_json,
    atomic_write_npz,
    atomic_write_text,
    read_jsonl,
)
from locbench.store.lock import FileLock
from locbench.store.yaml_safe import load_yaml

log = logging.getLogger(__name__)

#: Version of the run-folder layout; a folder from a newer locbench is refused with a clear message.
RUN_FORMAT_VERSION = 1
#: The words the ``status`` file holds.
STATUSES = ("running", "done", "failed", "diverged")
#: What :meth:`RunDir.state` derives: ``pending`` (never started), ``running`` (a live process holds the run's
#: lock), ``interrupted`` (status running, but nobody holds the lock: killed or crashed), or the status word.
STATES = ("pending", "running", "interrupted", "done", "failed", "diverged")
#: Files whose presence marks a folder as a run folder.
_MARKERS = ("status", "config.yaml", "sweep_point.json", "sweep_cell.json", "summary.json", "metrics.jsonl")
#: What a run folder may hold before its config.yaml is written (lock, logs, a sweep's record, a failure to start),
#: besides scratch files of interrupted writes; anything else there is the user's (a split.json too: never adopted).
_BEFORE_CONFIG = ("status", "status.json", "sweep_point.json", "sweep_cell.json", "train.log", "worker.log", ".lock")
#: What a run that failed before its first epoch leaves and a new start replaces (logs and sweep record are kept).
_RESTARTED = (
    "status",
    "status.json",
    "config.yaml",
    "env.json",
    "metrics.jsonl",
    "summary.json",
    "thresholds.json",
    "split.json",
    "predictions",
    "checkpoints",
    "eval",
)


class RunFileError(LocbenchError):
    """A run-folder file is missing, damaged or from a newer locbench.

    ``path`` is the file and ``cause`` the bare reason (the parser's message, say), for callers that list
    problems in their own words.
    """

    def __init__(self, message: str, cause: str = "", *, path: Path | None = None) -> None:
        super().__init__(message)
        self.cause = cause or message
        self.path = path


class NewerFormatError(RunFileError):
    """A file written by a newer locbench (run format ``version``): its fields may have changed meaning."""

    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            f"{path} was written by a newer locbench (run format {version}; this one reads up to "
            f"{RUN_FORMAT_VERSION}); upgrade locbench to read it",
            path=path,
        )
        self.version = version


@dataclass(frozen=True)
class Predictions:
    """Stored predictions of one part (``predictions/<part>.npz``): ids (str), probs (N, C), targets (N, C)."""

    ids: np.ndarray
    probs: np.ndarray
    targets: np.ndarray


@dataclass(frozen=True)
class RunDir:
    """One run folder: its paths, typed readers and atomic writers, and its state."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # Files another module owns the format of (see the module docstring).
    config = property(lambda self: self.root / "config.yaml")
    split = property(lambda self: self.root / "split.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    best = property(lambda self: self.root / "checkpoints" / "best")
    log_file = property(lambda self: self.root / "train.log")
    worker_log = property(lambda self: self.root / "worker.log")
    explain_dir = property(lambda self: self.root / "explain")
    browse_dir = property(lambda self: self.root / "browse")

    # Files read and written only through the methods below.
    _env = property(lambda self: self.root / "env.json")
    _metrics = property(lambda self: self.root / "metrics.jsonl")
    _summary = property(lambda self: self.root / "summary.json")
    _thresholds = property(lambda self: self.root / "thresholds.json")
    _status_file = property(lambda self: self.root / "status")
    _status_json = property(lambda self: self.root / "status.json")
    _point = property(lambda self: self.root / "sweep_point.json")
    # The record's name in sweeps made by a locbench that called a grid point a "cell": read, never made anew.
    _old_point = property(lambda self: self.root / "sweep_cell.json")
    _lock_file = property(lambda self: self.root / ".lock")
    _mlflow = property(lambda self: self.root / "mlflow.json")
    _ensemble = property(lambda self: self.root / "ensemble.json")

    def epoch_stem(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}"

    def _predictions(self, part: str) -> Path:
        return self.root / "predictions" / f"{part}.npz"

    def is_run(self) -> bool:
        """A folder holding any file a run (or a prepared sweep grid point) writes."""
        return self.root.is_dir() and any((self.root / m).exists() for m in _MARKERS)

    def has_checkpoints(self) -> bool:
        return self.checkpoints.is_dir() and any(self.checkpoints.iterdir())

    def foreign_entries(self) -> list[str]:
        """Names in a folder without ``config.yaml`` that no run writes before it (user files), sorted; [] for a
        missing or empty folder."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.name not in _BEFORE_CONFIG and not (p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX))
        )

    def clear_start(self) -> None:
        """Remove what a run that failed before its first epoch left (config, status, split, ...), so that it
        starts again from nothing; its logs and sweep record stay. Call only while holding :meth:`lock`."""
        for name in _RESTARTED:
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    # ---- status and state ------------------------------------------------------------------------------------

    def lock(self) -> FileLock:
        """The lock a trainer holds while it works on this folder (released by the kernel when it dies)."""
        return FileLock(self._lock_file)

    def status(self) -> str | None:
        """The run's status word, or None for a folder that never started."""
        try:
            words = self._status_file.read_text().split()
        except FileNotFoundError:
            return None
        return words[0] if words else None

    def state(self) -> str:
        """One of :data:`STATES` (or an unexpected status word as written): the only place it is derived."""
        status = self.status()
        if status is None:
            return "pending"
        if status == "running":
            # the lock is released by the kernel even after kill -9: nobody holding it means nobody is training
            return "running" if self.lock().held_elsewhere() else "interrupted"
        return status

    def read_status_info(self) -> Any:
        """``status.json`` as written (None when absent). Raises OSError or ValueError when unreadable."""
        if not self._status_json.exists():
            return None
        return _load_json(self._status_json)

    def status_info(self) -> dict[str, Any]:
        """``status.json`` (status, reason, time, ...), or just the status when it is missing or unreadable."""
        try:
            info = self.read_status_info()
        except (OSError, ValueError):
            info = None
        return info if isinstance(info, dict) else {"status": self.status()}

    def set_status(self, status: str, reason: str = "", *, must: bool = True, **extra: Any) -> None:
        """Write ``status.json`` then ``status``. With ``must=False`` (recording a failure) a write that fails
        is logged, not raised, so that the error which caused the failure is the one the caller sees."""
        assert status in STATUSES, status
        info = {"status": status, "reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self._status_json, info)
            atomic_write_text(self._status_file, status + "\n")
        except OSError as e:
            if must:
                raise
            log.warning("could not record status %s in %s: %s", status, self.root, e)

    # ---- configuration, environment, metrics -----------------------------------------------------------------

    def write_config(self, text: str) -> None:
        """``config.yaml`` (the text of :func:`locbench.config.dump_config`)."""
        atomic_write_text(self.config, text)

    def read_config(self) -> dict[str, Any]:
        """``config.yaml`` as a plain mapping ({} when absent or not a mapping), for readers that need no
        validated :class:`~locbench.config.RunConfig`. Raises OSError, ValueError or yaml.YAMLError."""
        if not self.config.exists():
            return {}
        cfg = load_yaml(self.config.read_text(encoding="utf-8"), where=str(self.config))
        return cfg if isinstance(cfg, dict) else {}

    def write_env(self, info: dict[str, Any]) -> None:
        """``env.json`` (see :func:`environment`)."""
        atomic_write_json(self._env, info)

    def read_env(self) -> dict[str, Any]:
        return _read_object(self._env)

    def append_metrics(self, record: dict[str, Any]) -> None:
        """One epoch's line of ``metrics.jsonl``."""
        append_jsonl(self._metrics, record)

    def read_metrics(self) -> list[dict[str, Any]]:
        """Every epoch's record ([] before the first); a line torn by a kill at the end is skipped."""
        return read_jsonl(self._metrics)

    def truncate_metrics(self, epoch: int) -> None:
        """Keep the lines of epochs up to ``epoch`` (those after the checkpoint a resume starts from are lost)."""
        history = [r for r in self.read_metrics() if r["epoch"] <= epoch]
        atomic_write_text(self._metrics, "".join(json.dumps(r) + "\n" for r in history))

    def clear_metrics(self) -> None:
        self._metrics.unlink(missing_ok=True)

    # ---- results ---------------------------------------------------------------------------------------------

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self._summary, summary)

    def has_summary(self) -> bool:
        return self._summary.exists()

    def read_summary(self) -> dict[str, Any]:
        """``summary.json``; raises :class:`RunFileError` when missing or damaged, :class:`NewerFormatError`
        when a newer locbench wrote it."""
        if not self._summary.exists():
            raise RunFileError(
                f"{self.root} has no summary.json: the run has not finished (status: {self.status()})",
                path=self._summary,
            )
        summary = _read_object(self._summary)
        check_format(summary, self._summary)
        return summary

    def write_thresholds(self, classes: list[str], thresholds: np.ndarray) -> None:
        atomic_write_json(self._thresholds, {"classes": list(classes), "thresholds": np.asarray(thresholds).tolist()})

    def read_thresholds(self, num_classes: int | None = None) -> tuple[list[str], np.ndarray]:
        """Class names and thresholds of ``thresholds.json``; with ``num_classes``, checked against the
        columns of the stored predictions. Raises :class:`RunFileError`.

        A threshold above 1 (written as 2.0) belongs to a class with no positive training example: it is above
        every probability, so ``probs >= threshold`` never predicts that class (JSON has no infinity).
        """
        path = self._thresholds
        obj = _read_object(path)
        try:
            names, thr = [str(c) for c in obj["classes"]], np.asarray(obj["thresholds"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            raise RunFileError(f"{path} is unreadable ({e}); the run folder is damaged", str(e), path=path) from None
        if num_classes is not None and (len(names) != num_classes or thr.shape != (num_classes,)):
            raise RunFileError(
                f"{path} lists {len(names)} classes / {thr.size} thresholds but predictions/val.npz has {num_classes} "
                "columns; the run folder is inconsistent: train it again",
                path=path,
            )
        return names, thr

    def write_predictions(self, part: str, ids: Any, probs: np.ndarray, targets: np.ndarray) -> None:
        """``predictions/<part>.npz``: ids (str), probs (N, C) float32, targets (N, C) uint8."""
        atomic_write_npz(self._predictions(part), ids=np.array(ids), probs=probs, targets=targets)

    def has_predictions(self, part: str = "val") -> bool:
        return self._predictions(part).exists()

    def read_predictions(self, part: str = "val") -> Predictions:
        """``predictions/<part>.npz``; raises :class:`RunFileError` when missing or unreadable."""
        path = self._predictions(part)
        if not path.exists():
            which = "validation" if part == "val" else part
            raise RunFileError(
                f"{path} not found: {self.root} has no stored {which} predictions (an unfinished or failed run, or "
                "not a run folder); error analysis reads them: finish the run first (`locbench status` shows it)",
                path=path,
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                return Predictions(np.asarray(z["ids"]).astype(str), np.asarray(z["probs"]), np.asarray(z["targets"]))
        except (OSError, ValueError, KeyError) as e:
            raise RunFileError(
                f"{path} is unreadable ({e}); the run folder is damaged: train it again", str(e), path=path
            ) from None

    def read_best_meta(self) -> dict[str, Any]:
        """The best checkpoint's metadata (``checkpoints/best.json``; {} when there is none)."""
        path = self.best.with_suffix(".json")
        return _read_object(path) if path.exists() else {}

    def eval_path(self, name: str, *, out: str | os.PathLike | None = None) -> Path:
        """Where :meth:`write_eval` writes the result ``name``: ``eval/<name>.json``, or ``out`` when given."""
        return Path(out) if out else self.root / "eval" / f"{name}.json"

    def write_eval(
        self,
        name: str,
        result: dict[str, Any],
        *,
        out: str | os.PathLike | None = None,
        arrays: dict[str, np.ndarray] | None = None,
    ) -> Path:
        """``eval/<name>.json`` (or ``out``) and, with ``arrays``, the ``.npz`` beside it; returns the JSON path."""
        path = self.eval_path(name, out=out)
        atomic_write_json(path, result)
        if arrays is not None:
            atomic_write_npz(path.with_suffix(".npz"), **arrays)
        return path

    # ---- ensemble -------------------------------------------------------------------------------------------

    def write_ensemble(self, record: dict[str, Any]) -> None:
        """``ensemble.json``: what ``locbench ensemble`` averaged; ``members`` is a list of ``{"path": absolute,
        "relative": from this folder, "sha256": the member's best checkpoint}`` (see :meth:`ensemble_members`)."""
        atomic_write_json(self._ensemble, record)

    def is_ensemble(self) -> bool:
        return self._ensemble.exists()

    def read_ensemble(self) -> dict[str, Any] | None:
        """``ensemble.json`` (None for a run that is not an ensemble); raises :class:`RunFileError` when damaged."""
        if not self._ensemble.exists():
            return None
        obj = _read_object(self._ensemble)
        check_format(obj, self._ensemble)
        if not isinstance(obj.get("members"), list) or not obj["members"]:
            raise RunFileError(
                f"{self._ensemble} lists no members; the ensemble folder is damaged", path=self._ensemble
            )
        return obj

    def ensemble_members(self) -> list[Path]:
        """The run folders an ensemble averages ([] for a run that is not one): each found at its path relative to
        this folder (the two moved together), else at its absolute path, and checked to still hold the best
        checkpoint the ensemble was made from. Raises :class:`RunFileError` naming the member and the fix."""
        record = self.read_ensemble()
        if record is None:
            return []
        out = []
        for i, member in enumerate(record["members"], 1):
            try:
                candidates = [self.root / member["relative"], Path(member["path"])]
                want = member.get("sha256")
            except (KeyError, TypeError):
                raise RunFileError(
                    f"{self._ensemble}: member {i} is unreadable; the ensemble folder is damaged", path=self._ensemble
                ) from None
            found = next((p for p in candidates if RunDir(p).best.with_suffix(".json").exists()), None)
            if found is None:
                raise RunFileError(
                    f"{self._ensemble}: member {i} ({member['path']}) is not there any more (moved or deleted?): an "
                    "ensemble refers to its members' folders instead of copying their checkpoints; put it back, or "
                    "make the ensemble again with `locbench ensemble`",
                    path=self._ensemble,
                )
            have = RunDir(found).read_best_meta().get("sha256")
            if want and have != want:
                raise RunFileError(
                    f"{self._ensemble}: member {i} ({found}) holds another best checkpoint than when the ensemble was "
                    "made (trained again?); its stored probabilities no longer match: make the ensemble again",
                    path=self._ensemble,
                )
            out.append(found)
        return out

    # ---- sweep grid point ------------------------------------------------------------------------------------

    def _point_file(self) -> Path | None:
        """The sweep record: ``sweep_point.json``, else an older sweep's ``sweep_cell.json``; None outside a sweep."""
        return next((p for p in (self._point, self._old_point) if p.exists()), None)

    def write_sweep_point(self, record: dict[str, Any]) -> None:
        """``sweep_point.json``: sweep, point_id, axes, seed, run_id and the point's full config (an older sweep's
        ``sweep_cell.json`` is replaced by it)."""
        atomic_write_json(self._point, record)
        self._old_point.unlink(missing_ok=True)

    def read_sweep_point(self) -> dict[str, Any] | None:
        """``sweep_point.json``, or the ``sweep_cell.json`` of a sweep made by an older locbench with its ``cell_id``
        read as ``point_id`` (None outside a sweep). Raises OSError or ValueError when unreadable."""
        path = self._point_file()
        if path is None:
            return None
        obj = _load_json(path)
        if not isinstance(obj, dict):
            raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
        if "point_id" not in obj:
            obj = {("point_id" if k == "cell_id" else k): v for k, v in obj.items()}
        return obj

    def write_mlflow_run(self, info: dict[str, Any]) -> None:
        """Which MLflow run this run logs to (tracking URI, experiment and run id), for a resume to continue it."""
        atomic_write_json(self._mlflow, info)

    def read_mlflow_run(self) -> dict[str, Any] | None:
        """The MLflow run :meth:`write_mlflow_run` recorded; None when there is none (or it is unreadable)."""
        try:
            obj = json.loads(self._mlflow.read_text())
        except (OSError, ValueError):
            return None
        return obj if isinstance(obj, dict) else None

    def set_aside(self, dest: Path) -> None:
        """Move the folder to ``dest`` and start it again empty, keeping only its sweep record (under its name)."""
        path = self._point_file()
        record = path.read_bytes() if path is not None else None
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(self.root), str(dest))
        self.root.mkdir()
        if path is not None and record is not None:
            path.write_bytes(record)


def check_format(obj: dict[str, Any], path: Path) -> None:
    """Raise :class:`NewerFormatError` for a file whose ``format_version`` is newer than this locbench reads."""
    version = obj.get("format_version", 1)
    if isinstance(version, int) and version > RUN_FORMAT_VERSION:
        raise NewerFormatError(path, version)


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_object(path: Path) -> dict[str, Any]:
    """A JSON object of the run folder, with errors that name the file and the fix."""
    try:
        obj = _load_json(path)
    except FileNotFoundError:
        raise RunFileError(f"{path} is missing: the run folder is incomplete; train it again", path=path) from None
    except ValueError as e:  # UnicodeDecodeError included
        raise RunFileError(f"{path} is not valid JSON ({e}); the run folder is damaged", str(e), path=path) from None
    except OSError as e:
        raise RunFileError(f"{path} is unreadable ({e}); the run folder is damaged", str(e), path=path) from None
    if not isinstance(obj, dict):
        raise RunFileError(f"{path} is not a JSON object; the run folder is damaged", "not a JSON object", path=path)
    return obj
