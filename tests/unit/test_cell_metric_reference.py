"""``cell_map`` against an independent port of the evaluator the HPA 2021 competition was scored with.

The port below is written from the structure of the TF object detection API's Open Images Challenge evaluator
(``OpenImagesChallengeEvaluator`` + ``ObjectDetectionEvaluation`` in
``research/object_detection/utils/object_detection_evaluation.py``, ``PerImageEvaluation`` in
``per_image_evaluation.py``, ``compute_precision_recall`` / ``compute_average_precision`` in ``metrics.py``,
mask IoU as in ``np_mask_ops.py``) and of the organisers' driver (``oid_hpasc_challenge_evaluation.py`` in
trangle1302/HPA_SingleCellClassification_Analysis): one binary mask per (cell, label) or (cell, class,
score), images added in sorted id order, per-image sort and greedy matching, then the global ranking. It
shares no code with :mod:`locbench.cells.metric` and works on dense per-instance masks, pixel loops and all.
Group-of and difficult boxes are left out: the competition's truth had neither.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from locbench.cells.metric import CellInstances, cell_map

NAN = math.nan


# --------------------------------------------------------------------------------------------------------------
# The port
# --------------------------------------------------------------------------------------------------------------


def _mask_iou(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of uint8 masks, in float32 as the reference computes it."""
    inter = np.zeros((len(masks1), len(masks2)), dtype=np.float32)
    for i in range(len(masks1)):
        for j in range(len(masks2)):
            inter[i, j] = np.sum(np.minimum(masks1[i], masks2[j]), dtype=np.float32)
    area1 = np.sum(masks1, axis=(1, 2), dtype=np.float32)
    area2 = np.sum(masks2, axis=(1, 2), dtype=np.float32)
    union = area1[:, None] + area2[None, :] - inter
    return inter / np.maximum(union, np.float32(1e-7))


