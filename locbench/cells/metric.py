"""Cell-level scores: agreement between two segmentations, and the HPA 2021 competition metric.

``cell_map`` is the Kaggle "Human Protein Atlas - Single Cell Classification" score: mean over classes of the
Open Images challenge average precision, where a predicted cell of class ``c`` is a true positive when its mask
overlaps a not-yet-matched ground-truth cell of class ``c`` in the same image at IoU >= 0.6. It is written here
by hand (no maintained package computes it from instance masks); the AP follows the Open Images evaluation code
(``compute_precision_recall`` and ``compute_average_precision`` of the TF object detection API).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from locbench.errors import BadInputError, LocbenchError


@dataclass(frozen=True)
class CellInstances:
    """The cells of one image: an instance mask and one row of per-class values per cell.

    Attributes:
        mask: (H, W) integer instance mask, 0 background, cell ``k`` where ``mask == k``.
        cell_ids: (n,) ids in ``mask``, one per row of ``values``; an id absent from the mask is an empty cell.
        values: (n, C) per-class values. Predictions: confidences, ``NaN`` where that (cell, class) is not
            predicted at all. Ground truth: 0/1 multi-hot labels.
    """

    mask: np.ndarray
    cell_ids: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.mask.ndim != 2:
            raise ValueError(f"mask must be 2-D, got shape {self.mask.shape}")
        if self.values.ndim != 2 or len(self.values) != len(self.cell_ids):
            raise ValueError(f"values must be (n_cells={len(self.cell_ids)}, C), got shape {self.values.shape}")

    @classmethod
    def from_mask(cls, mask: np.ndarray, values: Mapping[int, Sequence[float]] | np.ndarray) -> CellInstances:
        """Build from a mask and either a dict ``{cell_id: row}`` or an (N, C) array whose row k-1 is cell k."""
        if isinstance(values, Mapping):
            ids = np.array(sorted(values), dtype=np.int64)
            rows = np.array([values[int(i)] for i in ids], dtype=np.float64).reshape(len(ids), -1)
        else:
            rows = np.asarray(values, dtype=np.float64)
            ids = np.arange(1, len(rows) + 1, dtype=np.int64)
        return cls(mask=np.asarray(mask), cell_ids=ids, values=rows)


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every (pred label, truth label) pair of two instance masks of the same shape.

    Returns:
        (pred.max() + 1, truth.max() + 1) float64 array indexed by label value; row/column 0 is background.
    """
    if pred.shape != truth.shape:
        raise LocbenchError(f"masks differ in shape: {pred.shape} vs {truth.shape}; compare masks of the same field")
    p = pred.astype(np.int64, copy=False).ravel()
    t = truth.astype(np.int64, copy=False).ravel()
    if p.size and (p.min() < 0 or t.min() < 0):
        raise LocbenchError("instance masks must not hold negative labels")
    n_p = int(p.max(initial=0)) + 1
    n_t = int(t.max(initial=0)) + 1
    # One bincount over joint labels gives every intersection at once (O(pixels), no per-cell loop).
    inter = np.bincount(p * n_t + t, minlength=n_p * n_t).reshape(n_p, n_t).astype(np.float64)
    area_p = inter.sum(axis=1)
    area_t = inter.sum(axis=0)
    union = area_p[:, None] + area_t[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    iou[0, :] = 0.0
    iou[:, 0] = 0.0
    return iou


def _labels(mask: np.ndarray) -> np.ndarray:
    counts = np.bincount(mask.astype(np.int64, copy=False).ravel())
    ids = np.flatnonzero(counts)
    return ids[ids > 0]


def compare_masks(pred: np.ndarray, truth: np.ndarray, *, iou_threshold: float = 0.5) -> dict:
    """Agreement of two segmentations of one field: one-to-one cell matching at IoU >= ``iou_threshold``.

    Cells are paired by the Hungarian algorithm on IoU (scipy ``linear_sum_assignment``); a pair counts as
    found when its IoU reaches the threshold. At thresholds >= 0.5 the pairing is unique anyway.

    Returns:
        ``{"n_pred", "n_truth", "found", "missed", "extra", "recall", "precision", "matched_iou_mean"}``;
        ``matched_iou_mean`` is NaN when nothing matched, recall/precision are NaN with no cells to divide by.
    """
    iou = iou_matrix(pred, truth)
    p_ids, t_ids = _labels(pred), _labels(truth)
    sub = iou[np.ix_(p_ids, t_ids)]
    matched: list[float] = []
    if sub.size:
        rows, cols = linear_sum_assignment(sub, maximize=True)
        matched = [float(v) for v in sub[rows, cols] if v >= iou_threshold]
    found = len(matched)
    return {
        "n_pred": len(p_ids),
        "n_truth": len(t_ids),
        "found": found,
        "missed": len(t_ids) - found,
        "extra": len(p_ids) - found,
        "recall": found / len(t_ids) if len(t_ids) else math.nan,
        "precision": found / len(p_ids) if len(p_ids) else math.nan,
        "matched_iou_mean": float(np.mean(matched)) if matched else math.nan,
    }


def pool_agreement(results: Sequence[dict]) -> dict:
    """Pool :func:`compare_masks` results of several fields: counts summed, IoU mean weighted by cells found."""
    keys = ("n_pred", "n_truth", "found", "missed", "extra")
    total = {k: int(sum(r[k] for r in results)) for k in keys}
    iou_sum = sum(r["matched_iou_mean"] * r["found"] for r in results if r["found"])
    total["recall"] = total["found"] / total["n_truth"] if total["n_truth"] else math.nan
    total["precision"] = total["found"] / total["n_pred"] if total["n_pred"] else math.nan
    total["matched_iou_mean"] = iou_sum / total["found"] if total["found"] else math.nan
    return total


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Open Images average precision: area under the precision envelope of the ranked detections.

    Args:
        scores: (n,) confidences of all detections of one class.
        tp: (n,) bool, whether each detection is a true positive.
        num_gt: number of ground-truth instances of the class (> 0).
    """
    if num_gt <= 0:
        raise ValueError("average_precision needs at least one ground-truth instance")
    if len(scores) == 0:
        return 0.0
    # Stable sort on -score keeps the input order for ties (the reference reverses an argsort; ties are rare).
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    hits = np.asarray(tp, dtype=bool)[order]
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(~hits)
    precision = cum_tp / (cum_tp + cum_fp)
    recall = cum_tp / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    # The envelope: each precision becomes the best precision at any higher recall.
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def cell_map(
    predictions: Mapping[str, CellInstances],
    ground_truth: Mapping[str, CellInstances],
    *,
    num_classes: int,
    iou_threshold: float = 0.6,
    class_names: Sequence[str] | None = None,
) -> dict:
    """The HPA 2021 competition metric: mean over classes of Open Images AP over cell instances.

    Per class: every predicted (cell, class) with a confidence is a detection. Within each image detections are
    taken by falling confidence; each is a true positive when the ground-truth cell of that class it overlaps
    most has IoU >= ``iou_threshold`` and is not matched yet, else a false positive (a duplicate is a false
    positive, as in Open Images). Ground-truth cells of disjoint instance masks can overlap one prediction at
    IoU > 0.5 at most once, so this equals matching to any unmatched cell above the threshold.

    Args:
        predictions: image id → predicted cells (``values`` = confidences, NaN = not predicted).
        ground_truth: image id → true cells (``values`` = multi-hot labels). Images without predictions count
            their cells as missed.
        num_classes: C; every ``values`` must have C columns.
        iou_threshold: mask IoU a match needs (0.6 in the competition).
        class_names: optional names for ``per_class`` keys (default: the class index as a string).

    Returns:
        ``{"map", "per_class": {name: {"ap", "num_gt", "num_pred", "tp"}}, "absent_classes": [names without
        ground truth, excluded from the mean], "iou_threshold"}``; ``map`` is NaN when no class has ground truth.
    """
    extra = sorted(set(predictions) - set(ground_truth))
    if extra:
        raise BadInputError(
            "predictions name images that have no ground truth", extra, "score only images with ground truth"
        )
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise LocbenchError(f"class_names has {len(names)} names for num_classes={num_classes}")

    scores: list[list[float]] = [[] for _ in range(num_classes)]
    hits: list[list[bool]] = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, dtype=np.int64)
    # One image at a time: ``ground_truth`` and ``predictions`` may be lazy mappings that read masks on access.
    for image_id, truth in ground_truth.items():
        _check_columns(truth, num_classes, f"ground truth of {image_id}")
        labels = truth.values > 0
        num_gt += labels.sum(axis=0)
        pred = predictions.get(image_id)
        if pred is None or len(pred.cell_ids) == 0:
            continue
        _check_columns(pred, num_classes, f"predictions of {image_id}")
        iou = _instance_iou(pred, truth)
        for c in range(num_classes):
            conf = pred.values[:, c]
            rows = np.flatnonzero(~np.isnan(conf))
            if not len(rows):
                continue
            gt_cols = np.flatnonzero(labels[:, c])
            detected = np.zeros(len(gt_cols), dtype=bool)
            for r in rows[np.argsort(-conf[rows], kind="stable")]:
                hit = False
                if len(gt_cols):
                    best = int(np.argmax(iou[r, gt_cols]))
                    if iou[r, gt_cols[best]] >= iou_threshold and not detected[best]:
                        detected[best] = hit = True
                scores[c].append(float(conf[r]))
                hits[c].append(hit)

    per_class: dict[str, dict] = {}
    absent: list[str] = []
    aps: list[float] = []
    for c, name in enumerate(names):
        entry = {"num_gt": int(num_gt[c]), "num_pred": len(scores[c]), "tp": int(sum(hits[c]))}
        if num_gt[c] == 0:
            absent.append(name)
            entry["ap"] = math.nan
        else:
            entry["ap"] = average_precision(np.array(scores[c]), np.array(hits[c], dtype=bool), int(num_gt[c]))
            aps.append(entry["ap"])
        per_class[name] = entry
    return {
        "map": float(np.mean(aps)) if aps else math.nan,
        "per_class": per_class,
        "absent_classes": absent,
        "iou_threshold": iou_threshold,
    }


def _check_columns(cells: CellInstances, num_classes: int, where: str) -> None:
    if cells.values.shape[1] != num_classes:
        raise LocbenchError(f"{where}: {cells.values.shape[1]} class columns, expected num_classes={num_classes}")


def _instance_iou(pred: CellInstances, truth: CellInstances) -> np.ndarray:
    """(n_pred_cells, n_truth_cells) IoU between the listed cells of two images."""
    full = iou_matrix(pred.mask, truth.mask)
    p = np.asarray(pred.cell_ids, dtype=np.int64)
    t = np.asarray(truth.cell_ids, dtype=np.int64)
    out = np.zeros((len(p), len(t)))
    # A listed id beyond the mask's largest label is an empty cell: IoU 0 with everything.
    p_ok = (p >= 1) & (p < full.shape[0])
    t_ok = (t >= 1) & (t < full.shape[1])
    out[np.ix_(p_ok, t_ok)] = full[np.ix_(p[p_ok], t[t_ok])]
    return out
