"""compute_metrics, multilabel_confusion and format_metrics_table: hand-computed cases and scikit-learn agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    multilabel_confusion_matrix,
    precision_score,
    recall_score,
)

from locbench.errors import LocbenchError
from locbench.metrics import compute_metrics, format_metrics_table, multilabel_confusion, with_tuned

# Columns: A (two positives, two false alarms at 0.5), B (a positive scoring exactly 0.5), C (no positive).
PROBS = np.array(
    [
        [0.9, 0.2, 0.1],
        [0.6, 0.7, 0.3],
        [0.4, 0.5, 0.8],
        [0.55, 0.3, 0.2],
    ],
    dtype=np.float32,
)
TARGETS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)
NAMES = ["A", "B", "C"]


def test_hand_computed_tiny_case() -> None:
    m = compute_metrics(PROBS, TARGETS, class_names=NAMES)
    a, b, c = (m["per_class"][k] for k in NAMES)
    # A at 0.5 predicts rows 0, 1, 3: tp 1, fp 2, fn 1. Ranking 1 0 0 1: AP = (1/1 + 2/4) / 2.
    assert a["precision"] == pytest.approx(1 / 3)
    assert a["recall"] == pytest.approx(1 / 2)
    assert a["f1"] == pytest.approx(2 / (2 + 2 + 1))
    assert a["ap"] == pytest.approx(0.75)
    assert a["support"] == 2
    # B: the positive at exactly 0.5 counts (prob >= threshold), so everything is right.
    assert (b["f1"], b["precision"], b["recall"], b["ap"]) == pytest.approx((1.0, 1.0, 1.0, 1.0))
    # C has no positive: undefined, listed, left out of averages.
    assert c == {"ap": None, "f1": None, "precision": None, "recall": None, "support": 0, "threshold": 0.5}
    assert m["absent_classes"] == ["C"]
    assert m["macro_f1"] == pytest.approx((0.4 + 1.0) / 2)
    # Micro over A and B: tp 3, fp 2, fn 1 -> 6 / 9.
    assert m["micro_f1"] == pytest.approx(6 / 9)
    assert m["map"] == pytest.approx((0.75 + 1.0) / 2)
    # Pooled A+B ranking 1 1 0 0 1 1 0 0: AP = (1 + 1 + 3/5 + 4/6) / 4 = 49/60.
    assert m["micro_ap"] == pytest.approx(49 / 60)
    assert m["n_samples"] == 4


def test_hand_computed_confusion() -> None:
    cm = multilabel_confusion(PROBS, TARGETS, thresholds=0.5)
    assert cm.shape == (3, 2, 2)
    assert cm[0].tolist() == [[0, 2], [1, 1]]  # [[tn, fp], [fn, tp]]
    assert cm[1].tolist() == [[2, 0], [0, 2]]
    assert cm[2].tolist() == [[3, 1], [0, 0]]


def test_per_class_thresholds_are_used_and_reported() -> None:
    m = compute_metrics(PROBS, TARGETS, class_names=NAMES, thresholds=np.array([0.75, 0.6, 0.5]))
    # A at 0.75 predicts row 0 only: tp 1, fp 0, fn 1. B at 0.6 misses the 0.5 positive.
    assert m["per_class"]["A"]["f1"] == pytest.approx(2 / 3)
    assert m["per_class"]["B"]["f1"] == pytest.approx(2 / 3)
    assert [m["per_class"][k]["threshold"] for k in NAMES] == [0.75, 0.6, 0.5]


def _random_case(seed: int, n: int = 300, c: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = (rng.random((n, c)) < rng.uniform(0.05, 0.5, size=c)).astype(np.uint8)
    # Scores correlated with the targets, rounded to 2 decimals so many ties, and exact 0.5 values occur.
    probs = np.clip(0.35 * targets + rng.random((n, c)) * 0.65, 0, 1).round(2)
    targets[:, 2] = 0  # absent class
    targets[:, 5] = 0
    targets[7, 5] = 1  # a class with a single positive
    return probs, targets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("per_class_thr", [False, True])
def test_agrees_with_sklearn(seed: int, per_class_thr: bool) -> None:
    probs, targets = _random_case(seed)
    c = probs.shape[1]
    thr = np.random.default_rng(seed + 100).uniform(0.2, 0.8, size=c).round(2) if per_class_thr else 0.5
    names = [f"class{j}" for j in range(c)]
    m = compute_metrics(probs, targets, class_names=names, thresholds=thr)

    pred = (probs >= np.broadcast_to(thr, (c,))).astype(np.uint8)
    present = targets.sum(axis=0) > 0
    assert m["absent_classes"] == ["class2"]
    assert m["macro_f1"] == pytest.approx(
        f1_score(targets[:, present], pred[:, present], average="macro", zero_division=0)
    )
    assert m["micro_f1"] == pytest.approx(
        f1_score(targets[:, present], pred[:, present], average="micro", zero_division=0)
    )
    aps = [average_precision_score(targets[:, j], probs[:, j]) for j in np.flatnonzero(present)]
    assert m["map"] == pytest.approx(np.mean(aps))
    assert m["micro_ap"] == pytest.approx(
        average_precision_score(targets[:, present], probs[:, present], average="micro")
    )
    f1s = f1_score(targets, pred, average=None, zero_division=0)
    ps = precision_score(targets, pred, average=None, zero_division=0)
    rs = recall_score(targets, pred, average=None, zero_division=0)
    for j in np.flatnonzero(present):
        e = m["per_class"][names[j]]
        assert e["f1"] == pytest.approx(f1s[j])
        assert e["precision"] == pytest.approx(ps[j])
        assert e["recall"] == pytest.approx(rs[j])
        assert e["ap"] == pytest.approx(average_precision_score(targets[:, j], probs[:, j]))
        assert e["support"] == int(targets[:, j].sum())
    np.testing.assert_array_equal(
        multilabel_confusion(probs, targets, thresholds=thr), multilabel_confusion_matrix(targets, pred)
    )


def test_result_is_plain_json() -> None:
    probs, targets = _random_case(3)
    m = compute_metrics(probs, targets, class_names=[str(j) for j in range(8)])
    for key in ("macro_f1", "micro_f1", "map", "micro_ap"):
        assert type(m[key]) is float
    for e in m["per_class"].values():
        assert type(e["support"]) is int and type(e["threshold"]) is float
        assert e["ap"] is None or type(e["ap"]) is float
    assert json.loads(json.dumps(m)) == m


def test_accepts_bool_and_float_targets() -> None:
    ref = compute_metrics(PROBS, TARGETS, class_names=NAMES)
    assert compute_metrics(PROBS, TARGETS.astype(bool), class_names=NAMES) == ref
    assert compute_metrics(PROBS.astype(np.float64), TARGETS.astype(np.float32), class_names=NAMES) == ref


def test_no_present_class_gives_none_averages() -> None:
    m = compute_metrics(PROBS[:, 2:], TARGETS[:, 2:], class_names=["C"])
    assert m["absent_classes"] == ["C"]
    assert (m["macro_f1"], m["micro_f1"], m["map"], m["micro_ap"]) == (None, None, None, None)
    assert "-" in format_metrics_table(m)


@pytest.mark.parametrize(
    ("probs", "targets", "names", "thr", "match"),
    [
        (PROBS[:3], TARGETS, NAMES, 0.5, "does not match targets shape"),
        (PROBS[:, 0], TARGETS[:, 0], NAMES, 0.5, "2-D"),
        (np.where(PROBS == 0.9, np.nan, PROBS), TARGETS, NAMES, 0.5, "NaN"),
        (np.where(PROBS == 0.9, np.inf, PROBS), TARGETS, NAMES, 0.5, "NaN/inf"),
        (PROBS * 4 - 2, TARGETS, NAMES, 0.5, "not logits"),
        (PROBS, TARGETS * 0.5, NAMES, 0.5, "0/1"),
        (PROBS, TARGETS, NAMES[:2], 0.5, "2 class names for 3"),
        (PROBS, TARGETS, NAMES, np.array([0.5, 0.5]), "one per class"),
        (PROBS, TARGETS, NAMES, np.array([0.5, np.nan, 0.5]), "finite"),
        (PROBS[:0], TARGETS[:0], NAMES, 0.5, "at least one sample"),
    ],
)
def test_invalid_inputs_raise_locbench_error(probs, targets, names, thr, match) -> None:
    with pytest.raises(LocbenchError, match=match):
        compute_metrics(probs, targets, class_names=names, thresholds=thr)


def test_nan_message_names_the_rows() -> None:
    probs = PROBS.copy()
    probs[2, 1] = np.nan
    with pytest.raises(LocbenchError, match=r"1 NaN/inf value\(s\) in 1 row\(s\) \(first rows: \[2\]\)"):
        multilabel_confusion(probs, TARGETS, thresholds=0.5)


def test_format_table_plain_and_tuned() -> None:
    plain = compute_metrics(PROBS, TARGETS, class_names=NAMES)
    table = format_metrics_table(plain)
    lines = table.splitlines()
    assert "macro F1 (0.5): 0.7000" in table and "mAP: 0.8750" in table and "micro AP: 0.8167" in table
    assert "absent (no positives, left out of averages): C" in table
    header = next(line for line in lines if line.startswith("class"))
    assert "F1@0.5" in header and "F1@tuned" not in header
    row_a = next(line for line in lines if line.startswith("A "))
    assert row_a.split() == ["A", "2", "0.7500", "0.4000", "0.3333", "0.5000", "0.500"]
    row_c = next(line for line in lines if line.startswith("C "))
    assert row_c.split() == ["C", "0", "-", "-", "-", "-", "0.500"]
    # All rows line up with the header.
    assert len({len(line) for line in lines[lines.index(header) :]}) == 1

    tuned = compute_metrics(PROBS, TARGETS, class_names=NAMES, thresholds=np.array([0.75, 0.4, 0.5]))
    merged = with_tuned(plain, tuned)
    assert merged["macro_f1_tuned"] == pytest.approx((2 / 3 + 1) / 2)
    assert merged["per_class"]["A"]["f1"] == pytest.approx(0.4)
    assert merged["per_class"]["A"]["f1_tuned"] == pytest.approx(2 / 3)
    assert merged["per_class"]["A"]["threshold"] == 0.75
    table = format_metrics_table(merged)
    assert "F1@tuned" in table and "macro F1 (tuned): 0.8333" in table
    row_a = next(line for line in table.splitlines() if line.startswith("A "))
    assert row_a.split() == ["A", "2", "0.7500", "0.4000", "0.6667", "0.3333", "0.5000", "0.750"]


def test_table_labels_non_default_thresholds() -> None:
    m = compute_metrics(PROBS, TARGETS, class_names=NAMES, thresholds=0.3)
    table = format_metrics_table(m)
    assert "F1@thr" in table and "F1@0.5" not in table


def test_with_tuned_refuses_mismatched_inputs() -> None:
    plain = compute_metrics(PROBS, TARGETS, class_names=NAMES)
    other = compute_metrics(PROBS[:3], TARGETS[:3], class_names=NAMES)
    with pytest.raises(LocbenchError, match="different"):
        with_tuned(plain, other)


def test_table_shows_never_for_an_untrainable_class() -> None:
    plain = compute_metrics(PROBS, TARGETS, class_names=NAMES)
    tuned = compute_metrics(PROBS, TARGETS, class_names=NAMES, thresholds=np.array([0.75, 2.0, 0.5]))
    assert tuned["per_class"]["B"]["f1"] == 0.0  # never predicted
    lines = format_metrics_table(with_tuned(plain, tuned)).splitlines()
    row_b = next(line for line in lines if line.startswith("B "))
    assert row_b.split()[-1] == "never" and row_b.split()[4] == "0.0000"
    header = next(line for line in lines if line.startswith("class"))
    assert len({len(line) for line in lines[lines.index(header) :]}) == 1
