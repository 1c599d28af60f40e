"""Ensembles of finished runs: the mean of their stored probabilities, written as a normal run folder.

:func:`build_ensemble` checks that the members can be averaged (same classes, the same split: the same ids in every
part, the same validation and test items with the same labels, the same input: image size, stains, resize policy,
level and test-time augmentation), averages ``predictions/val.npz`` and ``predictions/test.npz``, tunes thresholds
on the averaged validation probabilities by the rules training uses (:func:`locbench.engine.summary.summarize`) and
writes a run folder that ``evaluate``, ``predict`` and ``report`` read like any other. It refers to its members'
folders (``ensemble.json``) instead of copying their checkpoints: predicting new images runs every member's model
and averages their probabilities (:meth:`~locbench.infer.images.FinishedRun.model`); a member moved or trained
again is refused then, with the fix.

:func:`average_predictions` is the pure part, also used by the report's "ensemble of the k best" row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locbench.config import dump_config
from locbench.data.splits import load_split
from locbench.engine.environment import environment
from locbench.engine.summary import summarize
from locbench.errors import LocbenchError
from locbench.infer.images import FinishedRun, load_run
from locbench.metrics import untrainable_note
from locbench.store.outputs import check_output
from locbench.store.rundir import Predictions, RunDir

log = logging.getLogger(__name__)

#: Config keys every member must share: what ``predict`` feeds all member models (one input for all) and what makes
#: their stored probabilities comparable.
SAME_INPUT = ("data.img_size", "data.channels", "data.resize", "train.level", "infer.tta")


@dataclass(frozen=True)
class Member:
    """One run of an ensemble, opened, with its stored predictions."""

    run: FinishedRun
    val: Predictions
    test: Predictions | None


def resolve_members(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Run folders named by ``specs``: a run folder, or ``SWEEP/POINT_ID`` (a grid point of a sweep folder: every
    finished seed of it). Raises :class:`LocbenchError` naming a spec that is neither."""
    out: list[Path] = []
    for spec in specs:
        path = Path(spec)
        if RunDir(path).is_run():
            out.append(path)
            continue
        sweep = path.parent
        runs = sorted(p for p in sweep.iterdir() if RunDir(p).is_run()) if sweep.is_dir() else []
        seeds = [p for p in runs if _point_id(p) == path.name and RunDir(p).state() == "done"]
        if not seeds:
            raise LocbenchError(
                f"{spec}: neither a run folder nor a grid point of a sweep folder with finished runs; give run "
                "folders, or SWEEP/POINT_ID (the point ids are in the report's leaderboard)"
            )
        out.extend(seeds)
    return out


def _point_id(path: Path) -> str:
    try:
        record = RunDir(path).read_sweep_point() or {}
    except (OSError, ValueError):
        return ""
    return str(record.get("point_id") or "")


def split_hash(path: Path) -> str:
    """A short hash of a split file's parts (part -> sorted ids): equal hashes, the same split."""
    parts = load_split(path).parts
    blob = json.dumps({k: sorted(v) for k, v in sorted(parts.items())}).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def open_members(paths: Sequence[str | os.PathLike]) -> list[Member]:
    """Open every member and check that they can be averaged; raises :class:`LocbenchError` naming the first
    member that differs from the first one and how."""
    if len(paths) < 2:
        raise LocbenchError(f"an ensemble needs at least 2 runs; got {len(paths)}")
    resolved = [Path(p).resolve() for p in paths]
    twice = sorted({str(p) for p in resolved if resolved.count(p) > 1})
    if twice:
        raise LocbenchError(f"run {twice[0]} is given twice; give each member once")
    members = []
    for path in paths:
        folder = RunDir(Path(path))
        if folder.is_ensemble():
            raise LocbenchError(f"{path} is an ensemble itself; give its members (listed in {path}/ensemble.json)")
        if folder.state() != "done":
            raise LocbenchError(f"{path}: the run is not finished (state {folder.state()}); finish it or leave it out")
        run = load_run(path)
        val = folder.read_predictions("val")
        test = folder.read_predictions("test") if folder.has_predictions("test") else None
        members.append(Member(run, val, test))
    first = members[0]
    first_split = split_hash(first.run.folder.split)
    for m in members[1:]:
        where = f"{m.run.path} and {first.run.path}"
        if m.run.class_names != first.run.class_names:
            raise LocbenchError(f"{where} predict different classes; an ensemble averages runs of one class scheme")
        if split_hash(m.run.folder.split) != first_split:
            raise LocbenchError(
                f"{where} were trained on different splits (their split.json differ): averaging them would score "
                "images one member trained on; use runs of one split (the same data.split file or split_seed)"
            )
        for key in SAME_INPUT:
            a, b = _get(m.run.config, key), _get(first.run.config, key)
            if a != b:
                raise LocbenchError(
                    f"{where} differ in {key} ({a} vs {b}); an ensemble feeds every member the same input: use "
                    f"runs with the same {', '.join(SAME_INPUT)}"
                )
        _check_same_items(m.val, first.val, f"{where}: predictions/val.npz")
        if (m.test is None) != (first.test is None):
            raise LocbenchError(f"{where}: one has a test part and the other not; use runs of one split")
        if m.test is not None and first.test is not None:
            _check_same_items(m.test, first.test, f"{where}: predictions/test.npz")
        if m.run.summary.get("train_positives") != first.run.summary.get("train_positives"):
            raise LocbenchError(f"{where} counted different training positives per class; use runs of one split")
    return members


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_same_items(a: Predictions, b: Predictions, where: str) -> None:
    if a.probs.shape != b.probs.shape or sorted(a.ids.tolist()) != sorted(b.ids.tolist()):
        raise LocbenchError(f"{where} hold different items ({len(a.ids)} vs {len(b.ids)}); use runs of one split")
    order = _order(a.ids, b.ids)
    if not np.array_equal(a.targets[order], b.targets):
        raise LocbenchError(f"{where} hold the same items with different labels; were they trained on other data?")


