"""Read a sweep folder (run folders plus an optional ``sweep.yaml``) into plain Python objects.

Every file of a run folder is read through :class:`~locbench.store.rundir.RunDir`, which also derives the run's
state. Missing or unreadable files never stop a report: a run that cannot be used is kept with a reason and listed
in the report's problems section. Predictions are loaded lazily and at most once per run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from locbench.errors import LocbenchError
from locbench.store.rundir import NewerFormatError, Predictions, RunDir, RunFileError
from locbench.store.yaml_safe import load_yaml

log = logging.getLogger(__name__)

METRICS = ("map", "macro_f1", "macro_f1_tuned")
METRIC_LABELS = {"map": "mAP", "macro_f1": "macro F1 @0.5", "macro_f1_tuned": "macro F1 (tuned)"}
#: The parts of a run's split a report can score, in order of preference: ``test`` (held out from every choice made
#: in training) when every usable run has one, else ``val``.
PARTS = ("test", "val")
#: Entries of a ``val`` block that are threshold-tuned F1; read only when cross-fitted (see :meth:`RunResult.value`).
_TUNED = ("macro_f1_tuned", "micro_f1_tuned")


def metric_label(metric: str, part: str = "val") -> str:
    """``test mAP``, ``val macro F1 (tuned, cross-fitted)``: a metric with the part it was measured on."""
    label = METRIC_LABELS.get(metric, metric)
    if metric in _TUNED and part == "val":
        label = label.replace("(tuned)", "(tuned, cross-fitted)")
    return f"{part} {label}"


#: Last components of dotted axis keys too generic to name an axis on their own ("loss.name" -> "loss").
_GENERIC = {"name", "preset", "type", "kind", "id"}


@dataclass
class RunResult:
    """What a report needs of one run folder: its state, identity in the grid, summary and per-epoch metrics
    (read by :func:`read_run`; predictions and thresholds read through the folder on first use)."""

    run_id: str
    path: Path
    status: str
    reason: str = ""
    point_id: str = ""
    axes: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    _pred: Predictions | None = field(default=None, repr=False)
    _pred_loaded: bool = field(default=False, repr=False)
    _thr: np.ndarray | None = field(default=None, repr=False)
    _thr_loaded: bool = field(default=False, repr=False)
    _thr_classes: list[str] = field(default_factory=list, repr=False)
    part: str = "val"
    """The part :meth:`value` and :meth:`predictions` read (:func:`collect` sets it to :attr:`SweepResults.part`)."""

    @property
    def folder(self) -> RunDir:
        return RunDir(self.path)

    @property
    def usable(self) -> bool:
        """Finished (``done``) with a readable summary: the only runs statistics are computed on."""
        return self.status == "done" and self.summary is not None

    def has_part(self, part: str) -> bool:
        """Whether ``summary.json`` holds a block for ``part`` (``val``, ``test``)."""
        return isinstance((self.summary or {}).get(part), dict)

    def value(self, metric: str) -> float:
        """A metric of :attr:`part` from ``summary.json`` (NaN when absent).

        A validation tuned F1 is read only when cross-fitted (``tuned_f1: cross-fitted``, written since runs tune
        on one part and report another): an older run's was measured on the images its thresholds were tuned on,
        and is never shown as a result.
        """
        block = (self.summary or {}).get(self.part) or {}
        if self.part == "val" and metric in _TUNED and block.get("tuned_f1") != "cross-fitted":
            return math.nan
        v = block.get(metric)
        return float(v) if isinstance(v, int | float) else math.nan

    def cost(self, key: str) -> float:
        v = (self.summary or {}).get("cost", {}).get(key)
        return float(v) if isinstance(v, int | float) else math.nan

    def predictions(self) -> Predictions | None:
        """The predictions of :attr:`part` (``predictions/<part>.npz``), read on first use and kept (None when
        missing or unreadable)."""
        if not self._pred_loaded:
            self._pred_loaded = True
            if self.folder.has_predictions(self.part):
                try:
                    self._pred = self.folder.read_predictions(self.part)
                except RunFileError as e:
                    log.warning("%s: cannot read predictions (%s); left out of image-level analyses", e.path, e.cause)
        return self._pred

    def thresholds(self, classes: list[str]) -> np.ndarray:
        """Tuned thresholds in the order of ``classes`` (0.5 where missing or unreadable)."""
        if not self._thr_loaded:
            self._thr_loaded = True
            try:
                self._thr_classes, self._thr = self.folder.read_thresholds()
            except RunFileError:
                self._thr = None
        if self._thr is None:
            return np.full(len(classes), 0.5)
        lookup = dict(zip(self._thr_classes, self._thr, strict=False))
        return np.asarray([lookup.get(c, 0.5) for c in classes], dtype=np.float64)


@dataclass
class Point:
    """One grid point: the runs that differ only in their seed."""

    point_id: str
    axes: dict[str, str]
    runs: list[RunResult]

    @property
    def done(self) -> list[RunResult]:
        return [r for r in self.runs if r.usable]

    def by_seed(self, metric: str) -> dict[int, float]:
        """seed -> metric over usable runs (runs without a seed are keyed by their position)."""
        out = {}
        for i, r in enumerate(self.done):
            v = r.value(metric)
            if math.isfinite(v):
                out[r.seed if r.seed is not None else -1 - i] = v
        return out


@dataclass
class SweepResults:
    """Everything a report needs from a sweep folder."""

    root: Path
    name: str
    runs: list[RunResult]
    points: list[Point]
    axes: dict[str, list[str]]
    axis_labels: dict[str, str]
    classes: list[str]
    sweep_yaml: dict | None = None
    part: str = "val"
    """The part every number of the report is measured on: ``test`` when every usable run has a test block in its
    ``summary.json``, else ``val`` (:func:`choose_part`). Every run's :attr:`RunResult.part` is the same."""

    def metric_label(self, metric: str) -> str:
        """:func:`metric_label` of ``metric`` on this sweep's :attr:`part`."""
        return metric_label(metric, self.part)

    def point(self, point_id: str) -> Point:
        for c in self.points:
            if c.point_id == point_id:
                return c
        raise KeyError(point_id)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs if r.usable and r.seed is not None})

    @property
    def problems(self) -> list[RunResult]:
        """Runs that are not usable: failed, diverged, still running, or unreadable."""
        return [r for r in self.runs if not r.usable]

    def point_label(self, point: Point, *, axes: list[str] | None = None) -> str:
        """``loss=focal, aug=strong`` (only axes with more than one level), or the point id without axes."""
        keys = [k for k in (axes or self.axes) if len(self.axes.get(k, [])) > 1 or axes]
        if not point.axes or not keys:
            return point.point_id
        return ", ".join(f"{self.axis_labels[k]}={point.axes[k]}" for k in keys if k in point.axes)


