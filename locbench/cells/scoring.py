"""Scoring per-cell predictions: the true cells of a dataset, the HPA 2021 metric, segmentation agreement.

Pure functions of predicted and true cells; making the predictions with a finished run is
:mod:`locbench.infer.cells`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from locbench.cells.crops import CellCropDataset
from locbench.cells.data import cell_ids
from locbench.cells.labels import CELL_LABELS_FILE, load_cell_labels
from locbench.cells.metric import CellInstances, cell_map, compare_masks, pool_agreement
from locbench.cells.segment import mask_path, read_mask
from locbench.errors import BadInputError, LocbenchError


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


def score_cells(
    preds: CellPredictions,
    truth: Mapping[str, CellInstances],
    *,
    iou_threshold: float = 0.6,
    protocol: str = "challenge",
) -> dict:
    """:func:`~locbench.cells.metric.cell_map` of predictions against the truth, NaN written as None.

    ``protocol``: ``challenge`` (the competition's: a class absent from a field's labels is not scored there)
    or ``strict`` (it is a false positive); the result records which one it used.
    """
    result = cell_map(
        preds.instances(),
        truth,
        num_classes=len(preds.class_names),
        iou_threshold=iou_threshold,
        class_names=preds.class_names,
        protocol=protocol,
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


def format_cell_metrics(result: Mapping[str, Any]) -> str:
    """A plain-text table: per-class AP, truth and predicted counts, then the mean and the protocol it used."""
    width = max([len(n) for n in result["per_class"]] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'truth':>6}  {'tp':>6}", "-" * (width + 26)]
    for name, row in result["per_class"].items():
        ap = "-" if row["ap"] is None else f"{row['ap']:.4f}"
        lines.append(f"{name:<{width}}  {ap:>6}  {row['num_gt']:>6}  {row['tp']:>6}")
    m = result["map"]
    lines.append(f"{'mAP':<{width}}  {'-' if m is None else f'{m:.4f}':>6}   (IoU >= {result['iou_threshold']})")
    lines.append(_protocol_line(result))
    seg = result.get("segmentation")
    if seg:
        iou = seg["matched_iou_mean"]
        lines.append(
            f"segmentation: {seg['found']} of {seg['n_truth']} true cells found (recall {seg['recall']:.3f}), "
            f"{seg['extra']} extra, matched IoU {'-' if iou is None else f'{iou:.3f}'}"
        )
    return "\n".join(lines)


def _protocol_line(result: Mapping[str, Any]) -> str:
    """Which protocol scored the table, and what it left out."""
    protocol = result.get("protocol", "strict")  # results written before protocols existed were strict
    if protocol == "strict":
        return "protocol: strict (a predicted class no true cell of its field carries is a false positive)"
    ignored = sum(int(row.get("ignored", 0)) for row in result["per_class"].values())
    return (
        f"protocol: challenge (the competition's: {ignored} prediction(s) of a class no true cell of its field "
        "carries not scored; --protocol strict counts them as false positives)"
    )
