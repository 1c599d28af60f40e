"""tune_thresholds: hand-computed optima, tie handling, and never worse than 0.5 on the tuning data; the rules for
classes too rare to tune (fallback) or absent from training (untrainable, never predicted).

The search tests pass ``min_positives=1`` so that their one- and two-positive columns are tuned."""

from __future__ import annotations

import numpy as np
import pytest

from locbench.errors import LocbenchError
from locbench.metrics import (
    FALLBACK_THRESHOLD,
    NEVER_PREDICTED,
    compute_metrics,
    never_predicted,
    small_sample_note,
    threshold_sources,
    tune_thresholds,
    with_note,
)

# Same columns as the metrics tests: A (ranking 1 0 0 1), B (ranking 1 1 0 0), C (no positive).
PROBS = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.3], [0.4, 0.5, 0.8], [0.55, 0.3, 0.2]])
TARGETS = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=np.uint8)


def _f1(probs: np.ndarray, targets: np.ndarray, thr: float) -> float:
    pred = probs >= thr
    tp = np.sum(pred & (targets == 1))
    return 2 * tp / (pred.sum() + targets.sum())


def test_hand_computed_exact_search() -> None:
    thr = tune_thresholds(PROBS, TARGETS, default=0.35, min_positives=1)
    # A: F1 by cut = 2/3 (top 1), 1/2, 2/5, 2/3 (all): tie goes to the higher threshold, midway 0.9..0.6.
    # B: top 2 gives F1 = 1, midway between 0.5 and 0.3. C: no positive, keeps the default.
    np.testing.assert_allclose(thr, [0.75, 0.4, 0.35])
    assert thr.dtype == np.float64 and thr.shape == (3,)


def test_best_cut_at_lowest_score_uses_midpoint_with_zero() -> None:
    probs = np.array([[0.8], [0.6], [0.2]])
    targets = np.array([[0], [1], [1]])
    # F1 by cut: 0, 1/2, 4/5 -> predict all; threshold halfway between 0.2 and 0.
    np.testing.assert_allclose(tune_thresholds(probs, targets, min_positives=1), [0.1])


def test_tied_scores_are_one_cut() -> None:
    probs = np.array([[0.7], [0.7], [0.7], [0.2]])
    targets = np.array([[1], [0], [0], [1]])
    # Cutting inside the tie (top 1 -> F1 2/3) is impossible: real cuts give 2/5 (>= 0.7) and 2/3 (all).
    thr = tune_thresholds(probs, targets, min_positives=1)
    np.testing.assert_allclose(thr, [0.1])
    assert _f1(probs[:, 0], targets[:, 0], thr[0]) == pytest.approx(2 / 3)


def test_adjacent_float_scores_stay_separated() -> None:
    hi = 0.3
    lo = np.nextafter(hi, 0.0)  # the midpoint of adjacent doubles rounds onto one of them
    probs = np.array([[hi], [lo]])
    targets = np.array([[1], [0]])
    thr = tune_thresholds(probs, targets, min_positives=1)[0]
    assert lo < thr <= hi


def test_grid_search_picks_best_and_highest_on_ties() -> None:
    thr = tune_thresholds(PROBS, TARGETS, grid=np.array([0.3, 0.5, 0.7]), min_positives=1)
    # A: 0.7 -> 2/3, 0.5 -> 2/5, 0.3 -> 2/3: tie, higher wins. B: 0.7 -> 2/3, 0.5 -> 1, 0.3 -> 4/5.
    np.testing.assert_allclose(thr, [0.7, 0.5, 0.5])


def test_min_positives_keeps_default() -> None:
    thr = tune_thresholds(PROBS, TARGETS, min_positives=3, default=0.42)
    np.testing.assert_allclose(thr, [0.42, 0.42, 0.42])


