"""The HPA 2021 cell metric against average precisions worked out by hand, and mask agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest

from locbench.cells.metric import CellInstances, average_precision, cell_map, compare_masks, iou_matrix, pool_agreement
from locbench.errors import BadInputError, LocbenchError

NAN = math.nan


def four_cells() -> np.ndarray:
    """A 10 x 40 field: four 10 x 10 cells side by side, ids 1..4 (100 pixels each)."""
    return np.repeat(np.arange(1, 5), 10)[None, :].repeat(10, axis=0)


def truth(labels: list[list[int]], num_classes: int = 2) -> CellInstances:
    rows = np.zeros((len(labels), num_classes))
    for k, ls in enumerate(labels):
        rows[k, ls] = 1
    return CellInstances.from_mask(four_cells(), rows)


def pred(rows: list[list[float]], mask: np.ndarray | None = None) -> CellInstances:
    return CellInstances.from_mask(four_cells() if mask is None else mask, np.array(rows, dtype=float))


GT = {"a": truth([[0], [0], [1], [1]])}  # class 0: cells 1, 2; class 1: cells 3, 4


def ap(result: dict, c: int) -> float:
    return result["per_class"][str(c)]["ap"]


def test_perfect_predictions_score_one():
    p = {"a": pred([[0.9, NAN], [0.8, NAN], [NAN, 0.7], [NAN, 0.6]])}
    r = cell_map(p, GT, num_classes=2)
    assert ap(r, 0) == 1.0 and ap(r, 1) == 1.0 and r["map"] == 1.0


def test_false_positive_ranked_first():
    # Class 0 ranking: cell 3 (FP, 0.95), cell 1 (TP), cell 2 (TP).
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1 -> envelope 2/3 at both recall steps -> AP = 2/3.
    p = {"a": pred([[0.9, NAN], [0.8, NAN], [0.95, 0.7], [NAN, 0.6]])}
    r = cell_map(p, GT, num_classes=2)
    assert ap(r, 0) == pytest.approx(2 / 3)
    assert ap(r, 1) == 1.0
    assert r["map"] == pytest.approx((2 / 3 + 1) / 2)
    assert r["per_class"]["0"] == {
        "num_gt": 2,
        "num_pred": 3,
        "tp": 2,
        "ignored": 0,
        "ap": pytest.approx(2 / 3),
    }


def test_false_positive_ranked_last_costs_nothing():
    # TP, TP, FP: full recall is reached at precision 1 before the FP.
    p = {"a": pred([[0.9, NAN], [0.8, NAN], [0.1, 0.7], [NAN, 0.6]])}
    assert ap(cell_map(p, GT, num_classes=2), 0) == 1.0


def test_missed_cell_halves_ap():
    # Class 0: only cell 1 predicted -> precision 1 up to recall 1/2 -> AP = 1/2.
    p = {"a": pred([[0.9, NAN], [NAN, NAN], [NAN, 0.7], [NAN, 0.6]])}
    assert ap(cell_map(p, GT, num_classes=2), 0) == 0.5


def _one_cell_prediction(n_pixels: int) -> dict:
    """A prediction covering the first ``n_pixels`` of cell 1 (a subset: IoU = n_pixels / 100)."""
    mask = np.zeros((10, 40), dtype=np.int64)
    rows, cols = np.divmod(np.arange(n_pixels), 10)
    mask[rows, cols] = 1
    return {"a": CellInstances.from_mask(mask, np.array([[0.9, NAN]]))}


@pytest.mark.parametrize(("n_pixels", "expected"), [(59, 0.0), (60, 0.5), (61, 0.5)])
def test_iou_just_below_and_above_threshold(n_pixels, expected):
    # IoU 0.59 is a false positive (AP 0); IoU 0.60 and 0.61 match cell 1 of the two class-0 cells (AP 1/2).
    assert ap(cell_map(_one_cell_prediction(n_pixels), GT, num_classes=2), 0) == expected


def test_iou_threshold_is_a_parameter():
    assert ap(cell_map(_one_cell_prediction(59), GT, num_classes=2, iou_threshold=0.5), 0) == 0.5


def test_class_without_ground_truth_is_excluded_and_listed():
    gt = {"a": truth([[0], [0], [0], [0]], num_classes=3)}
    p = {"a": pred([[0.9, 0.5, NAN], [0.8, NAN, NAN], [0.7, NAN, NAN], [0.6, NAN, NAN]])}
    r = cell_map(p, gt, num_classes=3, class_names=["x", "y", "z"])
    assert r["absent_classes"] == ["y", "z"]
    assert math.isnan(r["per_class"]["y"]["ap"])
    assert r["map"] == 1.0  # the mean of class x alone; the FP of class y does not count


def test_class_with_ground_truth_but_no_predictions_scores_zero():
    p = {"a": pred([[0.9, NAN], [0.8, NAN], [NAN, NAN], [NAN, NAN]])}
    r = cell_map(p, GT, num_classes=2)
    assert ap(r, 1) == 0.0 and r["map"] == 0.5


def test_ranking_is_over_all_images_and_unpredicted_images_count_as_missed():
    # Image a: class-0 cell 1 found at 0.6. Image b: a FP at 0.7 (cell 3 is class 1), its class-0 cell missed.
    # Ranked: FP (0.7), TP (0.6); 2 GT -> precision 1/2 at recall 1/2 -> AP = 1/4.
    gt = {"a": truth([[0], [], [], []]), "b": truth([[0], [], [1], []])}
    p = {"a": pred([[0.6, NAN], [NAN, NAN], [NAN, NAN], [NAN, NAN]]), "b": pred([[NAN] * 2, [NAN] * 2, [0.7, NAN]])}
    r = cell_map(p, gt, num_classes=2)
    assert ap(r, 0) == 0.25
    assert ap(r, 1) == 0.0  # image b's class-1 cell was never predicted
    gt["c"] = truth([[0], [], [], []])  # a third image without predictions: one more missed cell
    assert ap(cell_map(p, gt, num_classes=2), 0) == pytest.approx(0.5 * 1 / 3)


def test_challenge_ignores_a_class_absent_from_the_field_strict_counts_it():
    # Image a carries class 0 only; image b carries class 1 (cells 3, 4) and class 0 (cell 1).
    # Class 1 predicted at 0.9 on a's cell 1 and found at 0.5 on b's cell 3.
    # challenge: a's class-1 prediction is ignored (a has no class-1 cell) -> TP only: P = 1 at R = 1/2 -> AP 1/2.
    # strict: FP (0.9) then TP (0.5): P = 1/2 at R = 1/2 -> AP 1/4.
    gt = {"a": truth([[0], [0], [], []]), "b": truth([[0], [], [1], [1]])}
    p = {"a": pred([[0.8, 0.9], [0.7, NAN], [NAN] * 2, [NAN] * 2]), "b": pred([[0.6, NAN], [NAN] * 2, [NAN, 0.5]])}
    challenge = cell_map(p, gt, num_classes=2)
    strict = cell_map(p, gt, num_classes=2, protocol="strict")
    assert challenge["protocol"] == "challenge" and strict["protocol"] == "strict"
    assert ap(challenge, 1) == 0.5 and ap(strict, 1) == 0.25
    assert challenge["per_class"]["1"]["ignored"] == 1 and challenge["per_class"]["1"]["num_pred"] == 1
    assert strict["per_class"]["1"]["ignored"] == 0 and strict["per_class"]["1"]["num_pred"] == 2
    assert ap(challenge, 0) == ap(strict, 0) == 1.0  # class 0 is in both fields' labels: nothing to ignore


def test_tied_scores_are_ranked_as_the_reference_ranks_them():
    # The reference sorts twice with np.argsort(scores)[::-1]: per image, then per class over all images. For
    # up to 16 detections numpy's sort is stable, so each sort puts ties in reverse order: within one image
    # the two reversals cancel (row order), across images the later image comes first.
    # Class 0, two true cells. Image a: TP at 0.5; image b: FP at 0.5 (cell 3, class 0 is in b's labels).
    # Ranked: b's FP, a's TP -> P = 1/2 at R = 1/2 -> AP 1/4 (a stable descending sort would give 1/2).
    gt = {"a": truth([[0], [], [], []]), "b": truth([[0], [], [1], []])}
    p = {"a": pred([[0.5, NAN], [NAN] * 2, [NAN] * 2, [NAN] * 2]), "b": pred([[NAN] * 2, [NAN] * 2, [0.5, NAN]])}
    assert ap(cell_map(p, gt, num_classes=2), 0) == 0.25
    # One image, rows in order (TP cell 1, FP cell 3): row order survives -> TP first -> AP 1/2 (2 true cells).
    rows = np.array([[0.5, NAN], [0.5, NAN]])
    assert ap(cell_map({"a": CellInstances(four_cells(), np.array([1, 3]), rows)}, GT, num_classes=2), 0) == 0.5
    # The same rows listed FP first: -> AP 1/4.
    assert ap(cell_map({"a": CellInstances(four_cells(), np.array([3, 1]), rows)}, GT, num_classes=2), 0) == 0.25
    assert average_precision(np.array([0.5, 0.5]), np.array([True, False]), 1) == 0.5  # FP ranked first
    assert average_precision(np.array([0.5, 0.5]), np.array([False, True]), 1) == 1.0


def test_empty_cells_are_dropped_as_the_reference_drops_them():
    # Predicted cell 9 and true cell 9 are listed but have no pixels: the prediction is not scored and the true
    # cell is not counted (the reference drops empty-mask detections; the organisers' truth had no such cells).
    gt = {"a": CellInstances.from_mask(four_cells(), {1: [1, 0], 9: [1, 0]})}
    p = {"a": CellInstances.from_mask(four_cells(), {1: [0.4, NAN], 9: [0.9, NAN]})}
    r = cell_map(p, gt, num_classes=2)
    assert r["per_class"]["0"] == {"num_gt": 1, "num_pred": 1, "tp": 1, "ignored": 0, "ap": 1.0}


def test_unknown_protocol_is_refused():
    with pytest.raises(LocbenchError, match="protocol"):
        cell_map({}, GT, num_classes=2, protocol="kaggle")


def test_cli_offers_the_protocols_of_the_metric():
    from locbench.cells.metric import PROTOCOLS
    from locbench.commands._level import CELL_METRIC_PROTOCOLS

    assert CELL_METRIC_PROTOCOLS == PROTOCOLS


def test_predictions_for_unknown_images_are_refused():
    with pytest.raises(BadInputError, match="no ground truth"):
        cell_map({"zzz": pred([[0.5, 0.5]])}, GT, num_classes=2)


def test_average_precision_envelope_by_hand():
    # TP, FP, TP with 3 GT: P = 1, 1/2, 2/3 at R = 1/3, 1/3, 2/3 -> envelope 1 then 2/3 -> 1/3 + 2/9 = 5/9.
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1], bool), 3) == pytest.approx(5 / 9)
    assert average_precision(np.array([]), np.array([], bool), 2) == 0.0


def test_iou_matrix_counts_pixels():
    a = np.array([[1, 1, 0, 2]])
    b = np.array([[1, 0, 0, 1]])
    iou = iou_matrix(a, b)
    assert iou.shape == (3, 2)
    assert iou[1, 1] == pytest.approx(1 / 3)  # a1 = pixels 0,1; b1 = pixels 0,3: 1 shared, union 3
    assert iou[2, 1] == pytest.approx(1 / 2)  # a2 = pixel 3: 1 shared, union 2
    assert iou[0].sum() == 0 and iou[:, 0].sum() == 0  # background never matches


def test_compare_masks_found_missed_extra():
    t = four_cells()
    p = t.copy()
    p[:, 30:] = 0  # cell 4 missed
    p[:, 10:12] = 0  # cell 2 shrunk to 80 pixels: IoU 0.8, still found
    p[0, 0] = 9  # a one-pixel extra cell
    r = compare_masks(p, t)
    assert (r["n_truth"], r["n_pred"], r["found"], r["missed"], r["extra"]) == (4, 4, 3, 1, 1)
    assert r["recall"] == 0.75 and r["precision"] == 0.75
    assert r["matched_iou_mean"] == pytest.approx((0.99 + 0.8 + 1.0) / 3)


def test_compare_masks_labels_need_not_agree_and_empty_is_nan():
    t = four_cells()
    r = compare_masks(5 - t, t)  # same cells, reversed ids
    assert r["found"] == 4 and r["matched_iou_mean"] == 1.0
    r = compare_masks(np.zeros_like(t), t)
    assert r["found"] == 0 and math.isnan(r["matched_iou_mean"]) and math.isnan(r["precision"])


def test_pool_agreement_weights_iou_by_cells_found():
    rows = [
        {"n_pred": 2, "n_truth": 2, "found": 2, "missed": 0, "extra": 0, "matched_iou_mean": 0.9},
        {"n_pred": 1, "n_truth": 2, "found": 1, "missed": 1, "extra": 0, "matched_iou_mean": 0.6},
    ]
    total = pool_agreement(rows)
    assert total["found"] == 3 and total["missed"] == 1
    assert total["matched_iou_mean"] == pytest.approx(0.8)
    assert total["recall"] == 0.75 and total["precision"] == 1.0
