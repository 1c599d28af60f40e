"""Cell-level scores: agreement between two segmentations, and the HPA 2021 competition metric.

``cell_map`` is the Kaggle "Human Protein Atlas - Single Cell Classification" score: mean over classes of the
Open Images average precision, where a predicted cell of class ``c`` is a true positive when its mask overlaps
a not-yet-matched ground-truth cell of class ``c`` in the same image at IoU >= 0.6. It is written here by hand
(no maintained package computes it from instance masks), following the Open Images *Challenge* evaluator of
the TF object detection API (``OpenImagesChallengeEvaluator`` with ``evaluate_masks=True`` in
``research/object_detection/utils/object_detection_evaluation.py``; ``per_image_evaluation.py``; ``metrics.py``)
as the HPA organisers drove it (``oid_hpasc_challenge_evaluation.py`` in trangle1302/
HPA_SingleCellClassification_Analysis). Two protocols:

- ``challenge`` (default, the competition's): in each image only the classes of that image's labels are
  evaluated; the organisers passed every annotated cell's labels as the image-level labels, so these are the
  classes some true cell of the image carries. A prediction of any other class in that image is ignored: no
  true positive, no false positive (``OpenImagesChallengeEvaluator.add_single_detected_image_info`` drops it).
- ``strict``: every prediction counts; one of a class absent from the image is a false positive (the plain
  ``OpenImagesDetectionEvaluator``).

Order, exactly as in the reference, because it decides tied scores (every cell of a field has the same score
when an image-level run's probabilities are copied to its cells):

1. Images are taken in sorted id order (the organisers' script walks ``groupby("ImageID")``).
2. Within an image and class, detections are the predicted cells in row order; they are sorted with
   ``np.argsort(scores)[::-1]`` (numpy's default sort, reversed: the evaluator's NMS step with IoU 1.0 only
   sorts), then matched greedily: each takes the true cell of the class it overlaps most and is a true positive
   when that IoU reaches the threshold and the cell is not matched yet.
3. Per class the per-image lists are concatenated in image order and ranked again with
   ``np.argsort(scores)[::-1]`` (``metrics.compute_precision_recall``).

numpy's default sort is not stable. Up to 16 elements it is an insertion sort, so each reversed sort puts
ties in *reverse* input order: within one image the two sorts cancel (tied cells keep their row order), and
across images a later image's tied detections rank first. With more elements the order is whatever numpy's
introsort (or its SIMD sort on AVX-512 CPUs) leaves: deterministic for one numpy build and CPU, but not
specified. Calling the same function on the same array is the only way to reproduce the reference's ties,
so that is what this module does.

Open Images AP: precision made non-increasing from the right (each point takes the best precision at any
higher recall), then summed over the recall steps, with recall 0 and 1 (precision 0) added at the ends.
A predicted cell with an empty mask is dropped (the reference removes detections whose box is empty), and a
true cell with an empty mask is not counted (the organisers left cells without a mask out of the truth).
Mask IoU is computed in float64; the reference's float32 gives the same decisions at 0.6 for cells below
several million pixels.
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


PROTOCOLS = ("challenge", "strict")
"""``cell_map`` protocols: ``challenge`` (the competition's, default) and ``strict`` (see the module docstring)."""


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Open Images average precision: area under the precision envelope of the ranked detections.

    Detections are ranked by ``np.argsort(scores)[::-1]`` as the reference ranks them: ties keep no promised
    order (see the module docstring), and the input order matters when scores tie.

    Args:
        scores: (n,) confidences of all detections of one class.
        tp: (n,) bool, whether each detection is a true positive.
        num_gt: number of ground-truth instances of the class (> 0).
    """
    if num_gt <= 0:
        raise ValueError("average_precision needs at least one ground-truth instance")
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return 0.0
    order = np.argsort(scores)[::-1]  # the reference's ranking; not a stable sort
    hits = np.asarray(tp, dtype=bool)[order]
    cum_tp = np.cumsum(hits).astype(np.float64)
    cum_fp = np.cumsum(~hits).astype(np.float64)
    precision = cum_tp / (cum_tp + cum_fp)
    recall = cum_tp / float(num_gt)
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
    protocol: str = "challenge",
) -> dict:
    """The HPA 2021 competition metric: mean over classes of Open Images AP over cell instances.

    Per class: every predicted (cell, class) with a confidence is a detection, scored as described in the
    module docstring. Ground-truth cells of disjoint instance masks can overlap one prediction at IoU > 0.5 at
    most once, so the greedy matching equals matching to any unmatched cell above the threshold.

    Args:
        predictions: image id → predicted cells (``values`` = confidences, NaN = not predicted).
        ground_truth: image id → true cells (``values`` = multi-hot labels). Images without predictions count
            their cells as missed.
        num_classes: C; every ``values`` must have C columns.
        iou_threshold: mask IoU a match needs (0.6 in the competition).
        class_names: optional names for ``per_class`` keys (default: the class index as a string).
        protocol: ``challenge`` (default: a prediction of a class no true cell of its image carries is ignored)
            or ``strict`` (it is a false positive).

    Returns:
        ``{"map", "per_class": {name: {"ap", "num_gt", "num_pred", "tp", "ignored"}}, "absent_classes": [names
        without ground truth, excluded from the mean], "iou_threshold", "protocol"}``; ``num_pred`` counts the
        detections scored, ``ignored`` those the challenge protocol left out; ``map`` is NaN when no class has
        ground truth.
    """
    if protocol not in PROTOCOLS:
        raise LocbenchError(f"unknown cell-metric protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    extra = sorted(set(predictions) - set(ground_truth))
    if extra:
        raise BadInputError(
            "predictions name images that have no ground truth", extra, "score only images with ground truth"
        )
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise LocbenchError(f"class_names has {len(names)} names for num_classes={num_classes}")

    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    hits: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    num_gt = np.zeros(num_classes, dtype=np.int64)
    ignored = np.zeros(num_classes, dtype=np.int64)
    # One image at a time, in sorted id order as the organisers fed the evaluator: ``ground_truth`` and
    # ``predictions`` may be lazy mappings that read masks on access.
    for image_id in sorted(ground_truth):
        truth = ground_truth[image_id]
        _check_columns(truth, num_classes, f"ground truth of {image_id}")
        pred = predictions.get(image_id)
        if pred is not None:
            _check_columns(pred, num_classes, f"predictions of {image_id}")
        iou, pred_cells, truth_cells = _instance_iou(pred, truth)
        labels = truth.values[truth_cells] > 0
        iou = iou[np.ix_(pred_cells, truth_cells)]
        num_gt += labels.sum(axis=0)
        if not pred_cells.any():
            continue
        conf_all = np.asarray(pred.values[pred_cells], dtype=np.float64)  # the reference reads scores as float64
        evaluated = labels.any(axis=0) if protocol == "challenge" else np.ones(num_classes, dtype=bool)
        for c in range(num_classes):
            rows = np.flatnonzero(~np.isnan(conf_all[:, c]))
            if not len(rows):
                continue
            if not evaluated[c]:
                ignored[c] += len(rows)
                continue
            conf = conf_all[rows, c]
            order = np.argsort(conf)[::-1]  # the evaluator's per-image sort (its NMS at IoU 1.0)
            gt_cols = np.flatnonzero(labels[:, c])
            detected = np.zeros(len(gt_cols), dtype=bool)
            hit = np.zeros(len(rows), dtype=bool)
            if len(gt_cols):
                overlap = iou[np.ix_(rows[order], gt_cols)]
                best = np.argmax(overlap, axis=1)
                for i, b in enumerate(best.tolist()):
                    if overlap[i, b] >= iou_threshold and not detected[b]:
                        detected[b] = hit[i] = True
            scores[c].append(conf[order])
            hits[c].append(hit)

    per_class: dict[str, dict] = {}
    absent: list[str] = []
    aps: list[float] = []
    for c, name in enumerate(names):
        s = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        h = np.concatenate(hits[c]) if hits[c] else np.zeros(0, dtype=bool)
        entry = {"num_gt": int(num_gt[c]), "num_pred": len(s), "tp": int(h.sum()), "ignored": int(ignored[c])}
        if num_gt[c] == 0:
            absent.append(name)
            entry["ap"] = math.nan
        else:
            entry["ap"] = average_precision(s, h, int(num_gt[c]))
            aps.append(entry["ap"])
        per_class[name] = entry
    return {
        "map": float(np.mean(aps)) if aps else math.nan,  # = the reference's nanmean over all classes, to 1e-15
        "per_class": per_class,
        "absent_classes": absent,
        "iou_threshold": iou_threshold,
        "protocol": protocol,
    }


def _check_columns(cells: CellInstances, num_classes: int, where: str) -> None:
    if cells.values.shape[1] != num_classes:
        raise LocbenchError(f"{where}: {cells.values.shape[1]} class columns, expected num_classes={num_classes}")


def _instance_iou(pred: CellInstances | None, truth: CellInstances) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between the listed cells of two images, and which listed cells have a non-empty mask.

    Returns:
        ``(iou, pred_present, truth_present)``: (n_pred_cells, n_truth_cells) IoU, and (n,) bools. An id absent
        from its mask (or beyond its largest label) is an empty cell. ``pred`` None: no predicted cells.
    """
    t = np.asarray(truth.cell_ids, dtype=np.int64)
    t_area = _areas(truth.mask)
    t_ok = (t >= 1) & (t < len(t_area))
    t_ok[t_ok] = t_area[t[t_ok]] > 0
    if pred is None or len(pred.cell_ids) == 0:
        return np.zeros((0, len(t))), np.zeros(0, dtype=bool), t_ok
    full = iou_matrix(pred.mask, truth.mask)
    p = np.asarray(pred.cell_ids, dtype=np.int64)
    p_area = _areas(pred.mask)
    p_ok = (p >= 1) & (p < len(p_area))
    p_ok[p_ok] = p_area[p[p_ok]] > 0
    out = np.zeros((len(p), len(t)))
    valid_t = (t >= 1) & (t < full.shape[1])
    valid_p = (p >= 1) & (p < full.shape[0])
    out[np.ix_(valid_p, valid_t)] = full[np.ix_(p[valid_p], t[valid_t])]
    return out, p_ok, t_ok


def _areas(mask: np.ndarray) -> np.ndarray:
    """Pixel count of every label value of an instance mask (index = label)."""
    labels = np.asarray(mask).astype(np.int64, copy=False).ravel()
    if labels.size and labels.min() < 0:
        raise LocbenchError("instance masks must not hold negative labels")
    return np.bincount(labels)
