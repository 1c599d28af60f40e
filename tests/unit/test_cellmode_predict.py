"""Cell-level predictions: the Negative rule and blending by hand, and the 2021 metric on a hand-made case."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from locbench.cells.combine import apply_negative_rule, blend_probs
from locbench.cells.crops import index_cells
from locbench.cells.scoring import (
    CellPredictions,
    format_cell_metrics,
    score_cells,
    segmentation_agreement,
    truth_cells,
)
from locbench.data.formats import load_table
from locbench.errors import LocbenchError

C = 19  # hpa2021


def test_negative_rule_by_hand():
    names = ["A", "B", "Negative"]
    probs = np.array([[0.2, 0.7, 0.1], [0.1, 0.3, 0.05], [0.0, 0.0, 0.9]], np.float32)
    out = apply_negative_rule(probs, names, rule="max")
    np.testing.assert_allclose(out[:, 2], [0.3, 0.7, 1.0], atol=1e-6)
    np.testing.assert_array_equal(out[:, :2], probs[:, :2])  # other classes untouched
    np.testing.assert_allclose(probs[:, 2], [0.1, 0.05, 0.9], atol=1e-7)  # input not modified
    np.testing.assert_array_equal(apply_negative_rule(probs, names, rule="none"), probs)
    np.testing.assert_array_equal(apply_negative_rule(probs, ["A", "B", "C"], rule="max"), probs)
    with pytest.raises(LocbenchError, match="Negative rule"):
        apply_negative_rule(probs, names, rule="min")


def test_blend_by_hand():
    cell = np.array([[0.8, 0.0], [0.4, 1.0]])
    field = np.array([[0.0, 0.4], [0.8, 0.2]])
    np.testing.assert_allclose(blend_probs(cell, field, weight=0.25), [[0.6, 0.1], [0.5, 0.8]], atol=1e-6)
    np.testing.assert_allclose(blend_probs(cell, field, weight=0.0), cell)
    np.testing.assert_allclose(blend_probs(cell, field, weight=1.0), field)
    with pytest.raises(LocbenchError):
        blend_probs(cell, field, weight=1.5)
    with pytest.raises(LocbenchError):
        blend_probs(cell, field[:1], weight=0.5)


def _write(root: Path, truth: dict[str, np.ndarray], pred: dict[str, np.ndarray]) -> None:
    (root / "train").mkdir(parents=True)
    for folder in ("masks", "pred"):
        (root / folder).mkdir()
    for fid in truth:
        for c in ("red", "green", "blue", "yellow"):
            cv2.imwrite(str(root / "train" / f"{fid}_{c}.png"), np.zeros((8, 8), np.uint8))
        cv2.imwrite(str(root / "masks" / f"{fid}.png"), truth[fid].astype(np.uint16))
        cv2.imwrite(str(root / "pred" / f"{fid}.png"), pred[fid].astype(np.uint16))


@pytest.fixture
def hand_case(tmp_path) -> Path:
    """Field a: cells 1 (class 0) and 2 (class 1); field b: cell 1 (class 0), predicted shifted (IoU 1/3)."""
    a = np.zeros((8, 8), int)
    a[0:4, 0:4] = 1
    a[4:8, 4:8] = 2
    b = np.zeros((8, 8), int)
    b[0:4, 0:4] = 1
    b_pred = np.zeros((8, 8), int)
    b_pred[0:4, 2:6] = 1  # overlaps 8 of 24 union pixels: IoU 1/3 < 0.6
    root = tmp_path / "data"
    _write(root, {"a": a, "b": b}, {"a": a, "b": b_pred})
    (root / "train.csv").write_text("ID,Label\na,0|1\nb,0\n")
    (root / "cells.csv").write_text("ID,cell,Label\na,1,0\na,2,1\nb,1,0\n")
    return root


def test_cell_map_on_hand_made_case(hand_case):
    table = load_table(hand_case)
    cells = index_cells(table, hand_case / "pred", cache_path=hand_case / "idx.npz")
    assert [(table.ids[i], c) for i, c in zip(cells.image_index, cells.cell_id, strict=True)] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
    ]
    probs = np.zeros((3, C), np.float32)
    probs[:, :2] = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]
    preds = CellPredictions(table, cells, probs, hand_case / "pred", [str(k) for k in range(C)])
    assert preds.ids() == ["a/1", "a/2", "b/1"]
    result = score_cells(preds, truth_cells(table))
    # Class 0, 2 true cells: a/1 (0.9) hit, b/1 (0.7) misses at IoU 1/3, a/2 (0.2) wrong class: AP = 1/2 * 1.
    assert result["per_class"]["0"] == {"num_gt": 2, "num_pred": 3, "tp": 1, "ignored": 0, "ap": pytest.approx(0.5)}
    # Class 1, 1 true cell: a/2 (0.8) ranked first and hit: AP 1. b/1's class-1 score (0.3) is not scored in the
    # competition's protocol (no cell of b carries class 1); strict counts it as a false positive, ranked second.
    assert result["per_class"]["1"]["ap"] == pytest.approx(1.0)
    assert result["protocol"] == "challenge"
    assert (result["per_class"]["1"]["num_pred"], result["per_class"]["1"]["ignored"]) == (2, 1)
    assert result["map"] == pytest.approx(0.75)
    assert result["per_class"]["5"]["ap"] is None and "5" in result["absent_classes"]
    strict = score_cells(preds, truth_cells(table), protocol="strict")
    assert strict["protocol"] == "strict" and strict["map"] == pytest.approx(0.75)
    assert (strict["per_class"]["1"]["num_pred"], strict["per_class"]["1"]["ignored"]) == (3, 0)
    assert "protocol: challenge" in format_cell_metrics(result) and "protocol: strict" in format_cell_metrics(strict)

    seg = segmentation_agreement(preds, truth_cells(table))
    assert (seg["n_truth"], seg["found"], seg["missed"], seg["extra"]) == (3, 2, 1, 1)
    assert seg["matched_iou_mean"] == pytest.approx(1.0)

    # The same predictions on the true masks find b/1 too: class 0 then has AP 1.
    true_cells = index_cells(table, hand_case / "masks", cache_path=None)
    exact = CellPredictions(table, true_cells, probs, hand_case / "masks", preds.class_names)
    assert score_cells(exact, truth_cells(table))["per_class"]["0"]["ap"] == pytest.approx(1.0)


def test_truth_needs_masks_and_cell_labels(hand_case):
    (hand_case / "cells.csv").unlink()
    with pytest.raises(LocbenchError, match="per-cell labels"):
        truth_cells(load_table(hand_case))