def fmt_value(v: Any) -> str:
    """Axis values as short strings (lists joined, floats without trailing noise)."""
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | tuple):
        return "+".join(fmt_value(x) for x in v) or "none"
    return str(v)


def axis_labels(keys: list[str]) -> dict[str, str]:
    """Short display names for dotted axis keys: ``loss.name`` -> ``loss``, ``model.backbone`` -> ``backbone``.

    Falls back to the full key when two axes would get the same short name.
    """
    short = {}
    for k in keys:
        parts = k.split(".")
        while len(parts) > 1 and parts[-1] in _GENERIC:
            parts.pop()
        short[k] = parts[-1]
    counts: dict[str, int] = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    return {k: (s if counts[s] == 1 else k) for k, s in short.items()}


def read_run(path: Path) -> RunResult:
    """Read one run folder; never raises for a broken run (the reason is recorded instead)."""
    run = RunResult(run_id=path.name, path=path, status="unknown")
    folder = run.folder
    reasons = []
    try:
        state = folder.state()
    except (OSError, ValueError):
        state = "pending"
    if state == "pending":  # no status word: never started, or a folder that is not a run's (decided below)
        reasons.append("no status file")
    else:
        run.status = state
    try:
        st = folder.read_status_info()
        reason = st.get("reason") or st.get("message") or st.get("error") if isinstance(st, dict) else st
        if reason:
            reasons.append(str(reason))
    except (OSError, ValueError) as e:
        reasons.append(f"status.json unreadable ({e})")
    try:
        sc = folder.read_sweep_point()
        if sc is not None:
            run.point_id = str(sc.get("point_id") or "")
            run.axes = {str(k): fmt_value(v) for k, v in (sc.get("axes") or {}).items()}
            run.seed = int(sc["seed"]) if sc.get("seed") is not None else None
            run.run_id = str(sc.get("run_id") or path.name)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        reasons.append(f"sweep_point.json unreadable ({e})")
    try:
        run.config = folder.read_config()
    except (OSError, ValueError, yaml.YAMLError) as e:
        reasons.append(f"config.yaml unreadable ({e})")
    if run.seed is None and isinstance(run.config.get("seed"), int):
        run.seed = run.config["seed"]
    if not run.point_id:
        run.point_id = run.run_id
    try:
        run.metrics = folder.read_metrics()
    except (OSError, ValueError) as e:
        reasons.append(f"metrics.jsonl unreadable ({e})")
    if folder.has_summary():
        try:
            run.summary = folder.read_summary()
        except NewerFormatError as e:
            # fields may have changed meaning: never average it in; list it with the reason instead
            reasons.append(f"summary.json is run format {e.version}, newer than this locbench reads; upgrade locbench")
        except RunFileError as e:
            reasons.append(f"summary.json unreadable ({e.cause})")
    elif run.status == "done":
        reasons.append("status is done but summary.json is missing")
    if run.status == "running":
        reasons.append(f"still running ({len(run.metrics)} epochs logged)")
    elif run.status == "interrupted":  # killed or crashed: nobody holds its lock
        how = folder.status_info().get("reason") or "status running but no process holds it: interrupted"
        reasons.append(
            f"{how} after {len(run.metrics)} epochs; re-run the sweep (or `locbench train --resume`) to finish it"
        )
    if run.status == "unknown" and not run.metrics and run.summary is None:
        # A sweep creates every run folder (with sweep_point.json) before training starts.
        run.status, reasons = "pending", ["not started yet"]
    run.reason = "; ".join(reasons)
    return run