@pytest.mark.parametrize("seed", range(5))
def test_exact_optimum_and_never_worse_than_half(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 120, 6
    targets = (rng.random((n, c)) < rng.uniform(0.05, 0.5, size=c)).astype(np.uint8)
    probs = np.clip(0.3 * targets + 0.7 * rng.random((n, c)), 0, 1).round(2)  # ties galore
    targets[:, 4] = 0
    thr = tune_thresholds(probs, targets, min_positives=1)
    names = [str(j) for j in range(c)]
    at_half = compute_metrics(probs, targets, class_names=names)
    tuned = compute_metrics(probs, targets, class_names=names, thresholds=thr)
    for j in range(c):
        if targets[:, j].sum() == 0:
            assert thr[j] == 0.5
            continue
        # Brute force over every distinct score: the best F1 and the highest score reaching it.
        cands = np.unique(probs[:, j])
        f1s = np.array([_f1(probs[:, j], targets[:, j], u) for u in cands])
        best_u = cands[np.flatnonzero(f1s == f1s.max())[-1]]
        assert tuned["per_class"][names[j]]["f1"] == pytest.approx(f1s.max())
        assert tuned["per_class"][names[j]]["f1"] >= at_half["per_class"][names[j]]["f1"]
        np.testing.assert_array_equal(probs[:, j] >= thr[j], probs[:, j] >= best_u)
        below = cands[cands < best_u]
        assert thr[j] == pytest.approx((best_u + below.max()) / 2 if below.size else best_u / 2)
    assert tuned["macro_f1"] >= at_half["macro_f1"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_positives": 0}, "min_positives"),
        ({"grid": np.array([])}, "non-empty"),
        ({"grid": np.array([0.5, np.nan])}, "finite"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(LocbenchError, match=match):
        tune_thresholds(PROBS, TARGETS, **kwargs)


def test_invalid_probs() -> None:
    probs = PROBS.copy()
    probs[0, 0] = np.nan
    with pytest.raises(LocbenchError, match="NaN"):
        tune_thresholds(probs, TARGETS)
    with pytest.raises(LocbenchError, match="does not match"):
        tune_thresholds(PROBS, TARGETS[:, :2])


# ---- rules for classes the data cannot support ------------------------------------------------------------------


def test_default_rule_needs_three_validation_positives() -> None:
    # A and B have 2 validation positives each: too few to tune, both keep the 0.5 fallback; C has none.
    np.testing.assert_allclose(tune_thresholds(PROBS, TARGETS), [FALLBACK_THRESHOLD] * 3)
    three = np.vstack([TARGETS, [[1, 1, 0]]])
    probs = np.vstack([PROBS, [[0.65, 0.6, 0.1]]])
    # with a third positive, A and B are tuned exactly as the search alone would tune them
    thr = tune_thresholds(probs, three)
    assert thr[2] == FALLBACK_THRESHOLD
    for j in (0, 1):
        assert thr[j] == tune_thresholds(probs[:, [j]], three[:, [j]], min_positives=1)[0]


def test_untrainable_class_is_never_predicted() -> None:
    train = np.array([5, 0, 0])
    thr = tune_thresholds(PROBS, TARGETS, train_positives=train, min_positives=1)
    assert thr[0] == pytest.approx(0.75)  # trainable and tuned as before
    assert thr[1] == thr[2] == NEVER_PREDICTED  # B would tune to 0.4 on validation, but was never trained on
    assert not (PROBS >= thr).any(axis=0)[1:].any()
    assert never_predicted(thr).tolist() == [False, True, True]
    # above every probability, also a probability of exactly 1.0
    assert not np.any(np.ones((3, 3)) >= thr[None, :], axis=0)[1:].any()
    # compute_metrics accepts it (finite) and gives the untrainable class F1 = 0 where it has positives
    m = compute_metrics(PROBS, TARGETS, class_names=["A", "B", "C"], thresholds=thr)
    assert m["per_class"]["B"]["f1"] == 0.0


def test_threshold_sources() -> None:
    assert threshold_sources(np.array([5, 2, 0, 7, 3])) == ["tuned", "fallback", "fallback", "tuned", "tuned"]
    val, train = np.array([5, 2, 0, 7]), np.array([10, 3, 4, 0])
    assert threshold_sources(val, train) == ["tuned", "fallback", "fallback", "untrainable"]
    assert threshold_sources(val, train, min_positives=1) == ["tuned", "tuned", "fallback", "untrainable"]
    with pytest.raises(LocbenchError, match="shape"):
        threshold_sources(val, train[:2])
    # the sources are exactly the rule tune_thresholds applies
    thr = tune_thresholds(PROBS, TARGETS, train_positives=np.array([4, 4, 0]), default=0.33)
    assert threshold_sources(TARGETS.sum(0), np.array([4, 4, 0])) == ["fallback", "fallback", "untrainable"]
    np.testing.assert_allclose(thr, [0.33, 0.33, NEVER_PREDICTED])


def test_thresholds_json_round_trip_keeps_never(tmp_path) -> None:
    from locbench.store.rundir import RunDir

    run = RunDir(tmp_path)
    thr = tune_thresholds(PROBS, TARGETS, train_positives=np.array([1, 1, 0]), min_positives=1)
    run.write_thresholds(["A", "B", "C"], thr)
    text = (tmp_path / "thresholds.json").read_text()
    assert "Infinity" not in text and "NaN" not in text  # portable JSON
    names, back = run.read_thresholds(3)
    np.testing.assert_array_equal(back, thr)
    assert never_predicted(back).tolist() == [False, False, True]


@pytest.mark.parametrize(
    ("n", "positives", "note"),
    [
        (1, None, "n = 1 field: too few to rely on"),
        (29, np.array([5, 0, 9]), "n = 29 fields: too few to rely on"),
        (30, np.array([5, 0, 9]), None),
        (30, np.array([1, 0, 2, 3]), "2 classes with fewer than 3 positives"),
        (5, np.array([1]), "n = 5 fields: too few to rely on; 1 class with fewer than 3 positives"),
    ],
)
def test_small_sample_note(n: int, positives, note) -> None:
    assert small_sample_note(n, positives) == note
    assert with_note("val mAP 1.0000", note) == ("val mAP 1.0000" if note is None else f"val mAP 1.0000 ({note})")
