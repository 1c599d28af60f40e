"""Error tables against a hand-made prediction set whose counts were worked out by hand (see the comments)."""

from __future__ import annotations

import numpy as np
import pytest

from locbench.errors import LocbenchError
from locbench.explain import (
    error_tables,
    errors_html,
    errors_markdown,
    hardest_ids,
    plot_perf_vs_frequency,
)
from locbench.metrics import cross_confusion

NAMES = ["A", "B", "C", "D<x>"]
IDS = ["i0", "i1", "i2", "i3", "i4", "i5"]
THR = np.array([0.5, 0.5, 0.3, 0.5])
# Outcome per image and class (A, B, C at thresholds 0.5, 0.5, 0.3; D never present, never predicted):
#   i0: A TP  B FP  C TN        i3: A TN  B FP  C FN
#   i1: A FP  B FN  C FP        i4: A FN  B FP  C TP (0.3 >= 0.3: a tie is positive)
#   i2: A FN  B TP  C TN        i5: A FP  B FN  C TN
TARGETS = np.array(
    [
        [1, 0, 0, 0],
        [0, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 1, 0],
        [1, 0, 1, 0],
        [0, 1, 0, 0],
    ],
    dtype=np.uint8,
)
PROBS = np.array(
    [
        [0.9, 0.6, 0.1, 0.1],
        [0.7, 0.2, 0.35, 0.1],
        [0.4, 0.8, 0.2, 0.1],
        [0.1, 0.55, 0.1, 0.1],
        [0.3, 0.6, 0.3, 0.1],
        [0.8, 0.45, 0.0, 0.1],
    ],
    dtype=np.float32,
)


@pytest.fixture
def tables() -> dict:
    return error_tables(IDS, PROBS, TARGETS, THR, NAMES, top_k=10)


def test_per_class_counts_and_metrics(tables: dict) -> None:
    got = {e["class"]: (e["tp"], e["fp"], e["fn"], e["tn"], e["support"]) for e in tables["per_class"]}
    assert got == {"A": (1, 2, 2, 1, 3), "B": (1, 3, 2, 0, 3), "C": (1, 1, 1, 3, 2), "D<x>": (0, 0, 0, 6, 0)}
    per = {e["class"]: e for e in tables["per_class"]}
    # F1 = 2TP / (2TP + FP + FN)
    assert per["A"]["f1"] == pytest.approx(2 / 6)
    assert per["B"]["f1"] == pytest.approx(2 / 7)
    assert per["C"]["f1"] == pytest.approx(2 / 4)
    # A ranked by prob: 0.9(+) 0.8 0.7 0.4(+) 0.3(+) 0.1 -> AP = (1/1 + 2/4 + 3/5) / 3
    assert per["A"]["ap"] == pytest.approx((1 + 0.5 + 0.6) / 3)
    assert per["A"]["frequency"] == pytest.approx(0.5)
    assert per["D<x>"]["ap"] is None and per["D<x>"]["f1"] is None
    assert tables["n_images"] == 6


def test_confused_pairs(tables: dict) -> None:
    # (FP class, FN class) per image: i1 (A,B) (C,B); i3 (B,C); i4 (B,A); i5 (A,B). Ties ordered by class index.
    got = [(p["fp_class"], p["fn_class"], p["count"]) for p in tables["confused_pairs"]]
    assert got == [("A", "B", 2), ("B", "A", 1), ("B", "C", 1), ("C", "B", 1)]


def test_hardest_images(tables: dict) -> None:
    h = tables["hardest"]
    assert [r["id"] for r in h["A"]["false_negatives"]] == ["i4", "i2"]  # lowest prob first
    assert [r["id"] for r in h["A"]["false_positives"]] == ["i5", "i1"]  # highest prob first
    assert [r["id"] for r in h["B"]["false_negatives"]] == ["i1", "i5"]
    assert [r["id"] for r in h["B"]["false_positives"]] == ["i0", "i4", "i3"]  # equal probs keep file order
    assert h["C"]["false_negatives"] == [{"id": "i3", "prob": pytest.approx(0.1)}]
    assert h["D<x>"] == {"false_negatives": [], "false_positives": []}
    short = error_tables(IDS, PROBS, TARGETS, THR, NAMES, top_k=1)
    assert [r["id"] for r in short["hardest"]["B"]["false_positives"]] == ["i0"]


def test_hardest_ids_round_robin_over_classes(tables: dict) -> None:
    # Classes by errors: B (5), A (4), C (2). Queues alternate missed / false alarm, worst first:
    #   B: i1 i0 i5 i4 i3    A: i4 i5 i2 i1    C: i3 i1
    # Round 1 takes i1 i4 i3, round 2 i0 i5 (i1 again is skipped), round 3 i2.
    assert hardest_ids(tables, 10) == ["i1", "i4", "i3", "i0", "i5", "i2"]
    assert hardest_ids(tables, 2) == ["i1", "i4"]
    assert hardest_ids(tables, 0) == []


def test_renderers(tables: dict, tmp_path) -> None:
    md = errors_markdown(tables)
    assert "| A | 3 | 50.0% | 1 | 2 | 2 | 1 | 0.700 | 0.333 | 0.500 |" in md
    assert "| A | B | 2 |" in md
    assert "i4 (0.30), i2 (0.40)" in md
    html = errors_html(tables)
    assert "D&lt;x&gt;" in html and "D<x>" not in html
    assert html.count("<table") == 3

    out = plot_perf_vs_frequency(tables, tmp_path / "plots" / "perf.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "plots").glob(".*tmp"))  # atomic write left no temporary behind


def test_no_errors_and_bad_input() -> None:
    perfect = error_tables(["a", "b"], np.array([[0.9], [0.1]]), np.array([[1], [0]]), 0.5, ["only"])
    assert perfect["confused_pairs"] == []
    assert "No errors." in errors_markdown(perfect)
    with pytest.raises(LocbenchError, match="ids"):
        error_tables(IDS[:3], PROBS, TARGETS, THR, NAMES)
    with pytest.raises(LocbenchError, match="class names"):
        error_tables(IDS, PROBS, TARGETS, THR, NAMES[:2])
    with pytest.raises(LocbenchError, match="thresholds"):
        error_tables(IDS, PROBS, TARGETS, THR[:2], NAMES)


def test_confused_pairs_name_their_images_most_confident_false_alarm_first(tables: dict) -> None:
    ab = tables["confused_pairs"][0]
    # A false and B missed on i1 (A 0.7, B 0.2) and i5 (A 0.8, B 0.45): i5 first
    assert ab["examples"] == [
        {"id": "i5", "fp_prob": pytest.approx(0.8), "fn_prob": pytest.approx(0.45)},
        {"id": "i1", "fp_prob": pytest.approx(0.7), "fn_prob": pytest.approx(0.2)},
    ]
    assert error_tables(IDS, PROBS, TARGETS, THR, NAMES, top_k=1)["confused_pairs"][0]["examples"][0]["id"] == "i5"


def test_cross_confusion_counts_false_positives_by_true_class() -> None:
    # false positives: i0 B (truth A), i1 A and C (truth B), i3 B (truth C), i4 B (truth A, C), i5 A (truth B)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[1, 0] = 2  # B on i0, i4
    expected[0, 1] = 2  # A on i1, i5
    expected[2, 1] = 1  # C on i1
    expected[1, 2] = 2  # B on i3, i4
    np.testing.assert_array_equal(cross_confusion(PROBS, TARGETS, thresholds=THR), expected)