def _levels_from_yaml(sweep_yaml: dict | None, keys: list[str]) -> dict[str, list[str]]:
    """Axis level order as written in ``sweep.yaml`` when it holds a mapping of axis key -> list of values."""
    out: dict[str, list[str]] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in keys and isinstance(v, list) and k not in out:
                    out[k] = [fmt_value(x) for x in v]
                else:
                    walk(v)
        elif isinstance(obj, list):
            for x in obj:
                walk(x)

    walk(sweep_yaml)
    return out


def collect(sweep_dir: str | Path) -> SweepResults:
    """Read every run folder below ``sweep_dir`` (one level deep, or ``sweep_dir`` itself if it is a run).

    Raises:
        LocbenchError: the folder does not exist or holds no run folder.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise LocbenchError(f"{root}: not a folder; pass a sweep folder (run folders inside) or a run folder")
    paths = [root] if RunDir(root).is_run() else sorted(p for p in root.iterdir() if RunDir(p).is_run())
    if not paths:
        raise LocbenchError(
            f"{root}: no run folders found (a run folder holds status, config.yaml or summary.json); "
            "pass the folder that `locbench sweep` or `locbench train` wrote"
        )
    sweep_yaml = None
    if (root / "sweep.yaml").exists():
        try:
            sweep_yaml = load_yaml((root / "sweep.yaml").read_text(encoding="utf-8"), where=str(root / "sweep.yaml"))
        except (OSError, yaml.YAMLError) as e:
            log.warning("%s: unreadable (%s); axis order taken from the runs", root / "sweep.yaml", e)
    runs = [read_run(p) for p in paths]

    keys = list(dict.fromkeys(k for r in runs for k in r.axes))
    ordered = _levels_from_yaml(sweep_yaml, keys)
    axes: dict[str, list[str]] = {}
    for k in keys:
        seen = list(dict.fromkeys(r.axes[k] for r in runs if k in r.axes))
        first = [v for v in ordered.get(k, []) if v in seen]
        axes[k] = first + [v for v in seen if v not in first]

    by_point: dict[str, Point] = {}
    for r in runs:
        c = by_point.setdefault(r.point_id, Point(r.point_id, dict(r.axes), []))
        c.runs.append(r)
    # Points in grid order: by each axis' level order, then by id.
    points = sorted(
        by_point.values(),
        key=lambda c: (tuple(axes[k].index(c.axes[k]) if k in c.axes else -1 for k in axes), c.point_id),
    )
    for c in points:
        c.runs.sort(key=lambda r: (r.seed if r.seed is not None else math.inf, r.run_id))

    name = ""
    if isinstance(sweep_yaml, dict) and sweep_yaml.get("name"):
        name = str(sweep_yaml["name"])
    if not name:
        for r in runs:
            try:
                name = str((r.folder.read_sweep_point() or {}).get("sweep") or "")
            except (OSError, ValueError):
                continue
            if name:
                break
    classes = _classes(runs)
    part = choose_part(runs)
    for r in runs:
        r.part = part
    return SweepResults(root, name or root.name, runs, points, axes, axis_labels(keys), classes, sweep_yaml, part)


def choose_part(runs: list[RunResult]) -> str:
    """``test`` when every usable run has a test block (and there is one), else ``val``: one part for all runs, so
    that no comparison sets a test number against a validation one."""
    usable = [r for r in runs if r.usable]
    if usable and all(r.has_part("test") for r in usable):
        return "test"
    if any(r.has_part("test") for r in usable):
        log.warning(
            "only %d of %d finished runs have a test part: every number of the report is on validation",
            sum(r.has_part("test") for r in usable),
            len(usable),
        )
    return "val"


def _classes(runs: list[RunResult]) -> list[str]:
    for r in runs:
        if r.usable:
            try:
                return r.folder.read_thresholds()[0]
            except RunFileError:
                pass
            per_class = r.summary.get("val", {}).get("per_class") if r.summary else None
            if per_class:
                return list(per_class)
    return []