class ReferenceEvaluation:
    """Open Images (Challenge) instance-segmentation evaluation, one image at a time."""

    def __init__(self, num_classes: int, iou_threshold: float, challenge: bool):
        self.num_classes = num_classes
        self.iou_threshold = iou_threshold
        self.challenge = challenge
        self.gt: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.evaluatable: dict[str, np.ndarray] = {}
        self.num_gt = np.zeros(num_classes, dtype=float)
        self.scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
        self.tp_fp: list[list[np.ndarray]] = [[] for _ in range(num_classes)]

    def add_ground_truth(self, image_id: str, masks: np.ndarray, classes: np.ndarray) -> None:
        self.gt[image_id] = (masks, classes)
        # The challenge evaluator: image-level labels (the organisers gave every annotation's label) plus the
        # classes of the annotated instances.
        self.evaluatable[image_id] = np.unique(classes)
        for c in classes:
            self.num_gt[c] += 1

    def add_detections(self, image_id: str, masks: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        if self.challenge:
            allowed = np.isin(classes, self.evaluatable[image_id])
            masks, scores, classes = masks[allowed], scores[allowed], classes[allowed]
        # _remove_invalid_boxes: the box of an empty mask is all zeros, ymin < ymax fails.
        valid = np.array([m.any() for m in masks], dtype=bool)
        masks, scores, classes = masks[valid], scores[valid], classes[valid]
        gt_masks, gt_classes = self.gt[image_id]
        for c in range(self.num_classes):
            sel = classes == c
            det_masks, det_scores = masks[sel], scores[sel]
            if len(det_scores) == 0:
                continue
            # non_max_suppression at IoU 1.0 only sorts: sort_by_field = argsort, reversed.
            order = np.argsort(det_scores)[::-1]
            det_masks, det_scores = det_masks[order], det_scores[order]
            gts = gt_masks[gt_classes == c]
            tp = np.zeros(len(det_scores), dtype=bool)
            if len(gts):
                iou = _mask_iou(det_masks, gts)
                best = np.argmax(iou, axis=1)
                detected = np.zeros(len(gts), dtype=bool)
                for i in range(len(det_scores)):
                    g = best[i]
                    if iou[i, g] >= self.iou_threshold and not detected[g]:
                        tp[i] = True
                        detected[g] = True
            self.scores[c].append(det_scores)
            self.tp_fp[c].append(tp.astype(float))

    def evaluate(self) -> tuple[np.ndarray, float, list[int], list[int]]:
        """(AP per class, NaN without truth; their nanmean; detections scored and true positives per class)."""
        aps = np.full(self.num_classes, np.nan)
        n_det, n_tp = [], []
        for c in range(self.num_classes):
            scores = np.concatenate(self.scores[c]) if self.scores[c] else np.array([], dtype=float)
            labels = np.concatenate(self.tp_fp[c]) if self.tp_fp[c] else np.array([], dtype=float)
            n_det.append(len(scores))
            n_tp.append(int(labels.sum()))
            if self.num_gt[c] == 0:
                continue
            precision, recall = _precision_recall(scores, labels, self.num_gt[c])
            aps[c] = _average_precision(precision, recall)
        mean = float(np.nanmean(aps)) if not np.isnan(aps).all() else math.nan
        return aps, mean, n_det, n_tp


def _precision_recall(scores: np.ndarray, labels: np.ndarray, num_gt: float) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(scores)
    order = order[::-1]
    tp = labels[order]
    fp = (tp <= 0).astype(float)
    cum_tp = np.cumsum(tp)
    cum_fp = np.cumsum(fp)
    return cum_tp.astype(float) / (cum_tp + cum_fp), cum_tp.astype(float) / num_gt


def _average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    if not precision.size:
        return 0.0
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = [i for i in range(1, len(recall)) if recall[i] != recall[i - 1]]
    return float(np.sum(np.array([(recall[i] - recall[i - 1]) * precision[i] for i in steps])))


def reference_map(preds: dict, truths: dict, *, num_classes: int, challenge: bool, iou: float = 0.6) -> tuple:
    """Drive the port as the organisers did: one annotation per (cell, label), images in sorted id order."""
    ev = ReferenceEvaluation(num_classes, iou, challenge)
    for image_id in sorted(truths):
        truth = truths[image_id]
        masks, classes = [], []
        for cell, row in zip(truth.cell_ids, truth.values, strict=True):
            m = (truth.mask == cell).astype(np.uint8)
            if not m.any():  # the organisers left cells without a mask out of the truth
                continue
            for c in np.flatnonzero(row > 0):
                masks.append(m)
                classes.append(c)
        shape = truth.mask.shape
        ev.add_ground_truth(image_id, _stack(masks, shape), np.array(classes, dtype=int))
        masks, scores, classes = [], [], []
        pred = preds.get(image_id)
        if pred is not None:
            for cell, row in zip(pred.cell_ids, pred.values, strict=True):
                m = (pred.mask == cell).astype(np.uint8)
                for c in range(num_classes):
                    if not np.isnan(row[c]):
                        masks.append(m)
                        scores.append(float(row[c]))
                        classes.append(c)
        ev.add_detections(image_id, _stack(masks, shape), np.array(scores, dtype=float), np.array(classes, dtype=int))
    return ev.evaluate()


def _stack(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    return np.stack(masks) if masks else np.zeros((0, *shape), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------------------
# Random cases
# --------------------------------------------------------------------------------------------------------------


def _voronoi(rng: np.random.Generator, shape: tuple[int, int], n: int, background: float) -> np.ndarray:
    """An instance mask of ``n`` cells (nearest of ``n`` random seeds), a fraction of pixels background."""
    if n == 0:
        return np.zeros(shape, dtype=np.int64)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    seeds = rng.integers(0, [shape[0], shape[1]], size=(n, 2))
    d = (yy[None] - seeds[:, 0, None, None]) ** 2 + (xx[None] - seeds[:, 1, None, None]) ** 2
    mask = np.argmin(d, axis=0) + 1
    mask[rng.random(shape) < background] = 0
    return mask


def _predicted_mask(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    mode = rng.integers(0, 4)
    if mode == 0:  # the true cells
        pred = truth.copy()
    elif mode == 1:  # shifted by a pixel or two
        pred = np.roll(truth, shift=int(rng.integers(1, 3)), axis=int(rng.integers(0, 2)))
    elif mode == 2:  # pixels flipped to a random label: IoUs scattered around the threshold
        pred = truth.copy()
        flip = rng.random(truth.shape) < rng.uniform(0.05, 0.45)
        pred[flip] = rng.integers(0, int(truth.max()) + 2, size=int(flip.sum()))
    else:  # an independent segmentation
        pred = _voronoi(rng, truth.shape, int(rng.integers(0, 10)), 0.1)
    # New ids in a shuffled order: predicted ids need not be the truth's.
    labels = np.unique(pred[pred > 0])
    relabel = np.zeros(int(pred.max()) + 1, dtype=np.int64)
    relabel[labels] = rng.permutation(len(labels)) + 1
    return relabel[pred]


def random_case(seed: int) -> tuple[dict, dict, int]:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(2, 5))
    big = seed % 5 == 0  # some cases with > 16 detections of a class: numpy's sort is no longer stable there
    shape = (24, 24) if big else (int(rng.integers(8, 15)), int(rng.integers(8, 15)))
    truths, preds = {}, {}
    for k in range(int(rng.integers(1, 5))):
        image_id = f"img{rng.integers(0, 1000):03d}-{k}"
        n_cells = int(rng.integers(20, 30)) if big else int(rng.integers(0, 7))
        mask = _voronoi(rng, shape, n_cells, rng.uniform(0.0, 0.3))
        ids = np.arange(1, n_cells + 1)
        if rng.random() < 0.2:
            ids = np.append(ids, n_cells + 5)  # a listed true cell with no pixels
        labels = (rng.random((len(ids), num_classes)) < rng.uniform(0.0, 0.5)).astype(float)
        if rng.random() < 0.2:
            labels[:] = 0  # an image with no positives
        truths[image_id] = CellInstances(mask=mask, cell_ids=ids, values=labels)
        if rng.random() < 0.15:
            continue  # an image without predictions
        pmask = _predicted_mask(rng, mask)
        pids = np.unique(pmask[pmask > 0])
        if rng.random() < 0.3:
            pids = np.append(pids, int(pmask.max()) + 3)  # a listed predicted cell with no pixels
        rng.shuffle(pids)
        values = _scores(rng, len(pids), num_classes)
        preds[image_id] = CellInstances(mask=pmask, cell_ids=pids, values=values)
    return preds, truths, num_classes


def _scores(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
    kind = rng.integers(0, 3)
    if kind == 0:  # continuous scores
        values = rng.random((n, num_classes))
    elif kind == 1:  # a few levels: many ties
        values = rng.choice([0.2, 0.5, 0.8], size=(n, num_classes))
    else:  # an image-level run copied to cells: every cell of the field has the same scores
        values = np.tile(rng.choice([0.3, 0.5, 0.7], size=num_classes), (n, 1)).astype(float)
    values[rng.random((n, num_classes)) < rng.uniform(0.0, 0.6)] = NAN  # (cell, class) not predicted
    return values


SEEDS = range(40)


@pytest.mark.parametrize("protocol", ["challenge", "strict"])
@pytest.mark.parametrize("seed", SEEDS)
def test_cell_map_equals_the_reference_port(seed, protocol):
    preds, truths, num_classes = random_case(seed)
    aps, mean, n_det, n_tp = reference_map(preds, truths, num_classes=num_classes, challenge=protocol == "challenge")
    r = cell_map(preds, truths, num_classes=num_classes, protocol=protocol)
    assert r["protocol"] == protocol
    for c in range(num_classes):
        got = r["per_class"][str(c)]
        if math.isnan(aps[c]):
            assert math.isnan(got["ap"])
        else:
            assert got["ap"] == pytest.approx(aps[c], abs=1e-12, rel=0)
        assert (got["num_pred"], got["tp"]) == (n_det[c], n_tp[c])
    if math.isnan(mean):
        assert math.isnan(r["map"])
    else:
        assert r["map"] == pytest.approx(mean, abs=1e-12, rel=0)


def test_the_random_cases_exercise_what_they_are_meant_to():
    # Cases where the protocols differ, where tied scores meet, with > 16 detections of a class, and with
    # images that have no positives: without these, agreement above would prove little.
    differ = ties = large = empty_images = 0
    for seed in SEEDS:
        preds, truths, num_classes = random_case(seed)
        a = reference_map(preds, truths, num_classes=num_classes, challenge=True)[1]
        b = reference_map(preds, truths, num_classes=num_classes, challenge=False)[1]
        differ += not (a == b or (math.isnan(a) and math.isnan(b)))
        scored = [v[~np.isnan(v)] for p in preds.values() for v in p.values.T]
        ties += any(len(s) != len(np.unique(s)) for s in scored)
        large += max((len(s) for s in scored), default=0) > 16
        empty_images += sum(not (t.values > 0).any() for t in truths.values())
    assert differ >= 10 and ties >= 20 and large >= 5 and empty_images >= 5, (differ, ties, large, empty_images)


# --------------------------------------------------------------------------------------------------------------
# The hand-made case of issue 11
# --------------------------------------------------------------------------------------------------------------


def four_cells() -> np.ndarray:
    """A 10 x 40 field: four 10 x 10 cells side by side, ids 1..4."""
    return np.repeat(np.arange(1, 5), 10)[None, :].repeat(10, axis=0)


def test_hand_case_strict_0_472_challenge_0_639():
    # Classes A (0) and B (1). Field f1: cells 1, 2 carry A, cells 3, 4 carry B. Field f2: cell 1 carries A,
    # nothing carries B. Every predicted cell is the true cell (IoU 1).
    #
    # Class A, 3 true cells, ranked: f1c3 0.95 FP, f1c1 0.9 TP, f1c4 0.8 FP, f2c2 0.7 FP, f2c3 0.6 FP,
    #   f2c1 0.5 TP; f1c2 never predicted. A is in both fields' labels, so both protocols score every one:
    #   P = 1/2 at R = 1/3, P = 2/6 at R = 2/3 -> AP = 1/3 * 1/2 + 1/3 * 1/3 = 5/18.
    # Class B, 2 true cells: f2c4 0.99 (f2 has no B), f1c3 0.9 TP, f1c4 0.4 TP.
    #   strict: FP, TP, TP -> P = 1/2, 2/3 at R = 1/2, 1 -> envelope 2/3, 2/3 -> AP = 2/3.
    #   challenge: f2c4 ignored -> TP, TP -> AP = 1.
    # mAP strict = (5/18 + 2/3) / 2 = 17/36 = 0.472; challenge = (5/18 + 1) / 2 = 23/36 = 0.639.
    truths = {
        "f1": CellInstances.from_mask(four_cells(), np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=float)),
        "f2": CellInstances.from_mask(four_cells(), np.array([[1, 0], [0, 0], [0, 0], [0, 0]], dtype=float)),
    }
    preds = {
        "f1": CellInstances.from_mask(four_cells(), np.array([[0.9, NAN], [NAN, NAN], [0.95, 0.9], [0.8, 0.4]])),
        "f2": CellInstances.from_mask(four_cells(), np.array([[0.5, NAN], [0.7, NAN], [0.6, NAN], [NAN, 0.99]])),
    }
    strict = cell_map(preds, truths, num_classes=2, protocol="strict")
    challenge = cell_map(preds, truths, num_classes=2)
    assert strict["per_class"]["0"]["ap"] == pytest.approx(5 / 18) == challenge["per_class"]["0"]["ap"]
    assert strict["per_class"]["1"]["ap"] == pytest.approx(2 / 3)
    assert challenge["per_class"]["1"]["ap"] == 1.0 and challenge["per_class"]["1"]["ignored"] == 1
    assert strict["map"] == pytest.approx(17 / 36) and round(strict["map"], 3) == 0.472
    assert challenge["map"] == pytest.approx(23 / 36) and round(challenge["map"], 3) == 0.639
    for protocol, result in (("strict", strict), ("challenge", challenge)):
        assert result["map"] == pytest.approx(
            reference_map(preds, truths, num_classes=2, challenge=protocol == "challenge")[1], abs=1e-12
        )
