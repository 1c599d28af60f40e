"""Per-cell predictions of a finished run: blending, the Negative rule, the 2021 metric and a submission.

A cell-level run scores each cell's crop; an image-level run gives every cell of a field that field's
probabilities (the baseline a cell model has to beat). A cell run's probabilities can be blended with an
image-level run's: ``p = (1 - w) * p_cell + w * p_field``. Then the Negative rule: a cell that no localisation
class claims is Negative, ``p_neg = max(p_neg, 1 - max_c p_c)`` over the other classes (``none`` leaves the
model's own Negative probability). The documented alternative, multiplying every other class by
``1 - p_neg``, changes the ranking of the other classes across cells and is not offered.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locbench.cells.crops import CellCropDataset
from locbench.cells.data import cell_ids, index_table_cells, resolve_masks
from locbench.cells.labels import CELL_LABELS_FILE, load_cell_labels
from locbench.cells.metric import CellInstances, cell_map, compare_masks, pool_agreement
from locbench.cells.segment import mask_path, read_mask
from locbench.cells.submission import SubmissionRow, row_from_instances, validate_submission, write_submission
from locbench.data.formats import table_from_config
from locbench.errors import BadInputError, LocbenchError
from locbench.infer.images import (
    FinishedRun,
    as_run,
    check_compatible,
    field_probs,
    infer_probs,
    prediction_table,
    split_rows,
)

log = logging.getLogger(__name__)

NEGATIVE_CLASS = "Negative"
NEGATIVE_RULES = ("max", "none")


def apply_negative_rule(probs: np.ndarray, class_names: Sequence[str], *, rule: str = "max") -> np.ndarray:
    """Apply the Negative rule to (N, C) probabilities; a copy is returned.

    Args:
        probs: per-cell probabilities.
        class_names: the C class names; without a ``Negative`` class the rule changes nothing.
        rule: ``max`` (``p_neg = max(p_neg, 1 - max other p)``) or ``none``.
    """
    if rule not in NEGATIVE_RULES:
        raise LocbenchError(f"Negative rule {rule!r}: use one of {', '.join(NEGATIVE_RULES)}")
    out = np.array(probs, dtype=np.float32, copy=True)
    if rule == "none" or NEGATIVE_CLASS not in class_names or out.shape[1] < 2 or not len(out):
        return out
    neg = list(class_names).index(NEGATIVE_CLASS)
    others = np.delete(out, neg, axis=1)
    out[:, neg] = np.maximum(out[:, neg], 1.0 - others.max(axis=1))
    return out


def blend_probs(cell_probs: np.ndarray, field_probs: np.ndarray, *, weight: float) -> np.ndarray:
    """``(1 - weight) * cell_probs + weight * field_probs``; both (N, C), row k the field of cell k."""
    if not 0.0 <= weight <= 1.0:
        raise LocbenchError(f"blend weight {weight} must be in [0, 1]")
    cell_probs, field_probs = np.asarray(cell_probs, np.float32), np.asarray(field_probs, np.float32)
    if cell_probs.shape != field_probs.shape:
        raise LocbenchError(f"cannot blend {cell_probs.shape} cell with {field_probs.shape} field probabilities")
    return ((1.0 - weight) * cell_probs + weight * field_probs).astype(np.float32)


@dataclass
class CellPredictions:
    """Per-cell probabilities of the fields of ``table``.

    Attributes:
        table: the fields.
        cells: a ``CellIndex`` over ``table`` (sorted by field).
        probs: (n_cells, C) float32, after blending and the Negative rule.
        masks_dir: the instance masks the cells come from.
        class_names: the C class names.
    """

    table: Any
    cells: Any
    probs: np.ndarray
    masks_dir: Path
    class_names: list[str]

    def ids(self) -> list[str]:
        """``"FIELD/CELL"`` of every row of :attr:`probs`."""
        return cell_ids(self.table, self.cells)

    def instances(self) -> Mapping[str, CellInstances]:
        """Field id → predicted :class:`CellInstances` (masks read on access), for ``cell_map`` and submissions."""
        ds = CellCropDataset(self.table, self.masks_dir, np.arange(len(self.table)), index=self.cells)
        return ds.instances(self.probs)


def _cell_cfg(run: FinishedRun, masks: str | None):
    cfg = run.config.cell
    return dataclasses.replace(cfg, masks=masks) if masks else cfg


def predict_cells(
    run: FinishedRun | str | os.PathLike,
    table: Any,
    *,
    masks: str | None = None,
    image_run: FinishedRun | str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    device: str = "auto",
    workers: int | None = None,
) -> CellPredictions:
    """Per-cell probabilities of ``run`` (a cell-level run, or an image-level run copied to its cells).

    Args:
        run: a :class:`~locbench.infer.images.FinishedRun` or a run folder.
        table: the fields to predict (e.g. ``table.subset(val_rows)``).
        masks: where the cells come from: ``auto`` (the dataset's ``masks/``, else segmentation), ``segment``
            (the run's ``cell.backend``), or a mask folder. Default: the run's ``cell.masks``.
        image_run: an image-level run (or folder) whose field probabilities are blended into a cell run's.
        blend: weight of ``image_run``'s probabilities (default the run's ``cell.blend``).
        negative: Negative rule, ``max`` or ``none`` (default the run's ``cell.negative``).
        device, workers: inference device and DataLoader workers (default the run's ``data.workers``).
    """
    run = as_run(run)
    cfg = run.config
    workers = cfg.data.workers if workers is None else workers
    masks_dir, _ = resolve_masks(
        _cell_cfg(run, masks), table, cache_dir=cfg.data.cache_dir, workers=max(1, cfg.data.workers)
    )
    cells = index_table_cells(table, masks_dir, cache_dir=cfg.data.cache_dir)
    level = cfg.train.level
    if image_run is not None and level != "cell":
        raise LocbenchError(f"{run.path} is an image-level run: blend an image run into a cell-level run instead")
    weight = cfg.cell.blend if blend is None else float(blend)
    if image_run is None and weight > 0:
        if blend is not None:
            raise LocbenchError(f"--blend {weight} needs --image-run (an image-level run folder to blend in)")
        weight = 0.0  # the run's configured weight applies only when an image run is given
    if level == "cell":
        probs = _cell_probs(run, table, cells, masks_dir, device=device, workers=workers)
        if image_run is not None and weight > 0:
            image_run = as_run(image_run)
            if image_run.config.train.level != "image":
                raise LocbenchError(f"--image-run {image_run.path} is not an image-level run")
            if image_run.class_names != run.class_names:
                raise LocbenchError(f"--image-run {image_run.path} has other classes than {run.path}")
            field = field_probs(image_run, table, device=device, workers=workers)
            probs = blend_probs(probs, field[cells.image_index], weight=weight)
    else:
        probs = field_probs(run, table, device=device, workers=workers)[cells.image_index]
    probs = apply_negative_rule(probs, run.class_names, rule=negative or cfg.cell.negative)
    return CellPredictions(table, cells, probs, masks_dir, list(run.class_names))


def _cell_probs(run: FinishedRun, table: Any, cells: Any, masks_dir: Path, *, device: str, workers: int) -> np.ndarray:
    cfg = run.config
    if not len(cells):
        return np.zeros((0, len(run.class_names)), np.float32)
    ds = CellCropDataset(
        table,
        masks_dir,
        np.arange(len(table)),
        channels=run.meta.get("channels", cfg.data.channels),
        crop_size=cfg.data.img_size,
        margin=cfg.cell.margin,
        masked=cfg.cell.masked,
        index=cells,
    )
    return infer_probs(run, ds, device=device, workers=workers)


# --------------------------------------------------------------------------------------------------------------
# Ground truth and evaluation
# --------------------------------------------------------------------------------------------------------------


class TruthCells(Mapping):
    """Field id → true :class:`CellInstances` from instance masks and ``cells.csv`` (masks read on access)."""

    def __init__(self, ids: Sequence[str], masks_dir: Path, labels: Mapping[tuple[str, int], np.ndarray], C: int):
        self._ids = list(ids)
        self._set = set(self._ids)
        self.masks_dir = Path(masks_dir)
        self._labels = labels
        self._c = C

    def __getitem__(self, field_id: str) -> CellInstances:
        if field_id not in self._set:
            raise KeyError(field_id)
        path = mask_path(self.masks_dir, field_id)
        if path is None:
            raise LocbenchError(f"field {field_id} has no truth mask in {self.masks_dir}")
        mask = read_mask(path)
        ids = np.flatnonzero(np.bincount(mask.ravel()))
        ids = ids[ids > 0]
        missing = [f"{field_id} cell {c}" for c in ids if (field_id, int(c)) not in self._labels]
        if missing:
            raise BadInputError("truth cells have no row in the cell labels", missing, "use the labels of these masks")
        values = np.stack([self._labels[(field_id, int(c))] for c in ids]) if len(ids) else np.zeros((0, self._c))
        return CellInstances(mask=mask, cell_ids=ids.astype(np.int64), values=values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def truth_cells(
    table: Any, *, masks_dir: str | os.PathLike | None = None, labels: str | os.PathLike | None = None
) -> TruthCells:
    """The true cells of ``table``'s fields: masks (default ``DATA/masks``), labels (default ``DATA/cells.csv``)."""
    masks_dir = Path(masks_dir) if masks_dir else Path(table.root) / "masks"
    labels = Path(labels) if labels else Path(table.root) / CELL_LABELS_FILE
    if not masks_dir.is_dir() or not labels.is_file():
        raise LocbenchError(
            f"cell-level evaluation needs true cell masks ({masks_dir}) and per-cell labels ({labels}, "
            "ID,cell,Label); `locbench synth` writes both. Real data without per-cell truth can only be scored "
            "at image level"
        )
    num_classes = len(table.scheme.classes)
    return TruthCells(table.ids, masks_dir, load_cell_labels(labels, num_classes=num_classes), num_classes)


def score_cells(preds: CellPredictions, truth: Mapping[str, CellInstances], *, iou_threshold: float = 0.6) -> dict:
    """:func:`~locbench.cells.metric.cell_map` of predictions against the truth, NaN written as None."""
    result = cell_map(
        preds.instances(),
        truth,
        num_classes=len(preds.class_names),
        iou_threshold=iou_threshold,
        class_names=preds.class_names,
    )
    return _none_for_nan(result)


def segmentation_agreement(preds: CellPredictions, truth: TruthCells, *, iou_threshold: float = 0.5) -> dict:
    """Pooled :func:`~locbench.cells.metric.compare_masks` of the predicted cells' masks against the truth's."""
    rows = []
    for fid in preds.table.ids:
        pred = read_mask(mask_path(preds.masks_dir, fid))
        rows.append(compare_masks(pred, truth[fid].mask, iou_threshold=iou_threshold))
    return _none_for_nan(pool_agreement(rows))


def _none_for_nan(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _none_for_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_none_for_nan(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def evaluate_cells(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str | None = None,
    split: str = "val",
    masks: str | None = None,
    truth_masks: str | None = None,
    image_run: str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    iou_threshold: float = 0.6,
    device: str = "auto",
    workers: int | None = None,
    out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """The HPA 2021 cell metric of a run (cell-level, or image-level copied to cells) on a split part.

    Predicted cells come from ``masks`` (see :func:`predict_cells`); the truth is ``truth_masks`` (default
    ``DATA/masks``) with ``DATA/cells.csv``. Writes ``RUN_DIR/eval/cell_<split>.json`` (or ``out``) and the
    per-cell probabilities beside it (``.npz``: ids ``FIELD/CELL``, probs).

    Returns:
        The written result: ``map``, ``per_class``, ``absent_classes``, ``n_fields``, ``n_pred_cells``,
        ``n_truth_cells``, the settings used and, when the predicted cells are not the truth's, ``segmentation``
        (pooled agreement at IoU 0.5); plus ``path``.
    """
    run = as_run(path)
    table = table_from_config(run.config.data, path=data)
    check_compatible(run, table)
    rows, name = split_rows(run, table, split, other_data=data is not None)
    sub = table.subset(rows)
    truth = truth_cells(sub, masks_dir=truth_masks)
    preds = predict_cells(
        run, sub, masks=masks, image_run=image_run, blend=blend, negative=negative, device=device, workers=workers
    )
    scored = score_cells(preds, truth, iou_threshold=iou_threshold)
    n_truth = sum(int(v["num_gt"]) for v in scored["per_class"].values())
    result = {
        "run": str(run.path),
        "level": run.config.train.level,
        "data": str(data or run.config.data.path),
        "split": name,
        "n_fields": len(sub),
        "n_pred_cells": len(preds.cells),
        "n_truth_labels": n_truth,
        "masks": str(preds.masks_dir),
        "truth_masks": str(truth.masks_dir),
        "image_run": str(image_run) if image_run is not None else None,
        "blend": (run.config.cell.blend if blend is None else blend) if image_run is not None else 0.0,
        "negative": negative or run.config.cell.negative,
        **scored,
    }
    if preds.masks_dir.resolve() != truth.masks_dir.resolve():
        result["segmentation"] = segmentation_agreement(preds, truth)
    arrays = {"ids": np.array(preds.ids()), "probs": preds.probs}
    out_path = run.folder.write_eval(f"cell_{name}", result, out=out, arrays=arrays)
    result["path"] = str(out_path)
    log.info("cell mAP %.4f on %d fields (%s) -> %s", result["map"] or math.nan, len(sub), name, out_path)
    return result


def format_cell_metrics(result: Mapping[str, Any]) -> str:
    """A plain-text table: per-class AP, truth and predicted counts, then the mean."""
    width = max([len(n) for n in result["per_class"]] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'truth':>6}  {'tp':>6}", "-" * (width + 26)]
    for name, row in result["per_class"].items():
        ap = "-" if row["ap"] is None else f"{row['ap']:.4f}"
        lines.append(f"{name:<{width}}  {ap:>6}  {row['num_gt']:>6}  {row['tp']:>6}")
    m = result["map"]
    lines.append(f"{'mAP':<{width}}  {'-' if m is None else f'{m:.4f}':>6}   (IoU >= {result['iou_threshold']})")
    seg = result.get("segmentation")
    if seg:
        iou = seg["matched_iou_mean"]
        lines.append(
            f"segmentation: {seg['found']} of {seg['n_truth']} true cells found (recall {seg['recall']:.3f}), "
            f"{seg['extra']} extra, matched IoU {'-' if iou is None else f'{iou:.3f}'}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# Submission
# --------------------------------------------------------------------------------------------------------------


def write_cell_submission(
    path: FinishedRun | str | os.PathLike,
    *,
    data: str,
    out: str | os.PathLike,
    masks: str | None = None,
    image_run: str | os.PathLike | None = None,
    blend: float | None = None,
    negative: str | None = None,
    min_confidence: float | None = None,
    device: str = "auto",
    workers: int | None = None,
) -> dict[str, Any]:
    """Write the 2021 competition submission (``ID,ImageWidth,ImageHeight,PredictionString``) and validate it.

    Every field of ``data`` gets one row (empty when it has no cells); each cell gets one triple per class.

    Returns:
        ``{"path", "images", "triples", "cells"}`` from :func:`~locbench.cells.submission.validate_submission`.
    """
    run = as_run(path)
    table = prediction_table(run, data)
    preds = predict_cells(
        run, table, masks=masks, image_run=image_run, blend=blend, negative=negative, device=device, workers=workers
    )
    instances = preds.instances()
    with_cells = set(instances)  # the ids only: each field's mask is read when its row is made

    def rows() -> Iterator[SubmissionRow]:  # one field's row in memory at a time
        for fid in table.ids:
            if fid in with_cells:
                yield row_from_instances(fid, instances[fid], min_confidence=min_confidence)
            else:  # a field without cells still needs its row
                h, w = read_mask(mask_path(preds.masks_dir, fid)).shape
                yield SubmissionRow(fid, w, h, "")

    written = write_submission(out, rows())
    counts = validate_submission(written, num_classes=len(run.class_names), ids=table.ids)
    log.info("wrote %d cells of %d fields to %s", counts["cells"], counts["images"], written)
    return {"path": str(written), **counts}