def _order(ids: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Row indices into ``ids`` that put them in the order of ``like`` (the same set of ids)."""
    pos = {k: i for i, k in enumerate(ids.tolist())}
    return np.asarray([pos[k] for k in like.tolist()], dtype=np.int64)


def average_predictions(preds: Sequence[Predictions]) -> Predictions:
    """The mean probability of ``preds`` (the same items, in any order), in the order of the first."""
    first = preds[0]
    total = np.zeros(first.probs.shape, dtype=np.float64)
    for p in preds:
        total += p.probs[_order(p.ids, first.ids)]
    return Predictions(first.ids, (total / len(preds)).astype(np.float32), first.targets)


def build_ensemble(paths: Sequence[str | os.PathLike], out: str | os.PathLike, *, force: bool = False) -> Path:
    """Average the stored probabilities of the runs ``paths`` into a new run folder ``out``; returns it.

    ``out`` must not lie in a member's folder; an existing ``out`` is replaced only with ``force`` and only when
    it is an ensemble folder itself (never a trained run).
    """
    out = Path(out)
    check_output(out, reads=[str(p) for p in paths], force=force, folder=True)
    replace = out.is_dir() and any(out.iterdir())
    if replace and not RunDir(out).is_ensemble():
        raise LocbenchError(f"--out {out} holds something other than an ensemble; --force replaces only ensembles")
    members = open_members(paths)  # every check before the old ensemble is removed
    if replace:
        shutil.rmtree(out)
    first = members[0].run
    val = average_predictions([m.val for m in members])
    test = average_predictions([m.test for m in members]) if members[0].test is not None else None
    positives = first.summary.get("train_positives")
    train_positives = (
        np.asarray([positives[c] for c in first.class_names], dtype=np.int64) if isinstance(positives, dict) else None
    )
    cost = {
        "params": _sum_cost(members, "params"),
        "gmacs": _sum_cost(members, "gmacs"),
        "train_img_per_s": None,
        "epoch_s": None,
        "peak_mem_mb": None,
    }
    thresholds, summary = summarize(
        val.probs,
        val.targets,
        first.class_names,
        [],
        best_epoch=None,
        cost=cost,
        device="",
        test=test,
        train_positives=train_positives,
        n_fields=first.summary.get("val", {}).get("n_fields"),
        n_test_fields=(first.summary.get("test") or {}).get("n_fields"),
    )
    summary["ensemble"] = {"members": len(members), "tta": first.config.infer.tta}
    folder = RunDir(out)
    out.mkdir(parents=True, exist_ok=True)
    folder.write_config(dump_config(first.config))
    shutil.copyfile(first.folder.split, folder.split)
    folder.write_env(environment("cpu"))
    folder.write_ensemble(
        {
            "format_version": 1,
            "split_hash": split_hash(first.folder.split),
            "members": [_record(m, out) for m in members],
        }
    )
    folder.write_predictions("val", val.ids, val.probs, val.targets)
    if test is not None:
        folder.write_predictions("test", test.ids, test.probs, test.targets)
    folder.write_thresholds(first.class_names, thresholds)
    folder.write_summary(summary)
    folder.set_status("done", f"ensemble of {len(members)} runs")
    if summary["untrainable_classes"]:
        log.warning("%s", untrainable_note(summary["untrainable_classes"]))
    return out


def _sum_cost(members: Sequence[Member], key: str) -> float | None:
    values = [(m.run.summary.get("cost") or {}).get(key) for m in members]
    return sum(values) if all(isinstance(v, int | float) for v in values) else None


def _record(m: Member, out: Path) -> dict[str, Any]:
    path = m.run.path.resolve()
    return {
        "path": str(path),
        "relative": os.path.relpath(path, out.resolve()),
        "sha256": m.run.meta.get("sha256"),
        "backbone": m.run.config.model.backbone,
        "seed": m.run.config.train.seed,
        "val_map": (m.run.summary.get("val") or {}).get("map"),
        "test_map": (m.run.summary.get("test") or {}).get("map"),
    }
